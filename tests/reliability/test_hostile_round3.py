"""Hostile stores, round three, and the ordinary repositories the second round's rules
must still back up and restore. Every command runs under a timeout: nothing may hang."""

import hashlib
import io
import json
import os
import subprocess
import tarfile
from datetime import date
from pathlib import Path

import pytest

from strongroom import rollups
from strongroom.bundles import chain
from strongroom.core import fsutil
from tests.helpers import commit, g, init, rich_repo, strongroom, sync_json
from tests.reliability.test_chain_trust import legacy_repo
from tests.reliability.test_hostile_restores import (
    rewrite_refs,
    state_of,
    synced_with_critical,
    zstd,
)

T = 60


def refused(proc, *words):
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in text, (proc.returncode, text)
    for w in words:
        assert w in text, (w, text)


def deep(root, levels=1200, name="f.env", text="deep\n"):
    """A folder `levels` deep below root (made one level at a time: pathlib recurses)."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY)
    for _ in range(levels):
        os.mkdir("d", dir_fd=fd)
        fd, old = os.open("d", os.O_RDONLY, dir_fd=fd), fd
        os.close(old)
    with os.fdopen(os.open(name, os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd), "w") as fh:
        fh.write(text)
    os.close(fd)
    return "/".join(["d"] * levels)


@pytest.fixture
def cleanup(tmp_path):
    yield  # pytest's own clean-up of old temp folders recurses: deep trees go here
    for child in tmp_path.iterdir():
        fsutil.rmtree_quiet(child)


# --- a lock file is never written through a link --------------------------------------


def test_a_planted_lock_link_truncates_nothing(world):
    base, outside, _ = world
    root, store = synced_with_critical(base)
    victim = outside / "victim.txt"
    (store / ".strongroom.lock").unlink(missing_ok=True)
    (store / ".strongroom.lock").symlink_to(victim)
    for args in (["bundle", "restore", "--store", store, "r", base / "out"],
                 ["bundle", "verify", "--store", store],
                 ["drill", "--store", store, "--scratch", base / "scratch"]):
        proc = strongroom(*args, timeout=T)
        assert proc.returncode == 2 and "is a symlink; refusing to write through it" in \
            proc.stdout + proc.stderr, (args, proc.stdout, proc.stderr)
        assert victim.read_text() == "safe\n"
    snaps = base / "snaps"
    snaps.mkdir()
    (snaps / ".snapshot.lock").symlink_to(victim)
    src = base / "src"
    src.mkdir()
    refused(strongroom("backup", "now", "--source", src, "--dest", snaps, "--immutable", "off",
                       timeout=T), "lock file")
    assert victim.read_text() == "safe\n"


# --- the source a manifest names is only ever compared ------------------------------------


def test_consolidate_never_runs_git_in_a_path_read_from_the_store(world):
    base, outside, _ = world
    root, store = synced_with_critical(base)
    trap = init(base / "trap")
    commit(trap, {"x": "1\n"})
    marker = base / "PWNED"
    g(trap, "config", "core.repositoryformatversion", "1")
    g(trap, "config", "extensions.partialClone", "origin")
    g(trap, "config", "remote.origin.url", str(trap))
    g(trap, "config", "remote.origin.promisor", "true")
    g(trap, "config", "remote.origin.uploadpack", f"touch {marker}; false")
    path = store / "r" / chain.MANIFEST
    manifest = json.loads(path.read_text())
    manifest["source"] = str(trap)
    manifest["checksum"] = chain.checksum(manifest)
    path.write_text(json.dumps(manifest))
    refused(strongroom("bundle", "consolidate", "--store", store, "--root", root, "r",
                       timeout=T), f"the chain was made from {str(trap)!r}, not {root / 'r'}")
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_a_source_whose_objects_would_block_is_not_compared_and_nothing_hangs(world, kind):
    base, outside, _ = world
    root, store = base / "root", base / "store"
    legacy_repo(root / "r")
    sync_json(root, store)
    fake = base / "fake-source"
    (fake / "objects/info").mkdir(parents=True)
    alternates = fake / "objects/info/alternates"
    if kind == "fifo":
        os.mkfifo(alternates)
    else:
        alternates.symlink_to("/dev/zero")
    path = store / "r" / chain.MANIFEST
    manifest = json.loads(path.read_text())
    manifest["source"] = str(fake)
    manifest["checksum"] = chain.checksum(manifest)
    path.write_text(json.dumps(manifest))
    before = set(Path("/tmp").glob("strongroom-objects-*"))
    proc = strongroom("bundle", "verify", "--store", store, "--json", timeout=T)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "not compared: the source" in proc.stdout
    proc = strongroom("drill", "--store", store, "--scratch", base / "scratch", timeout=T)
    assert proc.returncode == 1
    assert set(Path("/tmp").glob("strongroom-objects-*")) == before


# --- no repository of its own, from any route ----------------------------------------------


def test_a_snapshot_critical_restore_never_writes_a_file_named_head(world):
    base, outside, target = world
    from tests.reliability.test_hostile_restores import SNAP, craft_snapshot

    dest = craft_snapshot(base, [("ok.txt", "file")], files={
        "critical/tools/HEAD": b"ref: refs/heads/main\n",
        "critical/tools/config": b"[core]\n\tfsmonitor = touch /tmp/pwned-snap\n"})
    before = state_of(base)
    refused(strongroom("backup", "restore", "--dest", dest, SNAP, "--critical", "--target",
                       target, timeout=T), "nor a file named HEAD")
    assert state_of(base) == before


def test_a_history_that_holds_a_repository_of_its_own_restores_with_a_warning(tmp_path):
    root, store = tmp_path / "root", tmp_path / "store"
    repo = init(root / "r")
    commit(repo, {"tools/HEAD": "ref: refs/heads/main\n", "tools/objects/x": "x\n",
                  "tools/refs/x": "x\n", "tools/config": "[core]\n\tbare = true\n"})
    sync_json(root, store)
    proc = strongroom("bundle", "restore", "--store", store, "r", tmp_path / "out", check=1,
                      timeout=T)
    assert "the restored history holds a git repository of its own at tools/" in proc.stderr
    assert "safe.bareRepository explicit" in proc.stderr


# --- ordinary repositories the rules must not refuse ----------------------------------------


def test_a_secret_ignored_only_by_info_exclude_restores(tmp_path):
    root, store = tmp_path / "root", tmp_path / "store"
    repo = init(root / "r")
    commit(repo, {"README.md": "x\n"})
    (repo / ".git/info/exclude").write_text(".env\n")
    (repo / ".env").write_text("KEY=only excluded locally\n")
    sync_json(root, store)
    strongroom("bundle", "restore", "--store", store, "r", tmp_path / "out", check=0,
               timeout=T)
    assert (tmp_path / "out/.env").read_text() == "KEY=only excluded locally\n"


def test_files_from_before_1970_restore(tmp_path):
    root, store = tmp_path / "root", tmp_path / "store"
    repo = init(root / "r")
    commit(repo, {".gitignore": ".env\n"})
    (repo / ".env").write_text("OLD=1\n")
    os.utime(repo / ".env", (-100, -100))
    sync_json(root, store)
    strongroom("bundle", "restore", "--store", store, "r", tmp_path / "out", check=0,
               timeout=T)
    assert (tmp_path / "out/.env").stat().st_mtime == -100
    snaps = tmp_path / "snaps"
    snap_id = strongroom("backup", "now", "--source", repo, "--dest", snaps, "--immutable",
                         "off", check=0, timeout=T).stdout.strip()
    strongroom("backup", "restore", "--dest", snaps, snap_id, "--full", "--target",
               tmp_path / "full", check=0, timeout=T)
    assert (tmp_path / "full/.env").stat().st_mtime == -100


def test_critical_names_with_odd_characters_restore_and_verify(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    names = ["cr\rname.env", "ff\fname.env", "ls\u2028name.env", "nel\u0085name.env",
             "back\\nslash.env", "nl\nname.env", b"bytes-\xff.env".decode("utf-8",
                                                                     "surrogateescape")]
    for name in names:
        with open(os.path.join(os.fsencode(src), os.fsencode(name)), "w") as fh:
            fh.write(f"{name!r}\n")
    snaps = tmp_path / "snaps"
    snap_id = strongroom("backup", "now", "--source", src, "--dest", snaps, "--critical",
                         "*.env", "--immutable", "off", check=0, timeout=T).stdout.strip()
    strongroom("backup", "verify", "--dest", snaps, snap_id, check=0, timeout=T)
    out = subprocess.run(["sha256sum", "-c", "--strict", "--quiet", "SHA256SUMS"],
                         cwd=snaps / snap_id, capture_output=True)
    assert out.returncode == 0, out.stdout + out.stderr
    for mode in ("--critical", "--full"):
        target = tmp_path / f"out{mode}"
        strongroom("backup", "restore", "--dest", snaps, snap_id, mode, "--target", target,
                   check=0, timeout=T)
        assert sorted(os.listdir(os.fsencode(target))) == sorted(os.fsencode(n) for n in names)


def test_links_to_what_a_restore_would_not_bring_back_are_kept_by_content(tmp_path):
    root, store = tmp_path / "root", tmp_path / "store"
    repo = init(root / "r")
    commit(repo, {".gitignore": ".env\n.env.local\nsecrets/\n"})
    (repo / "secrets").mkdir()
    (repo / "secrets/prod.conf").write_text("KEY=inside, not chosen\n")
    (repo / ".env").symlink_to("secrets/prod.conf")
    (repo / ".env.local").symlink_to("secrets")  # a folder: said, not silently counted
    row = sync_json(root, store)["repositories"][0]
    assert "critical file .env.local not stored: a link to a folder" in row["notes"]
    assert "1 critical ignored file(s) stored UNENCRYPTED" in row["notes"]
    strongroom("bundle", "restore", "--store", store, "r", tmp_path / "out", check=0,
               timeout=T)
    assert (tmp_path / "out/.env").read_text() == "KEY=inside, not chosen\n"


def test_a_store_and_a_target_that_are_links_the_user_made_work(tmp_path):
    root = tmp_path / "root"
    rich_repo(root / "r")
    (tmp_path / "real-store").mkdir()
    (tmp_path / "store").symlink_to(tmp_path / "real-store")
    sync_json(root, tmp_path / "store")
    strongroom("bundle", "verify", "--store", tmp_path / "store", check=0, timeout=T)
    strongroom("bundle", "restore", "--store", tmp_path / "store", "r", tmp_path / "out",
               check=0, timeout=T)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.env").write_text("A=1\n")
    snaps = tmp_path / "snaps"
    snap_id = strongroom("backup", "now", "--source", src, "--dest", snaps, "--critical",
                         "*.env", "--immutable", "off", check=0, timeout=T).stdout.strip()
    (tmp_path / "real-target").mkdir()
    (tmp_path / "target").symlink_to(tmp_path / "real-target")
    strongroom("backup", "restore", "--dest", snaps, snap_id, "--critical", "--target",
               tmp_path / "target", check=0, timeout=T)
    assert (tmp_path / "real-target/a.env").read_text() == "A=1\n"


# --- depth, FIFOs and odd shapes elsewhere ---------------------------------------------------


def test_deep_folders_anywhere_never_crash(tmp_path, cleanup):
    root, store = tmp_path / "root", tmp_path / "store"
    repo = init(root / "r")
    commit(repo, {"a.txt": "a\n"})
    deep(root / "elsewhere")  # deeper than Python's recursion limit, under --root
    sync_json(root, store)
    deep(store / "junk")  # and inside the store
    strongroom("bundle", "verify", "--store", store, check=0, timeout=T)
    strongroom("bundle", "list", "--store", store, check=0, timeout=T)
    strongroom("drill", "--store", store, "--scratch", tmp_path / "scratch", check=0,
               timeout=T)
    notes = tmp_path / "notes"
    deep(notes, 600)
    rollups.make_day([notes], tmp_path / "days", today=date(2026, 1, 1))
    proc = strongroom("rollup", "list", "--dest", tmp_path / "days", check=0, timeout=T)
    assert "2026-01-01" in proc.stdout


def test_a_deep_checkout_is_drilled_and_cleaned(tmp_path, cleanup):
    root, store = tmp_path / "root", tmp_path / "store"
    repo = init(root / "r")
    deep(repo, 1100, "leaf.txt")
    g(repo, "add", "-A")
    g(repo, "commit", "-q", "-m", "deep")
    sync_json(root, store)
    scratch = tmp_path / "scratch"
    strongroom("drill", "--store", store, "--scratch", scratch, check=0, timeout=T)
    assert [p.name for p in scratch.iterdir()] == []


@pytest.mark.parametrize("name", ["hashed-state.json", "remote-state.json"])
def test_store_state_that_is_a_fifo_never_holds_a_sync(tmp_path, name):
    root, store = tmp_path / "root", tmp_path / "store"
    src = rich_repo(root / "r")
    sync_json(root, store)
    (store / "r" / name).unlink(missing_ok=True)
    os.mkfifo(store / "r" / name)
    commit(src, {"more": "1\n"})
    strongroom("bundle", "sync", "--root", root, "--store", store, check=0, timeout=T)


def test_a_verification_record_that_is_a_fifo_never_holds_list_or_verify(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.md").write_text("a\n")
    snaps = tmp_path / "snaps"
    snap_id = strongroom("backup", "now", "--source", src, "--dest", snaps, "--immutable",
                         "off", check=0, timeout=T).stdout.strip()
    (snaps / ".strongroom").mkdir(exist_ok=True)
    (snaps / ".strongroom/verified.json").unlink(missing_ok=True)
    os.mkfifo(snaps / ".strongroom/verified.json")
    strongroom("backup", "list", "--dest", snaps, check=0, timeout=T)
    strongroom("backup", "verify", "--dest", snaps, snap_id, check=0, timeout=T)


def test_metadata_of_odd_shapes_is_an_error_not_a_traceback(world):
    base, outside, _ = world
    day = base / "days/2026-01-01"
    day.mkdir(parents=True)
    (day / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    refused(strongroom("rollup", "restore", "--dest", base / "days", "--day", "2026-01-01",
                       "--target", base / "restored", timeout=T), "manifest.json")
    root, store = synced_with_critical(base)
    rewrite_refs(store, lambda refs: refs.update(stash=5))
    refused(strongroom("bundle", "restore", "--store", store, "r", base / "restored",
                       timeout=T), "malformed stash")


def test_a_pack_member_named_in_another_encoding_is_an_error_not_a_traceback(world):
    base, outside, _ = world
    root, store = synced_with_critical(base)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT,
                      encoding="latin-1") as tar:
        info = tarfile.TarInfo("caf\xe9.env")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"x\n"))
    data = zstd(buf.getvalue())
    repo = store / "r"
    manifest = json.loads((repo / chain.MANIFEST).read_text())
    (repo / manifest["critical"][-1]["filename"]).write_bytes(data)
    manifest["critical"][-1].update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    manifest["checksum"] = chain.checksum(manifest)
    (repo / chain.MANIFEST).write_text(json.dumps(manifest))
    proc = strongroom("bundle", "restore", "--store", store, "r", base / "restored", timeout=T)
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr


def test_a_drill_never_removes_a_users_folder_in_its_scratch(tmp_path):
    root, store = tmp_path / "root", tmp_path / "store"
    rich_repo(root / "r")
    sync_json(root, store)
    scratch = tmp_path / "scratch"
    (scratch / "drill-presentation").mkdir(parents=True)
    (scratch / "drill-presentation/slides.md").write_text("mine\n")
    (scratch / "drill-999999-0").mkdir()  # what a killed drill of ours left: it goes
    strongroom("drill", "--store", store, "--scratch", scratch, check=0, timeout=T)
    assert (scratch / "drill-presentation/slides.md").read_text() == "mine\n"
    assert not (scratch / "drill-999999-0").exists()
