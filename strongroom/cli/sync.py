"""`strongroom sync push | pull | status | rollback | resolve`: two-machine git sync.

`sync merge-driver` is what git calls during a pull (hidden from --help)."""

from pathlib import Path

from ..core.errors import OK, WARNING, StrongroomError
from ..core.lock import seconds
from . import jobfile, output


def _settings(args):
    from .. import sync

    opts = jobfile.options(args, "sync")
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


def cmd_merge_driver(args):
    from .. import sync

    code = sync.merge_driver(args.kind, args.base, args.ours, args.theirs, args.path)
    return output.emit(args, code, f"{args.path}: {'merged' if code == OK else 'conflict'} "
                                   f"({args.kind})", {"path": args.path, "kind": args.kind})


def _status_lines(s, st):
    from .. import sync

    ab = ("no upstream yet" if st["ahead"] is None
          else f"{st['ahead']} ahead, {st['behind']} behind {s.remote}/{st['branch']}")
    fetched = (f"last fetched {st['last_fetch']} ({st['last_fetch_age_seconds']} s ago)"
               if st["last_fetch"] else "never fetched by strongroom")
    lines = []
    if st["fetch"] and not st["fetch"]["ok"]:
        lines.append(f"fetch FAILED: {st['fetch']['error']}; the figures below are from the "
                     f"last fetch that worked: {fetched}")
    head = (f"{st['repo']} ({st['role'] or 'role not given'}, branch {st['branch']}): {ab}"
            + ("" if st["fetch"] and st["fetch"]["ok"] else f" ({fetched})"))
    lines.append(head)
    lines.append(f"dirty: {len(st['dirty'])} file(s)" + (": " + ", ".join(st["dirty"][:10])
                                                         if st["dirty"] else ""))
    last = st["last"]
    lines.append("last sync: " + (f"{last['operation']} {last['result']} at "
                                  f"{last['finished']}: {last['message']}" if last
                                  else "never"))
    snap = st["snapshot"]
    lines.append("snapshot: " + (f"taken {snap['taken']} ({snap['age_seconds']} s ago), "
                                 f"{snap['files']} files" if snap else "none"))
    if st["kept"]:
        k = st["kept"]
        lines.append(f"kept: {k['folders']} folder(s), {k['bytes']} bytes of versions "
                     f"rollbacks set aside in {k['path']} (newest {k['newest']}); look, then "
                     "delete them")
    problem = None
    if st["interrupted"]:
        op = st["interrupted"]
        problem = (f"INTERRUPTED: a {op.get('operation', 'sync')} (PID {op.get('pid', '?')}, "
                   f"{op.get('started', '?')}) did not finish; the next sync undoes what it "
                   "did (work done since is kept)")
        lines.append(problem)
    if st["rollback_failed"]:
        bad = st["rollback_failed"]
        problem = (f"ROLLBACK FAILED at {bad.get('when', '?')}: {bad.get('error', '?')}; no "
                   "sync runs until `strongroom sync rollback` succeeds")
        lines.append(problem)
    if st["blocked"]:
        paths = st["blocked"]["paths"]
        problem = (f"BLOCKED since {st['blocked']['since']}: {', '.join(paths)}. "
                   + sync.resolve_hint(s, paths))
        lines.append(problem)
    if st["fetch"] and not st["fetch"]["ok"] and problem is None:
        problem = lines[0]
    return lines, problem or head


def cmd_sync(args):
    from .. import sync

    s = _settings(args)
    if args.verb == "status":
        st = sync.status(s, offline=not args.fetch)
        lines, message = _status_lines(s, st)
        output.say(args, *lines)
        return output.emit(args, sync.status_exit(st), message, st)
    if args.verb == "rollback":
        if args.status:
            info = sync.snapshot_info(s)
            message = (f"snapshot taken {info['taken']} ({info['age_seconds']} s ago) at "
                       f"{(info['head'] or '-')[:12]} on {info['branch']}, {info['files']} "
                       "files" if info else "no snapshot")
            output.say(args, message)
            return output.emit(args, OK if info else WARNING, message, {"snapshot": info})
        if not (Path(s.repo) / ".git").is_dir():
            raise StrongroomError(f"{s.repo} is not a git work tree (no .git directory)")
        with sync.sync_lock(s, args.wait):
            sync.refuse_rollback_over_user_commits(s, force=args.force)
            out = sync.rollback(s, keep_newer=False)
        message = (f"rolled back to {(out['head'] or '-')[:12]} (snapshot of {out['taken']}); "
                   f"{out['files']} files verified, {len(out['changed_files'])} put back, "
                   f"{len(out['removed'])} removed"
                   + ("; the index (staged changes) restored" if out["index_restored"] else "")
                   + (f"; the newer versions of {', '.join(out['set_aside'][:10])} were "
                      f"copied to {out['kept_dir']}" if out["set_aside"] else ""))
        output.say(args, message)
        return output.emit(args, OK, message, out)
    if args.verb == "resolve":
        side = "ours" if args.ours else "theirs" if args.theirs else None
        result = sync.resolve(s, args.paths, side, lock_wait=args.wait)
        output.say(args, f"{result['operation']}: {result['result']}: {result['message']}",
                   result.get("rollback"))
        return output.emit(args, sync.exit_code(result), result["message"], result)
    sync.check_repo(s)  # before writing merge drivers into it
    sync.install_policies(s)
    result = (sync.push if args.verb == "push" else sync.pull)(s, lock_wait=args.wait)
    output.say(args, f"{result['operation']}: {result['result']}: {result['message']}",
               result.get("rollback"), result.get("recovered"))
    return output.emit(args, sync.exit_code(result), result["message"], result)


def add_parser(sub):
    from ..sync import TRANSPORT_TIMEOUT

    _, sysub = output.group(sub, "sync", help="two-machine git sync with snapshots and "
                                              "rollback")
    for verb, helptext in (
            ("push", "snapshot, check, commit everything with this side's manifest, push"),
            ("pull", "snapshot, fetch, merge under the conflict policy, verify"),
            ("status", "ahead/behind, dirty files, last sync, snapshot (works offline)"),
            ("rollback", "restore the last snapshot exactly: HEAD, branch, index, files, "
                         "deletions; never prompts"),
            ("resolve", "end a block: your hand-merged files (or --ours / --theirs) become "
                        "the merge; the next push carries it")):
        p = output.verb(sysub, verb, help=helptext)
        p.add_argument("--repo", help="the work tree (default: the job's 'repo')")
        p.add_argument("--job", help="read options from <config-dir>/jobs/JOB.yml (a git_sync "
                                     "job)")
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
                                f"long (default {TRANSPORT_TIMEOUT:g})")
        if verb == "resolve":
            p.add_argument("paths", nargs="*", metavar="PATH",
                           help="the blocked files, merged by hand (with --ours/--theirs: "
                                "default every blocked file)")
            side = p.add_mutually_exclusive_group()
            side.add_argument("--ours", action="store_true",
                              help="keep this machine's version of each")
            side.add_argument("--theirs", action="store_true",
                              help="take the other machine's version of each")
        p.set_defaults(func=cmd_sync)
    # called by git (hidden from --help): apply a conflict policy to one file
    md = output.verb(sysub, "merge-driver",
                     description="(called by git) apply a conflict policy; exits 0 merged, "
                                 "1 conflict, as git's merge-driver contract wants")
    md.add_argument("kind", choices=["append", "block", "ours", "theirs"])
    for name in ("base", "ours", "theirs", "path"):
        md.add_argument(name)
    md.set_defaults(func=cmd_merge_driver)
