"""SHA-256 manifests of a tree: create, verify (deep or fast), update, export.

The JSON keeps the field names PetesBrain's `.sync-checksums.json` users know:

    {"version": "2.0", "timestamp": "2026-11-21T14:00:00Z", "hostname": "desktop",
     "metadata": {"phase": "...", "operation": "...", "include": [...], "exclude": [...]},
     "checksums": {"rel/path": {"sha256": "...", "size": 12, "modified": "...Z",
                                "mtime_ns": 1, "inode": 2}}}

`mtime_ns` and `inode` only serve `verify --fast` on the machine that wrote the manifest:
a file whose size, mtime and inode all match is taken as unchanged. Anywhere else (a
manifest committed by the other machine) the inode differs and the file is re-hashed,
so --fast can never pass a file it did not hash or see unchanged.

Patterns are gitignore-style (pathspec's GitIgnoreSpec): a file is covered when it
matches an include pattern (default: every file) and no exclude pattern. `.git/` and the
manifest itself are never covered.
"""

import json
import os
import socket
import stat
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ..core import fsutil
from ..core.errors import StrongroomError

VERSION = "2.0"
ALWAYS_EXCLUDED = (".git/", ".strongroom/")
_ALWAYS_DIRS = frozenset(p.rstrip("/") for p in ALWAYS_EXCLUDED)


class ManifestError(StrongroomError):
    """The manifest cannot be read or trusted: never a pass."""


def iso_z(ts):
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _spec(patterns):
    import pathspec

    try:
        return pathspec.GitIgnoreSpec.from_lines(patterns)
    except (ValueError, TypeError) as exc:
        raise StrongroomError(f"bad pattern: {exc}") from None


@dataclass
class Selection:
    include: list = field(default_factory=list)
    exclude: list = field(default_factory=list)

    def __post_init__(self):
        # no patterns of the user's: only the always-excluded directories matter, and a
        # name check says that without compiling or matching patterns
        self._default = not self.include and not self.exclude
        if not self._default:
            self._inc = _spec(self.include) if self.include else None
            self._exc = _spec(list(ALWAYS_EXCLUDED) + list(self.exclude))

    def covers(self, rel):
        if self._default:
            return not any(part in _ALWAYS_DIRS for part in rel.split("/")[:-1])
        if self._exc.match_file(rel):
            return False
        return self._inc is None or self._inc.match_file(rel)

    def prunes(self, rel_dir, name):
        """Whether the directory rel_dir/name (and all below it) is left out."""
        if self._default:
            return name in _ALWAYS_DIRS
        return bool(self._exc.match_file(rel_dir + name + "/"))


def own_files(manifest_path):
    """The manifest and its .prev: never part of the tree they describe."""
    p = Path(manifest_path)
    return [p, p.with_name(p.name + ".prev")]


def scan(root, selection, skip=()):
    """{relative POSIX path: os.DirEntry} of every regular file covered. Symlinks are
    neither followed nor recorded: a manifest describes file contents inside the tree."""
    root = Path(root)
    real_root = root.resolve()
    skip_rel = set()
    for p in skip:
        resolved = Path(p).resolve()
        if resolved.is_relative_to(real_root):  # outside the tree: nothing to skip
            skip_rel.add(resolved.relative_to(real_root).as_posix())
    out = {}
    # pruning already keeps the walk out of the always-excluded directories, so with the
    # default selection every file reached is covered
    default = selection._default
    stack = [("", str(root))]
    while stack:
        rel_dir, path = stack.pop()
        try:
            entries = list(os.scandir(path))
        except OSError:
            continue
        for entry in entries:
            rel = rel_dir + entry.name
            if entry.is_dir(follow_symlinks=False):
                # prune excluded directories early (".git/", "node_modules/" ...)
                if not selection.prunes(rel_dir, entry.name):
                    stack.append((rel + "/", entry.path))
            elif (entry.is_file(follow_symlinks=False) and not entry.name.startswith(".tmp-")
                  and rel not in skip_rel and (default or selection.covers(rel))):
                out[rel] = entry
    return out


def walk(root, selection, skip=()):
    """Relative POSIX paths of every regular file covered, sorted."""
    return sorted(scan(root, selection, skip))


def _entry(path):
    """(entry, None) or (None, error) for one file, hashed in one pass."""
    try:
        st = os.stat(path)
        digest = fsutil.sha256_file(path)
        st2 = os.stat(path)
    except OSError as exc:
        return None, exc.strerror or str(exc)
    if (st.st_size, st.st_mtime_ns) != (st2.st_size, st2.st_mtime_ns):
        return None, "changed while it was being hashed"
    return {"sha256": digest, "size": st.st_size, "modified": iso_z(st.st_mtime),
            "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}, None


class Progress:
    """A one-line progress display on a terminal; silent otherwise."""

    def __init__(self, total_files, label, stream=None):
        self.stream = stream or sys.stderr
        self.on = self.stream.isatty() and total_files > 200
        self.total, self.label, self.done, self.bytes = total_files, label, 0, 0
        self.t0 = time.monotonic()
        self.last = 0.0

    def step(self, size):
        self.done += 1
        self.bytes += size
        now = time.monotonic()
        if self.on and (now - self.last > 0.2 or self.done == self.total):
            self.last = now
            rate = self.bytes / max(now - self.t0, 1e-6) / 1e6
            self.stream.write(f"\r{self.label}: {self.done}/{self.total} files, "
                              f"{self.bytes / 1e6:.0f} MB, {rate:.0f} MB/s\033[K")
            if self.done == self.total:
                self.stream.write("\n")
            self.stream.flush()


def hash_files(root, rels, jobs=0, label="hashing"):
    """{rel: entry} and {rel: error} with one worker per core (hashlib frees the GIL)."""
    root = Path(root)
    jobs = jobs or os.cpu_count() or 1
    progress = Progress(len(rels), label)
    entries, errors = {}, {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for rel, (entry, err) in zip(rels, pool.map(lambda r: _entry(root / r), rels),
                                     strict=True):
            if entry is None:
                errors[rel] = err
            else:
                entries[rel] = entry
            progress.step(entry["size"] if entry else 0)
    return entries, errors


def build(root, selection, phase="manual", operation="create", jobs=0, reuse=None,
          skip=()):
    """A manifest dict for root. With `reuse` (an old manifest's checksums), files whose
    size, mtime and inode are unchanged keep their recorded hash (update --fast)."""
    root = Path(root)
    if not root.is_dir():
        raise StrongroomError(f"{root} is not a directory")
    rels = walk(root, selection, skip)
    checksums, to_hash = {}, []
    for rel in rels:
        old = (reuse or {}).get(rel)
        if old and _stat_matches(root / rel, old):
            checksums[rel] = old
        else:
            to_hash.append(rel)
    entries, errors = hash_files(root, to_hash, jobs)
    if errors:
        raise StrongroomError("cannot hash: " + "; ".join(f"{r}: {e}"
                                                         for r, e in sorted(errors.items())))
    checksums.update(entries)
    return {
        "version": VERSION,
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "hostname": socket.gethostname(),
        "metadata": {"phase": phase, "operation": operation,
                     "include": list(selection.include), "exclude": list(selection.exclude),
                     "files": len(checksums),
                     "bytes": sum(e["size"] for e in checksums.values())},
        "checksums": dict(sorted(checksums.items())),
    }


def _stat_matches(path, entry):
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_size == entry.get("size") and st.st_mtime_ns == entry.get("mtime_ns")
            and st.st_ino == entry.get("inode"))


def load(path):
    """The manifest at path, checked for shape; ManifestError when it cannot be trusted."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"manifest {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc}") from None
    except ValueError as exc:
        raise ManifestError(f"manifest {path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("checksums"), dict):
        raise ManifestError(f"manifest {path} has no 'checksums' mapping")
    for rel, e in data["checksums"].items():
        ok = (isinstance(e, dict) and isinstance(e.get("sha256"), str)
              and len(e["sha256"]) == 64 and isinstance(e.get("size"), int))
        if not ok or rel.startswith("/") or ".." in rel.split("/"):
            raise ManifestError(f"manifest {path}: entry {rel!r} is malformed")
    return data


def selection_of(data):
    meta = data.get("metadata") or {}
    return Selection(list(meta.get("include") or []), list(meta.get("exclude") or []))


def write(path, data):
    """Atomically, keeping the previous manifest as FILE.prev."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    if path.exists():
        prev = path.with_name(path.name + ".prev")
        tmp = fsutil.temp_path(prev)
        try:
            tmp.write_bytes(path.read_bytes())
            fsutil.commit(tmp, prev)
        except BaseException:  # a full disk: no half-written copy is left behind
            tmp.unlink(missing_ok=True)
            raise
    fsutil.atomic_write_bytes(path, text.encode(), mode=0o644)


@dataclass
class Verdict:
    ok: list = field(default_factory=list)
    mismatched: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    new: list = field(default_factory=list)
    unreadable: dict = field(default_factory=dict)
    hashed: int = 0
    trusted_by_stat: int = 0

    @property
    def passed(self):
        return not (self.mismatched or self.missing or self.unreadable)

    def as_dict(self):
        return {"passed": self.passed, "ok": len(self.ok), "mismatched": self.mismatched,
                "missing": self.missing, "new": self.new, "unreadable": self.unreadable,
                "hashed": self.hashed, "trusted_by_stat": self.trusted_by_stat}


def verify(root, data, fast=False, jobs=0, paths=None, skip=()):
    """Compare root with a loaded manifest. `paths` limits the check to those entries."""
    root = Path(root)
    if not root.is_dir():
        raise StrongroomError(f"{root} is not a directory")
    checks = data["checksums"]
    wanted = sorted(checks) if paths is None else sorted(p for p in paths if p in checks)
    # one walk finds the new files and stats the listed ones (DirEntry.stat, no path joins)
    found = scan(root, selection_of(data), skip) if paths is None else {}
    base = str(root)
    v = Verdict()
    to_hash = []
    for rel in wanted:
        try:
            entry = found.get(rel)
            st = (entry.stat(follow_symlinks=False) if entry is not None
                  else os.stat(os.path.join(base, rel), follow_symlinks=False))
        except OSError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            v.missing.append(rel)
        elif fast and (st.st_size, st.st_mtime_ns, st.st_ino) == (
                checks[rel].get("size"), checks[rel].get("mtime_ns"), checks[rel].get("inode")):
            v.ok.append(rel)
            v.trusted_by_stat += 1
        else:
            to_hash.append(rel)
    entries, errors = hash_files(root, to_hash, jobs, label="verifying")
    v.hashed = len(entries)
    v.unreadable = errors
    for rel, e in entries.items():
        (v.ok if e["sha256"] == checks[rel]["sha256"] else v.mismatched).append(rel)
    v.mismatched.sort()
    if paths is None:
        v.new = sorted(r for r in found if r not in checks)
    return v


def diff(old, new):
    """{added, removed, changed} between two checksums mappings."""
    a, b = old or {}, new or {}
    return {"added": sorted(set(b) - set(a)), "removed": sorted(set(a) - set(b)),
            "changed": sorted(r for r in set(a) & set(b) if a[r]["sha256"] != b[r]["sha256"])}


_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r"}
_UNESCAPES = {"\\": "\\", "n": "\n", "r": "\r"}


def escape_name(rel):
    """A file name as `sha256sum` writes it: backslash, newline and carriage return
    escaped (and the line then starts with a backslash)."""
    return "".join(_ESCAPES.get(ch, ch) for ch in rel)


def unescape_name(text):
    """escape_name undone, one escape at a time (not by chained replaces, which would
    read the backslash-n of an escaped backslash as a newline); None when malformed."""
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            nxt = text[i + 1] if i + 1 < len(text) else ""
            if nxt not in _UNESCAPES:
                return None
            out.append(_UNESCAPES[nxt])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def sha256sum_lines(data):
    """The `sha256sum -c --strict` format, with its escaping of \\, newlines and CRs."""
    out = []
    for rel, e in sorted(data["checksums"].items()):
        if any(ch in rel for ch in _ESCAPES):
            out.append("\\" + e["sha256"] + "  " + escape_name(rel))
        else:
            out.append(e["sha256"] + "  " + rel)
    return "\n".join(out) + ("\n" if out else "")
