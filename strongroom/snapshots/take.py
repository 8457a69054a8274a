"""Take one snapshot under DEST's lock: what `strongroom snapshot now`, the snapshot job,
the pre-push hook and the immutable_snapshot module all call."""

import os

from ..core.errors import StrongroomError
from ..core.lock import Lock
from ..core.sizes import parse_size


def need(opts, *keys):
    for key in keys:
        if not opts.get(key):
            raise StrongroomError(f"--{key} DIR is required (or --job NAME with '{key}' in "
                                  "its options)")


def take(opts):
    """opts: source, dest, and optionally critical, db, exclude, immutable, format,
    large_threshold, lock_wait (seconds, default 0). Returns the snapshot's report."""
    from .. import snapshots

    need(opts, "source", "dest")
    os.makedirs(opts["dest"], exist_ok=True)
    with Lock(os.path.join(opts["dest"], ".snapshot.lock"), f"snapshots in {opts['dest']}") \
            .acquire(opts.get("lock_wait", snapshots.job_default("lock_wait"))):
        return snapshots.create(
            opts["source"], opts["dest"], critical=opts.get("critical") or [],
            dbs=opts.get("db") or [], exclude=opts.get("exclude") or [],
            immutable=opts.get("immutable", snapshots.job_default("immutable")),
            fmt=opts.get("format", snapshots.job_default("format")),
            large_threshold=parse_size(opts.get("large_threshold",
                                                snapshots.LARGE_DEFAULT)))
