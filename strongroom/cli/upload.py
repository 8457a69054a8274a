"""`strongroom upload SRC REMOTE:PATH`: copy, prove by hash, then (if asked) delete locally."""

import os

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
    up = Upload(rc, journal_dir=os.path.join(args.state_dir, "uploads"),
                progress=lambda text: output.progress(args, text),
                seal=Seal(args.encrypt_to, everything=True) if args.encrypt_to else None)
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
    u.add_argument("--dry-run", action="store_true", help="say what would be copied")
    u.set_defaults(func=cmd_upload)
