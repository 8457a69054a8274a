"""Every job's state at a glance, staleness, and a Prometheus textfile.

A job is stale when it has had no successful run within FACTOR x its period (default 2).
A job that never succeeded is measured from when its job file was installed, so a job
whose scheduler never started it goes stale too. Jobs without a schedule never do.
"""

import math
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .. import jobs, schedule
from ..core import fsutil
from ..core.errors import StrongroomError
from ..jobs import config
from . import history, layers

STALE_FACTOR = config.schema.default("status", "stale_factor")  # a status job's default


def _age(text, now):
    return (now - jobs.parse_iso(text)).total_seconds() if text else None


def _mapping(value):
    return value if isinstance(value, dict) else None


def _artifacts(st):
    """A drill's artifacts (None for a job that is no drill): dicts only, as written."""
    found = st.get("artifacts")
    return [a for a in found if isinstance(a, dict)] if isinstance(found, list) else None


def rows(paths, now=None, factor=STALE_FACTOR):
    now = now or datetime.now(UTC)
    out = []
    for name in jobs.job_names(paths.config_dir):
        row = {"job": name, "host": socket.gethostname(),
               "history": history.days(history.read(paths.state_dir, name), now)}
        try:
            job = config.load_job(paths.config_dir, name)
        except StrongroomError as exc:
            # one line: every error of the file, as a status line and a table cell hold it
            error = "; ".join(getattr(exc, "errors", None) or [str(exc)])
            out.append({**row, "valid": False, "error": error, "stale": True})
            continue
        st = jobs.read_status(paths, name)
        spec = job.get("schedule")
        period = schedule.parse(spec).period() if spec else None
        installed = datetime.fromtimestamp(
            (Path(paths.config_dir) / "jobs" / f"{name}.yml").stat().st_mtime, UTC)
        since = jobs.parse_iso(st["last_success"]) if st.get("last_success") else installed
        limit = period * factor if period else None
        stale = bool(limit) and now - since > limit
        is_due, _, next_due = jobs.due(job, st, now)
        out.append({
            **row,
            "valid": True,
            "type": job["type"],
            "schedule": spec or "manual",
            "result": st.get("result", "never run"),
            "finished": st.get("finished"),
            "age_seconds": _age(st.get("finished"), now),
            "duration_seconds": st.get("duration_seconds"),
            "exit_code": st.get("exit_code"),
            "bytes": st.get("bytes", 0),
            "changed": bool(st.get("changed", False)),  # whether the last run changed anything
            "last_success": st.get("last_success"),
            "next_due": jobs.iso(next_due) if next_due else None,
            # a scheduled job with no success since its last slot (or ever): `--if-due`
            # would run it now; next_due is then the slot it fell due at, or now
            "due": bool(spec) and is_due,
            "stale": stale,
            "stale_after_seconds": int(limit.total_seconds()) if limit else None,
            "message": st.get("message"),
            "artifacts": _artifacts(st),  # a drill's restores (drill/base.py Artifact)
            "verify": _mapping(st.get("verify")),  # re-verification of the off-site copy
            "ping": _mapping(st.get("ping")),  # heartbeat deliveries, never the URL
            "protection": layers.protection(job, st, now),  # +i, Object Lock, sealed
        })
    return out


def human_age(seconds):
    if seconds is None:
        return "-"
    delta = timedelta(seconds=int(seconds))
    if delta.days:
        return f"{delta.days}d {delta.seconds // 3600}h"
    if delta.seconds >= 3600:
        return f"{delta.seconds // 3600}h {delta.seconds % 3600 // 60}m"
    return f"{delta.seconds // 60}m"


def _num(v):
    v = float(v)
    return str(int(v)) if v.is_integer() else repr(v)


# The textfile's metrics: (name, help, value of a row)
METRICS = (
    ("strongroom_last_success_timestamp_seconds", "Unix time of the last successful run",
     lambda r: jobs.parse_iso(r["last_success"]).timestamp() if r.get("last_success")
     else 0),
    ("strongroom_last_duration_seconds", "Duration of the last run",
     lambda r: r.get("duration_seconds") or 0),
    ("strongroom_last_exit_code", "Exit code of the last run (-1: never ran)",
     lambda r: -1 if r.get("exit_code") is None else r["exit_code"]),
    ("strongroom_last_bytes", "Bytes written by the last run", lambda r: r.get("bytes", 0)),
    ("strongroom_stale", "1 when the job had no success within its stale limit",
     lambda r: int(bool(r.get("stale")))),
    ("strongroom_job_file_valid", "0 when the job file cannot be read or is invalid",
     lambda r: int(bool(r.get("valid")))),
)
DRILL_VALUES = {"ok": 1, "warning": 0.5}  # any other result is an error: 0


def _number(v):
    """A figure from a status file, or None: the file is input, and a text or a bool in
    a figure's place must not make a sample (nor crash the whole textfile)."""
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return float(v) if ok else None


def _drilled(rows_):
    """{(job, kind, artifact, source): (artifact, drill row)}: each artifact once, from the
    drill that finished last (two drill jobs may restore the same one; a series must not
    appear twice in a textfile). job is the job whose backup was restored."""
    drills = [r for r in rows_ if r.get("valid") and isinstance(r.get("artifacts"), list)]
    out = {}
    for r in sorted(drills, key=lambda r: str(r.get("finished") or "")):
        for a in (a for a in r["artifacts"] if isinstance(a, dict)):
            key = tuple(str(a.get(k) or "") for k in ("job", "kind", "name", "source"))
            out[(key[0] or r["job"], *key[1:])] = (a, r)
    return out


def _drill_samples(rows_):
    found = _drilled(rows_)
    result, rto, last = [], [], {}
    for (job, kind, name, source), (a, r) in found.items():
        labels = {"job": job, "kind": kind, "artifact": name, "source": source}
        result.append((labels, DRILL_VALUES.get(a.get("result"), 0)))
        seconds = _number(a.get("duration_seconds"))
        if seconds is not None:
            rto.append((labels, seconds))
        try:
            when = jobs.parse_iso(r["finished"]).timestamp()
        except (KeyError, TypeError, ValueError):  # not finished, or not a time
            continue
        last[job] = max(last.get(job, 0), when)
    return result, rto, [({"job": j}, t) for j, t in sorted(last.items())]


def _verify_samples(rows_, value):
    out = []
    for r in rows_:
        v = r.get("verify") if r.get("valid") else None
        if isinstance(v, dict) and value(v) is not None:
            out.append(({"job": r["job"], "type": r["type"]}, value(v)))
    return out


def _oldest(v):
    if v.get("oldest_verified_age_seconds") is None:  # no objects: nothing waits
        return 0 if _number(v.get("objects")) == 0 else None
    return _number(v["oldest_verified_age_seconds"])


def _ping_samples(rows_):
    out = []
    for r in rows_:
        p = r.get("ping") if r.get("valid") else None
        if not isinstance(p, dict):
            continue
        last = p.get("end") if isinstance(p.get("end"), dict) else p.get("start")
        if isinstance(last, dict):
            out.append(({"job": r["job"]}, int(last.get("delivered") is not True)))
    return out


# The metrics of drills, re-verification and heartbeats: (name, help, rows -> samples)
DETAIL_METRICS = (
    ("strongroom_drill_result",
     "Result of the last restore drill of an artifact (1 ok, 0.5 warning, 0 error)",
     lambda rs: _drill_samples(rs)[0]),
    ("strongroom_drill_rto_seconds",
     "Seconds the last restore drill of an artifact took (its recovery time)",
     lambda rs: _drill_samples(rs)[1]),
    ("strongroom_drill_last_timestamp_seconds",
     "Unix time the last restore drill of a job's backups finished",
     lambda rs: _drill_samples(rs)[2]),
    ("strongroom_verify_coverage_ratio",
     "Share of the off-site objects verified within the re-verification window",
     lambda rs: _verify_samples(rs, lambda v: _number(v.get("coverage_ratio")))),
    ("strongroom_verify_oldest_age_seconds",
     "Seconds since the least recently verified off-site object was verified",
     lambda rs: _verify_samples(rs, _oldest)),
    ("strongroom_verify_damaged_objects",
     "Off-site objects the last re-verification found damaged or missing",
     lambda rs: _verify_samples(rs, lambda v: len(v["damaged"])
                                if isinstance(v.get("damaged"), list) else None)),
    ("strongroom_ping_failed", "1 when the last heartbeat ping was not delivered",
     _ping_samples),
)
METRIC_NAMES = tuple(name for name, _, _ in METRICS + DETAIL_METRICS)


def _labels(labels):
    return ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())


def prometheus_text(rows_):
    """node_exporter textfile-collector format."""
    every_row = ("strongroom_stale", "strongroom_job_file_valid")
    lines = []
    for metric, help_text, value in METRICS:
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge"]
        for r in rows_:
            # an invalid job file has no type or figures, but still counts as stale and
            # invalid here, so an alert on either metric sees it (it must not just vanish)
            if r.get("valid"):
                labels = f'job="{_label(r["job"])}",type="{_label(r["type"])}"'
            elif metric in every_row:
                labels = f'job="{_label(r["job"])}"'
            else:
                continue
            lines.append(f"{metric}{{{labels}}} {_num(value(r))}")
    for metric, help_text, samples in DETAIL_METRICS:
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge"]
        lines += [f"{metric}{{{_labels(labels)}}} {_num(v)}" for labels, v in samples(rows_)]
    return "\n".join(lines) + "\n"


def _label(value):
    """A label value as the text format escapes it."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def write_prometheus(path, rows_):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fsutil.atomic_write_bytes(path, prometheus_text(rows_).encode(), mode=0o644)


def notify_stale(paths, rows_):
    from .. import notify

    stale = [r for r in rows_ if r["stale"]]
    if not stale:
        return []
    targets, _ = notify.load(paths.config_dir)
    results = []
    for r in stale:
        if not r["valid"]:  # it cannot run until its file is fixed: say why, not "never run"
            r = {**r, "result": f"invalid job file: {r['error']}", "schedule": "unknown"}
        title, body = notify.render("backup_stale", {"job": r["job"], "severity": "error",
                                                     "status": r, "log_tail": []})
        results += notify.send(targets, "backup_stale", "error", title, body)
    return results


