"""`strongroom drill`: restore every bundle chain into scratch space and check it."""

import sys
from pathlib import Path

from ..core.errors import WARNING, StrongroomError
from ..core.lock import seconds
from . import jobfile, output


def _progress(args):
    if not output.progress_on(args):
        return None

    def show(art):
        sys.stderr.write(f"{art.job}/{art.name} ({art.source}): {art.result} "
                         f"in {art.duration_seconds:.1f}s\n")
        sys.stderr.flush()
    return show


def cmd_drill(args):
    from .. import bundles, drill

    if args.store:
        opts = bundles.options_from({"remote": args.remote,
                                     "rclone_config": args.rclone_config}, args.config_dir)
        wanted = ("local", "remote") if args.source == "both" else (args.source,)
        if "remote" in wanted and not opts.remote:
            raise StrongroomError(f"--source {args.source} needs --remote")
        plan_list, notes = [drill.Plan("-", Path(args.store).absolute(), opts, wanted)], []
    else:
        for name in args.job or ():
            jobfile.load(args.config_dir, name, "drill")
        plan_list, notes = drill.plans(args.config_dir, args.job, args.source)
    scratch = args.scratch or str(Path(args.state_dir) / "drill")
    artifacts, code, summary = drill.run(plan_list, scratch, args.wait,
                                         progress=_progress(args))
    if not artifacts:  # said as every verify verb says it, with the drill's own detail
        code, summary = WARNING, (f"{output.NOTHING_TO_VERIFY}: "
                                  + summary.removeprefix("nothing to test: "))
    text = "\n".join(([drill.summary_table(artifacts)] if artifacts else [])
                     + [f"note: {n}" for n in notes] + [summary])
    output.say(args, text)
    return output.emit(args, code, summary, {
        "summary": summary, "notes": notes, "output": text,
        "artifacts": [a.as_dict() for a in artifacts]})


def add_parser(sub):
    dr = output.verb(
        sub, "drill", help="restore every bundle chain into scratch space and check it",
        description="Restore drill: rebuild each chain (from the local store, the remote, or "
                    "both) into a scratch directory, compare its refs with the ref manifest, "
                    "run git fsck --full --strict, and remove the scratch data. Nothing is "
                    "written to a store or a remote. Finding nothing to test exits 1 "
                    "(nothing to verify). Scheduled drills are jobs of type restore_drill "
                    "(strongroom run JOB), which also record each result in the status and "
                    "notify.")
    dr.add_argument("--job", action="append", metavar="NAME",
                    help="drill this bundle_sync job's store (repeatable; default: every "
                         "bundle_sync job in <config-dir>/jobs)")
    dr.add_argument("--store", help="drill this bundle store instead of the jobs' stores")
    dr.add_argument("--remote", help="rclone REMOTE:PATH of --store's off-site copy")
    dr.add_argument("--rclone-config", dest="rclone_config",
                    help="rclone.conf to use (default <config-dir>/rclone.conf if present)")
    dr.add_argument("--source", choices=["local", "remote", "both"], default="local",
                    help="restore from the local store, from the remote alone, or both "
                         "(default local)")
    dr.add_argument("--scratch", help="scratch directory (default <state-dir>/drill)")
    dr.add_argument("--wait", type=seconds, default=300.0, metavar="SECONDS",
                    help="wait this long for a store's lock (default 300)")
    dr.set_defaults(func=cmd_drill)
