"""Save one checkpoint under DEST's lock, then prune: what `strongroom checkpoint save` and
the checkpoint job call."""

from pathlib import Path

from ..core.errors import StrongroomError
from ..core.lock import Lock
from ..core.sizes import parse_size


def take_checkpoint(opts):
    """opts: source, dest, and optionally max_file_size, keep_days, lock_wait (seconds,
    default 0). Save (under the lock), then prune when keep_days is set. Returns the
    report."""
    from .. import checkpoints

    for key in ("source", "dest"):
        if not opts.get(key):
            raise StrongroomError(f"--{key} DIR is required (or --job NAME with '{key}' in "
                                  "its options)")
    dest = Path(opts["dest"]).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    with Lock(dest / ".checkpoint.lock", f"checkpoints in {dest}") \
            .acquire(opts.get("lock_wait", checkpoints.job_default("lock_wait"))):
        rep = checkpoints.save(Path(opts["source"]).expanduser(), dest,
                               max_file_size=parse_size(opts.get(
                                   "max_file_size", checkpoints.MAX_FILE_DEFAULT)))
        if opts.get("keep_days") is not None:
            rep["prune"] = checkpoints.prune(dest, float(opts["keep_days"]))
    if rep["skipped"]:
        rep["warning"] = (f"{len(rep['skipped'])} file(s) above the size limit were left out: "
                          + ", ".join(s["path"] for s in rep["skipped"][:5]))
    return rep
