"""`strongroom upload SRC REMOTE:PATH`: copy, prove by hash, then (if asked) delete locally."""

import json
import os
import sys
from pathlib import Path

from ..core.errors import OK, WARNING

EPILOG = ("exit codes: 0 ok (copied and verified), 1 warning (files changed during the "
          "upload were kept), 2 error (nothing local was deleted)")


def rclone_config(args_value, config_dir):
    """--rclone-config, else <config-dir>/rclone.conf when it exists, else rclone's own."""
    if args_value:
        return args_value
    default = Path(config_dir) / "rclone.conf"
    return str(default) if default.exists() else None


def _progress(text):
    if sys.stderr.isatty():
        print(f"strongroom: {text}", file=sys.stderr)


def cmd_upload(args):
    from ..core.remote import Rclone
    from ..upload import Upload

    rc = Rclone(rclone_config(args.rclone_config, args.config_dir), bwlimit=args.bwlimit,
                retries=args.retries, low_level_retries=args.low_level_retries)
    up = Upload(rc, journal_dir=os.path.join(args.state_dir, "uploads"), progress=_progress)
    out = up.run(args.src, args.dest, immutable=args.immutable,
                 delete_local=args.delete_local_after_verify, dry_run=args.dry_run)
    if args.json:
        json.dump(out, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        print(out["message"])
        if out["skipped"]:
            print(f"not uploaded (symlinks or special files): {', '.join(out['skipped'][:10])}",
                  file=sys.stderr)
        if out["kept"]:
            print(f"warning: {len(out['kept'])} file(s) changed during the upload and were "
                  f"kept: {', '.join(out['kept'][:10])}", file=sys.stderr)
    return WARNING if out["kept"] else OK


def add_parser(sub):
    u = sub.add_parser("upload", help="copy to an rclone remote, verify by hash, then "
                       "optionally delete locally", epilog=EPILOG)
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
    u.add_argument("--dry-run", action="store_true", help="say what would be copied")
    u.add_argument("--json", action="store_true", help="machine-readable output")
    u.set_defaults(func=cmd_upload)
