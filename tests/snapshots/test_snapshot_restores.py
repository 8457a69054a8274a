"""backup restore: what it checks before trusting a snapshot, and what it puts back exactly."""

import hashlib
import json
import os
import sqlite3
import stat

from tests.helpers import strongroom
from tests.snapshots.test_snapshots import backup, make_source, take


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def tree(path):
    out = {}
    for p in sorted(path.rglob("*")):
        out[p.relative_to(path).as_posix()] = (
            "link:" + os.readlink(p) if p.is_symlink() else "dir" if p.is_dir()
            else hashlib.sha256(p.read_bytes()).hexdigest(), mode(p))
    return out


def snapshot(tmp_path, *extra, check=0):
    src, dest = make_source(tmp_path), tmp_path / "snaps"
    (src / ".env").write_text("API_KEY=canary\n")
    os.chmod(src / ".env", 0o600)
    snap_id = take(src, dest, "--immutable", "off", "--critical", ".env", *extra,
                   check=check).stdout.strip()
    return src, dest, snap_id


def test_a_damaged_database_copy_is_refused_and_the_target_left_as_it_was(tmp_path):
    src, dest, snap_id = snapshot(tmp_path)
    copy = dest / snap_id / "db/data/app.db"
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only its hash can tell
    copy.write_bytes(bytes(data))
    target = tmp_path / "project"
    before = tree(target)
    proc = backup("restore", "--dest", dest, snap_id, "--full", "--target", target, check=2)
    assert f"db/data/app.db in {snap_id} does not match its checksum (damaged); nothing was " \
           "restored" in proc.stderr
    assert tree(target) == before
    assert not list(tmp_path.glob("*.before-restore-*"))
    assert not list(tmp_path.glob(".strongroom-restore-*"))


def test_a_snapshot_without_its_report_restores_nothing(tmp_path):
    src, dest, snap_id = snapshot(tmp_path)
    (dest / snap_id / "REPORT.json").unlink()
    target = tmp_path / "project"
    before = tree(target)
    proc = backup("restore", "--dest", dest, snap_id, "--full", "--target", target, check=2)
    assert f"REPORT.json of snapshot {snap_id} is missing; without it the databases cannot be " \
           "put back, so nothing was restored" in proc.stderr
    assert tree(target) == before


def test_every_file_holding_critical_content_is_owner_only(tmp_path):
    src, dest, snap_id = snapshot(tmp_path)
    folder = dest / snap_id
    assert mode(folder) == 0o700
    assert mode(folder / "full.tar.zst") == 0o600  # it holds .env too
    assert mode(folder / "critical/.env") == 0o600
    assert mode(folder / "critical/docs/plan.md") == 0o600
    assert mode(folder / "db/data/app.db") == 0o600
    report = json.loads((folder / "REPORT.json").read_text())
    assert report["critical"][".env"]["mode"] == 0o600
    assert report["critical"]["docs/plan.md"]["mode"] == mode(src / "docs/plan.md")


def test_a_critical_restore_keeps_modes_and_never_loses_a_newer_file(tmp_path):
    src, dest, snap_id = snapshot(tmp_path)
    target = tmp_path / "elsewhere"
    (target / "docs").mkdir(parents=True)
    (target / "docs/plan.md").write_text("a newer plan, written after the snapshot\n")
    (target / "config").mkdir()
    (target / "config/app.json").write_text('{"a": 1}\n')  # identical: left alone
    os.chmod(target / "config/app.json", mode(src / "config/app.json"))
    proc = backup("restore", "--dest", dest, snap_id, "--critical", "--target", target)
    assert mode(target / ".env") == 0o600 and (target / ".env").read_text() == "API_KEY=canary\n"
    assert (target / "docs/plan.md").read_text() == "the plan\n"
    kept = [p for p in (target / "docs").iterdir() if ".before-restore-" in p.name]
    assert [p.read_text() for p in kept] == ["a newer plan, written after the snapshot\n"]
    assert f"docs/plan.md -> {kept[0].relative_to(target)}" in proc.stdout
    assert "1 already identical" in proc.stdout
    # --force: the user asked to overwrite, and is told what was overwritten
    (target / "docs/plan.md").write_text("newer again\n")
    proc = backup("restore", "--dest", dest, snap_id, "--critical", "--target", target,
                  "--force", "--json")
    out = json.loads(proc.stdout)
    assert out["overwritten"] == ["docs/plan.md"] and out["moved_aside"] == {}
    assert (target / "docs/plan.md").read_text() == "the plan\n"
    proc = backup("restore", "--dest", dest, snap_id, "--full", "--force", "--target", target,
                  check=2)
    assert "--force is for --critical" in proc.stderr


def test_a_wal_database_comes_back_in_wal_mode(tmp_path):
    src, dest, snap_id = snapshot(tmp_path)
    target = tmp_path / "restored"
    backup("restore", "--dest", dest, snap_id, "--full", "--target", target)
    con = sqlite3.connect(target / "data/app.db")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT count(*) FROM notes").fetchone()[0] == 50
    con.close()


def test_a_critical_pattern_matching_a_live_database_takes_its_consistent_copy(tmp_path):
    src = make_source(tmp_path)
    con = sqlite3.connect(src / "data/app.db")
    con.execute("PRAGMA wal_autocheckpoint=0")  # new rows stay in the -wal: a raw copy loses them
    con.executemany("INSERT INTO notes (body) VALUES (?)", [(f"late{i}",) for i in range(25)])
    con.commit()  # kept open: the -wal is live
    dest = tmp_path / "snaps"
    snap_id = strongroom("backup", "now", "--source", src, "--dest", dest, "--critical", "*.db*",
                         "--immutable", "off", check=0).stdout.strip()
    folder = dest / snap_id
    names = sorted(p.relative_to(folder / "critical").as_posix()
                   for p in (folder / "critical").rglob("*") if p.is_file())
    assert names == ["data/app.db"]  # no raw -wal or -shm beside it
    target = tmp_path / "target"
    backup("restore", "--dest", dest, snap_id, "--critical", "--target", target)
    check = sqlite3.connect(target / "data/app.db")
    assert check.execute("SELECT count(*) FROM notes").fetchone()[0] == 75
    assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    check.close()
    # over the live database: it and its -wal/-shm are kept aside together, never mixed
    backup("restore", "--dest", dest, snap_id, "--critical", "--target", src)
    aside = sorted(p.name for p in (src / "data").iterdir() if ".before-restore-" in p.name)
    assert {n.split(".before-restore-")[0] for n in aside} == {"app.db"}
    assert [n[-4:] for n in aside if not n.endswith(("-wal", "-shm"))] != [] and any(
        n.endswith("-wal") for n in aside) and any(n.endswith("-shm") for n in aside)
    assert not (src / "data/app.db-wal").exists()  # the old -wal is not replayed into it
    con.close()


def test_a_full_restore_over_the_folder_holding_the_snapshots_says_where_they_went(tmp_path):
    src = make_source(tmp_path)
    dest = src / ".snapshots"
    snap_id = take(src, dest, "--immutable", "off", check=1).stdout.strip()
    proc = backup("restore", "--dest", dest, snap_id, "--full", "--target", src)
    aside = next(tmp_path.glob("project.before-restore-*"))
    assert f"note: the snapshots were inside the target; they are now in {aside / '.snapshots'}" \
        in proc.stdout
    assert (aside / ".snapshots" / snap_id / "SHA256SUMS").is_file()
    assert (src / "docs/plan.md").read_text() == "the plan\n"


def test_symlinks_come_back_as_they_were_and_fifos_are_left_out_loudly(tmp_path):
    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    (src / "notes.txt").write_text("notes\n")
    (src / "bin/python").symlink_to("/usr/bin/python3")  # absolute, as venvs and tools make
    (src / "up").symlink_to("../elsewhere")
    os.mkfifo(src / "pipe")
    dest = tmp_path / "snaps"
    proc = strongroom("backup", "now", "--source", src, "--dest", dest, "--immutable", "off",
                      check=1)
    assert "warning: 1 FIFO(s) or device node(s) left out (e.g. pipe): a restore would " \
           "refuse them" in proc.stderr
    snap_id = proc.stdout.strip()
    target = tmp_path / "restored"
    backup("restore", "--dest", dest, snap_id, "--full", "--target", target)
    assert os.readlink(target / "bin/python") == "/usr/bin/python3"
    assert os.readlink(target / "up") == "../elsewhere"
    assert (target / "notes.txt").read_text() == "notes\n" and not (target / "pipe").exists()
