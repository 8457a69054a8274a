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
"""

import contextlib
import errno
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
        self.fd = os.open(self.path, _DIR_FLAGS)
        self._dirs = {"": self.fd}

    def close(self):
        for fd in set(self._dirs.values()):
            os.close(fd)
        self._dirs = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def dir_fd(self, rel_dir, create=False, mode=0o777):
        """An open descriptor of the directory rel_dir ('' is the root), made if asked."""
        if rel_dir in self._dirs:
            return self._dirs[rel_dir]
        parent, _, name = rel_dir.rpartition("/")
        pfd = self.dir_fd(parent, create, mode)
        if create:
            # an existing name is fine only if it is a real directory: the open tells
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, mode, dir_fd=pfd)
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
        except OSError as exc:
            if exc.errno in (_ELOOP, _ENOTDIR):
                raise UnsafePath(f"{rel_dir!r} in {self.path} is a symlink or not a "
                                 "directory; refusing to follow it") from None
            raise
        self._dirs[rel_dir] = fd
        return fd

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
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise UnsafePath(f"{rel!r} in {self.path} is not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")

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

    def realpath_inside(self, rel):
        """True when rel, with every symlink resolved, is still inside the root."""
        base = os.path.realpath(self.path)
        full = os.path.realpath(os.path.join(base, rel))
        return full == base or full.startswith(base + os.sep)


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


def check_member(m, seen_files=None):
    """Refuse what we never write: '..', absolute paths, links out, devices, fifos.

    `seen_files`, when given, holds the regular files met so far: a hard link may only
    point at one of them."""
    if m.name in (".", "./"):
        return None
    name = member_name(m)
    if m.ischr() or m.isblk() or m.isfifo() or m.isdev():
        raise UnsafeArchive(f"device or fifo in archive: {m.name!r}")
    if m.issym():
        _link_target(name, m.linkname)
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


def check_members(members):
    """The pre-scan: every member checked before anything is written."""
    files = set()
    for m in members:
        name = check_member(m, files)
        if name and (m.isreg() or m.islnk()):
            files.add(name)
    return len(members)


def extract(tar, target, only=None, refuse=None, progress=None):
    """Extract every member of `tar` (a stream is fine) into the existing dir `target`.

    only(name) -> bool skips members; refuse(name) -> message or None adds a rule of the
    caller's. Nothing is ever written outside target, through a link, or over an existing
    file (a member met twice is refused). Returns the names extracted. On UnsafeArchive the
    caller removes what was written (it extracts into a directory of its own)."""
    names, files, links, dirs = [], set(), [], []
    with Root(target) as root:
        for m in tar:
            if m.name in (".", "./"):
                continue
            name = check_member(m, files)
            if only is not None and not only(name):
                continue
            why = refuse(name) if refuse else None
            if why:
                raise UnsafeArchive(f"{why}: {m.name!r}")
            try:
                _extract_one(tar, m, name, root, files, links, dirs)
            except FileExistsError:
                raise UnsafeArchive(f"archive member {m.name!r} is there twice, or over "
                                    "something that exists; refusing to overwrite it") from None
            except UnsafePath as exc:
                raise UnsafeArchive(f"archive member {m.name!r}: {exc}") from None
            names.append(name)
            root.trim()
            if progress:
                progress(len(names))
        # every symlink once the whole tree exists: a chain of links must not lead out
        for name in links:
            if not root.realpath_inside(name):
                raise UnsafeArchive(f"link leaving the target in archive: {name!r}")
        for name, mode, mtime in reversed(dirs):  # deepest first: contents are written
            root.chmod_dir(name, mode)
            root.utime(name, mtime)
    return names


def _extract_one(tar, m, name, root, files, links, dirs):
    mtime = int(m.mtime) * 1_000_000_000
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
        links.append(name)
    elif m.islnk():
        root.link(clean_relpath(m.linkname), name)
        files.add(name)


def open_tar_stream(fileobj):
    """A tar reader over a pipe or file, members in archive order."""
    return tarfile.open(fileobj=fileobj, mode="r|")
