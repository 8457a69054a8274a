"""`strongroom db backup | list | restore KEY | sync | status | tick`.

Settings, strongest first: the command line (--db, --remote, --keep, --host), the job
file (--job NAME, type db_backup), then the environment: R2_ACCOUNT_ID, R2_ACCESS_KEY_ID,
R2_SECRET_ACCESS_KEY, R2_BUCKET_NAME (Cloudflare R2), or AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_BUCKET_NAME, AWS_REGION and optionally AWS_ENDPOINT_URL (S3 or
any S3-compatible store). Keys from the environment reach rclone through its own
environment (RCLONE_CONFIG_...), never its arguments.
"""

import argparse

from ..core.errors import ERROR, OK, WARNING
from ..dbversions.settings import tick_text
from . import jobfile, output
from .output import human_bytes, render

EPILOG = output.epilog("1 offline (nothing changed), or a version without readable "
                       "metadata (named); 2 error or conflict (nothing changed)")


def settings(args):
    """The DbSync the job file and the command line describe."""
    from ..dbversions.settings import settings as db_settings

    opts = jobfile.options(args, "db")
    for key in ("db", "remote", "keep", "host", "rclone_config", "identity"):
        if getattr(args, key, None) is not None:
            opts[key] = getattr(args, key)
    return db_settings(opts, args.config_dir, args.state_dir)


def cmd_list(args, d):
    from ..dbversions import unreadable_message

    # the sizes come with the listing itself; only --long reads each version's metadata
    held = d.listing()
    rows, bad = [{"key": k, "size": held[k]} for k in sorted(held)], []
    if args.long or args.json:
        for row in rows:
            # one version without readable metadata is named; the others still list
            meta, problem = d.read_metadata(row["key"], row["size"])
            if meta is None:
                bad.append(unreadable_message(row["key"], problem))
                row.update(unreadable=problem)
            else:
                row.update(meta, key=row["key"])
    head = ["KEY", "SIZE", "REASON"] if args.long else ["KEY", "SIZE"]
    message = f"{len(rows)} version(s) under {d.prefix}" if rows else \
        f"no versions under {d.prefix}"
    output.say(args, render(head, [
        [r["key"], human_bytes(r["size"]) if r.get("size") is not None else "-",
         r.get("reason", "-")][:len(head)] for r in rows]) if rows else message)
    for line in bad:
        output.warn(line)
    return output.emit(args, WARNING if bad else OK, "; ".join([message, *bad]),
                       {"remote": d.prefix, "versions": rows})


def cmd_status(args, d):
    out = d.status()
    held = "unknown (offline)" if out.get("offline") else out["versions"]
    ours, theirs = (out["local_sha256"] or "-")[:12], (out.get("remote_sha256") or "-")[:12]
    lines = [f"database: {out['database']}", f"remote: {out['remote']}",
             f"versions held: {held}",
             f"last backup: {(out['last_backup'] or {}).get('key', 'never')}",
             f"local vs remote: {'same' if out['in_sync'] else 'different'} "
             f"({ours} / {theirs})",
             f"pending operations: {out['pending_ops']}"]
    lines += [f"warning: {u['message']}" for u in out.get("unreadable") or ()]
    if out.get("unreadable") and out.get("newest"):
        lines.append(f"remote content is that of {out['newest']}, the newest version "
                     "with readable metadata")
    output.say(args, "\n".join(lines))
    code = WARNING if out.get("offline") or out.get("unreadable") else OK
    message = (f"offline: cannot reach {out['remote']}" if out.get("offline") else
               "; ".join(u["message"] for u in out["unreadable"]) if out.get("unreadable")
               else f"{out['database']}: {held} version(s); local and remote "
                    f"{'the same' if out['in_sync'] else 'differ'}")
    return output.emit(args, code, message, out)


def cmd_db(args):
    from ..dbversions import Conflict

    d = settings(args)
    if args.verb == "list":
        return cmd_list(args, d)
    if args.verb == "status":
        return cmd_status(args, d)
    with d.lock(args.wait):
        if args.verb == "backup":
            output.progress(args, f"backing up {d.db} to {d.prefix}")
            out = d.backup(reason=args.reason)
            message = (f"unchanged: the newest version {out['key']} already holds this "
                       "content; nothing uploaded" if out["unchanged"] else
                       f"{out['key']} ({human_bytes(out['size'])}, "
                       f"{sum(out['tables'].values())} rows); pruned {len(out['pruned'])}"
                       + (f"; it replaces {out['replaces_unreadable']}, which has no "
                          "readable metadata, as the newest version"
                          if out["replaces_unreadable"] else ""))
            output.say(args, message)
            return output.emit(args, OK, message, out)
        if args.verb == "restore":
            output.progress(args, f"restoring {args.key} into {d.db}")
            out = d.restore(args.key)
            message = (f"restored {out['restored']}; the database before it is "
                       f"{out['pre_restore_backup'] or '(there was none)'}; now current: "
                       f"{out['current']}")
            output.say(args, message)
            return output.emit(args, OK, message, out)
        if args.verb == "sync":
            try:
                out = d.sync(dry_run=args.dry_run)
            except Conflict as exc:
                output.say(args, f"conflict: {exc}")
                return output.emit(args, ERROR, str(exc), {"action": "conflict",
                                                           "changed": False})
            output.say(args, out["message"])
            return output.emit(args, out["exit_code"], out["message"], out)
        out = d.tick(args.ops)
        message = tick_text(out) or f"{out['ops']} operation(s) pending"
        output.say(args, message)
        return output.emit(args, OK, message, out)


def add_parser(sub):
    p, psub = output.group(sub, "db", help="versioned SQLite backups on object storage",
                           description=__doc__, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = {"backup": "a consistent, checked copy uploaded as a new version unless the "
             "newest already holds this content; keep N distinct",
             "list": "every version, oldest first", "restore": "back up the current "
             "database, then put KEY in place (checked) and make it current",
             "sync": "pull the newest version only if nothing local changed; push local "
             "changes; stop on a conflict", "status": "last backup, versions, checksums, "
             "pending operations", "tick": "count operations; back up after N or H hours"}
    for verb, text in verbs.items():
        v = output.verb(psub, verb, help=text, epilog=EPILOG)
        v.add_argument("--job", help="a db job")
        v.add_argument("--db", metavar="FILE", help="the SQLite database")
        v.add_argument("--remote", metavar="REMOTE:PATH")
        v.add_argument("--keep", type=int, metavar="N",
                       help="distinct versions kept (default 10)")
        v.add_argument("--host", help="this machine's name in keys (default the hostname)")
        v.add_argument("--rclone-config", metavar="FILE",
                       help="default <config-dir>/rclone.conf when it exists")
        if verb not in ("list", "status"):  # the readers take no lock: --wait would be a no-op
            v.add_argument("--wait", type=float, default=30, metavar="SECONDS",
                           help="wait this long for another run on the same database")
        v.set_defaults(func=cmd_db)
        if verb == "backup":
            v.add_argument("--reason", default="manual", help="recorded in the metadata")
        if verb == "restore":
            v.add_argument("key", metavar="KEY")
            v.add_argument("--identity", metavar="FILE",
                           help="an age identity file (0600) that opens a version the remote "
                                "holds sealed (default: the job's identity option)")
        if verb == "sync":
            v.add_argument("--dry-run", action="store_true", help="say what it would do")
        if verb == "tick":
            v.add_argument("--ops", type=int, default=1, help="operations to count "
                           "(0: only the hours trigger)")
        if verb == "list":
            v.add_argument("--long", action="store_true", help="read each version's metadata")
    return p
