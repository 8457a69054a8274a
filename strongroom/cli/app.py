"""`strongroom ...`: the command the schedulers call and people type.

Tables for people, --json for machines. Exit codes: 0 ok, 1 warning, 2 error,
3 incomplete (some items failed, the rest done), 11 locked.
"""

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from .. import __version__
from ..bundles import report
from ..core import paths
from ..core.errors import ERROR, OK, WARNING, StrongroomError
from ..core.formats import human_bytes, render
from ..core.lock import seconds
from ..jobs import config
from . import backup as cli_backup
from . import bisync as cli_bisync
from . import db as cli_db
from . import rollup as cli_rollup
from . import save as cli_save
from . import upload as cli_upload

EPILOG = "exit codes: 0 ok, 1 warning, 2 error, 3 incomplete, 11 locked by another run"


def _emit_json(obj):
    json.dump(obj, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def _progress(i, total, res):
    if sys.stderr.isatty():
        sys.stderr.write(f"\r[{i}/{total}] {res.name}: {res.action}\033[K")
        if i == total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _bundle_options(args):
    """Options from --job (the job file) overlaid by what the command line says."""
    from .. import bundles

    opts = {}
    if getattr(args, "job", None):
        job = config.load_job(args.config_dir, args.job)
        opts = dict(job["options"])
    for key in ("root", "store", "remote", "rclone_config", "full_every", "full_after_days",
                "keep_retired", "jobs"):
        value = getattr(args, key, None)
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


def cmd_sync(args):
    from .. import bundles

    opts, raw = _bundle_options(args)
    results, code = bundles.sync(raw["root"], raw["store"], opts, names=args.name or None,
                                 lock_wait=args.wait, progress=_progress)
    for r in results:  # errors go to stderr too, whatever stdout carries
        if r.status == "error":
            print(f"strongroom: error: {r.name}: {r.message}", file=sys.stderr)
    if args.json:
        _emit_json({"root": raw["root"], "store": raw["store"], "remote": opts.remote,
                    "dry_run": opts.dry_run, "exit_code": code,
                    "changed": any(r.changed for r in results),
                    "repositories": [r.as_dict() for r in results]})
        return code
    table = report.sync_table(results, opts.remote)
    if table:
        print(table)
    print(report.sync_summary(results, raw["root"], opts.dry_run))
    return code


def cmd_verify(args):
    from .. import bundles

    opts, raw = _bundle_options(args)
    results, code = bundles.verify(raw["store"], opts, args.name or None, lock_wait=args.wait)
    if args.json:
        _emit_json({"store": raw["store"], "exit_code": code,
                    "repositories": [r.as_dict() for r in results]})
        return code
    if not results:
        print(f"No chains in {raw['store']}: nothing to verify.")
        return code
    print(render(["REPOSITORY", "STATUS", "FILES", "REFS", "SECONDS", "DETAIL"],
                 [[r.name, r.status, r.checked_files, r.refs, r.seconds, r.message]
                  for r in results]))
    bad = [r.name for r in results if r.status == "error"]
    odd = [r.name for r in results if r.status == "warning"]
    print(f"{len(results)} chains verified"
          + (f"; FAILED: {', '.join(bad)}" if bad else "")
          + (f"; restored, with something to look at: {', '.join(odd)}" if odd else "")
          + ("" if bad or odd else ": all restore and pass fsck."))
    return code


def cmd_restore(args):
    from .. import bundles

    opts, raw = _bundle_options(args)
    if opts.remote:  # a new machine restoring off-site: the store is made here
        Path(raw["store"]).mkdir(parents=True, exist_ok=True)
    elif not Path(raw["store"]).is_dir():
        raise StrongroomError(f"bundle store {raw['store']} does not exist (give --remote "
                              "REMOTE:PATH to restore from the off-site copy)")
    with bundles.Lock(Path(raw["store"]) / bundles.LOCK_NAME,
                      f"bundle store {raw['store']}").acquire(args.wait):
        out = bundles.restore(raw["store"], args.name, args.target, opts, force=args.force)
    if args.json:
        _emit_json(out)
        return OK
    print(f"Restored {out['name']} into {out['target']}: {out['refs']} refs, HEAD "
          f"{out['head']}, {len(out['critical_files'])} critical file(s).")
    if out["moved_aside"]:
        print(f"The previous contents of the target were moved to {out['moved_aside']}.")
    for note in out["notes"]:
        print(f"warning: {note}", file=sys.stderr)
    return WARNING if out["notes"] else OK


def cmd_list(args):
    from .. import bundles

    opts, raw = _bundle_options(args)
    where = args.remote or raw["store"]
    # --remote on the command line lists what the off-site copy holds (a new machine has
    # no store); a job's remote alone still lists the local store
    rows = bundles.list_remote(opts) if args.remote else bundles.list_store(raw["store"])
    if args.json:
        _emit_json({"store": raw.get("store"), "remote": args.remote, "repositories": rows})
        return WARNING if any(r["status"] != "ok" for r in rows) else OK
    if not rows:
        print(f"No chains in {where}.")
        return OK
    print(render(["REPOSITORY", "BUNDLES", "LAST SYNC", "LAST FULL", "SIZE", "REFS",
                  "CRITICAL", "OFF-SITE"],
                 [[r["name"], r.get("bundles", "?"), r.get("last_sync", r.get("message")),
                   r.get("last_full", ""), human_bytes(r.get("bytes", 0)), r.get("refs", ""),
                   f"{r['critical_files']} (stored unencrypted)" if r.get("critical_files")
                   else "-", ", ".join(r.get("remotes", [])) or "-"] for r in rows]))
    return WARNING if any(r["status"] != "ok" for r in rows) else OK


def cmd_consolidate(args):
    from .. import bundles

    opts, raw = _bundle_options(args)
    res = bundles.consolidate(raw["store"], args.name, opts, lock_wait=args.wait,
                              root=raw.get("root"))
    if args.json:
        _emit_json(res.as_dict())
    else:
        print(f"{res.name}: {res.action} ({res.status}) {res.message}".rstrip())
        for note in res.notes:
            print(f"  {note}")
    return res.exit_code


def cmd_config_check(args):
    data, where = config.check_file(args.file, args.name_as)
    print(f"{where}: valid {data['type']} job '{data['name']}'")
    return OK


def cmd_schedule_explain(args):
    from datetime import datetime

    from .. import schedule

    spec = args.spec
    if args.jitter:
        spec = schedule.with_jitter(spec, args.seed, args.jitter)
    out = schedule.explain(spec, datetime.now().replace(second=0, microsecond=0), args.count)
    if args.spec != spec:
        out["requested"] = args.spec
    if args.json:
        _emit_json(out)
        return OK
    print(f"schedule: {spec}" + (f"   (from '{args.spec}', jitter for {args.seed})"
                                 if args.spec != spec else ""))
    print(f"period:   {out['period_seconds'] // 60} min between runs at most")
    for key in ("cron", "anacron", "systemd", "launchd"):
        value = out[key]
        if value is None:
            print(f"{key}: refused: {out[key + '_refused']}")
        elif key == "cron":
            print(f"cron:     {value}")
        elif key == "anacron":
            print(f"anacron:  period {value['period']}, delay {value['delay']} min")
        else:
            print(f"{key}:  {json.dumps(value)}")
    print("next:     " + "\n          ".join(out["next"]))
    return OK


def _job_paths(args):
    from ..jobs import Paths

    return Paths(args.config_dir, args.state_dir, args.log_dir)


def cmd_run(args):
    from .. import jobs

    with cli_rollup.dated_run(args):  # --date: checked here, then seen by the job
        code, status, output = jobs.run(_job_paths(args), args.job_name, if_due=args.if_due,
                                        wait=args.wait)
    if args.json:
        _emit_json({"exit_code": code, "status": status, "output": output})
    elif output:
        print(output)
    return code


def cmd_jobs_list(args):
    from .. import jobs

    rows = jobs.list_jobs(_job_paths(args))
    if args.json:
        _emit_json({"config_dir": args.config_dir, "jobs": rows})
    elif not rows:
        print(f"No jobs in {Path(args.config_dir) / 'jobs'}.")
    else:
        print(render(["JOB", "TYPE", "SCHEDULE", "LAST RESULT", "LAST RUN", "LAST SUCCESS",
                      "NEXT DUE"],
                     [[r["job"], r.get("type", "-"), r.get("schedule", "-"),
                       r.get("last_result", "INVALID"), r.get("last_run") or "-",
                       r.get("last_success") or "-",
                       ("due now" if r.get("due") else (r.get("next_due") or "-"))
                       if r["valid"] else r["error"]] for r in rows]))
    return ERROR if any(not r["valid"] for r in rows) else OK


def cmd_notify_test(args):
    from .. import notify

    targets, results, notes = notify.test_all(args.config_dir, args.severity)
    failed = [r["target"] for r in results if not r["delivered"]]
    if args.json:
        _emit_json({"targets": len(targets), "results": results, "notes": notes,
                    "failed": failed})
    else:
        for note in notes:
            print(f"warning: {note}")
        if not targets:
            print(f"No notification targets in {Path(args.config_dir) / 'notify.yml'}.")
        for r in results:
            print(f"{r['target']}: {'delivered' if r['delivered'] else 'FAILED'}")
    if failed:
        print(f"strongroom: error: notification failed for: {', '.join(failed)}",
              file=sys.stderr)
        return ERROR
    return WARNING if not targets or notes else OK


def cmd_status(args):
    from .. import status

    paths_ = _job_paths(args)
    rows = status.rows(paths_, factor=args.stale_factor)
    if args.prometheus:
        status.write_prometheus(args.prometheus, rows)
    sent = status.notify_stale(paths_, rows) if args.notify else []
    stale = [r["job"] for r in rows if r["stale"]]
    if args.json:
        _emit_json({"jobs": rows, "stale": stale, "notifications": sent})
    elif not rows:
        print(f"No jobs in {Path(args.config_dir) / 'jobs'}.")
    else:
        print(render(["JOB", "RESULT", "WHEN", "AGE", "DURATION", "NEXT DUE", "STALE"],
                     [[r["job"], r.get("result", "INVALID"), r.get("finished") or "-",
                       status.human_age(r.get("age_seconds")),
                       f"{r['duration_seconds']}s" if r.get("duration_seconds") is not None
                       else "-", "due now" if r.get("due") else (r.get("next_due") or "-"),
                       "STALE" if r["stale"] else "no"] for r in rows]))
        for n in sent:
            if not n["delivered"]:
                print(f"stale alert to {n['target']}: FAILED")
    if any(not r["valid"] for r in rows):
        for r in rows:  # the table says INVALID; this says why, and which file
            if not r["valid"]:
                print(f"strongroom: error: {r['error']}", file=sys.stderr)
        return ERROR
    return WARNING if (args.stale and stale) else OK


def _drill_progress(art):
    if sys.stderr.isatty():
        sys.stderr.write(f"{art.job}/{art.name} ({art.source}): {art.result} "
                         f"in {art.duration_seconds:.1f}s\n")


def cmd_drill(args):
    from .. import bundles, drill

    if args.store:
        opts = bundles.options_from({"remote": args.remote,
                                     "rclone_config": args.rclone_config}, args.config_dir)
        wanted = ("local", "remote") if args.source == "both" else (args.source,)
        if "remote" in wanted and not opts.remote:
            raise StrongroomError(f"--source {args.source} needs --remote")
        plan_list, notes = [drill.Plan("-", Path(args.store).absolute(), opts, wanted)], []
    else:
        plan_list, notes = drill.plans(args.config_dir, args.job, args.source)
    scratch = args.scratch or str(Path(args.state_dir) / "drill")
    artifacts, code, summary = drill.run(plan_list, scratch, args.wait,
                                         progress=None if args.json else _drill_progress)
    text = "\n".join(([drill.summary_table(artifacts)] if artifacts else [])
                     + [f"note: {n}" for n in notes] + [summary])
    if args.json:
        _emit_json({"exit_code": code, "summary": summary, "notes": notes, "output": text,
                    "artifacts": [a.as_dict() for a in artifacts]})
    else:
        print(text)
    return code


def _manifest_report(verdict, manifest_path, mode):
    lines = []
    for rel in verdict.mismatched:
        lines.append(f"MISMATCH  {rel}")
    for rel in verdict.missing:
        lines.append(f"MISSING   {rel}")
    for rel, err in sorted(verdict.unreadable.items()):
        lines.append(f"UNREADABLE {rel}: {err}")
    for rel in verdict.new:
        lines.append(f"new       {rel}  (not in the manifest; not a failure)")
    checked = len(verdict.ok) + len(verdict.mismatched) + len(verdict.unreadable)
    summary = (f"{'OK' if verdict.passed else 'FAILED'}: {checked + len(verdict.missing)} "
               f"files in {manifest_path} ({mode}: {verdict.hashed} hashed, "
               f"{verdict.trusted_by_stat} unchanged by size/mtime/inode); "
               f"{len(verdict.mismatched)} mismatched, {len(verdict.missing)} missing, "
               f"{len(verdict.new)} new")
    return lines + [summary]


def cmd_manifest(args):
    from .. import manifest

    if args.verb == "export":
        data = manifest.load(args.manifest)
        text = manifest.sha256sum_lines(data)
        if args.out:
            from ..core.fsutil import atomic_write_bytes

            atomic_write_bytes(Path(args.out), text.encode("utf-8", "surrogateescape"))
        else:
            sys.stdout.buffer.write(text.encode("utf-8", "surrogateescape"))
        return OK
    if args.verb == "verify":
        data = manifest.load(args.manifest)
        mode = "fast" if args.fast else "deep"
        verdict = manifest.verify(args.root, data, fast=args.fast, jobs=args.jobs,
                                  skip=manifest.own_files(args.manifest))
        if args.json:
            _emit_json({"manifest": args.manifest, "mode": mode, **verdict.as_dict()})
        else:
            print("\n".join(_manifest_report(verdict, args.manifest, mode)))
        return OK if verdict.passed else ERROR
    # create | update
    old = None
    if args.verb == "update":
        old = manifest.load(args.manifest)
        sel = manifest.selection_of(old)
        include = args.include or sel.include
        exclude = args.exclude or sel.exclude
    else:
        include, exclude = args.include or [], args.exclude or []
    selection = manifest.Selection(include, exclude)
    out = args.out if args.verb == "create" else args.manifest
    reuse = old["checksums"] if (old and not args.deep) else None
    data = manifest.build(args.root, selection, phase=args.phase, operation=args.verb,
                          jobs=args.jobs, reuse=reuse, skip=manifest.own_files(out))
    changes = manifest.diff(old["checksums"] if old else {}, data["checksums"])
    if not args.dry_run:
        manifest.write(out, data)
    meta = data["metadata"]
    if args.json:
        _emit_json({"manifest": out, "files": meta["files"], "bytes": meta["bytes"],
                    "written": not args.dry_run, **changes})
    else:
        if old:
            for key, mark in (("added", "+"), ("removed", "-"), ("changed", "~")):
                for rel in changes[key]:
                    print(f"{mark} {rel}")
        verb = "would write" if args.dry_run else "wrote"
        print(f"{verb} {out}: {meta['files']} files, {human_bytes(meta['bytes'])}"
              + (f"; {len(changes['added'])} added, {len(changes['removed'])} removed, "
                 f"{len(changes['changed'])} changed" if old else ""))
    return OK


def _sync_settings(args):
    from .. import sync

    opts = {}
    if args.job:
        opts = dict(config.load_job(args.config_dir, args.job)["options"])
    if args.repo:
        opts["repo"] = args.repo
    if not opts.get("repo"):
        raise StrongroomError("--repo DIR is required (or --job NAME with 'repo' in its options)")
    for key in ("role", "remote", "branch"):
        if getattr(args, key, None):
            opts[key] = getattr(args, key)
    policies = dict(opts.get("policies") or {})
    for item in args.policy or []:
        pattern, _, policy = item.rpartition("=")
        if not pattern:
            raise StrongroomError(f"--policy wants PATTERN=POLICY, got {item!r}")
        policies[pattern] = policy
    if getattr(args, "timeout", None):
        opts["timeout"] = args.timeout
    return sync.Settings(repo=Path(opts["repo"]).expanduser().absolute(),
                            role=opts.get("role"),
                            timeout=float(opts.get("timeout", sync.TRANSPORT_TIMEOUT)),
                            remote=opts.get("remote", "origin"), branch=opts.get("branch"),
                            include=list(args.include or opts.get("include") or []),
                            exclude=list(args.exclude or opts.get("exclude") or []),
                            policies=policies)


def cmd_gitsync(args):
    from .. import sync

    if args.verb == "merge-driver":
        return sync.merge_driver(args.kind, args.base, args.ours, args.theirs, args.path)
    s = _sync_settings(args)
    if args.verb == "status":
        st = sync.status(s, offline=not args.fetch)
        if args.json:
            _emit_json(st)
            return sync.status_exit(st)
        ab = ("no upstream yet" if st["ahead"] is None
              else f"{st['ahead']} ahead, {st['behind']} behind {s.remote}/{st['branch']}")
        fetched = (f"last fetched {st['last_fetch']} ({st['last_fetch_age_seconds']} s ago)"
                   if st["last_fetch"] else "never fetched by strongroom")
        if st["fetch"] and not st["fetch"]["ok"]:
            print(f"fetch FAILED: {st['fetch']['error']}; the figures below are from the "
                  f"last fetch that worked: {fetched}")
        print(f"{st['repo']} ({st['role'] or 'role not given'}, branch {st['branch']}): {ab}"
              + ("" if st["fetch"] and st["fetch"]["ok"] else f" ({fetched})"))
        print(f"dirty: {len(st['dirty'])} file(s)" + (": " + ", ".join(st["dirty"][:10])
                                                        if st["dirty"] else ""))
        last = st["last"]
        print("last sync: " + (f"{last['operation']} {last['result']} at {last['finished']}: "
                               f"{last['message']}" if last else "never"))
        snap = st["snapshot"]
        print("snapshot: " + (f"taken {snap['taken']} ({snap['age_seconds']} s ago), "
                              f"{snap['files']} files" if snap else "none"))
        if st["kept"]:
            k = st["kept"]
            print(f"kept: {k['folders']} folder(s), {k['bytes']} bytes of versions rollbacks "
                  f"set aside in {k['path']} (newest {k['newest']}); look, then delete them")
        if st["interrupted"]:
            op = st["interrupted"]
            print(f"INTERRUPTED: a {op.get('operation', 'sync')} (PID {op.get('pid', '?')}, "
                  f"{op.get('started', '?')}) did not finish; the next sync undoes what it "
                  "did (work done since is kept)")
        if st["rollback_failed"]:
            bad = st["rollback_failed"]
            print(f"ROLLBACK FAILED at {bad.get('when', '?')}: {bad.get('error', '?')}; no sync "
                  "runs until `strongroom sync rollback` succeeds")
        if st["blocked"]:
            paths = st["blocked"]["paths"]
            print(f"BLOCKED since {st['blocked']['since']}: {', '.join(paths)}. "
                  + sync.resolve_hint(s, paths))
        return sync.status_exit(st)
    if args.verb == "rollback":
        if args.status:
            info = sync.snapshot_info(s)
            if args.json:
                _emit_json({"snapshot": info})
            else:
                print(f"snapshot taken {info['taken']} ({info['age_seconds']} s ago) at "
                      f"{(info['head'] or '-')[:12]} on {info['branch']}, {info['files']} files"
                      if info else "no snapshot")
            return OK if info else WARNING
        if not (Path(s.repo) / ".git").is_dir():
            raise StrongroomError(f"{s.repo} is not a git work tree (no .git directory)")
        with sync.sync_lock(s, args.wait):
            sync.refuse_rollback_over_user_commits(s, force=args.force)
            out = sync.rollback(s, keep_newer=False)
        if args.json:
            _emit_json(out)
        else:
            print(f"rolled back to {(out['head'] or '-')[:12]} (snapshot of {out['taken']}); "
                  f"{out['files']} files verified, {len(out['changed_files'])} put back, "
                  f"{len(out['removed'])} removed"
                  + ("; the index (staged changes) restored" if out["index_restored"] else "")
                  + (f"; the newer versions of {', '.join(out['set_aside'][:10])} were "
                     f"copied to {out['kept_dir']}" if out["set_aside"] else ""))
        return OK
    if args.verb == "resolve":
        side = "ours" if args.ours else "theirs" if args.theirs else None
        result = sync.resolve(s, args.paths, side, lock_wait=args.wait)
        if args.json:
            _emit_json(result)
        else:
            print(f"{result['operation']}: {result['result']}: {result['message']}")
            if result.get("rollback"):
                print(result["rollback"])
        return sync.exit_code(result)
    sync.check_repo(s)  # before writing merge drivers into it
    sync.install_policies(s)
    result = (sync.push if args.verb == "push" else sync.pull)(s, lock_wait=args.wait)
    if args.json:
        _emit_json(result)
    else:
        print(f"{result['operation']}: {result['result']}: {result['message']}")
        if result.get("rollback"):
            print(result["rollback"])
        if result.get("recovered"):
            print(result["recovered"])
    return sync.exit_code(result)


def gitsync_default_timeout():
    from ..sync import TRANSPORT_TIMEOUT

    return TRANSPORT_TIMEOUT


def _common(p, store=True, wait=True):
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--job", help="read options from <config-dir>/jobs/JOB.yml")
    if store:
        p.add_argument("--store", help="the local bundle store")
    p.add_argument("--remote", help="rclone REMOTE:PATH holding the off-site copy")
    p.add_argument("--rclone-config", dest="rclone_config",
                   help="rclone.conf to use (default <config-dir>/rclone.conf if present)")
    if wait:
        p.add_argument("--wait", type=seconds, default=0.0, metavar="SECONDS",
                       help="wait this long for another run's lock instead of exiting 11")


# Locks and --wait, verb by verb. --wait SECONDS is offered exactly where a verb takes a
# lock (a verb that takes none refuses it, so nobody relies on a wait that never happens)
# and covers every lock that verb takes; a lock still held after it exits 11, naming the
# holder's PID and the lock file.
#
#   verb                               locks it takes                       --wait default
#   bundle sync|verify|restore|        the store's STORE/.strongroom.lock   0
#     consolidate
#   bundle list                        none                                 -
#   run JOB                            <state>/locks/JOB.lock, then what    0
#                                      the job type takes (below); one
#                                      deadline from the start for all of
#                                      them (a longer lock_wait in the job
#                                      file still applies to its lock)
#     bundle_sync                        the store's lock
#     restore_drill                      each store's lock (lock_wait, 300)
#     git_sync                           the repository's sync lock
#     snapshot                           DEST/.snapshot.lock (lock_wait, 0)
#     checkpoint                         DEST/.checkpoint.lock (lock_wait, 0)
#     daily, rollup                      DEST/.rollups.lock (lock_wait, 600)
#     bisync                             bisync.lock (lock_wait, 0)
#     db_backup                          the database's lock (600)
#     restic, status_check               none of ours (restic locks its own)
#   drill                              each store's lock, in turn; each     300
#                                      waits up to --wait
#   sync push|pull|resolve|rollback    REPO/.git/strongroom/sync.lock       0
#   sync status, sync merge-driver     none (git runs the merge driver      -
#                                      inside a sync that holds the lock)
#   backup now                         DEST/.snapshot.lock                  job's lock_wait, 0
#   backup list|verify|restore|prune|  none                                 -
#     protect
#   save                               DEST/.checkpoint.lock                job's lock_wait, 0
#   hook pre-push                      the snapshot's DEST/.snapshot.lock   job's lock_wait, 120
#   bisync                             <state>/bisync/JOB/bisync.lock       job's lock_wait, 0
#   db backup|restore|sync|tick        <state>/db/NAME-ID.lock              30
#   db list|status, checkpoints,       none                                 -
#     hook install|uninstall, upload,
#     rollup, restic restore, manifest,
#     jobs list, status, notify test,
#     schedule explain, config check
def build_parser():
    parser = argparse.ArgumentParser(prog="strongroom", description=__doc__.splitlines()[0],
                                     epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"strongroom {__version__}")
    parser.add_argument("--config-dir", default=None,
                        help="configuration directory (env STRONGROOM_CONFIG_DIR; default "
                             "/etc/strongroom as root, ~/.config/strongroom otherwise)")
    parser.add_argument("--state-dir", default=None,
                        help="state directory (env STRONGROOM_STATE_DIR; default "
                             "/var/lib/strongroom as root, ~/.local/state/strongroom "
                             "otherwise)")
    parser.add_argument("--log-dir", default=None,
                        help="job logs (env STRONGROOM_LOG_DIR; default <state-dir>/log when "
                             "the state dir is given, else /var/log/strongroom as root)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    b = sub.add_parser("bundle", help="git bundle chains: sync, verify, restore, list",
                       epilog=EPILOG)
    bsub = b.add_subparsers(dest="verb", required=True, metavar="VERB")

    s = bsub.add_parser("sync", help="bundle every repository under --root into --store",
                        epilog=EPILOG)
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
    s.add_argument("--dry-run", action="store_true", help="say what would be done; write nothing")
    s.set_defaults(func=cmd_sync)

    v = bsub.add_parser("verify", help="check every hash, restore each chain, git fsck",
                        epilog=EPILOG)
    _common(v)
    v.add_argument("name", nargs="*", help="repositories to verify (default: all)")
    v.set_defaults(func=cmd_verify)

    r = bsub.add_parser("restore", help="rebuild a repository from its chain", epilog=EPILOG)
    _common(r)
    r.add_argument("name", help="repository name, as shown by `bundle list`")
    r.add_argument("target", help="directory to restore into (new or empty)")
    r.add_argument("--force", action="store_true",
                   help="restore over a non-empty target (its contents are moved aside)")
    r.set_defaults(func=cmd_restore)

    ls = bsub.add_parser("list", help="chains in the store (or, with --remote, what the "
                         "off-site copy holds)", epilog=EPILOG)
    _common(ls, wait=False)  # reads the store without its lock
    ls.set_defaults(func=cmd_list)

    c = bsub.add_parser("consolidate", help="start a fresh chain for one repository now",
                        epilog=EPILOG)
    _common(c)
    c.add_argument("--root", help="directory holding the repository (as for sync)")
    c.add_argument("name", help="repository name")
    c.set_defaults(func=cmd_consolidate)
    run = sub.add_parser("run", help="run a configured job (what the schedulers call)",
                         epilog=EPILOG)
    run.add_argument("job_name", metavar="JOB", help="job name: <config-dir>/jobs/JOB.yml")
    run.add_argument("--if-due", action="store_true",
                     help="run only when there was no successful run since the last "
                          "scheduled time")
    run.add_argument("--wait", type=seconds, default=None, metavar="SECONDS",
                     help="wait up to this long, in all, for every lock the job takes (its "
                          "own, then the store, sync or snapshot lock it works under) "
                          "instead of exiting 11; it replaces the job's lock_wait (default: "
                          "the job's own lock is not waited for, the others as configured)")
    run.add_argument("--date", metavar="YYYY-MM-DD",
                     help="daily and rollup jobs only: run now as on this day (today or "
                          "earlier), to catch up a missed day or to test. A daily job makes "
                          "that day's folder from the sources as they are now (nothing if it "
                          "exists); a rollup job packs the days before it; either keeps the "
                          "folders of that day and later. The status records the real time "
                          "of the run. A malformed or future day, another job type or "
                          "--if-due exits 2 before the job starts")
    run.add_argument("--json", action="store_true", help="machine-readable output")
    run.set_defaults(func=cmd_run)

    dr = sub.add_parser(
        "drill", help="restore every bundle chain into scratch space and check it",
        description="Restore drill: rebuild each chain (from the local store, the remote, or "
                    "both) into a scratch directory, compare its refs with the ref manifest, "
                    "run git fsck --full --strict, and remove the scratch data. Nothing is "
                    "written to a store or a remote. Finding nothing to test exits 1. "
                    "Scheduled drills are jobs of type restore_drill (strongroom run JOB), "
                    "which also record each result in the status and notify.",
        epilog=EPILOG)
    dr.add_argument("--job", action="append", metavar="NAME",
                    help="drill this bundle_sync job's store (repeatable; default: every "
                         "bundle_sync job in <config-dir>/jobs)")
    dr.add_argument("--store", help="drill this bundle store instead of the jobs' stores")
    dr.add_argument("--remote", help="rclone REMOTE:PATH of --store's off-site copy")
    dr.add_argument("--rclone-config", dest="rclone_config",
                    help="rclone.conf to use (default <config-dir>/rclone.conf if present)")
    dr.add_argument("--source", choices=["local", "remote", "both"], default="local",
                    help="restore from the local store, from the remote alone, or both "
                         "(default local)")
    dr.add_argument("--scratch", help="scratch directory (default <state-dir>/drill)")
    dr.add_argument("--wait", type=seconds, default=300.0, metavar="SECONDS",
                    help="wait this long for a store's lock (default 300)")
    dr.add_argument("--json", action="store_true", help="machine-readable output")
    dr.set_defaults(func=cmd_drill)

    jb = sub.add_parser("jobs", help="configured jobs", epilog=EPILOG)
    jbsub = jb.add_subparsers(dest="verb", required=True, metavar="VERB")
    jl = jbsub.add_parser("list", help="each job, its schedule, last result and next due")
    jl.add_argument("--json", action="store_true", help="machine-readable output")
    jl.set_defaults(func=cmd_jobs_list)

    st = sub.add_parser("status", help="every job's last result, age, next due, staleness",
                        epilog=EPILOG)
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.add_argument("--stale", action="store_true",
                    help="exit 1 when any job had no success within its stale limit")
    st.add_argument("--stale-factor", type=float, default=2.0, metavar="F",
                    help="stale after F x the job's period without a success (default 2)")
    st.add_argument("--notify", action="store_true",
                    help="send the backup_stale alert for every stale job")
    st.add_argument("--prometheus", metavar="PATH",
                    help="also write a node_exporter textfile (written atomically)")
    st.set_defaults(func=cmd_status)

    nt = sub.add_parser("notify", help="notification targets (<config-dir>/notify.yml)",
                        epilog=EPILOG)
    ntsub = nt.add_subparsers(dest="verb", required=True, metavar="VERB")
    ntt = ntsub.add_parser("test", help="send a test message to every target")
    ntt.add_argument("--severity", choices=["info", "success", "warning", "error"],
                     default="info", help="severity of the test message (default info)")
    ntt.add_argument("--json", action="store_true", help="machine-readable output")
    ntt.set_defaults(func=cmd_notify_test)

    sc = sub.add_parser("schedule", help="schedule specs and their renderings",
                        epilog=EPILOG)
    scsub = sc.add_subparsers(dest="verb", required=True, metavar="VERB")
    ex = scsub.add_parser("explain", help="every rendering of a spec and its next times",
                          epilog="specs: 'daily HH:MM', 'weekly DAY HH:MM', 'monthly D HH:MM', "
                                 "'every Nm', 'every Nh', or a 5-field cron expression")
    ex.add_argument("spec", help="the schedule spec (quote it)")
    ex.add_argument("--count", type=int, default=5, help="how many next times (default 5)")
    ex.add_argument("--jitter", type=int, default=0, metavar="MINUTES",
                    help="move the time later by a stable per-host offset below MINUTES")
    ex.add_argument("--seed", default="", help="the host name the jitter is seeded by")
    ex.add_argument("--json", action="store_true", help="machine-readable output")
    ex.set_defaults(func=cmd_schedule_explain)

    mf = sub.add_parser("manifest", help="SHA-256 manifests of a tree: create, verify, "
                        "update, export", epilog=EPILOG)
    mfsub = mf.add_subparsers(dest="verb", required=True, metavar="VERB")
    patterns_help = "gitignore-style pattern (repeatable)"
    for verb, helptext in (("create", "hash every covered file under ROOT into --out"),
                           ("update", "re-record the manifest after intentional changes")):
        m = mfsub.add_parser(verb, help=helptext, epilog=EPILOG)
        m.add_argument("root", metavar="ROOT")
        if verb == "create":
            m.add_argument("--out", required=True, help="manifest file to write (atomically; "
                           "the previous one is kept as FILE.prev)")
        else:
            m.add_argument("--manifest", required=True, help="the manifest to update")
            m.add_argument("--deep", action="store_true",
                           help="re-hash every file (default: files whose size, mtime or "
                                "inode are unchanged keep their recorded hash)")
        m.add_argument("--include", action="append", metavar="GLOB",
                       help=patterns_help + "; default every file")
        m.add_argument("--exclude", action="append", metavar="GLOB", help=patterns_help)
        m.add_argument("--phase", default="manual", help="recorded in metadata.phase")
        m.add_argument("--dry-run", action="store_true", help="report, write nothing")
        m.add_argument("--jobs", type=int, default=0, help="hashing threads (default: cores)")
        m.add_argument("--json", action="store_true", help="machine-readable output")
        m.set_defaults(func=cmd_manifest)
    mv = mfsub.add_parser("verify", help="check ROOT against a manifest (exit 2 on any "
                          "mismatch or missing file)", epilog=EPILOG)
    mv.add_argument("root", metavar="ROOT")
    mv.add_argument("--manifest", required=True)
    how = mv.add_mutually_exclusive_group()
    how.add_argument("--deep", action="store_true", help="re-hash every file (default)")
    how.add_argument("--fast", action="store_true",
                     help="re-hash only files whose size, mtime or inode changed")
    mv.add_argument("--jobs", type=int, default=0, help="hashing threads (default: cores)")
    mv.add_argument("--json", action="store_true", help="machine-readable output")
    mv.set_defaults(func=cmd_manifest)
    me = mfsub.add_parser("export", help="print the manifest in sha256sum -c --strict format")
    me.add_argument("--manifest", required=True)
    me.add_argument("--out", help="write here instead of standard output")
    me.set_defaults(func=cmd_manifest)

    sy = sub.add_parser("sync", help="two-machine git sync with snapshots and rollback",
                        epilog=EPILOG)
    sysub = sy.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb, helptext in (
            ("push", "snapshot, check, commit everything with this side's manifest, push"),
            ("pull", "snapshot, fetch, merge under the conflict policy, verify"),
            ("status", "ahead/behind, dirty files, last sync, snapshot (works offline)"),
            ("rollback", "restore the last snapshot exactly: HEAD, branch, index, files, "
                         "deletions; never prompts"),
            ("resolve", "end a block: your hand-merged files (or --ours / --theirs) become "
                        "the merge; the next push carries it")):
        p = sysub.add_parser(verb, help=helptext, epilog=EPILOG)
        p.add_argument("--repo", help="the work tree (default: the job's 'repo')")
        p.add_argument("--job", help="read options from <config-dir>/jobs/JOB.yml")
        p.add_argument("--role", choices=["primary", "secondary"],
                       help="this machine's role (from the inventory); required by the "
                            "primary-wins policy, which has no safe default")
        p.add_argument("--remote", help="git remote name (default origin)")
        p.add_argument("--branch", help="branch (default the current one)")
        p.add_argument("--include", action="append", metavar="GLOB",
                       help="files the manifest covers (gitignore-style; default all)")
        p.add_argument("--exclude", action="append", metavar="GLOB")
        p.add_argument("--policy", action="append", metavar="PATTERN=POLICY",
                       help="conflict policy: append, block or primary-wins")
        if verb != "status":  # status reads without the sync lock
            p.add_argument("--wait", type=seconds, default=0.0, metavar="SECONDS",
                           help="wait this long for another sync's lock instead of exiting "
                                "11")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        if verb == "rollback":
            p.add_argument("--status", action="store_true",
                           help="show whether a snapshot exists and how old it is")
            p.add_argument("--force", action="store_true",
                           help="also when you committed since the snapshot (those commits "
                                "stay reachable as refs/strongroom/before-rollback)")
        if verb == "status":
            p.add_argument("--fetch", action="store_true",
                           help="fetch first (online); a failed fetch is said, exit 1")
        if verb in ("push", "pull", "status"):
            p.add_argument("--timeout", type=float, metavar="SECONDS",
                           help="stop a fetch or push that makes no progress for this "
                                "long (default "
                                f"{gitsync_default_timeout():g})")
        if verb == "resolve":
            p.add_argument("paths", nargs="*", metavar="PATH",
                           help="the blocked files, merged by hand (with --ours/--theirs: "
                                "default every blocked file)")
            side = p.add_mutually_exclusive_group()
            side.add_argument("--ours", action="store_true",
                              help="keep this machine's version of each")
            side.add_argument("--theirs", action="store_true",
                              help="take the other machine's version of each")
        p.set_defaults(func=cmd_gitsync)
    md = sysub.add_parser("merge-driver", help="(called by git) apply a conflict policy")
    md.add_argument("kind", choices=["append", "block", "ours", "theirs"])
    for name in ("base", "ours", "theirs", "path"):
        md.add_argument(name)
    md.set_defaults(func=cmd_gitsync)

    cli_backup.add_parser(sub)
    cli_save.add_parser(sub)
    cli_upload.add_parser(sub)
    cli_rollup.add_parser(sub)
    cli_bisync.add_parser(sub)
    cli_bisync.add_restic_parser(sub)
    cli_db.add_parser(sub)
    cfg = sub.add_parser("config", help="check configuration files", epilog=EPILOG)
    csub = cfg.add_subparsers(dest="verb", required=True, metavar="VERB")
    chk = csub.add_parser("check", help="validate a job file against the schema")
    chk.add_argument("file", help="job file (YAML), or - for standard input")
    chk.add_argument("--name-as", help="name to use for the file in messages; when it (or "
                     "FILE) ends in .yml, the job's `name` must be that file name without "
                     ".yml, as `run` requires")
    chk.set_defaults(func=cmd_config_check)
    return parser


def _terminate(signum, _frame):
    # unwinds like an error, so every temp folder and half-built restore is removed
    raise SystemExit(128 + signum)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) == signal.SIG_DFL:
            signal.signal(sig, _terminate)
    chosen_state = args.state_dir or os.environ.get("STRONGROOM_STATE_DIR")
    args.config_dir = args.config_dir or str(paths.config_dir())
    args.state_dir = args.state_dir or str(paths.state_dir())
    args.log_dir = args.log_dir or str(paths.log_dir(chosen_state))
    try:
        return args.func(args)
    except StrongroomError as exc:
        print(f"strongroom: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # the reader went away (| head): nothing left to say
        return ERROR
    except OSError as exc:
        print(f"strongroom: error: {exc}", file=sys.stderr)
        return ERROR
    except KeyboardInterrupt:
        print("strongroom: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

