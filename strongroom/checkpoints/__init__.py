"""Checkpoints of work in progress: what git has not been told about yet, every 15 minutes.

A checkpoint is <dest>/progress/YYYY/MM/DD/ckpt-YYYYmmddTHHMMSSZ (UTC):

  files/           every changed and untracked (not ignored) file, paths preserved
  changes.patch    `git diff --binary HEAD`: the tracked changes, for `git apply`
  CHECKPOINT.json  head, branch, files with sizes, deleted paths, symlinks, what was skipped
  SHA256SUMS       everything above; `sha256sum -c --strict` passes inside the folder

It is built under <dest>/progress/.tmp-* and renamed into its day folder only when
complete. A work tree with nothing new since the last checkpoint makes no checkpoint, so
a tree left dirty over a weekend does not fill the disk with copies of the same edit.
"""

import hashlib
import json
import os
import shlex
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .. import manifest
from ..core import fsutil
from ..core.errors import EmptySource, StrongroomError
from ..core.gitcmd import git

PROGRESS = "progress"
LAST = ".last.json"  # the newest checkpoint's name and fingerprint
SUMS = "SHA256SUMS"
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"


def job_default(key):
    from ..jobs.schema import default  # the job schema is where a checkpoint job's defaults live

    return default("checkpoint", key)


def _default_bytes(key):
    from ..core.sizes import parse_size

    return parse_size(job_default(key))


MAX_FILE_DEFAULT = _default_bytes("max_file_size")


class CheckpointError(StrongroomError):
    pass


def _is_empty_dir(path):
    try:
        if not path.is_dir():
            return False
        with os.scandir(path) as entries:
            return next(entries, None) is None
    except OSError:
        return False


def _toplevel(source):
    if _is_empty_dir(Path(source)):  # checked first: an enclosing repository is not it
        raise EmptySource(f"nothing to checkpoint: {source} is empty; clone (or git init) the "
                          "repository whose uncommitted work to checkpoint there, or set the "
                          "job's options.source to its work tree")
    proc = git(source, "rev-parse", "--show-toplevel", check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise CheckpointError(f"{source} is not inside a git work tree: a checkpoint saves "
                              "what git has not committed yet (for any folder, use "
                              "`strongroom backup now`)")
    return Path(proc.stdout.strip())


def _z(text):
    return [p for p in text.split("\0") if p]


def _changes(top):
    """(head or None, branch, {path: status}, deleted paths) relative to the work tree."""
    head = git(top, "rev-parse", "--verify", "-q", "HEAD", check=False).stdout.strip() or None
    branch = git(top, "symbolic-ref", "-q", "--short", "HEAD", check=False).stdout.strip()
    base = head or EMPTY_TREE
    fields = _z(git(top, "diff", "--name-status", "-z", "--no-renames", base).stdout)
    changed, deleted = {}, []
    for status, path in zip(fields[0::2], fields[1::2], strict=True):
        if status.startswith("D"):
            deleted.append(path)
        else:
            changed[path] = "modified" if head else "added"
    for path in _z(git(top, "ls-files", "-z", "--others", "--exclude-standard").stdout):
        changed[path] = "untracked"
    return head, branch or None, changed, sorted(deleted)



def _new_name(progress, now):
    name = "ckpt-" + now.strftime("%Y%m%dT%H%M%SZ")
    day = progress / now.strftime("%Y/%m/%d")
    final, n = day / name, 1
    while final.exists():  # two checkpoints in one second: keep both
        n += 1
        final = day / f"{name}-{n}"
    return final


def _read_last(progress):
    try:
        return json.loads((progress / LAST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def save(source, dest, max_file_size=MAX_FILE_DEFAULT, now=None):
    """Take a checkpoint (or say why none was needed). Returns a report dict."""
    started = time.monotonic()
    top = _toplevel(source)
    dest = Path(dest).absolute()
    progress = dest / PROGRESS
    progress.mkdir(parents=True, exist_ok=True)
    fsutil.clean_stale_temps(progress)
    head, branch, changed, deleted = _changes(top)
    inside = dest.relative_to(top).as_posix() + "/" if dest.is_relative_to(top) else None
    if inside:  # a destination inside the work tree is never its own input
        changed = {p: s for p, s in changed.items() if not (p + "/").startswith(inside)}
    report = {"source": str(top), "head": head, "branch": branch, "saved": False,
              "files": [], "deleted": deleted, "symlinks": {}, "skipped": [], "vanished": []}
    if not changed and not deleted:
        report["reason"] = (f"nothing to save: the work tree matches {head[:12]}"
                            if head else "nothing to save: the repository is empty")
        return report
    now = now or datetime.now(UTC)
    tmp = progress / f"{fsutil.TEMP_PREFIX}ckpt.{os.getpid()}"
    fsutil.rmtree_quiet(tmp)
    tmp.mkdir(mode=0o700)  # copies of work in progress: the owner's only
    sums = {}
    try:
        for rel, status in sorted(changed.items()):
            src = top / rel
            try:
                st = os.lstat(src)
            except FileNotFoundError:
                report["vanished"].append(rel)
                continue
            if os.path.islink(src):
                report["symlinks"][rel] = os.readlink(src)
            elif not os.path.isfile(src):
                continue  # a submodule or other non-file: git records it, we cannot copy it
            elif st.st_size > max_file_size:
                report["skipped"].append({"path": rel, "bytes": st.st_size})
            else:
                try:
                    sums[f"files/{rel}"] = fsutil.copy_hashing(src, tmp / "files" / rel)
                except FileNotFoundError:
                    report["vanished"].append(rel)
                    continue
                report["files"].append({"path": rel, "status": status,
                                        "bytes": (tmp / "files" / rel).stat().st_size})
        patch = git(top, "diff", "--binary", "--no-color", "--no-ext-diff",
                    head or EMPTY_TREE, binary=True).stdout
        (tmp / "changes.patch").write_bytes(patch)
        sums["changes.patch"] = hashlib.sha256(patch).hexdigest()
        fingerprint = hashlib.sha256(json.dumps(
            [head, sorted(sums.items()), deleted, report["symlinks"],
             report["skipped"]], sort_keys=True).encode()).hexdigest()
        last = _read_last(progress)
        if last.get("fingerprint") == fingerprint and (dest / last.get("path", "-")).is_dir():
            fsutil.rmtree(tmp)
            report["reason"] = f"nothing new since {last['name']}"
            report["files"] = []
            return report
        final = _new_name(progress, now)
        report.update(saved=True, name=final.name, created=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                      fingerprint=fingerprint, bytes=sum(f["bytes"] for f in report["files"]))
        meta = json.dumps(report, indent=2, sort_keys=True) + "\n"
        (tmp / "CHECKPOINT.json").write_text(meta, encoding="utf-8")
        sums["CHECKPOINT.json"] = hashlib.sha256(meta.encode()).hexdigest()
        (tmp / SUMS).write_bytes(manifest.sha256sum_lines(
            {"checksums": {k: {"sha256": v} for k, v in sums.items()}}).encode(
            "utf-8", "surrogateescape"))  # a file name need not be UTF-8
        for rel, is_dir in fsutil.walk(tmp):
            if not is_dir:
                fsutil.fsync_file(tmp / rel)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.rename(tmp, final)
        fsutil.fsync_dir(final.parent)
    except BaseException:
        fsutil.rmtree_quiet(tmp)
        raise
    rel_path = final.relative_to(dest).as_posix()
    fsutil.atomic_write_json(progress / LAST, {"name": final.name, "path": rel_path,
                                               "fingerprint": fingerprint})
    report["path"] = str(final)
    report["seconds"] = round(time.monotonic() - started, 3)
    return report


def _parse(name):
    try:
        return datetime.strptime(name[5:21], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def _seq(name):
    """The n of ckpt-<time>-n (1 without it): the order of checkpoints of one second,
    which a sort by name gets wrong from the tenth on (-10 before -2)."""
    tail = name[21:]
    return int(tail[1:]) if tail[:1] == "-" and tail[1:].isdigit() else 1


def checkpoints(dest):
    """[(created, folder)] oldest first; only names a checkpoint can have."""
    out = []
    for folder in (Path(dest) / PROGRESS).glob("[0-9][0-9][0-9][0-9]/[0-9][0-9]/[0-9][0-9]/ckpt-*"):
        created = _parse(folder.name)
        if created and folder.is_dir():
            out.append((created, folder))
    return sorted(out, key=lambda cf: (cf[0], _seq(cf[1].name), cf[1]))


def list_checkpoints(dest):
    rows = []
    for created, folder in checkpoints(dest):
        try:
            meta = json.loads((folder / "CHECKPOINT.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
        rows.append({"name": folder.name, "path": str(folder),
                     "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
                     "head": meta.get("head"), "files": len(meta.get("files", [])),
                     "deleted": len(meta.get("deleted", [])), "bytes": meta.get("bytes", 0)})
    return rows


def _in_use_of(folder):
    """(folder whose .in-use/ marks it, name): the progress/ folder above its day folder."""
    folder = Path(folder)
    return folder.parents[3] if len(folder.parents) > 3 else folder.parent, folder.name


def verify(folder):
    """Problems found by re-reading a checkpoint against its SHA256SUMS (empty: intact).
    Marked in use while it reads (lock.reading): a prune meanwhile keeps it, rather than
    have every file of it read as missing."""
    from ..core.lock import reading

    with reading(*_in_use_of(folder), by="verification"):
        return _verify(folder)


def _verify(folder):
    from ..snapshots import read_sums

    folder = Path(folder)
    try:
        sums = read_sums(folder)
    except StrongroomError as exc:
        return [str(exc)]
    problems = []
    for rel, digest in sorted(sums.items()):
        try:
            if fsutil.sha256_file(folder / rel) != digest:
                problems.append(f"{rel}: checksum differs")
        except FileNotFoundError:
            problems.append(f"{rel}: missing")
    present = {rel for rel, is_dir in fsutil.walk(folder) if not is_dir}
    problems += [f"{rel}: not listed in {SUMS}" for rel in sorted(present - set(sums) - {SUMS})]
    return problems


def prune(dest, keep_days, now=None):
    """Delete checkpoints older than keep_days (never the newest); empty day folders go too.
    One a verification is reading is kept, and named in `in_use` (there only when one was).
    """
    from ..core.lock import Deleting

    now = now or datetime.now(UTC)
    cutoff = now - timedelta(days=keep_days)
    found = checkpoints(dest)
    # The newest by name and the last one saved: when the clock was behind at that save,
    # its name looks old, yet it holds the latest work (and a tree unchanged since makes
    # no newer one).
    last = _read_last(Path(dest) / PROGRESS)
    last = last.get("path") if isinstance(last, dict) else None
    deleted, busy = [], {}
    for created, folder in found[:-1]:
        if created < cutoff and folder.relative_to(dest).as_posix() != last:
            # one being read is kept this time, and goes on a later run
            claim = Deleting(*_in_use_of(folder))
            if not claim.acquire():
                busy[folder.name] = claim.message
                continue
            try:
                fsutil.rmtree(folder)
            finally:
                claim.release()
            deleted.append(folder.name)
            for parent in (folder.parent, folder.parent.parent, folder.parent.parent.parent):
                try:
                    parent.rmdir()
                except OSError:
                    break
    out = {"deleted": deleted, "kept": len(found) - len(deleted)}
    if busy:  # only then: the result keeps the shape it has always had
        out["in_use"] = busy
    return out


def apply_hint(folder):
    """How to put a checkpoint back, for people reading the CLI's output."""
    return (f"git apply {shlex.quote(str(Path(folder) / 'changes.patch'))} puts back the "
            f"tracked changes; {Path(folder) / 'files'} holds every changed and untracked file")
