"""One run at a time: an flock()ed file that records its owner's PID.

The kernel drops an flock when its owner dies, so a lock left by a killed run
is taken over without guessing from ages or timestamps; the PID inside is for
people and for the message of the run that has to wait.

A run's --wait is one deadline for every lock it takes: `strongroom run JOB --wait N`
takes the job's own lock, then whatever store, sync, snapshot or database lock the job
takes deep inside; `wait_until` makes each of those wait for what is left of the N
seconds, no more and no less, without threading a deadline through every job handler.
The command line is the strongest setting: a job's own lock_wait, or a lock's default
(a rollup queueing behind a daily job for up to 600 s), applies only without --wait.
"""

import contextlib
import contextvars
import errno
import fcntl
import json
import os
import socket
import stat
import sys
import time
from contextlib import contextmanager

from .errors import LockedError, StrongroomError

# a time.monotonic() value every acquire() waits until, instead of its own wait (None:
# its own wait)
_DEADLINE = contextvars.ContextVar("strongroom_lock_deadline", default=None)


@contextmanager
def wait_until(deadline):
    """Inside, every Lock.acquire waits until `deadline` (time.monotonic()), whatever its
    own wait says; nested, the earlier deadline wins (what is left of the outer one)."""
    outer = _DEADLINE.get()
    token = _DEADLINE.set(deadline if outer is None else min(outer, deadline))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def seconds(text):
    """--wait SECONDS: a finite number, 0 or more (NaN compares false with every deadline,
    so `--wait nan` would wait forever; a negative wait means nothing)."""
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds, 0 or more, "
                                         f"got {text!r}")
    return value


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
            deadline = outer
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



# --- artifacts in use: a restore's mark that retention respects -----------------------------
#
# A restore reads a snapshot (or a rollup, a day folder, a checkpoint) for minutes; a prune
# that deletes it meanwhile leaves the restore failing, cleanly, with the backup gone. So a
# reader holds a shared flock on DIR/.in-use/NAME.lock for as long as it reads, and whatever
# deletes NAME first takes that lock exclusively without waiting: when it cannot, a reader
# is there, and the artifact is kept this time (a later run deletes it). Only readers and
# deleters meet here: taking a new snapshot never looks at these files, so a long restore
# never holds a backup up. The lock file sits beside the artifacts, never inside one (a
# snapshot folder is chattr +i: nothing can be created in it). As with Lock, the kernel
# drops the flock of a killed reader, so a restore that died pins nothing.
#
# Whoever holds the lock exclusively (the last reader out, a deleter) removes the file, so
# none are left behind. That is safe because every taker checks, once it holds the lock,
# that the file it locked is still the one under the name, and starts again when not: a
# lock on a removed file guards nothing.

IN_USE_DIR = ".in-use"
_IN_USE_RECORDS = 64 << 10  # one JSON line per reader; bounded for the deleter's message
_READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT)


def _in_use_name(name):
    if not name or "/" in name or "\0" in name or name in (".", ".."):
        raise ValueError(f"not an artifact name: {name!r}")
    return f"{name}.lock"


def _in_use_dir(folder, create):
    """An open descriptor of FOLDER/.in-use, never what a link in its place points at
    (None when it is not there and create is False)."""
    path = os.path.join(folder, IN_USE_DIR)
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(path)
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        if create:
            raise
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _Unusable(f"{path} is a symlink or not a directory; refusing to "
                                  "use it for in-use marks (remove it)") from None
        raise


def _open_in_use(dir_fd, name, create):
    """The lock file itself (O_NOFOLLOW, a regular file), read-write when we may, else
    read-only: flock needs no write access, so a reader or a prune run by another user than
    the one who made the file still locks it. None when it is not there and not created."""
    fname = _in_use_name(name)
    base = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    fd = None
    for flags in ((os.O_RDWR | os.O_APPEND | (os.O_CREAT if create else 0)), os.O_RDONLY):
        try:
            fd = os.open(fname, flags | base, 0o644, dir_fd=dir_fd)
            break
        except FileNotFoundError:
            if not create:
                return None
            raise
        except PermissionError:
            continue
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _Unusable(f"in-use lock {IN_USE_DIR}/{fname} is a symlink; "
                                      "refusing to use it (remove it)") from None
            raise
    if fd is None:
        raise PermissionError(errno.EACCES, "cannot open the in-use lock", fname)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _Unusable(f"in-use lock {IN_USE_DIR}/{fname} is not a regular file; "
                              "remove it")
    return fd


def _still_named(dir_fd, name, fd):
    """Is the file locked through fd still the one under the name (not removed since)?"""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(_in_use_name(name), dir_fd=dir_fd,
                                                      follow_symlinks=False))
    except FileNotFoundError:
        return False


def _remove_held(folder, dir_fd, name, fd):
    """Remove the lock file while holding it exclusively: nobody else holds it, and anyone
    who opened it meanwhile sees it was removed once they hold it, and starts again. Then
    .in-use/ itself when that left it empty (a refused restore leaves nothing behind); one
    who opened it just before finds it gone when creating its file, and makes it again."""
    if _still_named(dir_fd, name, fd):
        with contextlib.suppress(OSError):
            os.unlink(_in_use_name(name), dir_fd=dir_fd)
    with contextlib.suppress(OSError):  # not empty: others' marks are in it
        os.rmdir(os.path.join(folder, IN_USE_DIR))


class _Unusable(StrongroomError):
    """.in-use or a mark in it is a link or not what it should be: never used."""


class _Busy(Exception):
    """An exclusive take found a reader; the message says who."""


def _take(folder, name, exclusive, create=True):
    """(dir fd, lock fd) holding NAME's lock (shared: waits; exclusive: never waits, and
    raises _Busy when a reader holds it); (None, None) when it does not exist and create
    is False."""
    for _ in range(1000):  # each turn: the file or .in-use/ was removed under us, by a holder
        try:
            dir_fd = _in_use_dir(folder, create)
        except FileNotFoundError:
            if create and os.path.isdir(folder):
                continue  # .in-use/ removed between our mkdir and our open
            raise
        if dir_fd is None:
            return None, None
        try:
            fd = _open_in_use(dir_fd, name, create)
        except FileNotFoundError:
            os.close(dir_fd)
            continue  # .in-use/ was removed, empty, after we opened it: make it again
        except BaseException:
            os.close(dir_fd)
            raise
        if fd is None:
            os.close(dir_fd)
            return None, None
        try:
            if exclusive:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:
                _share_within(fd, folder, name)
            if _still_named(dir_fd, name, fd):
                return dir_fd, fd
        except BlockingIOError:
            message = _in_use_message(fd)  # who holds it, from the file's records
            os.close(fd)
            os.close(dir_fd)
            raise _Busy(message) from None
        except BaseException:
            os.close(fd)
            os.close(dir_fd)
            raise
        os.close(fd)  # removed by the last holder meanwhile: that lock guards nothing
        os.close(dir_fd)
    raise StrongroomError(f"cannot take the in-use lock of {name} in {folder}: its lock file "
                          "keeps being removed")


# A deleter holds the exclusive lock only while it deletes one artifact: seconds. One
# that holds it far longer is stopped or hung, and a restore must say so, not wait forever.
READ_WAIT = 600.0


def _share_within(fd, folder, name, limit=None):
    deadline = time.monotonic() + (READ_WAIT if limit is None else limit)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise StrongroomError(
                    f"{name} in {folder} has been held by a prune or retire for over "
                    f"{READ_WAIT:g} s ({os.path.join(folder, IN_USE_DIR, _in_use_name(name))} "
                    "is locked exclusively); is one stopped? Nothing was read") from None
            time.sleep(0.05)


@contextmanager
def reading(folder, name, by="restore"):
    """Hold artifact NAME of FOLDER as in use for the block: a prune or retire keeps it.

    Waits only while a deleter holds the lock, which it does just while it deletes NAME:
    the caller must look for NAME after entering (it may be gone then). Yields True when
    the mark is held; False when FOLDER cannot take it (a read-only backup disk, a folder
    of another user): reading must still work there, and nothing of ours can delete from
    such a folder either."""
    try:
        dir_fd, fd = _take(folder, name, exclusive=False)
    except OSError as exc:
        if exc.errno not in _READ_ONLY:
            raise
        dir_fd = fd = None
    except _Unusable as exc:
        # a stray link or file where the marks live must not stop a restore: it reads
        # unmarked, as from a read-only disk; prune still refuses to delete through it
        print(f"warning: {exc}; reading {name} without an in-use mark", file=sys.stderr)
        dir_fd = fd = None
    if fd is None:
        yield False
        return
    try:
        record = {"pid": os.getpid(), "host": socket.gethostname(), "by": by,
                  "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        # who reads, for the deleter's message: one short O_APPEND write per reader (none
        # when the file could only be opened read-only: still held, only nameless)
        with contextlib.suppress(OSError):
            os.write(fd, (json.dumps(record) + "\n").encode())
        yield True
    finally:
        try:
            # the last reader out removes the file (converting the lock drops it for a
            # moment, which no longer matters: the reading is done)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _remove_held(folder, dir_fd, name, fd)
        except OSError:
            pass
        os.close(fd)
        os.close(dir_fd)


def _readers(fd):
    """Who the records say reads: live PIDs of this host, and any of another."""
    try:
        lines = os.pread(fd, _IN_USE_RECORDS, 0).decode("utf-8", "replace").splitlines()
    except OSError:
        lines = []
    here, out = socket.gethostname(), []
    for line in lines:
        try:
            rec = json.loads(line)
            pid = int(rec["pid"])
        except (ValueError, KeyError, TypeError):
            continue
        if rec.get("host") == here:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue  # a killed reader's line: its lock went with it
            except PermissionError:
                pass
        entry = (str(rec.get("by") or "reader"), pid)
        if entry not in out:
            out.append(entry)
    return out


def _in_use_message(fd):
    readers = _readers(fd)
    if not readers:
        return "kept: in use by a reader (PID unknown)"
    return "kept: in use by " + " and ".join(f"a {by} (PID {pid})" for by, pid in readers)


class Deleting:
    """The right to delete artifact NAME of FOLDER: `acquire()` takes its in-use lock
    exclusively without waiting. True: nobody reads it, and no reader can start until
    `release()`, so delete it now. False: a reader holds it; `message` says who ("kept: in
    use by a restore (PID n)"), and the artifact must be kept. `release()` removes the lock
    file while still holding it."""

    def __init__(self, folder, name):
        self.folder, self.name = str(folder), name
        self.dir_fd = self.fd = None
        self.message = None

    def acquire(self):
        try:
            self.dir_fd, self.fd = _take(self.folder, self.name, exclusive=True)
        except _Busy as busy:
            self.message = str(busy)
            return False
        return True

    def release(self):
        if self.fd is not None:
            _remove_held(self.folder, self.dir_fd, self.name, self.fd)
            os.close(self.fd)  # drops the flock
            os.close(self.dir_fd)
            self.fd = self.dir_fd = None


def in_use(folder, name):
    """The 'kept: in use ...' message when a reader holds NAME now, else None. Creates
    nothing (for dry runs): no lock file means no reader."""
    try:
        dir_fd, fd = _take(folder, name, exclusive=True, create=False)
    except _Busy as busy:
        return str(busy)
    if fd is not None:  # nobody reads: let go, leaving the file as it was
        os.close(fd)
        os.close(dir_fd)
    return None
