"""Reading a job's remote objects back: one listing, then SHA-256 by the remote's own hash
where it has one (rclone's local backend) or by downloading and hashing (S3, which has no
SHA-256 in rclone)."""

import json
import os

from ..core import remote
from ..core.remote import RCLONE_EXIT, RemoteError, _tail

HASH = "hash"
DOWNLOAD = "download"


def _failure(what, target, proc):
    meaning = RCLONE_EXIT.get(proc.returncode, "unknown error")
    return RemoteError(f"cannot {what} {target} (rclone exit {proc.returncode}: {meaning}): "
                       f"{_tail(proc.stderr, 3)}")


def listing(rclone, root, scope, tolerate_missing):
    """{path under root: size} of every file under root/scope. A folder that is not there
    is an empty listing only when `tolerate_missing` (nothing was ever put there); else the
    remote is unreachable or gone, and that is an error, not a deletion of every object."""
    target = remote.join(root, scope)
    proc = rclone.run("lsjson", "-R", "--files-only", "--no-mimetype", "--no-modtime",
                      target, check=False)
    if proc.returncode == 3 and tolerate_missing:
        return {}
    if proc.returncode != 0:
        raise _failure("list", target, proc)
    try:
        entries = json.loads(proc.stdout or "[]")
        lead = f"{scope}/" if scope else ""
        return {lead + e["Path"]: e["Size"] for e in entries
                if isinstance(e.get("Path"), str) and isinstance(e.get("Size"), int)}
    except (ValueError, TypeError, AttributeError, KeyError):
        raise RemoteError(f"cannot list {target}: rclone lsjson printed no JSON listing") \
            from None


def hashes(rclone, root, names, method=None):
    """({name: sha256} of the names found, method). method None: the remote's own hash,
    else (when it has no SHA-256) by download; a name absent from the result was not on
    the remote."""
    listfile = rclone._listfile(names)
    try:
        proc = None
        if method in (None, HASH):
            proc = rclone.run("hashsum", "sha256", root, "--files-from-raw", listfile,
                              check=False)
            if proc.returncode != 0 and method is None and "hash" in proc.stderr.lower():
                method = DOWNLOAD
            else:
                method = HASH
        if method == DOWNLOAD:
            proc = rclone.run("hashsum", "sha256", "--download", root, "--files-from-raw",
                              listfile, check=False)
    finally:
        os.unlink(listfile)
    if proc.returncode != 0:
        raise _failure("read hashes from", root, proc)
    found = {}
    for line in proc.stdout.splitlines():
        digest, sep, name = line.partition("  ")
        digest = digest.strip().lower()
        if sep and len(digest) == 64 and set(digest) <= set("0123456789abcdef"):
            found[name] = digest
    return found, method


def move_aside(rclone, root, name, aside):
    """Rename a damaged object; the bytes stay on the remote as evidence."""
    proc = rclone.run("moveto", remote.join(root, name), remote.join(root, aside),
                      check=False)
    if proc.returncode != 0:
        raise _failure(f"move {name} aside on", root, proc)


def put(rclone, local_file, root, name):
    proc = rclone.run("copyto", str(local_file), remote.join(root, name), check=False)
    if proc.returncode != 0:
        raise _failure(f"upload {name} to", root, proc)
