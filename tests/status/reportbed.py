"""A host's jobs, status files and run history in exactly the shapes the runner, the drill,
the re-verification and the heartbeats write (contracts C2 to C5), for the report tests."""

import json
from datetime import UTC, datetime, timedelta

from strongroom import jobs
from strongroom.status import history

HOSTILE = '<script>alert("x")</script> & "quoted" \'single\''
NOW = datetime.now(UTC).replace(microsecond=0)
# the bundles job's last 30 days, oldest first: what its strip must show, cell by cell
BUNDLES_DAYS = ["none"] * 20 + ["ok", "ok", "error", "warning", "none", "ok", "ok", "error",
                                "ok", "ok"]


def status_file(state, name, **fields):
    (state / "status").mkdir(parents=True, exist_ok=True)
    finished = NOW - timedelta(hours=2)
    doc = {"job": name, "result": "ok", "exit_code": 0, "finished": jobs.iso(finished),
           "started": jobs.iso(finished - timedelta(seconds=12)), "duration_seconds": 12.5,
           "bytes": 2048, "message": "done", "last_success": jobs.iso(finished),
           "last_success_started": jobs.iso(finished - timedelta(seconds=12))}
    doc.update(fields)
    (state / "status" / f"{name}.json").write_text(json.dumps(doc))
    return doc


def run_on(day_offset, result, second=20):
    """A run that finished day_offset UTC days ago, just after that day began."""
    when = (NOW - timedelta(days=day_offset)).replace(hour=0, minute=0, second=second)
    code = {"ok": 0, "warning": 1, "error": 2, "incomplete": 3}[result]
    return {"started": jobs.iso(when - timedelta(seconds=30)), "finished": jobs.iso(when),
            "result": result, "exit_code": code, "duration_seconds": 30.0}


def artifact(kind, name, job, source, result="ok", seconds=4.25, message=""):
    return {"kind": kind, "name": name, "job": job, "source": source, "result": result,
            "duration_seconds": seconds, "files": 12, "bytes": 40960, "refs": 3,
            "message": message}


VERIFY = {"window_days": 30, "objects": 40, "verified": 37, "coverage_ratio": 0.925,
          "oldest_verified_age_seconds": 3 * 86400 + 7200, "checked_this_run": 5,
          "damaged": ["app/full-2026.bundle", "web/incr-7.bundle"], "method": "hash",
          "error": None}
PING = {"start": {"delivered": True, "attempts": 1, "error": None},
        "end": {"delivered": False, "attempts": 3, "error": "HTTP 500 from the ping host",
                "signal": "success"}}


def write(tmp_path):
    """conf/, state/ with: bundles (history, verify, ping), restore-drill (artifacts),
    notes (a hostile message), snap (verify with no objects), fresh (never ran)."""
    conf, state = tmp_path / "conf", tmp_path / "state"
    (conf / "jobs").mkdir(parents=True)
    root, store = tmp_path / "root", tmp_path / "store"
    root.mkdir()
    for name in ("bundles", "notes", "fresh"):
        (conf / "jobs" / f"{name}.yml").write_text(
            f"name: {name}\ntype: bundle_sync\nschedule: daily 01:00\noptions:\n"
            f"  root: {root}\n  store: {store}\n")
    (conf / "jobs" / "restore-drill.yml").write_text(
        "name: restore-drill\ntype: restore_drill\nschedule: weekly sun 04:30\n")
    (conf / "jobs" / "snap.yml").write_text(
        f"name: snap\ntype: snapshot\noptions:\n  source: {root}\n  dest: {tmp_path / 's'}\n")
    status_file(state, "bundles", verify=VERIFY, ping=PING)
    for i, result in enumerate(reversed(BUNDLES_DAYS)):
        if result != "none":
            history.append(state, "bundles", run_on(i, result))
    # a day with a good run and a failed one shows the failure
    history.append(state, "bundles", run_on(2, "ok", second=10))
    status_file(state, "restore-drill", result="error", exit_code=2,
                message="1 of 3 restores FAILED", artifacts=[
                    artifact("bundle_chain", "app", "bundles", "local", seconds=4.25),
                    artifact("bundle_chain", "app", "bundles", "remote", seconds=61.5),
                    artifact("snapshot", "20261201T031500Z", "snap", "remote", "error", 2.0,
                             message=HOSTILE)])
    status_file(state, "notes", result="error", exit_code=2, message=HOSTILE)
    status_file(state, "snap", verify={**VERIFY, "objects": 0, "verified": 0,
                                       "coverage_ratio": 1.0,
                                       "oldest_verified_age_seconds": None, "damaged": [],
                                       "checked_this_run": 0})
    return conf, state
