"""Two machines kept in step through a git remote, guarded by manifests and exact snapshots.

Every operation takes the sync lock, then an exact snapshot of the local state (HEAD, the
branch, the index, every covered, dirty and untracked file, every uncommitted deletion;
see sync_state). Any failure after that rolls back to exactly that state. A run that
was killed (no rollback could run) is rolled back by the next one before it does
anything else.

push: pre-sync check, commit everything (tracked edits included) with this side's
manifest (.sync-checksums.json) beside it, push, post-sync check.
pull: fetch, stop when up to date, commit local edits, merge under the conflict policy,
then verify: files only the incoming commits changed must match the manifest the other
side committed; files the pull did not touch must match the snapshot.
resolve: after a block, merge the recorded other side with the user's hand merge (or one
side, --ours / --theirs) as the resolution; the next push carries it.

Conflict policies, per gitignore-style pattern, through merge drivers configured in
.git/info/attributes and .git/config (nothing committed): append (a three-way merge that
keeps every line either side added, see sync_merge), block (the sync stops, both
versions kept side by side, `sync resolve` ends it), primary-wins (needs this machine's
role: without one it blocks instead of guessing).

Transports are bounded: ssh gets keep-alives and a connect timeout, http a low-speed
limit, and every fetch or push is stopped when it makes no progress (prints nothing and
writes nothing into the object store) for a while; what an interrupted fetch left in the
object store is removed.
"""

import errno
import json
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from .. import manifest
from ..core import fsutil
from ..core.errors import ERROR, OK, WARNING, EmptySource, StrongroomError
from ..core.gitcmd import GitError, GitTimeout, clean_stale_git_locks, git, processes_using
from ..core.lock import Lock
from . import state as sync_state
from .merge import merge_additions

MANIFEST_NAME = ".sync-checksums.json"
SAFETY_REF = sync_state.SAFETY_REF
BLOCKED_REF = "refs/strongroom/blocked"
POLICIES = ("append", "block", "primary-wins")
ROLES = ("primary", "secondary")
ATTR_BEGIN = "# BEGIN strongroom sync policies (managed)"
ATTR_END = "# END strongroom sync policies"


def _job_default(key):
    from ..jobs.schema import default  # the job schema is where a sync job's defaults live

    return default("sync", key)


# seconds a fetch or push may go without progress before it stops (a sync job's `timeout`)
TRANSPORT_TIMEOUT = float(_job_default("timeout"))
SSH_OPTIONS = "-o ServerAliveInterval=15 -o ServerAliveCountMax=4 -o ConnectTimeout=20"
# git keeps going after these lines; they say nothing about what failed
_BOILERPLATE = ("Please make sure you have the correct access rights",
                "and the repository exists.",
                # --progress lines
                "remote: Enumerating", "remote: Counting", "remote: Compressing",
                "remote: Total", "Enumerating objects", "Counting objects",
                "Compressing objects", "Writing objects", "Receiving objects",
                "Resolving deltas", "Unpacking objects", "Delta compression", "Total ")
OWN_FILES = (MANIFEST_NAME, MANIFEST_NAME + ".prev")  # written by the sync itself
# another git operation half done: a sync on top would commit or push its leftovers
IN_PROGRESS = {"MERGE_HEAD": "a merge", "CHERRY_PICK_HEAD": "a cherry-pick",
               "REVERT_HEAD": "a revert", "rebase-merge": "a rebase",
               "rebase-apply": "a rebase or git am", "BISECT_LOG": "a bisect"}


class SyncFailed(StrongroomError):
    pass


class _Crash(BaseException):
    """Raised at a named point when STRONGROOM_TEST_CRASH names it: the test suite's
    stand-in for a kill -9 (no handler runs, the lock is let go as the kernel would)."""


def _crash_point(point):
    if os.environ.get("STRONGROOM_TEST_CRASH") == point:
        raise _Crash(point)


@dataclass
class Settings:
    repo: Path
    role: str | None = None  # primary | secondary, from the inventory; None: not given
    remote: str = "origin"
    branch: str | None = None  # default: the current branch
    include: list = field(default_factory=list)  # manifest patterns; default every file
    exclude: list = field(default_factory=list)
    policies: dict = field(default_factory=dict)  # pattern -> append | block | primary-wins
    host: str = field(default_factory=socket.gethostname)
    timeout: float = TRANSPORT_TIMEOUT


def now_iso():
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _dir(s):
    return sync_state.sync_dir(s.repo)


def _run_git(s, *args, check=True, input=None):
    return git(s.repo, *args, check=check, input=input)


def _out(proc):
    return proc.stdout.decode() if isinstance(proc.stdout, bytes) else proc.stdout


def _err(proc):
    return proc.stderr.decode() if isinstance(proc.stderr, bytes) else proc.stderr


def current_head(s):
    """The commit HEAD names, or None in a repository without commits."""
    return _out(_run_git(s, "rev-parse", "-q", "--verify", "HEAD", check=False)).strip() or None


def sync_lock(s, wait=0):
    """One sync (or rollback) at a time per repository."""
    _dir(s).mkdir(parents=True, exist_ok=True)
    return Lock(_dir(s) / "sync.lock", f"sync of {s.repo}").acquire(wait)


def _branch(s):
    if s.branch:
        return s.branch
    proc = _run_git(s, "symbolic-ref", "--short", "-q", "HEAD", check=False)
    name = _out(proc).strip()
    if not name:
        raise SyncFailed(f"{s.repo}: HEAD is detached; check out the branch to sync")
    return name


def _selection(s):
    # the manifest never covers itself, nor the side-by-side copies a blocked merge leaves
    return manifest.Selection(list(s.include), list(s.exclude) + [
        "/" + MANIFEST_NAME, "/" + MANIFEST_NAME + ".prev", "*.theirs"])


def _own_merge(s):
    """A merge in progress is the killed sync's own when it merges what that run fetched
    (a merge the user started by hand afterwards is theirs: never aborted for them)."""
    try:
        merging = (Path(s.repo) / ".git" / "MERGE_HEAD").read_text().split()
    except OSError:
        return False
    return bool(merging) and merging[0] in _op(s)["merging"] if _op(s) else False


def _empty_dir(path):
    try:
        with os.scandir(path) as entries:
            return next(entries, None) is None
    except OSError:
        return False


def _clone_hint(s):
    """How to put the repository there: a clone of the remote the job syncs through."""
    remote = s.remote
    if remote.startswith("/") and not os.path.exists(remote):  # a local bare repository
        return f"git init --bare {shlex.quote(remote)}; git clone {shlex.quote(remote)} " \
            f"{shlex.quote(str(s.repo))}"
    if "/" in remote or ":" in remote:  # a path or URL
        return f"git clone {shlex.quote(remote)} {shlex.quote(str(s.repo))}"
    return f"git clone URL {shlex.quote(str(s.repo))}; the job syncs through its remote {remote!r}"


def check_repo(s):
    repo = Path(s.repo)
    if not (repo / ".git").is_dir():
        if repo.is_dir() and _empty_dir(repo):
            raise EmptySource(f"nothing to sync: {repo} is empty; clone the repository to keep "
                              f"in step there ({_clone_hint(s)}), or set the job's options.repo "
                              "to its work tree")
        raise SyncFailed(f"{repo} is not a git work tree (no .git directory)")
    for name, what in IN_PROGRESS.items():
        if name == "MERGE_HEAD" and _own_merge(s):
            continue  # a killed sync's own merge: the recovery ends it
        if os.path.lexists(repo / ".git" / name):
            raise SyncFailed(f"{repo}: {what} is in progress (.git/{name}); finish or abort "
                             "it first: a sync now would commit and push its half-done state")
    if s.role is not None and s.role not in ROLES:
        raise SyncFailed(f"role must be primary or secondary, got {s.role!r}")
    for pattern, policy in s.policies.items():
        if policy not in POLICIES:
            raise SyncFailed(f"policy for {pattern!r} is {policy!r}; expected one of "
                             + ", ".join(POLICIES))
        if policy == "primary-wins" and s.role is None:
            raise SyncFailed(
                f"the primary-wins policy for {pattern!r} depends on which machine this is: "
                "give --role primary or --role secondary (a job takes it from its 'role', "
                "set from the inventory); a guess would let the wrong side win")


# --- transports -----------------------------------------------------------------------------


def _transport_env(s):
    """Bounds for ssh and http, unless the user set an ssh command of their own."""
    env = {"GIT_HTTP_LOW_SPEED_LIMIT": "1000", "GIT_HTTP_LOW_SPEED_TIME": "60"}
    configured = _out(_run_git(s, "config", "--get", "core.sshCommand", check=False)).strip()
    if not os.environ.get("GIT_SSH_COMMAND") and not os.environ.get("GIT_SSH") \
            and not configured:
        env["GIT_SSH_COMMAND"] = f"ssh {SSH_OPTIONS}"
    return env


def _transport(s, *args):
    """fetch, push or ls-remote, bounded by progress: stopped only when it has printed
    nothing and written nothing into the object store for s.timeout seconds (a big but
    healthy transfer goes on); what an interrupted fetch left is cleaned."""
    verb = args[0]
    if verb in ("fetch", "push"):  # progress on stderr is what says it is alive
        args = (verb, "--progress", *[a for a in args[1:] if a != "-q"])
    if verb == "fetch":
        # a fetch of few objects is unpacked in memory and says nothing until the end (a
        # big file's whole transfer looks stalled); kept as a pack, it grows tmp_pack_*
        # and prints its throughput as the data arrives
        args = ("-c", "fetch.unpackLimit=1", *args)
    objects = Path(s.repo) / ".git" / "objects"
    try:
        return git(s.repo, *args, check=False, timeout=s.timeout, env=_transport_env(s),
                   watch=[objects / "pack", objects])
    except GitTimeout:
        _clean_partial_fetch(s)
        what = {"fetch": f"fetch from {s.remote}", "push": f"push to {s.remote}",
                "ls-remote": f"asking {s.remote} for its branch"}.get(verb, verb)
        raise SyncFailed(f"the {what} made no progress for {s.timeout:g} s and was stopped "
                         "(a stalled connection?)") from None


def _clean_partial_fetch(s):
    """Temporary packs and quarantine folders of a fetch that did not finish, removed
    when no other process works in the repository."""
    git_dir = Path(s.repo) / ".git"
    leftovers = list((git_dir / "objects" / "pack").glob("tmp_*")) + \
        [p for p in (git_dir / "objects").glob("incoming-*") if p.is_dir()]
    if not leftovers or processes_using([git_dir]):
        return []
    for p in leftovers:
        fsutil.rmtree_quiet(p)
    return [p.name for p in leftovers]


def git_failure(stderr):
    """The lines of git's stderr that say what failed (not only the last one, which is
    often 'and the repository exists.')."""
    lines = [ln.strip() for ln in (stderr or "").splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(_BOILERPLATE)]
    return "; ".join(useful[:4]) if useful else (lines[-1] if lines else "no message")


# --- merge drivers ------------------------------------------------------------------------


def install_policies(s, engine=None, dry_run=False):
    """Write the attributes block and the merge-driver definitions (idempotent).

    Returns what differed (and, unless dry_run, was written): a list of
    "info/attributes" and the git config keys set.
    """
    engine = engine or str(Path(sys.executable).parent / "strongroom")
    attrs = Path(s.repo) / ".git" / "info" / "attributes"
    current = attrs.read_text() if attrs.exists() else ""
    old = current
    if ATTR_BEGIN in old:
        head, _, rest = old.partition(ATTR_BEGIN)
        old = head + rest.partition(ATTR_END + "\n")[2]
    lines = [f"{pattern} merge=strongroom-{policy}" for pattern, policy in s.policies.items()]
    lines.append(f"{MANIFEST_NAME} merge=strongroom-manifest")
    new = old + ATTR_BEGIN + "\n" + "\n".join(lines) + "\n" + ATTR_END + "\n"
    changes = []
    if new != current:
        changes.append("info/attributes")
        if not dry_run:
            attrs.parent.mkdir(parents=True, exist_ok=True)
            fsutil.atomic_write_bytes(attrs, new.encode())
    # without a role nobody may win: the primary-wins driver blocks until one is given
    side = {"primary": "ours", "secondary": "theirs"}.get(s.role, "block")
    drivers = {
        "append": f"{engine} sync merge-driver append %O %A %B %P",
        "block": f"{engine} sync merge-driver block %O %A %B %P",
        "primary-wins": f"{engine} sync merge-driver {side} %O %A %B %P",
        # both sides' manifests conflict by nature; the merge result is re-recorded
        "manifest": f"{engine} sync merge-driver ours %O %A %B %P",
    }
    for name, cmd in drivers.items():
        for key, value in ((f"merge.strongroom-{name}.name", f"strongroom {name}"),
                           (f"merge.strongroom-{name}.driver", cmd)):
            have = _out(_run_git(s, "config", "--local", "--get", key, check=False)).strip()
            if have != value:
                changes.append(key)
                if not dry_run:
                    _run_git(s, "config", "--local", key, value)
    return changes


def merge_driver(kind, base, ours, theirs, path):
    """git's merge-driver contract: write the result to `ours`, exit 0 or 1 (conflict)."""
    if kind == "ours":
        return 0
    if kind == "theirs":
        shutil.copyfile(theirs, ours)
        return 0
    if kind == "block":
        return 1
    if kind == "append":
        merged = merge_additions(Path(base).read_bytes(), Path(ours).read_bytes(),
                                 Path(theirs).read_bytes())
        Path(ours).write_bytes(merged)
        return 0
    raise SystemExit(f"unknown merge driver kind {kind!r}")


# --- snapshot and rollback ---------------------------------------------------------------


def snapshot(s):
    try:
        return sync_state.take(s.repo, _selection(s), s.host, also=OWN_FILES)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise SyncFailed(f"no room to take the snapshot in {_dir(s)} ({exc.strerror}); it "
                             "copies the files git does not hold (edits, untracked and "
                             "ignored files). Nothing was changed; free some space") from None
        raise


def snapshot_info(s):
    return sync_state.info(s.repo)


_OID = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")


def _op(s):
    """The running (or killed) step's marker: operation, pid, start, and what it fetched
    and committed, so that a rollback knows which versions are its doing. A damaged
    marker reads as one that knows nothing (object ids only, never an option for git)."""
    op = _read_json(_dir(s) / "op.json")
    if not isinstance(op, dict):
        return {}
    for key in ("incoming", "commits", "merging"):
        values = op.get(key)
        op[key] = [v for v in values if isinstance(v, str) and _OID.fullmatch(v)] \
            if isinstance(values, list) else []
    try:
        op["ts"] = float(op.get("ts") or 0)
    except (TypeError, ValueError):
        op["ts"] = 0.0
    return op


def _note(s, key, value):
    op = _op(s)
    if op and value:
        op.setdefault(key, []).append(value)
        fsutil.atomic_write_json(_dir(s) / "op.json", op)


def rollback(s, dry_run=False, keep_newer=True):
    """Back to the snapshot (see sync_state.rollback: nothing anyone changed meanwhile
    is lost); a killed run's marker and a failed rollback's marker go too."""
    try:
        out = sync_state.rollback(s.repo, dry_run=dry_run, own=OWN_FILES,
                                     keep_newer=keep_newer,
                                     incoming=_op(s).get("incoming", []))
    except sync_state.RollbackFailed as exc:
        raise SyncFailed(str(exc)) from None
    except OSError as exc:
        raise SyncFailed(f"rollback failed: {exc}") from None
    if not dry_run:
        (_dir(s) / "op.json").unlink(missing_ok=True)
        _failed_path(s).unlink(missing_ok=True)
    return out


def describe_rollback(back):
    head = (back["head"] or "")[:12] or "no commit (an unborn branch)"
    text = (f"rolled back to {head} exactly: {len(back['changed_files'])} file(s) put back, "
            f"{len(back['removed'])} removed" + (", the index restored"
                                                  if back["index_restored"] else ""))
    if back.get("kept"):
        text += (f"; kept as they are now (changed meanwhile, not by the sync): "
                 f"{', '.join(back['kept'][:10])}; their versions from before are in "
                 f"{back['kept_dir']}")
    if back.get("index_saved"):
        text += (f"; the index it replaced is saved as {back['index_saved']} (git read-tree "
                 f"{back['index_saved']} brings those staged versions back)")
    if back.get("set_aside"):
        text += (f"; the versions found of {', '.join(back['set_aside'][:10])} (newer than "
                 f"the snapshot, or a merge left unfinished) were copied to "
                 f"{back['kept_dir']}")
    return text


def _failed_path(s):
    return _dir(s) / "rollback-failed.json"


def _refuse_after_failed_rollback(s):
    """After a rollback failed, the snapshot is the only record of the state before: no
    new run may replace it until the user has looked."""
    try:
        failed = json.loads(_failed_path(s).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return
    except (OSError, ValueError):
        failed = {}
    raise SyncFailed(
        f"a rollback failed at {failed.get('when', '?')} ({failed.get('error', '?')}); the "
        f"snapshot from before that {failed.get('operation', 'sync')} is kept in {_dir(s)} "
        "and no sync runs until it is dealt with. Fix what the error names, then run "
        f"strongroom sync rollback --repo {shlex.quote(str(s.repo))} (it tries again)")


def _run_commits_only(s, since, op):
    """True when every commit after `since` on HEAD is the killed step's: one it noted,
    one it fetched, or one of its own messages (made just before it could note it)."""
    if current_head(s) is None:
        return since is None
    rng = ["HEAD"] + ([f"^{since}"] if since else [])
    rng += [f"^{c}" for c in op.get("incoming", []) if _run_git(
        s, "cat-file", "-e", f"{c}^{{commit}}", check=False).returncode == 0]
    proc = _run_git(s, "log", "--format=%H %ct %s", *rng, check=False)
    if proc.returncode != 0:
        return False
    noted = set(op.get("commits", []))
    started = op.get("ts", 0.0) - 5
    for line in _out(proc).splitlines():
        sha, when, subject = (line.split(" ", 2) + ["", ""])[:3]
        made_by_it = subject.startswith("sync: ") and when.isdigit() and int(when) >= started
        if sha not in noted and not made_by_it:
            return False
    return True


def user_commits_since_snapshot(s):
    """Commits on HEAD after the snapshot that no sync made: a rollback would take them
    off the branch."""
    meta = sync_state.load(s.repo)
    if not meta or current_head(s) is None:
        return []
    rng = ["HEAD"] + ([f"^{meta['head']}"] if meta["head"] else [])
    proc = _run_git(s, "log", "--format=%H %s", *rng, check=False)
    return [ln.split(" ", 1)[0] for ln in _out(proc).splitlines()
            if ln and not ln.split(" ", 1)[-1].startswith("sync: ")]


BEFORE_ROLLBACK_REF = "refs/strongroom/before-rollback"


def refuse_rollback_over_user_commits(s, force=False):
    """A rollback by hand would take commits made since the snapshot off the branch:
    refused, or with force done with them kept reachable under BEFORE_ROLLBACK_REF."""
    mine = user_commits_since_snapshot(s)
    if mine and not force:
        raise SyncFailed(
            f"{len(mine)} commit(s) of yours since the snapshot (newest {mine[0][:12]}); a "
            "rollback would take them off the branch, so nothing was changed. Add --force "
            f"to roll back anyway (they stay reachable as {BEFORE_ROLLBACK_REF})")
    if mine:
        _run_git(s, "update-ref", "-m", "strongroom rollback --force", BEFORE_ROLLBACK_REF,
                 "HEAD")


def _push_landed(s, op):
    """After a killed push: the remote-tracking branch (updated by the push) holds HEAD,
    so the push landed and there is nothing to undo."""
    if op.get("operation") != "push":
        return False
    branch = _out(_run_git(s, "symbolic-ref", "--short", "-q", "HEAD", check=False)).strip()
    head = current_head(s)
    if not branch or not head:
        return False
    return _run_git(s, "merge-base", "--is-ancestor", "HEAD",
                    f"refs/remotes/{s.remote}/{branch}", check=False).returncode == 0 \
        and (sync_state.load(s.repo) or {}).get("head") != head


def _recover(s):
    """A run that was killed mid-step left its marker: undo what it did first (what the
    user did since is kept, see sync_state.rollback)."""
    marker = _dir(s) / "op.json"
    if not marker.exists():
        return None
    op = _op(s)
    what = (f"an interrupted {op.get('operation', 'sync')} (PID {op.get('pid', '?')}, "
            f"{op.get('started', '?')})")
    meta = sync_state.load(s.repo)
    if _push_landed(s, op):
        marker.unlink(missing_ok=True)
        return (f"found {what}; its push had landed ({s.remote} has HEAD), so there was "
                "nothing to undo")
    branch = _out(_run_git(s, "symbolic-ref", "--short", "-q", "HEAD", check=False)).strip()
    if meta is None or (branch or None) != meta["branch"] or not _run_commits_only(
            s, meta["head"], op):
        # the user has switched branches or committed since: that is newer than anything
        # the killed run did, so nothing is undone
        marker.unlink(missing_ok=True)
        return (f"found {what}, but the repository has moved on since (new commits or "
                "another branch): nothing was rolled back")
    try:
        back = rollback(s)
    except SyncFailed as exc:
        _rollback_failed(s, op.get("operation", "sync"), exc)
        raise SyncFailed(f"ROLLBACK FAILED while recovering from {what}: {exc}; the snapshot "
                         f"is kept in {_dir(s)} and no sync runs until `strongroom sync "
                         "rollback` succeeds") from None
    return f"recovered from {what}: " + describe_rollback(back)


def _rollback_failed(s, operation, exc):
    fsutil.atomic_write_json(_failed_path(s), {"when": now_iso(), "operation": operation,
                                               "error": str(exc)})


def _clean_stale_index_lock(s):
    """A git killed with the sync leaves .git/index.lock; every later git then fails."""
    removed, _live = clean_stale_git_locks(Path(s.repo), Path(s.repo) / ".git")
    return [Path(p).name for p in removed]


# --- state ------------------------------------------------------------------------------


def _save_last(s, result):
    fsutil.atomic_write_json(_dir(s) / "last.json", result)


def _baseline_path(s):
    return _dir(s) / "baseline.json"


def _ignored(s, rels):
    """Those of rels git ignores (.env, keys; tracked files are never ignored). Files in
    a submodule are its own business: left out, as git refuses to be asked about them."""
    proc = git(s.repo, "ls-files", "-s", "-z", check=False)
    subs = [item.split("\t", 1)[1] for item in _out(proc).split("\0")
            if item.startswith("160000 ") and "\t" in item]
    inside = {r for r in rels if any(r.startswith(m + "/") for m in subs)}
    ask = [r for r in rels if r not in inside]
    if not ask:
        return inside
    proc = git(s.repo, "check-ignore", "-z", "--stdin", input="\0".join(ask) + "\0",
               check=False)
    if proc.returncode not in (0, 1):
        raise SyncFailed(f"cannot tell which files git ignores: {git_failure(_err(proc))}; "
                         "nothing was committed (the manifest must not name them)")
    return inside | set(filter(None, _out(proc).split("\0")))


def _record_manifest(s, phase, operation):
    data = manifest.build(s.repo, _selection(s), phase=phase, operation=operation,
                          skip=manifest.own_files(Path(s.repo) / MANIFEST_NAME))
    # the manifest is committed: a name and a plain SHA-256 of an ignored secret would
    # publish what the user kept out of git (and a short secret's hash is guessable)
    for rel in _ignored(s, list(data["checksums"])):
        del data["checksums"][rel]
    data["metadata"].update(files=len(data["checksums"]),
                            bytes=sum(e["size"] for e in data["checksums"].values()))
    data["metadata"]["role"] = s.role or "unset"
    return data


def _same_content(path, data):
    """The manifest at path records the same files, hashes and patterns as data (its
    timestamp, host and mtimes aside): rewriting it would commit a change of nothing."""
    try:
        old = manifest.load(path)
    except manifest.ManifestError:
        return False

    def sums(d):
        return {rel: entry.get("sha256") for rel, entry in d["checksums"].items()}

    return sums(old) == sums(data) and manifest.selection_of(old) == manifest.selection_of(data)


def _parses(data):
    try:
        json.loads(data.decode("utf-8-sig"))
        return True
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False


def _check_json_files(s, rels):
    """A covered *.json that parsed when it was committed and no longer does is damage
    (a truncated write, a torn copy), not an edit worth syncing. A file that never was
    strict JSON (comments, as in tsconfig.json; empty) is the user's business."""
    bad = []
    for rel in rels:
        if not rel.endswith(".json"):
            continue
        try:
            now = (Path(s.repo) / rel).read_bytes()
        except OSError:
            continue
        if _parses(now):
            continue
        before = git(s.repo, "show", f"HEAD:{rel}", check=False, binary=True)
        if before.returncode == 0 and _parses(before.stdout):
            bad.append(rel)
    if bad:
        raise SyncFailed("pre-sync check: not valid JSON (damaged?): " + ", ".join(bad))


def _guarded(s, operation, body, notify_cb=None, lock_wait=0):
    """Lock, recover a killed run, snapshot, run body; on any failure roll back exactly."""
    check_repo(s)
    with sync_lock(s, lock_wait):
        fsutil.clean_stale_temps(_dir(s))
        _refuse_after_failed_rollback(s)
        unlocked = _clean_stale_index_lock(s)
        recovered = _recover(s)
        check_repo(s)  # the recovery may have ended the merge a killed run left
        _clean_partial_fetch(s)
        started = time.monotonic()
        snap = snapshot(s)
        fsutil.atomic_write_json(_dir(s) / "op.json", {
            "operation": operation, "pid": os.getpid(), "started": now_iso(),
            "ts": time.time()})
        signalled = None
        try:
            result = body(snap)
        except _Crash:  # a stand-in for kill -9: nothing of ours runs
            raise
        except BaseException as exc:  # noqa: BLE001 - whatever failed, the side goes back
            # a signal or Ctrl-C too: the side goes back now, then the run ends as asked
            signalled = None if isinstance(exc, Exception) else exc
            message = str(exc) if not isinstance(exc, GitError) else _git_message(exc)
            if signalled is not None:
                message = _interrupted(exc)
            elif not isinstance(exc, (StrongroomError, OSError, subprocess.SubprocessError)):
                message = f"internal error ({type(exc).__name__}): {exc}"
            rolling = time.monotonic()
            try:
                rolled = describe_rollback(rollback(s))
            except (StrongroomError, OSError) as exc2:
                _rollback_failed(s, operation, exc2)
                rolled = (f"ROLLBACK FAILED: {exc2}; the snapshot is kept in {_dir(s)} and "
                          "no sync runs until `strongroom sync rollback` succeeds")
            result = {"operation": operation, "result": "error", "message": message,
                      "rollback": rolled, "exit_code": getattr(exc, "exit_code", ERROR),
                      "rollback_seconds": round(time.monotonic() - rolling, 3)}
            if getattr(exc, "extra", None):
                result.update(exc.extra)
        (_dir(s) / "op.json").unlink(missing_ok=True)
        if recovered:
            result["recovered"] = recovered
        if unlocked:
            result["stale_locks_removed"] = unlocked
        result.update({"finished": now_iso(), "host": s.host, "role": s.role,
                       "duration_seconds": round(time.monotonic() - started, 3)})
        _save_last(s, result)
        if signalled is not None:  # the job runner reports the signal and the rollback
            signalled.rollback = result["rollback"]
            raise signalled
        if notify_cb and result["result"] == "error":
            notify_cb(result)
        return result


def _interrupted(exc):
    if isinstance(exc, SystemExit):
        return f"terminated (exit {exc.code})"
    return str(exc) or "interrupted"


def _git_message(exc):
    return git_failure(getattr(exc, "stderr", "") or str(exc))


def _nested_repositories(s):
    """Untracked folders that are repositories of their own: `git add -A` would record a
    bare pointer to their HEAD (a gitlink), and the other machine would get no files."""
    out = []
    for code, path, _ in sync_state.status_entries(s.repo):
        if code == "??" and path.endswith("/") and os.path.lexists(
                Path(s.repo) / path / ".git"):
            out.append(path.rstrip("/"))
    return out


def _commit_all(s, message):
    nested = _nested_repositories(s)
    if nested:
        raise SyncFailed(f"{', '.join(nested)}: a git repository inside the synced one; a "
                         "commit would carry only a pointer to it, not its files. Add it "
                         "to .gitignore (and sync it on its own), or make it a submodule; "
                         "nothing was committed")
    _run_git(s, "add", "-A")
    if _run_git(s, "diff", "--cached", "--quiet", check=False).returncode == 0:
        return False
    _run_git(s, "-c", f"user.name=strongroom ({s.host})", "-c",
             f"user.email=strongroom@{s.host}", "commit", "-q", "--no-verify", "-m", message)
    _note(s, "commits", current_head(s))
    return True


def _who(s):
    return f"{s.host} ({s.role})" if s.role else s.host


# --- a block, and the way out of it ------------------------------------------------------


def _blocked_path(s):
    return _dir(s) / "blocked.json"


def blocked(s):
    """The unresolved block, or None: {theirs, paths, kept, since}."""
    try:
        data = json.loads(_blocked_path(s).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("paths") else None


def resolve_hint(s, paths):
    quoted = " ".join(shlex.quote(p) for p in paths)
    return (f"Merge each into its file by hand, then run: strongroom sync resolve --repo "
            f"{shlex.quote(str(s.repo))} {quoted} (or add --ours / --theirs to keep one side "
            "as it is), then strongroom sync push")


def _refuse_while_blocked(s):
    # only the recorded block counts: a file of the user's that happens to end in
    # .theirs is not one
    block = blocked(s)
    if block:
        raise SyncFailed("a blocked merge is unresolved: " + ", ".join(block["paths"]) + ". "
                         + resolve_hint(s, block["paths"]))


def push(s, notify_cb=None, lock_wait=0):
    def body(snap):
        branch = snap["branch"] or _branch(s)
        _refuse_while_blocked(s)
        _check_json_files(s, manifest.walk(s.repo, _selection(s)))
        data = _record_manifest(s, "pre-sync", "push")
        if not _same_content(Path(s.repo) / MANIFEST_NAME, data):
            manifest.write(Path(s.repo) / MANIFEST_NAME, data)
        (Path(s.repo) / (MANIFEST_NAME + ".prev")).unlink(missing_ok=True)
        committed = _commit_all(s, f"sync: {_who(s)} {now_iso()}")
        _crash_point("push-after-commit")
        head = _out(_run_git(s, "rev-parse", "HEAD")).strip()
        remote_before = _remote_head(s, branch)
        proc = _transport(s, "push", "-q", s.remote, f"HEAD:refs/heads/{branch}")
        if proc.returncode != 0:
            err = _err(proc)
            if "rejected" in err or "non-fast-forward" in err or "fetch first" in err:
                raise SyncFailed(f"push rejected: {s.remote}/{branch} has commits this side "
                                 "lacks; run strongroom sync pull first")
            raise SyncFailed(f"push to {s.remote} failed: {git_failure(err)}")
        # post-sync: the remote has our commit and the tree matches what we committed
        remote_head = _remote_head(s, branch)
        if remote_head != head:
            raise SyncFailed(f"post-sync check: {s.remote}/{branch} is not at {head[:12]}")
        pushed = remote_before != head
        v = manifest.verify(s.repo, data)
        if not v.passed:
            changed = ", ".join(v.mismatched + v.missing)
            if not pushed:
                raise SyncFailed("post-sync check failed: " + changed)
            # the remote has our commit: rolling back behind it would undo a push that
            # landed; what changed meanwhile is simply the next push's work
            return {"operation": "push", "result": "warning", "exit_code": WARNING,
                    "head": head, "committed": committed, "pushed": True, "changed": True,
                    "message": f"pushed {head[:12]} to {s.remote}/{branch}, but these "
                               f"changed while it ran and go with the next push: {changed}"}
        fsutil.atomic_write_json(_baseline_path(s), data["checksums"])
        return {"operation": "push", "result": "ok", "exit_code": OK, "head": head,
                "committed": committed, "pushed": pushed, "changed": committed or pushed,
                "message": (f"pushed {head[:12]} to {s.remote}/{branch}" if pushed else
                            "nothing to commit; remote is current")}

    return _guarded(s, "push", body, notify_cb, lock_wait)


def _changed_between(s, a, b):
    # no rename detection: a file renamed on one side and edited on the other must count
    # under both names, or the check after the merge calls the carried edit corruption
    out = _out(_run_git(s, "diff", "--name-only", "-z", "--no-renames", a, b))
    return set(filter(None, out.split("\0")))


def _fetch(s, branch):
    fetched = _transport(s, "fetch", "-q", s.remote, f"refs/heads/{branch}")
    if fetched.returncode != 0:
        _clean_partial_fetch(s)
        raise SyncFailed(f"cannot fetch from {s.remote}: {git_failure(_err(fetched))}")
    fsutil.atomic_write_json(_dir(s) / "fetched.json", {"when": now_iso(),
                                                        "ts": time.time()})
    theirs = _out(_run_git(s, "rev-parse", "FETCH_HEAD")).strip()
    _note(s, "incoming", theirs)
    _crash_point("pull-after-fetch")
    return theirs


def _block(s, conflicted, theirs):
    """Stop the merge, keep their versions beside ours, record what `resolve` needs."""
    _run_git(s, "merge", "--abort", check=False)
    kept = _keep_both(s, conflicted, theirs)
    fsutil.atomic_write_json(_blocked_path(s), {"theirs": theirs, "paths": conflicted,
                                                "kept": kept, "since": now_iso()})
    _run_git(s, "update-ref", BLOCKED_REF, theirs)  # their commit must outlive a gc
    side = (f"Their versions are beside yours: {', '.join(kept)}. " if kept else "")
    exc = SyncFailed("merge blocked: both sides changed " + ", ".join(conflicted)
                     + "; nothing was merged. " + side + resolve_hint(s, conflicted))
    exc.extra = {"conflicts": conflicted, "kept_side_by_side": kept, "blocked": True}
    return exc


def pull(s, notify_cb=None, lock_wait=0):
    def body(snap):
        branch = snap["branch"] or _branch(s)
        theirs = _fetch(s, branch)
        head = snap["head"]
        if head and _run_git(s, "merge-base", "--is-ancestor", theirs, head,
                             check=False).returncode == 0:
            return {"operation": "pull", "result": "ok", "exit_code": OK, "head": head,
                    "changed": False, "message": "already up to date"}
        _commit_all(s, f"sync: local changes on {s.host} before pull {now_iso()}")
        _crash_point("pull-after-commit")
        ours = _out(_run_git(s, "rev-parse", "HEAD")).strip()
        base = _out(_run_git(s, "merge-base", ours, theirs, check=False)).strip()
        incoming = _changed_between(s, base, theirs) if base else \
            set(sync_state.tree_entries(s.repo, theirs))
        _refuse_overwriting_local(s, theirs, incoming)
        local = _changed_between(s, base, ours) if base else set()
        _note(s, "merging", theirs)
        merged = _run_git(s, "-c", f"user.name=strongroom ({s.host})", "-c",
                          f"user.email=strongroom@{s.host}", "merge", "-q", "-m",
                          f"sync: merge {theirs[:12]} on {s.host} {now_iso()}",
                          theirs, check=False)
        _note(s, "commits", current_head(s))
        if merged.returncode != 0:
            conflicted = [p for p in _out(_run_git(s, "diff", "--name-only", "-z",
                                                   "--diff-filter=U", check=False)).split("\0")
                          if p]
            if not conflicted:
                raise SyncFailed(f"merge of {theirs[:12]} failed: {git_failure(_err(merged))}")
            raise _block(s, conflicted, theirs)
        _crash_point("pull-after-merge")
        _verify_pull(s, snap, theirs, incoming, local)
        _blocked_path(s).unlink(missing_ok=True)
        data = _record_manifest(s, "post-sync", "pull")
        fsutil.atomic_write_json(_baseline_path(s), data["checksums"])
        new_head = _out(_run_git(s, "rev-parse", "HEAD")).strip()
        return {"operation": "pull", "result": "ok", "exit_code": OK, "head": new_head,
                "changed": new_head != head,
                "incoming": sorted(incoming), "merged_both": sorted(incoming & local),
                "message": f"merged {theirs[:12]}: {len(incoming)} files came in"}

    return _guarded(s, "pull", body, notify_cb, lock_wait)


def _refuse_overwriting_local(s, theirs, incoming):
    """git replaces an ignored file when the incoming commits add a file by that name,
    and removes one (or a whole ignored folder) that stands where they need a folder or a
    file (it holds ignored files expendable). Here an ignored file is a .env or a key: a
    local one with other content stops the pull before anything is merged."""
    repo = Path(s.repo)
    tracked = set(sync_state.index_entries(s.repo))
    theirs_tree = sync_state.tree_entries(s.repo, theirs)
    clash, same = set(), []
    for rel in sorted(incoming & set(theirs_tree)):
        if rel in tracked:
            continue
        parts = rel.split("/")
        for n in range(1, len(parts)):  # a local file or link where they need a folder
            parent = "/".join(parts[:n])
            try:
                st = os.lstat(repo / parent)
            except (FileNotFoundError, NotADirectoryError):
                break
            if not stat.S_ISDIR(st.st_mode):
                if parent not in tracked:
                    clash.add(parent)
                break
        else:
            path = repo / rel
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if stat.S_ISDIR(st.st_mode):  # a folder of ours where they add a file
                if any(not is_dir and f"{rel}/{sub}" not in tracked
                       for sub, is_dir in fsutil.walk(path)):
                    clash.add(rel + "/")
            else:
                same.append(rel)
    oids = sync_state._git_oids(s.repo, same)  # as git would store them (eol, filters)
    fmt = sync_state._object_format(s.repo)
    for rel in same:
        path = repo / rel
        oid = (sync_state._blob_oid(os.fsencode(os.readlink(path)), fmt)
               if path.is_symlink() else oids.get(rel))
        if oid != theirs_tree[rel]:
            clash.add(rel)
    if clash:
        raise SyncFailed(
            f"the other side added {', '.join(sorted(clash))}, which here is a local file "
            "or folder of yours (ignored or untracked) with other content; git would "
            "overwrite or remove it, so nothing was merged. Move yours aside (or commit "
            "it) and pull again")


def _verify_pull(s, snap, theirs, incoming, local):
    """Incoming-only files against the other side's manifest; untouched covered files
    against the snapshot; files both sides changed were merged by their policy."""
    try:
        their_manifest = json.loads(_out(_run_git(s, "show", f"{theirs}:{MANIFEST_NAME}")))
        their_sums = {rel: e.get("sha256") for rel, e in their_manifest["checksums"].items()
                      if isinstance(e, dict)}
    except (GitError, ValueError, KeyError, TypeError, AttributeError):
        their_sums = None
    problems = []
    for rel in sorted(manifest.walk(s.repo, _selection(s))):
        digest = fsutil.sha256_file(Path(s.repo) / rel)
        if rel in incoming and rel not in local:
            if their_sums is None:
                problems.append(f"{rel}: changed by the other side, which committed "
                                f"no {MANIFEST_NAME}")
            elif rel not in their_sums:
                problems.append(f"{rel}: not in the other side's manifest")
            elif their_sums[rel] != digest:
                problems.append(f"{rel}: does not match the other side's manifest")
        elif rel not in incoming and rel not in local and (
                sync_state.sha_of(snap, rel) or digest) != digest:
            # (a file only this side changed may carry their edit across a rename)
            problems.append(f"{rel}: changed although the pull did not touch it (an edit "
                            "while it ran, or damage)")
    for rel, entry in sorted(snap["files"].items()):
        if rel not in incoming and rel not in OWN_FILES and entry["kind"] == "file" \
                and not os.path.lexists(Path(s.repo) / rel):
            problems.append(f"{rel}: gone although the pull did not touch it")
    if problems:
        raise SyncFailed("post-pull check failed (corruption): " + "; ".join(problems))


def resolve(s, paths, side=None, notify_cb=None, lock_wait=0):
    """End a block: merge the recorded other side, taking for each of `paths` the user's
    hand-merged file (or `side`: ours or theirs) as the resolution."""
    check_repo(s)
    block = blocked(s)
    if not block:
        raise SyncFailed(f"{s.repo}: nothing is blocked; `strongroom sync status` shows the "
                         "last sync")
    wanted = list(paths) or (list(block["paths"]) if side else [])
    if not wanted:
        raise SyncFailed("name the files you merged by hand (blocked: "
                         + ", ".join(block["paths"]) + "), or give --ours or --theirs")
    unknown = sorted(set(wanted) - set(block["paths"]))
    if unknown:
        raise SyncFailed(f"{', '.join(unknown)} is not blocked; blocked: "
                         + ", ".join(block["paths"]))
    missing = sorted(set(block["paths"]) - set(wanted))
    if missing:
        raise SyncFailed(f"also blocked: {', '.join(missing)}; resolve every blocked file "
                         "in one go (name them too)")

    def body(snap):
        theirs = block["theirs"]
        _note(s, "incoming", theirs)
        hand = {}
        for rel in wanted:
            path = Path(s.repo) / rel
            hand[rel] = path.read_bytes() if path.is_file() else None
            (Path(s.repo) / f"{rel}.theirs").unlink(missing_ok=True)
        _commit_all(s, f"sync: local changes on {s.host} before resolving {now_iso()}")
        _note(s, "merging", theirs)
        merged = _run_git(s, "-c", f"user.name=strongroom ({s.host})", "-c",
                          f"user.email=strongroom@{s.host}", "merge", "--no-commit",
                          "--no-ff", "-q", theirs, check=False)
        conflicted = {p for p in _out(_run_git(s, "diff", "--name-only", "-z",
                                               "--diff-filter=U", check=False)).split("\0")
                      if p}
        other = sorted(conflicted - set(wanted))
        if other:
            raise SyncFailed(f"the merge also conflicts in {', '.join(other)}; run "
                             "strongroom sync pull to see the block as it is now")
        if merged.returncode != 0 and not conflicted:
            raise SyncFailed(f"merge of {theirs[:12]} failed: {git_failure(_err(merged))}")
        for rel in wanted:
            _take_resolution(s, rel, hand[rel], side, theirs)
        _run_git(s, "-c", f"user.name=strongroom ({s.host})", "-c",
                 f"user.email=strongroom@{s.host}", "commit", "-q", "--no-verify", "-m",
                 f"sync: {', '.join(wanted)} resolved "
                 f"{'as ' + side if side else 'by hand'} on {s.host}")
        _note(s, "commits", current_head(s))
        _blocked_path(s).unlink(missing_ok=True)
        _run_git(s, "update-ref", "-d", BLOCKED_REF, check=False)
        head = _out(_run_git(s, "rev-parse", "HEAD")).strip()
        return {"operation": "resolve", "result": "ok", "exit_code": OK, "head": head,
                "changed": True, "resolved": wanted, "side": side or "hand",
                "message": f"resolved {', '.join(wanted)} ({side or 'by hand'}) in "
                           f"{head[:12]}; run strongroom sync push to carry it"}

    return _guarded(s, "resolve", body, notify_cb, lock_wait)


def _take_resolution(s, rel, hand, side, theirs):
    path = Path(s.repo) / rel
    if side in ("theirs", "ours"):  # ours: HEAD, the local commit just made
        proc = git(s.repo, "show", f"{theirs if side == 'theirs' else 'HEAD'}:{rel}",
                   check=False, binary=True)
        content = proc.stdout if proc.returncode == 0 else None
    else:
        content = hand
    if content is None:
        path.unlink(missing_ok=True)
        _run_git(s, "rm", "-q", "--cached", "--ignore-unmatch", "--", rel)
        return
    fsutil.makedirs(path.parent)
    path.write_bytes(content)
    _run_git(s, "add", "--", rel)


def _keep_both(s, paths, theirs):
    """Write the other side's version of each conflicting file beside ours."""
    kept = []
    for rel in paths:
        proc = git(s.repo, "show", f"{theirs}:{rel}", check=False, binary=True)
        if proc.returncode != 0:
            continue
        fsutil.atomic_write_bytes(Path(s.repo) / f"{rel}.theirs", proc.stdout)
        kept.append(f"{rel}.theirs")
    return kept


def _remote_head(s, branch):
    proc = _transport(s, "ls-remote", s.remote, f"refs/heads/{branch}")
    if proc.returncode != 0:
        raise SyncFailed(f"cannot reach {s.remote}: {git_failure(_err(proc))}")
    words = _out(proc).split()
    return words[0] if words else None


def preview(s, operation):
    """What push or pull would do, touching nothing (no fetch, no snapshot, no lock)."""
    check_repo(s)
    branch = _branch(s)
    head = _out(_run_git(s, "rev-parse", "-q", "--verify", "HEAD", check=False)).strip()
    remote = _remote_head(s, branch)
    dirty = [p for p in sync_state.dirty_paths(s.repo)
             if p not in (MANIFEST_NAME, MANIFEST_NAME + ".prev")]
    out = {"operation": operation, "branch": branch, "head": head or None,
           "remote_head": remote, "dirty": dirty}
    if operation == "push":
        _refuse_while_blocked(s)
        _check_json_files(s, manifest.walk(s.repo, _selection(s)))
        out["would_change"] = bool(dirty) or remote != head
        out["message"] = (f"would commit {len(dirty)} file(s) and push" if dirty else
                          "would push" if remote != head else "remote is current")
        return out
    known = remote and _run_git(s, "cat-file", "-e", f"{remote}^{{commit}}",
                                check=False).returncode == 0
    current = remote is None or remote == head or (
        known and head and _run_git(s, "merge-base", "--is-ancestor", remote, head,
                                    check=False).returncode == 0)
    out["would_change"] = not current
    out["message"] = "already up to date" if current else f"would merge {remote[:12]}"
    return out


def _last_fetch(s):
    try:
        data = json.loads((_dir(s) / "fetched.json").read_text(encoding="utf-8"))
        return data["when"], round(time.time() - data["ts"])
    except (OSError, ValueError, KeyError, TypeError):
        return None, None


def status(s, offline=True):
    """Where this side stands; with offline=False, fetched first, and a failed fetch is
    said (the figures are then those of the last fetch that worked, with its age)."""
    check_repo(s)
    branch = _branch(s)
    upstream = f"refs/remotes/{s.remote}/{branch}"
    fetch = None
    if not offline:
        try:
            proc = _transport(s, "fetch", "-q", s.remote)
            error = None if proc.returncode == 0 else git_failure(_err(proc))
        except SyncFailed as exc:  # stalled and stopped
            error = str(exc)
        if error is None:
            fsutil.atomic_write_json(_dir(s) / "fetched.json", {"when": now_iso(),
                                                                "ts": time.time()})
            fetch = {"ok": True}
        else:
            _clean_partial_fetch(s)
            fetch = {"ok": False, "error": error}
    has_up = _run_git(s, "rev-parse", "-q", "--verify", upstream, check=False).returncode == 0
    ahead = behind = None
    if has_up:
        counts = _out(_run_git(s, "rev-list", "--left-right", "--count",
                               f"HEAD...{upstream}")).split()
        ahead, behind = int(counts[0]), int(counts[1])
    try:
        last = json.loads((_dir(s) / "last.json").read_text())
    except (OSError, ValueError):
        last = None
    when, age = _last_fetch(s)
    return {"repo": str(s.repo), "branch": branch, "role": s.role, "ahead": ahead,
            "behind": behind, "dirty": sync_state.dirty_paths(s.repo), "last": last,
            "snapshot": snapshot_info(s), "fetch": fetch, "last_fetch": when,
            "last_fetch_age_seconds": age, "blocked": blocked(s),
            "interrupted": _read_json(_dir(s) / "op.json"),
            "kept": _kept_summary(s),
            "rollback_failed": _read_json(_failed_path(s))}


def _kept_summary(s):
    """What rollbacks set aside in .git/strongroom/kept: folders of superseded versions go
    after 30 days or beyond the newest 100; a folder holding newer versions (marked) is
    never removed by the sync."""
    root = _dir(s) / "kept"
    folders = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
    if not folders:
        return None
    size = sum(st.st_size for st in (os.lstat(root / rel) for rel, is_dir in
                                     fsutil.walk(root) if not is_dir))
    return {"path": str(root), "folders": len(folders), "bytes": size,
            "newest": folders[-1]}


def _read_json(path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"unreadable": str(path)}


def exit_code(result):
    return result.get("exit_code", ERROR if result.get("result") == "error" else OK)


def status_exit(st):
    """1 when the figures may be stale (a fetch that failed) or a block waits."""
    if st.get("rollback_failed"):
        return ERROR
    return WARNING if (st.get("fetch") and not st["fetch"]["ok"]) or st.get("blocked") \
        or st.get("interrupted") else OK
