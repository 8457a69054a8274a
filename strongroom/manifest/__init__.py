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

import codecs
import json
import math
import os
import re
import socket
import stat
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as _quote
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


_SECONDS = {}


def _iso_z_fast(ts):
    """iso_z(ts), with the date and time of day formatted once per second: a tree's files
    share seconds, and strftime per file costs more than the hash of a small one. The
    microseconds are rounded as datetime.fromtimestamp rounds them (half to even)."""
    frac, whole = math.modf(ts)
    us = round(frac * 1e6)
    if us >= 1_000_000:
        us -= 1_000_000
        whole += 1.0
    elif us < 0:
        us += 1_000_000
        whole -= 1.0
    sec = int(whole)
    prefix = _SECONDS.get(sec)
    if prefix is None:
        if len(_SECONDS) > 4096:
            _SECONDS.clear()
        prefix = _SECONDS[sec] = datetime.fromtimestamp(sec, UTC).strftime(
            "%Y-%m-%dT%H:%M:%S")
    return f"{prefix}.{us:06d}Z"


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
    """The manifest, its .prev and its stat index: never part of the tree they describe."""
    p = Path(manifest_path)
    return [p, p.with_name(p.name + ".prev"), p.with_name(p.name + ".stat")]


def _skip_rels(root, skip):
    real_root = Path(root).resolve()
    skip_rel = set()
    for p in skip:
        resolved = Path(p).resolve()
        if resolved.is_relative_to(real_root):  # outside the tree: nothing to skip
            skip_rel.add(resolved.relative_to(real_root).as_posix())
    return skip_rel


def _files(root, selection, skip=()):
    """(relative POSIX path, os.DirEntry) of every regular file covered, in walk order.
    Symlinks are neither followed nor recorded: a manifest describes file contents inside
    the tree."""
    skip_rel = _skip_rels(root, skip)
    # pruning already keeps the walk out of the always-excluded directories, so with the
    # default selection every file reached is covered
    default = selection._default
    stack = [("", os.fspath(root))]
    while stack:
        rel_dir, path = stack.pop()
        try:
            with os.scandir(path) as it:
                entries = list(it)
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
                yield rel, entry


def scan(root, selection, skip=()):
    """{relative POSIX path: os.DirEntry} of every regular file covered."""
    return dict(_files(root, selection, skip))


def walk(root, selection, skip=()):
    """Relative POSIX paths of every regular file covered, sorted."""
    rels = [rel for rel, _ in _files(root, selection, skip)]
    rels.sort()
    return rels


def _entry(path):
    """(entry, None) or (None, error) for one file, hashed in one pass."""
    try:
        digest, st, st2 = fsutil.sha256_stat(path)
    except OSError as exc:
        return None, exc.strerror or str(exc)
    if (st.st_size, st.st_mtime_ns) != (st2.st_size, st2.st_mtime_ns):
        return None, "changed while it was being hashed"
    return vars(_Recorded(digest, st.st_size, _iso_z_fast(st.st_mtime), st.st_mtime_ns,
                          st.st_ino)), None


class _Recorded:
    """An entry's fields as the attributes of an object whose dict is all that is kept:
    CPython lets the dicts of one class's objects share a single table of keys, a third
    less memory per file than a dict literal's own table. It is a plain dict all the
    same (same keys, same order, json.dumps alike)."""

    def __init__(self, sha256, size, modified, mtime_ns, inode):
        self.sha256 = sha256
        self.size = size
        self.modified = modified
        self.mtime_ns = mtime_ns
        self.inode = inode


def _entries(base, rels):
    """_entry of each of a batch of files: one task per batch, not per file."""
    prefix = os.path.join(base, "")
    return [_entry(prefix + rel) for rel in rels]


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

    def advance(self, files, size):
        """step() for a batch of files."""
        if not self.on:
            self.done += files
            self.bytes += size
            return
        self.done += files - 1
        self.bytes += size
        self.step(0)


def _batches(rels, jobs):
    """Slices of rels: a few per worker, so a slow batch cannot leave the others idle,
    and never so small that handing one over costs more than hashing it."""
    size = max(16, min(2048, len(rels) // (jobs * 8) or 1))
    return [rels[i:i + size] for i in range(0, len(rels), size)]


def iter_hashed(root, rels, jobs=0, label="hashing"):
    """(rel, entry, error) of every file in rels, in the order of rels, hashed in batches
    by one worker per core (the system calls and large files' hashing free the GIL)."""
    base = os.fspath(root)
    jobs = jobs or os.cpu_count() or 1
    progress = Progress(len(rels), label)
    batches = _batches(rels, jobs)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for batch, results in zip(batches, pool.map(lambda b: _entries(base, b), batches),
                                  strict=True):
            size = 0
            for rel, (entry, err) in zip(batch, results, strict=True):
                if entry is not None:
                    size += entry["size"]
                yield rel, entry, err
            progress.advance(len(batch), size)


def hash_files(root, rels, jobs=0, label="hashing"):
    """{rel: entry} and {rel: error} with one worker per core (hashlib frees the GIL)."""
    entries, errors = {}, {}
    for rel, entry, err in iter_hashed(root, rels, jobs, label):
        if entry is None:
            errors[rel] = err
        else:
            entries[rel] = entry
    return entries, errors


def build(root, selection, phase="manual", operation="create", jobs=0, reuse=None,
          skip=()):
    """A manifest dict for root. With `reuse` (an old manifest's checksums), files whose
    size, mtime and inode are unchanged keep their recorded hash (update --fast)."""
    root = Path(root)
    if not root.is_dir():
        raise StrongroomError(f"{root} is not a directory")
    rels = walk(root, selection, skip)
    base = os.path.join(root, "")
    if reuse:
        kept = {}
        for rel in rels:
            old = reuse.get(rel)
            if old and _stat_matches(base + rel, old):
                kept[rel] = old
        to_hash = [rel for rel in rels if rel not in kept] if kept else rels
    else:
        kept, to_hash = {}, rels
    hashed, errors, total = {}, {}, 0
    for rel, entry, err in iter_hashed(root, to_hash, jobs):
        if entry is None:
            errors[rel] = err
        else:
            hashed[rel] = entry
    if errors:
        raise StrongroomError("cannot hash: " + "; ".join(f"{r}: {e}"
                                                         for r, e in sorted(errors.items())))
    # both in walk (sorted) order
    checksums = {rel: kept.get(rel) or hashed[rel] for rel in rels} if kept else hashed
    del hashed, kept
    for e in checksums.values():
        total += e["size"]
    return {
        "version": VERSION,
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "hostname": socket.gethostname(),
        "metadata": {"phase": phase, "operation": operation,
                     "include": list(selection.include), "exclude": list(selection.exclude),
                     "files": len(checksums), "bytes": total},
        "checksums": checksums,
    }


def _stat_matches(path, entry):
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_size == entry.get("size") and st.st_mtime_ns == entry.get("mtime_ns")
            and st.st_ino == entry.get("inode"))


_DECODER = json.JSONDecoder()
_WS = re.compile(r"[ \t\n\r]*")
_COLON = re.compile(r"[ \t\n\r]*:[ \t\n\r]*")
_NEXT = re.compile(r"[ \t\n\r]*([,}])[ \t\n\r]*")
_PIECE = 1 << 20


class _Pieces:
    """A JSON text read a megabyte at a time: a large manifest is never one string."""

    def __init__(self, fh):
        self.fh, self.buf, self.pos, self.eof = fh, "", 0, False
        self.dec = codecs.getincrementaldecoder("utf-8")()

    def more(self):
        if self.eof:
            return False
        raw = self.fh.read(_PIECE)
        self.eof = not raw
        self.buf = self.buf[self.pos:] + self.dec.decode(raw, final=self.eof)
        self.pos = 0
        return True

    def token(self):
        """The next non-blank character ("" at the end), not consumed."""
        while True:
            self.pos = _WS.match(self.buf, self.pos).end()
            if self.pos < len(self.buf) or not self.more():
                return self.buf[self.pos:self.pos + 1]

    def take(self, ch):
        if self.token() != ch:
            raise ValueError(f"expected {ch!r}")
        self.pos += 1

    def value(self):
        self.token()
        while True:
            try:
                obj, end = _DECODER.raw_decode(self.buf, self.pos)
            except ValueError:
                if self.more():
                    continue
                raise
            if end < len(self.buf) or self.eof or not self.more():  # a number may go on
                self.pos = end
                return obj

    def checksums(self):
        """The "checksums" object, an entry at a time, each kept in a shared-keys dict."""
        self.take("{")
        out = {}
        if self.token() == "}":
            self.pos += 1
            return out
        # the decoder's C scanner itself: raw_decode's Python wrapper costs as much per entry
        buf, pos, scan, keys = self.buf, self.pos, _DECODER.scan_once, _ENTRY_KEYS
        while True:
            try:  # one entry, all of it inside the piece read so far
                rel, at = scan(buf, pos)
                at = _COLON.match(buf, at).end()
                e, at = scan(buf, at)
                sep = _NEXT.match(buf, at)
                if sep is None or sep.end() == len(buf):
                    raise ValueError("the entry goes on in the next piece")
            except (ValueError, AttributeError, StopIteration):
                self.pos = pos
                if self.more():
                    buf, pos = self.buf, self.pos
                    continue
                raise ValueError("a checksums entry is malformed") from None
            if type(rel) is not str:
                raise ValueError("a checksums key is not a string")
            if type(e) is dict and tuple(e) == keys:
                e = vars(_Recorded(*e.values()))
            out[rel] = e
            pos = sep.end()
            if sep.group(1) == "}":
                self.pos = pos
                return out


def _load_pieces(fh):
    """json.load(fh) for an object, reading "checksums" in pieces; ValueError otherwise."""
    p = _Pieces(fh)
    p.take("{")
    data = {}
    if p.token() == "}":
        p.pos += 1
    else:
        while True:
            key = p.value()
            if type(key) is not str:
                raise ValueError("a key is not a string")
            p.take(":")
            data[key] = p.checksums() if key == "checksums" and p.token() == "{" else p.value()
            ch = p.token()
            p.pos += 1
            if ch == "}":
                break
            if ch != ",":
                raise ValueError("expected ',' or '}'")
    if p.token() != "":
        raise ValueError("extra data")
    return data


def load(path):
    """The manifest at path, checked for shape; ManifestError when it cannot be trusted."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = _load_pieces(fh)
    except (ValueError, OSError):  # said in the words of the whole-text reading below
        data = _load_whole(path)
    if not isinstance(data, dict) or not isinstance(data.get("checksums"), dict):
        raise ManifestError(f"manifest {path} has no 'checksums' mapping")
    for rel, e in data["checksums"].items():
        ok = (isinstance(e, dict) and isinstance(e.get("sha256"), str)
              and len(e["sha256"]) == 64 and isinstance(e.get("size"), int))
        if not ok or rel.startswith("/") or (".." in rel and ".." in rel.split("/")):
            raise ManifestError(f"manifest {path}: entry {rel!r} is malformed")
    return data


def _load_whole(path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"manifest {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc}") from None
    except ValueError as exc:
        raise ManifestError(f"manifest {path} is not valid JSON ({exc})") from None


def selection_of(data):
    meta = data.get("metadata") or {}
    return Selection(list(meta.get("include") or []), list(meta.get("exclude") or []))


_ENTRY_KEYS = ("sha256", "size", "modified", "mtime_ns", "inode")
_BATCH = 4096  # entries formatted per write


def _entry_text(rel, e):
    """One entry of "checksums" exactly as json.dumps(indent=2) writes it at that depth."""
    if type(e) is dict and tuple(e) == _ENTRY_KEYS:
        sha, size, modified, mtime_ns, inode = e.values()
        if (type(sha) is str and type(size) is int and type(modified) is str
                and type(mtime_ns) is int and type(inode) is int):
            return (f"    {_quote(rel)}: {{\n      \"sha256\": {_quote(sha)},\n"
                    f"      \"size\": {size},\n      \"modified\": {_quote(modified)},\n"
                    f"      \"mtime_ns\": {mtime_ns},\n      \"inode\": {inode}\n    }}")
    return f"    {_quote(rel)}: " + json.dumps(e, indent=2).replace("\n", "\n    ")


def _json_chunks(data):
    """json.dumps(data, indent=2) + "\n", byte for byte, in pieces: the checksums are
    formatted a batch at a time instead of as one string the size of the file."""
    if not data:
        yield "{}\n"
        return
    yield "{"
    sep = "\n"
    for key, value in data.items():
        if key == "checksums" and type(value) is dict and value:
            yield f"{sep}  {_quote(key)}: {{"
            batch, inner = [], "\n"
            for rel, e in value.items():
                batch.append(inner + _entry_text(rel, e))
                inner = ",\n"
                if len(batch) >= _BATCH:
                    yield "".join(batch)
                    batch.clear()
            yield "".join(batch) + "\n  }"
        else:
            yield f"{sep}  {json.dumps(key)}: " + json.dumps(value, indent=2).replace(
                "\n", "\n  ")
        sep = ",\n"
    yield "\n}\n"


def _write_atomically(path, chunks, mode=0o644):
    tmp = fsutil.temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as fh:
            for chunk in chunks:
                fh.write(chunk)
        fsutil.commit(tmp, path)
    except BaseException:  # a full disk: no half-written file is left behind
        tmp.unlink(missing_ok=True)
        raise


def write(path, data):
    """Atomically, keeping the previous manifest as FILE.prev."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        prev = path.with_name(path.name + ".prev")
        with open(path, "rb") as src:
            _write_atomically(prev, iter(lambda: src.read(fsutil.CHUNK), b""))
    _write_atomically(path, (c.encode() for c in _json_chunks(data)))


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
    v = Verdict()
    if paths is None:
        to_hash = _walk_against(root, data, fast, skip, v)
    else:
        to_hash = _stat_listed(root, checks, sorted(p for p in paths if p in checks), fast, v)
    for rel, e, err in iter_hashed(root, to_hash, jobs, label="verifying"):
        if e is None:
            v.unreadable[rel] = err
        else:
            v.hashed += 1
            (v.ok if e["sha256"] == checks[rel]["sha256"] else v.mismatched).append(rel)
    v.ok.sort()
    v.mismatched.sort()
    return v


def verify_indexed(root, manifest_path, jobs=0, skip=()):
    """verify(fast=True) from the stat index beside the manifest (statindex.py), without
    parsing the manifest; None when there is no index it can trust (then verify as before).
    The verdict is the same: files unchanged by size, mtime and inode are trusted, the rest
    hashed against the recorded SHA-256."""
    from . import statindex

    root = Path(root)
    if not root.is_dir():
        raise StrongroomError(f"{root} is not a directory")
    idx = statindex.load(manifest_path)
    if idx is None:
        return None
    pos = {rel: i for i, rel in enumerate(idx.names)}
    sizes, mtimes, inodes = idx.sizes, idx.mtimes, idx.inodes
    seen = bytearray(len(idx.names))
    v = Verdict()
    to_hash, new, changed = [], [], 0
    for rel, entry in _files(root, Selection(idx.include, idx.exclude), skip):
        i = pos.get(rel)
        if i is None:
            new.append(rel)
            continue
        seen[i] = 1
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            v.missing.append(rel)
            changed += 1
            continue
        if not (st.st_size == sizes[i] and st.st_mtime_ns == mtimes[i]
                and st.st_ino == inodes[i]):
            to_hash.append(rel)
            changed += 1
    base = os.path.join(root, "")
    if seen.count(0):  # listed but not reached by the walk, as in _walk_against
        for i in (i for i, s in enumerate(seen) if not s):
            rel = idx.names[i]
            changed += 1
            try:
                st = os.stat(base + rel, follow_symlinks=False)
            except OSError:
                st = None
            if st is None or not stat.S_ISREG(st.st_mode):
                v.missing.append(rel)
            elif (st.st_size, st.st_mtime_ns, st.st_ino) == (sizes[i], mtimes[i], inodes[i]):
                changed -= 1
                seen[i] = 2  # unchanged, and trusted as such
            else:
                to_hash.append(rel)
    to_hash.sort()
    if changed:
        odd = set(to_hash)
        odd.update(v.missing)
        v.ok = [rel for rel in idx.names if rel not in odd]
    else:
        v.ok = idx.names  # sorted already
    v.trusted_by_stat = len(v.ok)
    for rel, e, err in iter_hashed(root, to_hash, jobs, label="verifying"):
        if e is None:
            v.unreadable[rel] = err
        else:
            v.hashed += 1
            (v.ok if e["sha256"] == idx.digest(pos[rel]) else v.mismatched).append(rel)
    if v.hashed:
        v.ok.sort()
    v.mismatched.sort()
    v.missing.sort()
    new.sort()
    v.new = new
    return v


def _unchanged(st, recorded):
    return (st.st_size == recorded.get("size") and st.st_mtime_ns == recorded.get("mtime_ns")
            and st.st_ino == recorded.get("inode"))


def _walk_against(root, data, fast, skip, v):
    """One walk of the tree: the listed files seen unchanged by their stat (with fast),
    the new ones, the missing ones; returns the files left to hash, sorted."""
    checks = data["checksums"]
    to_hash, new, seen, ok = [], [], 0, v.ok
    for rel, entry in _files(root, selection_of(data), skip):
        recorded = checks.get(rel)
        if recorded is None:
            new.append(rel)
            continue
        seen += 1
        if fast:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                v.missing.append(rel)
                continue
            # _unchanged, inline: this loop runs once per file of the tree
            if (st.st_size == recorded["size"] and st.st_mtime_ns == recorded.get("mtime_ns")
                    and st.st_ino == recorded.get("inode")):
                ok.append(rel)
                continue
        to_hash.append(rel)
    v.trusted_by_stat = len(v.ok)
    new.sort()
    v.new = new
    if seen + len(v.missing) < len(checks):
        # listed but not reached by the walk: gone, or no longer a regular file, or
        # outside the selection now (then still checked, by its own stat)
        reached = set(v.ok)
        reached.update(to_hash, v.missing)
        rest = sorted(rel for rel in checks if rel not in reached)
        del reached
        to_hash += _stat_listed(root, checks, rest, fast, v)
    v.missing.sort()
    to_hash.sort()
    return to_hash


def _stat_listed(root, checks, rels, fast, v):
    base = os.path.join(root, "")
    to_hash = []
    for rel in rels:
        try:
            st = os.stat(base + rel, follow_symlinks=False)
        except OSError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            v.missing.append(rel)
        elif fast and _unchanged(st, checks[rel]):
            v.ok.append(rel)
            v.trusted_by_stat += 1
        else:
            to_hash.append(rel)
    return to_hash


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
