"""Reading and writing only inside one directory, whatever an archive or a metadata file says.

Every path that comes from an archive member, a REPORT.json, a manifest or a state file is
hostile until checked: `clean_relpath` refuses absolute paths, `..`, NUL and empty names,
and `Root` then walks the path one component at a time from an open directory with
O_NOFOLLOW, so a symlink anywhere on the way (planted in the archive, or already on disk)
can never carry a read or a write outside the root. Files are created with O_EXCL, so an
existing file or link is never written through.

`extract` unpacks a tar stream member by member with these primitives. It does what
`tarfile`'s 'data' filter does (which only exists from Python 3.11.4; Debian 12 has
3.11.2) and does not depend on it: the same code runs on every Python we support.

Nothing here recurses over path depth (a tree 2,000 levels deep is a tree), and nothing
opens a file that is not regular (a FIFO or a device would block or never end).
"""

import contextlib
import errno
import json
import os
import posixpath
import stat
import tarfile

from .errors import StrongroomError

CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# what open(O_NOFOLLOW) says when a component is a symlink, or a file where a dir should be
_ELOOP, _ENOTDIR = errno.ELOOP, errno.ENOTDIR


class UnsafePath(StrongroomError):
    """A path from an archive or metadata that would leave its root."""


class UnsafeArchive(UnsafePath):
    """An archive member that would land outside the target, or that we never write."""


JSON_MAX = 64 << 20  # our metadata files are kilobytes to megabytes


def load_json(data, what):
    """Parse metadata bytes; ValueError (never RecursionError or a decode error) when they
    are not the JSON we write."""
    if len(data) > JSON_MAX:
        raise ValueError(f"{what} is {len(data)} bytes, larger than any we write")
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"{what} is not valid JSON: {str(exc)[:120]}") from None


def open_regular(path, follow=False):
    """Open `path` for reading only if it is a regular file (never a FIFO, which would
    block, or a device, which never ends), not following a final symlink unless asked."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(f"{path} is a symlink; refusing to read through it") from None
        raise
    return _regular(fd, path)


def _regular(fd, what):
    """The descriptor as a file object if it is a regular file (opened O_NONBLOCK, so a
    FIFO did not block the open), else closed and refused."""
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UnsafePath(f"{what} is not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_regular(path, limit=JSON_MAX, follow=False):
    """The bytes of a regular file of at most `limit` bytes (metadata, not archives)."""
    with open_regular(path, follow) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise UnsafePath(f"{path} is larger than {limit} bytes; not a file we wrote")
    return data


def clean_relpath(name, what="path"):
    """`name` as a normalised relative POSIX path ('a/b'), or UnsafePath."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise UnsafePath(f"{what} {name!r} is not a usable relative path")
    if name.startswith("/"):
        raise UnsafePath(f"absolute {what}: {name!r}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafePath(f"{what} leaving its directory: {name!r}")
    if not parts:
        raise UnsafePath(f"{what} {name!r} names no file")
    return "/".join(parts)


# Code points HFS+ ignores in names (git's own list): ".g\u200cit" is ".git" there.
_IGNORABLE = dict.fromkeys([0x200C, 0x200D, 0x200E, 0x200F, 0x202A, 0x202B, 0x202C, 0x202D,
                            0x202E, 0x206A, 0x206B, 0x206C, 0x206D, 0x206E, 0x206F, 0xFEFF])


def folded(part):
    """A name as a case-insensitive filesystem sees it: case, trailing dots and spaces
    (NTFS) and the code points HFS+ ignores taken out."""
    return part.translate(_IGNORABLE).casefold().rstrip(". ")


def is_dotgit(part):
    """True for a path component some filesystem git runs on takes for `.git` (the short
    name `git~1` on NTFS included). A restore never writes such a name: git reads config
    and hooks from it."""
    return folded(part) in (".git", "git~1")


def inside(rel, prefix):
    """True when the clean relative path `rel` is `prefix` or below it."""
    return rel == prefix or rel.startswith(prefix + "/")


def safe_mode(mode, kind):
    """Modes as the 'data' filter keeps them: no setuid, setgid or sticky bit, no group or
    other write; a file stays readable and writable by its owner, a directory usable."""
    mode = stat.S_IMODE(mode) & 0o755
    if kind == "file":
        if not mode & 0o100:
            mode &= ~0o111
        return mode | 0o600
    return mode | 0o700


class Root:
    """A directory opened once; paths below it are walked without following symlinks.

    Directory descriptors are cached: a directory we opened or made stays that directory
    (a later attempt to put a symlink in its place fails with EEXIST)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        try:  # the root itself may be a link the user made (a store on another disk)
            self.fd = os.open(self.path, _DIR_FLAGS & ~os.O_NOFOLLOW)
        except OSError as exc:
            if exc.errno in (_ELOOP, _ENOTDIR):
                raise UnsafePath(f"{self.path} is a symlink or not a directory") from None
            raise
        self._dirs = {"": self.fd}
        self.created = []  # directories this Root made, in order: removed on a refusal

    def close(self):
        for fd in set(self._dirs.values()):
            os.close(fd)
        self._dirs = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def dir_fd(self, rel_dir, create=False, mode=0o777):
        """An open descriptor of the directory rel_dir ('' is the root), made if asked.

        Walked from the deepest directory already open, one component at a time (a loop,
        not a recursion: depth is the tree's business)."""
        if rel_dir in self._dirs:
            return self._dirs[rel_dir]
        parts = rel_dir.split("/")
        known = len(parts) - 1
        while known > 0 and "/".join(parts[:known]) not in self._dirs:
            known -= 1
        fd = self._dirs["/".join(parts[:known])]
        for i in range(known, len(parts)):
            sub, name = "/".join(parts[:i + 1]), parts[i]
            if create:
                # an existing name is fine only if it is a real directory: the open tells
                try:
                    os.mkdir(name, mode, dir_fd=fd)
                    self.created.append(sub)
                except FileExistsError:
                    pass
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (_ELOOP, _ENOTDIR):
                    raise UnsafePath(f"{sub!r} in {self.path} is a symlink or not a "
                                     "directory; refusing to follow it") from None
                raise
            self._dirs[sub] = fd
        return fd

    def remove_created(self):
        """Remove the directories this Root made, deepest first, where they are empty
        (after a refusal: the target is left as it was)."""
        for rel in reversed(self.created):
            parent, _, name = rel.rpartition("/")
            with contextlib.suppress(OSError, UnsafePath):
                os.rmdir(name, dir_fd=self.dir_fd(parent))
        self.created = []

    def trim(self, keep=256):
        """Close cached directories beyond `keep` (between operations, never during one:
        a descriptor handed out must stay open until its caller is done)."""
        if len(self._dirs) > 2 * keep:
            for key in [k for k in self._dirs if k][:-keep]:
                os.close(self._dirs.pop(key))

    def _split(self, rel):
        rel = clean_relpath(rel)
        parent, _, name = rel.rpartition("/")
        return rel, parent, name

    def open_read(self, rel):
        """A binary file object for the regular file rel; UnsafePath for anything else."""
        rel, parent, name = self._split(rel)
        pfd = self.dir_fd(parent)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                         dir_fd=pfd)
        except OSError as exc:
            if exc.errno in (_ELOOP, _ENOTDIR):
                raise UnsafePath(f"{rel!r} in {self.path} is a symlink; refusing to read "
                                 "through it") from None
            raise
        return _regular(fd, f"{rel!r} in {self.path}")

    def lstat(self, rel):
        rel, parent, name = self._split(rel)
        return os.stat(name, dir_fd=self.dir_fd(parent), follow_symlinks=False)

    def exists(self, rel):
        try:
            self.lstat(rel)
            return True
        except FileNotFoundError:
            return False
        except UnsafePath:
            return True  # something is in the way: not free to write

    def create(self, rel, mode=0o600, parents=True, dir_mode=0o777):
        """A new file rel (O_EXCL: never an existing file or link), opened for writing."""
        rel, parent, name = self._split(rel)
        pfd = self.dir_fd(parent, create=parents, mode=dir_mode)
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     mode, dir_fd=pfd)
        return os.fdopen(fd, "wb")

    def mkdir(self, rel, mode=0o700):
        """Make (or reuse a real) directory rel; a symlink or file in the way is refused."""
        rel = clean_relpath(rel)
        return self.dir_fd(rel, create=True, mode=mode)

    def symlink(self, rel, target):
        rel, parent, name = self._split(rel)
        os.symlink(target, name, dir_fd=self.dir_fd(parent, create=True))

    def link(self, src_rel, dst_rel):
        src_rel, sparent, sname = self._split(src_rel)
        dst_rel, dparent, dname = self._split(dst_rel)
        os.link(sname, dname, src_dir_fd=self.dir_fd(sparent),
                dst_dir_fd=self.dir_fd(dparent, create=True), follow_symlinks=False)

    def rename(self, src_rel, dst_rel):
        src_rel, sparent, sname = self._split(src_rel)
        dst_rel, dparent, dname = self._split(dst_rel)
        os.rename(sname, dname, src_dir_fd=self.dir_fd(sparent),
                  dst_dir_fd=self.dir_fd(dparent))

    def unlink(self, rel):
        rel, parent, name = self._split(rel)
        os.unlink(name, dir_fd=self.dir_fd(parent))

    def utime(self, rel, mtime_ns):
        rel, parent, name = self._split(rel)
        os.utime(name, ns=(mtime_ns, mtime_ns), dir_fd=self.dir_fd(parent),
                 follow_symlinks=False)

    def chmod_dir(self, rel, mode):
        os.chmod(self.dir_fd(rel), mode)

    def readlink(self, rel):
        rel, parent, name = self._split(rel)
        return os.readlink(name, dir_fd=self.dir_fd(parent))

    def link_stays_inside(self, rel, max_hops=40):
        """True when the symlink rel, resolved link by link inside the root, never goes
        above it. Resolved by hand, not by realpath: the answer must not depend on the
        root's own name or on what lies around it (a restore is built beside its target
        and renamed)."""
        target = self.readlink(rel)
        if target.startswith("/"):
            return False
        queue = rel.split("/")[:-1] + target.split("/")
        done, hops = [], 0
        while queue:
            part = queue.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if not done:
                    return False
                done.pop()
                continue
            done.append(part)
            try:
                st = os.lstat(os.path.join(self.path, *done))
            except OSError:
                continue  # not there (yet): the rest is read as it is written
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                target = os.readlink(os.path.join(self.path, *done))
                if hops > max_hops or target.startswith("/"):
                    return False
                done.pop()
                queue[:0] = target.split("/")
        return True


def copy_in(src_root, src_rel, dst_root, dst_rel, mode=0o600):
    """Copy a regular file between two roots, both walked safely; returns its SHA-256."""
    import hashlib

    h = hashlib.sha256()
    with src_root.open_read(src_rel) as fi, dst_root.create(dst_rel, mode) as fo:
        while chunk := fi.read(CHUNK):
            h.update(chunk)
            fo.write(chunk)
        os.fchmod(fo.fileno(), mode)
        st = os.fstat(fi.fileno())
        fo.flush()
        os.utime(fo.fileno(), ns=(st.st_atime_ns, st.st_mtime_ns))
    return h.hexdigest()


# --- tar members ------------------------------------------------------------------------

LINKS = ("inside", "any")
MTIME_MAX = 1 << 40  # seconds: far beyond any real file, far below an overflow


def _link_target(name, linkname):
    """Where a symlink member points, relative to the archive root, or UnsafeArchive."""
    if not linkname or "\0" in linkname:
        raise UnsafeArchive(f"symlink with an empty target in archive: {name!r}")
    if linkname.startswith("/"):
        raise UnsafeArchive(f"link leaving the target in archive: {name!r} -> {linkname!r}")
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(name), linkname))
    if joined == ".." or joined.startswith("../"):
        raise UnsafeArchive(f"link leaving the target in archive: {name!r} -> {linkname!r}")
    return joined


def member_name(m):
    try:
        return clean_relpath(m.name, "archive member")
    except UnsafePath as exc:
        raise UnsafeArchive(f"path leaving the target in archive: {m.name!r}") from exc


def _mtime_ns(m):
    mtime = m.mtime
    if not isinstance(mtime, (int, float)) or mtime != mtime or not -MTIME_MAX < mtime < MTIME_MAX:
        raise UnsafeArchive(f"archive member {m.name!r} has an impossible time {mtime!r}")
    return int(mtime) * 1_000_000_000


def check_member(m, seen_files=None, links="inside"):
    """Refuse what we never write: '..', absolute paths, devices, fifos, impossible times,
    hard links to anything but a file met before, and (links='inside') symlinks that
    leave the target. With links='any' (a snapshot of the user's own tree, restored as it
    was) a symlink may point anywhere: nothing is ever written through one.

    `seen_files`, when given, holds the regular files met so far."""
    if m.name in (".", "./"):
        return None
    name = member_name(m)
    _mtime_ns(m)
    if m.ischr() or m.isblk() or m.isfifo() or m.isdev():
        raise UnsafeArchive(f"device or fifo in archive: {m.name!r}")
    if m.issym():
        if links == "inside":
            _link_target(name, m.linkname)
        elif not m.linkname or "\0" in m.linkname:
            raise UnsafeArchive(f"symlink with an empty target in archive: {m.name!r}")
    elif m.islnk():
        try:
            target = clean_relpath(m.linkname, "hard link target")
        except UnsafePath:
            raise UnsafeArchive(f"link leaving the target in archive: {m.name!r} -> "
                                f"{m.linkname!r}") from None
        if seen_files is not None and target not in seen_files:
            raise UnsafeArchive(f"hard link to a file the archive did not hold before it: "
                                f"{m.name!r} -> {m.linkname!r}")
    elif not (m.isreg() or m.isdir()):
        raise UnsafeArchive(f"unsupported member type in archive: {m.name!r}")
    return name


def _forget(tar):
    """tarfile keeps every member it has read; reading a stream we need none of them
    back, and a million members would hold half a gigabyte."""
    if not getattr(tar, "_loaded", True) and len(tar.members) > 1000:
        del tar.members[:]


def check_members(members, links="inside"):
    """The pre-scan: every member checked before anything is written."""
    files, count = set(), 0
    for m in members:
        name = check_member(m, files, links)
        if name and (m.isreg() or m.islnk()):
            files.add(name)
        count += 1
    return count


def scan(tar, links="inside", refuse=None):
    """The pre-scan of a stream: every member checked, nothing kept. Returns the count."""
    files, count = set(), 0
    for m in tar:
        name = check_member(m, files, links)
        if name and refuse:
            why = refuse(name, m)
            if why:
                raise UnsafeArchive(f"{why}: {m.name!r}")
        if name and (m.isreg() or m.islnk()):
            files.add(name)
        count += 1
        _forget(tar)
    return count


def extract(tar, target, only=None, refuse=None, links="inside", progress=None):
    """Extract every member of `tar` (a stream is fine) into the existing dir `target`.

    only(name) -> bool skips members; refuse(name, member) -> message or None adds a rule
    of the caller's. Nothing is ever written outside target, through a link, or over an
    existing file (a member met twice is refused). With links='inside' every symlink is
    checked again once the whole tree exists, link by link, so a chain of links cannot
    lead out. Returns the names extracted. On UnsafeArchive the caller removes what was
    written (it extracts into a directory of its own)."""
    if links not in LINKS:
        raise ValueError(f"links must be one of {LINKS}")
    names, files, symlinks, dirs = [], set(), [], []
    with Root(target) as root:
        for m in tar:
            if m.name in (".", "./"):
                continue
            name = check_member(m, files, links)
            if only is not None and not only(name):
                if m.isreg() or m.islnk():
                    files.add(name)  # skipped, yet a later hard link may name it
                continue
            why = refuse(name, m) if refuse else None
            if why:
                raise UnsafeArchive(f"{why}: {m.name!r}")
            try:
                _extract_one(tar, m, name, root, files, symlinks, dirs)
            except FileExistsError:
                raise UnsafeArchive(f"archive member {m.name!r} is there twice, or over "
                                    "something that exists; refusing to overwrite it") from None
            except FileNotFoundError:
                if m.islnk():  # its file was skipped by `only`
                    raise UnsafeArchive(f"hard link to a file outside what is restored: "
                                        f"{m.name!r} -> {m.linkname!r}") from None
                raise
            except UnsafePath as exc:
                raise UnsafeArchive(f"archive member {m.name!r}: {exc}") from None
            names.append(name)
            root.trim()
            _forget(tar)
            if progress:
                progress(len(names))
        if links == "inside":
            for name in symlinks:
                if not root.link_stays_inside(name):
                    raise UnsafeArchive(f"link leaving the target in archive: {name!r}")
        for name, mode, mtime in reversed(dirs):  # deepest first: contents are written
            root.chmod_dir(name, mode)
            root.utime(name, mtime)
    return names


def _extract_one(tar, m, name, root, files, symlinks, dirs):
    mtime = _mtime_ns(m)
    if m.isdir():
        root.mkdir(name, 0o700)
        dirs.append((name, safe_mode(m.mode, "dir"), mtime))
    elif m.isreg():
        mode = safe_mode(m.mode, "file")
        src = tar.extractfile(m)
        with root.create(name, 0o600) as out:
            while chunk := src.read(CHUNK):
                out.write(chunk)
            out.flush()
            os.fchmod(out.fileno(), mode)
            os.utime(out.fileno(), ns=(mtime, mtime))
        files.add(name)
    elif m.issym():
        root.symlink(name, m.linkname)
        symlinks.append(name)
    elif m.islnk():
        root.link(clean_relpath(m.linkname), name)
        files.add(name)


# what tarfile raises on malformed headers besides TarError (sparse maps, numbers)
TAR_ERRORS = (tarfile.TarError, EOFError, ValueError, OverflowError, UnicodeError)
