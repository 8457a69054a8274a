"""`strongroom rollup list | restore`: the daily folders and weekly rollups."""

import os
import tempfile
from pathlib import Path

from ..core import fsutil
from ..core.errors import OK, StrongroomError
from . import jobfile, output
from .output import human_bytes, render


def _options(args):
    opts = jobfile.options(args, "rollup")
    for key in ("dest", "remote", "rclone_config", "identity"):
        if getattr(args, key, None):
            opts[key] = getattr(args, key)
    if not opts.get("dest"):
        raise StrongroomError("--dest DIR is required (or --job NAME)")
    return opts


def cmd_list(args):
    from .. import rollups

    opts = _options(args)
    dest = Path(opts["dest"])
    state = rollups.read_state(dest)
    rows = [{"name": d, "kind": "day", "remote": (state["days"].get(d) or {}).get("remote"),
             "bytes": sum(os.lstat(dest / d / rel).st_size
                          for rel, is_dir in fsutil.walk(dest / d) if not is_dir)}
            for d in rollups.days(dest)]
    rows += [{"name": r, "kind": "rollup", "days": (state["rollups"].get(r) or {}).get(
        "days", []), "remote": (state["rollups"].get(r) or {}).get("remote"),
        "bytes": (dest / "rollups" / r).stat().st_size} for r in rollups.rollups(dest)]
    days = sum(r["kind"] == "day" for r in rows)
    message = (f"{days} day folder(s) and {len(rows) - days} rollup(s) in {dest}" if rows
               else f"no day folders or rollups in {dest}")
    output.say(args, render(["NAME", "KIND", "SIZE", "ON THE REMOTE"],
                            [[r["name"], r["kind"], human_bytes(r["bytes"]),
                              r["remote"] or "not yet"] for r in rows]) if rows else message)
    return output.emit(args, OK, message, {"dest": str(dest), "entries": rows})


def cmd_restore(args):
    from .. import rollups

    target = output.restore_target(args)
    opts = _options(args)
    dest = Path(opts["dest"])
    if not args.day and not args.rollup:
        raise StrongroomError("say --day YYYY-MM-DD or --rollup NAME")
    scratch = fetched = None

    def fetch(day, rollup_name):
        """Bring a day folder or a rollup from the remote into scratch space (what the
        remote holds sealed is checked against its sidecar and opened with the identity)."""
        nonlocal scratch, fetched
        from ..core import remote
        from ..crypt import fetch as unseal

        if not opts.get("remote"):
            raise StrongroomError("not found locally; give --remote REMOTE:PATH to fetch it")
        rc = remote.Rclone(remote.rclone_config(opts.get("rclone_config"), args.config_dir))
        scratch = Path(tempfile.mkdtemp(prefix=".fetch-", dir=dest))
        output.progress(args, f"fetching {rollup_name or day} from {opts['remote']}")
        if rollup_name:
            fetched = remote.join(opts["remote"], "rollups", rollup_name)
            unseal.fetch(rc, fetched, scratch / rollup_name, opts.get("identity"),
                         f"rollup {rollup_name}")
            return "rollup", scratch / rollup_name
        fetched = remote.join(opts["remote"], day)
        unseal.fetch_tree(rc, fetched, scratch / day, opts.get("identity"), f"day {day}")
        return "folder", scratch / day

    output.progress(args, f"restoring {args.day or args.rollup} into {target}")
    try:
        out = rollups.restore(dest, target, day=args.day, rollup=args.rollup, fetch=fetch)
    finally:
        if scratch:
            fsutil.rmtree_quiet(scratch)
    # fetched: the scratch copy is gone, so "from" names where it came from on the remote
    name = Path(out["from"]).name
    out["from"] = fetched or out["from"]
    out["fetched"] = bool(fetched)
    where = f"fetched from the remote ({fetched})" if fetched else "found locally"
    message = (f"restored {', '.join(out['days'])} from {name}, {where}, into "
               f"{out['target']}; every file matches its manifest")
    output.say(args, message)
    return output.emit(args, OK, message, out)


def add_parser(sub):
    _, rsub = output.group(sub, "rollup", help="daily folders and weekly rollups: list, "
                                               "restore",
                           epilog=output.epilog() + ". The daily and rollup jobs make them: "
                                  "strongroom run JOB (see its --date for a given day)")
    ls = output.verb(rsub, "list", help="day folders and rollups, and whether each is on the "
                                        "remote")
    rs = output.verb(rsub, "restore", help="a day or a whole rollup into a new directory, "
                                           "checked against the manifests",
                     epilog=output.epilog("2 error: nothing was written under the target"))
    for p in (ls, rs):
        p.add_argument("--job", help="a daily or rollup job (for dest and remote)")
        p.add_argument("--dest", help="the folder holding the day folders")
    ls.set_defaults(func=cmd_list)
    which = rs.add_mutually_exclusive_group()
    which.add_argument("--day", metavar="YYYY-MM-DD",
                       help="one day (from its folder or from its rollup)")
    which.add_argument("--rollup", metavar="NAME", help="every day of a rollup")
    output.add_to(rs, "a new directory")
    rs.add_argument("--remote", metavar="REMOTE:PATH",
                    help="fetch from here what is no longer local")
    rs.add_argument("--rclone-config", metavar="FILE")
    rs.add_argument("--identity", metavar="FILE",
                    help="an age identity file (0600) that opens what the remote holds "
                         "sealed (default: the job's identity option)")
    rs.set_defaults(func=cmd_restore)
