"""The per-repository chain manifest (bundle-manifest.json) and the files it names.

Format, kept close to the original CloudSync one so its users recognise it:
{version, repository, source, bare, chain_id, bundles[{type, filename, timestamp, size,
sha256, refs_file, refs_sha256, parent, commit}], incremental_count, last_full_bundle_date,
critical[{filename, sha256, size, files, digest, timestamp}], retired[...]}.
`type` is full, incremental or refs (a ref moved back or was deleted: no new objects, so
no bundle, only a ref manifest).
"""

import json
from datetime import UTC, datetime
from pathlib import Path

from . import fsutil
from .errors import StrongroomError

MANIFEST = "bundle-manifest.json"
REMOTE_STATE = "remote-state.json"
RETIRED_DIR = ".retired"
VERSION = 1


class ChainInvalid(StrongroomError):
    """The store's record for a repository cannot be trusted; the next sync starts afresh."""


def utcnow():
    return datetime.now(UTC)


def stamp(now):
    return now.strftime("%Y%m%d-%H%M%S")


def iso(now):
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text):
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def new_manifest(name, source, bare, now):
    return {
        "version": VERSION,
        "repository": name,
        "source": str(source),
        "bare": bare,
        "chain_id": stamp(now),
        "bundles": [],
        "incremental_count": 0,
        "last_full_bundle_date": None,
        "critical": [],
        "retired": [],
    }


def load(repo_dir, check_files=True):
    """The manifest, checked for shape and (cheaply: size) for the files it names."""
    path = Path(repo_dir) / MANIFEST
    if not path.exists():
        raise ChainInvalid(f"no {MANIFEST}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ChainInvalid(f"{MANIFEST} unreadable: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise ChainInvalid(f"{MANIFEST} has an unknown format or version")
    entries = data.get("bundles")
    if not isinstance(entries, list) or not entries or entries[0].get("type") != "full":
        raise ChainInvalid(f"{MANIFEST} does not start with a full bundle")
    if check_files:
        for rel, size in files_with_sizes(data):
            try:
                actual = (Path(repo_dir) / rel).stat().st_size
            except FileNotFoundError:
                raise ChainInvalid(f"{rel} is listed but missing from the store") from None
            if actual != size:
                raise ChainInvalid(f"{rel} is {actual} bytes, the manifest says {size}")
    return data


def files_with_sizes(manifest):
    """(filename, size) of every file the chain needs: bundles, ref manifests, packs."""
    out = []
    for e in manifest["bundles"]:
        if e.get("filename"):
            out.append((e["filename"], e["size"]))
        out.append((e["refs_file"], e["refs_size"]))
    for c in manifest.get("critical", []):
        if c.get("filename"):
            out.append((c["filename"], c["size"]))
    return out


def expected_hashes(manifest):
    out = {}
    for e in manifest["bundles"]:
        if e.get("filename"):
            out[e["filename"]] = e["sha256"]
        out[e["refs_file"]] = e["refs_sha256"]
    for c in manifest.get("critical", []):
        if c.get("filename"):
            out[c["filename"]] = c["sha256"]
    return out


def save(repo_dir, manifest):
    fsutil.atomic_write_json(Path(repo_dir) / MANIFEST, manifest)


def last_refs_entry(manifest):
    return manifest["bundles"][-1]


def chain_tips(manifest, repo_dir):
    """Every object a ref pointed at anywhere in this chain (all are in its bundles)."""
    tips = set()
    for e in manifest["bundles"]:
        tips.update(read_refs_file(Path(repo_dir) / e["refs_file"])["refs"].values())
    return tips


def read_refs_file(path):
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ChainInvalid(f"ref manifest {Path(path).name} unreadable: {exc}") from None
    if not isinstance(data.get("refs"), dict):
        raise ChainInvalid(f"ref manifest {Path(path).name} has no refs")
    return data


def unique_name(repo_dir, stem, suffix, taken=()):
    """`stem` + suffix, made unique if two runs fall in the same second.

    `taken` holds names used before (retired chains, files a remote already has): a name
    is never given to different content, or a remote would keep the old bytes under it.
    """
    name, n = f"{stem}{suffix}", 1
    while (Path(repo_dir) / name).exists() or name in taken:
        n += 1
        name = f"{stem}-{n}{suffix}"
    return name


def store_repositories(store):
    """Names of every repository the store holds a chain for."""
    store = Path(store)
    names = []
    for manifest in store.rglob(MANIFEST):
        rel = manifest.parent.relative_to(store)
        if RETIRED_DIR in rel.parts:
            continue
        names.append(rel.as_posix())
    return sorted(names)


def age_days(manifest, now):
    when = manifest.get("last_full_bundle_date")
    if not when:
        return 0.0
    return (now - parse_iso(when)).total_seconds() / 86400
