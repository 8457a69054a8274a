"""Off-site copies through rclone: copy, then prove by SHA-256 before anyone trusts them.

Never `rclone sync` from the store: a sync mirrors local damage and deletions.
"""

import json
import os
import subprocess
import tempfile
from pathlib import Path

from . import fsutil
from .errors import StrongroomError

# rclone's documented exit codes, said in words a user can act on.
RCLONE_EXIT = {
    1: "syntax, usage or transfer error",
    2: "error not otherwise categorised",
    3: "directory not found",
    4: "file not found",
    5: "temporary error (retries exhausted)",
    6: "less serious errors",
    7: "fatal error (account suspended, quota exceeded, ...)",
    8: "transfer limit exceeded",
    9: "no files transferred",
}
BOUNDED = ["--retries-sleep", "1s", "--contimeout", "10s", "--timeout", "60s"]


class RemoteError(StrongroomError):
    pass


def join(remote, *parts):
    """remote:path + parts, without doubling or losing slashes."""
    base = remote.rstrip("/")
    tail = "/".join(p.strip("/") for p in parts if p)
    if not tail:
        return base
    return f"{base}{tail}" if base.endswith(":") else f"{base}/{tail}"


def _tail(text, lines=6):
    return "\n".join(text.strip().splitlines()[-lines:])


class Rclone:
    def __init__(self, config=None, bwlimit=None, retries=3, low_level_retries=3,
                 extra_env=None):
        self.config = config
        self.extra_env = dict(extra_env or {})  # remotes defined by RCLONE_CONFIG_* vars
        self.bwlimit = bwlimit
        self.retries = retries  # attempts of the whole command
        self.low_level_retries = low_level_retries  # of each request, with backoff

    def run(self, *args, check=True):
        argv = ["rclone", *args, *BOUNDED, "--retries", str(max(1, int(self.retries))),
                "--low-level-retries", str(max(1, int(self.low_level_retries)))]
        if self.config:
            argv += ["--config", str(self.config)]
        if self.bwlimit:
            argv += ["--bwlimit", str(self.bwlimit)]
        env = dict(os.environ, LC_ALL="C")
        env.pop("AWS_CA_BUNDLE", None)  # rclone's s3 backend rejects it for http endpoints
        env.update(self.extra_env)
        try:
            # what rclone creates (a local-folder remote, a file fetched into a store) is
            # readable by its owner only: packs and archives hold .env files and keys
            proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False,
                                  umask=0o077)
        except FileNotFoundError:
            raise RemoteError("rclone is not installed: apt-get install rclone") from None
        if check and proc.returncode != 0:
            meaning = RCLONE_EXIT.get(proc.returncode, "unknown error")
            raise RemoteError(f"rclone {args[0]} failed (exit {proc.returncode}: {meaning}): "
                              f"{_tail(proc.stderr)}")
        return proc

    def local_path(self, dest):
        """The filesystem path behind REMOTE:PATH when REMOTE is a local-folder remote (or
        DEST is a plain path), else None. (config dump holds secrets: read, never shown.)"""
        name, sep, path = dest.partition(":")
        if not sep or "/" in name:
            return dest
        proc = self.run("config", "dump", check=False)
        try:
            section = json.loads(proc.stdout or "{}").get(name) or {}
        except ValueError:
            return None
        if section.get("type") != "local" or set(section) - {"type"}:
            return None  # a local remote with options (links, encodings...) goes by rclone
        return path or "."

    def _listfile(self, names):
        fd, path = tempfile.mkstemp(suffix=".list")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("".join(n + "\n" for n in names))
        return path

    def copy_new(self, local_dir, remote_dir, names):
        """Copy `names` from local_dir; an existing remote file with other content is an error.

        rclone's --immutable also refuses a remote file with our bytes under another time
        (a copy killed before its time was set): when every name is on the remote with our
        SHA-256, the copy is done, and nothing there was touched."""
        listfile = self._listfile(names)
        try:
            proc = self.run("copy", str(local_dir), remote_dir, "--files-from-raw", listfile,
                            "--immutable", "--no-traverse", check=False)
        finally:
            os.unlink(listfile)
        if proc.returncode != 0:
            meaning = RCLONE_EXIT.get(proc.returncode, "unknown error")
            failure = RemoteError(f"rclone copy failed (exit {proc.returncode}: {meaning}): "
                                  f"{_tail(proc.stderr)}")
            try:
                self.verify(remote_dir, {n: fsutil.sha256_file(Path(local_dir) / n) for n in names})
            except (RemoteError, OSError):
                raise failure from None

    def copy_over(self, local_file, remote_file):
        """Replace one file that is meant to change (a manifest)."""
        self.run("copyto", str(local_file), remote_file)

    def fetch(self, remote_file, local_file):
        self.run("copyto", remote_file, str(local_file))

    def sha256s(self, remote_dir, names):
        """{name: sha256} as the remote reports it, or by downloading when it cannot."""
        listfile = self._listfile(names)
        try:
            proc = self.run("hashsum", "sha256", remote_dir, "--files-from-raw", listfile,
                            check=False)
            if proc.returncode != 0 and "hash" in proc.stderr.lower():
                proc = self.run("hashsum", "sha256", "--download", remote_dir,
                                "--files-from-raw", listfile, check=False)
        finally:
            os.unlink(listfile)
        if proc.returncode not in (0, 3, 4):
            meaning = RCLONE_EXIT.get(proc.returncode, "unknown error")
            raise RemoteError(f"cannot read hashes from {remote_dir} (rclone exit "
                              f"{proc.returncode}: {meaning}): {_tail(proc.stderr)}")
        found = {}
        for line in proc.stdout.splitlines():
            digest, _, name = line.partition("  ")
            if name:
                found[name] = digest.strip().lower()
        return found

    def verify(self, remote_dir, expected):
        """Raise unless every name in `expected` is on the remote with that SHA-256."""
        got = self.sha256s(remote_dir, sorted(expected))
        bad = []
        for name, digest in sorted(expected.items()):
            if name not in got:
                bad.append(f"{name}: missing on the remote")
            elif not got[name] or set(got[name]) == {"-"}:
                bad.append(f"{name}: hash could not be checked")
            elif got[name] != digest:
                bad.append(f"{name}: SHA-256 differs (remote {got[name][:12]}, "
                           f"expected {digest[:12]})")
        if bad:
            raise RemoteError(f"remote copy in {remote_dir} failed verification: "
                              + "; ".join(bad))


def rclone_config(value, config_dir):
    """The rclone.conf to use: the one given (--rclone-config, a job's rclone_config), else
    <config-dir>/rclone.conf when it exists, else None (rclone's own)."""
    if value:
        return value
    default = Path(config_dir) / "rclone.conf"
    return str(default) if default.exists() else None
