"""Critical files git ignores (.env, keys, certificates), chosen by gitignore-style patterns.

Selection uses git's own matcher (`ls-files -X` for the patterns, `check-ignore` for
"git ignores it"), so `!` negation, `/`-anchored and directory patterns mean exactly what
they mean in a .gitignore.
"""

import hashlib
import os
import subprocess
import tarfile
import tempfile
from pathlib import Path

from . import fsutil, safeio
from .errors import StrongroomError
from .gitcmd import git

PER_REPO_FILE = ".strongroom-critical"
DEFAULT_PATTERNS = [
    ".env",
    ".env.*",
    "!.env.example",
    "!.env.sample",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "id_rsa",
    "id_ed25519",
    "credentials.json",
    "secrets.yml",
    "secrets.yaml",
]


def read_patterns(repo_path, global_patterns):
    """Global patterns first, then the repository's own file, so it can negate them."""
    lines = list(global_patterns)
    own = Path(repo_path) / PER_REPO_FILE
    if own.is_file():
        lines += own.read_text(encoding="utf-8", errors="replace").splitlines()
    return [ln for ln in (x.rstrip("\n") for x in lines) if ln.strip() and not ln.startswith("#")]


def select(repo_path, global_patterns):
    """Relative paths of ignored files the patterns choose, sorted."""
    patterns = read_patterns(repo_path, global_patterns)
    if not patterns:
        return []
    with tempfile.NamedTemporaryFile("w", suffix=".patterns", encoding="utf-8") as fh:
        fh.write("\n".join(patterns) + "\n")
        fh.flush()
        chosen = git(repo_path, "ls-files", "-z", "--others", "--ignored",
                     f"--exclude-from={fh.name}").stdout
    candidates = [p for p in chosen.split("\0") if p]
    if not candidates:
        return []
    # check-ignore exits 1 when none of them is ignored: that is an answer, not a failure.
    proc = git(repo_path, "check-ignore", "-z", "--stdin", input="\0".join(candidates) + "\0",
               check=False)
    if proc.returncode not in (0, 1):
        raise StrongroomError(f"git check-ignore failed in {repo_path}: {proc.stderr.strip()}")
    return sorted(p for p in proc.stdout.split("\0") if p)


def _outside_link(repo_path, rel):
    """True for a symlink that leads out of the repository: what it points at is packed,
    not the link (a link to /etc/app/.env would back up nothing, and could not be put
    back without leaving the work tree)."""
    full = Path(repo_path) / rel
    if not full.is_symlink():
        return False
    base = os.path.realpath(repo_path)
    resolved = os.path.realpath(full)
    return not (resolved == base or resolved.startswith(base + os.sep))


def digest(repo_path, files):
    """One hash over names, modes and contents: equal digest means nothing to re-pack."""
    h = hashlib.sha256()
    for rel in files:
        full = Path(repo_path) / rel
        st = full.lstat()
        h.update(rel.encode("utf-8", "surrogateescape") + b"\0")
        h.update(f"{st.st_mode:o}\0".encode())
        if full.is_symlink() and not _outside_link(repo_path, rel):
            h.update(os.readlink(full).encode("utf-8", "surrogateescape"))
        elif full.is_file():
            h.update(fsutil.sha256_file(full).encode())
        h.update(b"\n")
    return h.hexdigest()


def pack(repo_path, files, temp_out):
    """Write files as tar.zst to temp_out (the caller renames it into place). Returns the
    paths packed as the content of a link that leads out of the repository."""
    # The pack holds secrets (.env, keys): readable by its owner only, from the first byte.
    fd = os.open(temp_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    followed = []
    with os.fdopen(fd, "wb") as out:
        proc = subprocess.Popen(["zstd", "-q", "-c", "-T0"], stdin=subprocess.PIPE, stdout=out,
                                stderr=subprocess.PIPE)
        try:
            with tarfile.open(fileobj=proc.stdin, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for rel in files:
                    full = Path(repo_path) / rel
                    if _outside_link(repo_path, rel):
                        if not full.is_file():
                            continue  # dangling, or not a file: nothing to keep
                        info = tar.gettarinfo(os.path.realpath(full), arcname=rel)
                        with open(full, "rb") as fh:
                            tar.addfile(info, fh)
                        followed.append(rel)
                    else:
                        tar.add(full, arcname=rel, recursive=False)
            proc.stdin.close()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        err = proc.stderr.read().decode("utf-8", "replace")
        if proc.wait() != 0:
            raise StrongroomError(f"zstd failed while packing critical files: {err.strip()}")
    return followed


def tracked_paths(repo_path):
    """Every path tracked at HEAD (files and submodules), for refusing a pack that would
    plant one; empty when there is no commit yet."""
    proc = git(repo_path, "ls-tree", "-r", "-z", "--name-only", "--full-tree", "HEAD",
               check=False)
    return {p for p in proc.stdout.split("\0") if p} if proc.returncode == 0 else set()


def ignored_paths(repo_path, names):
    """The subset of `names` git ignores in the (restored) work tree."""
    if not names:
        return set()
    proc = git(repo_path, "check-ignore", "-z", "--stdin", input="\0".join(names) + "\0",
               check=False)
    if proc.returncode not in (0, 1):
        raise StrongroomError(f"git check-ignore failed in {repo_path}: {proc.stderr.strip()}")
    return {p for p in proc.stdout.split("\0") if p}


def pack_rule(tracked):
    """What a critical pack may hold: ignored work-tree files (and links among them) only.
    Nothing under .git/ and nothing named HEAD (config and hooks run code at the user's
    next git command, and a folder with HEAD, objects/ and refs/ is a repository of its
    own, config included), no link into .git/, no directory, nothing git tracks."""
    ancestors = {"/".join(p.split("/")[:i]) for p in tracked for i in range(1, p.count("/") + 1)}

    def refuse(name, member=None):
        parts = name.split("/")
        if any(safeio.is_dotgit(part) for part in parts):
            return "a critical pack may not write into .git/"
        if safeio.folded(parts[-1]) == "head":
            return "a critical pack may not make a git repository (a file named HEAD)"
        if member is not None and member.isdir():
            return "a critical pack holds files, not directories"
        if member is not None and member.issym():
            target = os.path.normpath(os.path.join(os.path.dirname(name), member.linkname))
            if any(safeio.is_dotgit(part) for part in target.split(os.sep)):
                return "a critical pack may not link into .git/"
        if name in tracked or name in ancestors:
            return "a critical pack may not replace a file git tracks"
        if any("/".join(parts[:i]) in tracked for i in range(1, len(parts))):
            return "a critical pack may not write below a file git tracks"
        return None

    return refuse


def _pack_pass(pack_path, each):
    """Decompress the pack from the store (never through a link) and hand the tar to
    `each`: streamed, so no plaintext copy of the secrets lands in a temp folder."""
    try:
        packed = safeio.open_regular(pack_path)
    except safeio.UnsafePath as exc:
        raise StrongroomError(f"refusing critical-files pack {Path(pack_path).name}: {exc}") \
            from None
    with packed:
        proc = subprocess.Popen(["zstd", "-q", "-d", "-c"], stdin=packed,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        unreadable = None
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                out = each(tar)
        except safeio.UnsafeArchive as exc:
            raise StrongroomError(f"refusing critical-files pack {Path(pack_path).name}: "
                                  f"{exc}") from None
        except safeio.TAR_ERRORS as exc:
            unreadable = exc
        finally:
            proc.stdout.close()
            err = proc.stderr.read().decode(errors="replace").strip()
            proc.stderr.close()
            rc = proc.wait()
    if rc != 0:
        raise StrongroomError(f"cannot decompress {pack_path}: {err or f'exit {rc}'}")
    if unreadable is not None:
        raise StrongroomError(f"critical-files pack {Path(pack_path).name} is unreadable: "
                              f"{unreadable}")
    return out


def unpack(pack_path, target, tracked=()):
    """Extract a critical-files pack into the restored work tree `target`.

    The whole pack is checked first (no '..', absolute paths, links out, devices, nothing
    under .git/ or named HEAD, nothing tracked, every path one git ignores in `target`),
    then extracted member by member without following any link and without overwriting
    anything."""
    rule = pack_rule(set(tracked))
    names = []

    def collect(name, member):
        why = rule(name, member)
        if why is None:
            names.append(name)
        return why

    _pack_pass(pack_path, lambda tar: safeio.scan(tar, links="inside", refuse=collect))
    ignored = ignored_paths(target, names)
    strays = [n for n in names if n not in ignored]
    if strays:
        raise StrongroomError(
            f"refusing critical-files pack {Path(pack_path).name}: it holds "
            f"{len(strays)} path(s) the restored repository does not ignore (a pack holds "
            f"only ignored files), e.g. {strays[0]!r}")
    return _pack_pass(pack_path, lambda tar: safeio.extract(tar, target, refuse=rule))


def test_pack(pack_path):
    """True when zstd can read the pack (a regular file of the store) to its end."""
    try:
        packed = safeio.open_regular(pack_path)
    except (OSError, safeio.UnsafePath):
        return False
    with packed:
        return subprocess.run(["zstd", "-q", "-t"], stdin=packed, capture_output=True,
                              check=False).returncode == 0
