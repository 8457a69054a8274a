"""A full disk, for every writer: a small tmpfs fills while the artifact is written.

Each writer must end (a timeout catches a hang) with exit 2 and "No space left on device",
leave no temp file, release its lock, and leave what was there before intact.
"""

import json
import os
import sqlite3
import subprocess
from datetime import date
from pathlib import Path

import pytest

from strongroom import rollups
from tests.helpers import commit, init, strongroom

NOSPACE = "No space left on device"


@pytest.fixture
def small_fs(tmp_path):
    """A tmpfs of a given size (MiB), unmounted at the end."""
    mounts = []

    def make(mib, name="fs"):
        path = tmp_path / name
        path.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m,mode=0755", "tmpfs",
                               str(path)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"this machine cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounts.append(path)
        return path

    yield make
    for path in reversed(mounts):
        subprocess.run(["umount", "-l", str(path)], check=False)


def temps(path):
    return sorted(str(p) for p in Path(path).rglob("*") if p.name.startswith(
        (".tmp-", "tmp_pack", ".strongroom-db-", "strongroom-")))


def random_tree(path, mib, files=4):
    path.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (path / f"blob{i}.bin").write_bytes(os.urandom(mib * 1024 * 1024 // files))
    return path


def fill(fs, leave_kib):
    """Use up the filesystem but for about leave_kib KiB."""
    st = os.statvfs(fs)
    free = st.f_bavail * st.f_frsize
    (Path(fs) / "filler").write_bytes(b"\0" * max(0, free - leave_kib * 1024))


def test_a_snapshot_ends_cleanly_when_the_archive_fills_the_disk(tmp_path, small_fs):
    fs = small_fs(8)
    small = tmp_path / "small"
    small.mkdir()
    (small / "notes.md").write_text("notes\n")
    first = strongroom("backup", "now", "--source", small, "--dest", fs, "--immutable",
                       "off", check=0).stdout.strip()
    src = random_tree(tmp_path / "big", 12)
    proc = strongroom("backup", "now", "--source", src, "--dest", fs, "--immutable", "off",
                      check=2, timeout=120)
    assert NOSPACE in proc.stderr and "full.tar.zst" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert temps(fs) == []
    assert sorted(p.name for p in fs.iterdir() if not p.name.startswith(".")) == [first]
    again = strongroom("backup", "now", "--source", src, "--dest", fs, "--immutable", "off",
                       check=2, timeout=120)  # the lock was released: 2 again, never 11
    assert NOSPACE in again.stderr
    strongroom("backup", "verify", "--dest", fs, first, check=0)


def test_a_snapshot_ends_cleanly_when_a_database_copy_fills_the_disk(tmp_path, small_fs):
    fs = small_fs(2)
    src = tmp_path / "src"
    src.mkdir()
    con = sqlite3.connect(src / "app.db")
    con.execute("CREATE TABLE t (b BLOB)")
    con.executemany("INSERT INTO t VALUES (?)", [(os.urandom(4096),) for _ in range(1024)])
    con.commit()
    con.close()
    proc = strongroom("backup", "now", "--source", src, "--dest", fs, "--db", "app.db",
                      "--immutable", "off", check=2, timeout=120)
    assert f"cannot back up {src / 'app.db'}: {NOSPACE}" in proc.stderr, proc.stderr
    assert temps(fs) == [] and [p.name for p in fs.iterdir() if p.name[0] != "."] == []


def test_a_checkpoint_ends_cleanly_on_a_full_disk(tmp_path, small_fs):
    fs = small_fs(4)
    repo = init(tmp_path / "repo")
    commit(repo, {"a.txt": "a\n"})
    random_tree(repo / "work", 8)
    proc = strongroom("save", "--source", repo, "--dest", fs, check=2, timeout=120)
    assert NOSPACE in proc.stderr, proc.stderr
    assert temps(fs) == []
    assert not list((fs / "progress").glob("*/*/*/ckpt-*"))


def _jobs(tmp_path, dest, sources=None):
    cfg, state = tmp_path / "conf", tmp_path / "state"
    (cfg / "jobs").mkdir(parents=True)
    if sources:
        (cfg / "jobs/daily.yml").write_text(
            f"name: daily\ntype: daily\noptions:\n  sources: [{', '.join(map(str, sources))}]\n"
            f"  dest: {dest}\n")
    (cfg / "jobs/weekly.yml").write_text(
        f"name: weekly\ntype: rollup\noptions:\n  dest: {dest}\n")
    return ["--config-dir", cfg, "--state-dir", state], state


def test_a_daily_folder_ends_cleanly_on_a_full_disk(tmp_path, small_fs):
    fs = small_fs(4)
    notes = random_tree(tmp_path / "notes", 8)
    base, state = _jobs(tmp_path, fs, [notes])
    proc = strongroom(*base, "run", "daily", check=2, timeout=120)
    status = json.loads((state / "status/daily.json").read_text())
    assert status["result"] == "error" and NOSPACE in status["message"], status
    assert NOSPACE in proc.stdout + proc.stderr
    assert temps(fs) == [] and rollups.days(fs) == []


def test_a_rollup_ends_cleanly_on_a_full_disk_and_keeps_every_day(tmp_path, small_fs):
    fs = small_fs(12)
    notes = random_tree(tmp_path / "notes", 3, files=3)
    for day in (date(2026, 1, 1), date(2026, 1, 2)):
        rollups.make_day([notes], fs, today=day)
    fill(fs, 512)
    base, state = _jobs(tmp_path, fs)
    strongroom(*base, "run", "weekly", check=2, timeout=120)
    status = json.loads((state / "status/weekly.json").read_text())
    assert status["result"] == "error" and NOSPACE in status["message"], status
    assert temps(fs) == [] and rollups.rollups(fs) == []
    assert rollups.days(fs) == ["2026-01-01", "2026-01-02"]
    (fs / "filler").unlink()  # once there is room again, every day is whole
    for day in rollups.days(fs):
        assert rollups.check_folder(fs / day) == []


def test_a_database_version_copy_ends_cleanly_on_a_full_disk(tmp_path, small_fs):
    fs = small_fs(6)
    db = fs / "app.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (b BLOB)")
    con.executemany("INSERT INTO t VALUES (?)", [(os.urandom(4096),) for _ in range(1024)])
    con.commit()
    con.close()
    before = db.read_bytes()
    fill(fs, 256)
    conf = tmp_path / "rclone.conf"
    conf.write_text("[local]\ntype = local\n")
    proc = strongroom("--state-dir", tmp_path / "state", "db", "backup", "--db", db,
                      "--remote", f"local:{tmp_path / 'versions'}",
                      "--rclone-config", conf, check=2, timeout=120)
    assert NOSPACE in proc.stderr, proc.stderr
    assert temps(fs) == [] and db.read_bytes() == before
    assert not list((tmp_path / "versions").rglob("*")) if (tmp_path / "versions").exists() \
        else True


def test_a_manifest_ends_cleanly_on_a_full_disk_and_keeps_the_old_one(tmp_path, small_fs):
    fs = small_fs(1)
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.txt").write_text("a\n")
    out = fs / "tree.json"
    strongroom("manifest", "create", tree, "--out", out, check=0)
    old = out.read_bytes()
    for i in range(6000):
        (tree / f"file-with-a-longish-name-{i:05d}.txt").write_text(f"{i}\n")
    proc = strongroom("manifest", "create", tree, "--out", out, check=2, timeout=120)
    assert NOSPACE in proc.stderr, proc.stderr
    assert temps(fs) == [] and out.read_bytes() == old


def test_a_bundle_sync_ends_cleanly_on_a_full_disk_and_the_chain_still_restores(tmp_path,
                                                                                  small_fs):
    fs = small_fs(6)
    root = tmp_path / "root"
    repo = init(root / "r")
    commit(repo, {"a.txt": "a\n"})
    strongroom("bundle", "sync", "--root", root, "--store", fs, check=0)
    commit(repo, {f"blob{i}.bin": os.urandom(2 << 20) for i in range(5)}, "big")
    proc = strongroom("bundle", "sync", "--root", root, "--store", fs, "--json", check=2,
                      timeout=120)
    row = json.loads(proc.stdout)["repositories"][0]
    assert row["status"] == "error" and NOSPACE in row["message"], row
    assert temps(fs) == []
    strongroom("bundle", "verify", "--store", fs, check=0)


@pytest.mark.parametrize("leave_kib", [32, 256, 700, 1100, 1400, 1500, 1700, 2100])
def test_at_every_fill_level_a_bundle_sync_leaves_no_temp_and_no_unrecorded_bundle(
        tmp_path, small_fs, leave_kib):
    """Where the disk fills (while git writes, when the file is closed, at the ref
    manifest, at the pack, at the chain manifest) differs by how full it was: each level
    must end with exit 0 or 2, no temp, nothing under a final name the manifest does not
    record, and a chain that verifies."""
    from strongroom.bundles import chain

    fs = small_fs(4)
    root = tmp_path / "root"
    repo = init(root / "r")
    commit(repo, {".gitignore": ".env\n", "blob.bin": os.urandom(1536 * 1024)})
    (repo / ".env").write_text("K=1\n")
    fill(fs, leave_kib)
    proc = strongroom("bundle", "sync", "--root", root, "--store", fs / "store", "--json",
                      timeout=120)
    assert proc.returncode in (0, 2), proc.stdout + proc.stderr
    if proc.returncode == 2:
        assert NOSPACE in proc.stdout and NOSPACE in proc.stderr
    assert temps(fs) == []
    repo_dir = fs / "store" / "r"
    if (repo_dir / chain.MANIFEST).exists():
        known = {n for n, _ in chain.files_with_sizes(chain.load(repo_dir))}
        ours = {p.name for p in repo_dir.iterdir()
                if p.name.endswith((".bundle", ".refs.json", ".tar.zst"))}
        assert ours == known
        (fs / "filler").unlink()
        strongroom("bundle", "verify", "--store", fs / "store", check=0)
    elif repo_dir.exists():
        assert not [p for p in repo_dir.iterdir()
                    if p.name.endswith((".bundle", ".refs.json", ".tar.zst"))]


def test_a_restore_into_a_full_disk_says_so_and_leaves_nothing(tmp_path, small_fs):
    root, store = tmp_path / "root", tmp_path / "store"
    repo = init(root / "r")
    commit(repo, {f"blob{i}.bin": os.urandom(1 << 20) for i in range(4)})
    strongroom("bundle", "sync", "--root", root, "--store", store, check=0)
    fs = small_fs(3)
    proc = strongroom("bundle", "restore", "--store", store, "r", fs / "out", check=2,
                      timeout=120)
    assert NOSPACE in proc.stderr, proc.stderr
    assert list(fs.iterdir()) == []
