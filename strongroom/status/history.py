"""Every job's run history: one JSON line per finished run in <state>/history/JOB.jsonl.

The runner appends {"started", "finished", "result", "exit_code", "duration_seconds"}
after each run and keeps the last KEEP lines. The report reads it back as one result per
day. A line that is not a whole record (a run killed while appending, or anything else
someone wrote there) is skipped, never trusted: the file is input like any other.
"""

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ..core import fsutil

KEEP = 400  # a checkpoint job every 15 minutes fills ~4 days; a daily job over a year
MAX_READ = 1 << 20  # what is read of a file; 400 real lines are ~50 KiB
FIELDS = ("started", "finished", "result", "exit_code", "duration_seconds")
DAY_RESULTS = ("ok", "warning", "error")  # a day's worst result; "none": no run that day


def path(state_dir, job):
    return Path(state_dir) / "history" / f"{job}.jsonl"


def record(status):
    """The history line of a finished run, from its status."""
    return {k: status.get(k) for k in FIELDS}


def append(state_dir, job, entry, keep=KEEP):
    """Append one run; when the file would hold more than keep lines, rewrite it
    atomically with the last keep (the job's lock makes this run the only writer)."""
    p = path(state_dir, job)
    p.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(entry, sort_keys=True, ensure_ascii=True) + "\n"
    try:
        old = p.read_bytes()
    except FileNotFoundError:
        old = b""
    # a torn last line (a run killed mid-write) must not swallow this one
    lead = b"\n" if old and not old.endswith(b"\n") else b""
    lines = old.count(b"\n") + bool(lead)
    if lines + 1 <= keep:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(lead + line.encode())
            fh.flush()
            os.fsync(fh.fileno())
        return
    kept = (old + lead).splitlines(keepends=True)[-(keep - 1):] if keep > 1 else []
    fsutil.atomic_write_bytes(p, b"".join(kept) + line.encode(), mode=0o644)


def _valid(entry):
    if not isinstance(entry, dict) or not isinstance(entry.get("result"), str):
        return False
    try:
        parse(entry.get("finished"))
    except (TypeError, ValueError):
        return False
    return True


def parse(text):
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def read(state_dir, job):
    """The runs recorded for job, oldest first; lines that are not a run are skipped."""
    p = path(state_dir, job)
    try:
        with open(p, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            fh.seek(max(0, size - MAX_READ))
            data = fh.read(MAX_READ)
    except OSError:
        return []
    lines = data.split(b"\n")
    if size > MAX_READ:
        lines = lines[1:]  # the first one was cut by the seek
    out = []
    for raw in lines:
        try:
            entry = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            continue
        if _valid(entry):
            out.append(entry)
    return out


def day_result(result):
    """A run's result as a day cell says it: incomplete, locked or killed is an error."""
    return result if result in ("ok", "warning") else "error"


def days(entries, now, count=30):
    """count UTC days ending today, oldest first: {day, result, runs, ok, warning, error},
    result being the day's worst run ("none" when it had no run)."""
    today = now.astimezone(UTC).date()
    first = today - timedelta(days=count - 1)
    cells = {first + timedelta(days=i): dict.fromkeys(DAY_RESULTS, 0) for i in range(count)}
    for e in entries:
        d = parse(e["finished"]).date()
        if d in cells:
            cells[d][day_result(e["result"])] += 1
    out = []
    for d, n in cells.items():
        worst = next((r for r in reversed(DAY_RESULTS) if n[r]), "none")
        out.append({"day": d.isoformat(), "result": worst, "runs": sum(n.values()), **n})
    return out
