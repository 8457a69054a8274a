"""`strongroom upload`: rclone copy, then a one-way check by hash, then (if asked) delete.

Nothing local is deleted until its remote copy has been checked. The check uses a hash both
sides have; when they share none, rclone reads the remote files back (--download), because
"hashes could not be checked" is not a pass.

An interrupted copy can leave a truncated file under its final remote name (rclone's local
backend writes in place). Each run records what it is sending in a journal; a rerun after a
killed run may replace, for those names only, a remote file shorter than the local one.
Everything else on the remote is never overwritten when --immutable is asked for. A remote
file with our exact bytes (by SHA-256) under another modification time (a run killed after
the copy, before its time was set) is already there: it is left as it is, not a conflict.
"""

import contextlib
import hashlib
import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..core import fsutil, s3api
from ..core.errors import StrongroomError
from ..core.remote import RCLONE_EXIT, Rclone, RemoteError, _tail

IMMUTABLE_MSG = "immutable file modified"
# what rclone says first for a remote file of the same size and hash whose time it may not
# set under --immutable; the same file's IMMUTABLE_MSG line follows, so it is that conflict
TIMESTAMP_MSG = "Timestamp mismatch between immutable objects"


def _files(src):
    """(base dir, [relative names], [skipped symlinks and specials]) for a file or a tree."""
    src = Path(src)
    if src.is_symlink() or not src.exists():
        raise StrongroomError(f"{src} does not exist (or is a symlink)")
    if src.is_file():
        return src.parent, [src.name], []
    names, skipped = [], []
    for rel, is_dir in fsutil.walk(src):  # no recursion over depth, links never followed
        if is_dir:
            continue
        path = src / rel
        (names if path.is_file() and not path.is_symlink() else skipped).append(rel)
    return src, sorted(names), sorted(skipped)


def _log(stderr):
    """rclone's --use-json-log lines, parsed; anything else kept as text."""
    out = []
    for line in stderr.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            if line.strip():
                out.append({"level": "notice", "msg": line.strip()})
    return out


def _workers():
    return max(2, os.cpu_count() or 2)


def _hash_all(base, names):
    """{name: sha256} of the local files, two (or one per core) at a time."""
    def one(name):
        try:
            return name, fsutil.sha256_file(base / name)
        except OSError:
            return name, None

    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        return dict(pool.map(one, names))


def _journal(journal_dir, dest):
    if not journal_dir:
        return None
    key = hashlib.sha256(dest.encode()).hexdigest()[:16]
    return Path(journal_dir) / f"upload-{key}.json"


class Upload:
    def __init__(self, rclone: Rclone, journal_dir=None, progress=None, ledger=None,
                 seal=None, lock=None):
        self.rclone = rclone
        self.journal_dir = journal_dir
        self.progress = progress or (lambda text: None)
        # a job's re-verification ledger (strongroom/reverify): every verified file goes in
        self.ledger = ledger
        # a job's encrypt_to (upload/seal.py): what can hold user content goes as X.age
        self.seal = seal
        # S3 Object Lock on what was proven (core/s3api.py); None: the running job's, if any
        self.lock = lock

    def _copy(self, base, dest, names, immutable, dry_run, own_check=False):
        listfile = self.rclone._listfile(names)
        try:
            proc = self.rclone.run("copy", str(base), dest, "--files-from-raw", listfile,
                                   "-v", "--use-json-log", "--stats", "0",
                                   *(["--immutable"] if immutable else []),
                                   # our SHA-256 of both sides follows: rclone's own MD5 of
                                   # both sides would only repeat it, weaker
                                   *(["--ignore-checksum"] if own_check else []),
                                   *(["--dry-run"] if dry_run else []), check=False)
        finally:
            os.unlink(listfile)
        log = _log(proc.stderr)
        copied = [e["object"] for e in log if e.get("object") and
                  str(e.get("msg", "")).startswith(("Copied", "Skipped copy as --dry-run"))]
        conflicts = sorted({e["object"] for e in log if e.get("object") and
                            IMMUTABLE_MSG in str(e.get("msg", ""))})

        def conflict_line(e):
            msg = str(e.get("msg", ""))
            return IMMUTABLE_MSG in msg or (TIMESTAMP_MSG in msg and e.get("object") in conflicts)

        errors = [f"{e['object']}: {e['msg']}" if e.get("object") else str(e.get("msg"))
                  for e in log if e.get("level") == "error" and not conflict_line(e)]
        # per-file failures other than conflicts (summaries like "Attempt 1/3 failed" name none)
        others = [e for e in log if e.get("level") == "error" and e.get("object")
                  and not conflict_line(e)]
        return proc.returncode, copied, conflicts, errors if others else [], proc.stderr

    def _remote_sizes(self, dest, names):
        listfile = self.rclone._listfile(names)
        try:
            # -R: names in subfolders too (the listfile keeps it to those names)
            proc = self.rclone.run("lsjson", dest, "-R", "--files-from-raw", listfile,
                                   "--no-mimetype", "--no-modtime", check=False)
        finally:
            os.unlink(listfile)
        try:
            return {e["Path"]: e["Size"] for e in json.loads(proc.stdout or "[]")}
        except (ValueError, KeyError, TypeError):
            return {}

    def check(self, base, dest, names):
        """Problems of a one-way check (empty: every file is on the remote, identical)."""
        local = self.rclone.local_path(dest)
        if local is not None:
            return self._check_local(_hash_all(base, names), Path(local), names), "hash"
        return self._check_rclone(base, dest, names)

    @staticmethod
    def _check_local(ours, remote, names):
        """A local-folder remote: SHA-256 of its files with hashlib, against ours."""
        def compare(name):
            try:
                theirs = fsutil.sha256_file(remote / name)
            except FileNotFoundError:
                return f"{name}: missing on the remote"
            except OSError as exc:
                return f"{name}: could not be checked ({exc.strerror})"
            return None if ours.get(name) == theirs else f"{name}: differs on the remote"

        with ThreadPoolExecutor(max_workers=_workers()) as pool:
            return [p for p in pool.map(compare, names) if p]

    def _same_content(self, dest, local, ours, names):
        """The names whose remote file has our SHA-256 (`ours`): read with hashlib from a
        local-folder remote, else as the remote reports it or by reading it back. Anything
        that cannot be read or hashed counts as other content."""
        if local is not None:
            theirs = {}
            for name in names:
                with contextlib.suppress(OSError):
                    theirs[name] = fsutil.sha256_file(Path(local) / name)
        else:
            try:
                theirs = self.rclone.sha256s(dest, names)
            except RemoteError:
                theirs = {}
        return {n for n in names if ours.get(n) and theirs.get(n) == ours[n]}

    def _check_rclone(self, base, dest, names):
        def run(download):
            fd, combined = tempfile.mkstemp(suffix=".check")
            os.close(fd)
            listfile = self.rclone._listfile(names)
            try:
                proc = self.rclone.run("check", str(base), dest, "--one-way",
                                       "--files-from-raw", listfile, "--combined", combined,
                                       *(["--download"] if download else []), check=False)
                lines = Path(combined).read_text(encoding="utf-8").splitlines()
            finally:
                os.unlink(listfile)
                os.unlink(combined)
            return proc, lines

        proc, lines = run(False)
        how = "hash"
        if "hashes could not be checked" in proc.stderr or "No common hash" in proc.stderr:
            self.progress("the two sides share no hash: reading the remote copy back")
            proc, lines = run(True)
            how = "download"
        words = {"+": "missing on the remote", "*": "differs on the remote",
                 "!": "could not be checked"}
        problems = [f"{line[2:]}: {words[line[0]]}" for line in lines if line[:1] in words]
        if proc.returncode not in (0, 1) or (proc.returncode == 1 and not problems):
            meaning = RCLONE_EXIT.get(proc.returncode, "unknown error")
            problems.append(f"rclone check failed (exit {proc.returncode}: {meaning}): "
                            f"{_tail(proc.stderr, 3)}")
        if "hashes could not be checked" in proc.stderr:
            problems.append("hashes could not be checked")
        return problems, how

    def run(self, src, dest, immutable=False, delete_local=False, dry_run=False, only=None):
        """Upload SRC (a file or a tree; `only`: just these names under the tree)."""
        started = time.monotonic()
        base, names, skipped = _files(src)
        if only is not None:
            missing = sorted(set(only) - set(names))
            if missing:
                raise StrongroomError(f"not in {src}: {', '.join(missing[:5])}")
            names, skipped = sorted(only), []
        sizes = {n: (base / n).stat().st_size for n in names}
        stamps = {n: (base / n).stat().st_mtime_ns for n in names}
        out = {"src": str(src), "dest": dest, "files": len(names), "bytes": sum(sizes.values()),
               "skipped": skipped, "dry_run": dry_run, "transferred": [], "bytes_moved": 0,
               "verified_by": None, "deleted": [], "kept": [], "changed": False}
        if not names:
            out["message"] = f"nothing to upload in {src}"
            return out
        if self.seal is not None:
            return self.seal.send(self, src, dest, base, names, skipped, immutable,
                                  delete_local, dry_run)
        journal = _journal(self.journal_dir, dest)
        interrupted = set()
        if journal and journal.exists() and not dry_run:
            try:
                interrupted = set(json.loads(journal.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                interrupted = set()
        if journal and not dry_run:
            journal.parent.mkdir(parents=True, exist_ok=True)
            fsutil.atomic_write_json(journal, sorted(set(names) | interrupted))
        try:
            return self._send(src, dest, base, names, sizes, stamps, out, interrupted,
                              immutable, delete_local, dry_run, journal, started)
        except Exception:
            # a run that ends here (not a killed one) leaves no partial file of ours behind:
            # rclone removes a failed transfer. Forget the journal, so that a conflict with
            # someone else's file is never mistaken for our leftover next time.
            if journal and not dry_run:
                journal.unlink(missing_ok=True)
            raise

    def _send(self, src, dest, base, names, sizes, stamps, out, interrupted, immutable,
              delete_local, dry_run, journal, started):
        self.progress(f"copying {len(names)} file(s) to {dest}")
        local = None if dry_run else self.rclone.local_path(dest)
        hashing = None
        if local is not None:  # our side's hashes are taken while rclone copies
            hashing = ThreadPoolExecutor(max_workers=1)
            our_sums = hashing.submit(_hash_all, base, names)
        try:
            rc, copied, conflicts, errors, stderr = self._copy(
                base, dest, names, immutable, dry_run, own_check=local is not None)
        finally:
            if hashing:
                hashing.shutdown(wait=False)
        if conflicts:
            # our bytes under another time: there already, by hash (nothing on the remote is
            # touched, its time included); only other content is a conflict
            ours = our_sums.result() if hashing else _hash_all(base, conflicts)
            same = self._same_content(dest, local, ours, conflicts)
            if same:
                self.progress(f"{len(same)} file(s) already on {dest} with the same content")
                conflicts = [n for n in conflicts if n not in same]
                if not conflicts and not errors:  # the copy failed only on those
                    rc = 0
        if conflicts and interrupted:
            remote = self._remote_sizes(dest, conflicts)
            partial = [n for n in conflicts if n in interrupted and remote.get(n, -1) < sizes[n]]
            if partial:  # our own truncated leftovers: send them again, without --immutable
                self.progress(f"replacing {len(partial)} file(s) a killed upload left partial")
                rc2, again, _, errors2, stderr = self._copy(base, dest, partial, False, False,
                                                            own_check=local is not None)
                conflicts = [n for n in conflicts if n not in partial]
                if not conflicts and not errors:  # the first run failed only on those
                    rc = rc2
                copied += again
                errors += errors2
        if conflicts:
            raise RemoteError(
                f"{len(conflicts)} file(s) already on {dest} with other content; --immutable "
                "never overwrites them: " + ", ".join(conflicts[:10]))
        if rc != 0:
            meaning = RCLONE_EXIT.get(rc, "unknown error")
            detail = "; ".join(errors[-3:]) or _tail(stderr, 3)
            raise RemoteError(f"rclone copy to {dest} failed (exit {rc}: {meaning}): {detail}")
        out["transferred"] = sorted(set(copied))
        out["bytes_moved"] = sum(sizes.get(n, 0) for n in out["transferred"])
        out["changed"] = bool(out["transferred"])
        if dry_run:
            out["message"] = f"would copy {len(out['transferred'])} of {len(names)} file(s)"
            return out
        self.progress(f"checking {len(names)} file(s) on {dest}")
        if local is not None:
            problems, how = self._check_local(our_sums.result(), Path(local), names), "hash"
        else:
            problems, how = self.check(base, dest, names)
        if problems:
            raise RemoteError(f"remote copy on {dest} failed verification, nothing local "
                              "deleted: " + "; ".join(problems[:10]))
        out["verified_by"] = how
        if self.ledger is not None:
            sums = our_sums.result() if hashing else _hash_all(base, names)
            self.ledger.record(dest, {n: (sizes[n], sums[n]) for n in names if sums.get(n)})
        if journal:
            journal.unlink(missing_ok=True)
        lock = self.lock or s3api.active()
        if lock is not None:  # proven first; a copy that cannot be locked keeps the local one
            try:
                out["lock"] = lock.apply(self.rclone, dest, names, set(out["transferred"]))
            except StrongroomError as exc:
                raise RemoteError(f"remote copy on {dest} verified but not locked, nothing "
                                  f"local deleted: {exc}") from None
        if delete_local:
            self._delete(base, src, names, sizes, stamps, out)
        out["seconds"] = round(time.monotonic() - started, 3)
        out["message"] = (f"{len(out['transferred'])} of {len(names)} file(s) copied "
                          f"({out['bytes_moved']} bytes), all {len(names)} verified by {how}"
                          + (f", {len(out['deleted'])} deleted locally" if delete_local else ""))
        return out

    @staticmethod
    def _delete(base, src, names, sizes, stamps, out):
        for n in names:
            path = base / n
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            if st.st_size != sizes[n] or st.st_mtime_ns != stamps[n]:
                out["kept"].append(n)  # changed since it was checked: not what the remote has
                continue
            path.unlink()
            out["deleted"].append(n)
        if Path(src).is_dir():
            folders = [rel for rel, is_dir in fsutil.walk(src) if is_dir]
            for rel in sorted(folders, key=lambda r: r.count("/"), reverse=True) + [""]:
                with contextlib.suppress(OSError):  # not empty: something new arrived
                    os.rmdir(Path(src) / rel)
