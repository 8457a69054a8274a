"""Exit codes shared by every CLI verb and job, and the engine's error type."""

OK = 0
WARNING = 1  # done, with something to look at
ERROR = 2
INCOMPLETE = 3  # some items failed, the rest were done
LOCKED = 11  # another run holds the lock


class StrongroomError(Exception):
    """A failure the user can act on; the message says what and how to fix it."""

    exit_code = ERROR


class Terminated(BaseException):
    """SIGTERM or SIGHUP during a job run. Not an Exception: a handler that keeps one
    repository's or one artifact's failure from stopping the others must not swallow the
    signal and carry on (as KeyboardInterrupt and SystemExit are not Exceptions)."""

    def __init__(self, signum):
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


class LockedError(StrongroomError):
    exit_code = LOCKED


class ConfigError(StrongroomError):
    pass


class EmptySource(StrongroomError):
    """A job's source holds nothing to back up yet (an empty folder on a fresh machine):
    a warning, not a failure; no backup is written, and the message says what to put
    where."""

    exit_code = WARNING


def worst(codes):
    """Combine per-item exit codes: an error beats a warning beats ok."""
    codes = list(codes)
    if not codes:
        return OK
    return max(codes, key=lambda c: {OK: 0, WARNING: 1, INCOMPLETE: 2, ERROR: 3, LOCKED: 4}[c])
