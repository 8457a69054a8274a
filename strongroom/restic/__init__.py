"""Weekly restic backups: backup, forget --keep-weekly --prune, and a rotating read check.

The password only ever travels as a file (RESTIC_PASSWORD_FILE, which must be 0600); the
repository is a local path or `rclone:REMOTE:PATH` (rclone reads our rclone.conf through
RCLONE_CONFIG). `check --read-data-subset k/N` walks k through 1..N on successive runs, so
every pack is re-read once every N runs.
"""

import json
import os
import stat
import subprocess
from pathlib import Path

from ..core import fsutil
from ..core.errors import INCOMPLETE, OK, EmptySource, StrongroomError


class ResticError(StrongroomError):
    pass


class Restic:
    def __init__(self, repository, password_file, cache_dir=None, rclone_config=None):
        self.repository = repository
        self.password_file = Path(password_file)
        self.cache_dir = cache_dir
        self.rclone_config = rclone_config
        self._check_password_file()

    def _check_password_file(self):
        try:
            st = self.password_file.stat()
        except FileNotFoundError:
            raise ResticError(f"password file {self.password_file} does not exist") from None
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise ResticError(f"password file {self.password_file} is readable by others "
                              f"(mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it")

    def env(self):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("RESTIC_") and k != "AWS_CA_BUNDLE"}
        env.update(RESTIC_REPOSITORY=self.repository,
                   RESTIC_PASSWORD_FILE=str(self.password_file), LC_ALL="C")
        if self.cache_dir:
            env["RESTIC_CACHE_DIR"] = str(self.cache_dir)
        if self.rclone_config:
            env["RCLONE_CONFIG"] = str(self.rclone_config)
        return env

    def run(self, *args, ok=(0,)):
        try:
            proc = subprocess.run(["restic", *args], capture_output=True, text=True,
                                  env=self.env(), check=False)
        except FileNotFoundError:
            raise ResticError("restic is not installed: apt-get install restic") from None
        if proc.returncode not in ok:
            tail = "\n".join(proc.stderr.strip().splitlines()[-3:])
            if "wrong password" in proc.stderr:
                tail = "wrong password (or no key) for this repository"
            raise ResticError(f"restic {args[0]} failed (exit {proc.returncode}): {tail}")
        return proc

    def ensure_repository(self):
        """True when the repository had to be created."""
        proc = self.run("cat", "config", "--no-lock", ok=(0, 1, 10))  # a read: no lock
        if proc.returncode == 0:
            return False
        if "wrong password" in proc.stderr:
            raise ResticError("wrong password (or no key) for this repository")
        if "Is there a repository" not in proc.stderr and proc.returncode != 10:
            raise ResticError(f"cannot open the repository: {proc.stderr.strip()[-300:]}")
        self.run("init")
        return True

    def backup(self, paths, exclude=(), tags=()):
        argv = ["backup", "--json"]
        for t in tags:
            argv += ["--tag", t]
        for e in exclude:
            argv += ["--exclude", e]
        proc = self.run(*argv, "--", *map(str, paths), ok=(0, 3))
        summary = {}
        for line in proc.stdout.splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if doc.get("message_type") == "summary":
                summary = doc
        summary["incomplete"] = proc.returncode == 3  # some files could not be read
        return summary

    def forget(self, keep_weekly, tags, protect=()):
        """`forget --keep-weekly N --prune` over the snapshots carrying `tags`, never one
        in `protect`; returns the ids forgotten.

        restic keeps the newest of each week by the time a snapshot says it was taken: one
        dated ahead by a clock that jumped takes the place of the snapshot made a minute
        ago, and an incomplete one that of the complete one before it in the same week.
        So restic only plans here, and what it would remove is forgotten by id, less what
        must stay. A snapshot without these tags (one taken by hand) is not this job's."""
        policy = ["--keep-weekly", str(keep_weekly), *(["--tag", ",".join(tags)] if tags
                                                        else [])]
        # the plan writes nothing, so it takes no lock; the removal takes restic's own
        proc = self.run("forget", "--no-lock", "--dry-run", "--json", *policy)
        try:
            groups = json.loads(proc.stdout or "[]")  # no snapshot matched: no output
            planned = [snap["id"] for group in groups or []
                       for snap in group.get("remove") or []]
        except (ValueError, TypeError, KeyError, AttributeError):
            raise ResticError("restic forget --dry-run gave output that is not its JSON "
                              "plan; nothing forgotten") from None
        # backup's summary names a snapshot by its short id: a prefix of the full one
        keep = tuple(p for p in protect if p)
        remove = [i for i in planned if not (keep and i.startswith(keep))]
        if remove:
            self.run("forget", "--prune", *remove)
        return remove


def _holds_a_file(path):
    """Whether path is a file or a folder with a file (or link) anywhere below it."""
    path = Path(path)
    if not path.is_dir():
        return path.exists() or path.is_symlink()
    for top, dirs, files in os.walk(path):
        if files or any(os.path.islink(os.path.join(top, d)) for d in dirs):
            return True
    return False


def _job_default(key):
    from ..jobs.schema import default  # the job schema is where a restic job's defaults live

    return default("restic", key)


def run_job(options, state_dir, job_name, rclone_config=None):
    """backup, forget --prune, check one subset; returns (exit code, report)."""
    paths = [Path(p) for p in options["paths"]]
    # all there and all empty: a snapshot of nothing would stand for its week (a missing
    # path is restic's to report, as an error)
    if all(p.is_dir() for p in paths) and not any(_holds_a_file(p) for p in paths):
        where = ", ".join(map(str, paths))
        raise EmptySource(f"nothing to back up: {where} "
                          f"{'holds' if len(paths) == 1 else 'hold'} no files; put the files "
                          f"to back up in {where}, or set the job's options.paths to the "
                          "folders that hold them")
    r = Restic(options["repository"], options["password_file"],
               cache_dir=Path(state_dir) / "restic-cache", rclone_config=rclone_config)
    created = r.ensure_repository()
    tags = options.get("tags") or _job_default("tags")
    summary = r.backup(options["paths"], options.get("exclude") or [], tags)
    state_path = Path(state_dir) / "restic" / f"{job_name}.json"
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
        state = state if isinstance(state, dict) else {}
    except (OSError, ValueError):
        state = {}
    done = state.get("checks", 0) if isinstance(state.get("checks"), int) else 0
    snapshot = summary.get("snapshot_id")
    last_complete = state.get("last_complete")
    if not summary["incomplete"] and snapshot:
        last_complete = snapshot
    # the snapshot just made stays, and while it is incomplete so does the last complete one
    protect = {i for i in (snapshot, last_complete) if isinstance(i, str)}
    keep = options.get("keep_weekly", _job_default("keep_weekly"))
    forgotten = r.forget(keep, tags, protect)
    state_path.parent.mkdir(parents=True, exist_ok=True)
    state = {**state, "checks": done, "last_complete": last_complete}
    fsutil.atomic_write_json(state_path, state)  # known even if the check below fails
    subsets = options.get("check_subsets", _job_default("check_subsets"))
    subset = f"{done % subsets + 1}/{subsets}"
    r.run("check", "--read-data-subset", subset)
    fsutil.atomic_write_json(state_path, {**state, "checks": done + 1, "last_subset": subset})
    report = {"created": created, "snapshot": snapshot,
              "files_new": summary.get("files_new", 0),
              "files_changed": summary.get("files_changed", 0),
              "bytes_added": summary.get("data_added", 0), "checked_subset": subset,
              "incomplete": summary["incomplete"], "forgotten": len(forgotten)}
    return (INCOMPLETE if summary["incomplete"] else OK), report


def restore(options, state_dir, snapshot, target, rclone_config=None):
    target = Path(target)
    if target.exists() and any(target.iterdir()):
        raise ResticError(f"{target} is not empty; restore goes into a new directory")
    r = Restic(options["repository"], options["password_file"],
               cache_dir=Path(state_dir) / "restic-cache", rclone_config=rclone_config)
    r.run("restore", snapshot, "--target", str(target), "--verify")
    return {"snapshot": snapshot, "target": str(target)}
