"""`strongroom db backup | list | restore KEY | sync | status | tick`.

Settings, strongest first: the command line (--db, --remote, --keep, --host), the job
file (--job NAME, type db_backup), then the environment: R2_ACCOUNT_ID, R2_ACCESS_KEY_ID,
R2_SECRET_ACCESS_KEY, R2_BUCKET_NAME (Cloudflare R2), or AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_BUCKET_NAME, AWS_REGION and optionally AWS_ENDPOINT_URL (S3 or
any S3-compatible store). Keys from the environment reach rclone through its own
environment (RCLONE_CONFIG_...), never its arguments.
"""

import argparse
import json
import os
import sys

from ..core.errors import ERROR, OK, WARNING, StrongroomError
from ..core.formats import human_bytes, render
from ..jobs import config

EPILOG = ("exit codes: 0 ok, 1 warning (offline: nothing changed; or a version without "
          "readable metadata, named), 2 error or conflict (nothing changed), 11 locked")
ENV_REMOTE = "strongroomenv"


def env_remote(environ=None):
    """(REMOTE:PATH, extra rclone environment) from R2_* or AWS_* variables, or (None, {})."""
    e = environ if environ is not None else os.environ
    pre = f"RCLONE_CONFIG_{ENV_REMOTE.upper()}_"
    if all(e.get(k) for k in ("R2_ACCOUNT_ID", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY",
                               "R2_BUCKET_NAME")):
        return f"{ENV_REMOTE}:{e['R2_BUCKET_NAME']}", {
            pre + "TYPE": "s3", pre + "PROVIDER": "Cloudflare",
            pre + "ACCESS_KEY_ID": e["R2_ACCESS_KEY_ID"],
            pre + "SECRET_ACCESS_KEY": e["R2_SECRET_ACCESS_KEY"],
            pre + "ENDPOINT": f"https://{e['R2_ACCOUNT_ID']}.r2.cloudflarestorage.com"}
    if all(e.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                               "AWS_BUCKET_NAME")):
        extra = {pre + "TYPE": "s3", pre + "ACCESS_KEY_ID": e["AWS_ACCESS_KEY_ID"],
                 pre + "SECRET_ACCESS_KEY": e["AWS_SECRET_ACCESS_KEY"],
                 pre + "REGION": e.get("AWS_REGION") or e.get("AWS_DEFAULT_REGION")
                 or "us-east-1",
                 pre + "PROVIDER": "Other" if e.get("AWS_ENDPOINT_URL") else "AWS"}
        if e.get("AWS_ENDPOINT_URL"):
            extra[pre + "ENDPOINT"] = e["AWS_ENDPOINT_URL"]
        return f"{ENV_REMOTE}:{e['AWS_BUCKET_NAME']}", extra
    return None, {}


def settings(args):
    """The merged settings and the DbSync they describe."""
    from ..core.remote import Rclone
    from ..dbversions import DbSync
    from .upload import rclone_config

    opts = {}
    if getattr(args, "job", None):
        opts = dict(config.load_job_of_type(args.config_dir, args.job, "db_backup")["options"])
    for key in ("db", "remote", "keep", "host", "rclone_config"):
        if getattr(args, key, None) is not None:
            opts[key] = getattr(args, key)
    extra_env = {}
    if not opts.get("remote"):
        opts["remote"], extra_env = env_remote()
    if not opts.get("db"):
        raise StrongroomError("--db FILE is required (or --job NAME)")
    if not opts.get("remote"):
        raise StrongroomError("--remote REMOTE:PATH is required (or --job NAME, or R2_* / "
                              "AWS_* variables: see `strongroom db --help`)")
    rc = Rclone(rclone_config(opts.get("rclone_config"), args.config_dir),
                retries=opts.get("retries", 3), low_level_retries=opts.get(
                    "low_level_retries", 3), extra_env=extra_env)
    return DbSync(opts["db"], opts["remote"], args.state_dir, rc, keep=opts.get("keep", 10),
                  host=opts.get("host"), ops_threshold=opts.get("ops_threshold", 10),
                  hours_threshold=opts.get("hours_threshold", 24))


def _emit(args, obj, text):
    if args.json:
        json.dump(obj, sys.stdout, indent=2, sort_keys=True, default=str)
        sys.stdout.write("\n")
    else:
        print(text)


def cmd_db(args):
    from ..dbversions import Conflict, unreadable_message

    d = settings(args)
    if args.verb == "list":
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
        _emit(args, rows, render(head, [
            [r["key"], human_bytes(r["size"]) if r.get("size") is not None else "-",
             r.get("reason", "-")][:len(head)] for r in rows])
            if rows else f"no versions under {d.prefix}")
        for line in bad:
            print(f"warning: {line}", file=sys.stderr)
        return WARNING if bad else OK
    if args.verb == "status":
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
        _emit(args, out, "\n".join(lines))
        return WARNING if out.get("offline") or out.get("unreadable") else OK
    with d.lock(args.wait):
        if args.verb == "backup":
            out = d.backup(reason=args.reason)
            _emit(args, out, f"unchanged: the newest version {out['key']} already holds this "
                  "content; nothing uploaded" if out["unchanged"] else
                  f"{out['key']} ({human_bytes(out['size'])}, "
                  f"{sum(out['tables'].values())} rows); pruned {len(out['pruned'])}"
                  + (f"; it replaces {out['replaces_unreadable']}, which has no readable "
                     "metadata, as the newest version" if out["replaces_unreadable"] else ""))
            return OK
        if args.verb == "restore":
            out = d.restore(args.key)
            _emit(args, out, f"restored {out['restored']}; the database before it is "
                  f"{out['pre_restore_backup'] or '(there was none)'}; now current: "
                  f"{out['current']}")
            return OK
        if args.verb == "sync":
            try:
                out = d.sync(dry_run=args.dry_run)
            except Conflict as exc:
                _emit(args, {"action": "conflict", "message": str(exc), "changed": False},
                      f"conflict: {exc}")
                return ERROR
            _emit(args, out, out["message"])
            return out["exit_code"]
        out = d.tick(args.ops)
        _emit(args, out, tick_text(out) or f"{out['ops']} operation(s) pending")
        return OK


def tick_text(out):
    """What a tick that fired did, or None when it was not due."""
    if not out["backup"]:
        return None
    if out["backup"]["unchanged"]:
        return (f"unchanged ({out['reason']}): the newest version {out['backup']['key']} "
                "already holds this content; nothing uploaded")
    return f"backed up ({out['reason']}): {out['backup']['key']}"


def add_parser(sub):
    p = sub.add_parser("db", help="versioned SQLite backups on object storage",
                       description=__doc__, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    psub = p.add_subparsers(dest="verb", required=True)
    verbs = {"backup": "a consistent, checked copy uploaded as a new version unless the "
             "newest already holds this content; keep N distinct",
             "list": "every version, oldest first", "restore": "back up the current "
             "database, then put KEY in place (checked) and make it current",
             "sync": "pull the newest version only if nothing local changed; push local "
             "changes; stop on a conflict", "status": "last backup, versions, checksums, "
             "pending operations", "tick": "count operations; back up after N or H hours"}
    for verb, text in verbs.items():
        v = psub.add_parser(verb, help=text, epilog=EPILOG)
        v.add_argument("--job", help="a db_backup job")
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
        v.add_argument("--json", action="store_true", help="machine-readable output")
        v.set_defaults(func=cmd_db)
        if verb == "backup":
            v.add_argument("--reason", default="manual", help="recorded in the metadata")
        if verb == "restore":
            v.add_argument("key", metavar="KEY")
        if verb == "sync":
            v.add_argument("--dry-run", action="store_true", help="say what it would do")
        if verb == "tick":
            v.add_argument("--ops", type=int, default=1, help="operations to count "
                           "(0: only the hours trigger)")
        if verb == "list":
            v.add_argument("--long", action="store_true", help="read each version's metadata")
