"""`strongroom bundle sync | verify | restore | list | consolidate`: git bundle chains."""

import argparse
import sys
from pathlib import Path

from ..core.errors import OK, WARNING, StrongroomError
from ..core.lock import seconds
from ..crypt import fetch
from . import jobfile, output
from .output import human_bytes, render


def _bundle_options(args):
    """Options from --job (the job file) overlaid by what the command line says."""
    from .. import bundles

    opts = jobfile.options(args, "bundle")
    for key in ("root", "store", "remote", "rclone_config", "full_every", "full_after_days",
                "keep_retired", "jobs", "encrypt_to", "identity"):
        value = getattr(args, key, None)
        if value is not None and key in ("encrypt_to", "identity"):
            # a file named on the command line is where the user stands, not in the config
            # dir, where a job file's relative paths are taken from
            value = str(Path(value).expanduser().absolute())
        if value is not None:
            opts[key] = value
    if getattr(args, "no_default_critical", False):
        opts["critical_patterns"] = []
    extra = getattr(args, "critical", None) or []
    if extra:
        from ..bundles.critical import DEFAULT_PATTERNS

        opts["critical_patterns"] = list(opts.get("critical_patterns", DEFAULT_PATTERNS)) + extra
    listing_remote = args.verb == "list" and getattr(args, "remote", None)
    for key in (() if listing_remote else ("store",)) + (("root",) if args.verb == "sync"
                                                          else ()):
        if not opts.get(key):
            raise StrongroomError(f"--{key} is required (or --job NAME with '{key}' in its "
                                  "options)")
    return bundles.options_from(opts, args.config_dir, getattr(args, "dry_run", False)), opts


def _sync_progress(args):
    if not output.progress_on(args):
        return None

    def show(i, total, res):
        sys.stderr.write(f"\r[{i}/{total}] {res.name}: {res.action}\033[K")
        if i == total:
            sys.stderr.write("\n")
        sys.stderr.flush()
    return show


def cmd_sync(args):
    from .. import bundles
    from ..bundles import report

    opts, raw = _bundle_options(args)
    results, code = bundles.sync(raw["root"], raw["store"], opts, names=args.name or None,
                                 lock_wait=args.wait, progress=_sync_progress(args))
    for r in results:  # errors go to stderr too, whatever stdout carries
        if r.status == "error":
            output.error(f"{r.name}: {r.message}")
    summary = report.sync_summary(results, raw["root"], opts.dry_run)
    table = report.sync_table(results, opts.remote)
    output.say(args, table or None, summary)
    return output.emit(args, code, summary, {
        "root": raw["root"], "store": raw["store"], "remote": opts.remote,
        "dry_run": opts.dry_run, "changed": any(r.changed for r in results),
        "repositories": [r.as_dict() for r in results]})


def cmd_verify(args):
    from .. import bundles

    opts, raw = _bundle_options(args)
    output.progress(args, f"verifying the chains in {raw['store']}: every hash, a restore "
                          "of each, git fsck")
    results, code = bundles.verify(raw["store"], opts, args.name or None, lock_wait=args.wait)
    data = {"store": raw["store"], "repositories": [r.as_dict() for r in results]}
    if not results:
        message = f"{output.NOTHING_TO_VERIFY}: no chains in {raw['store']}"
        output.say(args, message)
        return output.emit(args, WARNING, message, data)
    bad = [r.name for r in results if r.status == "error"]
    odd = [r.name for r in results if r.status == "warning"]
    message = (f"{len(results)} chains verified"
               + (f"; FAILED: {', '.join(bad)}" if bad else "")
               + (f"; restored, with something to look at: {', '.join(odd)}" if odd else "")
               + ("" if bad or odd else ": all restore and pass fsck."))
    output.say(args, render(["REPOSITORY", "STATUS", "FILES", "REFS", "SECONDS", "DETAIL"],
                            [[r.name, r.status, r.checked_files, r.refs, r.seconds, r.message]
                             for r in results]), message)
    return output.emit(args, code, message, data)


def cmd_restore(args):
    from .. import bundles

    target = args.target
    if target and args.to:
        output.usage_error(args, "give --to DIR once (the TARGET argument is its old form)")
    if target:
        output.deprecated("bundle restore NAME TARGET", "bundle restore NAME --to TARGET")
    target = target or args.to
    if not target:
        output.usage_error(args, "--to DIR is required (the directory to restore into)")
    opts, raw = _bundle_options(args)
    if opts.remote:  # a new machine restoring off-site: the store is made here
        Path(raw["store"]).mkdir(parents=True, exist_ok=True)
    elif not Path(raw["store"]).is_dir():
        raise StrongroomError(f"bundle store {raw['store']} does not exist (give --remote "
                              "REMOTE:PATH to restore from the off-site copy)")
    output.progress(args, f"restoring {args.name} into {target}")
    with bundles.Lock(Path(raw["store"]) / bundles.LOCK_NAME,
                      f"bundle store {raw['store']}").acquire(args.wait):
        out = bundles.restore(raw["store"], args.name, target, opts, force=args.force)
    message = (f"Restored {out['name']} into {out['target']}: {out['refs']} refs, HEAD "
               f"{out['head']}, {len(out['critical_files'])} critical file(s).")
    output.say(args, message)
    if out["moved_aside"]:
        output.say(args, f"The previous contents of the target were moved to "
                         f"{out['moved_aside']}.")
    for note in out["notes"]:
        output.warn(note)
    return output.emit(args, WARNING if out["notes"] else OK, message, out)


def cmd_list(args):
    from .. import bundles

    opts, raw = _bundle_options(args)
    where = args.remote or raw["store"]
    # --remote on the command line lists what the off-site copy holds (a new machine has
    # no store); a job's remote alone still lists the local store
    rows = bundles.list_remote(opts) if args.remote else bundles.list_store(raw["store"])
    bad = [r["name"] for r in rows if r["status"] != "ok"]
    code = WARNING if bad else OK
    message = (f"{len(rows)} chain(s) in {where}" + (f"; look at: {', '.join(bad)}" if bad
                                                     else "")) if rows else \
        f"No chains in {where}."
    if rows:
        output.say(args, render(
            ["REPOSITORY", "BUNDLES", "LAST SYNC", "LAST FULL", "SIZE", "REFS", "CRITICAL",
             "OFF-SITE"],
            [[r["name"], r.get("bundles", "?"), r.get("last_sync", r.get("message")),
              r.get("last_full", ""), human_bytes(r.get("bytes", 0)), r.get("refs", ""),
              f"{r['critical_files']} (sealed)" if r.get("critical_files")
              and r.get("critical_encrypted") else
              f"{r['critical_files']} (stored unencrypted)" if r.get("critical_files")
              else "-", ", ".join(r.get("remotes", [])) or "-"] for r in rows]))
    else:
        output.say(args, message)
    return output.emit(args, code, message, {"store": raw.get("store"), "remote": args.remote,
                                             "repositories": rows})


def cmd_consolidate(args):
    from .. import bundles

    opts, raw = _bundle_options(args)
    res = bundles.consolidate(raw["store"], args.name, opts, lock_wait=args.wait,
                              root=raw.get("root"))
    line = f"{res.name}: {res.action} ({res.status}) {res.message}".rstrip()
    output.say(args, line, *[f"  {note}" for note in res.notes])
    # the result's own message stays the object's message
    return output.emit(args, res.exit_code, res.message or line, res.as_dict())


def _common(p, store=True, wait=True):
    p.add_argument("--job", help="read options from <config-dir>/jobs/JOB.yml (a "
                                 "bundle job)")
    if store:
        p.add_argument("--store", help="the local bundle store")
    p.add_argument("--remote", help="rclone REMOTE:PATH holding the off-site copy")
    p.add_argument("--rclone-config", dest="rclone_config",
                   help="rclone.conf to use (default <config-dir>/rclone.conf if present)")
    if wait:
        p.add_argument("--wait", type=seconds, default=0.0, metavar="SECONDS",
                       help="wait this long for another run's lock instead of exiting 11")


def add_parser(sub):
    _, bsub = output.group(sub, "bundle", help="git bundle chains: sync, verify, restore, "
                                               "list, consolidate")

    s = output.verb(bsub, "sync", help="bundle every repository under --root into --store")
    _common(s)
    s.add_argument("--root", help="directory searched for git repositories")
    s.add_argument("--name", action="append", help="only this repository (repeatable)")
    s.add_argument("--critical", action="append", metavar="PATTERN",
                   help="extra gitignore-style pattern for critical ignored files")
    s.add_argument("--no-default-critical", action="store_true",
                   help="do not use the built-in critical patterns (.env, *.key, *.pem, ...)")
    s.add_argument("--full-every", dest="full_every", type=int,
                   help="incrementals before a fresh full bundle (default 10)")
    s.add_argument("--full-after-days", dest="full_after_days", type=float,
                   help="days before a fresh full bundle (default 30)")
    s.add_argument("--keep-retired", dest="keep_retired", type=int,
                   help="retired chains kept locally after consolidation (default 1)")
    s.add_argument("--jobs", type=int, help="repositories bundled in parallel (default: cores)")
    s.add_argument("--encrypt-to", dest="encrypt_to", metavar="FILE",
                   help="an age recipients file: bundles and critical-files packs go "
                        "off-site only as NAME.age (with a plain NAME.age.json sidecar); "
                        "chain and ref manifests stay plain")
    s.add_argument("--dry-run", action="store_true", help="say what would be done; write nothing")
    s.set_defaults(func=cmd_sync)

    v = output.verb(bsub, "verify", help="check every hash, restore each chain, git fsck",
                    epilog=output.epilog("1 also when the store holds no chain (nothing to "
                                         "verify)"))
    _common(v)
    v.add_argument("name", nargs="*", help="repositories to verify (default: all)")
    v.set_defaults(func=cmd_verify)

    r = output.verb(bsub, "restore", help="rebuild a repository from its chain")
    _common(r)
    r.add_argument("name", help="repository name, as shown by `bundle list`")
    r.add_argument("target", nargs="?", help=argparse.SUPPRESS)  # the old spelling
    output.add_to(r, "new or empty (with --force, its contents are moved aside)", old=None)
    r.add_argument("--force", action="store_true",
                   help="restore over a non-empty target (its contents are moved aside)")
    fetch.add_identity(r)
    r.set_defaults(func=cmd_restore)

    ls = output.verb(bsub, "list", help="chains in the store (or, with --remote, what the "
                                        "off-site copy holds)")
    _common(ls, wait=False)  # reads the store without its lock
    ls.set_defaults(func=cmd_list)

    c = output.verb(bsub, "consolidate", help="start a fresh chain for one repository now")
    _common(c)
    c.add_argument("--root", help="directory holding the repository (as for sync)")
    c.add_argument("name", help="repository name")
    c.set_defaults(func=cmd_consolidate)
