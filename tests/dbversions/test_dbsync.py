"""strongroom db: versioned SQLite backups against a local folder and a real S3 API server
(moto on 127.0.0.1), with libfaketime for clocks and a closed port for being offline."""

import json
import sqlite3
import subprocess
import threading

import pytest

from tests.helpers import ENV, strongroom
from tests.snapshots.test_snapshots import _libfaketime
from tests.upload.test_upload import ENV_NO_CA


def make_db(path, rows=5):
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE IF NOT EXISTS parts (id INTEGER PRIMARY KEY, name TEXT)")
    con.executemany("INSERT INTO parts (name) VALUES (?)", [(f"p{i}",) for i in range(rows)])
    con.commit()
    con.close()
    return path


def add(path, n=1, tag="x"):
    con = sqlite3.connect(path)
    con.executemany("INSERT INTO parts (name) VALUES (?)", [(f"{tag}{i}",) for i in range(n)])
    con.commit()
    con.close()


def rows(path):
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT count(*) FROM parts").fetchone()[0]
    finally:
        con.close()


def db(remotes, kind, state, dbfile, *args, check=0, env=None, host="alpha"):
    return strongroom("--state-dir", state, "db", args[0], "--db", dbfile, "--remote",
                      remotes[kind], "--host", host, "--rclone-config", remotes["conf"],
                      *args[1:], env=env, check=check)


def keys(remotes, kind, state, dbfile, env=None):
    return [r["key"] for r in json.loads(db(remotes, kind, state, dbfile, "list", "--json",
                                            env=env).stdout)["versions"]]


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_twelve_backups_keep_ten_and_the_listing_reads_every_page(tmp_path, remotes, kind):
    dbfile, state = make_db(tmp_path / "casman.db"), tmp_path / "state"
    made = []
    for i in range(12):
        add(dbfile, tag=f"b{i}")
        out = json.loads(db(remotes, kind, state, dbfile, "backup", "--json").stdout)
        made.append(out["key"])
        assert out["key"].endswith("_alpha_casman.db")
    env = dict(ENV, RCLONE_S3_LIST_CHUNK="3")  # S3 answers in pages of 3: all must be read
    listed = json.loads(db(remotes, kind, state, dbfile, "list", "--long", "--json",
                           env=env).stdout)
    assert (listed["result"], listed["exit_code"]) == ("ok", 0)
    listed = listed["versions"]
    assert [r["key"] for r in listed] == made[2:]  # the newest 10, oldest first
    last = listed[-1]
    assert last["tables"] == {"parts": 17} and last["host"] == "alpha"
    assert last["reason"] == "manual" and len(last["sha256"]) == 64


def test_restoring_the_oldest_of_ten_keeps_it_and_the_next_sync_does_not_undo_it(
        tmp_path, remotes):
    dbfile, state = make_db(tmp_path / "casman.db"), tmp_path / "state"
    made = []
    for i in range(10):
        add(dbfile, tag=f"b{i}")
        made.append(json.loads(db(remotes, "local", state, dbfile, "backup", "--json")
                               .stdout)["key"])
    add(dbfile, 3, "unsaved")  # local work not backed up yet: must survive the restore
    out = json.loads(db(remotes, "local", state, dbfile, "restore", made[0], "--json").stdout)
    assert rows(dbfile) == 6
    held = keys(remotes, "local", state, dbfile)
    # the newest 10 stay, and so does the restored version, which is older than all of them
    assert held[0] == made[0] and len(held) == 11 and made[1] not in held
    assert out["pre_restore_backup"] in held and out["current"] == held[-1]
    meta = json.loads(db(remotes, "local", state, dbfile, "list", "--long", "--json")
                      .stdout)["versions"]
    pre = next(m for m in meta if m["key"] == out["pre_restore_backup"])
    assert pre["reason"] == "pre-restore" and pre["tables"] == {"parts": 18}  # nothing lost
    proc = db(remotes, "local", state, dbfile, "sync")
    assert proc.stdout.startswith(("none:", "adopt:")) and rows(dbfile) == 6


def test_two_hosts_backing_up_in_the_same_instant_keep_both(tmp_path, remotes):
    frozen = dict(ENV, FAKETIME="2026-11-21 10:00:00", LD_PRELOAD=_libfaketime(),
                  FAKETIME_DONT_FAKE_MONOTONIC="1")
    a = make_db(tmp_path / "a/casman.db", 3)
    b = make_db(tmp_path / "b/casman.db", 4)
    ka = json.loads(db(remotes, "s3", tmp_path / "sa", a, "backup", "--json", env=frozen,
                       host="alpha").stdout)["key"]
    kb = json.loads(db(remotes, "s3", tmp_path / "sb", b, "backup", "--json", env=frozen,
                       host="beta").stdout)["key"]
    assert ka.split("_")[0] == kb.split("_")[0] == "20261121T100000.000000Z"
    assert sorted(keys(remotes, "s3", tmp_path / "sa", a)) == sorted([ka, kb])


def test_a_corrupted_download_is_refused_and_the_database_untouched(tmp_path, remotes):
    dbfile, state = make_db(tmp_path / "casman.db"), tmp_path / "state"
    key = json.loads(db(remotes, "local", state, dbfile, "backup", "--json").stdout)["key"]
    add(dbfile, 2)
    stored = tmp_path / "remote/backups/casman.db" / key
    data = bytearray(stored.read_bytes())
    data[-100] ^= 0xFF
    stored.write_bytes(bytes(data))
    proc = db(remotes, "local", state, dbfile, "restore", key, check=2)
    assert f"the download of {key} does not match its metadata" in proc.stderr
    assert "local database left untouched" in proc.stderr
    assert rows(dbfile) == 7
    assert sqlite3.connect(dbfile).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_sync_pulls_pushes_and_refuses_when_both_sides_changed(tmp_path, remotes):
    a, b = make_db(tmp_path / "a/casman.db"), tmp_path / "b/casman.db"
    sa, sb = tmp_path / "sa", tmp_path / "sb"
    db(remotes, "s3", sa, a, "backup")
    assert db(remotes, "s3", sb, b, "sync", host="beta").stdout.startswith("pull:")
    assert rows(b) == 5
    add(a, 2)
    assert db(remotes, "s3", sa, a, "sync").stdout.startswith("push:")
    assert db(remotes, "s3", sb, b, "sync", host="beta").stdout.startswith("pull:")
    assert rows(b) == 7
    add(b, 1, "beta")
    assert db(remotes, "s3", sb, b, "sync", host="beta").stdout.startswith("push:")
    assert db(remotes, "s3", sa, a, "sync").stdout.startswith("pull:") and rows(a) == 8
    # now both change: nothing is pulled over local work, nothing pushed over theirs
    add(a, 1, "alpha-only")
    add(b, 2, "beta-only")
    db(remotes, "s3", sb, b, "backup", host="beta")
    before = keys(remotes, "s3", sa, a)
    proc = db(remotes, "s3", sa, a, "sync", check=2)
    assert proc.stdout.startswith("conflict: both sides changed")
    assert "Nothing was changed" in proc.stdout and "from beta" in proc.stdout
    assert rows(a) == 9 and keys(remotes, "s3", sa, a) == before
    plan = json.loads(db(remotes, "s3", sa, a, "sync", "--json", check=2).stdout)
    assert plan["action"] == "conflict" and plan["changed"] is False


def test_offline_sync_warns_and_changes_nothing(tmp_path, remotes):
    dbfile, state = make_db(tmp_path / "casman.db"), tmp_path / "state"
    db(remotes, "local", state, dbfile, "backup")
    add(dbfile, 1)
    before = (dbfile.read_bytes(), sorted(p.read_bytes() for p in state.rglob("*.json")))
    proc = strongroom("--state-dir", state, "db", "sync", "--db", dbfile, "--remote",
                      remotes["dead"], "--rclone-config", remotes["conf"], check=1)
    assert proc.stdout.startswith(f"offline: cannot reach {remotes['dead']}/backups/casman.db;"
                                  " nothing changed")
    assert (dbfile.read_bytes(), sorted(p.read_bytes() for p in state.rglob("*.json"))) == \
        before


def test_a_backup_taken_while_a_writer_inserts_is_consistent(tmp_path, remotes):
    dbfile, state = make_db(tmp_path / "ledger.db", 0), tmp_path / "state"
    con = sqlite3.connect(dbfile)
    con.execute("CREATE TABLE ledger (id INTEGER PRIMARY KEY, amount INTEGER)")
    con.commit()
    con.close()
    stop = threading.Event()

    def writer():
        w = sqlite3.connect(dbfile, timeout=30)
        while not stop.is_set():
            w.executemany("INSERT INTO ledger (amount) VALUES (?)", [(5,), (-5,)])
            w.commit()
        w.close()

    t = threading.Thread(target=writer)
    t.start()
    try:
        made = [json.loads(db(remotes, "local", state, dbfile, "backup", "--json").stdout)
                ["key"] for _ in range(3)]
    finally:
        stop.set()
        t.join()
    for key in made:
        copy = tmp_path / "remote/backups/ledger.db" / key
        c = sqlite3.connect(f"file:{copy}?mode=ro&immutable=1", uri=True)
        total, count = c.execute("SELECT sum(amount), count(*) FROM ledger").fetchone()
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert (total or 0) == 0 and count % 2 == 0
        c.close()


def test_tick_backs_up_by_count_and_by_hours_and_a_failure_keeps_the_counter(tmp_path,
                                                                           remotes):
    dbfile = make_db(tmp_path / "casman.db")
    conf, state = tmp_path / "conf", tmp_path / "state"
    (conf / "jobs").mkdir(parents=True)
    (conf / "jobs/casman.yml").write_text(
        f"name: casman\ntype: db_backup\nschedule: every 1h\noptions:\n  db: {dbfile}\n"
        f"  remote: {remotes['local']}\n  rclone_config: {remotes['conf']}\n"
        "  ops_threshold: 3\n  hours_threshold: 24\n  low_level_retries: 1\n"
        "  retries: 1\n")
    base = ["--config-dir", conf, "--state-dir", state]

    def tick(*extra, check=0, env=None):
        return strongroom(*base, "db", "tick", "--job", "casman", *extra, check=check,
                          env=env)

    assert tick().stdout.startswith("backed up (no backup yet)")
    assert tick().stdout.strip() == "1 operation(s) pending"
    assert tick().stdout.strip() == "2 operation(s) pending"
    add(dbfile, 1, "t3")  # a backup uploads only content the newest version does not hold
    assert tick().stdout.startswith("backed up (3 operations)")
    # the scheduler's run counts nothing, but fires once 24 hours have passed
    strongroom(*base, "run", "casman", check=0)
    assert json.loads((state / "status/casman.json").read_text())["changed"] is False
    add(dbfile, 1, "t25h")
    later = dict(ENV, FAKETIME="+25h", LD_PRELOAD=_libfaketime(),
                 FAKETIME_DONT_FAKE_MONOTONIC="1")
    strongroom(*base, "run", "casman", env=later, check=0)
    status = json.loads((state / "status/casman.json").read_text())
    assert status["message"].startswith("backed up (25.0 hours since the last backup)")
    # a failed backup leaves the operations counted
    for _ in range(2):
        tick()
    proc = tick("--remote", remotes["dead"], check=2)
    assert "cannot list dead:nowhere/up/backups/casman.db" in proc.stderr
    proc = strongroom(*base, "db", "status", "--job", "casman", "--json", check=0)
    assert json.loads(proc.stdout)["pending_ops"] == 3
    add(dbfile, 1, "t4")
    assert tick().stdout.startswith("backed up (4 operations)")
    assert json.loads(strongroom(*base, "db", "status", "--job", "casman", "--json")
                      .stdout)["pending_ops"] == 0


def test_settings_from_the_environment(tmp_path, remotes, s3):
    dbfile, state = make_db(tmp_path / "casman.db"), tmp_path / "state"
    env = dict(ENV_NO_CA, AWS_ACCESS_KEY_ID="test-key", AWS_SECRET_ACCESS_KEY="test-secret",
               AWS_BUCKET_NAME=remotes["bucket"], AWS_ENDPOINT_URL=s3.endpoint)
    proc = strongroom("--config-dir", tmp_path, "--state-dir", state, "db", "backup", "--db",
                      dbfile, "--json", env=env, check=0)
    key = json.loads(proc.stdout)["key"]
    listed = subprocess.run(["rclone", "--config", str(remotes["conf"]), "lsf",
                             f"s3:{remotes['bucket']}/backups/casman.db"],
                            capture_output=True, text=True, env=ENV_NO_CA, check=True).stdout
    assert key in listed and f"{key}.metadata.json" in listed
    assert "test-secret" not in proc.stdout + proc.stderr
    proc = strongroom("--config-dir", tmp_path, "--state-dir", state, "db", "backup", "--db",
                      dbfile, env=ENV_NO_CA, check=2)
    assert "--remote REMOTE:PATH is required (or --job NAME, or R2_* / AWS_*" in proc.stderr
