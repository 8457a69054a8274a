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

from . import fsutil
from .errors import INCOMPLETE, OK, StrongroomError


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
        proc = self.run("cat", "config", ok=(0, 1, 10))
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


def run_job(options, state_dir, job_name, rclone_config=None):
    """backup, forget --prune, check one subset; returns (exit code, report)."""
    r = Restic(options["repository"], options["password_file"],
               cache_dir=Path(state_dir) / "restic-cache", rclone_config=rclone_config)
    created = r.ensure_repository()
    summary = r.backup(options["paths"], options.get("exclude") or [],
                       options.get("tags") or ["strongroom"])
    keep = options.get("keep_weekly", 8)
    r.run("forget", "--keep-weekly", str(keep), "--prune")
    subsets = options.get("check_subsets", 7)
    state_path = Path(state_dir) / "restic" / f"{job_name}.json"
    try:
        done = json.loads(state_path.read_text(encoding="utf-8")).get("checks", 0)
    except (OSError, ValueError):
        done = 0
    subset = f"{done % subsets + 1}/{subsets}"
    r.run("check", "--read-data-subset", subset)
    state_path.parent.mkdir(parents=True, exist_ok=True)
    fsutil.atomic_write_json(state_path, {"checks": done + 1, "last_subset": subset})
    report = {"created": created, "snapshot": summary.get("snapshot_id"),
              "files_new": summary.get("files_new", 0),
              "files_changed": summary.get("files_changed", 0),
              "bytes_added": summary.get("data_added", 0), "checked_subset": subset,
              "incomplete": summary["incomplete"]}
    return (INCOMPLETE if summary["incomplete"] else OK), report


def restore(options, state_dir, snapshot, target, rclone_config=None):
    target = Path(target)
    if target.exists() and any(target.iterdir()):
        raise ResticError(f"{target} is not empty; restore goes into a new directory")
    r = Restic(options["repository"], options["password_file"],
               cache_dir=Path(state_dir) / "restic-cache", rclone_config=rclone_config)
    r.run("restore", snapshot, "--target", str(target), "--verify")
    return {"snapshot": snapshot, "target": str(target)}
