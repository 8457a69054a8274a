"""Files that are either whole or absent: atomic writes, fsync, hashes, inode flags.

Safe extraction and paths from metadata live in safeio."""

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
from pathlib import Path

CHUNK = 1 << 20
TEMP_PREFIX = ".tmp-"
_TEMP_RE = re.compile(r"^\.tmp-.*\.(\d+)(\.[^.]*)*$")


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path(final):
    """A temp name beside `final`: same filesystem (rename is atomic), PID inside (cleanup)."""
    final = Path(final)
    return final.with_name(f"{TEMP_PREFIX}{final.name}.{os.getpid()}")


def commit(temp, final):
    """fsync the finished temp file, rename it over `final`, fsync the directory."""
    fsync_file(temp)
    os.replace(temp, final)
    fsync_dir(Path(final).parent)


def atomic_write_bytes(path, data, mode=0o644):
    path = Path(path)
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_json(path, obj, mode=0o644):
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"), mode)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def clean_stale_temps(directory):
    """Remove temp files left by runs that were killed; a live run's temps are kept."""
    removed = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return removed
    for entry in entries:
        m = _TEMP_RE.match(entry.name)
        if not m:
            continue
        pid = int(m.group(1))
        if pid == os.getpid() or pid_alive(pid):
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)
        removed.append(entry.name)
    return removed


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def copy_hashing(src, dst):
    """Copy src to dst (parents made, times kept) and return its SHA-256, in one read."""
    h = hashlib.sha256()
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        while chunk := fi.read(CHUNK):
            h.update(chunk)
            fo.write(chunk)
    shutil.copystat(src, dst)
    return h.hexdigest()


# --- inode flags (chattr) ------------------------------------------------------------------
# Set and read through the FS_IOC_GETFLAGS/SETFLAGS ioctls, as chattr does, one open per
# path instead of one process per path.
FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
IMMUTABLE = 0x10  # chattr +i
APPEND_ONLY = 0x20  # chattr +a


def _flag_fd(path):
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)


def get_flags(path):
    import array
    import fcntl

    fd = _flag_fd(path)
    try:
        buf = array.array("i", [0])
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf, True)
        return buf[0]
    finally:
        os.close(fd)


def set_flag(path, flag, on=True):
    """Set or clear one flag; OSError EPERM without CAP_LINUX_IMMUTABLE, ENOTTY or
    EOPNOTSUPP where the filesystem has no such flags."""
    import array
    import fcntl

    fd = _flag_fd(path)
    try:
        buf = array.array("i", [0])
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf, True)
        new = (buf[0] | flag) if on else (buf[0] & ~flag)
        if new != buf[0]:
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, array.array("i", [new]), True)
    finally:
        os.close(fd)


def has_flag(path, flag):
    try:
        return bool(get_flags(path) & flag)
    except OSError:
        return False


def probe_immutable(directory):
    """(supported, reason): set +i on a scratch file in `directory`, read it back, lift it."""
    probe = Path(directory) / f"{TEMP_PREFIX}probe.{os.getpid()}"
    try:
        probe.write_bytes(b"")
    except OSError as exc:
        return False, f"cannot write in {directory}: {exc.strerror}"
    try:
        set_flag(probe, IMMUTABLE)
        ok = has_flag(probe, IMMUTABLE)
        set_flag(probe, IMMUTABLE, on=False)
        return (True, "chattr +i works here") if ok else (
            False, "the immutable flag did not stick on this filesystem")
    except OSError as exc:
        if exc.errno == errno.EPERM:
            return False, ("no permission to set the immutable flag (needs root or "
                           "CAP_LINUX_IMMUTABLE)")
        return False, f"this filesystem has no immutable flag ({exc.strerror})"
    finally:
        with contextlib.suppress(OSError):
            set_flag(probe, IMMUTABLE, on=False)
        probe.unlink(missing_ok=True)
