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
import re
import shutil
import stat
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

from .. import manifest
from ..core import fsutil
from ..core.errors import StrongroomError
from ..core.gitcmd import git, git_argv, git_env

SAFETY_REF = "refs/strongroom/snapshot"
# trees of the index: git's gc keeps the blobs a ref reaches, and a staged version lives
# only in the index (a saved copy of the index file protects nothing from a prune)
INDEX_REF = "refs/strongroom/snapshot-index"
KEPT_INDEX_REF = "refs/strongroom/kept-index"
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
        return _load_v1(repo) if not path.exists() else None
    return meta if _valid(meta) else None


_SHA256 = re.compile(r"[0-9a-f]{64}")
_BLOB = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")


def _safe_rel(rel):
    """A path a rollback may write: inside the work tree, never into .git."""
    return isinstance(rel, str) and rel and not rel.startswith("/") and \
        not {"", ".", "..", ".git"} & set(rel.split("/"))


def _valid(meta):
    """The snapshot as this version writes it, every path and field checked: it is read
    back to decide what to write where, so it is input like any other."""
    if not isinstance(meta, dict) or meta.get("version") != VERSION:
        return False
    files, absent = meta.get("files"), meta.get("absent")
    if not isinstance(files, dict) or not isinstance(absent, list):
        return False
    for key in ("head", "branch", "index"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            return False
    if meta.get("head") and not re.fullmatch(r"[0-9a-f]{40}([0-9a-f]{24})?", meta["head"]):
        return False
    if not isinstance(meta.get("taken"), str) or not isinstance(meta.get("taken_ts"),
                                                                 (int, float)):
        return False
    for rel, e in files.items():
        if not _safe_rel(rel) or not isinstance(e, dict) or not isinstance(
                e.get("sha256"), str) or not _SHA256.fullmatch(e["sha256"]):
            return False
        if e.get("kind") == "link":
            if not isinstance(e.get("target"), str):
                return False
        elif e.get("kind") != "file" or (e.get("blob") is not None and not (
                isinstance(e["blob"], str) and _BLOB.fullmatch(e["blob"]))):
            return False
        if e.get("mode") is not None and not (isinstance(e["mode"], int)
                                              and 0 <= e["mode"] <= 0o7777):
            return False
        if e.get("mtime_ns") is not None and not isinstance(e["mtime_ns"], int):
            return False
    return all(_safe_rel(rel) for rel in absent)


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
             for rel, sha in (meta.get("files") or {}).items()
             if _safe_rel(rel) and isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)}
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


def in_tree(repo, rel):
    """True when rel names something in the work tree itself: it exists and every folder
    above it is a real folder. Below a symlinked folder a path is somewhere else (outside
    the repository, perhaps): never recorded, read, removed or written through."""
    root = os.fspath(repo)
    parent, _, _name = rel.rpartition("/")
    return (not parent or _real_dir(root, parent)) and os.path.lexists(f"{root}/{rel}")


def _real_dir(root, rel):
    """Every component of rel below root is a real folder (string paths: this runs once
    per file of a tree, twice per rollback)."""
    path = root
    for part in rel.split("/"):
        path = f"{path}/{part}"
        try:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                return False
        except OSError:
            return False
    return True


def _object_format(repo):
    fmt = _out(git(repo, "rev-parse", "--show-object-format", check=False)).strip()
    return fmt or "sha1"


def _blob_oid(data, fmt):
    """git's id of a blob holding `data` (to know a symlink or file git already has)."""
    h = hashlib.new(fmt)
    h.update(b"blob %d\0" % len(data))
    h.update(data)
    return h.hexdigest()


def _hash_file(path, fmt):
    """(SHA-256, git blob id) of a file in one read."""
    sha, oid = hashlib.sha256(), hashlib.new(fmt)
    with open(path, "rb") as f:
        oid.update(b"blob %d\0" % os.fstat(f.fileno()).st_size)
        while chunk := f.read(CHUNK):
            sha.update(chunk)
            oid.update(chunk)
    return sha.hexdigest(), oid.hexdigest()


def tree_entries(repo, rev):
    """{path: blob id} of the files and links in a commit's tree."""
    proc = git(repo, "ls-tree", "-r", "-z", "--full-tree", rev, check=False, binary=True)
    out = {}
    for item in proc.stdout.split(b"\0") if proc.returncode == 0 else []:
        if b"\t" in item:
            info, path = item.split(b"\t", 1)
            parts = info.split()
            if parts[1] == b"blob":
                out[path.decode("utf-8", "surrogateescape")] = parts[2].decode()
    return out


def index_entries(repo):
    """{path: {stage: blob id}} of the index as it is now."""
    proc = git(repo, "ls-files", "-s", "-z", check=False, binary=True)
    out = {}
    for item in proc.stdout.split(b"\0") if proc.returncode == 0 else []:
        if b"\t" in item:
            info, path = item.split(b"\t", 1)
            _mode, oid, stage = info.split()
            out.setdefault(path.decode("utf-8", "surrogateescape"), {})[int(stage)] = \
                oid.decode()
    return out


def take(repo, selection, host, also=()):
    """Record the exact local state (see the module docstring); returns the metadata.

    A file git already holds exactly as it is (clean, the same blob in HEAD) is recorded
    by its blob id and not copied: the snapshot needs room only for what git does not
    have (edits, untracked and ignored files). `also` names files recorded whenever they
    exist (the sync's own manifest)."""
    repo = Path(repo)
    d = sync_dir(repo)
    d.mkdir(parents=True, exist_ok=True)
    fsutil.clean_stale_temps(_objects(repo))
    head = _out(git(repo, "rev-parse", "--verify", "-q", "HEAD", check=False)).strip() or None
    branch = _out(git(repo, "symbolic-ref", "--short", "-q", "HEAD", check=False)).strip() \
        or None
    entries = status_entries(repo)
    dirty = {path for _, path, _ in entries}
    covered = set(manifest.walk(repo, selection))
    present, absent = set(covered), set()
    present |= {rel for rel in also if in_tree(repo, rel)}
    for code, path, orig in entries:
        for rel in (path, orig):
            if rel is None:
                continue
            if in_tree(repo, rel):
                if not os.path.isdir(repo / rel) or os.path.islink(repo / rel):
                    present.add(rel)
            elif "D" in code or rel == orig:
                absent.add(rel)
    in_head = tree_entries(repo, head) if head else {}
    fmt = _object_format(repo)
    prev = load(repo) or {"files": {}}
    files = {}
    for rel in sorted(present):
        try:
            entry = _record(repo, rel, prev["files"].get(rel), in_head, dirty, fmt)
        except (FileNotFoundError, NotADirectoryError):
            entry = None
            absent.add(rel)  # gone while we looked (an editor's temp file)
        if entry:
            files[rel] = entry
    index_sha = _save_index(repo)
    meta = {"version": VERSION, "taken": _now_iso(), "taken_ts": time.time(), "head": head,
            "branch": branch, "host": host, "files": files, "absent": sorted(absent),
            "index": index_sha}
    if head:
        git(repo, "update-ref", SAFETY_REF, head)
    tree = _index_tree(repo) if index_sha else None
    if tree:
        git(repo, "update-ref", INDEX_REF, tree)
    fsutil.atomic_write_bytes(d / "snapshot.json", json.dumps(meta).encode(), mode=0o600)
    _gc(repo, meta)
    prune_kept(repo)
    return meta


def _record(repo, rel, old, in_head, dirty, fmt):
    """One present path's snapshot entry (None for what is neither file nor link)."""
    path = repo / rel
    st = os.lstat(path)
    key = _key(st)
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(path)
        return {"kind": "link", "target": target, "key": key,
                "sha256": hashlib.sha256(b"link:" + os.fsencode(target)).hexdigest()}
    if not stat.S_ISREG(st.st_mode):
        return None
    clean = rel in in_head and rel not in dirty
    if isinstance(old, dict) and old.get("key") == key and (
            (old.get("blob") and old["blob"] == in_head.get(rel) and clean)
            or (not old.get("blob") and _object_path(repo, old["sha256"]).exists())):
        return old  # unchanged since the last snapshot: no copy, no hash
    sha, oid = _hash_file(path, fmt)
    entry = {"kind": "file", "mode": stat.S_IMODE(st.st_mode), "key": key,
             "sha256": sha, "mtime_ns": st.st_mtime_ns}
    if clean and in_head.get(rel) == oid:
        entry["blob"] = oid  # git has these bytes, reachable from the safety ref
    else:
        entry["sha256"] = _store(repo, path)  # what was copied (an edit meanwhile wins)
    return entry


SET_ASIDE_MARK = ".holds-newer-versions"  # a folder with the only copy of something
KEPT_DAYS = 30
KEPT_FOLDERS = 100


def prune_kept(repo, days=KEPT_DAYS, folders=KEPT_FOLDERS, now=None):
    """Folders a rollback set aside, removed once older than `days` or beyond the newest
    `folders`: each holds versions superseded by newer ones in the work tree, and an app
    that rewrites a big file while an offline laptop's hourly pull fails would otherwise
    fill the disk."""
    root = sync_dir(repo) / "kept"
    now = time.time() if now is None else now
    removed = []
    found = sorted(root.iterdir()) if root.is_dir() else []  # names sort by time
    for n, folder in enumerate(found):
        try:
            old = now - folder.lstat().st_mtime > days * 86400 or n < len(found) - folders
        except OSError:
            continue
        if old and folder.is_dir() and not folder.is_symlink() and not (
                folder / SET_ASIDE_MARK).exists():
            fsutil.rmtree_quiet(folder)
            removed.append(folder.name)
    return removed


def _index_tree(repo):
    """A tree of the index as it is (None with unmerged entries or no index)."""
    proc = git(repo, "write-tree", check=False)
    if proc.returncode != 0:
        return None
    return _out(proc).strip() or None


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


def _journal_path(repo):
    return sync_dir(repo) / "rollback-saved.json"


def _load_journal(repo):
    """{rel: [kind, sha256 or link target, mode, mtime_ns]} a rollback recorded before it
    let git rewrite the work tree, or {} (none, or unreadable)."""
    try:
        data = json.loads(_journal_path(repo).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {rel: v for rel, v in data.items() if isinstance(rel, str) and isinstance(v, list)
            and len(v) == 4 and v[0] in ("file", "link") and isinstance(v[1], str)
            and not rel.startswith("/") and not {"..", ".git", ""} & set(rel.split("/"))}


def _gc(repo, meta):
    """Contents no snapshot refers to any more; the old v1 copies once replaced."""
    keep = {e["sha256"] for e in meta["files"].values()
            if e["kind"] == "file" and not e.get("blob")}
    keep |= {v[1] for v in _load_journal(repo).values() if v[0] == "file"}
    for sub in (_objects(repo).iterdir() if _objects(repo).is_dir() else []):
        if not sub.is_dir():
            continue
        for obj in sub.iterdir():
            if sub.name + obj.name not in keep:
                obj.unlink(missing_ok=True)
    fsutil.rmtree_quiet(sync_dir(repo) / "snapshot")


def _differs(repo, rel, entry):
    """True when the work tree's rel is not what the snapshot recorded."""
    path = f"{os.fspath(repo)}/{rel}"
    parent = rel.rpartition("/")[0]
    if parent and not _real_dir(os.fspath(repo), parent):
        return True
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


def _write_content(repo, entry, tmp):
    """The recorded bytes of a file into tmp: from the content store, or from git."""
    if entry.get("source"):
        fsutil.copy_hashing(entry["source"], tmp)
    elif entry.get("blob"):
        with open(tmp, "wb") as f:
            proc = subprocess.run(git_argv(repo, "cat-file", "blob", entry["blob"]),
                                  stdout=f, stderr=subprocess.PIPE, env=git_env(),
                                  check=False)
        if proc.returncode != 0:
            raise RollbackFailed(f"git no longer has {entry['blob'][:12]}: "
                                 + proc.stderr.decode("utf-8", "replace").strip())
    else:
        fsutil.copy_hashing(_object_path(repo, entry["sha256"]), tmp)
    return fsutil.sha256_file(tmp)


def _put_back(repo, rel, entry, aside):
    """One recorded file or link back in place, atomically; returns its SHA-256. A folder
    (or a file where a folder must be) in the way is moved into `aside`, never removed."""
    path = Path(repo) / rel
    parent = Path(repo)
    for part in Path(rel).parts[:-1]:
        parent = parent / part
        if os.path.lexists(parent) and (parent.is_symlink() or not parent.is_dir()):
            aside(parent)
    if path.is_dir() and not path.is_symlink():
        aside(path)
    fsutil.makedirs(path.parent)
    tmp = fsutil.temp_path(path)
    tmp.unlink(missing_ok=True)
    if entry["kind"] == "link":
        os.symlink(entry["target"], tmp)
        os.replace(tmp, path)
        return entry["sha256"]
    try:
        digest = _write_content(repo, entry, tmp)
        if entry.get("mode") is not None:
            os.chmod(tmp, entry["mode"])
        if entry.get("mtime_ns"):
            os.utime(tmp, ns=(entry["mtime_ns"], entry["mtime_ns"]))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return digest


def _changed_between(repo, a, b):
    proc = git(repo, "diff", "--name-only", "-z", "--no-renames", a, b, check=False)
    return set(filter(None, _out(proc).split("\0")))


def _current(repo, rel, fmt):
    """What the work tree holds at rel: ("absent",), ("dir",), ("link", target, oid) or
    ("file", oid)."""
    path = Path(repo) / rel
    if not in_tree(repo, rel):
        return ("absent",)
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return ("absent",)
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(path)
        return ("link", target, _blob_oid(os.fsencode(target), fmt))
    if stat.S_ISDIR(st.st_mode):
        return ("dir",)
    if not stat.S_ISREG(st.st_mode):
        return ("other",)
    return ("file", _hash_file(path, fmt)[1])


def _step_versions(repo, meta_head, now_head, merging, incoming):
    """Every version of a path the step itself may have written into the work tree: the
    incoming commits' (a fast-forward or a merge brings them), what its merge commits
    changed, and what a merge still in progress staged or left unmerged. The step's own
    commit of local changes writes nothing: its content came from the work tree (and may
    hold an edit someone made while it ran, which is theirs, not the step's)."""
    versions = {}

    def add(rel, oid):
        versions.setdefault(rel, set()).add(oid)

    revs = [r for r in incoming if r]
    if merging:
        revs.append("MERGE_HEAD")
    for rev in revs:
        # only what the incoming commits changed: a path they left alone holds the
        # committed version, and a user who went back to it (stash, checkout) did that
        tree = tree_entries(repo, rev)
        changed = _changed_between(repo, meta_head, rev) if meta_head else set(tree)
        for rel in changed:
            if rel in tree:
                add(rel, tree[rel])
    if now_head and now_head != meta_head:
        rng = [now_head] + ([f"^{meta_head}"] if meta_head else [])
        merges = _out(git(repo, "rev-list", "--merges", *rng, check=False)).split()
        for m in merges:
            tree = tree_entries(repo, m)
            for rel in _changed_between(repo, f"{m}^1", m):
                if rel in tree:
                    add(rel, tree[rel])
    unmerged = set()
    if merging:
        stage0 = index_entries(repo)
        staged = _out(git(repo, "diff", "--cached", "--name-only", "-z", "--no-renames",
                          "HEAD", check=False)).split("\0")
        for rel in filter(None, staged):
            if 0 in stage0.get(rel, {}):
                add(rel, stage0[rel][0])
        unmerged = {rel for rel, stages in stage0.items() if set(stages) - {0}}
    return versions, unmerged


def _c_quote(rel):
    """A path as git reads it quoted on --stdin-paths: any byte (newline, CR, a leading
    quote, non-UTF-8) passes through exactly."""
    out = []
    for b in os.fsencode(rel):
        if b in (0x22, 0x5C):
            out.append("\\" + chr(b))
        elif b < 0x20 or b >= 0x7F:
            out.append(f"\\{b:03o}")
        else:
            out.append(chr(b))
    return '"' + "".join(out) + '"'


def _git_oids(repo, rels):
    """{rel: the blob id git would store for the file now}, through the repository's
    eol conversion and clean filters (what `git add` would make of it), so a file git
    wrote with CRLF or through a smudge filter matches its blob. A file git cannot hash
    this way gets its plain blob id."""
    rels = [r for r in rels if in_tree(repo, r) and os.path.isfile(Path(repo) / r)
            and not os.path.islink(Path(repo) / r)]
    if not rels:
        return {}
    proc = git(repo, "hash-object", "--stdin-paths",
               input="".join(_c_quote(r) + "\n" for r in rels), check=False)
    oids = _out(proc).split()
    if proc.returncode == 0 and len(oids) == len(rels):
        return dict(zip(rels, oids, strict=True))
    fmt = _object_format(repo)
    out = {}
    for rel in rels:
        try:
            out[rel] = _hash_file(Path(repo) / rel, fmt)[1]
        except OSError:
            continue
    return out


def _foreign(repo, meta, candidates, own, now_head, merging, moved, incoming):
    """The candidates whose present state the step did not make: edits, new files and
    deletions someone made while it ran (or after it was killed). A rollback keeps them.
    A path a merge left unmerged counts as theirs too: its content (markers or a hand
    resolution) is copied aside (`aside`) and the snapshot's version goes back: conflict
    markers are never left in place, and a hand resolution is never lost."""
    fmt = _object_format(repo)
    versions, unmerged = _step_versions(repo, meta["head"], now_head, merging, incoming)
    in_index = index_entries(repo)
    head_tree = tree_entries(repo, meta["head"]) if meta["head"] else {}
    converted = _git_oids(repo, candidates)
    found, aside = {}, {}
    for rel in candidates:
        if rel in own:
            continue
        cur = _current(repo, rel, fmt)
        if rel in unmerged:
            if cur[0] in ("file", "link"):
                aside[rel] = cur
            continue
        if cur[0] == "file" and converted.get(rel) in versions.get(rel, ()):
            continue  # git wrote it (with its eol conversion or filter)
        if cur[0] in ("file", "link"):
            if cur[-1] in versions.get(rel, ()):
                continue  # a version git wrote for the step
            found[rel] = cur
        elif cur[0] == "absent":
            if rel not in meta["files"]:
                continue
            if (moved or merging) and 0 not in in_index.get(rel, {}) and (
                    rel in versions or rel in head_tree):
                continue  # the step's merge or commit took it away (git knew the file)
            found[rel] = cur
    return found, aside


def _kept_dir(repo):
    return sync_dir(repo) / "kept" / datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def rollback(repo, dry_run=False, own=(), keep_newer=True, incoming=()):
    """Back to the snapshot, exactly, and nothing anyone made is lost.

    What the step did (its commits, its merge, the files git wrote for them, the sync's
    own files in `own`) is undone: HEAD, the branch, the index and every recorded file and
    absence are put back. A file edited, created or deleted while the step ran (or after
    it was killed) is not the step's doing: with keep_newer (a failed or killed step) it
    stays as it is now, and the version the snapshot holds of it is copied into
    .git/strongroom/kept/<time>/; without (the user asked for the snapshot back) the
    snapshot's version goes in place and the newer one into that folder. Whatever stands
    where a recorded file must go (a folder the user made) is moved there too. Never
    prompts. Returns what differed (`changed_files`, `removed`, `kept`, `kept_dir`,
    `head_moved`, `index_restored`); dry_run only reports. `incoming`: the commits the
    step fetched to merge (their versions of a file are the step's doing).
    """
    repo = Path(repo)
    meta = load(repo)
    if meta is None and (sync_dir(repo) / "snapshot.json").exists():
        raise RollbackFailed(f"{repo}: the snapshot ({sync_dir(repo) / 'snapshot.json'}) is "
                             "damaged or not this version's; nothing was changed")
    if meta is None:
        raise RollbackFailed(f"{repo}: no snapshot to roll back to")
    files, absent = meta["files"], set(meta["absent"])
    own = set(own)
    merging = (repo / ".git" / "MERGE_HEAD").exists()
    now_head = _out(git(repo, "rev-parse", "-q", "--verify", "HEAD", check=False)).strip() \
        or None
    now_branch = _out(git(repo, "symbolic-ref", "--short", "-q", "HEAD", check=False)).strip() \
        or None
    moved = now_head != meta["head"] or now_branch != meta["branch"]
    index = repo / ".git" / "index"
    saved_index = sync_dir(repo) / "index.snapshot"
    index_differs = (index.exists() != bool(meta.get("index"))) or (
        bool(meta.get("index")) and fsutil.sha256_file(index) != meta["index"])
    candidates = {r for r, e in files.items() if _differs(repo, r, e)}
    candidates |= {r for r in absent if in_tree(repo, r)
                   and (os.path.islink(repo / r) or not os.path.isdir(repo / r))}
    # paths the snapshot does not record that git or someone else may have written
    others = {r for r in dirty_paths(repo) if not r.endswith("/")}
    if moved and meta["head"] and now_head:
        others |= _changed_between(repo, meta["head"], now_head)
    elif moved and now_head:
        others |= set(tree_entries(repo, now_head))
    candidates |= others - set(files)
    foreign, aside = _foreign(repo, meta, candidates, own, now_head, merging, moved,
                              incoming)
    if not keep_newer:  # their current versions are copied aside, then overwritten
        aside.update({rel: cur for rel, cur in foreign.items() if cur[0] != "absent"})
        foreign = {}
    out = {"head": meta["head"], "branch": meta["branch"], "files": len(files),
           "taken": meta["taken"], "head_moved": moved}
    if dry_run:
        out["changed_files"] = sorted(candidates - set(foreign))
        out["removed"] = sorted(r for r in absent if in_tree(repo, r))
        out["kept"] = sorted(foreign)
        out["set_aside"] = sorted(aside)
        out["index_restored"] = index_differs
        return out
    kept_dir = _kept_dir(repo)
    kept, set_aside = [], []
    if aside:
        fsutil.makedirs(kept_dir)
        (kept_dir / SET_ASIDE_MARK).write_text(
            "This folder holds versions newer than the snapshot (or a merge left "
            "unfinished): never removed by strongroom; delete it yourself once looked at.\n")
    for rel, cur in aside.items():
        dest = kept_dir / rel
        fsutil.makedirs(dest.parent)
        if cur[0] == "link":
            os.symlink(cur[1], dest)
        else:
            shutil.copy2(repo / rel, dest)
        set_aside.append(rel)
    # what someone else made, saved before git rewrites anything
    saved = _load_journal(repo)  # a rollback that was itself cut short: theirs first
    if not keep_newer:  # asked for the snapshot exactly: those versions go aside too
        for rel, (kind, value, _mode, _mtime) in saved.items():
            dest = kept_dir / rel
            fsutil.makedirs(dest.parent)
            (kept_dir / SET_ASIDE_MARK).write_text("Versions newer than the snapshot.\n")
            if kind == "link":
                os.symlink(value, dest)
            elif _object_path(repo, value).exists():
                fsutil.copy_hashing(_object_path(repo, value), dest)
            set_aside.append(rel)
        saved = {}
    for rel in saved:
        foreign.setdefault(rel, ("file",))
    for rel, cur in foreign.items():
        if rel in saved:
            continue
        if cur[0] == "file":
            st = os.lstat(repo / rel)
            saved[rel] = ["file", _store(repo, repo / rel), stat.S_IMODE(st.st_mode),
                          st.st_mtime_ns]
        elif cur[0] == "link":
            saved[rel] = ["link", cur[1], None, None]
    # before git rewrites anything: what someone else made is on record, so a kill
    # during this rollback cannot lose it (the next rollback starts from this journal)
    if saved:
        fsutil.atomic_write_bytes(_journal_path(repo), json.dumps(saved).encode(), mode=0o600)
    if os.environ.get("STRONGROOM_TEST_CRASH") == "rollback-after-journal":
        raise KeyboardInterrupt("test crash point: rollback-after-journal")  # as a kill

    def keep(rel_or_path, entry=None):
        """The snapshot's version of a path someone changed, or a thing in the way."""
        if entry is None:  # a path in the way: moved as it is
            rel = Path(rel_or_path).relative_to(repo).as_posix()
            dest, n = kept_dir / rel, 0
            while os.path.lexists(dest):  # its contents were copied there already
                n += 1
                dest = kept_dir / f"{rel}.{n}"
            fsutil.makedirs(dest.parent)
            os.replace(rel_or_path, dest)
            (kept_dir / SET_ASIDE_MARK).write_text("A folder or file that stood in the way.\n")
            set_aside.append(rel)
            return
        else:
            rel = rel_or_path
            dest = kept_dir / rel
            fsutil.makedirs(dest.parent)
            if entry["kind"] == "link":
                os.symlink(entry["target"], dest)
            else:
                _write_content(repo, entry, dest)
        kept.append(rel)

    index_saved = None
    tree = _index_tree(repo) if index_differs and index.exists() else None
    head_tree = _out(git(repo, "rev-parse", "-q", "--verify", "HEAD^{tree}",
                         check=False)).strip()
    snap_tree = _out(git(repo, "rev-parse", "-q", "--verify", INDEX_REF, check=False)).strip()
    if tree and tree not in (head_tree, snap_tree):  # staged meanwhile, not by the step
        git(repo, "update-ref", "-m", "strongroom rollback", KEPT_INDEX_REF, tree)
        index_saved = KEPT_INDEX_REF
    if merging:
        git(repo, "merge", "--abort", check=False)
    if moved:
        _move_head(repo, meta)
    if index_differs or moved or merging:
        if meta.get("index") and saved_index.exists():
            tmp = fsutil.temp_path(index)
            shutil.copyfile(saved_index, tmp)
            os.replace(tmp, index)
        elif not meta.get("index"):
            index.unlink(missing_ok=True)
    changed, bad = [], []
    # a clean tracked file the step did not touch is what the reset (or nothing) left:
    # only the candidates and the files git does not hold can differ now
    check = candidates | {r for r, e in files.items() if not e.get("blob")}
    if moved and meta["head"] and now_head:
        check |= _changed_between(repo, meta["head"], now_head)
    for rel, entry in files.items():
        if rel not in check:
            continue
        if rel in foreign:
            keep(rel, entry)  # someone changed it meanwhile: their version stays
            continue
        if not _differs(repo, rel, entry):
            continue
        if _put_back(repo, rel, entry, keep) != entry["sha256"]:
            bad.append(rel)
        changed.append(rel)
    removed = []
    for rel in sorted(candidates - set(files) - set(foreign)):
        path = repo / rel
        if in_tree(repo, rel) and (path.is_symlink() or not path.is_dir()):
            path.unlink()  # written by the step (or recorded as deleted): not wanted
            removed.append(rel)
    for rel, cur in foreign.items():
        if cur[0] == "absent" and in_tree(repo, rel) and not (repo / rel).is_dir():
            (repo / rel).unlink()  # deleted meanwhile; the reset brought it back
    for rel, (kind, value, mode, mtime_ns) in saved.items():
        path = repo / rel
        if kind == "file":
            if path.is_file() and not path.is_symlink() and fsutil.sha256_file(path) == value:
                continue
            _put_back(repo, rel, {"kind": "file", "sha256": value, "mode": mode,
                                  "mtime_ns": mtime_ns}, keep)
        else:
            if path.is_symlink() and os.readlink(path) == value:
                continue
            _put_back(repo, rel, {"kind": "link", "target": value,
                                  "sha256": hashlib.sha256(b"link:" + os.fsencode(value))
                                  .hexdigest()}, keep)
    _journal_path(repo).unlink(missing_ok=True)
    if bad:
        raise RollbackFailed(f"rollback did not restore: {', '.join(bad)}")
    now = _out(git(repo, "rev-parse", "-q", "--verify", "HEAD", check=False)).strip() or None
    if now != meta["head"]:
        raise RollbackFailed(f"rollback left HEAD at {now or 'no commit'}, expected "
                             f"{meta['head'] or 'no commit'}")
    out.update(changed_files=sorted(set(changed) | (set(removed))), removed=removed,
               index_restored=index_differs or moved or merging, kept=sorted(set(kept)),
               set_aside=sorted(set(set_aside)), index_saved=index_saved,
               kept_dir=str(kept_dir) if kept or set_aside else None)
    return out


def _move_head(repo, meta):
    """HEAD and the branch back where they were, the work tree with them (git's files
    only: what someone else made was saved before and is put back after)."""
    if meta["head"] is None:  # a repository without commits: the branch was unborn
        branch = meta["branch"] or "main"
        git(repo, "symbolic-ref", "HEAD", f"refs/heads/{branch}")
        git(repo, "update-ref", "-d", f"refs/heads/{branch}", check=False)
        return
    if meta["branch"]:
        git(repo, "checkout", "-q", "-f", meta["branch"], check=False)
        git(repo, "reset", "-q", "--hard", meta["head"])
    else:
        git(repo, "checkout", "-q", "-f", "--detach", meta["head"])
