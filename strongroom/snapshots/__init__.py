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
archive and its checksum come from one read of the tree: GNU tar, given the names our
walk chose, streams into zstd, whose output is hashed on its way to disk.
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
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
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


# The tar stream is written by GNU tar from a list of names: tarfile costs tens of
# microseconds of Python per member, which over 200,000 small files is most of a snapshot.
# The list is what the walk below chose (so the selection rules stay ours), one name per
# NUL, taken verbatim (a name may start with '-' or hold a newline or a backslash).
TAR = ["tar", "--create", "--file=-", "--format=pax", "--pax-option=delete=atime,delete=ctime",
       "--no-recursion", "--null", "--verbatim-files-from", "--no-unquote"]
LIST_CHUNK = 1 << 16
# what GNU tar says (LC_ALL=C) of a name that was listed and is gone by the time it reads it
_VANISHED = re.compile(r": (Cannot stat|Cannot open|File removed before we read it)"
                       r"(: No such file or directory)?$")
_TAR_NOTE = re.compile(r": (file changed as we read it|File shrank by \d+ bytes; padding "
                       r"with zeros|socket ignored)$")


def _excluded_dir_names(selection):
    """The directory names the selection leaves out, when each of its patterns is just
    'name/' (the defaults are): then a file is covered exactly when no folder above it is
    left out, which the walk already prunes, and no file needs a pattern match. None when
    any pattern is more than that."""
    if selection.include:
        return None
    names = set()
    for pattern in list(manifest.ALWAYS_EXCLUDED) + list(selection.exclude):
        if not re.fullmatch(r"[^/*?\[\]\\!#\s]+/", pattern):
            return None
        names.add(pattern[:-1])
    return frozenset(names)


def _walk_tree(source, selection, skip_dirs):
    """(relative path, DirEntry) for every directory, file and symlink the archive takes."""
    plain = _excluded_dir_names(selection)
    stack = [("", str(source))]
    while stack:
        rel_dir, path = stack.pop()
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            raise SnapshotError(f"cannot read {path}: {exc.strerror}") from None
        subdirs = []
        for entry in entries:
            rel = rel_dir + entry.name
            if entry.is_dir(follow_symlinks=False):
                if entry.path in skip_dirs or (entry.name in plain if plain is not None
                                               else selection.prunes(rel_dir, entry.name)):
                    continue
                yield rel, entry
                subdirs.append((rel + "/", entry.path))
            elif plain is not None or selection.covers(rel):
                yield rel, entry
        stack.extend(reversed(subdirs))


def _fast_match(patterns):
    """One regex doing what GitIgnoreSpec(patterns).match_file does, for when every
    pattern adds (none starts with '!'): then a path matches when any pattern does, and
    one search replaces a Python loop over the patterns (microseconds a file, seconds over
    200,000). None when a pattern takes away: order matters then."""
    import pathspec

    try:
        spec = pathspec.GitIgnoreSpec.from_lines(patterns)
    except (ValueError, TypeError) as exc:
        raise StrongroomError(f"bad pattern: {exc}") from None
    parts, flags = [], re.compile("").flags
    for p in spec.patterns:
        if p.include is None:  # a blank line or a comment
            continue
        if not p.include or p.regex is None or p.regex.flags != flags:
            return None
        parts.append("(?:" + re.sub(r"\(\?P<\w+>", "(?:", p.regex.pattern) + ")")
    return re.compile("|".join(parts) or "(?!)").search


def critical_matcher(selection):
    """selection.covers for the critical files, as one or two regex searches a file."""
    exc = _fast_match(list(manifest.ALWAYS_EXCLUDED) + list(selection.exclude))
    inc = _fast_match(selection.include) if selection.include else None
    if exc is None or (selection.include and inc is None):
        return selection.covers
    if inc is None:
        return lambda rel: not exc(rel)
    return lambda rel: inc(rel) is not None and not exc(rel)


def _listing(source, selection, skip_dirs, skip_files, large_threshold, critical=None):
    """What the archive takes, walked once: yields blocks of NUL-terminated names for tar
    and fills `listing` with the counts, the large and special files, the regular files
    (a file that vanishes before tar reads it is taken off them again) and, when
    critical(rel) is given, the regular files it covers (as manifest.walk would list
    them: no symlink, no .tmp- file)."""
    counts = {"files": 0, "dirs": 0, "symlinks": 0, "bytes": 0}
    listing = {"counts": counts, "large": [], "special": [], "files": {}, "critical": []}
    files, crit = listing["files"], listing["critical"]

    def blocks():
        buf, size = [], 0
        for rel, entry in _walk_tree(source, selection, skip_dirs):
            if critical is not None and entry.is_file(follow_symlinks=False) and \
                    not entry.name.startswith(".tmp-") and critical(rel):
                crit.append(rel)
            if entry.path in skip_files:
                continue
            if entry.is_dir(follow_symlinks=False):
                counts["dirs"] += 1
            elif entry.is_symlink():
                counts["symlinks"] += 1
            else:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted while we walked
                except OSError as exc:
                    raise SnapshotError(f"cannot read {entry.path}: {exc.strerror}") from None
                if stat.S_ISSOCK(st.st_mode):  # runtime endpoints, nothing to keep
                    continue
                if not stat.S_ISREG(st.st_mode):
                    # a restore refuses FIFOs and devices as hostile: a backup that cannot
                    # restore is no backup, so they are left out here, and said so
                    listing["special"].append(rel)
                    continue
                counts["files"] += 1
                counts["bytes"] += st.st_size
                files[rel] = st.st_size
                if st.st_size > large_threshold:
                    listing["large"].append((st.st_size, rel))
            name = os.fsencode(rel) + b"\0"
            buf.append(name)
            size += len(name)
            if size >= LIST_CHUNK:
                yield b"".join(buf)
                buf, size = [], 0
        if buf:
            yield b"".join(buf)
        crit.sort()

    return listing, blocks()


def _tar_problems(err):
    """(fatal lines, vanished lines, notes) of tar's stderr."""
    fatal, vanished, notes = [], [], []
    for line in err.splitlines():
        if _VANISHED.search(line):
            vanished.append(line)
        elif _TAR_NOTE.search(line):
            notes.append(line)
        elif line.startswith("tar: Exiting with failure status"):
            continue
        elif line.strip():
            fatal.append(line)
    return fatal, vanished, notes


def _untake_vanished(source, listing):
    """Take the files that are gone off the counts (tar said some were, not which)."""
    counts, files = listing["counts"], listing["files"]
    for rel in [r for r in files if not os.path.lexists(os.path.join(source, r))]:
        counts["files"] -= 1
        counts["bytes"] -= files.pop(rel)
    gone = {r for _, r in listing["large"]} - set(files)
    listing["large"] = [(s, r) for s, r in listing["large"] if r not in gone]


def _archive(source, out_path, fmt, selection, skip_dirs, skip_files, large_threshold,
             critical=None):
    """Stream the tree through tar into the compressor; returns counts, the archive
    digest and size, large files, special files left out, tar's notes (files that
    changed while they were read) and the critical files met on the way."""
    listing, blocks = _listing(source, selection, skip_dirs, skip_files, large_threshold,
                               critical)
    with tempfile.TemporaryFile() as errors:
        tar_rc, rc, sink = _stream(source, blocks, errors, out_path, fmt)
        errors.seek(0)
        err = errors.read().decode("utf-8", "replace")
    if sink.error:
        raise _write_error(out_path, sink.error)
    fatal, vanished, notes = _tar_problems(err)
    if tar_rc not in (0, 1, 2) or fatal or (tar_rc == 2 and not vanished):
        said = "; ".join(fatal[:5]) or err.strip()[-500:] or f"exit {tar_rc}"
        raise SnapshotError(f"tar could not read {source} (exit {tar_rc}): {said}")
    if rc != 0:
        raise SnapshotError(f"{COMPRESSORS[fmt][0]} failed (exit {rc}) writing {out_path}")
    if vanished:
        _untake_vanished(source, listing)
    return (listing["counts"], sink.digest, sink.size, listing["large"],
            listing["special"], notes, listing["critical"])


def _stream(source, blocks, errors, out_path, fmt):
    """tar (reading the names) into the compressor into the hashing sink; returns tar's
    and the compressor's exit codes and the sink."""
    comp = subprocess.Popen(COMPRESSORS[fmt], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        tar = subprocess.Popen([*TAR, f"--directory={source}", "--files-from=-"],
                               stdin=subprocess.PIPE, stdout=comp.stdin, stderr=errors,
                               env=dict(os.environ, LC_ALL="C"))
    except OSError as exc:
        comp.kill()
        comp.wait()
        raise SnapshotError(f"cannot run tar: {exc.strerror}") from None
    comp.stdin.close()  # tar holds the only write end now: its end is the stream's end
    sink = _HashingSink(comp, out_path)
    sink.start()
    try:
        for block in blocks:
            tar.stdin.write(block)
        tar.stdin.close()
    except BaseException as exc:
        for proc in (tar, comp):
            proc.kill()
            proc.wait()
        sink.join()
        if sink.error:  # the real cause; tar only saw the compressor go away
            raise _write_error(out_path, sink.error) from None
        if isinstance(exc, BrokenPipeError):
            errors.seek(0)
            said = errors.read().decode("utf-8", "replace").strip()
            raise SnapshotError(f"tar stopped while {out_path} was written (exit "
                                f"{tar.returncode}): {said[-500:] or 'no message'}") from None
        raise
    tar_rc = tar.wait()
    rc = comp.wait()
    sink.join()
    return tar_rc, rc, sink


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
        # the full archive; the live databases (and their journals) are in db/ instead.
        # Its walk also finds the critical files: one walk of the tree, not two
        t0 = time.monotonic()
        inside = [f"/{dest.relative_to(source).as_posix()}/"] if inside_source \
            else []  # a destination inside the source is never its own input
        crit_sel = manifest.Selection(list(critical),
                                      DEFAULT_EXCLUDES + list(exclude) + inside)
        skip_files = {str(p) + suffix for p, _ in databases
                      for suffix in ("", "-wal", "-shm", "-journal")}
        arch_sel = manifest.Selection([], DEFAULT_EXCLUDES + list(exclude))
        archive = ARCHIVES[fmt]
        counts, digest, arch_bytes, large, special, changed, critical_files = _archive(
            source, tmp / archive, fmt, arch_sel, {str(dest)}, skip_files, large_threshold,
            critical_matcher(crit_sel) if critical else None)
        durations["archive"] = round(time.monotonic() - t0, 3)
        # critical files: copied (owner-only) and hashed in one read, paths and modes kept
        t0 = time.monotonic()
        db_copies = {d["copy"][len("db/"):]: (tmp / d["copy"], d["journal_mode"])
                     for d in db_reports}
        crit_meta = _copy_critical(source, tmp, critical_files, db_copies, sums)
        crit_bytes = sum(m["size"] for m in crit_meta.values())
        durations["critical"] = round(time.monotonic() - t0, 3)
        if not (counts["files"] or counts["symlinks"] or db_reports or critical_files):
            # an empty snapshot would only push a real one out of keep_last
            raise EmptySource(f"nothing to back up: {source} holds no files; put the files "
                              f"to snapshot in {source}, or set the job's options.source to "
                              "the folder that holds them")
        sums[archive] = digest
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
        _sync_tree(tmp)
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
    if changed:
        warnings.append(f"{len(changed)} file(s) changed while they were read (e.g. "
                        f"{changed[0].removeprefix('tar: ')}): the archive holds them as "
                        "they were read")
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


def _sync_tree(folder):
    """Every file and folder of the new snapshot on disk before its rename. One syncfs of
    its filesystem does in a call what an fsync per file does in thousands (10,000
    critical files cost seconds of fsyncs); where there is no syncfs, fsync each."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _syncfs(fd):
            return
    finally:
        os.close(fd)
    for rel, is_dir in fsutil.walk(folder):
        if not is_dir:
            fsutil.fsync_file(Path(folder) / rel)
    fsutil.fsync_dir(folder)


def _syncfs(fd):
    """syncfs(2) on fd's filesystem: True when done, False when unavailable; an error
    writing back is an error (Linux 5.8 and later report it)."""
    if not hasattr(os, "sched_getaffinity"):  # not Linux
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.syncfs
    except (OSError, AttributeError):
        return False
    if call(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return True


_JOURNALS = ("-wal", "-shm", "-journal")


def _copy_critical(source, tmp, rels, db_copies, sums):
    """Each critical file into tmp/critical/, 0600 (they are .env files and keys), its
    own mode and times recorded; {rel: {mode, size[, journal_mode]}}.

    A live SQLite database is copied through the backup API, never raw (a raw copy of a
    database in WAL mode can miss its newest pages), and its -wal/-shm/-journal files are
    inside that copy; one given with --db is the same consistent copy as db/.

    Creating files is what this costs (10,000 .env files and keys): a few are copied at
    a time, each opened once, its first bytes saying whether it is a database and
    starting its copy. Databases, and what may be their journals, come after, in order."""
    names = set(rels)
    later = [r for r in rels if any(r.endswith(j) and r[:-len(j)] in names
                                    for j in _JOURNALS)]
    deferred = set(later)
    for parent in sorted({r.rpartition("/")[0] for r in rels}):
        fsutil.makedirs(tmp / "critical" / parent)
    meta, dbs = {}, []
    with ThreadPoolExecutor(max_workers=4) as pool:
        done = pool.map(lambda rel: _copy_one(source, tmp, rel),
                        [r for r in rels if r not in deferred])
        for rel, entry, digest in done:
            if entry == "database":
                dbs.append(rel)
            elif entry is not None:
                sums[f"critical/{rel}"] = digest
                meta[rel] = entry
    journals = {r + j for r in dbs for j in _JOURNALS}
    for rel in dbs:
        src, out = source / rel, tmp / "critical" / rel
        try:
            entry = {"mode": stat.S_IMODE(os.stat(src).st_mode)}
        except FileNotFoundError:
            continue  # deleted while we walked
        if rel in db_copies:
            digest = _copy_private(db_copies[rel][0], out)
            entry["journal_mode"] = db_copies[rel][1]
        else:
            rep = sqlite.backup(src, out)
            digest = fsutil.sha256_file(out)
            entry["journal_mode"] = rep["journal_mode"]
        entry["size"] = out.stat().st_size
        sums[f"critical/{rel}"] = digest
        meta[rel] = entry
    for rel in later:
        if rel in journals:
            continue
        rel, entry, digest = _copy_one(source, tmp, rel, raw=True)
        if entry is not None:
            sums[f"critical/{rel}"] = digest
            meta[rel] = entry
    return meta


def _copy_one(source, tmp, rel, raw=False):
    """(rel, {mode, size}, digest) of one file copied; (rel, 'database', None) for a
    database unless raw; (rel, None, None) when it is gone."""
    try:
        fi = open(source / rel, "rb")  # noqa: SIM115 -- closed below, on every path
    except FileNotFoundError:
        return rel, None, None  # deleted while we walked
    with fi:
        st = os.fstat(fi.fileno())
        head = fi.read(CHUNK)
        if not raw and head[:len(sqlite.HEADER)] == sqlite.HEADER:
            return rel, "database", None
        digest, size = _copy_open(fi, st, head, tmp / "critical" / rel)
    return rel, {"mode": stat.S_IMODE(st.st_mode), "size": size}, digest


def _copy_open(fi, st, head, dst):
    """The rest of an open file (head already read) to dst as 0600 with its times;
    returns (SHA-256, size)."""
    import hashlib

    h = hashlib.sha256(head)
    size = len(head)
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        _write_all(fd, head)
        while chunk := fi.read(CHUNK):
            h.update(chunk)
            _write_all(fd, chunk)
            size += len(chunk)
        os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
    finally:
        os.close(fd)
    return h.hexdigest(), size


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


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
    """+i on every file, then on every directory bottom-up, the folder last; returns
    'yes' when each of them reads back +i, 'partial' or 'no' (as immutability_of).

    Each path is opened once, flagged and read back on that descriptor, a few at a time:
    10,000 critical files made this two opens each and a second walk, one after another."""
    folder = Path(folder)
    files, dirs = [], []
    for rel, is_dir in fsutil.walk(folder):
        (dirs if is_dir else files).append(os.path.join(folder, rel))
    dirs.sort(key=lambda p: p.count("/"), reverse=True)
    with ThreadPoolExecutor(max_workers=4) as pool:
        flags = list(pool.map(_flag_immutable, files))
    for d in dirs:  # a directory after everything in it; the folder last
        flags.append(_flag_immutable(d))
    flags.append(_flag_immutable(str(folder)))
    return "yes" if all(flags) else "partial" if any(flags) else "no"


def _flag_immutable(path):
    """chattr +i on path, never through a symlink; whether it reads back +i."""
    import array
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False  # a symlink (no flags of its own) or gone: not immutable
    try:
        buf = array.array("i", [0])
        fcntl.ioctl(fd, fsutil.FS_IOC_GETFLAGS, buf, True)
        if not buf[0] & fsutil.IMMUTABLE:
            fcntl.ioctl(fd, fsutil.FS_IOC_SETFLAGS,
                        array.array("i", [buf[0] | fsutil.IMMUTABLE]), True)
            fcntl.ioctl(fd, fsutil.FS_IOC_GETFLAGS, buf, True)
        return bool(buf[0] & fsutil.IMMUTABLE)
    except OSError:
        return False
    finally:
        os.close(fd)


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
