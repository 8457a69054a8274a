"""Two-way sync of a folder with managed storage through `rclone bisync`.

Guards: --check-access (a marker file must be on both sides, so an unmounted or emptied
side is never taken for a mass deletion), --max-delete (default 50 %: more deletions on
one side stop the run with nothing deleted), --resync only on the first run or when asked,
conflicts keep both copies (FILE..path1 and FILE..path2), one run at a time.
"""

import re
from pathlib import Path

from ..core.errors import EmptySource, StrongroomError
from ..core.lock import Lock
from ..core.remote import RCLONE_EXIT, Rclone, _tail

MARKER = "RCLONE_TEST"


class BisyncError(StrongroomError):
    pass


def _first_run(workdir):
    return not any(Path(workdir).glob("*.path1.lst"))


def _job_default(key):
    from ..jobs.schema import default  # the job schema is where a bisync job's defaults live

    return default("bisync", key)


def run(local, remote_path, workdir, rclone: Rclone, max_delete=None, check_access=None,
        resync=False, force=False, dry_run=False, lock_wait=None):
    """max_delete, check_access, lock_wait: a bisync job's options (None: its default)."""
    max_delete = _job_default("max_delete") if max_delete is None else max_delete
    check_access = _job_default("check_access") if check_access is None else check_access
    lock_wait = _job_default("lock_wait") if lock_wait is None else lock_wait
    local, workdir = Path(local), Path(workdir)
    if not local.is_dir():
        if _first_run(workdir) and not local.exists():
            raise EmptySource(f"nothing to sync yet: {local} does not exist; create it and put "
                              f"in it the files to keep in two-way sync with {remote_path} "
                              "(the first run copies what either side holds to the other), "
                              "or set the job's options.local to the folder to sync")
        raise BisyncError(f"local folder {local} does not exist")
    workdir.mkdir(parents=True, exist_ok=True)
    with Lock(workdir / "bisync.lock", f"bisync of {local}").acquire(lock_wait):
        first = _first_run(workdir)
        resync = resync or first
        if resync and check_access and not (local / MARKER).exists() and not dry_run:
            # the first sync carries the marker to the other side
            (local / MARKER).write_text("Strongroom bisync access check: keep this file on "
                                        "both sides.\n", encoding="utf-8")
        argv = ["bisync", str(local), remote_path, "--workdir", str(workdir),
                "--max-delete", str(max_delete), "-v"]
        argv += ["--check-access", "--check-filename", MARKER] if check_access else []
        argv += ["--resync"] if resync else []
        argv += ["--force"] if force else []
        argv += ["--dry-run"] if dry_run else []
        proc = rclone.run(*argv, check=False)
    err = proc.stderr
    conflicts = sorted(set(re.findall(r"New or changed in both paths\s+-\s+(.+)$", err, re.M)))
    copied = re.findall(r"INFO\s+: [^:]+: Copied \(", err)
    deleted = re.findall(r"INFO\s+: [^:]+: Deleted", err)
    if proc.returncode != 0:
        if "too many deletes" in err:
            m = re.search(r"too many deletes \(>(\d+)%, (\d+) of (\d+)\) on (Path\d)", err)
            side = {"Path1": str(local), "Path2": remote_path}.get(m.group(4), "?") if m else "?"
            detail = f" ({m.group(2)} of {m.group(3)} files, in {side})" if m else ""
            raise BisyncError(f"bisync stopped: more than {max_delete}% of the files would be "
                              f"deleted{detail}; nothing was deleted. If that is intended, run "
                              "it once with --force")
        if "check file check failed" in err or "Access test failed" in err:
            raise BisyncError(f"bisync stopped: the {MARKER} marker is missing on one side "
                              "(an unmounted or emptied folder?); nothing was changed. Put it "
                              "back, then run with --resync")
        hint = " Once the cause is fixed, run with --resync." if "Must run --resync" in err \
            else ""
        raise BisyncError(f"rclone bisync failed (exit {proc.returncode}: "
                          f"{RCLONE_EXIT.get(proc.returncode, 'unknown error')}): "
                          f"{_tail(err, 4)}{hint}")
    return {"local": str(local), "remote": remote_path, "resync": resync, "first_run": first,
            "conflicts": conflicts, "copied": len(copied), "deleted": len(deleted),
            "dry_run": dry_run, "changed": bool(copied or deleted or conflicts)}
