"""--wait, verb by verb: offered where a verb takes a lock, honoured for every lock it
takes (a job's inner store, sync or snapshot lock included), refused where none is taken.

Each lock is held by a real separate process, which lets go when told to."""

import argparse
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from strongroom.cli import app as cli
from tests.helpers import ENV, VENV_BIN, commit, g, init, strongroom


class Holder:
    """Another process holding a strongroom lock until release() (or its end)."""

    def __init__(self, path, what="test"):
        self.path = str(path)
        self.proc = subprocess.Popen(
            [
                str(VENV_BIN / "python"),
                "-c",
                "import sys; from strongroom.core.lock import Lock; "
                f"lock = Lock({self.path!r}, {what!r}).acquire(); "
                "print('held', flush=True); sys.stdin.readline(); lock.release()",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        assert self.proc.stdout.readline().strip() == "held"
        self.pid = self.proc.pid

    def release(self):
        if self.proc.poll() is None:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
            self.proc.wait(5)

    def close(self):
        self.release()
        self.proc.stdin.close()
        self.proc.stdout.close()


@pytest.fixture
def hold():
    holders = []

    def take(path, what="test"):
        holders.append(Holder(path, what))
        return holders[-1]

    yield take
    for h in holders:
        h.close()


def cli_popen(*args):
    return subprocess.Popen(
        [str(VENV_BIN / "strongroom"), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


def reached(proc, lock_path):
    """Until `proc` has lock_path open (it is trying for that lock) or has ended."""
    target, fds = str(lock_path), Path(f"/proc/{proc.pid}/fd")
    for _ in range(1000):
        if proc.poll() is not None:
            return False
        try:
            if any(os.readlink(fd) == target for fd in fds.iterdir()):
                return True
        except OSError:  # an fd closed while we looked
            pass
        time.sleep(0.01)
    raise AssertionError(f"{proc.args} never tried for {lock_path}")


def waits_then_succeeds(holder, *args, check=0):
    """Start the CLI; once it is at the held lock, release it: the CLI must finish."""
    proc = cli_popen(*args)
    assert reached(proc, holder.path), proc.communicate()
    time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()  # waiting, not exited 11
    holder.release()
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == check, (out, err)
    return out, err


def bundle_job(tmp_path):
    root, store = tmp_path / "root", tmp_path / "store"
    commit(init(root / "r"), {"a.txt": "a\n"})
    store.mkdir()
    conf, state = tmp_path / "conf", tmp_path / "state"
    (conf / "jobs").mkdir(parents=True)
    (conf / "jobs" / "bundles.yml").write_text(
        f"name: bundles\ntype: bundle_sync\noptions:\n  root: {root}\n  store: {store}\n"
    )
    return ["--config-dir", conf, "--state-dir", state], store / ".strongroom.lock", state


def test_run_wait_covers_the_store_lock_a_manual_sync_holds(tmp_path, hold):
    base, store_lock, state = bundle_job(tmp_path)
    holder = hold(store_lock, "bundle store")
    waits_then_succeeds(holder, *base, "run", "bundles", "--wait", "5")
    st = json.loads((state / "status" / "bundles.json").read_text())
    assert (st["result"], st["exit_code"]) == ("ok", 0)


def test_run_wait_0_exits_11_naming_the_holder_and_the_lock_file(tmp_path, hold):
    base, store_lock, state = bundle_job(tmp_path)
    holder = hold(store_lock, "bundle store")
    proc = strongroom(*base, "run", "bundles", "--wait", "0", check=11)
    assert f"is locked by PID {holder.pid}" in proc.stdout and str(store_lock) in proc.stdout
    st = json.loads((state / "status" / "bundles.json").read_text())
    assert (st["result"], st["exit_code"]) == ("locked", 11)


def test_run_wait_is_one_deadline_for_the_jobs_lock_and_the_store_lock(tmp_path, hold):
    base, store_lock, state = bundle_job(tmp_path)
    (state / "locks").mkdir(parents=True)
    job = hold(state / "locks" / "bundles.lock", "job bundles")
    store = hold(store_lock, "bundle store")
    proc = cli_popen(*base, "run", "bundles", "--wait", "0.8")
    assert reached(proc, job.path)
    time.sleep(0.4)
    job.release()  # the run takes its own lock, then waits for the store's: not 0.8 s more
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 11, (out, err)
    assert f"is locked by PID {store.pid}" in out and str(store_lock) in out
    waited = re.search(r"after waiting ([\d.]+)s", out)
    assert waited and float(waited.group(1)) <= 0.6, out  # what was left of the deadline
    assert json.loads((state / "status" / "bundles.json").read_text())["result"] == "locked"


def test_run_wait_replaces_a_longer_default_of_a_lock_inside(tmp_path, hold):
    """A daily job queues behind the rollups lock for up to 600 s by default; asked to wait
    1 s, it gives up after about 1 s. Without --wait the default still applies."""
    src, dest = tmp_path / "notes", tmp_path / "days"
    src.mkdir()
    (src / "a.md").write_text("a\n")
    dest.mkdir()
    conf, state = tmp_path / "conf", tmp_path / "state"
    (conf / "jobs").mkdir(parents=True)
    (conf / "jobs" / "days.yml").write_text(
        f"name: days\ntype: daily\noptions:\n  sources: [{src}]\n  dest: {dest}\n")
    base = ["--config-dir", conf, "--state-dir", state]
    holder = hold(dest / ".rollups.lock", "daily folders")
    t0 = time.monotonic()
    proc = strongroom(*base, "run", "days", "--wait", "1", check=11, timeout=30)
    assert time.monotonic() - t0 < 10
    assert f"is locked by PID {holder.pid}" in proc.stdout
    assert not any(p.is_dir() for p in dest.iterdir())  # no day folder was made
    waits_then_succeeds(holder, *base, "run", "days")  # the job's own 600 s default
    assert len([p for p in dest.iterdir() if p.is_dir()]) == 1


def test_sync_push_honours_wait_for_the_sync_lock(tmp_path, hold):
    remote, repo = tmp_path / "remote.git", tmp_path / "repo"
    g(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    g(tmp_path, "clone", "-q", str(remote), str(repo))
    (repo / "notes.md").write_text("notes\n")
    (repo / ".git" / "strongroom").mkdir()
    holder = hold(repo / ".git" / "strongroom" / "sync.lock", "sync")
    out, _ = waits_then_succeeds(
        holder, "sync", "push", "--repo", repo, "--role", "primary", "--wait", "5"
    )
    assert out.startswith("push: ok: pushed ")


def test_backup_now_waits_for_the_snapshot_lock(tmp_path, hold):
    src, dest = tmp_path / "src", tmp_path / "snaps"
    src.mkdir()
    dest.mkdir()
    (src / "a.txt").write_text("a\n")
    holder = hold(dest / ".snapshot.lock", "snapshots")
    waits_then_succeeds(
        holder,
        "snapshot",
        "now",
        "--source",
        src,
        "--dest",
        dest,
        "--immutable",
        "off",
        "--wait",
        "5",
    )
    assert len([p for p in dest.iterdir() if p.is_dir()]) == 1


def test_bisync_wait_overrides_the_jobs_lock_wait(tmp_path, hold):
    local, conf, state = tmp_path / "local", tmp_path / "conf", tmp_path / "state"
    local.mkdir()
    (conf / "jobs").mkdir(parents=True)
    (conf / "jobs/docs.yml").write_text(
        f"name: docs\ntype: bisync\noptions:\n  local: {local}\n  remote: managed:/nowhere\n"
        "  lock_wait: 60\n"
    )
    (state / "bisync" / "docs").mkdir(parents=True)
    holder = hold(state / "bisync" / "docs" / "bisync.lock", "bisync")
    started = time.monotonic()
    proc = strongroom(
        "--config-dir",
        conf,
        "--state-dir",
        state,
        "bisync",
        "--job",
        "docs",
        "--wait",
        "0.3",
        check=11,
    )
    assert 0.3 <= time.monotonic() - started < 3  # --wait, not the job's 60 s
    assert f"is locked by PID {holder.pid}" in proc.stderr and "bisync.lock" in proc.stderr


def _leaves(parser, prefix=()):
    """(verb path, parser) for every command line parser a user can reach."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield " ".join(prefix), parser
        return
    for name, sub in subs[0].choices.items():
        yield from _leaves(sub, (*prefix, name))


# every verb that takes a lock (the table above build_parser in strongroom/cli/app.py);
# the old names (backup, save) are the same parsers under another name
TAKES_LOCKS = {
    "bundle sync",
    "bundle verify",
    "bundle restore",
    "bundle consolidate",
    "run",
    "drill",
    "sync push",
    "sync pull",
    "sync rollback",
    "sync resolve",
    "snapshot now",
    "backup now",
    "checkpoint save",
    "save",
    "hook pre-push",
    "bisync",
    "db backup",
    "db restore",
    "db sync",
    "db tick",
    "reverify",  # the job's lock: a run must not upload while its remote is re-read
}


def test_wait_is_offered_exactly_where_a_lock_is_taken():
    offers = {
        path
        for path, p in _leaves(cli.build_parser())
        if any("--wait" in a.option_strings for a in p._actions)
    }
    assert offers == TAKES_LOCKS


@pytest.mark.parametrize(
    "argv",
    [
        ["bundle", "list", "--store", "/s"],
        ["db", "list", "--db", "/d.db", "--remote", "r:b"],
        ["db", "status", "--db", "/d.db", "--remote", "r:b"],
        ["sync", "status", "--repo", "/r"],
        ["jobs", "list"],
        ["status"],
        ["upload", "/a", "r:b"],
        ["snapshot", "list", "--dest", "/d"],
        ["checkpoint", "list", "--dest", "/d"],
        ["backup", "list", "--dest", "/d"],
        ["checkpoints", "list", "--dest", "/d"],
    ],
)
def test_verbs_without_a_lock_refuse_wait(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args([*argv, "--wait", "5"])
    assert exc.value.code == 64  # a usage error (EX_USAGE), not 2 (an error)
    assert "unrecognized arguments: --wait" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "soon"])
def test_a_wait_that_is_no_finite_number_of_seconds_is_refused(value, capsys):
    # NaN compares false with every deadline: `--wait nan` waited forever
    for argv in (["run", "job"], ["snapshot", "now", "--source", "/s", "--dest", "/d"],
                 ["bisync", "--job", "j"]):
        with pytest.raises(SystemExit) as exc:
            cli.build_parser().parse_args([*argv, "--wait", value])
        assert exc.value.code == 64
        assert "expected a" in capsys.readouterr().err and "seconds" in value + "seconds"
