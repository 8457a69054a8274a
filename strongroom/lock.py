"""One run at a time: an flock()ed file that records its owner's PID.

The kernel drops an flock when its owner dies, so a lock left by a killed run
is taken over without guessing from ages or timestamps; the PID inside is for
people and for the message of the run that has to wait.

A run's --wait is one deadline for every lock it takes: `strongroom run JOB --wait N`
takes the job's own lock, then whatever store, sync, snapshot or database lock the job
takes deep inside; `wait_until` makes each of those wait for what is left of the N
seconds without threading a deadline through every job handler.
"""

import contextvars
import errno
import fcntl
import json
import os
import socket
import stat
import time
from contextlib import contextmanager

from .errors import LockedError, StrongroomError

# a time.monotonic() value every acquire() waits for at least (None: only its own wait)
_DEADLINE = contextvars.ContextVar("strongroom_lock_deadline", default=None)


@contextmanager
def wait_until(deadline):
    """Inside, every Lock.acquire waits until `deadline` (time.monotonic()) if its own wait
    is shorter: a job's configured lock_wait still applies when it is the longer one."""
    outer = _DEADLINE.get()
    token = _DEADLINE.set(deadline if outer is None else max(outer, deadline))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


class Lock:
    def __init__(self, path, what):
        self.path = str(path)
        self.what = what
        self.fd = None
        self.previous_owner = None  # PID of a dead owner whose lock we took over

    @staticmethod
    def _owner(fd):
        """Who the lock file says holds it (read from the open file, never by name)."""
        try:
            owner = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
            return owner if isinstance(owner, dict) else {}
        except (OSError, ValueError):
            return {}

    def _open(self):
        """The lock file itself, never what a link in its place points at (a planted
        link would have the lock write, and truncate, any file the user can write)."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                         | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise StrongroomError(f"lock file {self.path} is a symlink; refusing to "
                                      "write through it (remove it)") from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise StrongroomError(f"lock file {self.path} is not a regular file; remove it")
        return fd

    def acquire(self, wait=0.0):
        fd = self._open()
        started = time.monotonic()
        deadline = started + max(wait or 0.0, 0.0)
        outer = _DEADLINE.get()
        if outer is not None:
            deadline = max(deadline, outer)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                now = time.monotonic()
                if now >= deadline:
                    owner = self._owner(fd)
                    os.close(fd)
                    pid = owner.get("pid", "unknown")
                    # what this acquire waited: under a run's deadline, less than its --wait
                    spent = round(now - started, 1)
                    waited = f" after waiting {spent:g}s" if spent else ""
                    raise LockedError(
                        f"{self.what} is locked by PID {pid} on {owner.get('host', '?')} "
                        f"(since {owner.get('since', '?')}){waited}; "
                        f"lock file {self.path}. Wait for it, or use --wait SECONDS."
                    ) from None
                time.sleep(min(0.1, deadline - now))
        old = self._owner(fd)
        if old.get("pid") and old.get("pid") != os.getpid():
            self.previous_owner = old.get("pid")
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        self.fd = fd
        return self

    def release(self):
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
