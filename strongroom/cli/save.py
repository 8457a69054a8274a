"""`strongroom checkpoint save | list | verify` and `strongroom hook install | uninstall`.

`strongroom save` and `strongroom checkpoints list | verify` are the old names: they still
work, and warn. `strongroom hook pre-push` is what git calls (hidden from --help).
"""

import os
import sys
from pathlib import Path

from ..checkpoints.take import take_checkpoint
from ..core.errors import ERROR, OK, WARNING, EmptySource, StrongroomError
from ..core.lock import seconds
from ..core.sizes import parse_size
from . import jobfile, output
from .output import human_bytes, render

__all__ = ["add_parser", "checkpoint_options", "take_checkpoint"]


def checkpoint_options(args):
    """The checkpoint job's options (--job NAME) overlaid by the command line."""
    opts = jobfile.options(args, "checkpoint")
    for key in ("source", "dest", "keep_days", "max_file_size"):
        if getattr(args, key, None) is not None:
            opts[key] = getattr(args, key)
    if getattr(args, "wait", None) is not None:  # beats the job's lock_wait, 0 included
        opts["lock_wait"] = args.wait
    return opts


def cmd_save(args):
    from .. import checkpoints

    opts = checkpoint_options(args)
    if opts.get("source"):
        output.progress(args, f"saving the uncommitted work of {opts['source']}")
    rep = take_checkpoint(opts)
    if rep["saved"]:
        message = (f"saved {len(rep['files'])} file(s) ({human_bytes(rep['bytes'])}), "
                   f"{len(rep['deleted'])} deletion(s) and the patch against "
                   f"{(rep['head'] or 'an empty repository')[:12]}")
        output.say(args, rep["path"])  # stdout carries the path alone, for scripts
        output.tell(args, f"{message}; {checkpoints.apply_hint(rep['path'])}")
    else:
        message = rep["reason"]
        output.say(args, message)
    for name, why in sorted(((rep.get("prune") or {}).get("in_use") or {}).items()):
        output.tell(args, f"{name}: {why}")  # kept this time, goes on a later run
    if rep.get("warning"):
        output.warn(rep["warning"])
    return output.emit(args, WARNING if rep.get("warning") else OK,
                       rep.get("warning") or message, rep)


def _dest(args):
    opts = checkpoint_options(args)
    if not opts.get("dest"):
        raise StrongroomError("--dest DIR is required (or --job NAME)")
    return opts["dest"]


def cmd_list(args):
    from .. import checkpoints

    dest = _dest(args)
    rows = checkpoints.list_checkpoints(dest)
    if rows:
        message = f"{len(rows)} checkpoint(s) in {Path(dest) / checkpoints.PROGRESS}"
        output.say(args, render(["NAME", "CREATED", "HEAD", "FILES", "DELETED", "SIZE"],
                                [[r["name"], r["created"], (r["head"] or "-")[:12], r["files"],
                                  r["deleted"], human_bytes(r["bytes"])] for r in rows]))
    else:
        message = f"no checkpoints in {Path(dest) / checkpoints.PROGRESS}"
        output.say(args, message)
    return output.emit(args, OK, message, {"dest": dest, "checkpoints": rows})


def cmd_verify(args):
    from .. import checkpoints

    dest = _dest(args)
    rows = checkpoints.list_checkpoints(dest)
    chosen = [r for r in rows if not args.names or r["name"] in args.names]
    missing = set(args.names or []) - {r["name"] for r in rows}
    if missing:
        raise StrongroomError(f"no checkpoint named {', '.join(sorted(missing))} in {dest}")
    if not chosen:
        message = (f"{output.NOTHING_TO_VERIFY}: no checkpoints in "
                   f"{Path(dest) / checkpoints.PROGRESS}")
        output.say(args, message)
        return output.emit(args, WARNING, message, {"dest": dest, "checkpoints": []})
    results = [{"name": r["name"], "problems": checkpoints.verify(r["path"])} for r in chosen]
    for r in results:
        output.say(args, f"{r['name']}: " + ("ok" if not r["problems"] else "FAILED"),
                   *[f"  {p}" for p in r["problems"]])
    bad = [r["name"] for r in results if r["problems"]]
    message = (f"{len(results)} checkpoint(s) verified"
               + (f"; FAILED: {', '.join(bad)}" if bad else ": all pass"))
    return output.emit(args, ERROR if bad else OK, message, {"dest": dest,
                                                              "checkpoints": results})


def cmd_hook(args):
    from ..checkpoints import prepush

    if args.verb == "install":
        if args.job:
            jobfile.load(args.config_dir, args.job, "hook")
        out = prepush.install(args.repo, parse_size(args.max_size), args.config_dir,
                              args.state_dir, job=args.job, dest=args.dest, force=args.force,
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
    output.say(args, msg)
    return output.emit(args, OK, msg, out)


def cmd_pre_push(args):
    """Called by git with the remote's name and URL, and one line per ref on stdin. What it
    says goes to stderr, where git shows it; --json prints the object on stdout."""
    from ..checkpoints import prepush
    from . import backup as cli_backup

    opts = cli_backup.options(args, "hook") if args.job else None  # its type checked first
    top = prepush._top(os.getcwd())
    lines = sys.stdin.read().splitlines()
    if opts is None:
        opts = {"source": str(top), "dest": args.dest}
    if args.wait is not None:
        opts["lock_wait"] = args.wait
    opts.setdefault("lock_wait", 120)  # a scheduled snapshot may be running
    output.tell(args, f"strongroom: taking a snapshot of {opts.get('source', top)} before "
                      "the push")
    try:
        rep = cli_backup.take(opts)
    except EmptySource as exc:
        # a work tree with no files has nothing to lose: the push goes on, said so
        output.warn(f"{exc}; no snapshot taken", prefix="strongroom: warning: ")
        rep = {"path": None}
    except (StrongroomError, OSError) as exc:
        message = f"push refused: the snapshot before the push failed: {exc}"
        print(f"strongroom: {message}\nFix that, or push with --no-verify to skip the hook "
              "once.", file=sys.stderr)
        return output.emit(args, ERROR, message)
    if rep.get("warning"):
        output.warn(rep["warning"], prefix="strongroom: warning: ")
    big = prepush.oversized(top, args.remote, lines, args.max_size)
    data = {"snapshot": rep["path"], "oversized": big}
    if big:
        refusal = prepush.refusal(big, args.max_size, rep["path"])
        print(refusal, file=sys.stderr)
        return output.emit(args, ERROR, refusal, data)
    taken = f"snapshot {rep['path']} taken" if rep["path"] else "no snapshot (nothing to save)"
    message = f"{taken}; no file above {human_bytes(args.max_size)} in this push"
    output.tell(args, f"strongroom: {message}")
    return output.emit(args, OK, message, data)


def _save_parser(sub, name, help):
    s = output.verb(sub, name, help=help, description=None if help else
                    '"save" is the old name of "strongroom checkpoint save"')
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
    s.set_defaults(func=cmd_save)


def _list_verify(csub):
    for verb, text, func in (("list", "name, time, head, files, size", cmd_list),
                             ("verify", "re-read every file against SHA256SUMS", cmd_verify)):
        p = output.verb(csub, verb, help=text, epilog=output.epilog(
            "2 when a checkpoint fails; 1 when there is none (nothing to verify)")
            if verb == "verify" else output.EPILOG)
        p.add_argument("--job", help="a checkpoint job (for its dest)")
        p.add_argument("--dest", help="the folder holding progress/")
        if verb == "verify":
            p.add_argument("names", nargs="*", metavar="NAME", help="default: all")
        p.set_defaults(func=func)


def add_parser(sub):
    _, csub = output.group(sub, "checkpoint", help="checkpoints of uncommitted work: save, "
                                                   "list, verify")
    _save_parser(csub, "save", help="checkpoint uncommitted work (changed and untracked "
                                    "files plus a patch)")
    _list_verify(csub)
    # the old names: hidden from --help, still working, with a warning
    _save_parser(sub, "save", help=None)
    _, old = output.group(sub, "checkpoints", help=None, description='"checkpoints" is the '
                          'old name of "strongroom checkpoint"')
    _list_verify(old)

    _, hsub = output.group(sub, "hook", help="the git pre-push hook: snapshot first, refuse "
                                             "big files")
    i = output.verb(hsub, "install", help="install the pre-push hook in a repository")
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
    u = output.verb(hsub, "uninstall", help="remove the hook (and put back a replaced one)")
    u.add_argument("--repo", required=True, help="the git work tree")
    for p in (i, u):
        p.add_argument("--dry-run", action="store_true", help="say what would change")
        p.set_defaults(func=cmd_hook)
    # called by git (hidden from --help)
    pp = output.verb(hsub, "pre-push", description="(called by git) snapshot, then check "
                                                   "the push")
    pp.add_argument("remote", nargs="?", default="", help="the remote's name (from git)")
    pp.add_argument("url", nargs="?", default="", help="the remote's URL (from git)")
    pp.add_argument("--max-size", type=int, required=True, metavar="BYTES")
    pp.add_argument("--wait", type=seconds, metavar="SECONDS",
                    help="wait this long for the snapshot lock (default: the job's "
                         "lock_wait, else 120)")
    group = pp.add_mutually_exclusive_group(required=True)
    group.add_argument("--job")
    group.add_argument("--dest")
    pp.set_defaults(func=cmd_pre_push)
