"""Putting a snapshot back: `backup restore --critical` and `backup restore --full`.

A snapshot folder is input like any other: nothing in it is trusted until checked.
- Every file a restore reads is listed in SHA256SUMS and matches it before it is used,
  REPORT.json included. A missing or unreadable REPORT.json is an error, never a restore
  that silently leaves the databases out.
- Every path that comes from metadata (REPORT.json, SHA256SUMS, archive members) is a
  clean relative path and is walked one component at a time without following links
  (safeio): nothing outside the snapshot is read, nothing outside the target is written.
- A full restore is built beside the target, checked (archive, every database copy by
  hash and integrity_check), and only then moved into place; the current target is moved
  aside, never deleted. Any failure leaves the target exactly as it was.
- A critical restore stages every file beside its destination and checks it before it
  replaces anything; a differing file in the target is kept beside it
  (NAME.before-restore-<time>) unless --force, and files are put back with their modes.
"""

import contextlib
import hashlib
import os
import stat
import subprocess
import tarfile
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from ..core import fsutil, safeio, sqlite
from . import ARCHIVES, CHUNK, DECOMPRESSORS, SnapshotError, read_sums, reading
from . import _syncfs as sync_filesystem

REPORT = "REPORT.json"
# a snapshot restores the user's own tree as it was, absolute symlinks included (as restic
# and borg do); nothing is ever written through a link, so none can carry a write out
LINKS = "any"
REPORT_MAX = 64 << 20  # a REPORT.json is kilobytes; a huge one is not ours
BATCH_DIRS = 128  # directories staged at a time: bounds the open descriptors


def _stamp():
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S")


def trusted_report(snap, sums, snap_id):
    """REPORT.json, read without following links, checked against SHA256SUMS, parsed."""
    where = f"{REPORT} of snapshot {snap_id}"
    if REPORT not in sums:
        raise SnapshotError(f"{where} is not listed in {snap.path}/SHA256SUMS, so it cannot "
                            "be trusted to say where the databases go; nothing was restored")
    try:
        with snap.open_read(REPORT) as fh:
            data = fh.read(REPORT_MAX + 1)
    except FileNotFoundError:
        raise SnapshotError(f"{where} is missing; without it the databases cannot be put "
                            "back, so nothing was restored") from None
    except (OSError, safeio.UnsafePath) as exc:
        raise SnapshotError(f"cannot read {where}: {exc}; nothing was restored") from None
    if hashlib.sha256(data).hexdigest() != sums[REPORT]:
        raise SnapshotError(f"{where} does not match its checksum (damaged or altered); "
                            "nothing was restored")
    try:
        report = safeio.load_json(data, where)
    except ValueError as exc:
        raise SnapshotError(f"{exc}; nothing was restored") from None
    if not isinstance(report, dict):
        raise SnapshotError(f"{where} is not a JSON object; nothing was restored")
    return report


def _database_plan(report, sums, snap_id):
    """[(copy in the snapshot, path in the tree or None, journal mode, mode)] for every
    db/ copy; REPORT.json and SHA256SUMS must agree on them exactly."""
    where = f"{REPORT} of snapshot {snap_id}"
    dbs = report.get("databases", [])
    if not isinstance(dbs, list):
        raise SnapshotError(f"{where}: 'databases' is not a list; nothing was restored")
    source = report.get("source")
    plan, seen = [], set()
    for d in dbs:
        if not isinstance(d, dict):
            raise SnapshotError(f"{where} has a database entry that is not an object; "
                                "nothing was restored")
        try:
            copy = safeio.clean_relpath(d.get("copy"), "database copy")
        except safeio.UnsafePath as exc:
            raise SnapshotError(f"{where}: {exc}; nothing was restored") from None
        if not copy.startswith("db/") or copy not in sums or copy in seen:
            raise SnapshotError(f"{where} names database copy {copy!r}, which SHA256SUMS "
                                "does not list (once) under db/; nothing was restored")
        seen.add(copy)
        path = d.get("path")
        in_tree = isinstance(path, str) and isinstance(source, str) and source.startswith(
            "/") and Path(path).is_relative_to(source)
        journal = d.get("journal_mode") if d.get("journal_mode") in sqlite.JOURNAL_MODES \
            else "delete"
        plan.append((copy, copy[len("db/"):] if in_tree else None, journal,
                     _mode(d.get("mode"), 0o600)))
    extra = sorted(r for r in sums if r.startswith("db/") and r not in seen)
    if extra:
        raise SnapshotError(f"SHA256SUMS of snapshot {snap_id} lists {extra[0]}, which "
                            f"{REPORT} does not account for; nothing was restored")
    return plan


def _mode(value, default):
    """A file mode read from metadata, or the default when it is not one."""
    return value if isinstance(value, int) and not isinstance(value, bool) and \
        0 <= value <= 0o7777 else default


def _open_checked(snap, rel, digest, snap_id):
    """rel opened once, hashed to its end, rewound: the bytes checked are the bytes used."""
    try:
        fh = snap.open_read(rel)
    except FileNotFoundError:
        raise SnapshotError(f"{rel} of snapshot {snap_id} is missing; nothing was "
                            "restored") from None
    except safeio.UnsafePath as exc:
        raise SnapshotError(f"refusing to restore: {exc}") from None
    h = hashlib.sha256()
    while chunk := fh.read(CHUNK):
        h.update(chunk)
    if h.hexdigest() != digest:
        fh.close()
        raise SnapshotError(f"{rel} in {snap_id} does not match its checksum; nothing was "
                            "restored")
    fh.seek(0)
    return fh


def _tar_pass(archive, fmt, each):
    """Decompress the (checked) archive from its open file and hand the tar to `each`."""
    archive.seek(0)
    proc = subprocess.Popen(DECOMPRESSORS[fmt], stdin=archive, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    unreadable = None
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            out = each(tar)
    except safeio.UnsafeArchive as exc:
        raise SnapshotError(f"refusing to restore: {exc}") from None
    except safeio.TAR_ERRORS as exc:
        unreadable = exc
    finally:
        proc.stdout.close()  # a refusal stops reading: the decompressor ends on the pipe
        err = proc.stderr.read().decode(errors="replace").strip()
        proc.stderr.close()
        rc = proc.wait()
    if rc != 0:  # the decompressor's own words say more than tarfile's "empty file"
        raise SnapshotError(f"archive does not decompress: {err or f'exit {rc}'}")
    if unreadable is not None:
        raise SnapshotError(f"archive unreadable: {unreadable}")
    return out


def _scan(tar):
    """The pre-scan: every member checked before anything is written."""
    return safeio.scan(tar, links=LINKS)


def _put_databases(snap, sums, plan, work, snap_id):
    """Each database copy into the extracted tree, checked by hash and integrity_check,
    in its source's journal mode and file mode. Returns (restored, left in db/ only)."""
    restored, outside = [], []
    with safeio.Root(work) as tree:
        for copy, rel, journal, mode in plan:
            if rel is None:
                outside.append(copy)  # it lived outside the source: no place in the tree
                continue
            try:
                digest = safeio.copy_in(snap, copy, tree, rel, mode=0o600)
            except FileNotFoundError:
                raise SnapshotError(f"{copy} of snapshot {snap_id} is missing; nothing was "
                                    "restored") from None
            except FileExistsError:
                raise SnapshotError(f"{copy} would overwrite {rel}, which the archive holds "
                                    "too; nothing was restored") from None
            except safeio.UnsafePath as exc:
                raise SnapshotError(f"refusing to restore {copy}: {exc}") from None
            if digest != sums[copy]:
                raise SnapshotError(f"{copy} in {snap_id} does not match its checksum "
                                    "(damaged); nothing was restored")
            check = sqlite.integrity(work / rel)
            if check != "ok":
                raise SnapshotError(f"{copy} in {snap_id} fails integrity_check ({check}); "
                                    "nothing was restored")
            try:
                sqlite.set_journal_mode(work / rel, journal)
            except sqlite.SQLiteError as exc:
                raise SnapshotError(f"{copy}: {exc}; nothing was restored") from None
            os.chmod(work / rel, safeio.safe_mode(mode, "file"))
            restored.append(rel)
    return restored, outside


def restore_full(dest, snap_id, target):
    """The whole tree into target: built and checked beside it, then the current target
    moved aside, then the new tree renamed into place (databases from db/ put back).
    The snapshot is marked in use throughout: a prune meanwhile keeps it."""
    with reading(dest, snap_id) as folder:
        return _restore_full(dest, snap_id, folder, target)


def _restore_full(dest, snap_id, folder, target):
    sums = read_sums(folder)
    fmt = next((f for f, name in ARCHIVES.items() if name in sums), None)
    if fmt is None:
        raise SnapshotError(f"snapshot {snap_id} has no full archive")
    target = Path(target).absolute()
    with safeio.Root(folder) as snap:
        report = trusted_report(snap, sums, snap_id)
        plan = _database_plan(report, sums, snap_id)
        archive = _open_checked(snap, ARCHIVES[fmt], sums[ARCHIVES[fmt]], snap_id)
        made = []
        try:
            count = _tar_pass(archive, fmt, _scan)  # before anything is created anywhere
            made = fsutil.make_parents(target.parent)
            fsutil.clean_stale_restores(target.parent)
            work = fsutil.restore_temp(target)
            work.mkdir(mode=0o700)
            try:
                _tar_pass(archive, fmt, lambda tar: safeio.extract(tar, work, links=LINKS))
                dbs, outside = _put_databases(snap, sums, plan, work, snap_id)
                os.chmod(work, safeio.safe_mode(_mode(report.get("source_mode"), 0o755),
                                                "dir"))
                aside = _move_aside(target)
                os.rename(work, target)
                fsutil.fsync_dir(target.parent)
            except BaseException:
                fsutil.rmtree_quiet(work)
                raise
        except BaseException:
            fsutil.remove_made(made)  # the parents it made for the target: gone again
            raise
        finally:
            archive.close()
    out = {"id": snap_id, "mode": "full", "target": str(target), "members": count,
           "databases": dbs, "databases_not_in_tree": outside,
           "moved_aside": str(aside) if aside else None}
    dest_abs = Path(dest).absolute()
    if aside and dest_abs.is_relative_to(target):
        out["snapshots_now_in"] = str(aside / dest_abs.relative_to(target))
    return out


def _move_aside(path):
    if not (path.exists() or path.is_symlink()):
        return None
    aside = path.with_name(f"{path.name}.before-restore-{_stamp()}")
    n = 1
    while aside.exists() or aside.is_symlink():
        n += 1
        aside = path.with_name(f"{path.name}.before-restore-{_stamp()}-{n}")
    os.rename(path, aside)
    return aside


# --- critical files ---------------------------------------------------------------------


def _critical_plan(sums, report, snap_id):
    meta = report.get("critical") if isinstance(report.get("critical"), dict) else {}
    plan = []
    for key in sorted(sums):
        if not key.startswith("critical/"):
            continue
        rel = safeio.clean_relpath(key[len("critical/"):], "critical file")
        if any(safeio.is_dotgit(part) for part in rel.split("/")) or \
                safeio.folded(rel.rpartition("/")[2]) == "head":
            raise SnapshotError(f"snapshot {snap_id} lists {key!r}: a critical restore never "
                                "writes into .git/ nor a file named HEAD (that and objects/ "
                                "and refs/ make a repository whose config runs code); "
                                "nothing was restored")
        entry = meta.get(rel) if isinstance(meta.get(rel), dict) else {}
        journal = entry.get("journal_mode") if entry.get("journal_mode") in \
            sqlite.JOURNAL_MODES else None
        plan.append((rel, _mode(entry.get("mode"), None), journal))
    return plan


def _temp_rel(rel):
    parent, _, name = rel.rpartition("/")
    tmp = f"{fsutil.RESTORE_PREFIX}{name}.{os.getpid()}"
    return f"{parent}/{tmp}" if parent else tmp


def _check_critical(snap, sums, plan, snap_id):
    """Every critical file read and hashed before anything is created in the target."""
    for rel, _, _ in plan:
        key = f"critical/{rel}"
        h = hashlib.sha256()
        try:
            with snap.open_read(key) as fh:
                while chunk := fh.read(CHUNK):
                    h.update(chunk)
        except FileNotFoundError:
            raise SnapshotError(f"{key} of snapshot {snap_id} is missing; nothing was "
                                "replaced") from None
        except safeio.UnsafePath as exc:
            raise SnapshotError(f"refusing to restore: {exc}; nothing was replaced") from None
        if h.hexdigest() != sums[key]:
            raise SnapshotError(f"{key} in {snap_id} does not match its checksum; nothing "
                                "was replaced")


def _same_content(root, rel, size, digest):
    h = hashlib.sha256()
    with root.open_read(rel) as fh:
        if os.fstat(fh.fileno()).st_size != size:
            return False
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest() == digest


def restore_critical(dest, snap_id, target, force=False):
    """Each critical file back to its path under target, checked before anything is
    replaced. Identical files are left alone; a differing one is kept beside the restored
    file as NAME.before-restore-<time> unless `force`. The snapshot is marked in use
    throughout: a prune meanwhile keeps it."""
    with reading(dest, snap_id) as folder:
        return _restore_critical_from(dest, snap_id, folder, target, force)


def _restore_critical_from(dest, snap_id, folder, target, force):
    sums = read_sums(folder)
    target = Path(target).absolute()
    with safeio.Root(folder) as snap:
        report = trusted_report(snap, sums, snap_id)
        try:
            plan = _critical_plan(sums, report, snap_id)
        except safeio.UnsafePath as exc:
            raise SnapshotError(f"refusing to restore: {exc}") from None
        if not plan:
            raise SnapshotError(f"snapshot {snap_id} holds no critical files")
        _check_critical(snap, sums, plan, snap_id)
        made = fsutil.make_parents(target)
        try:
            with safeio.Root(target) as root:
                try:
                    return _restore_critical(snap, root, sums, plan, snap_id, target, force)
                except BaseException:
                    root.remove_created()  # a refusal leaves no new empty folders
                    raise
        except BaseException:
            fsutil.remove_made(made)
            raise


def _restore_critical(snap, root, sums, plan, snap_id, target, force):
    staged = []  # (rel, tmp_rel, verdict, journal mode when it is a database)

    def stage(item):
        rel, mode, journal = item
        tmp_rel = _temp_rel(rel)
        key = f"critical/{rel}"
        h = hashlib.sha256()
        with snap.open_read(key) as fi, root.create(tmp_rel, 0o600) as fo:
            staged_now.append(tmp_rel)
            src_st = os.fstat(fi.fileno())
            while chunk := fi.read(CHUNK):
                h.update(chunk)
                fo.write(chunk)
            fo.flush()
            os.fchmod(fo.fileno(), safeio.safe_mode(
                mode if mode is not None else src_st.st_mode, "file"))
            os.utime(fo.fileno(), ns=(src_st.st_atime_ns, src_st.st_mtime_ns))
            size = fo.tell()
        if h.hexdigest() != sums[key]:
            raise SnapshotError(f"{key} in {snap_id} does not match its checksum; nothing "
                                "was replaced")
        if journal and sqlite.is_database(Path(root.path) / tmp_rel):
            sqlite.set_journal_mode(Path(root.path) / tmp_rel, journal)
        try:
            st = root.lstat(rel)
        except FileNotFoundError:
            return rel, tmp_rel, "new", journal
        if stat.S_ISDIR(st.st_mode):
            raise SnapshotError(f"{target / rel} is a directory; a critical file cannot "
                                "replace it. Nothing was replaced")
        if stat.S_ISREG(st.st_mode) and _same_content(root, rel, size, sums[key]):
            wanted = os.stat(Path(root.path) / tmp_rel).st_mode & 0o7777
            return rel, tmp_rel, "same" if st.st_mode & 0o7777 == wanted else "mode", journal
        return rel, tmp_rel, "differs", journal

    staged_now = []
    try:
        by_dir = {}
        for item in plan:
            by_dir.setdefault(item[0].rpartition("/")[0], []).append(item)
        parents = sorted(by_dir)
        for i in range(0, len(parents), BATCH_DIRS):
            batch = parents[i:i + BATCH_DIRS]
            for parent in batch:  # opened here, once: the workers only use them
                root.dir_fd(parent, create=True)
                snap.dir_fd("critical/" + parent if parent else "critical")
            items = [item for parent in batch for item in by_dir[parent]]
            # creating files is what this costs: a few at a time, in different directories
            with ThreadPoolExecutor(max_workers=4) as pool:
                staged += list(pool.map(stage, items))
            root.trim(keep=16)
            snap.trim(keep=16)
    except FileNotFoundError as exc:
        _unstage(root, staged_now)
        raise SnapshotError(f"a critical file of snapshot {snap_id} is missing "
                            f"({exc.filename or exc}); nothing was replaced") from None
    except safeio.UnsafePath as exc:
        _unstage(root, staged_now)
        raise SnapshotError(f"refusing to restore: {exc}; nothing was replaced") from None
    except sqlite.SQLiteError as exc:
        _unstage(root, staged_now)
        raise SnapshotError(f"{exc}; nothing was replaced") from None
    except BaseException:
        _unstage(root, staged_now)
        raise
    if not _syncfs(target):  # every staged file on disk before it replaces anything
        os.sync()
    stamp = _stamp()
    out = {"restored": [], "unchanged": [], "moved_aside": {}, "overwritten": []}
    for rel, tmp_rel, verdict, journal in staged:
        if verdict == "same":
            root.unlink(tmp_rel)
            out["unchanged"].append(rel)
            continue
        aside = f"{rel}.before-restore-{stamp}"
        if verdict == "differs":
            if force:
                out["overwritten"].append(rel)
            else:
                root.rename(rel, aside)
                out["moved_aside"][rel] = aside
        if journal:
            # a database's -wal/-shm/-journal belong to the file they sat beside: left
            # there, SQLite would replay them into the restored copy and corrupt it
            for suffix in ("-wal", "-shm", "-journal"):
                if root.exists(rel + suffix):
                    root.rename(rel + suffix, aside + suffix)
                    out["moved_aside"][rel + suffix] = aside + suffix
        root.rename(tmp_rel, rel)
        out["restored"].append(rel)
    # the renames on disk: one syncfs of the target's filesystem, not an fsync of each
    # of its folders (10,000 files in 2,000 folders made that seconds)
    if not _syncfs(target):
        for parent in {os.path.dirname(os.path.join(target, rel)) for rel, *_ in staged}:
            fsutil.fsync_dir(parent)
    return {"id": snap_id, "mode": "critical", "target": str(target),
            "files": [rel for rel, *_ in staged], **out}


def _syncfs(path):
    """syncfs(2) of path's filesystem; False where there is none (then the caller syncs
    its own way)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return sync_filesystem(fd)
    finally:
        os.close(fd)


def _unstage(root, tmp_rels):
    for tmp_rel in tmp_rels:
        with contextlib.suppress(OSError, safeio.UnsafePath):
            root.unlink(tmp_rel)
