"""Hostile input on restore: crafted archives and metadata, every path field we read.

Each case builds a store whose files and hash lists are consistent (an attacker who can
write the store rewrites both), runs the real CLI, and asserts the refusal's message, exit
2, and that not one byte changed anywhere, the restore target included.
"""

import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from strongroom.bundles import chain
from tests.helpers import commit, init, strongroom, sync_json

SNAP = "20260101-000000-nogit"


def state_of(base):
    """Everything under base: kind, mode, content or link target (what 'nothing changed'
    means), lock files left out (runtime state)."""
    out = {}
    for dirpath, dirs, files in os.walk(base):
        for name in dirs + files:
            p = Path(dirpath) / name
            if name.endswith(".lock"):
                continue
            st = p.lstat()
            if p.is_symlink():
                out[str(p)] = ("link", os.readlink(p))
            elif p.is_dir():
                out[str(p)] = ("dir", st.st_mode)
            elif not stat.S_ISREG(st.st_mode):  # a FIFO planted by a test: never opened
                out[str(p)] = ("special", st.st_mode)
            else:
                out[str(p)] = ("file", st.st_mode, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def tar_bytes(*members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, *extra in members:
            info = tarfile.TarInfo(name)
            data = None
            if kind == "file":
                data = extra[0] if extra else b"evil\n"
                info.size = len(data)
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, extra[0]
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, extra[0]
            elif kind == "chr":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def zstd(data):
    return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True,
                          check=True).stdout


def sha(data):
    return hashlib.sha256(data).hexdigest()


def craft_snapshot(base, members=(), report=None, files=None, links=None, sums_skip=()):
    """A snapshot folder with a consistent SHA256SUMS over whatever it is given."""
    folder = base / "snaps" / SNAP
    folder.mkdir(parents=True)
    content = {"full.tar.zst": zstd(tar_bytes(*members)),
               "REPORT.json": json.dumps(report if report is not None else {
                   "id": SNAP, "source": str(base / "src"), "databases": [],
                   "critical": {}}).encode()}
    content.update(files or {})
    for rel, data in content.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    lines = [f"{sha(data)}  {rel}" for rel, data in content.items() if rel not in sums_skip]
    for rel, (target, digest) in (links or {}).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).symlink_to(target)
        lines.append(f"{digest}  {rel}")
    (folder / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return base / "snaps"


def restore_full(dest, target):
    return strongroom("backup", "restore", "--dest", dest, SNAP, "--full", "--target",
                      target, check=2)


ARCHIVES = {
    "dotdot": ([("../outside/evil.txt", "file")], "path leaving the target"),
    "absolute": ([("{outside}/evil.txt", "file")], "path leaving the target"),
    # a snapshot's symlinks come back as they were, wherever they point; what is refused
    # is any write through one
    "symlink-absolute-then-write": ([("esc", "sym", "{outside}"), ("esc/evil.txt", "file")],
                                    "'esc' in "),
    "symlink-relative-then-write": ([("rel", "sym", "../../outside"), ("rel/evil.txt", "file")],
                                    "'rel' in "),
    "hardlink-out": ([("hl", "hard", "{outside}/victim.txt")], "link leaving the target"),
    "hardlink-to-nothing-before": ([("hl", "hard", "later.txt"), ("later.txt", "file")],
                                   "did not hold before it"),
    "device": ([("dev", "chr")], "device or fifo"),
    "fifo": ([("pipe", "fifo")], "device or fifo"),
    "link-chain-out-then-write": ([("a", "sym", "."), ("b", "sym", "a/.."),
                                   ("b/evil.txt", "file")], "'b' in "),
    "member-twice": ([("f.txt", "file"), ("f.txt", "file", b"second\n")], "there twice"),
    "file-over-link": ([("x", "sym", "f.txt"), ("x", "file")], "there twice"),
    "write-below-inner-link": ([("d", "dir"), ("l", "sym", "d"), ("l/evil.txt", "file")],
                               "symlink"),
    ".git-with-absolute-name": ([("/.git/config", "file")], "path leaving the target"),
}


@pytest.mark.parametrize("case", sorted(ARCHIVES))
def test_a_hostile_full_archive_writes_nothing_anywhere(world, case):
    base, outside, target = world
    members, why = ARCHIVES[case]
    members = [tuple(str(x).format(outside=outside) if isinstance(x, str) else x
                     for x in m) for m in members]
    dest = craft_snapshot(base, members)
    before = state_of(base)
    proc = restore_full(dest, target)
    assert "refusing to restore" in proc.stderr and why in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert state_of(base) == before


def _db_report(base, copy, path=None):
    return {"id": SNAP, "source": str(base / "src"), "critical": {},
            "databases": [{"copy": copy, "path": path or str(base / "src/app.db")}]}


def test_report_json_copy_leaving_the_snapshot_is_refused(world):
    base, outside, target = world
    dest = craft_snapshot(base, [("ok.txt", "file")],
                          report=_db_report(base, "db/../../../outside/victim.txt"))
    before = state_of(base)
    proc = restore_full(dest, target)
    assert "database copy leaving its directory: 'db/../../../outside/victim.txt'" \
        in proc.stderr
    assert state_of(base) == before


def test_report_json_absolute_copy_is_refused(world):
    base, outside, target = world
    victim = str(outside / "victim.txt")
    dest = craft_snapshot(base, [("ok.txt", "file")], report=_db_report(base, victim))
    before = state_of(base)
    proc = restore_full(dest, target)
    assert f"absolute database copy: {victim!r}" in proc.stderr
    assert state_of(base) == before
    assert oct(os.stat(victim).st_mode & 0o777) == "0o600"  # never made world-readable


def test_a_db_copy_that_is_a_link_out_of_the_snapshot_is_never_read(world):
    base, outside, target = world
    victim = outside / "victim.txt"
    dest = craft_snapshot(base, [("ok.txt", "file")], report=_db_report(base, "db/app.db"),
                          links={"db/app.db": (victim, sha(victim.read_bytes()))})
    before = state_of(base)
    proc = restore_full(dest, target)
    assert "'db/app.db'" in proc.stderr and "symlink" in proc.stderr
    assert state_of(base) == before


def test_a_db_copy_into_a_linked_folder_of_the_archive_is_refused(world):
    base, outside, target = world
    db = b"SQLite format 3\0" + bytes(100)
    dest = craft_snapshot(base, [("sub", "dir"), ("data", "sym", "sub")],
                          report=_db_report(base, "db/data/app.db", str(base / "src/data/app.db")),
                          files={"db/data/app.db": db})
    before = state_of(base)
    proc = restore_full(dest, target)
    assert "refusing to restore db/data/app.db" in proc.stderr and "symlink" in proc.stderr
    assert state_of(base) == before


@pytest.mark.parametrize("how,why", [
    ("unlisted", "REPORT.json of snapshot 20260101-000000-nogit is not listed in"),
    ("altered", "REPORT.json of snapshot 20260101-000000-nogit does not match its checksum"),
    ("missing", "REPORT.json of snapshot 20260101-000000-nogit is missing"),
    ("not-json", "is not valid JSON"),
    ("db-not-listed", "names database copy 'db/other.db', which SHA256SUMS does not list"),
    ("db-not-reported", "lists db/app.db, which REPORT.json does not account for"),
])
def test_untrustworthy_report_json_is_an_error_that_restores_nothing(world, how, why):
    base, outside, target = world
    db = b"SQLite format 3\0" + bytes(100)
    report, files, skip = None, {"db/app.db": db}, ()
    if how == "unlisted":
        skip = ("REPORT.json",)
    if how == "db-not-listed":
        report = _db_report(base, "db/other.db")
    dest = craft_snapshot(base, [("ok.txt", "file")], report=report or _db_report(
        base, "db/app.db") if how != "db-not-reported" else None, files=files, sums_skip=skip)
    folder = dest / SNAP
    if how == "altered":
        (folder / "REPORT.json").write_text(json.dumps(_db_report(base, "db/x.db")))
    elif how == "missing":
        (folder / "REPORT.json").unlink()
    elif how == "not-json":
        data = b"{not json"
        (folder / "REPORT.json").write_bytes(data)
        sums = (folder / "SHA256SUMS").read_text().splitlines()
        (folder / "SHA256SUMS").write_text("\n".join(
            f"{sha(data)}  REPORT.json" if ln.endswith("  REPORT.json") else ln
            for ln in sums) + "\n")
    before = state_of(base)
    proc = restore_full(dest, target)
    assert why in proc.stderr, proc.stderr
    assert state_of(base) == before


def test_a_hash_list_naming_a_path_outside_the_snapshot_is_refused(world):
    base, outside, target = world
    dest = craft_snapshot(base, [("ok.txt", "file")])
    folder = dest / SNAP
    with open(folder / "SHA256SUMS", "a") as fh:
        fh.write(f"{'0' * 64}  ../../outside/victim.txt\n")
    before = state_of(base)
    proc = restore_full(dest, target)
    assert "names a path outside the snapshot: '../../outside/victim.txt'" in proc.stderr
    assert state_of(base) == before


def test_a_critical_file_that_links_out_of_the_snapshot_is_never_read(world):
    base, outside, target = world
    victim = outside / "victim.txt"
    dest = craft_snapshot(base, [("ok.txt", "file")],
                          links={"critical/stolen.txt": (victim, sha(victim.read_bytes()))})
    before = state_of(base)
    proc = strongroom("backup", "restore", "--dest", dest, SNAP, "--critical", "--target",
                      target, check=2)
    assert "'critical/stolen.txt'" in proc.stderr and "symlink" in proc.stderr
    assert state_of(base) == before


def test_a_critical_restore_never_writes_through_a_link_in_the_target(world):
    base, outside, target = world
    (target / "config").symlink_to(outside)
    data = b"K=v\n"
    dest = craft_snapshot(base, [("ok.txt", "file")], files={"critical/config/victim.txt": data})
    before = state_of(base)
    proc = strongroom("backup", "restore", "--dest", dest, SNAP, "--critical", "--target",
                      target, check=2)
    assert "refusing to restore" in proc.stderr and "'config'" in proc.stderr
    assert state_of(base) == before


# --- rollups ------------------------------------------------------------------------------


def craft_rollup(base, members):
    dest = base / "daily"
    (dest / "rollups").mkdir(parents=True)
    name = "weekly_20260101_20260107.tar.zst"
    (dest / "rollups" / name).write_bytes(zstd(tar_bytes(*members)))
    return dest, name


@pytest.mark.parametrize("members,why", [
    ([("2026-01-01/../../outside/evil.txt", "file")], "path leaving the target"),
    ([("2026-01-01/esc", "sym", "../../outside"), ("2026-01-01/esc/evil.txt", "file")],
     "link leaving the target"),
    ([("2026-01-01/dev", "chr")], "device or fifo"),
])
def test_a_hostile_rollup_is_refused_with_exit_2_not_a_traceback(world, members, why):
    base, outside, target = world
    dest, name = craft_rollup(base, members)
    new = base / "restored"
    before = state_of(base)
    proc = strongroom("rollup", "restore", "--dest", dest, "--rollup", name, "--target", new,
                      check=2)
    assert f"refusing to restore from {name}" in proc.stderr and why in proc.stderr
    assert "Traceback" not in proc.stderr
    assert state_of(base) == before


@pytest.mark.parametrize("args,why", [
    (["--day", "../../outside"], "--day wants YYYY-MM-DD, got '../../outside'"),
    (["--rollup", "../../outside/victim.txt"], "is not a rollup name"),
])
def test_rollup_names_from_the_command_line_are_checked(world, args, why):
    base, outside, target = world
    (base / "daily").mkdir()
    before = state_of(base)
    proc = strongroom("rollup", "restore", "--dest", base / "daily", *args, "--target",
                      base / "restored", check=2)
    assert why in proc.stderr
    assert state_of(base) == before


def _day_folder(base, files, links=()):
    day = base / "daily" / "2026-01-01"
    day.mkdir(parents=True)
    for rel, target in links:
        (day / rel).symlink_to(target)
    (day / "manifest.json").write_text(json.dumps({"day": "2026-01-01", "files": files}))
    return base / "daily"


def test_a_day_manifest_naming_a_path_outside_is_refused(world):
    base, outside, target = world
    victim = outside / "victim.txt"
    dest = _day_folder(base, {"../../outside/victim.txt": {
        "size": victim.stat().st_size, "sha256": sha(victim.read_bytes())}})
    before = state_of(base)
    proc = strongroom("rollup", "restore", "--dest", dest, "--day", "2026-01-01", "--target",
                      base / "restored", check=2)
    assert "manifest path leaving its directory: '../../outside/victim.txt'" in proc.stderr
    assert state_of(base) == before


def test_a_day_folder_file_that_links_out_is_never_read(world):
    base, outside, target = world
    victim = outside / "victim.txt"
    dest = _day_folder(base, {"stolen.txt": {"size": victim.stat().st_size,
                                             "sha256": sha(victim.read_bytes())}},
                       links=[("stolen.txt", victim)])
    before = state_of(base)
    proc = strongroom("rollup", "restore", "--dest", dest, "--day", "2026-01-01", "--target",
                      base / "restored", check=2)
    assert "refusing to restore from" in proc.stderr and "symlink" in proc.stderr
    assert state_of(base) == before


# --- bundle chains ------------------------------------------------------------------------


def synced_with_critical(base):
    root, store = base / "root", base / "store"
    src = init(root / "r")
    commit(src, {".gitignore": ".env\n", "README.md": "tracked\n"})
    (src / ".env").write_text("KEY=1\n")
    sync_json(root, store)
    return root, store


def replace_pack(store, members):
    """Put a crafted critical pack in place and rewrite the manifest around it."""
    repo = store / "r"
    manifest = json.loads((repo / chain.MANIFEST).read_text())
    entry = manifest["critical"][-1]
    data = zstd(tar_bytes(*members))
    (repo / entry["filename"]).write_bytes(data)
    entry.update(sha256=sha(data), size=len(data))
    manifest["checksum"] = chain.checksum(manifest)
    (repo / chain.MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("members,why", [
    ([(".git/config", "file", b"[core]\n\tfsmonitor = touch /tmp/pwned\n")],
     "a critical pack may not write into .git/"),
    ([(".git/hooks/post-checkout", "file", b"#!/bin/sh\ntouch /tmp/pwned\n")],
     "a critical pack may not write into .git/"),
    ([("sub/.GIT/config", "file")], "a critical pack may not write into .git/"),
    ([("README.md", "file", b"replaced\n")], "a critical pack may not replace a file git tracks"),
    ([("README.md/x", "file")], "a critical pack may not write below a file git tracks"),
    ([("esc", "sym", "../../outside"), ("esc/evil.txt", "file")], "link leaving the target"),
    ([("../outside/evil.txt", "file")], "path leaving the target"),
])
def test_a_hostile_critical_pack_plants_nothing_in_a_restored_repository(world, members, why):
    base, outside, _ = world
    root, store = synced_with_critical(base)
    replace_pack(store, members)
    before = state_of(base)
    proc = strongroom("bundle", "restore", "--store", store, "r", base / "restored", check=2)
    assert "refusing critical-files pack" in proc.stderr and why in proc.stderr, proc.stderr
    assert state_of(base) == before
    drill = strongroom("drill", "--store", store, "--scratch", base / "scratch", check=2)
    assert why in drill.stdout
    assert not Path("/tmp/pwned").exists()


@pytest.mark.parametrize("field,value,why", [
    ("filename", "../../outside/victim.txt", "names a bundle '../../outside/victim.txt'"),
    ("refs_file", "/etc/passwd", "names a ref manifest '/etc/passwd'"),
])
def test_a_bundle_manifest_naming_files_outside_the_store_is_refused(world, field, value, why):
    base, outside, _ = world
    root, store = synced_with_critical(base)
    path = store / "r" / chain.MANIFEST
    manifest = json.loads(path.read_text())
    manifest["bundles"][0][field] = value
    manifest["checksum"] = chain.checksum(manifest)
    path.write_text(json.dumps(manifest))
    before = state_of(base)
    proc = strongroom("bundle", "restore", "--store", store, "r", base / "restored", check=2)
    assert why in proc.stderr
    assert state_of(base) == before


def test_a_retired_path_outside_the_store_is_never_deleted(world):
    base, outside, _ = world
    root, store = synced_with_critical(base)
    path = store / "r" / chain.MANIFEST
    manifest = json.loads(path.read_text())
    manifest["retired"] = [{"chain_id": "x", "path": "../../outside", "retired": "now"},
                           {"chain_id": "y", "path": ".retired/../../../outside",
                            "retired": "now"}]
    manifest["checksum"] = chain.checksum(manifest)
    path.write_text(json.dumps(manifest))
    row = sync_json(root, store, "--keep-retired", "0", check=1)["repositories"][0]
    assert "names retired chain path '../../outside'" in row["notes"][0]
    assert (outside / "victim.txt").read_text() == "safe\n"


def rewrite_refs(store, edit):
    """Change the first ref manifest of chain r, and the chain manifest around it."""
    refs_path = next((store / "r").glob("full-*.refs.json"))
    refs = json.loads(refs_path.read_text())
    edit(refs)
    data = json.dumps(refs).encode()
    refs_path.write_bytes(data)
    path = store / "r" / chain.MANIFEST
    manifest = json.loads(path.read_text())
    manifest["bundles"][0].update(refs_sha256=sha(data), refs_size=len(data))
    manifest["checksum"] = chain.checksum(manifest)
    path.write_text(json.dumps(manifest))


def test_ref_names_that_would_inject_git_commands_are_refused(world):
    base, outside, _ = world
    root, store = synced_with_critical(base)
    rewrite_refs(store, lambda refs: refs["refs"].update(
        {"refs/heads/x\ndelete refs/heads/main": "0" * 40}))
    proc = strongroom("bundle", "restore", "--store", store, "r", base / "restored", check=2)
    assert "holds names or ids git would not write" in proc.stderr
    assert not (base / "restored").exists()


@pytest.mark.parametrize("name", ["../outside", "/etc", "r/../../outside", ".retired/x"])
def test_repository_names_outside_the_store_are_refused(world, name):
    base, outside, _ = world
    root, store = synced_with_critical(base)
    before = state_of(base)
    proc = strongroom("bundle", "restore", "--store", store, name, base / "restored", check=2)
    assert "repository name" in proc.stderr
    assert state_of(base) == before
