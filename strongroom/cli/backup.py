"""`strongroom snapshot now | list | verify | restore | prune | protect`: immutable snapshots.

`strongroom backup ...` is the old name of the group: it still works, and warns.
"""

from pathlib import Path

from ..core.errors import ERROR, OK, WARNING, StrongroomError
from ..core.lock import seconds
from ..snapshots.take import need as _need
from ..snapshots.take import take
from . import jobfile, output
from .output import human_bytes, render

# `take` stays importable from here for what called it before it moved to the engine
__all__ = ["add_parser", "options", "take"]


def options(args, command="snapshot"):
    """The job's options (--job NAME, a snapshot job) overlaid by the command line."""
    opts = jobfile.options(args, command)
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


def cmd_protect(args):
    from .. import snapshots

    done = snapshots.protect(args.paths, append_only=args.append_only)
    flag = "+a" if args.append_only else "+i"
    message = f"chattr {flag} set on {len(done)} path(s)"
    output.say(args, message)
    return output.emit(args, OK, message, {"flag": flag, "paths": done})


def cmd_now(args):
    opts = options(args)
    _need(opts, "source", "dest")
    if getattr(args, "encrypt_to", None) and not getattr(args, "remote", None):
        raise StrongroomError("--encrypt-to seals the off-site copy: give --remote "
                              "REMOTE:PATH too")
    if getattr(args, "encrypt_to", None):  # a bad recipients file: said before the snapshot
        from ..upload.seal import Seal

        Seal(args.encrypt_to).check()
    output.progress(args, f"taking a snapshot of {opts['source']} into {opts['dest']}")
    rep = take(opts)
    c, b = rep["counts"], rep["bytes"]
    summary = (f"{rep['path']}: {c['files']} files ({human_bytes(b['source'])}) archived to "
               f"{human_bytes(b['archive'])}, {c['critical']} critical, {c['databases']} "
               f"database(s), {c['large_files']} large; immutable: {rep['applied']}; "
               f"{rep['durations_seconds']['total']:.1f}s")
    output.say(args, rep["id"])  # stdout carries the id alone, for scripts
    output.tell(args, summary)
    if getattr(args, "remote", None):  # the off-site copy a snapshot job makes, asked here
        rep["offsite"] = _offsite(args, opts, rep)
        output.tell(args, rep["offsite"]["message"])
    if rep.get("warning"):
        output.warn(rep["warning"])
    return output.emit(args, WARNING if rep.get("warning") else OK,
                       rep.get("warning") or f"snapshot {rep['id']} taken", rep)


def cmd_list(args):
    from .. import snapshots

    opts = options(args)
    _need(opts, "dest")
    dest = opts["dest"]
    rows = snapshots.list_snapshots(dest)
    message = f"{len(rows)} snapshot(s) in {dest}" if rows else f"no snapshots in {dest}"
    if rows:
        output.say(args, render(
            ["ID", "AGE", "SIZE", "IMMUTABLE", "LAST VERIFIED"],
            [[r["id"], _age(r["age_seconds"]), human_bytes(r["bytes"]), r["immutable"],
              f"{r['last_verified']} {r['last_result']}" if r["last_verified"] else "never"]
             for r in rows]))
    else:
        output.say(args, message)
    return output.emit(args, OK, message, {"dest": dest, "snapshots": rows})


def cmd_verify(args):
    from .. import snapshots

    opts = options(args)
    _need(opts, "dest")
    dest = opts["dest"]
    ids = args.ids or snapshots.snapshot_ids(dest)
    if not ids:
        message = f"{output.NOTHING_TO_VERIFY}: no snapshots in {dest}"
        output.say(args, message)
        return output.emit(args, WARNING, message, {"dest": dest, "snapshots": []})
    results = []
    for i in ids:
        output.progress(args, f"verifying {i}")
        results.append(snapshots.verify(dest, i))
    for r in results:
        output.say(args, f"{r['id']}: " + ("ok" if r["passed"] else "FAILED")
                   + f" ({r['checked']} files checked)", *[f"  {p}" for p in r["problems"]])
    bad = [r["id"] for r in results if not r["passed"]]
    message = (f"{len(results)} snapshot(s) verified"
               + (f"; FAILED: {', '.join(bad)}" if bad else ": all pass"))
    return output.emit(args, ERROR if bad else OK, message, {"dest": dest,
                                                              "snapshots": results})


def cmd_restore(args):
    target = output.restore_target(args)
    opts = options(args)
    if args.force and not args.only_critical:
        raise StrongroomError("--force is for --critical: a full restore always "
                              "moves the current target aside, never over it")
    if getattr(args, "remote", None):  # a new machine: the snapshot comes off-site
        return _restore_remote(args, opts, target)
    _need(opts, "dest")
    dest = opts["dest"]
    output.progress(args, f"restoring {'the critical files of ' if args.only_critical else ''}"
                          f"{args.id} into {target}")
    return _restore_from(args, dest, target)


def _restore_from(args, dest, target, note=None):
    from ..snapshots import restore as snapshot_restore

    if args.only_critical:
        out = snapshot_restore.restore_critical(dest, args.id, target, force=args.force)
        msg = _critical_message(out)
    else:
        out = snapshot_restore.restore_full(dest, args.id, target)
        msg = _full_message(out)
    if note:  # where it came from, and what opened it
        out["fetched_from"] = note
        msg = f"{msg}\n{note}"
    output.say(args, msg)
    return output.emit(args, OK, msg.splitlines()[0], out)


def _restore_remote(args, opts, target):
    """Fetch REMOTE:PATH/<id> into scratch under the state dir, open what it holds sealed
    (checked against the sidecars, then against SHA256SUMS by the restore itself) and
    restore from that copy alone; the scratch copy is removed whatever happens."""
    import tempfile

    from .. import snapshots
    from ..core import fsutil, remote
    from ..crypt import fetch

    if not snapshots.parse_id(args.id):
        raise StrongroomError(f"{args.id!r} is not a snapshot id")
    rc = remote.Rclone(remote.rclone_config(opts.get("rclone_config"), args.config_dir))
    where = remote.join(args.remote, args.id)
    state = Path(args.state_dir)
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    scratch = Path(tempfile.mkdtemp(prefix="snapshot-fetch-", dir=state))
    try:
        output.progress(args, f"fetching snapshot {args.id} from {where}")
        # a critical restore reads critical/ and the checksum lists only: the archive
        # (the bulk of the download) is left on the remote, and damage to it cannot stop
        # the restore of the files that matter most
        leave = [f"/{name}{suffix}" for name in snapshots.ARCHIVES.values()
                 for suffix in ("", fetch.AGE_NAME, fetch.SIDE_NAME)] \
            if args.only_critical else []
        opened = fetch.fetch_tree(rc, where, scratch / args.id,
                                  args.identity or opts.get("identity"),
                                  f"snapshot {args.id}", leave=leave)
        if not (scratch / args.id).is_dir():
            raise StrongroomError(f"no snapshot {args.id} on {args.remote}")
        which = "the critical files of " if args.only_critical else ""
        output.progress(args, f"restoring {which}{args.id} into {target}")
        said = fetch.said(opened)
        return _restore_from(args, scratch, target,
                             f"fetched from {where}" + (f"; {said}" if said else ""))
    finally:
        fsutil.rmtree_quiet(scratch)


def cmd_prune(args):
    from .. import snapshots

    opts = options(args)
    _need(opts, "dest")
    keep_last = args.keep_last if args.keep_last is not None else opts.get("keep_last", 7)
    keep_days = args.keep_days if args.keep_days is not None else opts.get("keep_days", 14)
    out = snapshots.prune(opts["dest"], keep_last, keep_days, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    message = (f"{verb} {len(out['deleted'])}: {', '.join(out['deleted']) or '-'}; "
               f"kept {len(out['kept'])}")
    output.say(args, message)
    for snap_id, why in sorted(out["in_use"].items()):
        output.say(args, f"  {snap_id}: {why}")  # deleted by a later prune, once it is read
    for p in out["problems"]:
        output.say(args, f"  {p}")
    return output.emit(args, ERROR if out["problems"] else OK,
                       "; ".join([message, *out["problems"]]), out)


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


def _offsite(args, opts, rep):
    """Copy the snapshot to --remote as REMOTE:PATH/<id>, immutable, proven by hash (and
    sealed with --encrypt-to or the job's encrypt_to)."""
    from ..core import remote
    from ..jobs import offsite

    o = dict(opts)
    if getattr(args, "encrypt_to", None):
        o["encrypt_to"] = str(Path(args.encrypt_to).absolute())
    up = offsite(jobfile.paths(args), o).run(rep["path"], remote.join(args.remote, rep["id"]),
                                             immutable=True)
    return {k: up[k] for k in ("dest", "files", "bytes_moved", "verified_by", "message")}


def add_parser(sub):
    _group(sub, "snapshot", help="immutable snapshots: now, list, verify, restore, prune, "
                                 "protect")
    _group(sub, "backup", help=None)  # the old name: hidden, still works, warns


def _group(sub, name, help):
    _, bsub = output.group(sub, name, help=help,
                           description=None if help else f'"{name}" is the old name of '
                                                         '"strongroom snapshot"')

    def common(p, source=False):
        p.add_argument("--job", help="take the options from this snapshot job")
        p.add_argument("--dest", help="the folder that holds the snapshots")
        if source:
            p.add_argument("--source", help="the folder to snapshot")

    now = output.verb(bsub, "now", help="take a snapshot; prints its id")
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
    now.add_argument("--remote", metavar="REMOTE:PATH",
                     help="also copy the snapshot there (as REMOTE:PATH/<id>, immutable), "
                          "verified by hash")
    now.add_argument("--encrypt-to", dest="encrypt_to", metavar="FILE",
                     help="with --remote: an age recipients file; the archive, critical/ and "
                          "db/ files go only as NAME.age (with a plain NAME.age.json "
                          "sidecar); SHA256SUMS, REPORT.json, MANIFEST.txt and "
                          "LARGE_FILES.txt stay plain")
    now.set_defaults(func=cmd_now)
    ls = output.verb(bsub, "list", help="id, age, size, immutable, last verified")
    common(ls)
    ls.set_defaults(func=cmd_list)
    v = output.verb(bsub, "verify", help="checksums, archive to the end, database integrity",
                    epilog=output.epilog("2 when a snapshot fails; 1 when there is none "
                                         "(nothing to verify)"))
    common(v)
    v.add_argument("ids", nargs="*", metavar="ID", help="default: every snapshot")
    v.set_defaults(func=cmd_verify)
    r = output.verb(bsub, "restore", help="critical files (paths kept) or the full tree")
    common(r)
    r.add_argument("id", metavar="ID")
    mode = r.add_mutually_exclusive_group(required=True)
    mode.add_argument("--critical", action="store_true", dest="only_critical",
                      help="only the critical files, each replaced atomically")
    mode.add_argument("--full", action="store_true", help="the whole tree; the current "
                      "target is moved aside first")
    output.add_to(r, "with --full, its current contents are moved aside first; with "
                     "--critical, each file is put back at its path under it")
    r.add_argument("--force", action="store_true",
                   help="with --critical: overwrite a differing file in the target instead "
                        "of keeping it beside the restored one as NAME.before-restore-TIME")
    r.add_argument("--remote", metavar="REMOTE:PATH",
                   help="restore from the off-site copy REMOTE:PATH/<ID> alone (a new "
                        "machine: no --dest needed)")
    r.add_argument("--rclone-config", dest="rclone_config", metavar="FILE",
                   help="rclone.conf to use (default <config-dir>/rclone.conf if present)")
    r.add_argument("--identity", metavar="FILE",
                   help="an age identity file (0600) that opens what the remote holds "
                        "sealed (default: the job's identity option)")
    r.set_defaults(func=cmd_restore)
    p = output.verb(bsub, "prune", help="delete old snapshots (lifting +i only on those)")
    common(p)
    p.add_argument("--keep-last", type=int, help="always keep the newest N (default 7)")
    p.add_argument("--keep-days", type=float, help="keep all younger than D days (default 14)")
    p.add_argument("--dry-run", action="store_true", help="say what would go")
    p.set_defaults(func=cmd_prune)
    pr = output.verb(bsub, "protect", help="chattr +i (or +a) files and trees")
    pr.add_argument("paths", nargs="+", metavar="PATH")
    pr.add_argument("--append-only", action="store_true", help="+a: may only grow (logs)")
    pr.set_defaults(func=cmd_protect)
