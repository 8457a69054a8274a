"""Two machines kept in step through a git remote, guarded by manifests and snapshots.

Every operation starts with a snapshot in <repo>/.git/strongroom/snapshot: HEAD, the
branch, a safety ref (refs/strongroom/snapshot, outside refs/heads so no push or prune
touches it), and a copy of every file the manifest covers plus every dirty or untracked
file. Any failure after that rolls back: first HEAD (reset --hard to the safety ref, on
the snapshot's branch), then the copied files over it, then a check that every copied
file has its snapshot hash. Files are restored last so nothing later can undo them.

push: pre-sync check, commit everything (tracked edits included) with this side's
manifest (.sync-checksums.json) beside it, push, post-sync check.
pull: fetch, stop when up to date, commit local edits, merge under the conflict policy,
then verify: files only the incoming commits changed must match the manifest the other
side committed; files the pull did not touch must match the snapshot.

Conflict policies, per gitignore-style pattern, through merge drivers configured in
.git/info/attributes and .git/config (nothing committed): append (both sides' lines
kept), block (the sync stops, both versions kept side by side), primary-wins.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from . import fsutil, manifest
from .errors import ERROR, OK, StrongroomError
from .gitcmd import GitError, git
from .lock import Lock

MANIFEST_NAME = ".sync-checksums.json"
SAFETY_REF = "refs/strongroom/snapshot"
POLICIES = ("append", "block", "primary-wins")
ATTR_BEGIN = "# BEGIN strongroom sync policies (managed)"
ATTR_END = "# END strongroom sync policies"


class SyncFailed(StrongroomError):
    pass


@dataclass
class Settings:
    repo: Path
    role: str = "primary"  # primary | secondary, from the inventory
    remote: str = "origin"
    branch: str | None = None  # default: the current branch
    include: list = field(default_factory=list)  # manifest patterns; default every file
    exclude: list = field(default_factory=list)
    policies: dict = field(default_factory=dict)  # pattern -> append | block | primary-wins
    host: str = field(default_factory=socket.gethostname)


def now_iso():
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _dir(s):
    return Path(s.repo) / ".git" / "strongroom"


def _run_git(s, *args, check=True, input=None):
    return git(s.repo, *args, check=check, input=input)


def _out(proc):
    return proc.stdout.decode() if isinstance(proc.stdout, bytes) else proc.stdout


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


def check_repo(s):
    repo = Path(s.repo)
    if not (repo / ".git").is_dir():
        raise SyncFailed(f"{repo} is not a git work tree (no .git directory)")
    if (repo / ".git" / "MERGE_HEAD").exists():
        raise SyncFailed(f"{repo}: a merge is in progress; finish or abort it first "
                         "(or run `strongroom sync rollback`)")
    if s.role not in ("primary", "secondary"):
        raise SyncFailed(f"role must be primary or secondary, got {s.role!r}")
    for pattern, policy in s.policies.items():
        if policy not in POLICIES:
            raise SyncFailed(f"policy for {pattern!r} is {policy!r}; expected one of "
                             + ", ".join(POLICIES))


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
    side = "ours" if s.role == "primary" else "theirs"
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
        def lines(p):
            return Path(p).read_bytes().splitlines(keepends=True)

        base_l, ours_l, theirs_l = lines(base), lines(ours), lines(theirs)
        seen = set(ours_l)
        added = [ln for ln in theirs_l if ln not in seen and ln not in base_l]
        if ours_l and not ours_l[-1].endswith(b"\n") and added:
            ours_l[-1] += b"\n"
        Path(ours).write_bytes(b"".join(ours_l + added))
        return 0
    raise SystemExit(f"unknown merge driver kind {kind!r}")


# --- snapshot and rollback ---------------------------------------------------------------


def _dirty(s):
    """Paths (relative) that are modified, added or untracked, not ignored."""
    proc = _run_git(s, "status", "--porcelain=v1", "-z", "--untracked-files=all")
    raw = proc.stdout if isinstance(proc.stdout, bytes) else proc.stdout.encode()
    out, items = [], raw.split(b"\0")
    i = 0
    while i < len(items):
        item = items[i]
        if not item:
            i += 1
            continue
        code, path = item[:2].decode(), item[3:].decode("utf-8", "surrogateescape")
        out.append(path)
        if code[0] in "RC":
            i += 1  # the rename's source follows
        i += 1
    return out


def snapshot(s):
    """Take the snapshot; returns its metadata."""
    d = _dir(s)
    snap = d / "snapshot"
    tmp = d / f".tmp-snapshot.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "files").mkdir(parents=True)
    head = _out(_run_git(s, "rev-parse", "--verify", "-q", "HEAD", check=False)).strip()
    covered = manifest.walk(s.repo, _selection(s))
    rels = sorted(set(covered) | {p for p in _dirty(s) if (Path(s.repo) / p).is_file()})
    files = {}
    for rel in rels:
        src = Path(s.repo) / rel
        dst = tmp / "files" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
        files[rel] = fsutil.sha256_file(dst)
    meta = {"taken": now_iso(), "taken_ts": time.time(), "head": head or None,
            "branch": _branch(s), "files": files, "host": s.host}
    (tmp / "snapshot.json").write_text(json.dumps(meta, indent=1))
    if head:
        _run_git(s, "update-ref", SAFETY_REF, head)
    old = d / f".old-snapshot.{os.getpid()}"
    if snap.exists():
        os.replace(snap, old)
    os.replace(tmp, snap)
    shutil.rmtree(old, ignore_errors=True)
    fsutil.fsync_dir(d)
    return meta


def snapshot_info(s):
    try:
        meta = json.loads((_dir(s) / "snapshot" / "snapshot.json").read_text())
    except (OSError, ValueError):
        return None
    return {"taken": meta["taken"], "age_seconds": round(time.time() - meta["taken_ts"]),
            "head": meta["head"], "branch": meta["branch"], "files": len(meta["files"])}


def _hashes(s, rels):
    def one(rel):
        try:
            return fsutil.sha256_file(Path(s.repo) / rel)
        except OSError:
            return None

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return dict(zip(rels, pool.map(one, rels), strict=True))


def _tracked_changes(s, covered):
    """Tracked files that differ from HEAD and are not among `covered`."""
    if not current_head(s):
        return set()
    out = _out(_run_git(s, "diff", "--name-only", "-z", "HEAD", check=False))
    return set(filter(None, out.split("\0"))) - set(covered)


def rollback(s, dry_run=False):
    """Back to the snapshot: HEAD first, then the files, then a check. Never prompts.

    Returns what differed from the snapshot (`changed_files`, `head_moved`); dry_run only
    reports that and changes nothing.
    """
    snap = _dir(s) / "snapshot"
    try:
        meta = json.loads((snap / "snapshot.json").read_text())
    except (OSError, ValueError):
        raise SyncFailed(f"{s.repo}: no snapshot to roll back to") from None
    files = meta["files"]
    merging = (Path(s.repo) / ".git" / "MERGE_HEAD").exists()
    on_branch = _out(_run_git(s, "symbolic-ref", "--short", "-q", "HEAD", check=False)).strip()
    head_moved = bool(meta["head"]) and (current_head(s) != meta["head"]
                                         or on_branch != meta["branch"])
    # tracked files outside the snapshot were clean when it was taken: only a reset
    # puts them back (and a reset is skipped when nothing needs it, so that a dirty file
    # the snapshot holds is not reverted and copied back for nothing)
    extra = _tracked_changes(s, files)
    out = {"head": meta["head"], "files": len(files), "taken": meta["taken"],
           "head_moved": head_moved}
    if dry_run:
        now = _hashes(s, list(files))
        out["changed_files"] = sorted(extra | {r for r, d in files.items() if now[r] != d})
        return out
    if merging:
        _run_git(s, "merge", "--abort", check=False)
    if meta["head"] and (head_moved or merging or extra):
        _run_git(s, "checkout", "-q", "-f", meta["branch"], check=False)
        _run_git(s, "reset", "-q", "--hard", meta["head"])
    # Copy back only what differs from the snapshot (after a reset, most files already
    # match); hashing runs in parallel, and every file is checked either way.
    now = _hashes(s, list(files))
    copied = set()
    for rel, digest in files.items():
        if now[rel] == digest:
            continue
        src, dst = snap / "files" / rel, Path(s.repo) / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = fsutil.temp_path(dst)
        shutil.copy2(src, tmp)
        os.replace(tmp, dst)
        copied.add(rel)
        now.update(_hashes(s, [rel]))
    bad = [rel for rel, digest in files.items() if now[rel] != digest]
    if bad:
        raise SyncFailed(f"rollback did not restore: {', '.join(bad)}")
    now_head = current_head(s)
    if meta["head"] and now_head != meta["head"]:
        raise SyncFailed(f"rollback left HEAD at {now_head}, expected {meta['head']}")
    out["changed_files"] = sorted(copied | extra)
    return out


# --- state ------------------------------------------------------------------------------


def _save_last(s, result):
    fsutil.atomic_write_json(_dir(s) / "last.json", result)


def _baseline_path(s):
    return _dir(s) / "baseline.json"


def _record_manifest(s, phase, operation):
    data = manifest.build(s.repo, _selection(s), phase=phase, operation=operation,
                          skip=manifest.own_files(Path(s.repo) / MANIFEST_NAME))
    data["metadata"]["role"] = s.role
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


def _check_json_files(s, rels):
    """A covered *.json that no longer parses is damage, not an edit worth syncing."""
    bad = []
    for rel in rels:
        if rel.endswith(".json"):
            try:
                json.loads((Path(s.repo) / rel).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                bad.append(rel)
    if bad:
        raise SyncFailed("pre-sync check: not valid JSON (damaged?): " + ", ".join(bad))


def _guarded(s, operation, body, notify_cb=None):
    """Lock, snapshot, run body; on any failure roll back and record it."""
    check_repo(s)
    with sync_lock(s):
        fsutil.clean_stale_temps(_dir(s))
        started = time.monotonic()
        snap = snapshot(s)
        try:
            result = body(snap)
        except (StrongroomError, OSError, subprocess.SubprocessError) as exc:
            message = str(exc) if not isinstance(exc, GitError) else _git_message(exc)
            try:
                back = rollback(s)
                rolled = f"rolled back to {(back['head'] or '')[:12]} ({back['files']} files)"
            except (StrongroomError, OSError) as exc2:
                rolled = f"ROLLBACK FAILED: {exc2}; the snapshot is kept in {_dir(s)}"
            result = {"operation": operation, "result": "error", "message": message,
                      "rollback": rolled, "exit_code": getattr(exc, "exit_code", ERROR)}
            if getattr(exc, "extra", None):
                result.update(exc.extra)
        result.update({"finished": now_iso(), "host": s.host, "role": s.role,
                       "duration_seconds": round(time.monotonic() - started, 3)})
        _save_last(s, result)
        if notify_cb and result["result"] == "error":
            notify_cb(result)
        return result


def _git_message(exc):
    text = str(exc).strip().splitlines()
    return text[-1] if text else "git failed"


def _commit_all(s, message):
    _run_git(s, "add", "-A")
    if _run_git(s, "diff", "--cached", "--quiet", check=False).returncode == 0:
        return False
    _run_git(s, "-c", f"user.name=strongroom ({s.host})", "-c",
             f"user.email=strongroom@{s.host}", "commit", "-q", "--no-verify", "-m", message)
    return True


def push(s, notify_cb=None):
    def body(snap):
        branch = snap["branch"]
        left = [p for p in Path(s.repo).rglob("*.theirs") if ".git" not in p.parts]
        if left:
            raise SyncFailed("a blocked merge is unresolved: merge "
                             + ", ".join(str(p.relative_to(s.repo)) for p in left)
                             + " into their files by hand and delete the .theirs copies")
        _check_json_files(s, manifest.walk(s.repo, _selection(s)))
        data = _record_manifest(s, "pre-sync", "push")
        if not _same_content(Path(s.repo) / MANIFEST_NAME, data):
            manifest.write(Path(s.repo) / MANIFEST_NAME, data)
        (Path(s.repo) / (MANIFEST_NAME + ".prev")).unlink(missing_ok=True)
        committed = _commit_all(s, f"sync: {s.host} ({s.role}) {now_iso()}")
        head = _out(_run_git(s, "rev-parse", "HEAD")).strip()
        remote_before = _remote_head(s, branch)
        proc = _run_git(s, "push", "-q", s.remote, f"HEAD:refs/heads/{branch}", check=False)
        if proc.returncode != 0:
            err = (proc.stderr.decode() if isinstance(proc.stderr, bytes) else proc.stderr)
            if "rejected" in err or "non-fast-forward" in err or "fetch first" in err:
                raise SyncFailed(f"push rejected: {s.remote}/{branch} has commits this side "
                                 "lacks; pull first")
            raise SyncFailed(f"push to {s.remote} failed: {err.strip().splitlines()[-1:]}")
        # post-sync: the remote has our commit and the tree matches what we committed
        remote_head = _out(_run_git(s, "ls-remote", s.remote, f"refs/heads/{branch}")).split()
        if not remote_head or remote_head[0] != head:
            raise SyncFailed(f"post-sync check: {s.remote}/{branch} is not at {head[:12]}")
        v = manifest.verify(s.repo, data)
        if not v.passed:
            raise SyncFailed("post-sync check failed: " + ", ".join(v.mismatched + v.missing))
        fsutil.atomic_write_json(_baseline_path(s), data["checksums"])
        pushed = remote_before != head
        return {"operation": "push", "result": "ok", "exit_code": OK, "head": head,
                "committed": committed, "pushed": pushed, "changed": committed or pushed,
                "message": (f"pushed {head[:12]} to {s.remote}/{branch}" if pushed else
                            "nothing to commit; remote is current")}

    return _guarded(s, "push", body, notify_cb)


def _changed_between(s, a, b):
    out = _out(_run_git(s, "diff", "--name-only", "-z", a, b))
    return set(filter(None, out.split("\0")))


def pull(s, notify_cb=None):
    def body(snap):
        branch = snap["branch"]
        fetched = _run_git(s, "fetch", "-q", s.remote, f"refs/heads/{branch}", check=False)
        if fetched.returncode != 0:
            err = fetched.stderr.decode() if isinstance(fetched.stderr, bytes) else fetched.stderr
            raise SyncFailed(f"cannot fetch from {s.remote}: "
                             f"{(err.strip().splitlines() or ['?'])[-1]}")
        theirs = _out(_run_git(s, "rev-parse", "FETCH_HEAD")).strip()
        head = snap["head"]
        if head and _run_git(s, "merge-base", "--is-ancestor", theirs, head,
                             check=False).returncode == 0:
            return {"operation": "pull", "result": "ok", "exit_code": OK, "head": head,
                    "changed": False, "message": "already up to date"}
        _commit_all(s, f"sync: local changes on {s.host} before pull {now_iso()}")
        ours = _out(_run_git(s, "rev-parse", "HEAD")).strip()
        base = _out(_run_git(s, "merge-base", ours, theirs, check=False)).strip()
        incoming = _changed_between(s, base, theirs) if base else set()
        local = _changed_between(s, base, ours) if base else set()
        merged = _run_git(s, "-c", f"user.name=strongroom ({s.host})", "-c",
                          f"user.email=strongroom@{s.host}", "merge", "--no-edit", "-q",
                          theirs, check=False)
        if merged.returncode != 0:
            conflicted = _out(_run_git(s, "diff", "--name-only", "--diff-filter=U",
                                       check=False)).split()
            _run_git(s, "merge", "--abort", check=False)
            kept = _keep_both(s, conflicted, theirs) if conflicted else []
            exc = SyncFailed(
                "merge blocked: both sides changed " + ", ".join(conflicted or ["?"])
                + "; nothing was merged. Their versions are kept beside yours: "
                + ", ".join(kept) + ". Merge by hand, then push.")
            exc.extra = {"conflicts": conflicted, "kept_side_by_side": kept}
            raise exc
        # verify: incoming-only files against the other side's manifest; untouched
        # covered files against the snapshot; files both sides changed were merged by
        # their policy and are recorded as they now are.
        try:
            their_manifest = json.loads(_out(_run_git(s, "show",
                                                      f"{theirs}:{MANIFEST_NAME}")))
            their_sums = their_manifest["checksums"]
        except (GitError, ValueError, KeyError):
            their_sums = None
        problems = []
        now_covered = set(manifest.walk(s.repo, _selection(s)))
        for rel in sorted(now_covered):
            path = Path(s.repo) / rel
            digest = fsutil.sha256_file(path)
            if rel in incoming and rel not in local:
                if their_sums is None:
                    problems.append(f"{rel}: changed by the other side, which committed "
                                    f"no {MANIFEST_NAME}")
                elif rel not in their_sums:
                    problems.append(f"{rel}: not in the other side's manifest")
                elif their_sums[rel]["sha256"] != digest:
                    problems.append(f"{rel}: does not match the other side's manifest")
            elif rel not in incoming and snap["files"].get(rel, digest) != digest:
                problems.append(f"{rel}: changed although the pull did not touch it")
        if problems:
            raise SyncFailed("post-pull check failed (corruption): " + "; ".join(problems))
        data = _record_manifest(s, "post-sync", "pull")
        fsutil.atomic_write_json(_baseline_path(s), data["checksums"])
        new_head = _out(_run_git(s, "rev-parse", "HEAD")).strip()
        return {"operation": "pull", "result": "ok", "exit_code": OK, "head": new_head,
                "changed": new_head != head,
                "incoming": sorted(incoming), "merged_both": sorted(incoming & local),
                "message": f"merged {theirs[:12]}: {len(incoming)} files came in"}

    return _guarded(s, "pull", body, notify_cb)


def _keep_both(s, paths, theirs):
    """Write the other side's version of each conflicting file beside ours."""
    kept = []
    for rel in paths:
        proc = _run_git(s, "show", f"{theirs}:{rel}", check=False)
        if proc.returncode != 0:
            continue
        dst = Path(s.repo) / f"{rel}.theirs"
        data = proc.stdout if isinstance(proc.stdout, bytes) else proc.stdout.encode()
        fsutil.atomic_write_bytes(dst, data)
        kept.append(f"{rel}.theirs")
    return kept


def _remote_head(s, branch):
    proc = _run_git(s, "ls-remote", s.remote, f"refs/heads/{branch}", check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode() if isinstance(proc.stderr, bytes) else proc.stderr
        raise SyncFailed(f"cannot reach {s.remote}: {(err.strip().splitlines() or ['?'])[-1]}")
    words = _out(proc).split()
    return words[0] if words else None


def preview(s, operation):
    """What push or pull would do, touching nothing (no fetch, no snapshot, no lock)."""
    check_repo(s)
    branch = _branch(s)
    head = _out(_run_git(s, "rev-parse", "-q", "--verify", "HEAD", check=False)).strip()
    remote = _remote_head(s, branch)
    dirty = [p for p in _dirty(s) if p not in (MANIFEST_NAME, MANIFEST_NAME + ".prev")]
    out = {"operation": operation, "branch": branch, "head": head or None,
           "remote_head": remote, "dirty": dirty}
    if operation == "push":
        left = [str(p.relative_to(s.repo)) for p in Path(s.repo).rglob("*.theirs")
                if ".git" not in p.parts]
        if left:
            raise SyncFailed("a blocked merge is unresolved: " + ", ".join(left))
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


def status(s, offline=True):
    check_repo(s)
    branch = _branch(s)
    upstream = f"refs/remotes/{s.remote}/{branch}"
    if not offline:
        _run_git(s, "fetch", "-q", s.remote, check=False)
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
    return {"repo": str(s.repo), "branch": branch, "role": s.role, "ahead": ahead,
            "behind": behind, "dirty": _dirty(s), "last": last, "snapshot": snapshot_info(s)}


def exit_code(result):
    return result.get("exit_code", ERROR if result.get("result") == "error" else OK)

