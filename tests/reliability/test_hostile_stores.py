"""Hostile stores, round two: what an attacker with write access to a store, a snapshot
folder or the folder around a restore can try beyond crafted archives. Every case runs
the real CLI under a timeout (nothing may hang) and asserts its message, an exit code of
2 (never 1, which reads as a warning, and never a traceback), and that nothing changed
outside what the command owns."""

import io
import json
import os
import subprocess
import tarfile
import time
from datetime import date
from pathlib import Path

import pytest

from strongroom import rollups
from strongroom.bundles import chain
from tests.helpers import (
    ENV,
    VENV_BIN,
    big_repo,
    commit,
    g,
    init,
    rich_repo,
    strongroom,
    sync_json,
)
from tests.reliability.test_hostile_restores import (
    SNAP,
    craft_snapshot,
    replace_pack,
    rewrite_refs,
    sha,
    state_of,
    synced_with_critical,
    tar_bytes,
    zstd,
)

T = 60  # seconds: every command here ends long before, or it hangs


def refused(proc, *words):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text, text
    for w in words:
        assert w in text, (w, text)


# --- critical packs: only ignored files, never a repository of their own -----------------


def _pack_with(base, members, gitignore="build/\n.env\n"):
    root, store = base / "root", base / "store"
    src = init(root / "r")
    commit(src, {".gitignore": gitignore, "README.md": "tracked\n"})
    (src / ".env").write_text("KEY=1\n")
    sync_json(root, store)
    replace_pack(store, members)
    return store


@pytest.mark.parametrize("members,why", [
    ([("build/HEAD", "file", b"ref: refs/heads/master\n"),
      ("build/config", "file", b"[core]\n\tbare = false\n\tworktree = .\n"
                               b"\tfsmonitor = \"touch /tmp/pwned-nested; false\"\n")],
     "a critical pack may not make a git repository (a file named HEAD)"),
    ([("build/objects/", "dir"), ("build/refs/", "dir")],
     "a critical pack holds files, not directories"),
    ([("build", "sym", ".git/hooks")], "a critical pack may not link into .git/"),
    ([("Makefile", "file", b"all:\n\ttouch /tmp/pwned-make\n")],
     "1 file(s) in it are not chosen by the critical patterns in force, e.g. 'Makefile'"),
    ([(".envrc", "file", b"touch /tmp/pwned-direnv\n")], "not chosen by the critical patterns"),
    ([(".venv/bin/activate", "file", b"touch /tmp/pwned-venv\n")],
     "not chosen by the critical patterns"),
    ([(".vscode/tasks.json", "file", b"{}\n")], "not chosen by the critical patterns"),
])
def test_a_critical_pack_cannot_plant_a_repository_or_an_unignored_file(world, members, why):
    base, outside, _ = world
    store = _pack_with(base, members)
    before = state_of(base)
    refused(strongroom("bundle", "restore", "--store", store, "r", base / "restored",
                       timeout=T), why)
    assert state_of(base) == before
    refused(strongroom("drill", "--store", store, "--scratch", base / "scratch", timeout=T), why)
    assert not list(Path("/tmp").glob("pwned-*"))


def test_a_critical_file_that_links_out_of_the_repository_is_kept_by_its_content(tmp_path):
    root, store = tmp_path / "root", tmp_path / "store"
    src = init(root / "r")
    commit(src, {".gitignore": ".env\n"})
    secret = tmp_path / "elsewhere.env"
    secret.write_text("KEY=the real secret\n")
    (src / ".env").symlink_to(secret)
    sync_json(root, store)
    secret.unlink()  # the machine is gone: only the backup knows the secret now
    strongroom("bundle", "restore", "--store", store, "r", tmp_path / "out", check=0)
    restored = tmp_path / "out/.env"
    assert not restored.is_symlink() and restored.read_text() == "KEY=the real secret\n"
    strongroom("drill", "--store", store, "--scratch", tmp_path / "scratch", check=0)


# --- nothing blocks on a FIFO, nothing reads through a link -------------------------------


def _snapshot(base):
    src = base / "src"
    src.mkdir()
    (src / "notes.md").write_text("notes\n")
    dest = base / "snaps"
    snap_id = strongroom("backup", "now", "--source", src, "--dest", dest, "--critical",
                         "*.md", "--immutable", "off", check=0).stdout.strip()
    return dest, dest / snap_id, snap_id


@pytest.mark.parametrize("kind", ["fifo", "link-to-dev-zero", "link-to-passwd"])
def test_a_hash_list_that_is_no_file_of_the_snapshot_never_hangs_or_leaks(world, kind):
    base, outside, target = world
    dest, folder, snap_id = _snapshot(base)
    (folder / "SHA256SUMS").unlink()
    if kind == "fifo":
        os.mkfifo(folder / "SHA256SUMS")
    else:
        (folder / "SHA256SUMS").symlink_to("/dev/zero" if kind == "link-to-dev-zero"
                                          else "/etc/passwd")
    before = state_of(base)
    for verb in (["restore", "--dest", dest, snap_id, "--full", "--target", target],
                 ["restore", "--dest", dest, snap_id, "--critical", "--target", target]):
        proc = strongroom("backup", *verb, timeout=T)
        refused(proc, "SHA256SUMS")
        assert "root:" not in proc.stderr
    assert state_of(base) == before
    proc = strongroom("backup", "verify", "--dest", dest, snap_id, timeout=T)
    assert proc.returncode == 2 and "root:" not in proc.stdout  # (it records its verdict)


def test_a_snapshot_folder_that_is_a_link_is_refused_by_name(world):
    base, outside, target = world
    dest, folder, snap_id = _snapshot(base)
    os.rename(folder, outside / snap_id)
    folder.symlink_to(outside / snap_id)
    refused(strongroom("backup", "restore", "--dest", dest, snap_id, "--critical", "--target",
                       target, timeout=T), "is a symlink, not a snapshot folder")


@pytest.mark.parametrize("which", ["bundle", "refs", "manifest", "pack"])
@pytest.mark.parametrize("kind", ["fifo", "link"])
def test_store_files_that_are_fifos_or_links_are_refused_without_hanging(world, which, kind):
    base, outside, _ = world
    root, store = synced_with_critical(base)
    repo = store / "r"
    path = {"bundle": next(repo.glob("full-*.bundle")), "refs": next(repo.glob("*.refs.json")),
            "manifest": repo / chain.MANIFEST, "pack": next(repo.glob("critical-*.tar.zst"))}[
        which]
    copy = outside / path.name
    copy.write_bytes(path.read_bytes())
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to(copy)  # the same bytes, but not the store's own file
    proc = strongroom("bundle", "restore", "--store", store, "r", base / "restored", timeout=T)
    refused(proc)
    assert not (base / "restored").exists()
    drill = strongroom("drill", "--store", store, "--scratch", base / "scratch", timeout=T)
    assert drill.returncode == 2 and "Traceback" not in drill.stdout + drill.stderr


def test_a_repository_folder_that_is_a_link_is_refused(world):
    base, outside, _ = world
    root, store = synced_with_critical(base)
    os.rename(store / "r", outside / "r")
    (store / "r").symlink_to(outside / "r")
    refused(strongroom("bundle", "restore", "--store", store, "r", base / "restored",
                       timeout=T), "refusing the store's folder for r")


def test_a_rollup_state_file_that_is_a_fifo_reads_as_nothing_verified(world):
    base, outside, target = world
    dest = base / "daily"
    (dest / "rollups").mkdir(parents=True)
    os.mkfifo(dest / ".rollups-state.json")
    name = "weekly_20260101_20260107.tar.zst"
    (dest / "rollups" / name).write_bytes(zstd(tar_bytes(("2026-01-01/", "dir"))))
    proc = strongroom("rollup", "restore", "--dest", dest, "--rollup", name, "--target",
                      base / "restored", timeout=T)
    refused(proc, "2026-01-01 has no manifest.json")


# --- the folder around a restore is the user's ---------------------------------------------


def test_a_refused_restore_deletes_nothing_beside_its_target(world):
    base, outside, target = world
    parent = base
    mine = [parent / ".tmp-thesis.draft.4242.docx", parent / ".tmp-editor-autosave.999999",
            parent / ".tmp-build.999998/obj/x.o"]
    for p in mine:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("the user's\n")
    dest = craft_snapshot(base, [("ok.txt", "file"), ("/abs", "file")])
    refused(strongroom("backup", "restore", "--dest", dest, SNAP, "--full", "--target",
                       target, timeout=T), "refusing to restore")
    assert all(p.read_text() == "the user's\n" for p in mine)


def test_a_refused_restore_leaves_no_folder_it_made(world):
    base, outside, _ = world
    target = base / "new/deeper/target"
    dest = craft_snapshot(base, [("ok.txt", "file"), ("dev", "chr")])
    refused(strongroom("backup", "restore", "--dest", dest, SNAP, "--full", "--target",
                       target, timeout=T), "device or fifo")
    assert not (base / "new").exists()
    data = b"K=v\n"
    dest2 = base / "two"
    craft_snapshot(dest2, [("ok.txt", "file")],
                   files={"critical/a/b/c/ok.env": data, "critical/z/y/bad.env": data})
    folder = dest2 / "snaps" / SNAP
    (folder / "critical/z/y/bad.env").write_bytes(b"changed\n")  # its hash no longer matches
    refused(strongroom("backup", "restore", "--dest", dest2 / "snaps", SNAP, "--critical",
                       "--target", base / "fresh", timeout=T), "does not match its checksum")
    assert not (base / "fresh").exists()


def test_a_killed_bundle_restore_is_cleaned_up_by_the_next_one(tmp_path):
    root, store = tmp_path / "root", tmp_path / "store"
    big_repo(root / "r", megabytes=48)
    sync_json(root, store)
    proc = subprocess.Popen([str(VENV_BIN / "strongroom"), "bundle", "restore", "--store",
                             str(store), "r", str(tmp_path / "out")], env=ENV,
                            start_new_session=True)
    deadline = time.time() + 30
    while time.time() < deadline and not list(tmp_path.glob(".strongroom-restore-out.*")):
        time.sleep(0.02)
    proc.terminate()
    proc.wait(timeout=T)
    assert proc.returncode in (0, 143)
    assert not list(tmp_path.glob(".strongroom-restore-out.*"))  # SIGTERM cleans up


# --- depth, and metadata of the wrong shape --------------------------------------------------


@pytest.fixture
def deep_cleanup(tmp_path):
    """pytest's own clean-up of old temp folders recurses: deep trees go when done."""
    yield
    from strongroom.core import fsutil

    for child in tmp_path.iterdir():
        fsutil.rmtree_quiet(child)


def test_a_tree_deeper_than_the_recursion_limit_backs_up_and_restores(tmp_path, deep_cleanup):
    src = tmp_path / "src"
    src.mkdir()
    fd = os.open(src, os.O_RDONLY)
    for _ in range(1300):  # made one level at a time: Path.mkdir(parents=True) recurses
        os.mkdir("d", dir_fd=fd)
        fd, old = os.open("d", os.O_RDONLY, dir_fd=fd), fd
        os.close(old)
    with os.fdopen(os.open("f.env", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd), "w") as fh:
        fh.write("deep\n")
    os.close(fd)
    deep = src.joinpath(*["d"] * 1300)
    dest = tmp_path / "snaps"
    snap_id = strongroom("backup", "now", "--source", src, "--dest", dest, "--critical",
                         "*.env", "--immutable", "off", check=0, timeout=T).stdout.strip()
    strongroom("backup", "verify", "--dest", dest, snap_id, check=0, timeout=T)
    for mode in ("--full", "--critical"):
        target = tmp_path / f"out{mode}"
        strongroom("backup", "restore", "--dest", dest, snap_id, mode, "--target", target,
                   check=0, timeout=T)
        assert (target / deep.relative_to(src) / "f.env").read_text() == "deep\n"
    strongroom("backup", "prune", "--dest", dest, "--keep-last", "1", "--keep-days", "0",
               check=0, timeout=T)


def _pax(name, **headers):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = 5
        info.pax_headers = headers
        tar.addfile(info, io.BytesIO(b"data\n"))
    return buf.getvalue()


@pytest.mark.parametrize("headers", [{"mtime": "nan"}, {"mtime": "inf"}, {"mtime": "1e30"},
                                     {"GNU.sparse.map": "a,b", "GNU.sparse.size": "5"}])
def test_impossible_tar_headers_are_a_refusal_not_a_traceback(world, headers):
    base, outside, target = world
    folder = base / "snaps" / SNAP
    folder.mkdir(parents=True)
    archive = zstd(_pax("f.txt", **headers))
    report = json.dumps({"id": SNAP, "source": "/src", "databases": []}).encode()
    (folder / "full.tar.zst").write_bytes(archive)
    (folder / "REPORT.json").write_bytes(report)
    (folder / "SHA256SUMS").write_text(f"{sha(archive)}  full.tar.zst\n"
                                       f"{sha(report)}  REPORT.json\n")
    before = state_of(base)
    refused(strongroom("backup", "restore", "--dest", base / "snaps", SNAP, "--full",
                       "--target", target, timeout=T))
    assert state_of(base) == before


@pytest.mark.parametrize("report,files,why", [
    ("[" * 100_000 + "]" * 100_000, {}, "REPORT.json of snapshot"),
    ({"id": SNAP, "source": "/src", "databases": [], "source_mode": 10 ** 30}, {}, None),
    ({"id": SNAP, "source": "/src", "databases": [], "critical": {"x.env": {"mode": -1}}},
     {"critical/x.env": b"K=v\n"}, None),
    ({"id": SNAP, "source": "/src", "databases": [],
      "critical": {"x.env": {"journal_mode": "wal"}}}, {"critical/x.env": b"K=v\n"}, None),
])
def test_report_values_of_the_wrong_shape_never_crash_a_restore(world, report, files, why):
    base, outside, target = world
    folder = base / "snaps" / SNAP
    folder.mkdir(parents=True)
    archive = zstd(tar_bytes(("ok.txt", "file")))
    rep = (report if isinstance(report, str) else json.dumps(report)).encode()
    content = {"full.tar.zst": archive, "REPORT.json": rep, **files}
    for rel, data in content.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    (folder / "SHA256SUMS").write_text("".join(f"{sha(d)}  {r}\n" for r, d in content.items()))
    for mode in ("--full", "--critical"):
        out = base / f"out{mode}"
        proc = strongroom("backup", "restore", "--dest", base / "snaps", SNAP, mode,
                          "--target", out, timeout=T)
        text = proc.stdout + proc.stderr
        assert "Traceback" not in text and proc.returncode in (0, 2), text
        if why:
            assert proc.returncode == 2 and why in text
        if proc.returncode == 0 and mode == "--critical" and files:
            # an impossible recorded mode falls back to the snapshot copy's own
            copy = folder / "critical/x.env"
            assert os.stat(out / "x.env").st_mode & 0o777 == os.stat(copy).st_mode & 0o777


def test_a_hash_list_in_another_spelling_is_refused(world):
    base, outside, target = world
    dest = craft_snapshot(base, [("ok.txt", "file")], files={"critical/.env": b"K=v\n"})
    sums = dest / SNAP / "SHA256SUMS"
    sums.write_text(sums.read_text().replace("  critical/.env", "  critical/./.env"))
    refused(strongroom("backup", "restore", "--dest", dest, SNAP, "--critical", "--target",
                       target, timeout=T), "which is not a path we write")


def test_a_critical_restore_from_a_snapshot_never_writes_into_git(world):
    base, outside, target = world
    (target / ".git/hooks").mkdir(parents=True)
    dest = craft_snapshot(base, [("ok.txt", "file")], report={
        "id": SNAP, "source": "/src", "databases": [],
        "critical": {".git/hooks/pre-commit": {"mode": 0o755}}},
        files={"critical/.git/hooks/pre-commit": b"#!/bin/sh\ntouch /tmp/pwned-hook\n"})
    before = state_of(base)
    refused(strongroom("backup", "restore", "--dest", dest, SNAP, "--critical", "--target",
                       target, timeout=T), "a critical restore never writes into .git/")
    assert state_of(base) == before


@pytest.mark.parametrize("edit", [
    lambda m: m.update(critical=5), lambda m: m.update(retired=7),
    lambda m: m.update(retired=[{"path": 5}]), lambda m: m["bundles"][0].pop("sha256"),
    lambda m: m["bundles"][0].pop("type"), lambda m: m["critical"][0].pop("sha256"),
    lambda m: m["bundles"].append({"refs_file": "x.refs.json"}),
])
def test_a_chain_manifest_of_the_wrong_shape_is_an_error_with_a_message(world, edit):
    base, outside, _ = world
    root, store = synced_with_critical(base)
    rich_repo(root / "other")
    sync_json(root, store)
    path = store / "r" / chain.MANIFEST
    manifest = json.loads(path.read_text())
    edit(manifest)
    manifest["checksum"] = chain.checksum(manifest)
    path.write_text(json.dumps(manifest))
    refused(strongroom("bundle", "restore", "--store", store, "r", base / "restored",
                       timeout=T), "bundle-manifest.json")
    drill = strongroom("drill", "--store", store, "--scratch", base / "scratch", "--json",
                       timeout=T)
    assert drill.returncode == 2, drill.stdout + drill.stderr  # and the other one drilled
    results = {a["name"]: a["result"] for a in json.loads(drill.stdout)["artifacts"]}
    assert results == {"r": "error", "other": "ok"}
    row = sync_json(root, store, check=1)["repositories"]
    assert {r["name"]: r["action"] for r in row}["r"] == "full"  # a new chain, with a warning


def test_a_drill_never_runs_what_a_source_repository_configures(world):
    """The manifest's `source` is read from the store: git asked about its objects must
    not read that repository's config (a promisor remote would run an upload-pack)."""
    base, outside, _ = world
    from tests.reliability.test_chain_trust import legacy_repo

    root, store = base / "root", base / "store"
    legacy_repo(root / "r")
    sync_json(root, store)
    trap = init(base / "trap")
    commit(trap, {"x": "1\n"})
    marker = base / "PWNED_LAZY"
    g(trap, "config", "extensions.partialClone", "origin")
    g(trap, "config", "core.repositoryformatversion", "1")
    g(trap, "config", "remote.origin.url", str(trap))
    g(trap, "config", "remote.origin.promisor", "true")
    g(trap, "config", "remote.origin.uploadpack", f"touch {marker}; false")
    path = store / "r" / chain.MANIFEST
    manifest = json.loads(path.read_text())
    manifest["source"] = str(trap)
    manifest["checksum"] = chain.checksum(manifest)
    path.write_text(json.dumps(manifest))
    proc = strongroom("drill", "--store", store, "--scratch", base / "scratch", timeout=T)
    assert proc.returncode == 1 and "the source repository does not have them" in proc.stdout
    strongroom("bundle", "verify", "--store", store, check=1, timeout=T)
    assert not marker.exists()


def test_a_relative_store_and_root_work_like_absolute_ones(tmp_path):
    rich_repo(tmp_path / "root/r")
    for args, code in ((["bundle", "sync", "--root", "root", "--store", "store"], 0),
                       (["bundle", "verify", "--store", "store"], 0),
                       (["bundle", "restore", "--store", "store", "r", "out"], 0)):
        proc = subprocess.run([str(VENV_BIN / "strongroom"), *args], cwd=tmp_path,
                              capture_output=True, text=True, env=ENV)
        assert proc.returncode == code, proc.stdout + proc.stderr
    manifest = json.loads((tmp_path / "store/r" / chain.MANIFEST).read_text())
    assert manifest["source"] == str(tmp_path / "root/r")


def test_a_rollup_holds_day_folders_and_nothing_on_top(world):
    base, outside, target = world
    dest = base / "daily"
    (dest / "rollups").mkdir(parents=True)
    name = "weekly_20260101_20260107.tar.zst"
    (dest / "rollups" / name).write_bytes(zstd(tar_bytes(
        (".git/", "dir"), (".git/config", "file", b"[core]\n\thooksPath = /tmp\n"))))
    refused(strongroom("rollup", "restore", "--dest", dest, "--rollup", name, "--target",
                       base / "restored", timeout=T), "a rollup holds day folders")
    assert not (base / "restored").exists()


def test_a_folder_a_day_manifest_does_not_account_for_is_a_problem(tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.md").write_text("a\n")
    rollups.make_day([notes], tmp_path / "days", today=date(2026, 1, 1))
    (tmp_path / "days/2026-01-01/notes/stray").mkdir()
    assert rollups.check_folder(tmp_path / "days/2026-01-01") == [
        "notes/stray/: a folder the manifest does not account for"]


def test_a_head_naming_no_commit_restores_the_history_and_says_the_pack_stayed(world):
    base, outside, _ = world
    root, store = synced_with_critical(base)
    rewrite_refs(store, lambda refs: refs.update(head="ref: refs/heads/never-made"))
    proc = strongroom("bundle", "restore", "--store", store, "r", base / "restored", check=1,
                      timeout=T)
    assert "critical files not put back: HEAD (ref: refs/heads/never-made) names no commit" \
        in proc.stderr
    assert not (base / "restored/.env").exists()
