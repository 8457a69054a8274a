"""`strongroom reverify JOB`: read a job's remote copies back and check them by SHA-256
now, and repair damaged ones from a good local copy."""

from ..core.errors import ERROR, OK, WARNING, StrongroomError
from ..core.lock import Lock, seconds
from . import output


def cmd_reverify(args):
    from .. import reverify
    from ..jobs import Paths, config

    job = config.load_job(args.config_dir, args.job)
    paths = Paths(args.config_dir, args.state_dir, args.log_dir)
    if reverify.targets.target(job, paths) is None:
        raise StrongroomError(f"job {args.job} re-verifies nothing: its type has no off-site "
                              "copy to re-read, it has no remote, or its verify_days is 0")
    paths.lock(args.job).parent.mkdir(parents=True, exist_ok=True)
    lock = Lock(paths.lock(args.job), f"job {args.job}").acquire(args.wait)
    try:
        return _reverify(args, job, paths, reverify)
    finally:
        lock.release()


def _reverify(args, job, paths, reverify):
    def say(text):
        output.progress(args, text)

    steps, repairs = [], []
    if args.forget:
        steps = reverify.forget(job, paths, args.forget, progress=say)
        output.say(args, *steps)
    report, target = reverify.verify_job(job, paths, everything=args.all, progress=say)
    if args.repair and not report["error"]:  # what this read found is repaired too
        repairs = reverify.repair(job, paths, progress=say)
        for r in repairs:
            output.say(args, *r["steps"], r["message"])
        report = reverify.refresh(report, job, paths)
    lines = [f"{report['checked_this_run']} of {report['objects']} object(s) on "
             f"{target.root} re-read by {report['method']}; coverage "
             f"{report['coverage_ratio']}"]
    lines += [f"note: {n}" for n in report["notes"] + report["warnings"]]
    lines += [f"{n}: reads back good again" for n in report["cleared"]]
    code = WARNING if report["warnings"] else OK
    if report["error"]:
        code, message = ERROR, f"re-verification of {target.root} failed: {report['error']}"
    elif report["damaged"]:
        code = ERROR
        message = (f"{len(report['damaged'])} damaged object(s) on {target.root}: "
                   + "; ".join(f"{n} ({report['reasons'][n]})" for n in report["damaged"][:10]))
        lines += reverify.damage_lines(report, args.job)[:-1]
        if not args.repair:
            lines.append(f"repair with `strongroom reverify {args.job} --repair`")
    else:
        message = lines[0]
    bad = [r for r in repairs if r["result"] != "repaired"]
    if bad:
        code = ERROR
        lines += [r["message"] for r in bad]
    output.say(args, *lines)
    if code == ERROR and not getattr(args, "json", False):
        output.error(message)
    return output.emit(args, code, message, {
        "job": args.job, "remote": target.root, "verify": reverify.status_view(report),
        "reasons": report["reasons"], "adopted": report["adopted"],
        "cleared": report["cleared"], "notes": report["notes"] + report["warnings"],
        "repairs": repairs, "forgotten": steps})


def add_parser(sub):
    p = output.verb(
        sub, "reverify", help="read a job's remote copies back and check them by SHA-256",
        description="Re-verify the objects a job put off-site: list the job's remote, read "
                    "back the objects due (every object with --all) and compare each "
                    "SHA-256 with the job's ledger (<state-dir>/verify/JOB.json); a "
                    "deleted, resized or changed object is damage. Runs of the job do the "
                    "same for a share of the objects each time (option verify_days). "
                    "--repair moves each damaged object aside as NAME.damaged-<UTC stamp> "
                    "(never deleting it) and uploads the local copy whose SHA-256 is the "
                    "recorded one, then reads it back. Progress goes to stderr.",
        epilog=output.epilog("2 damage found (or left unrepaired), or the remote could not "
                             "be read"))
    p.add_argument("job", metavar="JOB", help="the job whose remote copies are re-read")
    p.add_argument("--all", action="store_true",
                   help="re-read every object now, not only the ones due")
    p.add_argument("--repair", action="store_true",
                   help="re-upload damaged objects from a local copy with the recorded "
                        "SHA-256, after moving the damaged ones aside")
    p.add_argument("--forget", action="append", metavar="OBJECT",
                   help="stop tracking a damaged object that cannot be repaired (it is "
                        "moved aside on the remote, not deleted; repeatable)")
    p.add_argument("--wait", type=seconds, default=0.0, metavar="SECONDS",
                   help="wait this long for the job's lock (default 0)")
    p.set_defaults(func=cmd_reverify)
