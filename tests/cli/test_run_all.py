"""`strongroom run --all`: every configured job in name order, each under its own lock, on
past a failure, with a table (or "jobs" in the envelope) and the worst exit code."""

import json
import subprocess

from tests.cli.support import Runner, envelope
from tests.helpers import ENV, VENV_BIN


def snapshot_job(sr, name, source, dest):
    (sr.conf / "jobs" / f"{name}.yml").write_text(
        f"name: {name}\ntype: snapshot\nschedule: daily 03:00\noptions:\n  source: {source}\n"
        f"  dest: {dest}\n  immutable: 'off'\n")


def setup(tmp_path):
    sr = Runner(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a\n")
    snapshot_job(sr, "c-ok", src, tmp_path / "snaps-c")  # written first, run last
    snapshot_job(sr, "a-ok", src, tmp_path / "snaps-a")
    snapshot_job(sr, "b-bad", tmp_path / "no-such-source", tmp_path / "snaps-b")
    return sr


def status(sr, name):
    return json.loads((sr.state / "status" / f"{name}.json").read_text())


def test_run_all_runs_every_job_in_name_order_on_past_a_failure(tmp_path):
    sr = setup(tmp_path)
    proc = sr.run("run", "--all")
    assert proc.returncode == 2, proc.stderr  # the worst of ok, error, ok
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["JOB", "RESULT", "SECONDS", "MESSAGE"]
    assert [line.split()[:2] for line in lines[1:4]] == [["a-ok", "ok"], ["b-bad", "error"],
                                                         ["c-ok", "ok"]]
    assert lines[-1] == "3 of 3 job(s) run; not ok: b-bad"
    for name, result in (("a-ok", "ok"), ("b-bad", "error"), ("c-ok", "ok")):
        assert status(sr, name)["result"] == result
    assert len([p for p in (tmp_path / "snaps-c").iterdir() if p.is_dir()]) == 1  # after b


def test_run_all_json_holds_every_job(tmp_path):
    sr = setup(tmp_path)
    out = sr.json("run", "--all", expect=2)
    assert out["result"] == "error"
    assert [(j["job"], j["result"], j["exit_code"]) for j in out["jobs"]] == [
        ("a-ok", "ok", 0), ("b-bad", "error", 2), ("c-ok", "ok", 0)]
    bad = out["jobs"][1]
    assert "no-such-source" in bad["message"] and isinstance(bad["seconds"], float)


def test_run_all_if_due_runs_only_the_due_ones(tmp_path):
    sr = setup(tmp_path)
    sr.run("run", "--all", check=2)
    finished = {n: status(sr, n)["finished"] for n in ("a-ok", "b-bad", "c-ok")}
    runs_of_b = status(sr, "b-bad")["consecutive_failures"]
    out = sr.json("run", "--all", "--if-due", expect=2)  # only b, which failed, is due
    assert [(j["job"], j["result"]) for j in out["jobs"]] == [
        ("a-ok", "not due"), ("b-bad", "error"), ("c-ok", "not due")]
    assert status(sr, "a-ok")["finished"] == finished["a-ok"]
    assert status(sr, "c-ok")["finished"] == finished["c-ok"]
    assert status(sr, "b-bad")["consecutive_failures"] == runs_of_b + 1
    (sr.conf / "jobs/b-bad.yml").unlink()
    out = sr.json("run", "--all", "--if-due", expect=0)  # nothing due: all fine
    assert {j["result"] for j in out["jobs"]} == {"not due"}


def test_a_locked_job_is_the_worst_and_the_others_still_run(tmp_path):
    sr = setup(tmp_path)
    (sr.state / "locks").mkdir(parents=True)
    holder = subprocess.Popen(
        [str(VENV_BIN / "python"), "-c",
         "import sys; from strongroom.core.lock import Lock; "
         f"lock = Lock({str(sr.state / 'locks' / 'c-ok.lock')!r}, 'job c-ok').acquire(); "
         "print('held', flush=True); sys.stdin.readline()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = sr.run("run", "--all", "--json")
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    out = envelope(proc)
    assert proc.returncode == 11 and out["result"] == "locked"
    assert [(j["job"], j["exit_code"]) for j in out["jobs"]] == [
        ("a-ok", 0), ("b-bad", 2), ("c-ok", 11)]
    assert status(sr, "a-ok")["result"] == "ok" and status(sr, "b-bad")["result"] == "error"
    assert f"is locked by PID {holder.pid}" in out["jobs"][2]["message"]


def test_run_all_with_no_jobs_and_run_with_nothing_named(tmp_path):
    sr = Runner(tmp_path)
    out = sr.json("run", "--all", expect=1)
    assert out["jobs"] == [] and out["message"].startswith("No jobs in")
    for argv in (["run"], ["run", "a-ok", "--all"], ["run", "--json"]):
        proc = sr.run(*argv)
        assert proc.returncode == 64 and proc.stdout == "" and "usage:" in proc.stderr
    proc = sr.run("run", "--all", "--date", "2020-03-01")
    assert proc.returncode == 2 and "does not go with --all" in proc.stderr
