"""Immutable snapshots of a project folder.

A snapshot is a folder <dest>/<id>, id = YYYYMMDD-HHMMSS-<short git sha | nogit> (UTC):

  MANIFEST.txt     who, where, which versions
  REPORT.json      counts, bytes, durations, databases, immutability
  LARGE_FILES.txt  files above the size threshold (what a push should not carry)
  critical/        the critical files, paths preserved
  db/              each SQLite database, copied with the online backup API and checked
  full.tar.zst     everything else (or full.tar.gz), default excludes honoured
  SHA256SUMS       every file above; `sha256sum -c --strict` passes inside the folder

It is built under a temporary name and renamed only when complete, then every file and
the folder get chattr +i (a +i folder alone still lets its files be rewritten). The
archive and its checksum come from one read of the tree: tar streams into zstd, whose
output is hashed on its way to disk.
"""

import contextlib
import json
import os
import platform
import re
import shutil
import socket
import stat
import subprocess
import tarfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from .. import __version__, manifest
from ..core import fsutil, safeio, sqlite
from ..core.errors import EmptySource, StrongroomError
from ..core.gitcmd import git

DEFAULT_EXCLUDES = ["node_modules/", "venv/", ".venv/", "__pycache__/", ".git/"]


def job_default(key):
    from ..jobs.schema import default  # the job schema is where a snapshot job's defaults live

    return default("snapshot", key)


def _default_bytes(key):
    from ..core.sizes import parse_size

    return parse_size(job_default(key))


LARGE_DEFAULT = _default_bytes("large_threshold")
ID_RE = re.compile(r"^(\d{8}-\d{6})-([0-9a-f]{7,40}|nogit)$")
ARCHIVES = {"zst": "full.tar.zst", "gz": "full.tar.gz"}
COMPRESSORS = {"zst": ["zstd", "-q", "-3", "-T0", "-c"], "gz": ["gzip", "-6", "-c"]}
DECOMPRESSORS = {"zst": ["zstd", "-q", "-d", "-c"], "gz": ["gzip", "-d", "-c"]}
SUMS = "SHA256SUMS"
SUMS_MAX = 256 << 20  # 200,000 files make a SHA256SUMS of about 20 MB
STATE_DIR = ".strongroom"  # beside the snapshots: verification records (not immutable)
CHUNK = 1 << 20


class SnapshotError(StrongroomError):
    pass


# --- reading a snapshot folder ------------------------------------------------------------


def parse_id(name):
    m = ID_RE.match(name)
    if not m:
        return None
    return datetime.strptime(m.group(1), "%Y%m%d-%H%M%S").replace(tzinfo=UTC)


def snapshot_ids(dest):
    """Finished snapshots in dest, oldest first (temporary folders are not snapshots)."""
    try:
        names = [e.name for e in os.scandir(dest) if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []
    return sorted(n for n in names if parse_id(n))


def _folder(dest, snap_id):
    if not parse_id(snap_id):
        raise SnapshotError(f"{snap_id!r} is not a snapshot id (YYYYMMDD-HHMMSS-<sha|nogit>)")
    path = Path(dest) / snap_id
    if path.is_symlink():
        raise SnapshotError(f"{path} is a symlink, not a snapshot folder; refusing to read "
                            "through it")
    if not path.is_dir():
        raise SnapshotError(f"no snapshot {snap_id} in {dest}")
    return path


@contextlib.contextmanager
def reading(dest, snap_id, by="restore"):
    """The snapshot folder, marked in use for the block (lock.reading): a prune keeps it
    until the block is done. The id is checked before any mark is made for it, the folder
    looked for only once the mark is held (a prune may have deleted it just before)."""
    from ..core.lock import reading as mark

    if not parse_id(snap_id):
        _folder(dest, snap_id)  # says why
    with mark(dest, snap_id, by):
        yield _folder(dest, snap_id)


_SUM_LINE = re.compile(r"^(\\?)([0-9a-f]{64}) [ *](.+)$")


def read_sums(folder):
    """{relative path: sha256} from SHA256SUMS; a malformed line is an error, never skipped."""
    path = Path(folder) / SUMS
    try:  # a regular file of this folder only: never a link out, a FIFO or a device
        text = safeio.read_regular(path, SUMS_MAX).decode("utf-8", "surrogateescape")
    except FileNotFoundError:
        raise SnapshotError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, safeio.UnsafePath) as exc:
        raise SnapshotError(f"cannot read {path}: {exc}") from None
    sums = {}
    # one line per \n only: \r, \f, U+0085 and U+2028 are characters of a file name
    for n, line in enumerate(text.split("\n")[:-1] if text.endswith("\n") else
                             text.split("\n"), 1):
        m = _SUM_LINE.match(line)
        if not m:
            raise SnapshotError(f"{path} line {n} is malformed: {line[:80]!r}")
        name = m.group(3)
        if m.group(1):
            name = manifest.unescape_name(name)
            if name is None:
                raise SnapshotError(f"{path} line {n} has a malformed escape")
        if name.startswith("/") or ".." in Path(name).parts:
            raise SnapshotError(f"{path} line {n} names a path outside the snapshot: {name!r}")
        try:
            clean = safeio.clean_relpath(name)
        except safeio.UnsafePath:
            clean = None
        if clean != name or name in sums:
            raise SnapshotError(f"{path} line {n} names {name!r}, which is not a path we "
                                "write (or is listed twice)")
        sums[name] = m.group(2)
    if not sums:
        raise SnapshotError(f"{path} lists no files")
    return sums


def _files_of(folder):
    return sorted(rel for rel, is_dir in fsutil.walk(folder) if not is_dir)


def immutability_of(folder):
    """'yes' when the folder and every file are +i, 'partial', or 'no'."""
    folder = Path(folder)
    files = [folder / r for r in _files_of(folder)]
    flags = [fsutil.has_flag(p, fsutil.IMMUTABLE) for p in [folder, *files]]
    return "yes" if all(flags) else "partial" if any(flags) else "no"


# --- building ----------------------------------------------------------------------------


class _HashingSink(threading.Thread):
    """Reads a compressor's output, hashing it on its way into the archive file.

    When the write fails (a full disk), it kills the compressor: otherwise the compressor
    blocks on a pipe nobody reads, tar blocks on the compressor, and the run hangs holding
    its lock."""

    def __init__(self, proc, out_path):
        super().__init__(daemon=True)
        self.proc, self.stream, self.out_path = proc, proc.stdout, out_path
        self.digest = None
        self.size = 0
        self.error = None

    def run(self):
        import hashlib

        h = hashlib.sha256()
        try:
            # the archive holds every file of the tree, .env included: owner only
            fd = os.open(self.out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                while chunk := self.stream.read(CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                    self.size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            self.digest = h.hexdigest()
        except OSError as exc:
            self.error = exc
            self.proc.kill()


def _walk_tree(source, selection, skip_dirs):
    """(relative path, DirEntry) for every directory, file and symlink the archive takes."""
    stack = [("", str(source))]
    while stack:
        rel_dir, path = stack.pop()
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError as exc:
            raise SnapshotError(f"cannot read {path}: {exc.strerror}") from None
        subdirs = []
        for entry in entries:
            rel = rel_dir + entry.name
            if entry.is_dir(follow_symlinks=False):
                if entry.path in skip_dirs or selection.prunes(rel_dir, entry.name):
                    continue
                yield rel, entry
                subdirs.append((rel + "/", entry.path))
            elif selection.covers(rel):
                yield rel, entry
        stack.extend(reversed(subdirs))


def _archive(source, out_path, fmt, selection, skip_dirs, skip_files, large_threshold):
    """Stream the tree into the compressor; returns counts, the archive digest, large files."""
    proc = subprocess.Popen(COMPRESSORS[fmt], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    sink = _HashingSink(proc, out_path)
    sink.start()
    counts = {"files": 0, "dirs": 0, "symlinks": 0, "bytes": 0}
    large, special = [], []
    try:
        with tarfile.open(fileobj=proc.stdin, mode="w|", format=tarfile.PAX_FORMAT,
                          copybufsize=CHUNK) as tar:
            for rel, entry in _walk_tree(source, selection, skip_dirs):
                if entry.path in skip_files:
                    continue
                try:
                    info = tar.gettarinfo(entry.path, arcname=rel)
                except OSError as exc:
                    raise SnapshotError(f"cannot read {entry.path}: {exc.strerror}") from None
                if info is None:  # sockets: runtime endpoints, nothing to keep
                    continue
                if info.ischr() or info.isblk() or info.isfifo():
                    # a restore refuses these as hostile: a backup that cannot restore is
                    # no backup, so they are left out here, and said so
                    special.append(rel)
                    continue
                if info.isreg():
                    try:
                        with open(entry.path, "rb") as fh:
                            tar.addfile(info, fh)
                    except OSError as exc:
                        raise SnapshotError(
                            f"cannot read {entry.path}: {exc.strerror}") from None
                    counts["files"] += 1
                    counts["bytes"] += info.size
                    if info.size > large_threshold:
                        large.append((info.size, rel))
                else:
                    tar.addfile(info)
                    if info.isdir():
                        counts["dirs"] += 1
                    elif info.issym():
                        counts["symlinks"] += 1
        proc.stdin.close()
    except BaseException as exc:
        proc.kill()
        proc.wait()
        sink.join()
        if sink.error:  # the real cause; tar only saw the compressor go away
            raise _write_error(out_path, sink.error) from None
        if isinstance(exc, BrokenPipeError):
            raise SnapshotError(f"{COMPRESSORS[fmt][0]} stopped while {out_path} was "
                                "written") from None
        raise
    rc = proc.wait()
    sink.join()
    if sink.error:
        raise _write_error(out_path, sink.error)
    if rc != 0:
        raise SnapshotError(f"{COMPRESSORS[fmt][0]} failed (exit {rc}) writing {out_path}")
    return counts, sink.digest, sink.size, large, special


def _write_error(path, exc):
    return SnapshotError(f"cannot write {path}: {exc.strerror or exc}")



def _short_sha(source):
    proc = git(source, "rev-parse", "--short=7", "HEAD", check=False)
    sha = proc.stdout.strip() if proc.returncode == 0 else ""
    return sha if re.fullmatch(r"[0-9a-f]{7,40}", sha) else "nogit"


def _tool_version(argv):
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
        return (proc.stdout or proc.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


def _new_id(dest, source):
    sha = _short_sha(source)
    for _ in range(3):  # two snapshots in one second: wait for the next one
        snap_id = datetime.now(UTC).strftime("%Y%m%d-%H%M%S") + "-" + sha
        if not (Path(dest) / snap_id).exists():
            return snap_id
        time.sleep(1.0 - (time.time() % 1.0) + 0.01)
    raise SnapshotError(f"{Path(dest) / snap_id} already exists")


def _resolve_dbs(source, dbs):
    out = []
    for db in dbs or []:
        path = Path(db) if Path(db).is_absolute() else Path(source) / db
        path = path.absolute()
        try:
            rel = path.relative_to(Path(source).absolute()).as_posix()
        except ValueError:
            rel = path.name  # outside the source: kept under its own name
        out.append((path, rel))
    return out


def create(source, dest, critical=(), dbs=(), exclude=(), immutable="warn", fmt="zst",
           large_threshold=LARGE_DEFAULT):
    """Take a snapshot; returns its report (as written to REPORT.json) plus `applied`."""
    started = time.monotonic()
    source, dest = Path(source).absolute(), Path(dest).absolute()
    if not source.is_dir():
        raise SnapshotError(f"source {source} is not a directory")
    if immutable not in ("require", "warn", "off"):
        raise SnapshotError(f"immutable must be require, warn or off, got {immutable!r}")
    if fmt not in ARCHIVES:
        raise SnapshotError(f"format must be zst or gz, got {fmt!r}")
    if shutil.which(COMPRESSORS[fmt][0]) is None:
        raise SnapshotError(f"{COMPRESSORS[fmt][0]} is not installed (needed for .{fmt})")
    dest.mkdir(parents=True, exist_ok=True)
    fsutil.clean_stale_temps(dest)
    supported, reason = (False, "immutability is off") if immutable == "off" else \
        fsutil.probe_immutable(dest)
    if immutable == "require" and not supported:
        raise SnapshotError(f"immutability is required but unavailable on {dest}: {reason}")
    databases = _resolve_dbs(source, dbs)
    for path, _ in databases:
        if not sqlite.is_database(path):
            raise SnapshotError(f"--db {path}: not a SQLite database (or missing)")
    snap_id = _new_id(dest, source)
    tmp = dest / f"{fsutil.TEMP_PREFIX}{snap_id}.{os.getpid()}"
    tmp.mkdir(mode=0o700)  # a snapshot holds .env files and keys: its owner's only
    sums, durations = {}, {}
    inside_source = dest.is_relative_to(source)
    try:
        # databases: backup API, integrity_check, never the raw file
        t0 = time.monotonic()
        db_reports = []
        for path, rel in databases:
            rep = sqlite.backup(path, tmp / "db" / rel)
            rep["copy"] = f"db/{rel}"
            db_reports.append(rep)
            sums[f"db/{rel}"] = fsutil.sha256_file(tmp / "db" / rel)
        durations["databases"] = round(time.monotonic() - t0, 3)
        # critical files: copied (owner-only) and hashed in one read, paths and modes kept
        t0 = time.monotonic()
        inside = [f"/{dest.relative_to(source).as_posix()}/"] if inside_source \
            else []  # a destination inside the source is never its own input
        crit_sel = manifest.Selection(list(critical),
                                      DEFAULT_EXCLUDES + list(exclude) + inside)
        critical_files = manifest.walk(source, crit_sel) if critical else []
        db_copies = {d["copy"][len("db/"):]: (tmp / d["copy"], d["journal_mode"])
                     for d in db_reports}
        crit_meta = _copy_critical(source, tmp, critical_files, db_copies, sums)
        crit_bytes = sum(m["size"] for m in crit_meta.values())
        durations["critical"] = round(time.monotonic() - t0, 3)
        # the full archive; the live databases (and their journals) are in db/ instead
        t0 = time.monotonic()
        skip_files = {str(p) + suffix for p, _ in databases
                      for suffix in ("", "-wal", "-shm", "-journal")}
        arch_sel = manifest.Selection([], DEFAULT_EXCLUDES + list(exclude))
        archive = ARCHIVES[fmt]
        counts, digest, arch_bytes, large, special = _archive(
            source, tmp / archive, fmt, arch_sel, {str(dest)}, skip_files, large_threshold)
        if not (counts["files"] or counts["symlinks"] or db_reports or critical_files):
            # an empty snapshot would only push a real one out of keep_last
            raise EmptySource(f"nothing to back up: {source} holds no files; put the files "
                              f"to snapshot in {source}, or set the job's options.source to "
                              "the folder that holds them")
        sums[archive] = digest
        durations["archive"] = round(time.monotonic() - t0, 3)
        large_text = "".join(f"{size}\t{rel}\n" for size, rel in sorted(large, reverse=True))
        _write(tmp / "LARGE_FILES.txt", large_text or "# none\n", sums)
        created = parse_id(snap_id).strftime("%Y-%m-%dT%H:%M:%SZ")
        meta = {
            "id": snap_id, "created": created, "host": socket.gethostname(),
            "user": _user(), "source": str(source), "dest": str(dest),
            "git_commit": snap_id.rsplit("-", 1)[1], "strongroom": __version__,
            "python": platform.python_version(), "sqlite": sqlite.sqlite3.sqlite_version,
            "compressor": _tool_version([COMPRESSORS[fmt][0], "--version"]),
            "format": archive, "critical_patterns": " ".join(critical) or "-",
            "excludes": " ".join(DEFAULT_EXCLUDES + list(exclude)),
        }
        _write(tmp / "MANIFEST.txt", "".join(f"{k}: {v}\n" for k, v in meta.items()), sums)
        durations["total"] = round(time.monotonic() - started, 3)
        report = {
            "id": snap_id, "created": created, "source": str(source),
            "counts": {"files": counts["files"], "dirs": counts["dirs"],
                       "symlinks": counts["symlinks"], "critical": len(critical_files),
                       "databases": len(db_reports), "large_files": len(large),
                       "special_skipped": len(special)},
            "special_skipped": special[:1000],
            "bytes": {"source": counts["bytes"], "archive": arch_bytes,
                      "critical": crit_bytes, "databases": sum(d["bytes"] for d in db_reports)},
            "durations_seconds": durations, "databases": db_reports,
            "critical": crit_meta, "source_mode": stat.S_IMODE(source.stat().st_mode),
            "large_threshold": large_threshold, "archive": archive,
            "immutability": {"policy": immutable, "supported": supported, "reason": reason},
        }
        _write(tmp / "REPORT.json", json.dumps(report, indent=2, sort_keys=True) + "\n", sums)
        lines = manifest.sha256sum_lines({"checksums": {k: {"sha256": v}
                                                        for k, v in sums.items()}})
        (tmp / SUMS).write_bytes(lines.encode("utf-8", "surrogateescape"))
        for rel, is_dir in fsutil.walk(tmp):
            if not is_dir:
                fsutil.fsync_file(tmp / rel)
        fsutil.fsync_dir(tmp)
        final = dest / snap_id
        os.rename(tmp, final)  # the only step that makes it a snapshot
        fsutil.fsync_dir(dest)
    except BaseException:
        fsutil.rmtree_quiet(tmp)
        raise
    report["path"] = str(final)
    report["applied"] = protect_snapshot(final) if supported else "no"
    warnings = []
    if supported and report["applied"] != "yes":
        warnings.append("the immutable flag could not be set on every file")
    elif not supported and immutable == "warn":
        warnings.append(f"snapshot is not immutable: {reason}")
    if special:
        warnings.append(f"{len(special)} FIFO(s) or device node(s) left out (e.g. "
                        f"{special[0]}): a restore would refuse them")
    if inside_source:
        warnings.append(
            f"the destination {dest} is inside the source {source}: it is left out of the "
            f"snapshot, and a full restore into {source} moves the whole folder aside, "
            "these snapshots with it (keep snapshots outside the folder they protect)")
    if warnings:
        report["warning"] = "; ".join(warnings)
    return report


def _copy_critical(source, tmp, rels, db_copies, sums):
    """Each critical file into tmp/critical/, 0600 (they are .env files and keys), its
    own mode and times recorded; {rel: {mode, size[, journal_mode]}}.

    A live SQLite database is copied through the backup API, never raw (a raw copy of a
    database in WAL mode can miss its newest pages), and its -wal/-shm/-journal files are
    inside that copy; one given with --db is the same consistent copy as db/."""
    dbs = {r for r in rels if sqlite.is_database(source / r)}
    journals = {r + j for r in dbs for j in ("-wal", "-shm", "-journal")}
    meta = {}
    for rel in rels:
        if rel in journals:
            continue
        src, out = source / rel, tmp / "critical" / rel
        try:
            st = os.stat(src)
        except FileNotFoundError:
            continue  # deleted while we walked
        entry = {"mode": stat.S_IMODE(st.st_mode)}
        if rel in dbs:
            if rel in db_copies:
                fsutil.makedirs(out.parent)
                digest = _copy_private(db_copies[rel][0], out)
                entry["journal_mode"] = db_copies[rel][1]
            else:
                rep = sqlite.backup(src, out)
                digest = fsutil.sha256_file(out)
                entry["journal_mode"] = rep["journal_mode"]
        else:
            fsutil.makedirs(out.parent)
            try:
                digest = _copy_private(src, out)
            except FileNotFoundError:
                continue
        entry["size"] = out.stat().st_size
        sums[f"critical/{rel}"] = digest
        meta[rel] = entry
    return meta


def _copy_private(src, dst):
    """Copy src to dst as 0600 with src's times; returns the SHA-256, in one read."""
    import hashlib

    h = hashlib.sha256()
    with open(src, "rb") as fi:
        st = os.fstat(fi.fileno())
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fo:
            while chunk := fi.read(CHUNK):
                h.update(chunk)
                fo.write(chunk)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
    return h.hexdigest()


def _write(path, text, sums):
    data = text.encode("utf-8")
    path.write_bytes(data)
    import hashlib

    sums[path.name] = hashlib.sha256(data).hexdigest()


def _user():
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (KeyError, ImportError):
        return str(os.getuid())


# --- immutability -----------------------------------------------------------------------


def protect_snapshot(folder):
    """+i on every file, then on every directory bottom-up, the folder last."""
    folder = Path(folder)
    try:
        paths = sorted((folder / rel for rel, _ in fsutil.walk(folder)),
                       key=lambda p: len(p.parts), reverse=True)
        for p in paths:
            if not p.is_symlink():
                fsutil.set_flag(p, fsutil.IMMUTABLE)
        fsutil.set_flag(folder, fsutil.IMMUTABLE)
    except OSError:
        return immutability_of(folder)
    return immutability_of(folder)


def unprotect(folder):
    """Lift +i (and +a) from the folder first, then from everything below it."""
    folder = Path(folder)
    for flag in (fsutil.IMMUTABLE, fsutil.APPEND_ONLY):
        try:
            fsutil.set_flag(folder, flag, on=False)
        except OSError as exc:
            if fsutil.has_flag(folder, flag):
                raise SnapshotError(f"cannot lift the flags of {folder}: {exc.strerror}") \
                    from None
    for p in sorted((folder / rel for rel, _ in fsutil.walk(folder)),
                    key=lambda p: len(p.parts)):
        if p.is_symlink():
            continue
        for flag in (fsutil.IMMUTABLE, fsutil.APPEND_ONLY):
            if fsutil.has_flag(p, flag):
                try:
                    fsutil.set_flag(p, flag, on=False)
                except OSError as exc:
                    raise SnapshotError(
                        f"cannot lift the flags of {p}: {exc.strerror}") from None


def protect(paths, append_only=False):
    """`backup protect`: +i (or +a for logs that may only grow) on files and trees."""
    flag = fsutil.APPEND_ONLY if append_only else fsutil.IMMUTABLE
    done = []
    for path in map(Path, paths):
        if not path.exists():
            raise SnapshotError(f"{path} does not exist")
        targets = [path]
        if path.is_dir():
            targets = sorted((path / rel for rel, _ in fsutil.walk(path)),
                             key=lambda p: len(p.parts), reverse=True) + [path]
        for p in targets:
            if p.is_symlink():
                continue
            try:
                fsutil.set_flag(p, flag)
            except OSError as exc:
                raise SnapshotError(f"cannot set chattr +{'a' if append_only else 'i'} on "
                                    f"{p}: {exc.strerror}") from None
            done.append(str(p))
    return done


# --- list, verify ----------------------------------------------------------------------


def _verified_path(dest):
    return Path(dest) / STATE_DIR / "verified.json"


def _verified(dest):
    try:
        data = safeio.load_json(safeio.read_regular(_verified_path(dest)), "verified.json")
    except (OSError, ValueError, safeio.UnsafePath):
        return {}
    return data if isinstance(data, dict) else {}


def list_snapshots(dest, now=None):
    now = now or datetime.now(UTC)
    verified = _verified(dest)
    rows = []
    for snap_id in snapshot_ids(dest):
        folder = Path(dest) / snap_id
        size = sum(os.lstat(folder / rel).st_size for rel, is_dir in fsutil.walk(folder)
                   if not is_dir)
        ver = verified.get(snap_id) or {}
        rows.append({"id": snap_id, "created": parse_id(snap_id).strftime("%Y-%m-%dT%H:%M:%SZ"),
                     "age_seconds": int((now - parse_id(snap_id)).total_seconds()),
                     "bytes": size, "immutable": immutability_of(folder),
                     "last_verified": ver.get("when"), "last_result": ver.get("result")})
    return rows


def _archive_readable(fh, fmt):
    """Decompress to the end and walk every tar member: a truncated archive fails here."""
    proc = subprocess.Popen(DECOMPRESSORS[fmt], stdin=fh, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    members = 0
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for m in tar:
                members += 1
                if m.isreg():
                    f = tar.extractfile(m)
                    while f.read(CHUNK):
                        pass
    except (tarfile.TarError, OSError, EOFError) as exc:
        proc.kill()
        proc.wait()
        return f"archive unreadable after {members} members: {exc}"
    finally:
        proc.stdout.close()
    err = proc.stderr.read().decode(errors="replace").strip()
    proc.stderr.close()
    if proc.wait() != 0:
        return f"archive does not decompress: {err.splitlines()[-1] if err else 'error'}"
    return None


def verify(dest, snap_id, record=True):
    """Checksums of every file, no unlisted file, archive readable to the end, databases
    intact. Returns {id, passed, problems: [...], checked}; records the result in
    .strongroom/verified.json unless record is false (a check-mode run writes nothing).
    Marked in use while it reads: a prune meanwhile would make every file of it read as
    missing."""
    with reading(dest, snap_id, "verification") as folder:
        return _verify(dest, snap_id, folder, record)


def _verify(dest, snap_id, folder, record=True):
    problems = []
    try:
        sums = read_sums(folder)
    except SnapshotError as exc:
        sums = {}
        problems.append(str(exc))
    present = set(_files_of(folder)) - {SUMS}
    regular = set()
    with safeio.Root(folder) as snap:  # nothing is read through a link, out of the folder
        for rel in sorted(sums):
            if rel not in present:
                problems.append(f"{rel}: missing")
                continue
            try:
                digest = _sha256_inside(snap, rel)
            except (OSError, safeio.UnsafePath) as exc:
                problems.append(f"{rel}: {exc}")
                continue
            regular.add(rel)
            if digest != sums[rel]:
                problems.append(f"{rel}: checksum mismatch")
        if sums:
            for rel in sorted(present - set(sums)):
                problems.append(f"{rel}: not listed in {SUMS}")
        for fmt, name in ARCHIVES.items():
            if name in regular:
                with snap.open_read(name) as fh:
                    why = _archive_readable(fh, fmt)
                if why:
                    problems.append(f"{name}: {why}")
    for rel in sorted(r for r in regular if r.startswith("db/")):
        check = sqlite.integrity(folder / rel)
        if check != "ok":
            problems.append(f"{rel}: integrity_check: {check}")
    result = {"id": snap_id, "passed": not problems, "problems": problems,
              "checked": len(sums)}
    if record:
        _record_verified(dest, snap_id, result)
    return result


def _sha256_inside(root, rel):
    import hashlib

    h = hashlib.sha256()
    with root.open_read(rel) as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _record_verified(dest, snap_id, result):
    records = _verified(dest)
    records[snap_id] = {"when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "result": "ok" if result["passed"] else "failed"}
    records = {k: v for k, v in records.items() if (Path(dest) / k).is_dir()}
    state = _verified_path(dest).parent
    if state.is_symlink():  # the record is ours to write, and only here
        raise SnapshotError(f"{state} is a symlink; not writing the verification record "
                            "through it")
    state.mkdir(exist_ok=True)
    fsutil.atomic_write_json(_verified_path(dest), records)


# --- prune ------------------------------------------------------------------------------


def _made_order(dest, ids):
    """ids oldest first by when they were made: the time in the id, then, for snapshots
    of one second (another commit's id sorts by its sha, not by its age), the folder's own
    nanosecond time, written when its last file was."""
    def made(snap_id):
        try:
            ns = os.lstat(Path(dest) / snap_id).st_mtime_ns
        except OSError:
            ns = 0
        return parse_id(snap_id), ns, snap_id

    return sorted(ids, key=made)


def plan_prune(dest, keep_last, keep_days, now=None):
    """(keep, delete): the newest keep_last always stay, and any younger than keep_days;
    a snapshot dated in the future (a clock that jumped) is kept, and so is the newest
    whose last verification passed."""
    if keep_last < 1:
        raise SnapshotError("--keep-last must be at least 1: prune never removes every "
                            "snapshot")
    now = now or datetime.now(UTC)
    ids = _made_order(dest, snapshot_ids(dest))
    # Snapshots dated after now stay anyway; counted among the newest keep_last they would
    # push out the one made a minute ago by a clock that was put back.
    present = [i for i in ids if parse_id(i) <= now]
    newest = set(present[-keep_last:])
    # Newer ones that all fail their check must not take the last restorable one with them.
    verified = _verified(dest)
    good = [i for i in ids if isinstance(verified.get(i), dict)
            and verified[i].get("result") == "ok"]
    newest.update(good[-1:])
    keep, delete = [], []
    for snap_id in ids:
        age_days = (now - parse_id(snap_id)).total_seconds() / 86400
        (keep if snap_id in newest or age_days < keep_days else delete).append(snap_id)
    return keep, delete


PRUNE_WAIT = 120.0  # another prune of the same dest: seconds at most, lifting +i and deleting


def prune(dest, keep_last, keep_days, dry_run=False, now=None):
    """One prune of a dest at a time (DEST/.prune.lock): two at once, each with its own
    plan, would each fingerprint what the other is deleting. A dry run changes nothing
    and takes no lock."""
    if dry_run:
        return _prune(dest, keep_last, keep_days, True, now)
    from ..core.lock import Lock

    with Lock(Path(dest) / ".prune.lock", f"pruning of {dest}").acquire(PRUNE_WAIT):
        return _prune(dest, keep_last, keep_days, False, now)


def _prune(dest, keep_last, keep_days, dry_run=False, now=None):
    """Delete what plan_prune chose, except a snapshot a restore or verification is reading
    (lock.reading): that one is kept this time, said so in `in_use`, and goes on a later
    run. Its in-use lock is held exclusively while it is deleted, so no restore starts on
    a half-deleted snapshot."""
    from ..core.lock import Deleting, in_use

    keep, delete = plan_prune(dest, keep_last, keep_days, now)
    before = {k: _fingerprint(Path(dest) / k) for k in keep}
    if dry_run:
        busy = {i: m for i in delete if (m := in_use(dest, i))}
        return {"kept": _made_order(dest, keep + list(busy)) if busy else keep,
                "deleted": [i for i in delete if i not in busy], "dry_run": True,
                "problems": [], "in_use": busy}
    deleted, busy = [], {}
    for snap_id in delete:
        folder = Path(dest) / snap_id
        claim = Deleting(dest, snap_id)
        if not claim.acquire():
            busy[snap_id] = claim.message
            continue
        try:
            unprotect(folder)  # only the ones being deleted
            fsutil.rmtree(folder)
        finally:
            claim.release()
        deleted.append(snap_id)
    fsutil.fsync_dir(dest)
    problems = []
    for snap_id in keep:
        after = _fingerprint(Path(dest) / snap_id)
        if after != before[snap_id]:
            problems.append(f"{snap_id}: changed while pruning")
    kept = _made_order(dest, keep + list(busy)) if busy else keep
    return {"kept": kept, "deleted": deleted, "dry_run": False, "problems": problems,
            "in_use": busy}


def _fingerprint(folder):
    """What prune must leave alone: every file's size and mtime, and the +i flags."""
    folder = Path(folder)
    out = {}
    for rel in _files_of(folder):
        st = os.lstat(folder / rel)
        out[rel] = (st.st_size, st.st_mtime_ns, fsutil.has_flag(folder / rel, fsutil.IMMUTABLE))
    out["."] = fsutil.has_flag(folder, fsutil.IMMUTABLE)
    return out
