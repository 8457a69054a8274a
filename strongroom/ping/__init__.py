"""Heartbeats: a job's `ping`, so that a host's silence is noticed from outside.

A host that is off, or whose scheduler is broken, cannot report its own silence; a
monitoring service that expects a ping every period can. The runner sends the start
signal once the job's lock is taken and the end signal (success, fail or the exit code)
once the status is written, both with one run id, the end's body the run's log tail.

A heartbeat never changes the job's result: what happened to it is recorded in the status
("ping": {"start": {...}, "end": {...}}) and the job's log, never with the URL, which is a
secret (whoever holds it can report the job as healthy).
"""

import os
import socket
import stat
import uuid

from . import redact, target
from .send import Delivery, Sender
from .target import PingConfigError, Target

__all__ = ["BODY_MAX", "Beat", "Delivery", "PingConfigError", "Sender", "Target", "log_tail",
           "redact", "target", "test_signal"]

# healthchecks.io keeps the first 100 kB of a ping's body: the tail is what is worth it
BODY_MAX = 100_000
_MARK_ROOM = 100  # the "[left out: ...]" line that says the body was cut


def log_tail(lines, limit=BODY_MAX):
    """The run's log lines as UTF-8, at most limit bytes: the newest kept when cut (the
    room left goes to the end of the line before them), under a first line saying what
    was left out."""
    data = [(line + "\n").encode("utf-8", "replace") for line in lines]
    if sum(map(len, data)) <= limit:
        return b"".join(data)
    budget, kept, cut = limit - _MARK_ROOM, [], False
    for item in reversed(data):
        if len(item) > budget:  # the room left goes to this line's end
            if budget > 0:
                kept.append(item[-budget:].decode("utf-8", "ignore").encode("utf-8"))
                cut = True
            break
        kept.append(item)
        budget -= len(item)
    left = len(data) - len(kept)
    words = ([f"{left} earlier line(s) of this run"] if left else []) + (
        ["the start of the line below"] if cut else [])
    return f"[left out: {', and '.join(words)}]\n".encode() + b"".join(reversed(kept))


def _line(which, d):
    if d.delivered:
        return f"heartbeat {which}: delivered" + (f" (attempt {d.attempts})"
                                                  if d.attempts > 1 else "")
    if d.attempts == 0:
        return f"heartbeat {which}: FAILED: {d.error}"
    return (f"heartbeat {which}: FAILED after {d.attempts} attempt"
            f"{'s' if d.attempts != 1 else ''}: {d.error}")


def exposed(job, job_file):
    """A warning line when the job file holds the URL itself and others may read it."""
    spec = job.get("ping")
    if not (isinstance(spec, str) or (isinstance(spec, dict) and "url" in spec)):
        return []
    try:
        mode = os.stat(job_file).st_mode
    except OSError:
        return []
    if not mode & 0o077:
        return []
    return [f"warning: {job_file} holds the ping URL and others may read it (mode "
            f"{stat.S_IMODE(mode):04o}): chmod 600 it, or give the URL in a 0600 url_file"]


class Beat:
    """One run's heartbeat; a job without `ping` gets one that sends nothing. Its methods
    never raise for anything the URL, its file, the network or the endpoint does."""

    def __init__(self, job, job_file=None, sender=None):
        self.job = job["name"]
        self.spec = job.get("ping")
        self.rid = str(uuid.uuid4())  # canonical lowercase form, as healthchecks wants
        self.record = None if self.spec is None else {}
        self.lines = [] if job_file is None else exposed(job, job_file)
        self.sender = sender
        self.target, self.problem = None, None
        if self.spec is None:
            return
        try:
            self.target = target.resolve(self.spec)
        except PingConfigError as exc:
            self.problem = str(exc)
        except Exception as exc:  # a heartbeat's fault must never cost the job its run
            self.problem = f"ping cannot be read: {type(exc).__name__}"

    def start(self):
        if self.record is None:
            return
        if self.target is not None and not self.target.has_start:
            self.record["start"] = None  # an Uptime Kuma push monitor has no start signal
            return
        body = f"{self.job} started on {socket.gethostname()}\n".encode()
        self.record["start"] = self._deliver("start", lambda t: t.start(self.rid, body))

    def end(self, exit_code, result, message, duration_seconds, lines):
        """lines: the run's own log lines, the tail of which is the body."""
        if self.record is None:
            return
        signal = (self.target.signal_for(exit_code) if self.target is not None
                  else "success" if exit_code in (0, 1) else "fail")
        body = log_tail(lines)
        rec = self._deliver("end", lambda t: t.end(signal, self.rid, body,
                                                   f"{result}: {message}",
                                                   round(duration_seconds * 1000)))
        self.record["end"] = {**rec, "signal": signal}

    def _deliver(self, which, build):
        if self.problem:
            d = Delivery(False, 0, self.problem)
        else:
            try:
                d = (self.sender or Sender()).send(build(self.target))
            except Exception as exc:  # as above: said, and the run goes on
                d = Delivery(False, 0, f"heartbeat failed internally: {type(exc).__name__}")
        self.lines.append(_line(which, d))
        return d.as_dict()

    def take_lines(self):
        """The log lines of the signals sent since the last call."""
        out, self.lines = self.lines, []
        return out

    def failed(self):
        """(signal, error) of each signal that was not delivered."""
        return [(which, r["error"]) for which, r in (self.record or {}).items()
                if r is not None and not r["delivered"]]


def test_signal(job, signal="success", sender=None):
    """`strongroom ping JOB`: (target, Delivery) of one signal sent now with a fresh run id;
    PingConfigError when the job has no usable ping."""
    if job.get("ping") is None:
        raise PingConfigError(f"job {job['name']} has no ping (add `ping: URL` or "
                              "`ping: {url_file: FILE}` to its job file)")
    tgt = target.resolve(job["ping"])
    rid = str(uuid.uuid4())
    body = (f"strongroom ping: a {signal} signal sent by hand for job {job['name']} on "
            f"{socket.gethostname()}\n").encode()
    if signal == "start":
        if not tgt.has_start:
            raise PingConfigError(f"job {job['name']}: an Uptime Kuma push monitor has no "
                                  "start signal (try --signal success or fail)")
        request = tgt.start(rid, body)
    else:
        request = tgt.end(signal, rid, body, f"{signal}: sent by `strongroom ping`", 0)
    return tgt, (sender or Sender()).send(request)
