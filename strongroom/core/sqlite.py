"""Consistent copies of live SQLite databases.

A raw file copy of a database in WAL mode can miss its newest pages (or its tables): the
committed data may still sit in the -wal file. The online backup API copies a
transactionally consistent image while writers go on; the copy is then checked with
`PRAGMA integrity_check`, which reads every page (`SELECT 1` reads none).
"""

import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

from . import fsutil
from .errors import StrongroomError

HEADER = b"SQLite format 3\x00"


class SQLiteError(StrongroomError):
    pass


def is_database(path):
    try:
        with open(path, "rb") as fh:
            return fh.read(16) == HEADER
    except OSError:
        return False


def _read_only(path):
    # immutable=1: the file cannot change (a finished copy), so no -wal/-shm is needed or made
    uri = f"file:{quote(str(Path(path).absolute()))}?mode=ro&immutable=1"
    return sqlite3.connect(uri, uri=True)


def integrity(path):
    """'ok', or the first problems integrity_check reports."""
    try:
        con = _read_only(path)
        try:
            rows = con.execute("PRAGMA integrity_check").fetchall()
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        return f"not readable as a database: {exc}"
    result = "; ".join(str(r[0]) for r in rows[:5])
    return "ok" if result == "ok" else result


def table_counts(con):
    names = [r[0] for r in con.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name")]
    # table names come from the database itself and are quoted as identifiers
    return {n: con.execute(f'SELECT count(*) FROM "{n.replace(chr(34), chr(34) * 2)}"')  # noqa: S608
            .fetchone()[0] for n in names}


JOURNAL_MODES = ("delete", "truncate", "persist", "memory", "wal", "off")


def _failure(src, exc):
    """SQLite says 'database or disk is full'; people and scripts look for ENOSPC's words."""
    if getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL" or "disk is full" in str(exc):
        return SQLiteError(f"cannot back up {src}: No space left on device (SQLite: {exc})")
    return SQLiteError(f"cannot back up {src}: {exc}")


def set_journal_mode(path, mode):
    """Put a restored copy back in the journal mode its source had (copies are made in
    'delete' mode, one self-contained file)."""
    if mode not in JOURNAL_MODES or mode in ("delete", "memory", "off"):
        return
    try:
        con = sqlite3.connect(str(path))
        try:
            con.execute(f"PRAGMA journal_mode={mode}")  # one of JOURNAL_MODES, not free text
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise SQLiteError(f"cannot put {path} back in {mode} mode: {exc}") from None


def backup(src, dst, mode=0o600):
    """Copy the database `src` to `dst` (atomically) through the backup API and check it.

    Returns {path, bytes, tables: {name: rows}, integrity: "ok", journal_mode, mode};
    SQLiteError when the source is not a database or the copy is not intact (dst is then
    not created). The copy is `mode` (0600: a database is data, often private).
    """
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise SQLiteError(f"database {src} does not exist")
    if not is_database(src):
        raise SQLiteError(f"{src} is not a SQLite database (no SQLite header)")
    fsutil.makedirs(dst.parent)
    tmp = fsutil.temp_path(dst)
    tmp.unlink(missing_ok=True)
    src_mode = src.stat().st_mode & 0o7777
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode))
        source = sqlite3.connect(str(src), timeout=30)
        try:
            journal = str(source.execute("PRAGMA journal_mode").fetchone()[0]).lower()
            target = sqlite3.connect(str(tmp))
            try:
                source.backup(target)  # one step: a single consistent read transaction
                target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
                tables = table_counts(target)
            finally:
                target.close()
        finally:
            source.close()
        check = integrity(tmp)
        if check != "ok":
            raise SQLiteError(f"the copy of {src} failed PRAGMA integrity_check: {check}")
        fsutil.commit(tmp, dst)
    except sqlite3.DatabaseError as exc:
        raise _failure(src, exc) from None
    finally:
        tmp.unlink(missing_ok=True)
    return {"path": str(src), "bytes": os.path.getsize(dst), "tables": tables,
            "integrity": "ok", "journal_mode": journal, "mode": src_mode}
