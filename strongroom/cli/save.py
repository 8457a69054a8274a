"""`strongroom save`, `strongroom checkpoints list|verify` and `strongroom hook ...`."""

import json
import os
import sys
from pathlib import Path

from ..core.errors import ERROR, OK, WARNING, StrongroomError
from ..core.formats import human_bytes, render
from ..core.lock import seconds
from ..jobs import config
from .backup import _size

EPILOG = "exit codes: 0 ok, 1 warning, 2 error, 11 locked by another run"


def _emit(obj):
    json.dump(obj, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def checkpoint_options(args):
    """The checkpoint job's options (--job NAME) overlaid by the command line."""
    opts = {}
    if getattr(args, "job", None):
        opts = dict(config.load_job_of_type(args.config_dir, args.job, "checkpoint")["options"])
    for key in ("source", "dest", "keep_days", "max_file_size"):
        if getattr(args, key, None) is not None:
            opts[key] = getattr(args, key)
    if getattr(args, "wait", None) is not None:  # beats the job's lock_wait, 0 included
        opts["lock_wait"] = args.wait
    return opts


def take_checkpoint(opts):
    """Save (under the lock), then prune when keep_days is set. Returns the report."""
    from .. import checkpoints
    from ..core.lock import Lock

    for key in ("source", "dest"):
        if not opts.get(key):
            raise StrongroomError(f"--{key} DIR is required (or --job NAME with '{key}' in "
                                  "its options)")
    dest = Path(opts["dest"]).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    with Lock(dest / ".checkpoint.lock", f"checkpoints in {dest}") \
            .acquire(opts.get("lock_wait", 0)):
        rep = checkpoints.save(Path(opts["source"]).expanduser(), dest,
                               max_file_size=_size(opts.get("max_file_size",
                                                            checkpoints.MAX_FILE_DEFAULT)))
        if opts.get("keep_days") is not None:
            rep["prune"] = checkpoints.prune(dest, float(opts["keep_days"]))
    if rep["skipped"]:
        rep["warning"] = (f"{len(rep['skipped'])} file(s) above the size limit were left out: "
                          + ", ".join(s["path"] for s in rep["skipped"][:5]))
    return rep


def cmd_save(args):
    from .. import checkpoints

    rep = take_checkpoint(checkpoint_options(args))
    if args.json:
        _emit(rep)
    elif rep["saved"]:
        print(rep["path"])
        print(f"saved {len(rep['files'])} file(s) ({human_bytes(rep['bytes'])}), "
              f"{len(rep['deleted'])} deletion(s) and the patch against "
              f"{(rep['head'] or 'an empty repository')[:12]}; "
              f"{checkpoints.apply_hint(rep['path'])}", file=sys.stderr)
    else:
        print(rep["reason"])
    if not args.json:
        for name, why in sorted(((rep.get("prune") or {}).get("in_use") or {}).items()):
            print(f"{name}: {why}", file=sys.stderr)  # kept this time, goes on a later run
    if rep.get("warning") and not args.json:
        print(f"warning: {rep['warning']}", file=sys.stderr)
    return WARNING if rep.get("warning") else OK


def cmd_checkpoints(args):
    from .. import checkpoints

    opts = checkpoint_options(args)
    if not opts.get("dest"):
        raise StrongroomError("--dest DIR is required (or --job NAME)")
    rows = checkpoints.list_checkpoints(opts["dest"])
    if args.verb == "list":
        if args.json:
            _emit(rows)
        elif not rows:
            print(f"no checkpoints in {Path(opts['dest']) / checkpoints.PROGRESS}")
        else:
            print(render(["NAME", "CREATED", "HEAD", "FILES", "DELETED", "SIZE"],
                         [[r["name"], r["created"], (r["head"] or "-")[:12], r["files"],
                           r["deleted"], human_bytes(r["bytes"])] for r in rows]))
        return OK
    chosen = [r for r in rows if not args.names or r["name"] in args.names]
    missing = set(args.names or []) - {r["name"] for r in rows}
    if missing:
        raise StrongroomError(f"no checkpoint named {', '.join(sorted(missing))} in "
                              f"{opts['dest']}")
    results = [{"name": r["name"], "problems": checkpoints.verify(r["path"])} for r in chosen]
    if args.json:
        _emit(results)
    else:
        for r in results:
            print(f"{r['name']}: " + ("ok" if not r["problems"] else "FAILED"))
            for p in r["problems"]:
                print(f"  {p}")
    return ERROR if any(r["problems"] for r in results) else OK


def cmd_hook(args):
    from ..checkpoints import prepush

    if args.verb == "pre-push":
        return _pre_push(args)
    if args.verb == "install":
        out = prepush.install(args.repo, _size(args.max_size), args.config_dir, args.state_dir,
                              job=args.job, dest=args.dest, force=args.force,
                              dry_run=args.dry_run)
        where = out["snapshot"].get("job") or out["snapshot"].get("dest")
        msg = (f"{'would install' if args.dry_run else 'installed'} {out['hook']}"
               if out["changed"] else f"{out['hook']} is already installed")
        msg += f" (files above {human_bytes(out['max_size'])} refused; snapshots: {where})"
        if out["replaced"]:
            msg += f"; the previous hook is kept as {out['replaced']}"
    else:
        out = prepush.uninstall(args.repo, dry_run=args.dry_run)
        msg = (f"{'would remove' if args.dry_run else 'removed'} {out['hook']}"
               if out["changed"] else f"no Strongroom hook in {out['hook']}")
    if args.json:
        _emit(out)
    else:
        print(msg)
    return OK


def _pre_push(args):
    """Called by git with the remote's name and URL, and one line per ref on stdin."""
    from ..checkpoints import prepush
    from . import backup as cli_backup

    top = prepush._top(os.getcwd())
    lines = sys.stdin.read().splitlines()
    opts = cli_backup.options(args) if args.job else {"source": str(top), "dest": args.dest}
    if args.wait is not None:
        opts["lock_wait"] = args.wait
    opts.setdefault("lock_wait", 120)  # a scheduled snapshot may be running
    print(f"strongroom: taking a snapshot of {opts.get('source', top)} before the push",
          file=sys.stderr)
    try:
        rep = cli_backup.take(opts)
    except (StrongroomError, OSError) as exc:
        print(f"strongroom: push refused: the snapshot before the push failed: {exc}\n"
              "Fix that, or push with --no-verify to skip the hook once.", file=sys.stderr)
        return ERROR
    if rep.get("warning"):
        print(f"strongroom: warning: {rep['warning']}", file=sys.stderr)
    big = prepush.oversized(top, args.remote, lines, args.max_size)
    if big:
        print(prepush.refusal(big, args.max_size, rep["path"]), file=sys.stderr)
        return ERROR
    print(f"strongroom: snapshot {rep['path']} taken; no file above "
          f"{human_bytes(args.max_size)} in this push", file=sys.stderr)
    return OK


def add_parser(sub):
    s = sub.add_parser("save", help="checkpoint uncommitted work (changed and untracked files "
                       "plus a patch)", epilog=EPILOG)
    s.add_argument("--job", help="take the options from this checkpoint job")
    s.add_argument("--source", help="the git work tree")
    s.add_argument("--dest", help="checkpoints go to DEST/progress/YYYY/MM/DD/ckpt-<time>")
    s.add_argument("--max-file-size", metavar="SIZE",
                   help="leave out (and warn about) files above this (default 50M)")
    s.add_argument("--keep-days", type=float, metavar="D",
                   help="then delete checkpoints older than D days (the newest always stays)")
    s.add_argument("--wait", type=seconds, metavar="SECONDS",
                   help="wait this long for another save's lock instead of exiting 11 "
                        "(default: the job's lock_wait, else 0)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_save)

    c = sub.add_parser("checkpoints", help="list or verify checkpoints", epilog=EPILOG)
    csub = c.add_subparsers(dest="verb", required=True)
    for verb, text in (("list", "name, time, head, files, size"),
                       ("verify", "re-read every file against SHA256SUMS")):
        p = csub.add_parser(verb, help=text, epilog=EPILOG)
        p.add_argument("--job", help="a checkpoint job (for its dest)")
        p.add_argument("--dest", help="the folder holding progress/")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        if verb == "verify":
            p.add_argument("names", nargs="*", metavar="NAME", help="default: all")
        p.set_defaults(func=cmd_checkpoints)

    h = sub.add_parser("hook", help="the git pre-push hook: snapshot first, refuse big files",
                       epilog=EPILOG)
    hsub = h.add_subparsers(dest="verb", required=True)
    i = hsub.add_parser("install", help="install the pre-push hook in a repository",
                        epilog=EPILOG)
    i.add_argument("--repo", required=True, help="the git work tree")
    i.add_argument("--max-size", default="50M", metavar="SIZE",
                   help="refuse pushes carrying a file above this (default 50M)")
    where = i.add_mutually_exclusive_group()
    where.add_argument("--job", help="snapshot with this snapshot job (default: the one whose "
                       "source is the repository, if any)")
    where.add_argument("--dest", help="snapshot into this folder (default "
                       "<state-dir>/pre-push/<repository name>)")
    i.add_argument("--force", action="store_true",
                   help="replace another pre-push hook (kept as pre-push.before-strongroom)")
    u = hsub.add_parser("uninstall", help="remove the hook (and put back a replaced one)",
                        epilog=EPILOG)
    u.add_argument("--repo", required=True, help="the git work tree")
    for p in (i, u):
        p.add_argument("--dry-run", action="store_true", help="say what would change")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(func=cmd_hook)
    pp = hsub.add_parser("pre-push", help="(called by git) snapshot, then check the push")
    pp.add_argument("remote", nargs="?", default="", help="the remote's name (from git)")
    pp.add_argument("url", nargs="?", default="", help="the remote's URL (from git)")
    pp.add_argument("--max-size", type=int, required=True, metavar="BYTES")
    pp.add_argument("--wait", type=seconds, metavar="SECONDS",
                    help="wait this long for the snapshot lock (default: the job's "
                         "lock_wait, else 120)")
    group = pp.add_mutually_exclusive_group(required=True)
    group.add_argument("--job")
    group.add_argument("--dest")
    pp.set_defaults(func=cmd_hook)
