"""Files that are either whole or absent: atomic writes, fsync, hashes, inode flags.

Safe extraction and paths from metadata live in safeio."""

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import stat
import time
from pathlib import Path

CHUNK = 1 << 20
TEMP_PREFIX = ".tmp-"  # in folders Strongroom owns (stores, snapshot and day folders)
_TEMP_RE = re.compile(r"^\.tmp-.*\.(\d+)(\.[^.]*)*$")
# in folders the user owns (a restore's target and its parent), a name no one else uses:
# cleaning up after a killed restore must never take a file that is not ours
RESTORE_PREFIX = ".strongroom-restore-"
_RESTORE_RE = re.compile(r"^\.strongroom-restore-.+\.(\d+)$")


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
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # a file name that is not UTF-8: escaped, read back as is
        data = (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("ascii")
    atomic_write_bytes(path, data, mode)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def clean_stale_temps(directory, pattern=_TEMP_RE):
    """Remove temp files left by runs that were killed; a live run's temps are kept."""
    removed = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return removed
    for entry in entries:
        m = pattern.match(entry.name)
        if not m:
            continue
        pid = int(m.group(1))
        if pid == os.getpid() or pid_alive(pid):
            continue
        if entry.is_dir(follow_symlinks=False):
            rmtree(entry.path)
        else:
            os.unlink(entry.path)
        removed.append(entry.name)
    return removed


def restore_temp(final):
    """A temp name for a restore beside `final`, in a folder the user owns."""
    final = Path(final)
    return final.with_name(f"{RESTORE_PREFIX}{final.name}.{os.getpid()}")


def clean_stale_restores(directory):
    """What killed restores left in `directory`: only names of our own restore prefix."""
    return clean_stale_temps(directory, _RESTORE_RE)


def rmtree(path):
    """shutil.rmtree without its recursion (a tree deeper than Python's recursion limit
    must still be removable), never following a symlink, lifting nothing."""
    path = os.fspath(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    stack = [(path, False)]
    while stack:
        current, emptied = stack.pop()
        if emptied:
            os.rmdir(current)
            continue
        stack.append((current, True))
        with os.scandir(current) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, False))
                else:
                    os.unlink(entry.path)


def walk(root):
    """(relative path, is_dir) of everything below root, parents before children, never
    following a symlink, without recursion (Path.rglob and os.walk recurse per level on
    Python 3.11, and a real tree can be deeper than the recursion limit)."""
    root = os.fspath(root)
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            with os.scandir(os.path.join(root, rel_dir) if rel_dir else root) as it:
                entries = sorted(it, key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            continue
        subdirs = []
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            is_dir = entry.is_dir(follow_symlinks=False)
            yield rel, is_dir
            if is_dir:
                subdirs.append(rel)
        stack.extend(reversed(subdirs))


def makedirs(path, mode=0o777):
    """os.makedirs(exist_ok=True) without its recursion."""
    make_parents(path, mode)


def rmtree_quiet(path):
    """rmtree for cleanup after a failure: what cannot be removed is left, never raised."""
    with contextlib.suppress(OSError):
        rmtree(path)


def rmtree_settled(path, seconds=3.0):
    """rmtree_quiet after a killed command: a child of the killed git (index-pack) may
    still write a last file into the folder, so try again until it stays gone."""
    deadline = time.monotonic() + seconds
    while True:
        rmtree_quiet(path)
        if not os.path.lexists(path) or time.monotonic() > deadline:
            return
        time.sleep(0.1)


def make_parents(path, mode=0o777):
    """mkdir -p, returning the directories it made (so a refusal can remove them)."""
    made = []
    path = Path(path)
    for parent in reversed([path, *path.parents]):
        if not parent.is_dir():
            try:
                parent.mkdir(mode)
                made.append(parent)
            except FileExistsError:
                pass
    return made


def default_dir_mode():
    """The mode mkdir gives under the current umask (a restore builds in a 0700 folder and
    gives the result the mode a new folder would have had)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o777 & ~mask


def disk_full(path, below=1 << 20):
    """True when the filesystem holding path has (almost) no room left."""
    try:
        st = os.statvfs(path if os.path.exists(path) else os.path.dirname(path))
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < below


def remove_made(made):
    for d in reversed(made):
        with contextlib.suppress(OSError):
            d.rmdir()


def sha256_file(path, follow=True):
    """SHA-256 of a regular file; OSError for a FIFO or a device (which would block or
    never end), and with follow=False for a symlink too (a store's files are its own)."""
    from .safeio import UnsafePath, open_regular

    h = hashlib.sha256()
    try:
        fh = open_regular(path, follow=follow)
    except UnsafePath as exc:
        raise OSError(errno.EINVAL, str(exc)) from None
    with fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def copy_hashing(src, dst):
    """Copy src to dst (parents made, times kept) and return its SHA-256, in one read."""
    h = hashlib.sha256()
    makedirs(Path(dst).parent)
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


# --- hashing many small files ---------------------------------------------------------------
ONE_READ = 1 << 16  # files below this are read whole in one call


def sha256_stat(path):
    """(hex SHA-256, stat before, stat after) of the regular file at path, through one
    descriptor: a small file costs an open, a read and a close. A final symlink, a FIFO
    or a device is refused with OSError; comparing the two stats tells a caller whether
    the file changed while it was read."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", os.fspath(path))
        size = st.st_size
        if size < ONE_READ:
            data = os.read(fd, size + 1)
            h = hashlib.sha256(data)
            if len(data) != size:  # grew or shrank since the stat: read to the end
                while chunk := os.read(fd, CHUNK):
                    h.update(chunk)
        else:
            h = hashlib.sha256()
            while chunk := os.read(fd, CHUNK):
                h.update(chunk)
        st2 = os.fstat(fd)
    finally:
        os.close(fd)
    return h.hexdigest(), st, st2
