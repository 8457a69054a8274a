"""Retention never deletes what a restore is reading: a snapshot, a checkpoint, a day
folder or a rollup in use is kept by prune and retire (and said so), and goes on the next
run once the reader is done; a killed reader pins nothing, and a backup is never held up
by a restore. Readers are real processes holding the lock a restore holds; the restores
are the real ones, with a prune from another process let in while they read."""

import fcntl
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta

import pytest

from strongroom import checkpoints, rollups, snapshots
from strongroom.core.errors import StrongroomError
from strongroom.snapshots import restore as snapshot_restore
from tests.helpers import commit, init, strongroom

IN_USE_DIR = ".in-use"  # where the marks live, beside the artifacts (strongroom.core.lock)

# a reader as a restore is one: holds the in-use lock until its stdin is closed
READER = """
import sys
from strongroom.core.lock import reading
with reading(sys.argv[1], sys.argv[2], sys.argv[3]) as held:
    print("held" if held else "unmarked", flush=True)
    sys.stdin.read()
"""


class Reader:
    def __init__(self, folder, name, by="restore"):
        self.proc = subprocess.Popen([sys.executable, "-c", READER, str(folder), name, by],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "held"
        self.pid = self.proc.pid

    def done(self):
        self.proc.stdin.close()
        assert self.proc.wait(timeout=10) == 0

    def kill(self):
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc.stdin.close()


def stamp(when):
    return when.strftime("%Y%m%d-%H%M%S")


def two_snapshots(tmp_path, immutable="warn"):
    """(dest, old, new): a real snapshot, and a copy of it dated ten days earlier."""
    src = tmp_path / "project"
    src.mkdir()
    (src / "notes.txt").write_text("the notes\n")
    (src / ".env").write_text("KEY=canary\n")
    dest = tmp_path / "snaps"
    new = snapshots.create(src, dest, critical=[".env"], immutable=immutable)["id"]
    old = f"{stamp(snapshots.parse_id(new) - timedelta(days=10))}-{new.rsplit('-', 1)[1]}"
    shutil.copytree(dest / new, dest / old)
    if immutable != "off":
        snapshots.protect_snapshot(dest / old)
    return dest, old, new


def prune(dest):
    return snapshots.prune(dest, keep_last=1, keep_days=0)


def lock_files(dest):
    return sorted(os.listdir(dest / IN_USE_DIR)) if (dest / IN_USE_DIR).is_dir() else []


# --- snapshots ---------------------------------------------------------------------------


def test_a_snapshot_being_read_is_kept_by_prune_and_deleted_by_the_next(tmp_path):
    dest, old, new = two_snapshots(tmp_path)
    reader = Reader(dest, old)
    try:
        dry = snapshots.prune(dest, keep_last=1, keep_days=0, dry_run=True)
        assert dry["deleted"] == [] and dry["in_use"] == {
            old: f"kept: in use by a restore (PID {reader.pid})"}
        out = prune(dest)
        assert out["deleted"] == [] and out["kept"] == [old, new] and out["problems"] == []
        assert out["in_use"] == {old: f"kept: in use by a restore (PID {reader.pid})"}
        assert snapshots.snapshot_ids(dest) == [old, new]
        # the CLI, another process, says it too
        proc = strongroom("backup", "prune", "--dest", dest, "--keep-last", "1",
                          "--keep-days", "0", check=0)
        assert proc.stdout.startswith("deleted 0: -; kept 2")
        assert f"  {old}: kept: in use by a restore (PID {reader.pid})" in proc.stdout
    finally:
        reader.done()
    out = prune(dest)
    assert out["deleted"] == [old] and out["in_use"] == {} and out["kept"] == [new]
    assert snapshots.snapshot_ids(dest) == [new]
    assert not (dest / IN_USE_DIR).exists()  # nothing left behind by a reader or a prune


def test_a_killed_reader_never_pins_a_snapshot(tmp_path):
    dest, old, new = two_snapshots(tmp_path, immutable="off")
    reader = Reader(dest, old)
    reader.kill()  # SIGKILL: no clean-up ran, the lock file and its record are still there
    assert lock_files(dest) == [f"{old}.lock"]
    out = prune(dest)
    assert out["deleted"] == [old] and out["in_use"] == {}
    assert snapshots.snapshot_ids(dest) == [new] and lock_files(dest) == []


def test_a_backup_is_taken_while_a_restore_reads(tmp_path):
    dest, old, new = two_snapshots(tmp_path, immutable="off")
    readers = [Reader(dest, old), Reader(dest, new)]
    try:
        proc = strongroom("backup", "now", "--source", tmp_path / "project", "--dest", dest,
                          "--immutable", "off", check=0, timeout=30)
        made = proc.stdout.strip()
        assert snapshots.snapshot_ids(dest) == sorted([old, new, made])
        out = prune(dest)  # the newest is the new one: both being read stay
        assert out["deleted"] == [] and sorted(out["in_use"]) == [old, new]
    finally:
        for r in readers:
            r.done()
    assert prune(dest)["deleted"] == [old, new]


def test_the_snapshot_job_says_what_it_kept_for_a_restore(tmp_path):
    dest, old, new = two_snapshots(tmp_path, immutable="off")
    conf, state = tmp_path / "conf", tmp_path / "state"
    (conf / "jobs").mkdir(parents=True)
    (conf / "jobs" / "snap.yml").write_text(
        f"name: snap\ntype: snapshot\noptions:\n  source: {tmp_path / 'project'}\n"
        f"  dest: {dest}\n  immutable: 'off'\n  keep_last: 1\n  keep_days: 0\n")
    reader = Reader(dest, old)
    try:
        proc = strongroom("--config-dir", conf, "--state-dir", state, "run", "snap", check=0)
    finally:
        reader.done()
    assert f"{old}: kept: in use by a restore (PID {reader.pid})" in proc.stdout
    assert old in snapshots.snapshot_ids(dest) and new not in snapshots.snapshot_ids(dest)


def _prune_from_another_process(dest):
    return strongroom("backup", "prune", "--dest", dest, "--keep-last", "1", "--keep-days",
                      "0", check=0).stdout


@pytest.mark.parametrize("mode", ["full", "critical"])
def test_a_real_restore_holds_its_snapshot_against_a_prune(tmp_path, monkeypatch, mode):
    dest, old, new = two_snapshots(tmp_path, immutable="off")
    seen = []
    # let a prune in while the restore is reading: after the archive is unpacked (full),
    # before the critical files are staged (critical)
    step = "_put_databases" if mode == "full" else "_restore_critical"
    original = getattr(snapshot_restore, step)

    def meanwhile(*args, **kwargs):
        seen.append(_prune_from_another_process(dest))
        return original(*args, **kwargs)

    monkeypatch.setattr(snapshot_restore, step, meanwhile)
    target = tmp_path / "back"
    if mode == "full":
        out = snapshot_restore.restore_full(dest, old, target)
        assert (target / "notes.txt").read_text() == "the notes\n"
    else:
        out = snapshot_restore.restore_critical(dest, old, target)
        assert out["restored"] == [".env"]
    assert (target / ".env").read_text() == "KEY=canary\n"
    assert f"{old}: kept: in use by a restore (PID {os.getpid()})" in seen[0]
    assert seen[0].startswith("deleted 0")
    assert snapshots.snapshot_ids(dest) == [old, new]
    assert _prune_from_another_process(dest).startswith(f"deleted 1: {old}")
    assert lock_files(dest) == []


def test_a_verification_holds_its_snapshot_too(tmp_path, monkeypatch):
    dest, old, new = two_snapshots(tmp_path, immutable="off")
    seen = []
    original = snapshots.read_sums  # the first thing verify reads

    def meanwhile(*args):
        seen.append(_prune_from_another_process(dest))
        return original(*args)

    monkeypatch.setattr(snapshots, "read_sums", meanwhile)
    assert snapshots.verify(dest, old)["passed"]  # not a false "missing" for every file
    assert f"{old}: kept: in use by a verification (PID {os.getpid()})" in seen[0]


def test_a_prune_under_way_makes_a_restore_wait_then_say_the_snapshot_is_gone(tmp_path):
    dest, old, new = two_snapshots(tmp_path, immutable="off")
    holder = subprocess.Popen([sys.executable, "-c", """
import sys
from strongroom.core.lock import Deleting
claim = Deleting(sys.argv[1], sys.argv[2])
assert claim.acquire()
print("deleting", flush=True)
sys.stdin.read()
import shutil
shutil.rmtree(sys.argv[1] + "/" + sys.argv[2])
claim.release()
""", str(dest), old], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "deleting"
    restore = subprocess.Popen([sys.executable, "-m", "strongroom", "backup", "restore",
                                "--dest", str(dest), old, "--full", "--target",
                                str(tmp_path / "back")], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    with pytest.raises(subprocess.TimeoutExpired):
        restore.wait(timeout=0.5)  # it waits for the deletion, never reads half of it
    holder.stdin.close()
    assert holder.wait(timeout=10) == 0
    _, err = restore.communicate(timeout=30)
    assert restore.returncode == 2 and f"no snapshot {old} in {dest}" in err
    assert not (tmp_path / "back").exists() and lock_files(dest) == []


def test_an_in_use_lock_is_never_followed_through_a_link(tmp_path, capsys):
    dest, old, new = two_snapshots(tmp_path, immutable="off")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    (dest / IN_USE_DIR).mkdir()
    (dest / IN_USE_DIR / f"{old}.lock").symlink_to(victim)
    with pytest.raises(StrongroomError, match="is a symlink; refusing to use it"):
        prune(dest)
    # a restore is never stopped by a stray link: it reads unmarked, and says so
    snapshot_restore.restore_full(dest, old, tmp_path / "back")
    assert (tmp_path / "back" / "notes.txt").read_text() == "the notes\n"
    assert "is a symlink; refusing to use it (remove it); reading" in capsys.readouterr().err
    assert victim.read_text() == "keep me\n" and snapshots.snapshot_ids(dest) == [old, new]
    (dest / IN_USE_DIR / f"{old}.lock").unlink()
    os.rmdir(dest / IN_USE_DIR)
    (dest / IN_USE_DIR).symlink_to(tmp_path)
    with pytest.raises(StrongroomError, match="is a symlink or not a directory"):
        prune(dest)
    snapshot_restore.restore_critical(dest, old, tmp_path / "crit")
    assert (tmp_path / "crit" / ".env").read_text() == "KEY=canary\n"
    assert snapshots.snapshot_ids(dest) == [old, new] and not (tmp_path / f"{old}.lock").exists()


def test_a_restore_behind_a_stopped_prune_says_so_instead_of_waiting_forever(
        tmp_path, monkeypatch):
    from strongroom.core import lock

    dest, old, new = two_snapshots(tmp_path, immutable="off")
    (dest / IN_USE_DIR).mkdir()
    mark = dest / IN_USE_DIR / f"{old}.lock"
    mark.touch()
    holder = subprocess.Popen(["flock", "-x", str(mark), "sleep", "30"])
    try:
        for _ in range(200):  # until flock holds it
            try:
                with open(mark) as f:
                    fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                break
            time.sleep(0.01)
        monkeypatch.setattr(lock, "READ_WAIT", 0.3)
        with pytest.raises(StrongroomError, match="has been held by a prune or retire for "
                                                  "over 0.3 s .* is one stopped"):
            snapshot_restore.restore_full(dest, old, tmp_path / "back")
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "back").exists() and snapshots.snapshot_ids(dest) == [old, new]


def test_the_restore_lock_is_shared_so_two_restores_of_one_snapshot_run_together(tmp_path):
    dest, old, new = two_snapshots(tmp_path, immutable="off")
    first = Reader(dest, old)
    try:
        second = Reader(dest, old, by="drill")  # would hang here if it waited for the first
        try:
            msg = prune(dest)["in_use"][old]
            assert msg == (f"kept: in use by a restore (PID {first.pid}) and a drill "
                           f"(PID {second.pid})")
        finally:
            second.done()
        assert lock_files(dest) == [f"{old}.lock"]  # the first still reads
        fd = os.open(dest / IN_USE_DIR / f"{old}.lock", os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    finally:
        first.done()
    assert prune(dest)["deleted"] == [old]


# --- checkpoints -------------------------------------------------------------------------


def test_a_checkpoint_being_verified_is_kept_by_prune(tmp_path, monkeypatch):
    repo = init(tmp_path / "repo")
    commit(repo, {"a.txt": "one\n"})
    dest = tmp_path / "ckpt"
    now = datetime.now(UTC)
    (repo / "a.txt").write_text("two\n")
    old = checkpoints.save(repo, dest, now=now - timedelta(days=30))
    (repo / "a.txt").write_text("three\n")
    checkpoints.save(repo, dest, now=now)
    seen = []
    original = snapshots.read_sums  # the first thing a checkpoint's verify reads

    def meanwhile(folder):
        seen.append(subprocess.run(
            [sys.executable, "-c", "import sys, json; from strongroom import checkpoints; "
             "print(json.dumps(checkpoints.prune(sys.argv[1], 14)))", str(dest)],
            capture_output=True, text=True, check=True).stdout)
        return original(folder)

    monkeypatch.setattr(snapshots, "read_sums", meanwhile)
    assert checkpoints.verify(old["path"]) == []  # intact, not half-deleted
    assert f'"{old["name"]}": "kept: in use by a verification (PID {os.getpid()})"' in seen[0]
    assert '"deleted": []' in seen[0]
    monkeypatch.undo()
    assert checkpoints.prune(dest, 14)["deleted"] == [old["name"]]
    assert not (dest / checkpoints.PROGRESS / IN_USE_DIR).exists()


# --- daily folders and rollups -------------------------------------------------------------


def _days_and_a_rollup(tmp_path):
    notes, dest = tmp_path / "notes", tmp_path / "days"
    notes.mkdir()
    for d in ("2020-03-01", "2020-03-02"):
        (notes / "plan.md").write_text(f"plan of {d}\n")
        rollups.make_day([notes], dest, today=date.fromisoformat(d))
    (name, _), = rollups.make_rollup(dest, 7, today=date(2020, 3, 3))
    return dest, name


def test_retire_keeps_the_day_folder_and_the_rollup_a_restore_reads(tmp_path):
    dest, name = _days_and_a_rollup(tmp_path)
    day, rollup = Reader(dest, "2020-03-01"), Reader(dest, name)
    try:
        gone = rollups.retire(dest, "after_rollup", False, keep_rollups=0)
        assert gone == ["2020-03-02"]
        assert gone.in_use == {"2020-03-01": f"kept: in use by a restore (PID {day.pid})",
                               name: f"kept: in use by a restore (PID {rollup.pid})"}
        assert gone.messages()[0] == f"2020-03-01: kept: in use by a restore (PID {day.pid})"
        assert rollups.days(dest) == ["2020-03-01"] and rollups.rollups(dest) == [name]
    finally:
        day.done()
        rollup.kill()  # a killed one pins nothing either
    assert rollups.retire(dest, "after_rollup", False, keep_rollups=0) == ["2020-03-01", name]
    assert rollups.days(dest) == [] and rollups.rollups(dest) == [] and lock_files(dest) == []


@pytest.mark.parametrize("what", ["day folder", "rollup"])
def test_a_real_rollup_restore_holds_what_it_reads_against_retire(tmp_path, monkeypatch,
                                                                  what):
    dest, name = _days_and_a_rollup(tmp_path)
    if what == "rollup":  # the day folder is gone: the day comes out of its rollup
        assert rollups.retire(dest, "after_rollup", False, keep_rollups=12) == \
            ["2020-03-01", "2020-03-02"]
    step = "_copy_day" if what == "day folder" else "_extract"
    original = getattr(rollups, step)
    seen = []

    def meanwhile(*args, **kwargs):
        # the daily job's retire, from another process, while the restore reads
        seen.append(subprocess.run(
            [sys.executable, "-c", "import sys, json; from strongroom import rollups; "
             "r = rollups.retire(sys.argv[1], 'after_rollup', False, keep_rollups=0); "
             "print(json.dumps([list(r), getattr(r, 'in_use', {})]))", str(dest)],
            capture_output=True, text=True, check=True).stdout)
        return original(*args, **kwargs)

    monkeypatch.setattr(rollups, step, meanwhile)
    out = rollups.restore(dest, tmp_path / "back", day="2020-03-01")
    assert out["days"] == ["2020-03-01"]
    assert (tmp_path / "back/2020-03-01/notes/plan.md").read_text() == "plan of 2020-03-01\n"
    held = "2020-03-01" if what == "day folder" else name
    assert f'"{held}": "kept: in use by a restore (PID {os.getpid()})"' in seen[0]
    assert (dest / held).exists() or (dest / "rollups" / held).exists()
    monkeypatch.undo()
    assert held in rollups.retire(dest, "after_rollup", False, keep_rollups=0)
    assert lock_files(dest) == []


def test_one_prune_of_a_dest_at_a_time(tmp_path, monkeypatch):
    """Two prunes at once, each with its own plan, fingerprinted what the other deleted
    and failed with a raw 'No such file'; the second now waits, then says who holds it."""
    from strongroom.core.errors import LockedError

    dest, old, new = two_snapshots(tmp_path, immutable="off")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from strongroom.core.lock import Lock; "
         f"lock = Lock({str(dest / '.prune.lock')!r}, 'prune').acquire(); "
         "print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(snapshots, "PRUNE_WAIT", 0.2)
        with pytest.raises(LockedError, match=f"pruning of {dest} is locked by PID "
                                              f"{holder.pid}"):
            prune(dest)
        assert snapshots.snapshot_ids(dest) == [old, new]
        # a dry run changes nothing and needs no lock
        assert snapshots.prune(dest, keep_last=1, keep_days=0, dry_run=True)["deleted"] == [old]
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    assert prune(dest)["deleted"] == [old]
