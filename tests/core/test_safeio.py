"""safeio: paths from archives and metadata, walked without following links; extraction
that does what tarfile's 'data' filter does, on Pythons that do not have it."""

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from strongroom.core import fsutil, safeio


def tar_of(*members):
    """A tar stream from (name, kind, extra) tuples: kind file|dir|sym|hard|fifo|chr."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, *extra in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            data = None
            if kind == "file":
                data = extra[0] if extra else b"data\n"
                info.size = len(data)
                info.mode = extra[1] if len(extra) > 1 else 0o644
            elif kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, extra[0] if extra else 0o755
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, extra[0]
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, extra[0]
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            elif kind == "chr":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    buf.seek(0)
    return tarfile.open(fileobj=buf, mode="r|")


def listing(path):
    out = {}
    for dirpath, dirs, files in os.walk(path):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            out[os.path.relpath(p, path)] = os.readlink(p) if os.path.islink(p) else (
                "dir" if os.path.isdir(p) else Path(p).read_bytes())
    return out


@pytest.mark.parametrize("name,why", [
    ("/etc/passwd", "absolute"), ("../x", "leaving"), ("a/../../x", "leaving"),
    ("", "not a usable"), ("a\0b", "not a usable"), (".", "names no file"),
    ("./", "names no file"), (None, "not a usable"), (7, "not a usable"),
])
def test_clean_relpath_refuses_what_leaves_or_names_nothing(name, why):
    with pytest.raises(safeio.UnsafePath, match=why):
        safeio.clean_relpath(name)


def test_clean_relpath_normalises_what_stays_inside():
    assert safeio.clean_relpath("./a//b/./c") == "a/b/c"
    assert safeio.clean_relpath("a/b/") == "a/b"


def test_root_never_reads_or_writes_through_a_link(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("secret\n")
    root = tmp_path / "root"
    root.mkdir()
    (root / "dir").symlink_to(outside)
    (root / "file").symlink_to(outside / "secret")
    with safeio.Root(root) as r:
        for rel in ("dir/secret", "file"):
            with pytest.raises(safeio.UnsafePath, match="symlink"):
                r.open_read(rel)
        with pytest.raises(safeio.UnsafePath, match="symlink"):
            r.create("dir/new")
        with pytest.raises(FileExistsError):
            r.create("file")  # O_EXCL: an existing link is never opened
    assert sorted(os.listdir(outside)) == ["secret"]
    assert (outside / "secret").read_text() == "secret\n"


def test_extract_keeps_modes_and_times_but_not_setuid_or_group_write(tmp_path):
    names = safeio.extract(tar_of(("bin/tool", "file", b"#!/bin/sh\n", 0o4775),
                                  ("private/.env", "file", b"K=v\n", 0o600),
                                  ("notes.txt", "file", b"n\n", 0o666),
                                  ("private", "dir", 0o700),
                                  ("link", "sym", "notes.txt"),
                                  ("hard", "hard", "notes.txt")), tmp_path)
    assert names == ["bin/tool", "private/.env", "notes.txt", "private", "link", "hard"]
    mode = lambda rel: stat.S_IMODE(os.lstat(tmp_path / rel).st_mode)  # noqa: E731
    assert mode("bin/tool") == 0o755  # setuid and group write dropped, exec kept
    assert mode("private/.env") == 0o600
    assert mode("notes.txt") == 0o644
    assert mode("private") == 0o700
    assert os.stat(tmp_path / "notes.txt").st_mtime == 1_700_000_000
    assert os.readlink(tmp_path / "link") == "notes.txt"
    assert os.stat(tmp_path / "hard").st_ino == os.stat(tmp_path / "notes.txt").st_ino


@pytest.mark.parametrize("members,why", [
    ([("../evil", "file")], "path leaving the target"),
    ([("/abs/evil", "file")], "path leaving the target"),
    ([("esc", "sym", "/etc")], "link leaving the target"),
    ([("esc", "sym", "../..")], "link leaving the target"),
    ([("hl", "hard", "/etc/passwd")], "link leaving the target"),
    ([("hl", "hard", "never-seen")], "did not hold before it"),
    ([("dev", "chr")], "device or fifo"),
    ([("pipe", "fifo")], "device or fifo"),
    ([("f", "file"), ("f", "file", b"second")], "there twice"),
    ([("x", "sym", "notes"), ("x", "file")], "there twice"),
    ([("d", "dir"), ("l", "sym", "d"), ("l/evil", "file")], "symlink"),
    # each link alone stays inside; together b resolves to the target's parent
    ([("a", "sym", "."), ("b", "sym", "a/.."), ("c", "file")], "link leaving the target"),
])
def test_extract_refuses_hostile_members(tmp_path, members, why):
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(safeio.UnsafeArchive, match=why):
        safeio.extract(tar_of(*members), target)
    assert sorted(os.listdir(tmp_path)) == ["target"]


def test_extract_never_overwrites_what_the_target_holds(tmp_path):
    (tmp_path / "mine.txt").write_text("mine\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "sub").symlink_to(tmp_path / "outside")
    for members in ([("mine.txt", "file", b"theirs\n")], [("sub/evil", "file")]):
        with pytest.raises(safeio.UnsafeArchive):
            safeio.extract(tar_of(*members), tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "mine\n"
    assert os.listdir(tmp_path / "outside") == []


def test_the_pre_scan_checks_every_member_before_anything_is_written(tmp_path):
    with pytest.raises(safeio.UnsafeArchive, match="device"):
        safeio.check_members(list(tar_of(("ok.txt", "file"), ("dev", "chr"))))
    assert safeio.check_members(list(tar_of(("a", "file"), ("b", "hard", "a")))) == 2
    assert listing(tmp_path) == {}


def test_a_link_is_judged_link_by_link_not_by_where_the_tree_is_built(tmp_path):
    """esc -> a/../<the staging folder's own name>/x stays inside while the tree is built
    beside its target, and points outside once it is renamed: resolved by hand, it leaves."""
    stage = tmp_path / ".strongroom-restore-T.123"
    stage.mkdir()
    with pytest.raises(safeio.UnsafeArchive, match="link leaving the target"):
        safeio.extract(tar_of(("a", "sym", "."), ("x", "file"),
                              ("esc", "sym", f"a/../{stage.name}/x")), stage)


def test_a_root_walks_a_tree_deeper_than_the_recursion_limit(tmp_path):
    rel = "/".join(["d"] * 1500)
    try:
        with safeio.Root(tmp_path) as root:
            with root.create(f"{rel}/f", 0o600) as fh:
                fh.write(b"deep\n")
            with root.open_read(f"{rel}/f") as fh:
                assert fh.read() == b"deep\n"
            assert len(root.created) == 1500
        assert sum(1 for _ in fsutil.walk(tmp_path)) == 1501
        fsutil.rmtree(tmp_path / "d")
        assert not (tmp_path / "d").exists()
    finally:  # pytest's own clean-up of old temp folders recurses, and would fail on it
        fsutil.rmtree_quiet(tmp_path / "d")


@pytest.mark.parametrize("name", [".git", ".GIT", ".Git", ".git.", ".git ", ".git. .", "git~1",
                                  "GIT~1", ".g\u200cit", "\ufeff.git", ".gi\u200dt"])
def test_every_spelling_of_dotgit_is_dotgit(name):
    assert safeio.is_dotgit(name)


@pytest.mark.parametrize("name", [".gitignore", ".github", "git", ".gitx", "x.git", ".gıt"])
def test_names_that_only_look_alike_are_not(name):
    assert not safeio.is_dotgit(name)
