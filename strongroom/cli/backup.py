"""`strongroom backup now | list | verify | restore | prune | protect`: immutable snapshots."""

import json
import os
import sys

from ..core.errors import ERROR, OK, WARNING, StrongroomError
from ..core.formats import human_bytes, render
from ..core.lock import seconds
from ..jobs import config

EPILOG = "exit codes: 0 ok, 1 warning, 2 error, 11 locked by another run"


def _emit(obj):
    json.dump(obj, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def _size(text):
    """50M, 2G, 1048576 -> bytes."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    t = str(text).strip().lower().removesuffix("b").removesuffix("i")
    try:
        return int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(t)
    except (ValueError, IndexError):
        raise StrongroomError(f"not a size: {text!r} (say 50M, 2G or a byte count)") from None


def options(args):
    """The job's options (--job NAME) overlaid by the command line."""
    opts = {}
    if getattr(args, "job", None):
        opts = dict(config.load_job_of_type(args.config_dir, args.job, "snapshot")["options"])
    for key in ("source", "dest", "immutable", "format"):
        if getattr(args, key, None):
            opts[key] = getattr(args, key)
    for key in ("critical", "db", "exclude"):
        if getattr(args, key, None):
            opts[key] = list(opts.get(key) or []) + list(getattr(args, key))
    if getattr(args, "large", None):
        opts["large_threshold"] = args.large
    if getattr(args, "wait", None) is not None:  # beats the job's lock_wait, 0 included
        opts["lock_wait"] = args.wait
    return opts


def _need(opts, *keys):
    for key in keys:
        if not opts.get(key):
            raise StrongroomError(f"--{key} DIR is required (or --job NAME with '{key}' in "
                                  "its options)")


def take(opts):
    from .. import snapshots
    from ..core.lock import Lock

    _need(opts, "source", "dest")
    os.makedirs(opts["dest"], exist_ok=True)
    with Lock(os.path.join(opts["dest"], ".snapshot.lock"), f"snapshots in {opts['dest']}") \
            .acquire(opts.get("lock_wait", 0)):
        return snapshots.create(
            opts["source"], opts["dest"], critical=opts.get("critical") or [],
            dbs=opts.get("db") or [], exclude=opts.get("exclude") or [],
            immutable=opts.get("immutable", "warn"), fmt=opts.get("format", "zst"),
            large_threshold=_size(opts.get("large_threshold", snapshots.LARGE_DEFAULT)))


def cmd_backup(args):
    from .. import snapshots

    if args.verb == "protect":
        done = snapshots.protect(args.paths, append_only=args.append_only)
        flag = "+a" if args.append_only else "+i"
        if args.json:
            _emit({"flag": flag, "paths": done})
        else:
            print(f"chattr {flag} set on {len(done)} path(s)")
        return OK
    opts = options(args)
    if args.verb == "now":
        rep = take(opts)
        if args.json:
            _emit(rep)
        else:
            print(rep["id"])
            c, b = rep["counts"], rep["bytes"]
            print(f"{rep['path']}: {c['files']} files ({human_bytes(b['source'])}) archived to "
                  f"{human_bytes(b['archive'])}, {c['critical']} critical, {c['databases']} "
                  f"database(s), {c['large_files']} large; immutable: {rep['applied']}; "
                  f"{rep['durations_seconds']['total']:.1f}s", file=sys.stderr)
            if rep.get("warning"):
                print(f"warning: {rep['warning']}", file=sys.stderr)
        return WARNING if rep.get("warning") else OK
    _need(opts, "dest")
    dest = opts["dest"]
    if args.verb == "list":
        rows = snapshots.list_snapshots(dest)
        if args.json:
            _emit(rows)
            return OK
        if not rows:
            print(f"no snapshots in {dest}")
            return OK
        print(render(["ID", "AGE", "SIZE", "IMMUTABLE", "LAST VERIFIED"],
                     [[r["id"], _age(r["age_seconds"]), human_bytes(r["bytes"]), r["immutable"],
                       f"{r['last_verified']} {r['last_result']}" if r["last_verified"]
                       else "never"] for r in rows]))
        return OK
    if args.verb == "verify":
        ids = args.ids or snapshots.snapshot_ids(dest)
        if not ids:
            raise StrongroomError(f"no snapshots in {dest} to verify")
        results = [snapshots.verify(dest, i) for i in ids]
        if args.json:
            _emit(results)
        else:
            for r in results:
                print(f"{r['id']}: " + ("ok" if r["passed"] else "FAILED") +
                      f" ({r['checked']} files checked)")
                for p in r["problems"]:
                    print(f"  {p}")
        return OK if all(r["passed"] for r in results) else ERROR
    if args.verb == "restore":
        from ..snapshots import restore as snapshot_restore

        if args.only_critical:
            out = snapshot_restore.restore_critical(dest, args.id, args.target,
                                                    force=args.force)
            msg = _critical_message(out)
        else:
            if args.force:
                raise StrongroomError("--force is for --critical: a full restore always "
                                      "moves the current target aside, never over it")
            out = snapshot_restore.restore_full(dest, args.id, args.target)
            msg = _full_message(out)
        if args.json:
            _emit(out)
        else:
            print(msg)
        return OK
    if args.verb == "prune":
        keep_last = args.keep_last if args.keep_last is not None else opts.get("keep_last", 7)
        keep_days = args.keep_days if args.keep_days is not None else opts.get("keep_days", 14)
        out = snapshots.prune(dest, keep_last, keep_days, dry_run=args.dry_run)
        if args.json:
            _emit(out)
        else:
            verb = "would delete" if args.dry_run else "deleted"
            print(f"{verb} {len(out['deleted'])}: {', '.join(out['deleted']) or '-'}; "
                  f"kept {len(out['kept'])}")
            for snap_id, why in sorted(out["in_use"].items()):
                print(f"  {snap_id}: {why}")  # deleted by a later prune, once it is read
            for p in out["problems"]:
                print(f"  {p}")
        return ERROR if out["problems"] else OK
    raise StrongroomError(f"unknown verb {args.verb}")


def _critical_message(out):
    lines = [f"restored {len(out['restored'])} critical file(s) into {out['target']}"
             + (f"; {len(out['unchanged'])} already identical" if out["unchanged"] else "")]
    if out["moved_aside"]:
        lines.append("kept the differing file(s) the target held beside them:")
        lines += [f"  {rel} -> {aside}" for rel, aside in sorted(out["moved_aside"].items())]
    if out["overwritten"]:
        lines.append(f"overwrote {len(out['overwritten'])} differing file(s) (--force): "
                     + ", ".join(out["overwritten"][:10]))
    return "\n".join(lines)


def _full_message(out):
    lines = [f"restored {out['members']} entries and {len(out['databases'])} database(s) "
             f"into {out['target']}"
             + (f"; the previous contents are in {out['moved_aside']}"
                if out["moved_aside"] else "")]
    if out.get("snapshots_now_in"):
        lines.append(f"note: the snapshots were inside the target; they are now in "
                     f"{out['snapshots_now_in']}")
    if out["databases_not_in_tree"]:
        lines.append("note: database(s) from outside the source were not put into the tree; "
                     "they are in the snapshot as " + ", ".join(out["databases_not_in_tree"]))
    return "\n".join(lines)


def _age(seconds):
    if seconds < 0:
        return "in the future"
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= n:
            return f"{seconds // n}{unit}"
    return f"{seconds}s"


def add_parser(sub):
    b = sub.add_parser("backup", help="immutable snapshots: now, list, verify, restore, "
                       "prune, protect", epilog=EPILOG)
    bsub = b.add_subparsers(dest="verb", required=True)

    def common(p, source=False):
        p.add_argument("--job", help="take the options from this snapshot job")
        p.add_argument("--dest", help="the folder that holds the snapshots")
        if source:
            p.add_argument("--source", help="the folder to snapshot")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(func=cmd_backup)

    now = bsub.add_parser("now", help="take a snapshot; prints its id", epilog=EPILOG)
    common(now, source=True)
    now.add_argument("--critical", action="append", metavar="GLOB",
                     help="gitignore-style pattern of critical files (repeatable)")
    now.add_argument("--db", action="append", metavar="FILE",
                     help="a SQLite database to copy with the backup API (repeatable)")
    now.add_argument("--exclude", action="append", metavar="GLOB",
                     help="left out of the archive, besides node_modules, venv, .venv, "
                          "__pycache__ and .git")
    now.add_argument("--immutable", choices=["require", "warn", "off"],
                     help="chattr +i the snapshot: require fails without it, warn (the "
                          "default) records it")
    now.add_argument("--format", choices=["zst", "gz"], help="archive format (default zst)")
    now.add_argument("--large", metavar="SIZE", help="list files above this (default 50M)")
    now.add_argument("--wait", type=seconds, metavar="SECONDS",
                     help="wait this long for another snapshot's lock instead of exiting 11 "
                          "(default: the job's lock_wait, else 0)")
    ls = bsub.add_parser("list", help="id, age, size, immutable, last verified",
                         epilog=EPILOG)
    common(ls)
    v = bsub.add_parser("verify", help="checksums, archive to the end, database integrity",
                        epilog=EPILOG)
    common(v)
    v.add_argument("ids", nargs="*", metavar="ID", help="default: every snapshot")
    r = bsub.add_parser("restore", help="critical files (paths kept) or the full tree",
                        epilog=EPILOG)
    common(r)
    r.add_argument("id", metavar="ID")
    mode = r.add_mutually_exclusive_group(required=True)
    mode.add_argument("--critical", action="store_true", dest="only_critical",
                      help="only the critical files, each replaced atomically")
    mode.add_argument("--full", action="store_true", help="the whole tree; the current "
                      "target is moved aside first")
    r.add_argument("--target", required=True, help="where to restore")
    r.add_argument("--force", action="store_true",
                   help="with --critical: overwrite a differing file in the target instead "
                        "of keeping it beside the restored one as NAME.before-restore-TIME")
    p = bsub.add_parser("prune", help="delete old snapshots (lifting +i only on those)",
                        epilog=EPILOG)
    common(p)
    p.add_argument("--keep-last", type=int, help="always keep the newest N (default 7)")
    p.add_argument("--keep-days", type=float, help="keep all younger than D days (default 14)")
    p.add_argument("--dry-run", action="store_true", help="say what would go")
    pr = bsub.add_parser("protect", help="chattr +i (or +a) files and trees", epilog=EPILOG)
    pr.add_argument("paths", nargs="+", metavar="PATH")
    pr.add_argument("--append-only", action="store_true", help="+a: may only grow (logs)")
    pr.add_argument("--json", action="store_true", help="machine-readable output")
    pr.set_defaults(func=cmd_backup)
