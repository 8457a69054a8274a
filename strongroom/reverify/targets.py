"""Where each job type puts its off-site copies: the remote root its objects are under,
the local folder holding the same paths (the expected hash of an adopted object, and the
copy a repair re-uploads), and which objects are replaced on purpose.

  bundle            REMOTE/<repo>/<bundle files>     store/<repo>/...   the chain manifest
                                                                          is replaced by
                                                                          each sync
  snapshot          REMOTE/<id>/...                  dest/<id>/...
  daily, rollup     REMOTE/<YYYY-MM-DD>/..., REMOTE/rollups/<rollup>     dest/...
  db                REMOTE/backups/<db>/<version>    none (a version is made from the
                                                     live database, which moves on)
"""

import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from ..core import fsutil, safeio
from ..core.remote import Rclone

# names we never adopt: a damaged object moved aside (evidence), an upload in flight
SET_ASIDE = re.compile(r"\.damaged-\d{8}T\d{6}Z$")
IN_FLIGHT = re.compile(r"\.partial$|\.rclone_chunk\.")


@dataclass
class Target:
    job: str
    type: str
    root: str  # the job's remote root; ledger paths are relative to it
    rclone: Rclone
    scope: str = ""  # the folder under root the job's objects are in ("" the whole root)
    local: Path | None = None  # the folder holding the same relative paths here
    mutable: frozenset = frozenset()  # base names replaced on purpose by the job
    pruned: object = None  # (missing names, listed names) -> names deleted on purpose
    method: str | None = None  # "hash" or "download", once known
    notes: list = field(default_factory=list)

    def wanted(self, name):
        """True for a listed name that is one of the job's objects."""
        return not SET_ASIDE.search(name) and not IN_FLIGHT.search(name)

    def is_mutable(self, name):
        return name.rsplit("/", 1)[-1] in self.mutable

    def local_file(self, name):
        """The local copy of object `name` (a regular file under the local folder, reached
        without following a link), or None."""
        if self.local is None:
            return None
        try:
            rel = safeio.clean_relpath(name, "object")
        except safeio.UnsafePath:
            return None
        path = self.local / rel
        parent = self.local
        for part in rel.split("/")[:-1]:
            parent = parent / part
            if parent.is_symlink():
                return None
        if path.is_symlink() or not path.is_file():
            return None
        return path

    def local_sha(self, name):
        path = self.local_file(name)
        if path is None:
            return None, None
        try:
            return fsutil.sha256_file(path, follow=False), path.stat().st_size
        except OSError:
            return None, None


def verify_days(job):
    """The job's verify_days, or 0 for a type that has none (no off-site copy)."""
    from ..jobs import schema

    opts = schema.options(job["type"])
    if "verify_days" not in opts:
        return 0
    return schema.get(job, "verify_days") or 0


def period(job):
    """The time until the job's next scheduled run (a job without a schedule: a day)."""
    from .. import schedule

    spec = job.get("schedule")
    if not spec or spec == "manual":
        return timedelta(days=1)
    return schedule.parse(spec).period()


def _offsite_rclone(job, paths):
    from ..jobs import offsite

    return offsite(paths, job["options"]).rclone


def _bundle(job, paths):
    from .. import bundles
    from ..bundles import chain

    o = job["options"]
    opts = bundles.options_from(o, paths.config_dir)
    return Target(job["name"], "bundle", o["remote"], Rclone(opts.rclone_config),
                  local=Path(o["store"]), mutable=frozenset({chain.MANIFEST}))


def _folders(job, paths):
    o = job["options"]
    return Target(job["name"], job["type"], o["remote"], _offsite_rclone(job, paths),
                  local=Path(o["dest"]))


def _db(job, paths):
    from ..dbversions import META, _key_time
    from ..dbversions.settings import env_remote, settings

    o = job["options"]
    d = settings(o, paths.config_dir, paths.state_dir)
    root = o.get("remote") or env_remote()[0]
    scope = f"backups/{d.name}"

    def pruned(missing, listed):
        # every host's prune deletes the oldest versions first: a version older than the
        # oldest one still listed went by the `keep` rule (here or on another host);
        # one missing between kept versions is damage
        def when(name):
            base = name.rsplit("/", 1)[-1]
            return _key_time(base.removesuffix(META))

        times = [t for t in map(when, listed) if t]
        if not times:
            return set()  # all gone: that is no prune
        oldest = min(times)
        return {n for n in missing if when(n) and when(n) < oldest}

    return Target(job["name"], "db", root, d.rclone, scope=scope, pruned=pruned)


BUILDERS = {"bundle": _bundle, "snapshot": _folders, "daily": _folders, "rollup": _folders,
            "db": _db}


def target(job, paths):
    """The Target of a job with an off-site copy and verify_days > 0, else None."""
    from ..jobs import schema

    kind = schema.canonical(job["type"])
    build = BUILDERS.get(kind)
    if build is None or not verify_days(job):
        return None
    if kind != "db" and not (job.get("options") or {}).get("remote"):
        return None
    job = {**job, "type": kind}
    return build(job, paths)


def ledger_path(paths, name):
    return Path(paths.state_dir) / "verify" / f"{name}.json"
