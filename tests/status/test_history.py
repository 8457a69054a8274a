"""The run history: one line per finished run, the last 400 kept, read back as days."""

import json
from datetime import UTC, datetime, timedelta

from strongroom import jobs
from strongroom.status import history
from tests.helpers import strongroom
from tests.status.reportbed import run_on

ISO = "%Y-%m-%dT%H:%M:%SZ"


def sr(conf, state, *args, check=None):
    return strongroom("--config-dir", conf, "--state-dir", state, "--log-dir", state / "log",
                      *args, check=check)


def write_job(conf, root, store, name="bundles"):
    (conf / "jobs" / f"{name}.yml").write_text(
        f"name: {name}\ntype: bundle_sync\nschedule: daily 01:00\noptions:\n"
        f"  root: {root}\n  store: {store}\n")


def lines(state, job="bundles"):
    return history.path(state, job).read_text().splitlines()


def test_every_finished_run_appends_one_line_with_its_outcome(bed):
    tmp, root, conf, state = bed
    write_job(conf, root, tmp / "store")
    sr(conf, state, "run", "bundles", check=0)
    (tmp / "a-file").write_text("not a store\n")
    write_job(conf, root, tmp / "a-file")  # the next run cannot write its store
    failed = sr(conf, state, "run", "bundles").returncode
    first, second = (json.loads(x) for x in lines(state))
    assert set(first) == {"started", "finished", "result", "exit_code", "duration_seconds"}
    assert (first["result"], first["exit_code"]) == ("ok", 0)
    assert second["exit_code"] == failed and failed >= 2
    assert second["result"] == jobs.RESULTS[failed]
    st = json.loads((state / "status" / "bundles.json").read_text())
    assert {k: st[k] for k in first} == second  # the same figures as the status file
    for entry in (first, second):
        start, end = (datetime.strptime(entry[k], ISO) for k in ("started", "finished"))
        assert start <= end
    # a run that was not due is no run: nothing appended
    sr(conf, state, "run", "bundles", "--if-due", check=0)
    assert len(lines(state)) == 2


def test_the_file_keeps_the_last_400_runs_and_is_rewritten_whole(tmp_path):
    for i in range(405):
        history.append(tmp_path, "j", {**run_on(0, "ok"), "exit_code": i})
    kept = [json.loads(x)["exit_code"] for x in lines(tmp_path, "j")]
    assert kept == list(range(5, 405))
    assert [p.name for p in (tmp_path / "history").iterdir()] == ["j.jsonl"]  # no temp left


def test_a_torn_or_hostile_line_is_skipped_and_never_swallows_the_next_run(bed):
    tmp, root, conf, state = bed
    write_job(conf, root, tmp / "store")
    good = run_on(1, "ok")
    junk = [json.dumps(good), "not json", "[1, 2]", json.dumps({"result": "ok"}),
            json.dumps({**good, "finished": "../../etc/passwd"}),
            json.dumps({**good, "result": 7}), "",
            json.dumps({**good, "finished": "2026-13-40T99:99:99Z"})]
    path = history.path(state, "bundles")
    path.parent.mkdir(parents=True)
    # the last line was cut short by a run killed while it wrote: no newline at the end
    path.write_bytes("\n".join(junk).encode() + b"\n\xff\xfe" + b'{"started": "2026-')
    sr(conf, state, "run", "bundles", check=0)
    entries = history.read(state, "bundles")
    assert [e["result"] for e in entries] == ["ok", "ok"]
    assert entries[0] == good
    last = json.loads(path.read_bytes().splitlines()[-1])  # a whole line of its own
    assert last == entries[1] and last["exit_code"] == 0
    days = history.days(entries, datetime.now(UTC))
    assert [d["result"] for d in days[-2:]] == ["ok", "ok"]


def test_a_history_that_cannot_be_written_costs_the_run_nothing_but_a_warning(bed):
    tmp, root, conf, state = bed
    write_job(conf, root, tmp / "store")
    state.mkdir()
    (state / "history").write_text("a file where the folder should be\n")
    proc = sr(conf, state, "run", "bundles", check=0)
    st = json.loads((state / "status" / "bundles.json").read_text())
    assert st["result"] == "ok" and st["last_success"] and st["notifications"] == []
    log = (state / "log" / "bundles.log").read_text()
    assert "warning: run history not written: [Errno 17] File exists" in log, log
    assert (state / "history").read_text() == "a file where the folder should be\n"
    assert "Traceback" not in proc.stderr + log


def test_a_missing_or_unreadable_history_reads_as_no_runs(tmp_path):
    assert history.read(tmp_path, "nothing") == []
    (tmp_path / "history" / "dir.jsonl").mkdir(parents=True)
    assert history.read(tmp_path, "dir") == []


def test_days_show_each_days_worst_run_and_every_day_without_one():
    now = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)

    def at(days_ago, result, hour=8):
        t = jobs.iso(now - timedelta(days=days_ago, hours=9 - hour))
        return {"started": t, "finished": t, "result": result}

    entries = [at(0, "ok"), at(0, "warning", 1), at(1, "ok"), at(1, "incomplete", 2),
               at(3, "locked"), at(5, "ok"), at(29, "warning"), at(30, "error"),
               at(-1, "error")]  # a clock that ran ahead: not today's
    days = history.days(entries, now)
    assert len(days) == 30 and days[0]["day"] == "2026-11-05" and days[-1]["day"] == "2026-12-04"
    by_day = {d["day"]: d for d in days}
    assert by_day["2026-12-04"] == {"day": "2026-12-04", "result": "warning", "runs": 2,
                                    "ok": 1, "warning": 1, "error": 0}
    assert by_day["2026-12-03"]["result"] == "error"  # incomplete: some items failed
    assert by_day["2026-12-01"]["result"] == "error" and by_day["2026-11-29"]["result"] == "ok"
    assert by_day["2026-11-05"]["result"] == "warning"  # 29 days ago: the first cell
    assert [d["result"] for d in days].count("none") == 30 - 5
    assert by_day["2026-12-02"] == {"day": "2026-12-02", "result": "none", "runs": 0,
                                    "ok": 0, "warning": 0, "error": 0}
