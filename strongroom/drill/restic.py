"""Drills of restic repositories (restic jobs, kind `restic`): `restic check
--read-data-subset n/N` with n walking 1..N on successive drills (N: the job's
check_subsets), so N drills re-read every pack; then a sample of the latest snapshot's
files (every k-th of `restic ls`, at most SAMPLE, the offset moving with n) restored into
scratch with `restore --verify`, through a cache of its own in scratch (so trees and
indexes are read from the repository, not from what a backup cached here).

Each restored file is compared by SHA-256 with its source file when that is unchanged
since the snapshot (same size and modification time, on the host that took it); a file
changed since has only restic's own content check (`--verify`), and the message says how
many went which way.

restic's repository is the off-site copy itself: whichever source is asked, the one
repository the job names is what is read, and the message says which. The password goes
to restic as the job gives it, a file named in RESTIC_PASSWORD_FILE (never argv), and no
message holds it. The restic job's own lock (the runner's) is held: a backup's forget
--prune never runs under a drill.
"""

import hashlib
import json
import math
import os
import re
import socket
import stat
import subprocess
import tempfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from ..core import fsutil, remote
from ..core.errors import StrongroomError
from ..core.lock import Lock
from . import base

SAMPLE = 50  # files restored and compared per drill


def plan(name, job, ctx):
    o = job.get("options") or {}
    # one repository, whatever was asked: drilled once, under the source asked first
    wanted = ("local",) if ctx.source in ("local", "both") else ("remote",)
    return ResticPlan(name, o, ctx, wanted)


class ResticPlan(base.Plan):
    kind = "restic"

    what_store = "restic repository"

    def __init__(self, job, options, ctx, sources):
        repository = str(options.get("repository") or "")
        # a repository on a path here (not rclone:, sftp:, s3:...) is what scratch must
        # never overlap
        super().__init__(job, sources, stores=[repository] if repository.startswith("/")
                         else [])
        self.options = options
        self.ctx = ctx
        self.snapshot = None

    def _restic(self, cache_dir):
        from ..restic import Restic

        return Restic(self.options["repository"], self.options["password_file"],
                      cache_dir=cache_dir,
                      rclone_config=remote.rclone_config(self.options.get("rclone_config"),
                                                         self.ctx.config_dir))

    def lock(self, wait):
        from ..jobs import Paths

        path = Paths(self.ctx.config_dir, self.ctx.state_dir, self.ctx.state_dir).lock(self.job)
        path.parent.mkdir(parents=True, exist_ok=True)
        return Lock(path, f"job {self.job}").acquire(wait)

    def nothing(self):
        return f"no snapshot of job {self.job} in its repository {_shown(self)} to restore"

    def targets(self, source):
        """The latest snapshot of the job's (by its tags)."""
        from ..restic import ResticError

        tags = self.options.get("tags") or _job_default("tags")
        try:
            with tempfile.TemporaryDirectory(prefix="strongroom-drill-") as cache:
                proc = self._restic(cache).run("snapshots", "--json", "--no-lock",
                                               "--tag", ",".join(tags))
            snaps = json.loads(proc.stdout or "[]") or []
            snaps = [s for s in snaps if isinstance(s, dict) and isinstance(s.get("id"), str)
                     and isinstance(s.get("time"), str)]
        except (ResticError, ValueError) as exc:
            if _no_repository(exc) and not self._made_a_snapshot():
                return []  # the job has not yet had files to back up: nothing() says so
            raise StrongroomError(f"repository {_shown(self)}: {exc}") from None
        if not snaps:
            return []
        self.snapshot = max(snaps, key=lambda s: (_ns(s["time"]) or 0, s["id"]))
        return [self.snapshot.get("short_id") or self.snapshot["id"][:8]]

    def _made_a_snapshot(self):
        """Whether the job's last run recorded a snapshot: a repository missing then is
        lost, not simply not made yet (a job whose folders were empty made none)."""
        try:
            status = json.loads((Path(self.ctx.state_dir) / "status" /
                                 f"{self.job}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        rep = status.get("restic") if isinstance(status, dict) else None
        return isinstance(rep, dict) and bool(rep.get("snapshot"))

    def drill(self, name, source, work):
        work = Path(work)
        art = base.Artifact(self.kind, name, self.job, source)
        try:
            self._drill(art, work)
        finally:
            for child in list(work.iterdir()):  # left as it was given: empty
                _remove(child)
        return art

    def _drill(self, art, work):
        (work / "cache").mkdir()
        r = self._restic(work / "cache")
        total = self.options.get("check_subsets") or _job_default("check_subsets")
        n = self.ctx.rotate(f"{self.job}:restic-subset", range(1, total + 1))
        subset = f"{n}/{total}"
        r.run("check", "--read-data-subset", subset)
        snap_id = self.snapshot["id"]
        files = self._files(r, snap_id, work)
        if not files:
            art.message = (f"check --read-data-subset {subset} passed; snapshot {art.name} "
                           f"holds no files to restore; read the repository {_shown(self)}")
            art.result = "warning"
            return
        k = max(1, math.ceil(len(files) / SAMPLE))
        sample = files[(n - 1) % k::k][:SAMPLE]
        target = work / "restore"
        target.mkdir()
        r.run("restore", snap_id, "--target", str(target), "--verify",
              *[a for f in sample for a in ("--include", _glob_escape(f["path"]))])
        same_host = self.snapshot.get("hostname") == socket.gethostname()
        by_hash = by_restic = 0
        for f in sample:
            got = target / f["path"].lstrip("/")
            try:
                st = os.lstat(got)
            except FileNotFoundError:
                raise StrongroomError(f"{f['path']} of snapshot {art.name} was not restored") \
                    from None
            if not stat.S_ISREG(st.st_mode) or st.st_size != f["size"]:
                raise StrongroomError(f"{f['path']} restored as {st.st_size} bytes, the "
                                      f"snapshot holds {f['size']}")
            if same_host and _unchanged(f):
                if _sha256(got) != _sha256(f["path"]):
                    raise StrongroomError(f"{f['path']} restored from snapshot {art.name} "
                                          "differs from the source file, unchanged since")
                by_hash += 1
            else:
                by_restic += 1
            art.bytes += st.st_size
        art.files = len(sample)
        how = [f"{by_hash} compared by SHA-256 with their source files (unchanged since "
               "the snapshot)"] if by_hash else []
        how += [f"{by_restic} changed since the snapshot (or not on this host), checked "
                "by restic's own content check (restore --verify)"] if by_restic else []
        every = f"every {_ordinal(k)} " if k > 1 else "every "
        art.message = (f"check --read-data-subset {subset} passed; restored {len(sample)} of "
                       f"{len(files)} files of snapshot {art.name} ({every}file) into "
                       f"scratch: {'; '.join(how)}; read the repository {_shown(self)}")

    def _files(self, r, snap_id, work):
        """The snapshot's regular files as restic lists them (in its order), streamed: a
        snapshot of millions of files is never held as one text."""
        with open(work / "ls.err", "w+", encoding="utf-8") as err:
            proc = subprocess.Popen(["restic", "ls", "--json", "--no-lock", snap_id],
                                    stdout=subprocess.PIPE, stderr=err, env=r.env(),
                                    text=True)
            files = []
            for line in proc.stdout:
                try:
                    node = json.loads(line)
                except ValueError:
                    continue
                if isinstance(node, dict) and node.get("struct_type") == "node" and \
                        node.get("type") == "file" and isinstance(node.get("path"), str) \
                        and node["path"].startswith("/") and isinstance(node.get("size"), int):
                    files.append({"path": node["path"], "size": node["size"],
                                  "mtime": node.get("mtime")})
            proc.stdout.close()
            rc = proc.wait()
            err.seek(0)
            tail = "\n".join(err.read().strip().splitlines()[-3:])
        if rc != 0:
            raise StrongroomError(f"restic ls failed (exit {rc}): {tail}")
        return files


def _no_repository(exc):
    """restic's words for a repository that was never initialised there."""
    text = str(exc)
    return "unable to open config file" in text or "Is there a repository" in text


def _job_default(key):
    from ..jobs.schema import default

    return default("restic", key)


def _shown(plan):
    """The repository as a message may show it: a URL's user and password taken out."""
    return re.sub(r"(://)[^/@]*@", r"\1***@", str(plan.options.get("repository")))


_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")


def _ns(text):
    """restic's RFC 3339 time (nanoseconds, any offset) as nanoseconds since the epoch."""
    m = _TIME.match(text or "")
    if not m:
        return None
    offset = UTC
    if m.group(3) != "Z":
        sign = 1 if m.group(3)[0] == "+" else -1
        hours, minutes = int(m.group(3)[1:3]), int(m.group(3)[4:6])
        offset = timezone(sign * timedelta(hours=hours, minutes=minutes))
    seconds = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=offset)
    return int(seconds.timestamp()) * 1_000_000_000 + int((m.group(2) or "0").ljust(9, "0"))


def _unchanged(node):
    try:
        st = os.lstat(node["path"])
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == node["size"] and \
        st.st_mtime_ns == _ns(node["mtime"])


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _glob_escape(path):
    # restic's --include is a pattern: a file named a[1].txt must match only itself
    return re.sub(r"([*?\[\]\\])", r"\\\1", path)


def _ordinal(n):
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _remove(path):
    if path.is_dir() and not path.is_symlink():
        # restic restores files read-only when they were: made writable to be removed
        for rel, is_dir in fsutil.walk(path):
            if is_dir:
                os.chmod(path / rel, 0o700)
        fsutil.rmtree_quiet(path)
    else:
        path.unlink()
