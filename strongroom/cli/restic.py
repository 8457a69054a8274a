"""`strongroom restic restore SNAPSHOT --job NAME --to DIR`: from a restic job's repository."""

from ..core.errors import OK
from ..core.remote import rclone_config
from . import jobfile, output


def cmd_restore(args):
    from .. import restic

    target = output.restore_target(args)
    job = jobfile.load(args.config_dir, args.job, "restic")
    o = job["options"]
    output.progress(args, f"restoring snapshot {args.snapshot} of {job['name']} into {target}")
    out = restic.restore(o, args.state_dir, args.snapshot, target,
                         rclone_config(o.get("rclone_config"), args.config_dir))
    message = f"restored snapshot {out['snapshot']} into {out['target']} (verified by restic)"
    output.say(args, message)
    return output.emit(args, OK, message, out)


def add_parser(sub):
    _, rsub = output.group(sub, "restic", help="restore from a restic job's repository")
    rr = output.verb(rsub, "restore", help="restore SNAPSHOT (an id or 'latest') into a new "
                                           "directory, verified")
    rr.add_argument("snapshot", metavar="SNAPSHOT")
    rr.add_argument("--job", required=True, help="the restic job")
    output.add_to(rr, "new or empty")
    rr.set_defaults(func=cmd_restore)
