"""strongroom status: staleness, the Prometheus textfile, and the stale alert."""

import json
import os
import time
from datetime import UTC, datetime, timedelta

from strongroom import jobs
from tests.helpers import strongroom
from tests.notify.test_notify import CANARY, Receiver, write_targets


def write_job(conf, name, schedule, root, store):
    sched = f"schedule: {schedule}\n" if schedule else ""
    (conf / "jobs" / f"{name}.yml").write_text(
        f"name: {name}\ntype: bundle_sync\n{sched}options:\n  root: {root}\n  store: {store}\n")


def age_file(path, days):
    t = time.time() - days * 86400
    os.utime(path, (t, t))


def fake_status(state, name, result, last_success_days_ago):
    (state / "status").mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    last = jobs.iso(now - timedelta(days=last_success_days_ago))
    (state / "status" / f"{name}.json").write_text(json.dumps({
        "job": name, "result": result, "exit_code": 0 if result == "ok" else 2,
        "finished": jobs.iso(now - timedelta(hours=1)), "duration_seconds": 1.5,
        "bytes": 42, "last_success": last, "last_success_started": last}))


def sr(conf, state, *args, check=None):
    return strongroom("--config-dir", conf, "--state-dir", state, *args, check=check)


def test_never_run_and_long_failed_jobs_go_stale(bed):
    tmp, root, conf, state = bed
    write_job(conf, "fresh", "daily 01:00", root, tmp / "s1")
    write_job(conf, "forgotten", "daily 01:00", root, tmp / "s2")
    age_file(conf / "jobs" / "forgotten.yml", 3)  # installed 3 days ago, never ran
    write_job(conf, "failing", "daily 01:00", root, tmp / "s3")
    fake_status(state, "failing", "error", 5)
    write_job(conf, "healthy", "daily 01:00", root, tmp / "s4")
    fake_status(state, "healthy", "ok", 0.5)
    write_job(conf, "manual", None, root, tmp / "s5")
    age_file(conf / "jobs" / "manual.yml", 300)
    sr(conf, state, "status", check=0)  # plain status is a report, not a check
    proc = sr(conf, state, "status", "--stale", "--json", check=1)
    out = json.loads(proc.stdout)
    assert sorted(out["stale"]) == ["failing", "forgotten"]
    rows = {r["job"]: r for r in out["jobs"]}
    assert rows["healthy"]["stale"] is False and rows["fresh"]["stale"] is False
    assert rows["manual"]["stale"] is False and rows["manual"]["schedule"] == "manual"
    assert rows["forgotten"]["result"] == "never run"
    assert rows["failing"]["stale_after_seconds"] == 2 * 86400
    table = sr(conf, state, "status", check=0).stdout
    assert "failing" in table and "STALE" in table
    # a looser factor makes the five-day failure the only stale one
    out = json.loads(sr(conf, state, "status", "--stale", "--stale-factor", "4", "--json",
                        check=1).stdout)
    assert out["stale"] == ["failing"]


def test_prometheus_textfile(bed):
    tmp, root, conf, state = bed
    write_job(conf, "bundles", "daily 01:00", root, tmp / "store")
    sr(conf, state, "run", "bundles", check=0)
    prom = tmp / "textfile" / "strongroom.prom"
    sr(conf, state, "status", "--prometheus", prom, check=0)
    text = prom.read_text()
    st = json.loads((state / "status" / "bundles.json").read_text())
    ts = int(jobs.parse_iso(st["last_success"]).timestamp())
    labels = '{job="bundles",type="bundle"}'  # the type by its one-word name
    assert f"strongroom_last_success_timestamp_seconds{labels} {ts}\n" in text
    assert f"strongroom_last_exit_code{labels} 0\n" in text
    assert f"strongroom_last_bytes{labels} {st['bytes']}\n" in text
    assert f"strongroom_stale{labels} 0\n" in text
    assert "# TYPE strongroom_last_duration_seconds gauge\n" in text
    assert [p.name for p in prom.parent.iterdir()] == ["strongroom.prom"]  # no temp left


def test_stale_alert_is_sent(bed):
    tmp, root, conf, state = bed
    receiver = Receiver()
    try:
        write_targets(conf, receiver.port, ntfy_sev="warning")
        write_job(conf, "forgotten", "daily 01:00", root, tmp / "s")
        age_file(conf / "jobs" / "forgotten.yml", 3)
        proc = sr(conf, state, "status", "--stale", "--notify", check=1)
        (req,) = receiver.requests  # the webhook does not subscribe to backup_stale
        body = json.loads(req["body"])
        assert req["headers"]["X-Priority"] == "max"
        assert body["title"].endswith("forgotten is stale")
        assert "It has never succeeded; check that its scheduler runs it" in body["message"]
        assert CANARY not in proc.stdout + proc.stderr
    finally:
        receiver.close()


def test_status_says_due_now_for_never_run_and_failed_jobs_as_jobs_list_does(tmp_path):
    conf, state = tmp_path / "conf", tmp_path / "state"
    (conf / "jobs").mkdir(parents=True)
    for name, spec in (("never", "daily 01:00"), ("failing", "daily 01:00"),
                       ("healthy", "every 48h"), ("manual", None)):
        sched = f"schedule: {spec}\n" if spec else ""
        (conf / "jobs" / f"{name}.yml").write_text(f"name: {name}\ntype: status_check\n{sched}")
    fake_status(state, "failing", "error", 5)
    fake_status(state, "healthy", "ok", 0.5)
    listed = {line.split()[0]: line for line in
              sr(conf, state, "jobs", "list", check=0).stdout.splitlines()[1:]}
    shown = {line.split()[0]: line for line in
             sr(conf, state, "status", check=0).stdout.splitlines()[1:]}
    for name in ("never", "failing"):
        assert "due now" in listed[name] and "due now" in shown[name], shown[name]
    assert "due now" not in shown["healthy"] and "due now" not in shown["manual"]
    assert "due now" not in listed["manual"] and "due now" not in listed["healthy"]
    now = jobs.iso(datetime.now(UTC))[:13]  # the current hour is no one's next due time
    assert now not in shown["never"] and now not in shown["failing"]
    rows = {r["job"]: r for r in json.loads(sr(conf, state, "status", "--json",
                                               check=0).stdout)["jobs"]}
    assert {n: r["due"] for n, r in rows.items()} == {
        "never": True, "failing": True, "healthy": False, "manual": False}
    nxt = jobs.parse_iso(rows["healthy"]["next_due"]) - datetime.now(UTC)
    assert timedelta(hours=35) < nxt < timedelta(hours=37)
    assert rows["manual"]["next_due"] is None


def test_an_invalid_job_file_makes_status_fail(bed):
    tmp, root, conf, state = bed
    (conf / "jobs" / "broken.yml").write_text("name: broken\ntype: nope\n")
    proc = sr(conf, state, "status", "--json", check=2)
    (row,) = json.loads(proc.stdout)["jobs"]
    assert row["valid"] is False and row["stale"] is True


def test_the_scheduled_stale_check_alerts_once_then_reminds_and_forgets_on_recovery(bed):
    tmp, root, conf, state = bed
    receiver = Receiver()
    try:
        write_targets(conf, receiver.port, ntfy_sev="warning")
        write_job(conf, "forgotten", "daily 01:00", root, tmp / "s")
        age_file(conf / "jobs" / "forgotten.yml", 3)
        write_job(conf, "healthy", "daily 01:00", root, tmp / "s2")
        fake_status(state, "healthy", "ok", 0.5)
        prom = tmp / "textfile" / "strongroom.prom"
        (conf / "jobs" / "stale-check.yml").write_text(
            "name: stale-check\ntype: status_check\nschedule: every 1h\noptions:\n"
            f"  prometheus: {prom}\n  remind_hours: 24\n")
        proc = sr(conf, state, "run", "stale-check", check=1)
        assert "1 of 2 jobs stale: forgotten" in proc.stdout
        (req,) = receiver.requests
        assert json.loads(req["body"])["title"].endswith("forgotten is stale")
        st = json.loads((state / "status" / "stale-check.json").read_text())
        assert st["result"] == "warning" and list(st["stale_alerted"]) == ["forgotten"]
        assert st["stale_alerts"] == [{"target": "phone", "event": "backup_stale",
                                       "severity": "error", "delivered": True}]
        assert 'strongroom_stale{job="forgotten",type="bundle"} 1' in prom.read_text()
        # the next hourly run does not repeat it...
        sr(conf, state, "run", "stale-check", check=1)
        assert len(receiver.requests) == 1
        # ...until the reminder is due
        st["stale_alerted"]["forgotten"] = jobs.iso(datetime.now(UTC) - timedelta(hours=25))
        (state / "status" / "stale-check.json").write_text(json.dumps(st))
        sr(conf, state, "run", "stale-check", check=1)
        assert len(receiver.requests) == 2
        # a recovered job is forgotten, so going stale again alerts again at once
        fake_status(state, "forgotten", "ok", 0.1)
        assert "none of 2 jobs stale" in sr(conf, state, "run", "stale-check", check=0).stdout
        st = json.loads((state / "status" / "stale-check.json").read_text())
        assert st["stale_alerted"] == {}
        fake_status(state, "forgotten", "error", 5)
        sr(conf, state, "run", "stale-check", check=1)
        assert len(receiver.requests) == 3
        assert CANARY not in proc.stdout + proc.stderr
    finally:
        receiver.close()
