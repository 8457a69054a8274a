"""The archive written by GNU tar from our list of names: awkward names, files that go
away or cannot be read while it runs, the critical files found on the same walk, and
archives of the earlier writer (Python's tarfile) still restoring."""

import hashlib
import io
import os
import socket
import sqlite3
import subprocess
import tarfile
from pathlib import Path

import pathspec
import pytest

from strongroom import manifest, snapshots
from strongroom.core import fsutil
from strongroom.core.errors import EmptySource
from strongroom.snapshots import restore


def tree_of(root):
    """{rel: ('d', mode) | ('l', target) | ('f', mode, bytes)} of everything below root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = ("l", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("d", p.stat().st_mode & 0o7777)
            else:
                out[rel] = ("f", p.stat().st_mode & 0o7777, p.read_bytes())
    return out


def awkward_tree(base):
    src = base / "src"
    src.mkdir()
    names = ["-starts-with-dash", "back\\slash", "new\nline", "tab\there", "ünï cødé",
             "sp ace.env", "a" * 120, ".hidden.key"]
    for i, name in enumerate(names):
        (src / name).write_text(f"file {i}\n")
    deep = src / "x" / ("long-directory-name-" * 6) / "deeper"
    deep.mkdir(parents=True)
    (deep / "inside.key").write_text("key\n")
    (src / "link").symlink_to("-starts-with-dash")
    (src / "dangling").symlink_to("/nowhere/at/all")
    (src / "empty-dir").mkdir()
    (src / "mode600.key").write_text("secret\n")
    os.chmod(src / "mode600.key", 0o600)
    os.link(src / "tab\there", src / "hardlink-of-tab")
    return src


def take(src, dest, critical=(), **kw):
    return snapshots.create(src, dest, critical=list(critical), immutable="off", **kw)


def test_awkward_names_round_trip_through_the_existing_restore(tmp_path):
    src = awkward_tree(tmp_path)
    os.mkfifo(src / "a-fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "a-socket"))
    try:
        rep = take(src, tmp_path / "snaps", critical=["*.key"])
    finally:
        sock.close()
    (src / "a-fifo").unlink()
    (src / "a-socket").unlink()
    assert rep["special_skipped"] == ["a-fifo"]
    assert "FIFO(s) or device node(s) left out" in rep["warning"]
    assert rep["counts"]["files"] == 11 and rep["counts"]["symlinks"] == 2
    assert sorted(rep["critical"]) == [".hidden.key", "mode600.key",
                                       f"x/{'long-directory-name-' * 6}/deeper/inside.key"]
    assert rep["critical"]["mode600.key"]["mode"] == 0o600
    folder = Path(rep["path"])
    # GNU tar reads it, and `sha256sum -c --strict` passes inside the folder
    listed = subprocess.run(["tar", "-I", "zstd", "-tf", str(folder / "full.tar.zst")],
                            capture_output=True, check=True).stdout
    assert b"-starts-with-dash\n" in listed
    subprocess.run(["sha256sum", "-c", "--strict", "--quiet", "SHA256SUMS"], cwd=folder,
                   check=True)
    assert snapshots.verify(tmp_path / "snaps", rep["id"])["passed"]
    out = restore.restore_full(tmp_path / "snaps", rep["id"], tmp_path / "back")
    assert tree_of(tmp_path / "back") == tree_of(src)
    assert os.stat(tmp_path / "back/hardlink-of-tab").st_ino == \
        os.stat(tmp_path / "back/tab\there").st_ino
    assert out["members"] == len(tree_of(src))


def test_a_file_that_vanishes_after_it_was_listed_is_left_out_and_not_counted(
        tmp_path, monkeypatch):
    src = tmp_path / "src"
    for d in range(3):
        (src / f"d{d}").mkdir(parents=True)
        for f in range(50):
            (src / f"d{d}/f{f:02d}.txt").write_text(f"{d}-{f}\n" * 10)
    walk = snapshots._walk_tree

    def walk_and_delete(*args):
        for rel, entry in walk(*args):
            yield rel, entry
            if rel == "d1/f07.txt":  # listed; gone before tar reads the name
                os.unlink(entry.path)

    monkeypatch.setattr(snapshots, "_walk_tree", walk_and_delete)
    rep = take(src, tmp_path / "snaps")
    assert rep["counts"]["files"] == 149
    assert rep["bytes"]["source"] == sum(p.stat().st_size for p in src.rglob("*.txt"))
    out = restore.restore_full(tmp_path / "snaps", rep["id"], tmp_path / "back")
    assert tree_of(tmp_path / "back") == tree_of(src)
    assert out["members"] == 3 + 149


@pytest.mark.parametrize("said, rc, expected", [
    ("tar: d/f.txt: Cannot open: Permission denied", 2,
     "tar could not read {src} (exit 2): tar: d/f.txt: Cannot open: Permission denied"),
    ("tar: d: Cannot savedir: Input/output error", 2,
     "tar could not read {src} (exit 2): tar: d: Cannot savedir: Input/output error"),
    ("", 2, "tar could not read {src} (exit 2): exit 2"),
    ("", 139, "tar could not read {src} (exit 139): exit 139"),
])
def test_a_file_tar_cannot_read_fails_the_snapshot_and_leaves_nothing(
        tmp_path, monkeypatch, said, rc, expected):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d/f.txt").write_text("x\n")
    fake = tmp_path / "tar"
    fake.write_text(f"#!/bin/sh\ncat >/dev/null\nprintf '%s\\n' '{said}' >&2\nexit {rc}\n")
    fake.chmod(0o755)
    monkeypatch.setattr(snapshots, "TAR", [str(fake)])
    with pytest.raises(snapshots.SnapshotError) as err:
        take(src, tmp_path / "snaps")
    assert str(err.value) == expected.format(src=src)
    assert snapshots.snapshot_ids(tmp_path / "snaps") == []
    assert not any(p.name.startswith(fsutil.TEMP_PREFIX) for p in (tmp_path / "snaps").iterdir())


def test_a_file_changed_while_tar_read_it_is_said_in_the_warning(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.txt").write_text("x\n")
    fake = tmp_path / "tar"
    # a real tar, then the note GNU tar prints when a file changed under it (exit 1)
    fake.write_text("#!/bin/sh\ntar \"$@\"\necho 'tar: f.txt: file changed as we read it' >&2"
                    "\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(snapshots, "TAR", [str(fake), *snapshots.TAR[1:]])
    rep = take(src, tmp_path / "snaps")
    assert "1 file(s) changed while they were read (e.g. f.txt: file changed as we read " \
        "it)" in rep["warning"]


def test_a_tree_of_only_folders_is_an_empty_source(tmp_path):
    src = tmp_path / "src"
    (src / "a/b").mkdir(parents=True)
    with pytest.raises(EmptySource):
        take(src, tmp_path / "snaps", critical=["*.env"])
    assert snapshots.snapshot_ids(tmp_path / "snaps") == []


def test_names_go_to_tar_in_blocks_and_a_block_boundary_loses_none(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(300):
        (src / f"file-{i:03d}-{'n' * 40}.txt").write_text(f"{i}\n")
    monkeypatch.setattr(snapshots, "LIST_CHUNK", 100)  # a block every two names or so
    rep = take(src, tmp_path / "snaps")
    assert rep["counts"]["files"] == 300
    restore.restore_full(tmp_path / "snaps", rep["id"], tmp_path / "back")
    assert tree_of(tmp_path / "back") == tree_of(src)


def test_critical_files_found_on_the_archive_walk_match_manifest_walk(tmp_path):
    src = awkward_tree(tmp_path)
    (src / "node_modules").mkdir()
    (src / "node_modules/dep.key").write_text("not ours\n")
    (src / "skipme").mkdir()
    (src / "skipme/x.key").write_text("excluded\n")
    (src / ".tmp-partial.key").write_text("a temp file\n")
    (src / "key-link.key").symlink_to("mode600.key")
    patterns, exclude = ["*.key", "sp ace.env"], ["skipme/"]
    rep = take(src, tmp_path / "snaps", critical=patterns, exclude=exclude)
    sel = manifest.Selection(patterns, snapshots.DEFAULT_EXCLUDES + exclude)
    assert sorted(rep["critical"]) == manifest.walk(src, sel)
    assert "skipme/x.key" not in rep["critical"] and "node_modules/dep.key" not in \
        rep["critical"]


@pytest.mark.parametrize("patterns", [
    ["*.key"], ["*.env", "config/*.json", "/top.txt"], ["secrets/"], ["**/deep/*.pem"],
    ["a[bc].txt", "?.md"], ["*.env", "# a comment", ""],
])
def test_the_one_regex_matcher_agrees_with_pathspec(patterns):
    spec = pathspec.GitIgnoreSpec.from_lines(patterns)
    fast = snapshots._fast_match(patterns)
    paths = ["a.key", "x/y/z.key", "top.txt", "x/top.txt", "config/a.json",
             "x/config/a.json", "secrets/a", "x/secrets/b/c", "secrets", "q/deep/k.pem",
             "deep/k.pem", "ab.txt", "ad.txt", "m.md", "mm.md", ".env", "x/.env", "e.env"]
    assert [p for p in paths if fast(p)] == [p for p in paths if spec.match_file(p)]


def test_a_pattern_that_takes_away_falls_back_to_the_selection(tmp_path):
    assert snapshots._fast_match(["*.key", "!keep.key"]) is None
    sel = manifest.Selection(["*.key", "!keep.key"], [])
    covers = snapshots.critical_matcher(sel)
    assert covers("a.key") and not covers("keep.key")


def test_critical_databases_and_their_journals_are_copied_through_the_backup_api(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    con = sqlite3.connect(src / "app.db")
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t (x)")
    con.execute("INSERT INTO t VALUES (1)")
    con.commit()  # the WAL stays: the connection is open
    (src / "notes.db").write_text("not a database, though named like one\n")
    (src / "notes.db-wal").write_text("nor is this a journal of one\n")
    try:
        rep = take(src, tmp_path / "snaps", critical=["*.db", "*.db-wal"])
    finally:
        con.close()
    crit = rep["critical"]
    assert sorted(crit) == ["app.db", "notes.db", "notes.db-wal"]
    assert crit["app.db"]["journal_mode"] == "wal"
    assert "journal_mode" not in crit["notes.db"]
    copy = Path(rep["path"]) / "critical/app.db"
    assert sqlite3.connect(copy).execute("SELECT x FROM t").fetchall() == [(1,)]
    assert (Path(rep["path"]) / "critical/notes.db-wal").read_text() == \
        "nor is this a journal of one\n"


def test_a_snapshot_whose_archive_was_written_by_tarfile_still_restores(tmp_path):
    """The earlier writer: Python's tarfile, PAX, names without a trailing slash."""
    src = awkward_tree(tmp_path)
    rep = take(src, tmp_path / "snaps", critical=["*.key"])
    folder = Path(rep["path"])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in sorted(tree_of(src)):
            tar.add(src / rel, arcname=rel, recursive=False)
    data = subprocess.run(["zstd", "-q", "-c"], input=buf.getvalue(), capture_output=True,
                          check=True).stdout
    (folder / "full.tar.zst").write_bytes(data)
    sums = (folder / "SHA256SUMS").read_text().splitlines()
    digest = hashlib.sha256(data).hexdigest()
    (folder / "SHA256SUMS").write_text("".join(
        (f"{digest}  full.tar.zst" if line.endswith("  full.tar.zst") else line) + "\n"
        for line in sums))
    restore.restore_full(tmp_path / "snaps", rep["id"], tmp_path / "back")
    assert tree_of(tmp_path / "back") == tree_of(src)
    out = restore.restore_critical(tmp_path / "snaps", rep["id"], tmp_path / "crit")
    assert sorted(out["restored"]) == sorted(rep["critical"])


def test_tar_that_stops_reading_the_names_fails_with_its_own_words(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(1500):  # ~90 KB of names: more than a pipe holds
        (src / f"{i:04d}-{'n' * 56}").write_text("x")
    fake = tmp_path / "tar"
    fake.write_text("#!/bin/sh\necho 'tar: out of memory' >&2\nexit 2\n")
    fake.chmod(0o755)
    monkeypatch.setattr(snapshots, "TAR", [str(fake)])
    with pytest.raises(snapshots.SnapshotError) as err:
        take(src, tmp_path / "snaps")
    assert "tar stopped while" in str(err.value) and str(err.value).endswith(
        "full.tar.zst was written (exit 2): tar: out of memory")
    assert snapshots.snapshot_ids(tmp_path / "snaps") == []
