"""`strongroom run JOB | --all` and `strongroom jobs list`: the configured jobs."""

import contextlib
import time
from pathlib import Path

from ..core.errors import ERROR, OK, WARNING, StrongroomError, worst
from ..core.lock import seconds
from ..jobs import config
from . import jobfile, output
from .output import render

DATED_JOBS = ("daily", "rollup")


@contextlib.contextmanager
def dated_run(args):
    """`strongroom run JOB --date YYYY-MM-DD`: a daily or rollup job run now as on that day
    (a missed day caught up, or a test). Anything wrong with it exits 2 before the job
    starts: no status, no log, nothing written."""
    if not getattr(args, "date", None):
        yield
        return
    from .. import rollups

    day = rollups.parse_day(args.date)
    if args.if_due:
        raise StrongroomError("--date runs the job now as on that day; it does not go with "
                              "--if-due (which asks the schedule whether today's run is due)")
    kind = config.load_job(args.config_dir, args.job_name)["type"]
    if kind not in DATED_JOBS:
        raise StrongroomError(f"--date is for daily and rollup jobs; {args.job_name} is a "
                              f"{kind} job")
    with rollups.dated(day):
        yield


def cmd_run(args):
    from .. import jobs

    if args.all and args.job_name:
        output.usage_error(args, "give JOB or --all, not both")
    if not args.all and not args.job_name:
        output.usage_error(args, "say which job: JOB, or --all for every configured job")
    if args.all:
        if args.date:
            raise StrongroomError("--date runs one daily or rollup job as on that day; it "
                                  "does not go with --all")
        return _run_all(args)
    with dated_run(args):  # --date: checked here, then seen by the job
        code, status, text = jobs.run(jobfile.paths(args), args.job_name, if_due=args.if_due,
                                      wait=args.wait)
    output.say(args, text or None)
    ran = status.get("job") == args.job_name and not _not_due(text, args.job_name)
    message = status.get("message") if ran and status.get("message") else text
    return output.emit(args, code, message, {"status": status, "output": text})


def _not_due(text, name):
    return (text or "").startswith(f"{name}: not due")


def _run_all(args):
    """Every configured job in name order, one lock each, on past a failure."""
    from datetime import UTC, datetime

    from .. import jobs

    paths = jobfile.paths(args)
    rows, codes, stopped = [], [], None
    for name in jobs.job_names(paths.config_dir):
        t0 = time.monotonic()
        if stopped is not None:
            rows.append({"job": name, "result": "not run", "exit_code": None, "seconds": 0.0,
                         "message": "not started: the run was stopped"})
            continue
        try:
            if args.if_due:
                job = config.load_job(paths.config_dir, name)
                is_due, why, next_due = jobs.due(job, jobs.read_status(paths, name),
                                                 datetime.now(UTC))
                if not is_due:
                    when = jobs.iso(next_due) if next_due else "unknown"
                    rows.append({"job": name, "result": "not due", "exit_code": OK,
                                 "seconds": 0.0,
                                 "message": f"not due ({why}; next due {when})"})
                    continue
            output.progress(args, f"running {name}")
            code, status, text = jobs.run(paths, name, if_due=args.if_due, wait=args.wait)
            message = status.get("message") or text
            if _not_due(text, name):
                rows.append({"job": name, "result": "not due", "exit_code": OK,
                             "seconds": round(time.monotonic() - t0, 3),
                             "message": text.split(": ", 1)[-1]})
                continue
        except StrongroomError as exc:  # its lock held, its file invalid: said, and on
            code, message = exc.exit_code, str(exc)
            output.error(f"{name}: {exc}")
        codes.append(code)
        if code >= 128:  # SIGTERM or SIGHUP during this job: the others are not started
            stopped = code
        rows.append({"job": name, "result": output.RESULTS.get(code, "error"),
                     "exit_code": code, "seconds": round(time.monotonic() - t0, 3),
                     "message": output.one_line(message)})
    if not rows:
        message = f"No jobs in {Path(args.config_dir) / 'jobs'}."
        output.say(args, message)
        return output.emit(args, WARNING, message, {"jobs": []})
    code = stopped if stopped is not None else worst(
        c if c in output.RESULTS else ERROR for c in codes)
    ran = [r for r in rows if r["result"] not in ("not due", "not run")]
    bad = [r["job"] for r in ran if r["exit_code"] != OK]
    message = (f"{len(ran)} of {len(rows)} job(s) run"
               + (f"; not ok: {', '.join(bad)}" if bad else "; all ok" if ran else ""))
    output.say(args, render(["JOB", "RESULT", "SECONDS", "MESSAGE"],
                            [[r["job"], r["result"], f"{r['seconds']:.1f}", r["message"]]
                             for r in rows]), message)
    return output.emit(args, code, message, {"jobs": rows})


def cmd_jobs_list(args):
    from .. import jobs

    rows = jobs.list_jobs(jobfile.paths(args))
    invalid = [r["job"] for r in rows if not r["valid"]]
    where = Path(args.config_dir) / "jobs"
    message = (f"{len(rows)} job(s) in {where}" + (f"; invalid: {', '.join(invalid)}"
                                                   if invalid else "")) if rows else \
        f"No jobs in {where}."
    if not rows:
        output.say(args, message)
    else:
        output.say(args, render(
            ["JOB", "TYPE", "SCHEDULE", "LAST RESULT", "LAST RUN", "LAST SUCCESS", "NEXT DUE"],
            [[r["job"], r.get("type", "-"), r.get("schedule", "-"),
              r.get("last_result", "INVALID"), r.get("last_run") or "-",
              r.get("last_success") or "-",
              ("due now" if r.get("due") else (r.get("next_due") or "-"))
              if r["valid"] else r["error"]] for r in rows]))
    return output.emit(args, ERROR if invalid else OK, message,
                       {"config_dir": args.config_dir, "jobs": rows})


def add_parser(sub):
    run = output.verb(sub, "run", help="run a configured job, or every one (what the "
                                       "schedulers call)",
                      epilog=output.epilog("--all exits with the worst code of its jobs"))
    run.add_argument("job_name", metavar="JOB", nargs="?",
                     help="job name: <config-dir>/jobs/JOB.yml")
    run.add_argument("--all", action="store_true",
                     help="run every configured job, in name order, each under its own "
                          "lock, on past a failure; prints a table (job, result, seconds, "
                          "message)")
    run.add_argument("--if-due", action="store_true",
                     help="run only when there was no successful run since the last "
                          "scheduled time (with --all: only the jobs that are due)")
    run.add_argument("--wait", type=seconds, default=None, metavar="SECONDS",
                     help="wait up to this long, in all, for every lock the job takes (its "
                          "own, then the store, sync or snapshot lock it works under) "
                          "instead of exiting 11; it replaces the job's lock_wait (default: "
                          "the job's own lock is not waited for, the others as configured)")
    run.add_argument("--date", metavar="YYYY-MM-DD",
                     help="daily and rollup jobs only: run now as on this day (today or "
                          "earlier), to catch up a missed day or to test. A daily job makes "
                          "that day's folder from the sources as they are now (nothing if it "
                          "exists); a rollup job packs the days before it; either keeps the "
                          "folders of that day and later. The status records the real time "
                          "of the run. A malformed or future day, another job type, "
                          "--if-due or --all exits 2 before the job starts")
    run.set_defaults(func=cmd_run)

    _, jbsub = output.group(sub, "jobs", help="configured jobs")
    jl = output.verb(jbsub, "list", help="each job, its schedule, last result and next due")
    jl.set_defaults(func=cmd_jobs_list)
