"""`strongroom bisync --job NAME [--resync] [--force]`: a bisync job, run by hand."""

import json
import sys

from ..core.errors import OK, WARNING
from ..core.lock import seconds
from ..jobs import config

EPILOG = ("exit codes: 0 ok, 1 conflicts (both copies kept), 2 error (stopped; nothing "
          "deleted), 11 locked")


def cmd_bisync(args):
    from .. import jobs

    job = config.load_job_of_type(args.config_dir, args.job, "bisync")
    if args.wait is not None:  # beats the job's lock_wait, 0 included
        job["options"]["lock_wait"] = args.wait
    paths = jobs.Paths(args.config_dir, args.state_dir, args.log_dir)
    out = jobs.run_bisync(job, paths, resync=args.resync, force=args.force,
                          dry_run=args.dry_run)
    if args.json:
        json.dump(out["extra"]["bisync"], sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        print(out["message"])
    return WARNING if out["exit_code"] == WARNING else OK


def add_parser(sub):
    b = sub.add_parser("bisync", help="two-way sync of a folder with managed storage (a "
                       "bisync job), by hand", epilog=EPILOG)
    b.add_argument("--job", required=True, help="the bisync job")
    b.add_argument("--resync", action="store_true",
                   help="rebuild the listings from both sides (first run, or after a stop)")
    b.add_argument("--force", action="store_true",
                   help="let this run delete more than max_delete percent")
    b.add_argument("--dry-run", action="store_true", help="say what would change")
    b.add_argument("--wait", type=seconds, metavar="SECONDS",
                   help="wait this long for a running bisync of this job instead of exiting "
                        "11 (default: the job's lock_wait, else 0)")
    b.add_argument("--json", action="store_true", help="machine-readable output")
    b.set_defaults(func=cmd_bisync)


def cmd_restic(args):
    from .. import restic
    from .upload import rclone_config

    job = config.load_job_of_type(args.config_dir, args.job, "restic")
    o = job["options"]
    out = restic.restore(o, args.state_dir, args.snapshot, args.target,
                         rclone_config(o.get("rclone_config"), args.config_dir))
    if args.json:
        json.dump(out, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        print(f"restored snapshot {out['snapshot']} into {out['target']} (verified by restic)")
    return OK


def add_restic_parser(sub):
    r = sub.add_parser("restic", help="restore from a restic job's repository",
                       epilog="exit codes: 0 ok, 2 error")
    rsub = r.add_subparsers(dest="verb", required=True)
    rr = rsub.add_parser("restore", help="restore SNAPSHOT (an id or 'latest') into a new "
                         "directory, verified")
    rr.add_argument("snapshot", metavar="SNAPSHOT")
    rr.add_argument("--job", required=True, help="the restic job")
    rr.add_argument("--target", required=True, help="a new (or empty) directory")
    rr.add_argument("--json", action="store_true", help="machine-readable output")
    rr.set_defaults(func=cmd_restic)
