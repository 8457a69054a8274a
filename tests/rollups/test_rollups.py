"""Daily folders and weekly rollups through the real jobs, days set with libfaketime, a
local-folder remote and a closed port: no day is deleted before it is safe twice over."""

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from strongroom import rollups
from tests.helpers import ENV, VENV_BIN, strongroom
from tests.snapshots.test_snapshots import _libfaketime


def on(day, hour="02:10:00"):
    return dict(ENV, FAKETIME=f"@{day} {hour}", LD_PRELOAD=_libfaketime(),
                FAKETIME_DONT_FAKE_MONOTONIC="1")


def setup(tmp_path, remote=None, conf=None, extra=""):
    notes = tmp_path / "notes"
    (notes / "clients").mkdir(parents=True)
    (notes / "plan.md").write_text("plan\n")
    (notes / "clients/acme.json").write_text('{"tasks": 3}\n')
    app = tmp_path / "app"
    app.mkdir()
    con = sqlite3.connect(app / "app.db")
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA wal_autocheckpoint=0")  # rows stay in the WAL: a raw copy loses them
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    con.executemany("INSERT INTO t (v) VALUES (?)", [(f"r{i}",) for i in range(200)])
    con.commit()
    cfg, state, dest = tmp_path / "conf", tmp_path / "state", tmp_path / "days"
    (cfg / "jobs").mkdir(parents=True)
    offsite = (f"  remote: {remote}\n  rclone_config: {conf}\n" if remote else "") + extra
    (cfg / "jobs/daily.yml").write_text(
        f"name: daily\ntype: daily\nschedule: daily 02:10\noptions:\n"
        f"  sources: [{notes}, {app}]\n  dest: {dest}\n{offsite}")
    (cfg / "jobs/weekly.yml").write_text(
        f"name: weekly\ntype: rollup\nschedule: weekly sun 03:45\noptions:\n"
        f"  dest: {dest}\n{offsite}")
    return con, dest, ["--config-dir", cfg, "--state-dir", state], state


def status(state, job):
    return json.loads((state / "status" / f"{job}.json").read_text())


def test_a_day_folder_has_a_full_manifest_and_a_consistent_database(tmp_path, remotes):
    con, dest, base, state = setup(tmp_path, remotes["local"], remotes["conf"])
    strongroom(*base, "run", "daily", env=on("2026-11-02"), check=0)
    day = dest / "2026-11-02"
    doc = json.loads((day / "manifest.json").read_text())
    assert {i["category"]: i["files"] for i in doc["items"]} == {"notes": 2, "app": 1}
    on_disk = {p.relative_to(day).as_posix(): p for p in day.rglob("*")
               if p.is_file() and p.name != "manifest.json"}
    assert set(on_disk) == set(doc["files"]) == {"notes/plan.md", "notes/clients/acme.json",
                                                 "app/app.db"}
    for rel, p in on_disk.items():
        assert doc["files"][rel] == {"size": p.stat().st_size,
                                     "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
    copy = sqlite3.connect(day / "app/app.db")
    assert copy.execute("SELECT count(*) FROM t").fetchone()[0] == 200
    assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    remote_day = tmp_path / "remote" / "2026-11-02"
    assert (remote_day / "app/app.db").read_bytes() == (day / "app/app.db").read_bytes()
    assert status(state, "daily")["uploaded"] == ["2026-11-02"]
    strongroom(*base, "run", "daily", env=on("2026-11-02", "09:00:00"), check=0)
    s = status(state, "daily")
    assert s["changed"] is False and s["message"] == "today's folder exists already"
    con.close()


def test_days_are_deleted_only_once_uploaded_and_inside_a_verified_rollup(tmp_path, remotes):
    con, dest, base, state = setup(tmp_path, remotes["local"], remotes["conf"])
    for d in range(1, 9):
        con.execute("INSERT INTO t (v) VALUES (?)", (f"day{d}",))
        con.commit()
        strongroom(*base, "run", "daily", env=on(f"2026-11-0{d}"), check=0)
    assert rollups.days(dest) == [f"2026-11-0{d}" for d in range(1, 9)]  # nothing deleted
    manifests = {d: json.loads((dest / d / "manifest.json").read_text())
                 for d in rollups.days(dest)}
    strongroom(*base, "run", "weekly", env=on("2026-11-08", "03:45:00"), check=0)
    s = status(state, "weekly")
    name = "weekly_20261101_20261107.tar.zst"
    assert s["rollup"] == {"name": name, "days": [f"2026-11-0{d}" for d in range(1, 8)]}
    assert (tmp_path / "remote/rollups" / name).read_bytes() == \
        (dest / "rollups" / name).read_bytes()
    # the rolled-up days were on the remote and are in a verified rollup: now they may go
    assert sorted(s["deleted"]) == [f"2026-11-0{d}" for d in range(1, 8)]
    assert rollups.days(dest) == ["2026-11-08"]
    # one day restored from the rollup, one from its own folder, all checked
    proc = strongroom(*base, "rollup", "restore", "--job", "daily", "--day", "2026-11-03",
                      "--target", tmp_path / "r3", check=0)
    assert f"from {name}" in proc.stdout
    assert json.loads((tmp_path / "r3/2026-11-03/manifest.json").read_text()) == \
        manifests["2026-11-03"]
    db = sqlite3.connect(tmp_path / "r3/2026-11-03/app/app.db")
    assert db.execute("SELECT v FROM t ORDER BY id DESC LIMIT 1").fetchone()[0] == "day3"
    strongroom(*base, "rollup", "restore", "--job", "daily", "--rollup", name,
               "--target", tmp_path / "week", check=0)
    assert sorted(p.name for p in (tmp_path / "week").iterdir()) == \
        [f"2026-11-0{d}" for d in range(1, 8)]
    # with the local rollup gone, the day comes back from the remote
    (dest / "rollups" / name).unlink()
    proc = strongroom(*base, "rollup", "restore", "--job", "daily", "--day", "2026-11-05",
                      "--target", tmp_path / "r5", "--json", check=0)
    assert json.loads(proc.stdout)["days"] == ["2026-11-05"]
    assert not list(dest.glob(".fetch-*"))
    proc = strongroom(*base, "rollup", "restore", "--job", "daily", "--day", "2026-11-05",
                      "--target", tmp_path / "r5", check=2)
    assert "exists; restore goes into a new directory" in proc.stderr
    con.close()


def test_a_failed_upload_deletes_nothing(tmp_path, remotes):
    con, dest, base, state = setup(tmp_path, remotes["dead"], remotes["conf"],
                                   extra="  retries: 2\n  low_level_retries: 1\n")
    for d in range(1, 4):
        strongroom(*base, "run", "daily", env=on(f"2026-11-0{d}"), check=2)
        message = status(state, "daily")["message"]
        assert "rclone copy to dead:nowhere/up/2026-11-01 failed" in message, message
        assert "connection refused" in message
    strongroom(*base, "run", "weekly", env=on("2026-11-03", "03:45:00"), check=2)
    assert rollups.days(dest) == ["2026-11-01", "2026-11-02", "2026-11-03"]
    assert rollups.rollups(dest) == ["weekly_20261101_20261102.tar.zst"]  # packed, kept
    assert all(e["remote"] is None for e in rollups.read_state(dest)["rollups"].values())
    con.close()


def test_a_rollup_the_remote_already_holds_differently_keeps_every_day(tmp_path, remotes):
    con, dest, base, state = setup(tmp_path, remotes["local"], remotes["conf"])
    for d in range(1, 9):
        strongroom(*base, "run", "daily", env=on(f"2026-11-0{d}"), check=0)
    clash = tmp_path / "remote/rollups/weekly_20261101_20261107.tar.zst"
    clash.parent.mkdir(parents=True)
    clash.write_bytes(b"someone else's archive")
    strongroom(*base, "run", "weekly", env=on("2026-11-08", "03:45:00"), check=2)
    assert "--immutable never overwrites them" in status(state, "weekly")["message"]
    assert rollups.days(dest) == [f"2026-11-0{d}" for d in range(1, 9)]
    assert clash.read_bytes() == b"someone else's archive"
    con.close()


def test_a_killed_rollup_leaves_no_file_under_the_final_name(tmp_path):
    con, dest, base, state = setup(tmp_path)
    block = os.urandom(1 << 20)
    for d in range(1, 8):
        (tmp_path / "notes" / f"media{d}.bin").write_bytes(block * 30)
        strongroom(*base, "run", "daily", env=on(f"2026-11-0{d}"), check=0)
    argv = [str(VENV_BIN / "strongroom"), *map(str, base), "run", "weekly"]
    proc = subprocess.Popen(argv, env=on("2026-11-08", "03:45:00"), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = dest / "rollups"
    deadline = time.time() + 60
    while time.time() < deadline and not (out.is_dir() and any(
            p.name.startswith(".tmp-weekly") and p.stat().st_size > 0 for p in out.iterdir())):
        time.sleep(0.01)
    assert proc.poll() is None, "the rollup finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert rollups.rollups(dest) == [] and rollups.read_state(dest)["rollups"] == {}
    assert len(rollups.days(dest)) == 7
    strongroom(*base, "run", "weekly", env=on("2026-11-08", "03:50:00"), check=0)
    assert rollups.rollups(dest) == ["weekly_20261101_20261107.tar.zst"]
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]
    # no remote: the days go once the rollup is tested locally
    assert rollups.days(dest) == []
    # a damaged rollup is refused on restore, with nothing left under the target
    arch = out / "weekly_20261101_20261107.tar.zst"
    data = bytearray(arch.read_bytes())
    data[len(data) // 2] ^= 0xFF
    arch.write_bytes(bytes(data))
    proc = strongroom(*base, "rollup", "restore", "--job", "daily", "--day", "2026-11-04",
                      "--target", tmp_path / "r4", check=2)
    assert "weekly_20261101_20261107.tar.zst" in proc.stderr
    assert not (tmp_path / "r4").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-r4")]
    con.close()


def test_bad_job_options_are_refused(tmp_path):
    cfg = tmp_path / "conf"
    (cfg / "jobs").mkdir(parents=True)
    (cfg / "jobs/daily.yml").write_text(
        "name: daily\ntype: daily\noptions:\n  sources: [relative/path]\n  dest: /x\n")
    proc = strongroom("--config-dir", cfg, "run", "daily", check=2)
    assert "key 'options.sources' has value ['relative/path']; expected a list of absolute " \
           "paths" in proc.stderr
    same = [tmp_path / "a" / "notes", tmp_path / "b" / "notes"]
    for p in same:
        p.mkdir(parents=True)
    try:
        rollups.make_day(same, tmp_path / "days")
    except rollups.RollupError as exc:
        assert "two sources would share the folder name 'notes'" in str(exc)
    else:
        raise AssertionError("two sources named alike were accepted")
    assert not (tmp_path / "days").exists()
    assert Path(tmp_path / "a" / "notes").is_dir()
