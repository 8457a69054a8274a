"""`strongroom rollup list | restore`: the daily folders and weekly rollups."""

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

from ..core import fsutil
from ..core.errors import OK, StrongroomError
from ..core.formats import human_bytes, render
from ..jobs import config

EPILOG = "exit codes: 0 ok, 2 error"
RESTORE_EPILOG = "exit codes: 0 ok, 2 error (nothing was written under the target)"
DATED_JOBS = ("daily", "rollup")


@contextlib.contextmanager
def dated_run(args):
    """`strongroom run JOB --date YYYY-MM-DD`: a daily or rollup job run now as on that day
    (a missed day caught up, or a test). Anything wrong with it exits 2 before the job
    starts: no status, no log, nothing written."""
    if not getattr(args, "date", None):
        yield
        return
    from .. import rollups

    day = rollups.parse_day(args.date)
    if args.if_due:
        raise StrongroomError("--date runs the job now as on that day; it does not go with "
                              "--if-due (which asks the schedule whether today's run is due)")
    kind = config.load_job(args.config_dir, args.job_name)["type"]
    if kind not in DATED_JOBS:
        raise StrongroomError(f"--date is for daily and rollup jobs; {args.job_name} is a "
                              f"{kind} job")
    with rollups.dated(day):
        yield


def _options(args):
    opts = {}
    if args.job:
        opts = dict(config.load_job_of_type(args.config_dir, args.job, "daily", "rollup")
                    ["options"])
    for key in ("dest", "remote", "rclone_config"):
        if getattr(args, key, None):
            opts[key] = getattr(args, key)
    if not opts.get("dest"):
        raise StrongroomError("--dest DIR is required (or --job NAME)")
    return opts


def cmd_rollup(args):
    from .. import rollups

    opts = _options(args)
    dest = Path(opts["dest"])
    if args.verb == "list":
        state = rollups.read_state(dest)
        rows = [{"name": d, "kind": "day", "remote": (state["days"].get(d) or {}).get("remote"),
                 "bytes": sum(os.lstat(dest / d / rel).st_size
                              for rel, is_dir in fsutil.walk(dest / d) if not is_dir)}
                for d in rollups.days(dest)]
        rows += [{"name": r, "kind": "rollup", "days": (state["rollups"].get(r) or {}).get(
            "days", []), "remote": (state["rollups"].get(r) or {}).get("remote"),
            "bytes": (dest / "rollups" / r).stat().st_size} for r in rollups.rollups(dest)]
        if args.json:
            json.dump(rows, sys.stdout, indent=2, sort_keys=True)
            sys.stdout.write("\n")
        else:
            print(render(["NAME", "KIND", "SIZE", "ON THE REMOTE"],
                         [[r["name"], r["kind"], human_bytes(r["bytes"]),
                           r["remote"] or "not yet"] for r in rows]) if rows
                  else f"no day folders or rollups in {dest}")
        return OK
    if not args.day and not args.rollup:
        raise StrongroomError("say --day YYYY-MM-DD or --rollup NAME")
    scratch = fetched = None

    def fetch(day, rollup_name):
        """Bring a day folder or a rollup from the remote into scratch space."""
        nonlocal scratch, fetched
        from ..core import remote
        from .upload import rclone_config

        if not opts.get("remote"):
            raise StrongroomError("not found locally; give --remote REMOTE:PATH to fetch it")
        rc = remote.Rclone(rclone_config(opts.get("rclone_config"), args.config_dir))
        scratch = Path(tempfile.mkdtemp(prefix=".fetch-", dir=dest))
        if rollup_name:
            fetched = remote.join(opts["remote"], "rollups", rollup_name)
            rc.run("copyto", fetched, str(scratch / rollup_name))
            return "rollup", scratch / rollup_name
        fetched = remote.join(opts["remote"], day)
        rc.run("copy", fetched, str(scratch / day))
        return "folder", scratch / day

    try:
        out = rollups.restore(dest, args.target, day=args.day, rollup=args.rollup,
                              fetch=fetch)
    finally:
        if scratch:
            fsutil.rmtree_quiet(scratch)
    # fetched: the scratch copy is gone, so "from" names where it came from on the remote
    name = Path(out["from"]).name
    out["from"] = fetched or out["from"]
    out["fetched"] = bool(fetched)
    if args.json:
        json.dump(out, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        where = f"fetched from the remote ({fetched})" if fetched else "found locally"
        print(f"restored {', '.join(out['days'])} from {name}, {where}, into "
              f"{out['target']}; every file matches its manifest")
    return OK


def add_parser(sub):
    r = sub.add_parser("rollup", help="daily folders and weekly rollups: list, restore",
                       epilog=f"{EPILOG}. The daily and rollup jobs make them: "
                              "strongroom run JOB (see its --date for a given day)")
    rsub = r.add_subparsers(dest="verb", required=True)
    for verb, text in (("list", "day folders and rollups, and whether each is on the remote"),
                       ("restore", "a day or a whole rollup into a new directory, checked "
                                   "against the manifests")):
        p = rsub.add_parser(verb, help=text,
                            epilog=RESTORE_EPILOG if verb == "restore" else EPILOG)
        p.add_argument("--job", help="a daily or rollup job (for dest and remote)")
        p.add_argument("--dest", help="the folder holding the day folders")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(func=cmd_rollup)
        if verb == "restore":
            which = p.add_mutually_exclusive_group()
            which.add_argument("--day", metavar="YYYY-MM-DD",
                               help="one day (from its folder or from its rollup)")
            which.add_argument("--rollup", metavar="NAME", help="every day of a rollup")
            p.add_argument("--target", required=True, help="a new directory")
            p.add_argument("--remote", metavar="REMOTE:PATH",
                           help="fetch from here what is no longer local")
            p.add_argument("--rclone-config", metavar="FILE")
