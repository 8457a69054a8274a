"""The job runner: lock -> run -> status -> log, for the schedulers and for people.

`strongroom run JOB` takes the job's lock (PID inside; a dead owner's lock is taken
over), runs the job, writes <state>/status/JOB.json atomically and appends to
<log>/JOB.log, which rotates by size. `--if-due` runs only when there has been no
successful run since the most recent scheduled time, so cron and anacron together never
run a job twice in a period, and a failed run leaves the job due.
"""

import contextlib
import io
import json
import os
import signal
import socket
import time
import traceback
from contextlib import redirect_stdout
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .. import bundles, drill, notify, reverify, schedule
from ..bundles import report
from ..core import fsutil, remote, s3api
from ..core.errors import (
    ERROR,
    INCOMPLETE,
    LOCKED,
    OK,
    WARNING,
    EmptySource,
    LockedError,
    StrongroomError,
    Terminated,
)
from ..core.lock import Lock, wait_until
from . import config

RESULTS = {OK: "ok", WARNING: "warning", ERROR: "error", INCOMPLETE: "incomplete",
           LOCKED: "locked"}
LOG_MAX_BYTES = config.schema.default("log", "max_bytes")  # the defaults of a job's `log`
LOG_KEEP = config.schema.default("log", "keep")


def iso(dt):
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text):
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def local_naive(dt):
    """Schedules speak the host's local wall-clock time, as cron, systemd and launchd do."""
    return dt.astimezone().replace(tzinfo=None)


class Paths:
    def __init__(self, config_dir, state_dir, log_dir):
        self.config_dir, self.state_dir, self.log_dir = (Path(config_dir), Path(state_dir),
                                                         Path(log_dir))

    def status(self, job):
        return self.state_dir / "status" / f"{job}.json"

    def lock(self, job):
        return self.state_dir / "locks" / f"{job}.lock"

    def log(self, job):
        return self.log_dir / f"{job}.log"


def read_status(paths, job):
    try:
        return json.loads(paths.status(job).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


job_names = config.job_names


# --- when a job is due ----------------------------------------------------------------------


def due(job, status, now):
    """(is_due, reason, next_due) from the last *successful* run's start."""
    spec = job.get("schedule")
    last = status.get("last_success_started")
    if not spec:
        return True, "no schedule: runs whenever asked", None
    sched = schedule.parse(spec)
    if not last:
        return True, "never succeeded", now
    last_dt = parse_iso(last)
    if sched.is_interval:
        # a run started by the scheduler a few seconds late must not skip the next slot
        slack = timedelta(seconds=min(60, sched.interval / 10))
        next_due = last_dt + timedelta(seconds=sched.interval) - slack
        return now >= next_due, f"last success {last}", next_due
    nxt = sched.next_times(local_naive(last_dt), 1)
    next_due = nxt[0].astimezone(UTC) if nxt else None
    prev = sched.previous_time(local_naive(now))
    is_due = prev is not None and local_naive(last_dt) < prev
    return is_due, f"last success {last}", next_due


# --- running ----------------------------------------------------------------------------


def rotate_log(path, max_bytes, keep):
    """path -> path.1 -> ... -> path.<keep>; what was path.<keep> is dropped."""
    try:
        if path.stat().st_size < max_bytes:
            return
    except FileNotFoundError:
        return
    generation = [path] + [path.with_name(f"{path.name}.{i}") for i in range(1, keep + 1)]
    for i in range(keep - 1, -1, -1):
        if generation[i].exists():
            os.replace(generation[i], generation[i + 1])


def _log(paths, job, lines, max_bytes, keep):
    path = paths.log(job)
    path.parent.mkdir(parents=True, exist_ok=True)
    rotate_log(path, max_bytes, keep)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    with open(path, "a", encoding="utf-8") as fh:
        for line in lines:
            fh.write(f"{stamp} {line}\n")


def run_bundle_sync(job, paths):
    opts = bundles.options_from(job["options"], paths.config_dir,
                                ledger=reverify.ledger_for(paths, job))
    results, code = bundles.sync(job["options"]["root"], job["options"]["store"], opts)
    counts = {"repositories": len(results)}
    for r in results:
        counts[r.action] = counts.get(r.action, 0) + 1
    text = report.sync_table(results, opts.remote)
    summary = report.sync_summary(results, job["options"]["root"])
    return {
        "exit_code": code,
        "message": summary,
        "bytes": sum(r.bytes_written for r in results),
        "counts": counts,
        "changed": any(r.changed for r in results),
        "output": (text + "\n" if text else "") + summary,
    }


def run_restore_drill(job, paths):
    opts = job.get("options") or {}
    plan_list, notes = drill.plans(paths.config_dir, paths.state_dir, opts.get("jobs"),
                                   config.schema.get(job, "source"),
                                   identity=config.schema.get(job, "identity"))
    scratch = opts.get("scratch") or paths.state_dir / "drill"
    artifacts, code, summary = drill.run(plan_list, scratch, config.schema.get(job, "lock_wait"))
    lines = ([drill.summary_table(artifacts)] if artifacts else []) + notes + [summary]
    return {
        "exit_code": code,
        "message": summary,
        "counts": {"restored": sum(a.result != "error" for a in artifacts),
                   "failed": sum(a.result == "error" for a in artifacts)},
        "artifacts": [a.as_dict() for a in artifacts],
        "output": "\n".join(lines),
    }


def offsite(paths, options, job=None):
    """The upload path every job's off-site copy goes through (strongroom upload); with
    the job, what it proves goes into the job's re-verification ledger."""
    from ..upload import Upload
    from ..upload.seal import for_options

    shared = config.schema.OFFSITE.defaults()  # retries, low_level_retries
    rc = remote.Rclone(remote.rclone_config(options.get("rclone_config"), paths.config_dir),
                       bwlimit=options.get("bwlimit"),
                       retries=options.get("retries", shared["retries"]),
                       low_level_retries=options.get("low_level_retries",
                                                     shared["low_level_retries"]))
    return Upload(rc, journal_dir=paths.state_dir / "uploads",
                  ledger=reverify.ledger_for(paths, job) if job else None,
                  seal=for_options(options, paths.config_dir, paths.state_dir / "uploads"))


def check_sealing(job, paths):
    """A job with encrypt_to and a remote: its recipients file is read before the job does
    anything, so one that is missing or does not parse fails the run (file and line said)
    with nothing made or sent."""
    from ..upload.seal import for_options

    o = job.get("options") or {}
    seal = for_options(o, paths.config_dir)
    if seal is not None and (o.get("remote") or job["type"] == "db"):
        seal.check()


def check_lock(job, paths):
    """A job with object_lock_days: its remote must be S3 with keys, said before the job does
    anything. Returns the job's ObjectLock (core/s3api.py), or None."""
    o = job.get("options") or {}
    lock = s3api.ObjectLock.for_options(o)
    if lock is not None and o.get("remote"):
        lock.check_remote(remote.Rclone(remote.rclone_config(o.get("rclone_config"),
                                                             paths.config_dir)), o["remote"])
    return lock


def run_snapshot(job, paths):
    """Take a snapshot; then, when keep_last and keep_days are set, prune."""
    from .. import snapshots
    from ..snapshots.take import take

    o = dict(job["options"])
    rep = take(o)
    lines = [f"snapshot {rep['id']}: {rep['counts']['files']} files, archive "
             f"{rep['bytes']['archive']} bytes, immutable: {rep['applied']}"]
    extra = {"snapshot": {"id": rep["id"], "path": rep["path"], "immutable": rep["applied"],
                          "warning": rep.get("warning")}}
    code = WARNING if rep.get("warning") else OK
    if rep.get("warning"):
        lines.append(f"warning: {rep['warning']}")
    if o.get("remote"):  # the off-site copy: immutable, proven by hash
        up = offsite(paths, o, job).run(rep["path"], remote.join(o["remote"], rep["id"]),
                                   immutable=True)
        extra["offsite"] = {k: up[k] for k in ("dest", "files", "bytes_moved", "verified_by")}
        if up.get("lock"):
            extra["offsite"]["lock"] = up["lock"]
        lines.append(f"copied off-site to {up['dest']}, verified by {up['verified_by']}")
    if o.get("keep_last") and o.get("keep_days") is not None:
        pr = snapshots.prune(o["dest"], o["keep_last"], o["keep_days"])
        extra["prune"] = pr
        lines.append(f"pruned {len(pr['deleted'])}, kept {len(pr['kept'])}")
        lines += [f"{i}: {m}" for i, m in pr.get("in_use", {}).items()]
        if pr["problems"]:
            code = ERROR
            lines += pr["problems"]
    return {"exit_code": code, "message": lines[-1] if code != OK else lines[0],
            "changed": True, "extra": extra, "bytes": rep["bytes"]["archive"],
            "counts": rep["counts"], "output": "\n".join(lines)}


def run_checkpoint(job, paths):
    """Save uncommitted work; then, when keep_days is set, drop old checkpoints."""
    from ..checkpoints.take import take_checkpoint

    rep = take_checkpoint(dict(job["options"]))
    msg = (f"checkpoint {rep['name']}: {len(rep['files'])} file(s), "
           f"{len(rep['deleted'])} deletion(s)" if rep["saved"] else rep["reason"])
    lines = [msg] + ([f"warning: {rep['warning']}"] if rep.get("warning") else [])
    if rep.get("prune", {}).get("deleted"):
        lines.append(f"deleted {len(rep['prune']['deleted'])} old checkpoint(s)")
    lines += [f"{n}: {m}" for n, m in sorted(rep.get("prune", {}).get("in_use", {}).items())]
    return {"exit_code": WARNING if rep.get("warning") else OK,
            "message": lines[1] if rep.get("warning") else msg, "changed": rep["saved"],
            "extra": {"checkpoint": {k: rep.get(k) for k in ("name", "path", "head",
                                                              "saved", "warning")}},
            "bytes": rep.get("bytes", 0), "counts": {"files": len(rep["files"])},
            "output": "\n".join(lines)}


def _rollup_job(job, paths, pack):
    """The daily and rollup jobs: one at a time per dest, so they queue instead of racing."""
    from .. import rollups

    o = job["options"]
    dest = Path(o["dest"])
    dest.mkdir(parents=True, exist_ok=True)
    lines, extra, changed, empty = [], {}, False, None
    day = rollups.dated_day()  # `strongroom run JOB --date D`; None: today
    if day:
        lines.append(f"run as on {day.isoformat()} (--date)")
        extra["date"] = day.isoformat()
    with Lock(dest / ".rollups.lock", f"daily folders in {dest}").acquire(
            config.schema.get(job, "lock_wait")):
        if pack:
            try:
                made = rollups.make_rollup(dest, config.schema.get(job, "days"), today=day)
            except EmptySource as exc:  # said, and the uploads and retiring below still run
                made, empty = [], exc
            lines += [f"packed {len(p)} day(s) into {n}" for n, p in made] or [
                str(empty) if empty else "nothing to roll up"]
            name, packed = made[-1] if made else (None, [])  # the newest, as before
            extra["rollup"] = {"name": name, "days": packed}
            extra["rollups"] = [{"name": n, "days": p} for n, p in made]
        else:
            try:
                doc = rollups.make_day(o["sources"], dest, o.get("db") or [],
                                       o.get("exclude") or [], today=day)
            except EmptySource as exc:  # said, and earlier days are still sent and retired
                doc, empty = None, exc
            lines.append(str(empty) if empty
                         else f"day folder {doc['day']}: {len(doc['files'])} file(s)" if doc
                         else f"{day.isoformat()} has its folder already (here, on the "
                              "remote or in a rollup)" if day
                         else "today's folder exists already")
            extra["day"] = doc and {"day": doc["day"], "files": len(doc["files"])}
        changed = bool(extra.get("rollup", {}).get("name") or extra.get("day"))
        if o.get("remote"):
            sent = rollups.upload_pending(dest, offsite(paths, o, job), o["remote"])
            if sent:
                lines.append(f"uploaded and verified: {', '.join(sent)}")
            extra["uploaded"] = sent
            changed = changed or bool(sent)
        # the most conservative delete_days set for this dest, by this job or the other
        # (see rollups.delete_days_for): neither job's default undoes the other's setting
        policy, by = rollups.delete_days_for(dest, job["name"], o.get("delete_days"))
        if by:
            lines.append(f"delete_days: {policy}, as job {by} has it for {dest} (this "
                         f"job: {o.get('delete_days') or rollups.DEFAULT_POLICY}"
                         f"{'' if o.get('delete_days') else ', by default'})")
        extra["delete_days"] = {"policy": policy, "from": by or job["name"]}
        # keep_rollups likewise (rollups.keep_rollups_for): the largest set for this dest
        keep, kby = rollups.keep_rollups_for(dest, job["name"], o.get("keep_rollups"))
        if kby:
            own = o.get("keep_rollups")
            lines.append(f"keep_rollups: {keep}, as job {kby} has it for {dest} (this job: "
                         + (f"{own})" if own is not None else
                            f"{rollups.DEFAULT_KEEP_ROLLUPS}, by default)"))
        extra["keep_rollups"] = {"count": keep, "from": kby or job["name"]}
        gone = rollups.retire(dest, policy, bool(o.get("remote")), keep,
                              today=day, made=[n for n, _ in made] if pack else ())
        lines += rollups.retired_lines(dest, gone, bool(o.get("remote")), keep)
        lines += gone.messages()  # what a restore was reading stays until the next run
        extra["deleted"] = list(gone)
        if gone.in_use:
            extra["in_use"] = gone.in_use
    return {"exit_code": WARNING if empty else OK, "message": "; ".join(lines),
            "changed": changed or bool(gone), "extra": extra, "output": "\n".join(lines)}


def run_daily(job, paths):
    return _rollup_job(job, paths, pack=False)


def run_rollup(job, paths):
    return _rollup_job(job, paths, pack=True)


def run_bisync(job, paths, resync=False, force=False, dry_run=False):
    from .. import bisync

    o = job["options"]
    rc = remote.Rclone(remote.rclone_config(o.get("rclone_config"), paths.config_dir))
    out = bisync.run(o["local"], o["remote"], paths.state_dir / "bisync" / job["name"], rc,
                     max_delete=config.schema.get(job, "max_delete"),
                     check_access=config.schema.get(job, "check_access"),
                     resync=resync, force=force, dry_run=dry_run,
                     lock_wait=config.schema.get(job, "lock_wait"))
    msg = (f"{'resync' if out['resync'] else 'bisync'}: {out['copied']} copied, "
           f"{out['deleted']} deleted")
    if out["conflicts"]:
        msg += f"; {len(out['conflicts'])} conflict(s) kept as ..path1/..path2: " + \
            ", ".join(out["conflicts"][:5])
    return {"exit_code": WARNING if out["conflicts"] else OK, "message": msg,
            "changed": out["changed"], "extra": {"bisync": out}, "output": msg}


def run_restic(job, paths):
    from .. import restic

    o = job["options"]
    code, rep = restic.run_job(o, paths.state_dir, job["name"],
                               remote.rclone_config(o.get("rclone_config"), paths.config_dir))
    msg = (f"snapshot {rep['snapshot']}: {rep['files_new']} new, {rep['files_changed']} "
           f"changed, {rep['bytes_added']} bytes added; kept "
           f"{config.schema.get(job, 'keep_weekly')} weekly; data subset "
           f"{rep['checked_subset']} re-read and checked")
    if rep["incomplete"]:
        msg = "some files could not be read (see the log); " + msg
    return {"exit_code": code, "message": msg, "changed": True, "extra": {"restic": rep},
            "bytes": rep["bytes_added"], "output": msg}


def run_db_backup(job, paths):
    """The scheduled run is a tick without operations: it fires on the hours trigger."""
    from ..dbversions.settings import settings, tick_text

    d = settings(job["options"], paths.config_dir, paths.state_dir)
    d.ledger = reverify.ledger_for(paths, job)
    with d.lock(600):
        out = d.tick(0)
    msg = tick_text(out) or f"not due; {out['ops']} operation(s) pending"
    # a due run that found the newest version already holding this content uploaded nothing
    uploaded = bool(out["backup"]) and not out["backup"]["unchanged"]
    return {"exit_code": OK, "message": msg, "changed": uploaded,
            "extra": {"db": {"key": out["backup"] and out["backup"]["key"],
                             "pending_ops": out["ops"]}}, "output": msg}


def run_git_sync(job, paths):
    from .. import sync

    o = job["options"]
    s = sync.Settings(repo=Path(o["repo"]).expanduser(), role=o["role"],
                         timeout=float(config.schema.get(job, "timeout")),
                         remote=config.schema.get(job, "remote"), branch=o.get("branch"),
                         include=list(o.get("include") or []),
                         exclude=list(o.get("exclude") or []),
                         policies=dict(o.get("policies") or {}))
    sync.check_repo(s)
    sync.install_policies(s)
    result = (sync.push if o["direction"] == "push" else sync.pull)(s)
    extra = {"sync": {k: result.get(k) for k in ("operation", "head", "conflicts",
                                                  "kept_side_by_side") if k in result}}
    if result.get("rollback"):
        extra["rollback"] = result["rollback"]  # notified as rollback_done
    return {"exit_code": sync.exit_code(result),
            "message": result["message"] + (f"; {result['rollback']}"
                                             if result.get("rollback") else ""),
            "changed": bool(result.get("changed")),
            "extra": extra,
            "output": f"{result['operation']}: {result['result']}: {result['message']}"
                      + (f"\n{result['rollback']}" if result.get("rollback") else "")
                      + (f"\n{result['recovered']}" if result.get("recovered") else "")}


def run_status_check(job, paths):
    """Every job's staleness; alert each stale job once, then every remind_hours."""
    from .. import status as status_mod

    opts = job.get("options") or {}
    rows = [r for r in status_mod.rows(paths, factor=config.schema.get(job, "stale_factor"))
            if r["job"] != job["name"]]
    if opts.get("prometheus"):
        status_mod.write_prometheus(opts["prometheus"], rows)
    if opts.get("html"):  # the page a person opens; this job's own row is on it too
        from ..status import report

        report.write(opts["html"], status_mod.rows(
            paths, factor=config.schema.get(job, "stale_factor")), paths.config_dir)
    now = datetime.now(UTC)
    remind = timedelta(hours=config.schema.get(job, "remind_hours"))
    alerted = read_status(paths, job["name"]).get("stale_alerted", {})
    stale = [r for r in rows if r["stale"]]
    due_alert = [r for r in stale if r["job"] not in alerted or (
        remind and now - parse_iso(alerted[r["job"]]) >= remind)]
    sent = status_mod.notify_stale(paths, due_alert)
    # a job that recovers is forgotten, so it is alerted again the next time it goes stale
    alerted = {r["job"]: alerted[r["job"]] for r in stale if r["job"] in alerted}
    alerted.update({r["job"]: iso(now) for r in due_alert})
    names = ", ".join(r["job"] for r in stale)
    message = (f"{len(stale)} of {len(rows)} jobs stale: {names}" if stale
               else f"none of {len(rows)} jobs stale")
    lines = [f"stale alert for {n['target']}: "
             + ("delivered" if n["delivered"] else "FAILED") for n in sent]
    # a job file that cannot be read is an error of the host's configuration, said by
    # name; every other job was still checked above
    invalid = [r for r in rows if not r["valid"]]
    if invalid:
        message += "; invalid job files: " + "; ".join(r["error"] for r in invalid)
    return {
        "exit_code": ERROR if invalid else WARNING if stale else OK,
        "message": message,
        "counts": {"jobs": len(rows), "stale": len(stale), "alerted": len(due_alert),
                   "invalid": len(invalid)},
        "extra": {"stale_alerted": alerted, "stale_alerts": sent},
        "output": "\n".join(lines + [message]),
    }


def _warn(notes):
    import sys

    for note in notes:
        print(f"strongroom: warning: {note}", file=sys.stderr)


def _registry():
    """Job type -> its run function and the rest (strongroom/jobs/registry.py)."""
    from . import registry

    return registry


def _on_signal(signum, _frame):
    raise Terminated(signum)


def run(paths, name, if_due=False, wait=None, now=None):
    """Run one job. Returns (exit_code, status dict, human output)."""
    notes = []  # deprecation warnings (an old type name): the log's and stderr's
    job = config.load_job(paths.config_dir, name, notes=notes)
    prev = read_status(paths, name)
    now = now or datetime.now(UTC)
    if if_due:
        is_due, why, next_due = due(job, prev, now)
        if not is_due:
            when = iso(next_due) if next_due else "unknown"
            return OK, prev, f"{name}: not due ({why}; next due {when})"
    for d in (paths.status(name).parent, paths.lock(name).parent):
        d.mkdir(parents=True, exist_ok=True)
    log_cfg = job.get("log") or {}
    max_bytes = log_cfg.get("max_bytes", LOG_MAX_BYTES)
    keep = log_cfg.get("keep", LOG_KEEP)
    _warn(notes)
    # --wait is one deadline for every lock the run takes: the job's own here, then any
    # store, sync or snapshot lock the job takes inside (a manual `bundle sync` or a drill
    # holding the store must not make a waiting run exit 11 at once)
    # (without --wait: the job's own lock is not waited for, and each lock inside keeps
    # its job's lock_wait or its default)
    deadline = None if wait is None else time.monotonic() + max(wait, 0.0)
    try:
        lock = Lock(paths.lock(name), f"job {name}").acquire(wait or 0.0)
    except LockedError as exc:
        _log(paths, name, [f"not started: {exc}"], max_bytes, keep)
        raise
    # The heartbeat's start once the lock is ours (a run that exits 11 never started), and
    # before our signal handlers: a SIGTERM while a slow endpoint is tried ends the run
    # before it began, and the heartbeat can never swallow a signal meant for the job.
    from .. import ping

    beat = ping.Beat(job, paths.config_dir / "jobs" / f"{name}.yml")
    beat.start()
    started = datetime.now(UTC)
    t0 = time.monotonic()
    log_lines = [f"run started (pid {os.getpid()})"] + [f"warning: {n}" for n in notes]
    if lock.previous_owner:
        log_lines.append(f"took over the lock of PID {lock.previous_owner}, which is gone")
    log_lines += beat.take_lines()  # the heartbeat's start
    # Our handlers go in inside the try: a signal that lands at once (even while the
    # `running` status is being written, the moment a supervisor sees the run) is always
    # caught below and leaves an honest status, never a traceback and `running: true`.
    old_handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    objlock = None
    try:
        for s in old_handlers:
            signal.signal(s, _on_signal)
        running = {**prev, "running": True, "pid": os.getpid(),
                   "current_started": iso(started)}
        fsutil.atomic_write_json(paths.status(name), running)
        check_sealing(job, paths)
        objlock = check_lock(job, paths)
        buf = io.StringIO()
        # every upload of the run, on whichever path, locks what it proved (object_lock_days)
        with redirect_stdout(buf), s3api.locking(objlock), (
                wait_until(deadline) if deadline is not None else contextlib.nullcontext()):
            outcome = _registry().get(job["type"]).run(job, paths)
            outcome = reverify.after_run(job, paths, outcome, now)  # remote copies re-read
    except Terminated as exc:
        said = str(exc)
        if getattr(exc, "rollback", None):  # a sync put its side back before it ended
            said += f"; {exc.rollback}"
        outcome = {"exit_code": 128 + exc.signum, "message": said, "output": said}
    except StrongroomError as exc:
        outcome = {"exit_code": exc.exit_code, "message": str(exc), "output": str(exc)}
    except Exception as exc:  # a bug must still leave a status and a log saying so
        log_lines += traceback.format_exc().splitlines()
        outcome = {"exit_code": ERROR, "message": f"internal error: {exc!r}",
                   "output": f"internal error: {exc!r}"}
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
    code = outcome["exit_code"]
    finished = datetime.now(UTC)
    status = {
        "job": name,
        "type": job["type"],
        "host": socket.gethostname(),
        "schedule": job.get("schedule"),
        "running": False,
        "started": iso(started),
        "finished": iso(finished),
        "duration_seconds": round(time.monotonic() - t0, 3),
        "result": RESULTS.get(code, "error"),
        "exit_code": code,
        "bytes": outcome.get("bytes", 0),
        "counts": outcome.get("counts", {}),
        "changed": outcome.get("changed", False),
        "message": outcome["message"],
        "last_success": prev.get("last_success"),
        "last_success_started": prev.get("last_success_started"),
        "consecutive_failures": 0,
    }
    if "artifacts" in outcome:  # restore drills: each artifact's result and duration
        status["artifacts"] = outcome["artifacts"]
    status.update(outcome.get("extra", {}))
    if objlock is not None:  # until when the newest off-site copy is locked
        status["object_lock"] = objlock.record(prev.get("object_lock"))
    from .. import rollups

    # a run as on another day (--date) catches that day up; it is not today's scheduled
    # run, so --if-due and staleness still wait for one
    if code in (OK, WARNING):
        if rollups.dated_day() is None:
            status["last_success"] = iso(finished)
            status["last_success_started"] = iso(started)
        else:  # a good catch-up run is no failure, but leaves the count as it was
            status["consecutive_failures"] = prev.get("consecutive_failures", 0)
    else:
        status["consecutive_failures"] = prev.get("consecutive_failures", 0) + 1
    _, _, next_due = due(job, status, finished)
    status["next_due"] = iso(next_due) if next_due else None
    output = outcome.get("output", "")
    log_lines += output.splitlines()
    log_lines.append(f"run finished: result={status['result']} exit={code} "
                     f"duration={status['duration_seconds']}s bytes={status['bytes']}")
    _log(paths, name, log_lines, max_bytes, keep)
    # The outcome is recorded before anyone is told: a SIGTERM or SIGHUP while a slow
    # target is being reached (our handlers are gone by now) must not leave the status
    # saying `running` with the previous run's result.
    fsutil.atomic_write_json(paths.status(name), {**status, "notifications": "pending"})
    from ..status import history

    try:  # the report's day strip; a full disk here must not cost the run its status
        history.append(paths.state_dir, name, history.record(status))
    except OSError as exc:
        _log(paths, name, [f"warning: run history not written: {exc}"], max_bytes, keep)
    # The heartbeat's end once the log and status are written (a slow endpoint cannot leave
    # the status `running`), and before the notifications: the monitor hears of the run
    # even when a notification target is slow or down. Its record goes into the status;
    # a failed ping never changes the job's result.
    beat.end(code, status["result"], status["message"], status["duration_seconds"],
             log_lines)
    if beat.record is not None:
        status["ping"] = beat.record
        fsutil.atomic_write_json(paths.status(name), {**status, "notifications": "pending"})
        _log(paths, name, beat.take_lines(), max_bytes, keep)
        if beat.failed():
            output += "\nHeartbeat failed: " + "; ".join(f"{w}: {e}" for w, e in beat.failed())
    # After the log (a failure message quotes its tail), then the status again (which
    # records the deliveries). A failed delivery never changes the job's result.
    try:
        sent = notify.notify_job(paths.config_dir, job, status, prev.get("result"),
                                 paths.log(name))
    except Exception as exc:  # telling someone must never cost the job its status
        sent = [{"target": "-", "event": "-", "delivered": False,
                 "error": f"notification failed internally: {type(exc).__name__}"}]
    status["notifications"] = sent
    fsutil.atomic_write_json(paths.status(name), status)
    failed = [n for n in sent if not n["delivered"]]
    if sent:
        _log(paths, name, [f"notification {n['event']} to {n['target']}: "
                           + ("delivered" if n["delivered"] else
                              "FAILED" + (f" ({n['error']})" if n.get("error") else ""))
                           for n in sent], max_bytes, keep)
    if failed:
        output += "\nNotification failed: " + ", ".join(n["target"] for n in failed)
    lock.release()
    return code, status, output


def list_jobs(paths, now=None):
    now = now or datetime.now(UTC)
    rows = []
    for name in job_names(paths.config_dir):
        row = {"job": name}
        try:
            job = config.load_job(paths.config_dir, name)
        except StrongroomError as exc:
            rows.append({**row, "valid": False, "error": str(exc)})
            continue
        st = read_status(paths, name)
        is_due, why, next_due = due(job, st, now)
        running = bool(st.get("running")) and fsutil.pid_alive(st.get("pid") or 0)
        rows.append({
            **row,
            "valid": True,
            "type": job["type"],
            "schedule": job.get("schedule") or "manual",
            "last_result": ("running" if running else
                            ("killed?" if st.get("running") else st.get("result", "never run"))),
            "last_run": st.get("finished"),
            "last_success": st.get("last_success"),
            "next_due": iso(next_due) if next_due else None,
            # a manual job runs whenever asked; calling it due would read as overdue
            "due": bool(job.get("schedule")) and is_due,
        })
    return rows
