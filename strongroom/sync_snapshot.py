"""The exact local state before a sync step, and putting exactly that back.

Every push, pull or resolve starts by recording the whole local state of the work tree:
- HEAD and the branch (or a detached HEAD), and a safety ref (refs/strongroom/snapshot,
  outside refs/heads, so no push or prune touches it);
- the index file itself: staged changes, staged deletions, intent-to-add entries;
- every file the manifest covers and every dirty or untracked file, with its kind (file
  or symlink), mode, size, time and content;
- every path the index or HEAD has that the work tree does not: a deletion the user
  has not committed stays deleted.

Contents live in a content-addressed store (.git/strongroom/objects/<sha256>), so a file
unchanged since the last snapshot costs a stat, not a copy, and a rollback does not depend
on git's own object store (which may be what is damaged). A rollback puts back HEAD, the
branch, the index, every recorded file and every recorded absence; `git status
--porcelain` reads the same before the step and after its rollback.
"""

import hashlib
import json
import os
import shutil
import stat
import time
from datetime import UTC, datetime
from pathlib import Path

from . import fsutil, manifest
from .errors import StrongroomError
from .gitcmd import git

SAFETY_REF = "refs/strongroom/snapshot"
VERSION = 2
CHUNK = 1 << 20


class RollbackFailed(StrongroomError):
    pass


def sync_dir(repo):
    return Path(repo) / ".git" / "strongroom"


def _now_iso():
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _out(proc):
    return proc.stdout.decode() if isinstance(proc.stdout, bytes) else proc.stdout


def status_entries(repo):
    """[(XY, path, original path or None)] from `git status --porcelain=v1 -z`."""
    proc = git(repo, "status", "--porcelain=v1", "-z", "--untracked-files=all",
               "--no-renames")
    raw = proc.stdout if isinstance(proc.stdout, bytes) else proc.stdout.encode(
        "utf-8", "surrogateescape")
    items = raw.split(b"\0")
    out, i = [], 0
    while i < len(items):
        item = items[i]
        i += 1
        if not item:
            continue
        code = item[:2].decode()
        path = item[3:].decode("utf-8", "surrogateescape")
        orig = None
        if code[0] in "RC":
            orig = items[i].decode("utf-8", "surrogateescape")
            i += 1
        out.append((code, path, orig))
    return out


def dirty_paths(repo):
    """Modified, added, deleted or untracked (not ignored) paths."""
    return [path for _, path, _ in status_entries(repo)]


def _objects(repo):
    return sync_dir(repo) / "objects"


def _object_path(repo, sha):
    return _objects(repo) / sha[:2] / sha[2:]


def _store(repo, path, sha_hint=None):
    """Copy a work-tree file into the content store (once per content); its SHA-256."""
    h = hashlib.sha256()
    tmp = _objects(repo) / f".tmp-object.{os.getpid()}"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "rb") as fi, open(tmp, "wb") as fo:
        while chunk := fi.read(CHUNK):
            h.update(chunk)
            fo.write(chunk)
    sha = h.hexdigest()
    final = _object_path(repo, sha)
    if final.exists():
        tmp.unlink()
    else:
        final.parent.mkdir(exist_ok=True)
        os.chmod(tmp, 0o600)
        os.replace(tmp, final)
    return sha


def _key(st):
    return [stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_size, st.st_mtime_ns,
            st.st_ino]


def load(repo):
    """The snapshot's metadata, or None."""
    path = sync_dir(repo) / "snapshot.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return _load_v1(repo)
    return meta if isinstance(meta, dict) and meta.get("version") == VERSION else None


def _load_v1(repo):
    """A snapshot an earlier version took (copies under snapshot/files/), read so that a
    rollback right after an upgrade still works."""
    old = sync_dir(repo) / "snapshot"
    try:
        meta = json.loads((old / "snapshot.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    files = {rel: {"sha256": sha, "kind": "file", "mode": None, "key": None,
                   "source": str(old / "files" / rel)}
             for rel, sha in (meta.get("files") or {}).items()}
    return {"version": 1, "taken": meta.get("taken"), "taken_ts": meta.get("taken_ts", 0),
            "head": meta.get("head"), "branch": meta.get("branch"), "files": files,
            "absent": [], "index": None}


def info(repo):
    meta = load(repo)
    if not meta:
        return None
    return {"taken": meta["taken"], "age_seconds": round(time.time() - meta["taken_ts"]),
            "head": meta["head"], "branch": meta["branch"], "files": len(meta["files"]),
            "absent": len(meta["absent"]), "staged_index": bool(meta.get("index"))}


def sha_of(meta, rel):
    entry = meta["files"].get(rel)
    return entry["sha256"] if entry else None


def take(repo, selection, host):
    """Record the exact local state (see the module docstring); returns the metadata."""
    repo = Path(repo)
    d = sync_dir(repo)
    d.mkdir(parents=True, exist_ok=True)
    fsutil.clean_stale_temps(_objects(repo))
    head = _out(git(repo, "rev-parse", "--verify", "-q", "HEAD", check=False)).strip() or None
    branch = _out(git(repo, "symbolic-ref", "--short", "-q", "HEAD", check=False)).strip() \
        or None
    entries = status_entries(repo)
    covered = set(manifest.walk(repo, selection))
    present, absent = set(covered), set()
    for code, path, orig in entries:
        for rel in (path, orig):
            if rel is None:
                continue
            if os.path.lexists(repo / rel):
                if not os.path.isdir(repo / rel) or os.path.islink(repo / rel):
                    present.add(rel)
            elif "D" in code or rel == orig:
                absent.add(rel)
    prev = load(repo) or {"files": {}}
    files = {}
    for rel in sorted(present):
        path = repo / rel
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            absent.add(rel)  # deleted while we looked
            continue
        key = _key(st)
        old = prev["files"].get(rel)
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(path)
            files[rel] = {"kind": "link", "target": target, "key": key,
                          "sha256": hashlib.sha256(b"link:" + os.fsencode(target)).hexdigest()}
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        if old and old.get("key") == key and _object_path(repo, old["sha256"]).exists():
            sha = old["sha256"]  # unchanged since the last snapshot: no copy, no hash
        else:
            sha = _store(repo, path)
        files[rel] = {"kind": "file", "mode": stat.S_IMODE(st.st_mode), "key": key,
                      "sha256": sha, "mtime_ns": st.st_mtime_ns}
    index_sha = _save_index(repo)
    meta = {"version": VERSION, "taken": _now_iso(), "taken_ts": time.time(), "head": head,
            "branch": branch, "host": host, "files": files, "absent": sorted(absent),
            "index": index_sha}
    if head:
        git(repo, "update-ref", SAFETY_REF, head)
    fsutil.atomic_write_bytes(d / "snapshot.json", json.dumps(meta).encode(), mode=0o600)
    _gc(repo, meta)
    return meta


def _save_index(repo):
    index = Path(repo) / ".git" / "index"
    if not index.exists():
        return None
    saved = sync_dir(repo) / "index.snapshot"
    tmp = fsutil.temp_path(saved)
    shutil.copyfile(index, tmp)
    os.chmod(tmp, 0o600)
    sha = fsutil.sha256_file(tmp)
    os.replace(tmp, saved)
    return sha


def _gc(repo, meta):
    """Contents no snapshot refers to any more; the old v1 copies once replaced."""
    keep = {e["sha256"] for e in meta["files"].values() if e["kind"] == "file"}
    for sub in (_objects(repo).iterdir() if _objects(repo).is_dir() else []):
        if not sub.is_dir():
            continue
        for obj in sub.iterdir():
            if sub.name + obj.name not in keep:
                obj.unlink(missing_ok=True)
    fsutil.rmtree_quiet(sync_dir(repo) / "snapshot")


def _content_path(repo, entry):
    return Path(entry["source"]) if entry.get("source") else _object_path(repo, entry["sha256"])


def _differs(repo, rel, entry):
    """True when the work tree's rel is not what the snapshot recorded."""
    path = Path(repo) / rel
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return True
    if entry["kind"] == "link":
        return not stat.S_ISLNK(st.st_mode) or os.readlink(path) != entry["target"]
    if not stat.S_ISREG(st.st_mode):
        return True
    key = _key(st)
    if entry.get("key") and key[:4] == entry["key"][:4]:
        return False  # kind, mode, size and time as recorded: the file is as it was
    if entry.get("mode") is not None and stat.S_IMODE(st.st_mode) != entry["mode"]:
        return True
    return fsutil.sha256_file(path) != entry["sha256"]


def _put_back(repo, rel, entry):
    """One recorded file or link back in place, atomically; returns its SHA-256."""
    path = Path(repo) / rel
    if path.is_dir() and not path.is_symlink():
        raise RollbackFailed(f"rollback cannot put back {rel}: a folder is in its place")
    fsutil.makedirs(path.parent)
    tmp = fsutil.temp_path(path)
    tmp.unlink(missing_ok=True)
    if entry["kind"] == "link":
        os.symlink(entry["target"], tmp)
        os.replace(tmp, path)
        return entry["sha256"]
    try:
        digest = fsutil.copy_hashing(_content_path(repo, entry), tmp)
        if entry.get("mode") is not None:
            os.chmod(tmp, entry["mode"])
        if entry.get("mtime_ns"):
            os.utime(tmp, ns=(entry["mtime_ns"], entry["mtime_ns"]))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return digest


def _tracked_changes(repo, known):
    """Tracked files that differ from HEAD and that the snapshot does not record."""
    proc = git(repo, "diff", "--name-only", "-z", "HEAD", check=False)
    return set(filter(None, _out(proc).split("\0"))) - set(known)


def rollback(repo, dry_run=False):
    """Back to the snapshot, exactly. Never prompts. Returns what differed
    (`changed_files`, `removed`, `head_moved`, `index_restored`); dry_run only reports."""
    repo = Path(repo)
    meta = load(repo)
    if meta is None:
        raise RollbackFailed(f"{repo}: no snapshot to roll back to")
    files, absent = meta["files"], meta["absent"]
    merging = (repo / ".git" / "MERGE_HEAD").exists()
    now_head = _out(git(repo, "rev-parse", "-q", "--verify", "HEAD", check=False)).strip()
    now_branch = _out(git(repo, "symbolic-ref", "--short", "-q", "HEAD", check=False)).strip()
    head_moved = bool(meta["head"]) and (now_head != meta["head"]
                                         or (now_branch or None) != meta["branch"])
    index = repo / ".git" / "index"
    saved_index = sync_dir(repo) / "index.snapshot"
    index_differs = bool(meta.get("index")) and (
        not index.exists() or fsutil.sha256_file(index) != meta["index"])
    extra = _tracked_changes(repo, set(files) | set(absent)) if meta["head"] else set()
    out = {"head": meta["head"], "branch": meta["branch"], "files": len(files),
           "taken": meta["taken"], "head_moved": head_moved}
    if dry_run:
        out["changed_files"] = sorted(extra | {r for r, e in files.items()
                                               if _differs(repo, r, e)})
        out["removed"] = sorted(r for r in absent if os.path.lexists(repo / r))
        out["index_restored"] = index_differs
        return out
    if merging:
        git(repo, "merge", "--abort", check=False)
    if meta["head"] and (head_moved or merging or extra):
        if meta["branch"]:
            git(repo, "checkout", "-q", "-f", meta["branch"], check=False)
            git(repo, "reset", "-q", "--hard", meta["head"])
        else:
            git(repo, "checkout", "-q", "-f", "--detach", meta["head"])
    reset = bool(meta["head"] and (head_moved or merging or extra))
    if (index_differs or reset) and meta.get("index") and saved_index.exists():
        tmp = fsutil.temp_path(index)
        shutil.copyfile(saved_index, tmp)
        os.replace(tmp, index)
    changed, bad = [], []
    for rel, entry in files.items():
        if not _differs(repo, rel, entry):
            continue
        if _put_back(repo, rel, entry) != entry["sha256"]:
            bad.append(rel)
        changed.append(rel)
    removed = []
    for rel in absent:
        path = repo / rel
        if os.path.lexists(path) and (path.is_symlink() or not path.is_dir()):
            path.unlink()
            removed.append(rel)
    if bad:
        raise RollbackFailed(f"rollback did not restore: {', '.join(bad)}")
    now = _out(git(repo, "rev-parse", "-q", "--verify", "HEAD", check=False)).strip() or None
    if meta["head"] and now != meta["head"]:
        raise RollbackFailed(f"rollback left HEAD at {now}, expected {meta['head']}")
    out.update(changed_files=sorted(set(changed) | extra), removed=removed,
               index_restored=index_differs)
    return out
