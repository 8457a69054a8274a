"""The job runner: status files, logs, --if-due, locks, signals."""

import json
import os
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta

from strongroom import jobs
from strongroom.core.lock import Lock
from tests.helpers import ENV, VENV_BIN, big_repo, commit, strongroom


def write_job(conf, name="bundles", schedule="daily 01:00", root=None, store=None, extra=""):
    sched = f"schedule: {schedule}\n" if schedule else ""
    (conf / "jobs" / f"{name}.yml").write_text(
        f"name: {name}\ntype: bundle_sync\n{sched}options:\n  root: {root}\n"
        f"  store: {store}\n{extra}")


def sr(conf, state, *args, check=None):
    return strongroom("--config-dir", conf, "--state-dir", state, *args, check=check)


def status(state, name="bundles"):
    return json.loads((state / "status" / f"{name}.json").read_text())


def test_run_writes_status_and_log_and_exits_with_the_jobs_code(bed):
    tmp, root, conf, state = bed
    write_job(conf, root=root, store=tmp / "store")
    proc = sr(conf, state, "run", "bundles", check=0)
    assert "1 repositories: 1 full." in proc.stdout
    st = status(state)
    assert (st["result"], st["exit_code"], st["running"]) == ("ok", 0, False)
    assert st["counts"] == {"repositories": 1, "full": 1} and st["bytes"] > 0
    assert st["last_success"] == st["finished"] and st["next_due"].endswith("01:00:00Z")
    log = (state / "log" / "bundles.log").read_text()
    assert "run started" in log and "run finished: result=ok exit=0" in log
    # a failing run: status says so, keeps the last success, counts failures
    write_job(conf, root=tmp / "gone", store=tmp / "store")
    proc = sr(conf, state, "run", "bundles", check=2)
    assert "repositories root" in proc.stdout and "does not exist" in proc.stdout
    st2 = status(state)
    assert (st2["result"], st2["exit_code"]) == ("error", 2)
    assert st2["last_success"] == st["last_success"] and st2["consecutive_failures"] == 1
    assert "run finished: result=error exit=2" in (state / "log" / "bundles.log").read_text()
    assert next((tmp / "store" / "r").glob("full-*.bundle"))  # nothing lost


def test_if_due_runs_once_per_period_and_a_failed_run_stays_due(bed):
    tmp, root, conf, state = bed
    write_job(conf, root=tmp / "missing", store=tmp / "store")
    sr(conf, state, "run", "bundles", "--if-due", check=2)  # never succeeded: due, fails
    proc = sr(conf, state, "run", "bundles", "--if-due", check=2)  # still due after failing
    assert status(state)["consecutive_failures"] == 2
    write_job(conf, root=root, store=tmp / "store")
    sr(conf, state, "run", "bundles", "--if-due", check=0)
    proc = sr(conf, state, "run", "bundles", "--if-due", check=0)
    assert "bundles: not due (last success" in proc.stdout
    rows = json.loads(sr(conf, state, "jobs", "list", "--json", check=0).stdout)["jobs"]
    assert rows[0]["due"] is False and rows[0]["last_result"] == "ok"


def test_due_rules_for_calendar_and_interval_specs():
    job = {"schedule": "daily 01:00"}
    tz_now = datetime(2026, 3, 2, 1, 0, 30).astimezone()  # local wall clock 01:00:30

    def st(started_local):
        return {"last_success_started": jobs.iso(started_local.astimezone())}

    assert jobs.due(job, {}, tz_now)[0] is True
    assert jobs.due(job, st(datetime(2026, 3, 1, 1, 0, 5)), tz_now)[0] is True  # new day
    assert jobs.due(job, st(datetime(2026, 3, 2, 1, 0, 2)), tz_now)[0] is False  # cron ran
    # the machine was off at 01:00; anacron runs it at 09:00; the next night cron runs it
    anacron_run = datetime(2026, 3, 2, 9, 0)
    assert jobs.due(job, st(datetime(2026, 3, 1, 1, 0)), anacron_run.astimezone())[0] is True
    night = datetime(2026, 3, 3, 1, 0, 1).astimezone()
    assert jobs.due(job, st(anacron_run), night)[0] is True
    assert jobs.due(job, st(anacron_run), datetime(2026, 3, 2, 23, 0).astimezone())[0] is False
    every = {"schedule": "every 15m"}
    base = datetime(2026, 3, 2, 10, 0, 0, tzinfo=UTC)
    # cron starts the next run a few seconds late: it must still count as due
    assert jobs.due(every, {"last_success_started": "2026-03-02T09:45:03Z"}, base)[0] is True
    assert jobs.due(every, {"last_success_started": "2026-03-02T09:50:00Z"}, base)[0] is False
    assert jobs.due({}, {}, base)[:2] == (True, "no schedule: runs whenever asked")


def test_a_running_job_gives_exit_11_and_a_dead_owners_lock_is_taken_over(bed):
    tmp, root, conf, state = bed
    write_job(conf, root=root, store=tmp / "store")
    (state / "locks").mkdir(parents=True)
    held = Lock(state / "locks" / "bundles.lock", "job bundles").acquire()
    try:
        proc = sr(conf, state, "run", "bundles", check=11)
        assert f"job bundles is locked by PID {os.getpid()}" in proc.stderr
        assert not (state / "status" / "bundles.json").exists()
        assert "not started: job bundles is locked" in (state / "log" / "bundles.log").read_text()
    finally:
        held.release()
    # a holder killed with SIGKILL leaves its PID in the file; the next run takes over
    holder = subprocess.Popen(
        [str(VENV_BIN / "python"), "-c",
         "import sys, time; from strongroom.core.lock import Lock; "
         f"Lock({str(state / 'locks' / 'bundles.lock')!r}, 'job').acquire(); "
         "print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env=ENV)
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    holder.stdout.close()
    sr(conf, state, "run", "bundles", check=0)
    log = (state / "log" / "bundles.log").read_text()
    assert f"took over the lock of PID {holder.pid}, which is gone" in log


def test_log_rotates_by_size_and_keeps_a_few_generations(bed):
    tmp, root, conf, state = bed
    write_job(conf, root=root, store=tmp / "store", extra="log:\n  max_bytes: 1024\n  keep: 2\n")
    for i in range(8):
        commit(root / "r", {"f": f"{i}\n"})
        sr(conf, state, "run", "bundles", check=0)
    logs = sorted(p.name for p in (state / "log").iterdir())
    assert logs == ["bundles.log", "bundles.log.1", "bundles.log.2"]
    assert all((state / "log" / n).stat().st_size < 4096 for n in logs)


def test_sigterm_leaves_an_honest_status(bed):
    tmp, root, conf, state = bed
    big_repo(root / "big", megabytes=48)
    write_job(conf, root=root, store=tmp / "store")
    proc = subprocess.Popen([str(VENV_BIN / "strongroom"), "--config-dir", str(conf),
                             "--state-dir", str(state), "run", "bundles"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        path = state / "status" / "bundles.json"
        if path.exists() and json.loads(path.read_text()).get("running"):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    proc.communicate()
    st = status(state)
    assert proc.returncode == 143
    assert (st["result"], st["running"]) == ("error", False)
    assert st["message"] == "terminated by signal 15"


def test_jobs_list_shows_invalid_job_files_and_fails(bed):
    tmp, root, conf, state = bed
    write_job(conf, root=root, store=tmp / "store")
    write_job(conf, name="broken", schedule="daily 99:00", root=root, store=tmp / "s2")
    proc = sr(conf, state, "jobs", "list", check=2)
    assert "bundles  bundle  daily 01:00  never run" in proc.stdout
    assert "expected a schedule spec" in proc.stdout and "broken" in proc.stdout


def test_job_without_schedule_is_manual(bed):
    tmp, root, conf, state = bed
    write_job(conf, schedule=None, root=root, store=tmp / "store")
    sr(conf, state, "run", "bundles", "--if-due", check=0)
    sr(conf, state, "run", "bundles", "--if-due", check=0)
    assert status(state)["next_due"] is None
    rows = json.loads(sr(conf, state, "jobs", "list", "--json", check=0).stdout)["jobs"]
    assert rows[0]["schedule"] == "manual"


def test_status_times_are_utc_iso(bed):
    tmp, root, conf, state = bed
    write_job(conf, root=root, store=tmp / "store")
    sr(conf, state, "run", "bundles", check=0)
    st = status(state)
    started = datetime.strptime(st["started"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs(datetime.now(UTC) - started) < timedelta(minutes=5)


def test_two_runs_started_together_one_runs_the_other_exits_11(bed):
    tmp, root, conf, state = bed
    big_repo(root / "big", megabytes=24)
    write_job(conf, root=root, store=tmp / "store")
    argv = [str(VENV_BIN / "strongroom"), "--config-dir", str(conf), "--state-dir", str(state),
            "run", "bundles"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
             for _ in range(2)]
    outs = [p.communicate() + (p.returncode,) for p in procs]
    codes = sorted(rc for _, _, rc in outs)
    assert codes == [0, 11], outs
    loser = next(err.decode() for _, err, rc in outs if rc == 11)
    assert "job bundles is locked by PID" in loser
    st = status(state)
    assert st["result"] == "ok" and st["counts"]["full"] == 2
    log = (state / "log" / "bundles.log").read_text()
    assert log.count("run started") == 1 and "not started: job bundles is locked" in log
