"""`strongroom upload SRC REMOTE:PATH`: copy, prove by hash, then (if asked) delete locally."""

import os

from ..core import s3api
from ..core.errors import OK, WARNING
from ..core.remote import rclone_config
from . import output

# rclone_config stays importable from here for what called it before it moved to core
__all__ = ["add_parser", "rclone_config"]


def cmd_upload(args):
    from ..core.remote import Rclone
    from ..upload import Upload
    from ..upload.seal import Seal

    rc = Rclone(rclone_config(args.rclone_config, args.config_dir), bwlimit=args.bwlimit,
                retries=args.retries, low_level_retries=args.low_level_retries)
    lock = None
    if args.object_lock_days is not None:
        if args.object_lock_days < 1:
            output.usage_error(args, "--object-lock-days takes a whole number of days, 1 or more")
        lock = s3api.ObjectLock(args.object_lock_days, args.object_lock_mode)
        lock.check_remote(rc, args.dest)  # an S3 remote with keys, before anything is sent
    elif args.object_lock_mode != "COMPLIANCE":
        output.usage_error(args, "--object-lock-mode needs --object-lock-days")
    up = Upload(rc, journal_dir=os.path.join(args.state_dir, "uploads"),
                progress=lambda text: output.progress(args, text),
                seal=Seal(args.encrypt_to, everything=True) if args.encrypt_to else None,
                lock=lock)
    out = up.run(args.src, args.dest, immutable=args.immutable,
                 delete_local=args.delete_local_after_verify, dry_run=args.dry_run)
    output.say(args, out["message"])
    if out["skipped"]:
        output.warn(f"not uploaded (symlinks or special files): "
                    f"{', '.join(out['skipped'][:10])}", prefix="")
    if out["kept"]:
        output.warn(f"{len(out['kept'])} file(s) changed during the upload and were kept: "
                    f"{', '.join(out['kept'][:10])}")
    return output.emit(args, WARNING if out["kept"] else OK, out["message"], out)


def add_parser(sub):
    u = output.verb(sub, "upload", help="copy to an rclone remote, verify by hash, then "
                                        "optionally delete locally",
                    epilog=output.epilog("0 copied and verified; 1 files changed during the "
                                         "upload were kept; 2 nothing local was deleted"))
    u.add_argument("src", metavar="SRC", help="a file or a folder")
    u.add_argument("dest", metavar="REMOTE:PATH", help="the folder on the remote")
    u.add_argument("--immutable", action="store_true",
                   help="an existing remote file with other content is an error, never "
                        "overwritten (for archives); one with the same content (by hash) "
                        "under another time is already there")
    u.add_argument("--delete-local-after-verify", action="store_true",
                   help="delete the local files once the remote copies match by hash")
    u.add_argument("--bwlimit", metavar="RATE", help="rclone's bandwidth limit, e.g. 10M")
    u.add_argument("--retries", type=int, default=3, metavar="N",
                   help="attempts of the whole copy (default 3)")
    u.add_argument("--low-level-retries", type=int, default=3, metavar="N",
                   help="retries of each request, with backoff (default 3)")
    u.add_argument("--rclone-config", metavar="FILE",
                   help="default <config-dir>/rclone.conf when it exists")
    u.add_argument("--encrypt-to", metavar="FILE",
                   help="an age recipients file (as age -R takes it): every file goes as "
                        "NAME.age with a plain NAME.age.json sidecar (both SHA-256s, no "
                        "content)")
    u.add_argument("--object-lock-days", type=int, metavar="N",
                   help="S3 Object Lock: each object version sent or found unlocked is held "
                        "(no delete, no overwrite of it) until N days from now, once verified; "
                        "needs an S3 remote on a bucket made with Object Lock")
    u.add_argument("--object-lock-mode", choices=("COMPLIANCE", "GOVERNANCE"),
                   default="COMPLIANCE", help="COMPLIANCE (default): no one can shorten the "
                                              "lock; GOVERNANCE: a user with "
                                              "s3:BypassGovernanceRetention can")
    u.add_argument("--dry-run", action="store_true", help="say what would be copied")
    u.set_defaults(func=cmd_upload)
