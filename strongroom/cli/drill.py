"""`strongroom drill`: restore the backups of every job whose type has a drill into
scratch space, check them and time them."""

import sys
from pathlib import Path

from ..core.errors import WARNING, StrongroomError
from ..core.lock import seconds
from . import jobfile, output

# every artifact kind a drill reports (drill.base.Artifact.kind)
KINDS = ("bundle_chain", "snapshot", "checkpoint", "day", "rollup", "db_version", "restic")


def _progress(args):
    if not output.progress_on(args):
        return None

    def show(art):
        sys.stderr.write(f"{art.kind} {art.job}/{art.name} ({art.source}): {art.result} "
                         f"in {art.duration_seconds:.1f}s\n")
        sys.stderr.flush()
    return show


def cmd_drill(args):
    from .. import bundles, drill
    from ..drill import bundle

    if args.store:
        opts = bundles.options_from({"remote": args.remote, "identity": args.identity,
                                     "rclone_config": args.rclone_config}, args.config_dir)
        wanted = ("local", "remote") if args.source == "both" else (args.source,)
        if "remote" in wanted and not opts.remote:
            raise StrongroomError(f"--source {args.source} needs --remote")
        plan_list, notes = [bundle.store_plan(args.store, opts, wanted)], []
    else:
        for name in args.job or ():
            jobfile.load(args.config_dir, name, "drill")
        plan_list, notes = drill.plans(args.config_dir, args.state_dir, args.job, args.source,
                                       identity=args.identity)
    if args.kind:
        left = [p for p in plan_list if p.kind in args.kind]
        if args.job and len(left) < len(plan_list):
            raise StrongroomError("--kind " + ",".join(args.kind) + " leaves out "
                                  + ", ".join(f"job {p.job} ({p.kind})" for p in plan_list
                                              if p not in left))
        plan_list = left
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
        sub, "drill", help="restore every job's backups into scratch space, check and time "
                           "them",
        description="Restore drill: for every job on the host whose type has a drill, put "
                    "its newest backup and one older one (a different one each drill) back "
                    "by the real restore path, from the local copy, the remote alone, or "
                    "both, into a scratch directory; check the result (bundle chains: refs "
                    "against every ref manifest and git fsck; snapshots: a full and a "
                    "critical restore against SHA256SUMS, databases by integrity_check and "
                    "row counts; checkpoints: the patch applied to its base commit and every "
                    "file against the manifest), time it (the RTO column), and remove the "
                    "scratch data. Nothing is written to a backup or a remote. Finding "
                    "nothing to test exits 1 (nothing to verify). Scheduled drills are jobs "
                    "of type drill (strongroom run JOB), which also record each result in "
                    "the status and notify.")
    dr.add_argument("--job", action="append", metavar="NAME",
                    help="drill this job's backups (repeatable; default: every job in "
                         "<config-dir>/jobs whose type has a drill)")
    dr.add_argument("--kind", action="append", metavar="KIND", choices=KINDS,
                    help="only drill artifacts of this kind (repeatable; one of: "
                         + ", ".join(KINDS) + ")")
    dr.add_argument("--store", help="drill this bundle store instead of the jobs' backups")
    dr.add_argument("--remote", help="rclone REMOTE:PATH of --store's off-site copy")
    dr.add_argument("--rclone-config", dest="rclone_config",
                    help="rclone.conf to use (default <config-dir>/rclone.conf if present)")
    dr.add_argument("--source", choices=["local", "remote", "both"], default="local",
                    help="restore from the local copy, from the remote alone, or both "
                         "(default local)")
    dr.add_argument("--scratch", help="scratch directory (default <state-dir>/drill)")
    dr.add_argument("--wait", type=seconds, default=300.0, metavar="SECONDS",
                    help="wait this long for a backup's lock (default 300)")
    dr.add_argument("--identity", metavar="FILE",
                    help="an age identity file (0600) for the jobs whose remote copies are "
                         "sealed and that set no identity of their own")
    dr.set_defaults(func=cmd_drill)
