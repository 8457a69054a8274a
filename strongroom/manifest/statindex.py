"""A stat index beside a manifest (MANIFEST.stat), so `manifest verify --fast` of a large
tree need not parse the JSON manifest: size, mtime_ns, inode and SHA-256 of every entry,
packed, and the names, in one file that loads in milliseconds.

It is a cache, never a source of truth. It records the SHA-256 of the manifest file it was
made from, and is used only when the manifest's bytes still hash to that (a manifest
rewritten by anything else, edited, or restored from elsewhere makes it stale, and verify
reads the manifest as before). One that is damaged in any way is ignored the same way: the
worst it can cost is the time it was meant to save.

Layout: a magic line, one JSON header line (manifest_sha256, count, include, exclude), then
count sizes (int64), mtime_ns (int64), inodes (uint64) and 32-byte digests, then the names,
UTF-8 (surrogateescape), NUL-separated, sorted.
"""

import json
import struct
from array import array
from dataclasses import dataclass
from pathlib import Path

from ..core import fsutil

MAGIC = b"STRONGROOM-STAT 1\n"
SUFFIX = ".stat"
NO_TIME = -(1 << 63)  # an entry without mtime_ns never matches a stat
_MAX_HEADER = 1 << 20


def path_for(manifest_path):
    p = Path(manifest_path)
    return p.with_name(p.name + SUFFIX)


@dataclass
class Index:
    names: list
    sizes: array
    mtimes: array
    inodes: array
    digests: bytes
    include: list
    exclude: list

    def digest(self, i):
        return self.digests[32 * i:32 * i + 32].hex()


def write(manifest_path, data):
    """MANIFEST.stat for the manifest just written at manifest_path from data. ValueError
    (or OverflowError, TypeError) for an entry no index can hold, OSError for the disk."""
    checks = data["checksums"]
    names = list(checks)
    # built manifests are sorted already
    if any(a >= b for a, b in zip(names, names[1:], strict=False)):
        names.sort()
        vals = [checks[rel] for rel in names]
    else:
        vals = checks.values()
    # one pass per column and no list per column: the index must not cost what it saves
    sizes = array("q", (e["size"] for e in vals))
    mtimes = array("q", (m if type(m := e.get("mtime_ns")) is int else NO_TIME for e in vals))
    inodes = array("Q", (i if type(i := e.get("inode")) is int and i >= 0 else 0
                         for e in vals))
    digests = bytearray()  # entry by entry: a joined hex string would be twice its size
    for e in vals:
        digests += bytes.fromhex(e["sha256"])
    if len(digests) != 32 * len(names) or sizes.itemsize != 8 or inodes.itemsize != 8:
        raise ValueError("an entry's digest is not a SHA-256")
    meta = data.get("metadata") or {}
    header = json.dumps({"manifest_sha256": fsutil.sha256_file(manifest_path),
                         "count": len(names), "include": list(meta.get("include") or []),
                         "exclude": list(meta.get("exclude") or [])}).encode() + b"\n"
    from . import _write_atomically

    # the parts one after the other, never joined into one copy of the whole
    _write_atomically(path_for(manifest_path), iter((
        MAGIC, header, memoryview(sizes), memoryview(mtimes), memoryview(inodes), digests,
        "\0".join(names).encode("utf-8", "surrogateescape"))))


def load(manifest_path):
    """The Index for manifest_path, or None when there is none it can be trusted for."""
    try:
        raw = path_for(manifest_path).read_bytes()
        if not raw.startswith(MAGIC):
            return None
        end = raw.index(b"\n", len(MAGIC), len(MAGIC) + _MAX_HEADER)
        head = json.loads(raw[len(MAGIC):end])
        n = head["count"]
        if (type(n) is not int or n < 0 or type(head["manifest_sha256"]) is not str
                or not all(type(x) is list and all(type(p) is str for p in x)
                           for x in (head["include"], head["exclude"]))):
            return None
        at = end + 1
        arrays = []
        for code in ("q", "q", "Q"):
            a = array(code)
            a.frombytes(raw[at:at + 8 * n])
            if len(a) != n:
                return None
            arrays.append(a)
            at += 8 * n
        digests = raw[at:at + 32 * n]
        at += 32 * n
        names = raw[at:].decode("utf-8", "surrogateescape").split("\0") if n else []
        if len(digests) != 32 * n or len(names) != n:
            return None
        if any(not r or r[0] == "/" or (".." in r and ".." in r.split("/")) for r in names):
            return None
        # last, the one that costs a read of the manifest: made for these exact bytes?
        if fsutil.sha256_file(manifest_path) != head["manifest_sha256"]:
            return None
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return None
    return Index(names, *arrays, digests, head["include"], head["exclude"])
