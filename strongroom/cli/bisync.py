"""`strongroom bisync --job NAME [--resync] [--force]`: a bisync job, run by hand."""

from ..core.errors import OK, WARNING
from ..core.lock import seconds
from . import jobfile, output


def cmd_bisync(args):
    from .. import jobs

    job = jobfile.load(args.config_dir, args.job, "bisync")
    if args.wait is not None:  # beats the job's lock_wait, 0 included
        job["options"]["lock_wait"] = args.wait
    output.progress(args, f"{'resync' if args.resync else 'bisync'} of {job['name']}")
    out = jobs.run_bisync(job, jobfile.paths(args), resync=args.resync, force=args.force,
                          dry_run=args.dry_run)
    output.say(args, out["message"])
    return output.emit(args, WARNING if out["exit_code"] == WARNING else OK, out["message"],
                       out["extra"]["bisync"])


def add_parser(sub):
    b = output.verb(sub, "bisync", help="two-way sync of a folder with managed storage (a "
                                        "bisync job), by hand",
                    epilog=output.epilog("1 conflicts (both copies kept); 2 stopped, nothing "
                                         "deleted"))
    b.add_argument("--job", required=True, help="the bisync job")
    b.add_argument("--resync", action="store_true",
                   help="rebuild the listings from both sides (first run, or after a stop)")
    b.add_argument("--force", action="store_true",
                   help="let this run delete more than max_delete percent")
    b.add_argument("--dry-run", action="store_true", help="say what would change")
    b.add_argument("--wait", type=seconds, metavar="SECONDS",
                   help="wait this long for a running bisync of this job instead of exiting "
                        "11 (default: the job's lock_wait, else 0)")
    b.set_defaults(func=cmd_bisync)
