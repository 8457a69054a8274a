"""The ledger of what one job put off-site: <state-dir>/verify/<job>.json.

    {"remote": "REMOTE:PATH",
     "objects": {"<path under REMOTE:PATH>": {"size": N, "sha256": "...",
                                             "uploaded": "...Z", "verified": "...Z"|null,
                                             "damaged": {"reason": "...", "found": "...Z"},
                                             "adopted": "...", "mutable": true}},
     "moved_aside": "<the previous remote's ledger>"}   (until a run has said so)

An upload that proved its files by SHA-256 records them here (their upload is their first
good verification); the rotation re-reads them later. `remote` names the root the object
paths are relative to: a job whose remote changed starts a new ledger, and the old one is
kept beside it, never merged.

The file is input like any other state: an entry naming no clean path under the remote (an
absolute path, `..`, a NUL) or holding no valid size and SHA-256 is dropped and said, never
used to read or write anything. A file that is not the JSON we write is refused whole: what
it said about damage cannot be taken back silently.
"""

import os
import re
import threading
from datetime import UTC, datetime
from pathlib import Path

from ..core import fsutil, safeio
from ..core.errors import StrongroomError

HEX64 = re.compile(r"^[0-9a-f]{64}$")
STAMP = "%Y-%m-%dT%H:%M:%SZ"
ADOPTED_FIRST_READ = "adopted on first read"
ADOPTED_LOCAL = "adopted from the local copy"


class LedgerError(StrongroomError):
    pass


def iso(dt):
    return dt.astimezone(UTC).strftime(STAMP)


def parse(text):
    """The datetime of a ledger time, or None (null, or not a time we write)."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.strptime(text, STAMP).replace(tzinfo=UTC)
    except ValueError:
        return None


def clean_name(name):
    """`name` when it is a clean relative path as we write them, else None."""
    try:
        return name if safeio.clean_relpath(name, "object") == name else None
    except safeio.UnsafePath:
        return None


def _entry(entry):
    """A ledger entry as we write it, or None when it is not one."""
    if not isinstance(entry, dict):
        return None
    size, sha = entry.get("size"), entry.get("sha256")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return None
    if not isinstance(sha, str) or not HEX64.match(sha):
        return None
    uploaded = parse(entry.get("uploaded"))
    if uploaded is None:
        return None
    out = {"size": size, "sha256": sha, "uploaded": entry["uploaded"],
           "verified": entry["verified"] if parse(entry.get("verified")) else None}
    damaged = entry.get("damaged")
    if damaged is not None:
        # a damage mark is kept even when its fields are odd: it fails until repaired
        reason = damaged.get("reason") if isinstance(damaged, dict) else None
        found = damaged.get("found") if isinstance(damaged, dict) else None
        out["damaged"] = {"reason": reason if isinstance(reason, str) else "damaged",
                          "found": found if parse(found) else entry["uploaded"]}
    if isinstance(entry.get("adopted"), str):
        out["adopted"] = entry["adopted"]
    if entry.get("mutable") is True:
        out["mutable"] = True
    return out


def prefix_of(root, dest):
    """The path of REMOTE:PATH `dest` under `root` ("" for root itself), or None when
    dest is not under it."""
    base = root.rstrip("/")
    dest = dest.rstrip("/")
    if dest == base:
        return ""
    lead = base if base.endswith(":") else base + "/"
    if dest.startswith(lead):
        return clean_name(dest[len(lead):])
    return None


class Ledger:
    """One job's ledger. Thread-safe: a bundle job uploads repositories in parallel."""

    def __init__(self, path, root):
        self.path, self.root = Path(path), root
        self.objects = {}
        self.ignored = []  # entries dropped as not ours (reprs, shortened)
        self.moved_aside = None  # the ledger of the job's previous remote, kept beside
        self._lock = threading.Lock()
        self._load()

    def __deepcopy__(self, memo):
        return self  # one file, one handle: options copied with asdict() share it

    def _load(self):
        try:
            data = safeio.read_regular(self.path)
        except FileNotFoundError:
            return
        except (OSError, safeio.UnsafePath) as exc:
            raise LedgerError(f"cannot read the verification ledger {self.path}: {exc}") \
                from None
        try:
            doc = safeio.load_json(data, f"the verification ledger {self.path}")
        except ValueError as exc:
            raise LedgerError(f"{exc}; nothing was re-read. Move it aside to start over "
                              "(objects without a local copy are then trusted on first "
                              "read again)") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("objects"), dict):
            raise LedgerError(f"the verification ledger {self.path} is not one we write "
                              "(no 'objects' mapping); nothing was re-read. Move it aside "
                              "to start over")
        if isinstance(doc.get("moved_aside"), str):
            self.moved_aside = doc["moved_aside"][:300]
        if doc.get("remote") != self.root:
            aside = self.path.with_name(
                f"{self.path.stem}.previous-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"
                ".json")
            os.replace(self.path, aside)
            self.moved_aside = aside
            return
        for name, entry in doc["objects"].items():
            good = _entry(entry) if clean_name(name) else None
            if good is None:
                self.ignored.append(repr(name)[:80])
            else:
                self.objects[name] = good

    def save(self):
        with self._lock:
            self._save()

    def _save(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"remote": self.root, "objects": self.objects}
        if self.moved_aside:  # until a re-verification has said so
            doc["moved_aside"] = str(self.moved_aside)
        fsutil.atomic_write_json(self.path, doc, mode=0o600)

    def record(self, dest, files, now=None, mutable=False):
        """Files an upload to REMOTE:PATH `dest` proved by SHA-256: {name under dest:
        (size, sha256)}. A damage mark stays: only a re-read clears it."""
        prefix = prefix_of(self.root, dest)
        if prefix is None:
            return
        when = iso(now or datetime.now(UTC))
        with self._lock:
            for name, (size, sha) in files.items():
                key = clean_name(f"{prefix}/{name}" if prefix else name)
                if key is None or not HEX64.match(sha or ""):
                    continue
                entry = {"size": size, "sha256": sha, "uploaded": when, "verified": when}
                if mutable:
                    entry["mutable"] = True
                old = self.objects.get(key)
                if old and old.get("damaged"):
                    entry["damaged"] = old["damaged"]
                self.objects[key] = entry
            self._save()

    def forget(self, dest, names):
        """Objects deleted on purpose (a pruned database version)."""
        prefix = prefix_of(self.root, dest)
        if prefix is None:
            return
        with self._lock:
            for name in names:
                self.objects.pop(f"{prefix}/{name}" if prefix else name, None)
            self._save()
