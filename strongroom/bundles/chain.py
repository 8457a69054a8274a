"""The per-repository chain manifest (bundle-manifest.json) and the files it names.

Format, kept close to the original CloudSync one so its users recognise it:
{version, repository, source, bare, chain_id, bundles[{type, filename, timestamp, size,
sha256, refs_file, refs_sha256, parent, commit}], incremental_count, last_full_bundle_date,
critical[{filename, sha256, size, files, digest, timestamp}], retired[...]}.
`type` is full, incremental or refs (a ref moved back or was deleted: no new objects, so
no bundle, only a ref manifest).
"""

import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path

from ..core import fsutil, safeio
from ..core.errors import StrongroomError

MANIFEST = "bundle-manifest.json"
REMOTE_STATE = "remote-state.json"
RETIRED_DIR = ".retired"
VERSION = 1
# Every file a manifest names is one we named: a plain file name in the repository's folder.
FILE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


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


def checksum(data):
    """The manifest's own SHA-256, over its content without this field: a changed hash
    inside it is then blamed on the manifest, not on the good bundle it names."""
    body = {k: v for k, v in data.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"),
                                     ensure_ascii=False).encode("utf-8")).hexdigest()


def _name(value, what):
    if not isinstance(value, str) or not FILE_NAME_RE.match(value):
        raise ChainInvalid(f"{MANIFEST} names {what} {value!r}, which is not a file name we "
                           "write (a damaged or hand-edited manifest)")
    return value


_HEX64 = re.compile(r"^[0-9a-f]{64}$")
ENTRY_TYPES = ("full", "incremental", "refs")


def _shape(ok, what):
    if not ok:
        raise ChainInvalid(f"{MANIFEST} is malformed: {what} (a damaged or hand-edited "
                           "manifest)")


def _is_size(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_entry(e, first):
    _shape(isinstance(e, dict), "a bundle entry is not an object")
    _shape(e.get("type") in ENTRY_TYPES, f"a bundle entry has type {e.get('type')!r}")
    _shape(not first or e["type"] == "full", "it does not start with a full bundle")
    if e["type"] == "refs":
        _shape(e.get("filename") is None, "a refs-only entry names a bundle")
    else:
        _name(e.get("filename"), "a bundle")
        _shape(isinstance(e.get("sha256"), str) and _HEX64.match(e["sha256"]) and
               _is_size(e.get("size")), f"bundle {e['filename']} has no SHA-256 or size")
    _name(e.get("refs_file"), "a ref manifest")
    _shape(isinstance(e.get("refs_sha256"), str) and _HEX64.match(e["refs_sha256"]) and
           _is_size(e.get("refs_size")), f"ref manifest {e['refs_file']} has no SHA-256 "
           "or size")


def _check_names(data):
    """Every entry's shape, file name and retired path: a path read from our own metadata
    is as hostile as an archive member until checked, and a missing field must be an
    error with a message, never a traceback."""
    for i, e in enumerate(data["bundles"]):
        _check_entry(e, i == 0)
    critical = data.get("critical", [])
    _shape(isinstance(critical, list), "'critical' is not a list")
    for c in critical:
        _shape(isinstance(c, dict), "a critical entry is not an object")
        if c.get("filename") is not None:
            _name(c["filename"], "a critical-files pack")
            _shape(isinstance(c.get("sha256"), str) and _HEX64.match(c["sha256"]) and
                   _is_size(c.get("size")), f"pack {c['filename']} has no SHA-256 or size")
        _shape(isinstance(c.get("files", []), list), "a critical entry's files are not a list")
    retired = data.get("retired", [])
    _shape(isinstance(retired, list), "'retired' is not a list")
    for r in retired:
        path = r.get("path") if isinstance(r, dict) else None
        head, _, tail = (path if isinstance(path, str) else "").partition("/")
        if head != RETIRED_DIR or "/" in tail:
            raise ChainInvalid(f"{MANIFEST} names retired chain path {path!r}, which is not "
                               f"inside {RETIRED_DIR}/")
        _name(tail, "a retired chain")
    _shape(_is_size(data.get("incremental_count", 0)), "'incremental_count' is not a count")
    _shape(isinstance(data.get("bare", False), bool), "'bare' is not true or false")
    when = data.get("last_full_bundle_date")
    _shape(when is None or isinstance(when, str), "'last_full_bundle_date' is not a date")


def load(repo_dir, check_files=True):
    """The manifest, checked for shape, its own checksum, every name it holds, and
    (cheaply: size) for the files it names."""
    path = Path(repo_dir) / MANIFEST
    if not path.exists() and not path.is_symlink():
        raise ChainInvalid(f"no {MANIFEST}")
    try:  # a regular file of the store: never a link out, a FIFO or a device
        data = safeio.load_json(safeio.read_regular(path), MANIFEST)
    except (OSError, ValueError, safeio.UnsafePath) as exc:
        raise ChainInvalid(f"{MANIFEST} unreadable: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise ChainInvalid(f"{MANIFEST} has an unknown format or version")
    if "checksum" in data and data["checksum"] != checksum(data):
        raise ChainInvalid(f"{MANIFEST} is damaged: its own checksum does not match its "
                           "content, so none of the hashes in it can be trusted")
    entries = data.get("bundles")
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict) \
            or entries[0].get("type") != "full":
        raise ChainInvalid(f"{MANIFEST} does not start with a full bundle")
    _check_names(data)
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
    manifest["checksum"] = checksum(manifest)
    fsutil.atomic_write_json(Path(repo_dir) / MANIFEST, manifest)


def last_refs_entry(manifest):
    return manifest["bundles"][-1]


def chain_tips(manifest, repo_dir):
    """Every object a ref (or a stash entry) pointed at anywhere in this chain: all of
    them are in its bundles."""
    tips = set()
    for e in manifest["bundles"]:
        data = read_refs_file(Path(repo_dir) / e["refs_file"])
        tips.update(data["refs"].values())
        tips.update(sha for sha, _ in stash_entries(data))
    return tips


_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_BAD_REF = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|/\.|\.lock(?:/|$)")


def _ref_ok(name):
    return isinstance(name, str) and name.startswith("refs/") and not _BAD_REF.search(name) \
        and not name.endswith(("/", "."))


def read_refs_file(path):
    """A ref manifest, with every name and id checked: they become git arguments."""
    try:
        data = safeio.load_json(safeio.read_regular(path), f"ref manifest {Path(path).name}")
    except (OSError, ValueError, safeio.UnsafePath) as exc:
        raise ChainInvalid(f"ref manifest {Path(path).name} unreadable: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("refs"), dict):
        raise ChainInvalid(f"ref manifest {Path(path).name} has no refs")
    if not isinstance(data.get("symrefs", {}), dict):
        raise ChainInvalid(f"ref manifest {Path(path).name} has malformed symrefs")
    bad = [n for n, sha in data["refs"].items() if not _ref_ok(n) or not isinstance(sha, str)
           or not _SHA.match(sha)]
    bad += [n for n, t in (data.get("symrefs") or {}).items() if not _ref_ok(n)
            or not _ref_ok(t)]
    head = data.get("head")
    if head is not None and not (isinstance(head, str) and (
            _SHA.match(head) or (head.startswith("ref: ") and _ref_ok(head[5:])))):
        bad.append("HEAD")
    if bad:
        raise ChainInvalid(f"ref manifest {Path(path).name} holds names or ids git would "
                           f"not write: {', '.join(map(repr, bad[:3]))}")
    return data


def stash_entries(refs_data):
    """[sha, message] of every stash entry a ref manifest recorded (newest first)."""
    out = []
    items = refs_data.get("stash") or []
    if not isinstance(items, list):
        raise ChainInvalid("ref manifest has a malformed stash list")
    for item in items:
        if (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
                and _SHA.match(item[0]) and isinstance(item[1], str)):
            out.append([item[0], item[1].replace("\n", " ")[:500]])
        else:
            raise ChainInvalid(f"ref manifest has a malformed stash entry: {item!r:.80}")
    return out


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


def repo_name(name):
    """A repository name as typed or read back: a relative path inside the store."""
    from ..core.safeio import UnsafePath, clean_relpath

    try:
        clean = clean_relpath(name, "repository name")
    except UnsafePath as exc:
        raise StrongroomError(f"{exc} (names are paths relative to the root, as `bundle "
                              "list` shows them)") from None
    if RETIRED_DIR in clean.split("/"):
        raise StrongroomError(f"repository name {name!r} points into a retired chain")
    return clean


def repo_dir(store, name):
    """The folder of repository `name` in the store, every component a real directory
    (a linked folder would carry reads, and fetches from a remote, out of the store)."""
    name = repo_name(name)
    from ..core.safeio import Root, UnsafePath

    try:
        with Root(store) as root:
            root.dir_fd(name)
    except FileNotFoundError:
        pass  # not there yet: a restore from the remote makes it
    except UnsafePath as exc:
        raise StrongroomError(f"refusing the store's folder for {name}: {exc}") from None
    return Path(store) / name


def unmanifested(store):
    """Folders holding bundles or ref manifests but no chain manifest: never 'nothing to
    verify', their bundles cannot be checked or put in order without it."""
    store = Path(store)
    if not store.is_dir():
        return []
    out = set()
    for rel, is_dir in fsutil.walk(store):
        parent, _, leaf = rel.rpartition("/")
        if is_dir or not parent or leaf.startswith(".") or RETIRED_DIR in parent.split("/"):
            continue
        if leaf.endswith((".bundle", ".refs.json")) and not (store / parent / MANIFEST).exists():
            out.add(parent)
    return sorted(out)


def store_repositories(store):
    """Names of every repository the store holds a chain for."""
    store = Path(store)
    names = []
    for rel, is_dir in fsutil.walk(store):
        parent, _, leaf = rel.rpartition("/")
        if not is_dir and leaf == MANIFEST and parent and RETIRED_DIR not in parent.split("/"):
            names.append(parent)
    return sorted(names)


def age_days(manifest, now):
    when = manifest.get("last_full_bundle_date")
    if not when:
        return 0.0
    return (now - parse_iso(when)).total_seconds() / 86400
