"""strongroom backup: immutable snapshots with real chattr, SQLite, zstd and tar."""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from strongroom import snapshots
from strongroom.core import fsutil, sqlite
from tests.helpers import ENV, VENV_BIN, g, strongroom

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="chattr +i needs root; this test "
                               "run is not root")


def make_source(base):
    src = base / "project"
    (src / "docs").mkdir(parents=True)
    (src / "docs/plan.md").write_text("the plan\n")
    (src / "config").mkdir()
    (src / "config/app.json").write_text('{"a": 1}\n')
    (src / "src").mkdir()
    (src / "src/main.py").write_text("print('hi')\n")
    (src / "src/link").symlink_to("main.py")
    (src / "empty").mkdir()
    for junk in ("node_modules/pkg/index.js", ".venv/bin/python", "src/__pycache__/m.pyc",
                 "build/out.bin"):
        (src / junk).parent.mkdir(parents=True, exist_ok=True)
        (src / junk).write_text("junk\n")
    (src / "media").mkdir()
    (src / "media/big.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    (src / "data").mkdir()
    con = sqlite3.connect(src / "data/app.db")
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    con.executemany("INSERT INTO notes (body) VALUES (?)", [(f"n{i}",) for i in range(50)])
    con.commit()
    con.close()
    g(src, "init", "-q", "-b", "main")
    g(src, "add", "-A")
    g(src, "commit", "-q", "-m", "start")
    return src


def backup(*args, check=0, env=None):
    return strongroom("snapshot", *map(str, args), check=check, env=env)


def take(src, dest, *extra, check=0):
    proc = backup("now", "--source", src, "--dest", dest, "--critical", "*.md",
                  "--critical", "config/*.json", "--db", "data/app.db", "--large", "1M",
                  "--exclude", "build/", *extra, check=check)
    return proc


def archive_names(folder):
    out = subprocess.run(["tar", "-I", "zstd", "-tf", str(folder / "full.tar.zst")],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


@ROOT_ONLY
def test_backup_now_builds_a_complete_immutable_snapshot(tmp_path):
    src, dest = make_source(tmp_path), tmp_path / "snaps"
    proc = take(src, dest)
    snap_id = proc.stdout.strip()
    sha = g(src, "rev-parse", "--short=7", "HEAD").strip()
    assert snapshots.parse_id(snap_id) and snap_id.endswith(f"-{sha}")
    folder = dest / snap_id
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert names == ["LARGE_FILES.txt", "MANIFEST.txt", "REPORT.json", "SHA256SUMS",
                     "critical/config/app.json", "critical/docs/plan.md", "db/data/app.db",
                     "full.tar.zst"]
    check = subprocess.run(["sha256sum", "-c", "--strict", "--quiet", "SHA256SUMS"],
                           cwd=folder, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    inside = archive_names(folder)
    assert {"docs/plan.md", "src/main.py", "src/link", "empty/", "media/big.bin"} <= inside
    assert not [n for n in inside if n.split("/")[0] in ("node_modules", ".venv", ".git",
                                                         "build") or "__pycache__" in n]
    assert not [n for n in inside if n.startswith("data/app.db")]  # in db/, consistently
    assert sqlite.integrity(folder / "db/data/app.db") == "ok"
    assert (folder / "LARGE_FILES.txt").read_text() == f"{3 * 1024 * 1024}\tmedia/big.bin\n"
    report = json.loads((folder / "REPORT.json").read_text())
    assert report["counts"]["critical"] == 2 and report["counts"]["databases"] == 1
    assert report["databases"][0]["tables"] == {"notes": 50}
    assert report["immutability"] == {"policy": "warn", "supported": True,
                                      "reason": "chattr +i works here"}
    meta = (folder / "MANIFEST.txt").read_text()
    for key in ("host:", "user: root", f"source: {src}", "strongroom:", "sqlite:",
                "compressor: *** Zstandard"):
        assert key in meta, key
    rows = json.loads(backup("list", "--dest", dest, "--json").stdout)["snapshots"]
    assert [(r["id"], r["immutable"], r["last_verified"]) for r in rows] == [
        (snap_id, "yes", None)]
    out = backup("verify", "--dest", dest, snap_id).stdout
    assert out.startswith(f"{snap_id}: ok (7 files checked)")
    listed = backup("list", "--dest", dest).stdout
    assert snap_id in listed and " yes " in listed and " ok" in listed


@ROOT_ONLY
def test_immutability_is_enforced_until_prune_lifts_it(tmp_path):
    src, dest = make_source(tmp_path), tmp_path / "snaps"
    snap_id = take(src, dest).stdout.strip()
    folder = dest / snap_id
    plan = folder / "critical/docs/plan.md"
    before = plan.read_bytes()
    for attempt in (lambda: plan.unlink(), lambda: plan.rename(folder / "moved"),
                    lambda: plan.write_text("overwritten"),
                    lambda: _append(plan, "appended"),
                    lambda: (folder / "new").write_text("x"),
                    lambda: shutil.rmtree(folder),
                    lambda: os.rename(folder, dest / "renamed")):
        with pytest.raises(PermissionError):
            attempt()
    assert plan.read_bytes() == before
    assert backup("verify", "--dest", dest, snap_id).returncode == 0
    # protect: +a lets a log grow and nothing else
    log = tmp_path / "audit.log"
    log.write_text("one\n")
    backup("protect", "--append-only", log)
    with open(log, "a") as fh:
        fh.write("two\n")
    with pytest.raises(PermissionError):
        log.write_text("rewritten\n")
    fsutil.set_flag(log, fsutil.APPEND_ONLY, on=False)
    assert log.read_text() == "one\ntwo\n"


def _append(path, text):
    with open(path, "a") as fh:
        fh.write(text)


def at(days_ago):
    return (datetime.now(UTC) - timedelta(days=days_ago)).strftime("%Y-%m-%d %H:%M:%S")


@ROOT_ONLY
def test_prune_removes_exactly_the_chosen_snapshots_and_keeps_the_rest_immutable(tmp_path):
    src, dest = make_source(tmp_path), tmp_path / "snaps"
    ids = []
    for days in (20, 10, 3, 1):
        env = dict(ENV, FAKETIME=f"@{at(days)}", LD_PRELOAD=_libfaketime(),
                   FAKETIME_DONT_FAKE_MONOTONIC="1")
        proc = strongroom("snapshot", "now", "--source", src, "--dest", dest, "--critical",
                          "*.md", env=env, check=0)
        ids.append(proc.stdout.strip())
    assert len(set(ids)) == 4 and ids == sorted(ids)
    dry = json.loads(backup("prune", "--dest", dest, "--keep-last", "1", "--keep-days", "5",
                            "--dry-run", "--json").stdout)
    assert dry["deleted"] == ids[:2] and all((dest / i).exists() for i in ids)
    out = backup("prune", "--dest", dest, "--keep-last", "1", "--keep-days", "5").stdout
    assert out.startswith(f"deleted 2: {ids[0]}, {ids[1]}; kept 2")
    assert snapshots.snapshot_ids(dest) == ids[2:]
    for snap_id in ids[2:]:
        assert snapshots.immutability_of(dest / snap_id) == "yes"
        assert backup("verify", "--dest", dest, snap_id).returncode == 0
    # the newest are always kept, however old (a clock that jumped ahead)
    out = backup("prune", "--dest", dest, "--keep-last", "2", "--keep-days", "0").stdout
    assert out.startswith("deleted 0") and snapshots.snapshot_ids(dest) == ids[2:]
    proc = backup("prune", "--dest", dest, "--keep-last", "0", "--keep-days", "0", check=2)
    assert "--keep-last must be at least 1" in proc.stderr
    assert snapshots.snapshot_ids(dest) == ids[2:]


def _libfaketime():
    for p in ("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
              "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1"):
        if Path(p).exists():
            return p
    raise AssertionError("libfaketime is missing: scripts/deps installs faketime")


def test_sqlite_backup_under_a_writer_thread_is_consistent(tmp_path):
    db = tmp_path / "ledger.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE ledger (id INTEGER PRIMARY KEY, amount INTEGER)")
    con.commit()
    con.close()
    stop = threading.Event()

    def writer():
        w = sqlite3.connect(db, timeout=30)
        while not stop.is_set():
            with w:  # every transaction keeps the ledger balanced: +n and -n together
                n = int(time.time() * 1000) % 997 + 1
                w.execute("INSERT INTO ledger (amount) VALUES (?)", (n,))
                w.execute("INSERT INTO ledger (amount) VALUES (?)", (-n,))
        w.close()

    t = threading.Thread(target=writer)
    t.start()
    try:
        time.sleep(0.3)
        copies = []
        for i in range(5):
            rep = sqlite.backup(db, tmp_path / f"copy{i}.db")
            copies.append(rep)
            time.sleep(0.05)
    finally:
        stop.set()
        t.join()
    for i, rep in enumerate(copies):
        assert rep["integrity"] == "ok"
        c = sqlite3.connect(tmp_path / f"copy{i}.db")
        count, total = c.execute("SELECT count(*), coalesce(sum(amount), 0) FROM ledger") \
            .fetchone()
        c.close()
        assert count % 2 == 0 and total == 0 and count == rep["tables"]["ledger"]
    assert copies[-1]["tables"]["ledger"] > 0


def test_a_corrupt_or_foreign_database_is_refused(tmp_path):
    not_db = tmp_path / "notes.db"
    not_db.write_text("plain text\n")
    with pytest.raises(sqlite.SQLiteError, match="not a SQLite database"):
        sqlite.backup(not_db, tmp_path / "out.db")
    db = tmp_path / "good.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (x TEXT)")
    con.executemany("INSERT INTO t VALUES (?)", [("y" * 500,) for _ in range(400)])
    con.commit()
    con.close()
    raw = bytearray(db.read_bytes())
    raw[4096 * 2: 4096 * 2 + 8] = b"\xff" * 8  # a page whose header is garbage
    db.write_bytes(bytes(raw))
    with pytest.raises(sqlite.SQLiteError) as exc:
        sqlite.backup(db, tmp_path / "out.db")
    assert "integrity_check" in str(exc.value) or "malformed" in str(exc.value)
    assert not (tmp_path / "out.db").exists()
    assert not list(tmp_path.glob(".tmp-*"))


def _damage_cases():
    def flip(folder):
        p = folder / "critical/docs/plan.md"
        data = bytearray(p.read_bytes())
        data[0] ^= 0x01
        p.write_bytes(bytes(data))
        return "critical/docs/plan.md: checksum mismatch"

    def truncate(folder):
        p = folder / "full.tar.zst"
        size = p.stat().st_size
        with open(p, "r+b") as fh:
            fh.truncate(size // 2)
        return "full.tar.zst: checksum mismatch"

    def missing(folder):
        (folder / "db/data/app.db").unlink()
        return "db/data/app.db: missing"

    def malformed(folder):
        with open(folder / "SHA256SUMS", "a") as fh:
            fh.write("not a checksum line\n")
        return "SHA256SUMS line 8 is malformed: 'not a checksum line'"

    return {"flip": flip, "truncate": truncate, "missing": missing, "malformed": malformed}


@pytest.mark.parametrize("case", sorted(_damage_cases()))
def test_verify_catches_damage(tmp_path, case):
    src, dest = make_source(tmp_path), tmp_path / "snaps"
    snap_id = take(src, dest, "--immutable", "off").stdout.strip()
    expected = _damage_cases()[case](dest / snap_id)
    proc = backup("verify", "--dest", dest, snap_id, check=2)
    assert f"{snap_id}: FAILED" in proc.stdout and expected in proc.stdout
    if case == "truncate":
        assert "full.tar.zst: archive" in proc.stdout  # and the archive stops early
    rows = json.loads(backup("list", "--dest", dest, "--json").stdout)["snapshots"]
    assert rows[0]["last_result"] == "failed"


def test_restore_critical_keeps_paths_and_full_moves_the_target_aside(tmp_path):
    src, dest = make_source(tmp_path), tmp_path / "snaps"
    snap_id = take(src, dest, "--immutable", "off").stdout.strip()
    (src / "docs/plan.md").write_text("damaged\n")
    (src / "config/app.json").unlink()
    out = backup("restore", "--dest", dest, snap_id, "--critical", "--to", src).stdout
    assert out.startswith(f"restored 2 critical file(s) into {src}")
    assert (src / "docs/plan.md").read_text() == "the plan\n"
    assert (src / "config/app.json").read_text() == '{"a": 1}\n'
    target = tmp_path / "project"  # restore over the live tree: moved aside first
    (target / "scratch.txt").write_text("after the snapshot\n")
    out = backup("restore", "--dest", dest, snap_id, "--full", "--to", target).stdout
    aside = Path(out.split("previous contents are in ")[1].strip())
    assert (aside / "scratch.txt").exists() and not (target / "scratch.txt").exists()
    assert (target / "docs/plan.md").read_text() == "the plan\n"
    assert os.readlink(target / "src/link") == "main.py"
    assert (target / "empty").is_dir() and not (target / "node_modules").exists()
    con = sqlite3.connect(target / "data/app.db")
    assert con.execute("SELECT count(*) FROM notes").fetchone()[0] == 50
    con.close()


def test_without_the_immutable_capability_it_degrades_with_a_clear_warning(tmp_path):
    """As a user without CAP_LINUX_IMMUTABLE (any non-root user; here root with the
    capability dropped, since the engine's interpreter lives under /root)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to drop a capability; a non-root run is this case already")
    src, dest = tmp_path / "src", tmp_path / "snaps"
    src.mkdir()
    (src / "notes.md").write_text("notes\n")

    def run(*extra):
        return subprocess.run(
            ["setpriv", "--inh-caps=-linux_immutable", "--bounding-set=-linux_immutable",
             str(VENV_BIN / "strongroom"), "snapshot", "now", "--source", str(src), "--dest",
             str(dest), "--critical", "*.md", *extra],
            capture_output=True, text=True, env=ENV)

    proc = run()
    assert proc.returncode == 1, proc.stderr
    assert "warning: snapshot is not immutable: no permission to set the immutable flag " \
           "(needs root or CAP_LINUX_IMMUTABLE)" in proc.stderr
    snap_id = proc.stdout.strip()
    report = json.loads((dest / snap_id / "REPORT.json").read_text())
    assert report["immutability"]["supported"] is False
    assert snapshots.immutability_of(dest / snap_id) == "no"
    proc = run("--immutable", "require")
    assert proc.returncode == 2
    assert "immutability is required but unavailable" in proc.stderr
    assert snapshots.snapshot_ids(dest) == [snap_id]
    assert not [p for p in dest.iterdir() if p.name.startswith(".tmp-")]


def test_a_killed_snapshot_leaves_no_folder_under_a_final_id(tmp_path):
    src = tmp_path / "big"
    src.mkdir()
    block = os.urandom(1 << 20)
    for i in range(120):
        (src / f"f{i:03d}.bin").write_bytes(block[i:] + block[:i])
    dest = tmp_path / "snaps"
    proc = subprocess.Popen([str(VENV_BIN / "strongroom"), "snapshot", "now", "--source",
                             str(src), "--dest", str(dest), "--format", "gz",
                             "--immutable", "off"], env=ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while time.time() < deadline and not (dest.exists() and any(
            p.name.startswith(".tmp-") and (p / "full.tar.gz").exists()
            for p in dest.iterdir())):
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert snapshots.snapshot_ids(dest) == []
    assert [p.name for p in dest.iterdir() if p.name.startswith(".tmp-")]
    snap_id = backup("now", "--source", src, "--dest", dest, "--immutable", "off").stdout \
        .strip()
    assert snapshots.snapshot_ids(dest) == [snap_id]
    assert not [p for p in dest.iterdir() if p.name.startswith(".tmp-")]
    assert backup("verify", "--dest", dest, snap_id).returncode == 0


def test_bad_input_is_refused_before_anything_is_written(tmp_path):
    src, dest = make_source(tmp_path), tmp_path / "snaps"
    proc = backup("now", "--source", tmp_path / "nope", "--dest", dest, check=2)
    assert f"source {tmp_path / 'nope'} is not a directory" in proc.stderr
    proc = backup("now", "--source", src, "--dest", dest, "--db", "docs/plan.md", check=2)
    assert "docs/plan.md: not a SQLite database" in proc.stderr
    assert snapshots.snapshot_ids(dest) == []
    proc = backup("now", "--dest", dest, check=2)
    assert "--source DIR is required" in proc.stderr
    proc = backup("verify", "--dest", dest, "20990101-000000-nogit", check=2)
    assert "no snapshot 20990101-000000-nogit in" in proc.stderr
    proc = backup("verify", "--dest", dest, "latest", check=2)
    assert "'latest' is not a snapshot id" in proc.stderr
    proc = backup("now", "--source", src, "--dest", dest, "--large", "lots", check=2)
    assert "not a size: 'lots'" in proc.stderr


def test_the_snapshot_job_takes_prunes_and_records_its_status(tmp_path):
    src, dest = make_source(tmp_path), tmp_path / "snaps"
    conf, state = tmp_path / "conf", tmp_path / "state"
    (conf / "jobs").mkdir(parents=True)
    (conf / "jobs" / "snap.yml").write_text(
        "name: snap\ntype: snapshot\nschedule: daily 03:15\noptions:\n"
        f"  source: {src}\n  dest: {dest}\n  critical: ['*.md']\n  db: [data/app.db]\n"
        "  immutable: 'off'\n  keep_last: 1\n  keep_days: 0\n")
    ids = []
    for _ in range(2):
        proc = strongroom("--config-dir", conf, "--state-dir", state, "run", "snap", check=0)
        st = json.loads((state / "status" / "snap.json").read_text())
        ids.append(st["snapshot"]["id"])
        assert st["result"] == "ok" and st["counts"]["databases"] == 1
    assert snapshots.snapshot_ids(dest) == [ids[1]]  # the first pruned by the second run
    assert st["prune"]["deleted"] == [ids[0]] and "pruned 1, kept 1" in proc.stdout
    bad = tmp_path / "bad.yml"
    bad.write_text("name: s\ntype: snapshot\noptions:\n  source: /srv/app\n  dest: /b\n"
                   "  format: rar\n")
    proc = strongroom("config", "check", bad, check=2)
    assert "key 'options.format' has value 'rar'; expected one of: zst, gz" in proc.stderr


def test_a_destination_inside_the_source_is_never_its_own_input(tmp_path):
    src = make_source(tmp_path)
    dest = src / "backups"
    proc = take(src, dest, "--immutable", "off", check=1)
    assert (f"warning: the destination {dest} is inside the source {src}: it is left out of "
            f"the snapshot, and a full restore into {src} moves the whole folder aside, "
            "these snapshots with it") in proc.stderr
    first = proc.stdout.strip()
    second = take(src, dest, "--immutable", "off", check=1).stdout.strip()
    folder = dest / second
    crit = sorted(str(p.relative_to(folder / "critical"))
                  for p in (folder / "critical").rglob("*") if p.is_file())
    assert crit == ["config/app.json", "docs/plan.md"]
    assert not [n for n in archive_names(folder) if n.startswith("backups")]
    assert first != second
