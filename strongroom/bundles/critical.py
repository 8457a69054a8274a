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

from ..core import fsutil, safeio
from ..core.errors import StrongroomError
from ..core.gitcmd import git

PER_REPO_FILE = ".strongroom-critical"


def default_patterns():
    """The critical patterns a bundle job has by default (its `critical_patterns`, from the
    job schema; read when used, as the jobs package imports this one)."""
    from ..jobs.schema import default

    return default("bundle", "critical_patterns")


def __getattr__(name):  # DEFAULT_PATTERNS, as before: the schema's list
    if name == "DEFAULT_PATTERNS":
        return default_patterns()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


def _by_content(repo_path, rel, keep):
    """True for a symlink whose target a restore would not bring back: it leads out of
    the repository, or to a file inside that is neither tracked nor packed (`keep`).
    What it points at is packed instead of the link, or a restore would give back a link
    to nothing (a link to /etc/app/.env backs up no secret)."""
    full = Path(repo_path) / rel
    if not full.is_symlink():
        return False
    base = os.path.realpath(repo_path)
    resolved = os.path.realpath(full)
    if not (resolved == base or resolved.startswith(base + os.sep)):
        return True
    return os.path.relpath(resolved, base).replace(os.sep, "/") not in keep


def plan(repo_path, files):
    """(packed as they are, packed by content, left out with why) for the chosen files."""
    tracked = set(_tracked_now(repo_path))
    keep = tracked | set(files)
    as_is, by_content, left = [], [], {}
    for rel in files:
        full = Path(repo_path) / rel
        if not _by_content(repo_path, rel, keep):
            as_is.append(rel)
        elif full.is_file():
            by_content.append(rel)
        else:
            left[rel] = ("a link to a folder" if full.is_dir() else "a link to nothing")
    return as_is, by_content, left


def _tracked_now(repo_path):
    proc = git(repo_path, "ls-files", "-z", check=False)
    return [p for p in proc.stdout.split("\0") if p] if proc.returncode == 0 else []


def digest(repo_path, files):
    """One hash over names, modes and contents: equal digest means nothing to re-pack."""
    h = hashlib.sha256()
    _, by_content, _ = plan(repo_path, files)
    for rel in files:
        full = Path(repo_path) / rel
        st = full.lstat()
        h.update(rel.encode("utf-8", "surrogateescape") + b"\0")
        h.update(f"{st.st_mode:o}\0".encode())
        if full.is_symlink():
            h.update(os.readlink(full).encode("utf-8", "surrogateescape"))
        if (not full.is_symlink() or rel in by_content) and full.is_file():
            h.update(fsutil.sha256_file(full).encode())
        h.update(b"\n")
    return h.hexdigest()


def pack(repo_path, files, temp_out):
    """Write files as tar.zst to temp_out (the caller renames it into place). Returns
    (the paths packed, those left out with why)."""
    # The pack holds secrets (.env, keys): readable by its owner only, from the first byte.
    as_is, by_content, left = plan(repo_path, files)
    fd = os.open(temp_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        proc = subprocess.Popen(["zstd", "-q", "-c", "-T0"], stdin=subprocess.PIPE, stdout=out,
                                stderr=subprocess.PIPE)
        try:
            with tarfile.open(fileobj=proc.stdin, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for rel in files:
                    full = Path(repo_path) / rel
                    if rel in by_content:
                        info = tar.gettarinfo(os.path.realpath(full), arcname=rel)
                        with open(full, "rb") as fh:
                            tar.addfile(info, fh)
                    elif rel in as_is:
                        tar.add(full, arcname=rel, recursive=False)
            proc.stdin.close()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        err = proc.stderr.read().decode("utf-8", "replace")
        if proc.wait() != 0:
            raise StrongroomError(f"zstd failed while packing critical files: {err.strip()}")
    return [f for f in files if f not in left], left


def tracked_paths(repo_path):
    """Every path tracked at HEAD (files and submodules), for refusing a pack that would
    plant one; empty when there is no commit yet."""
    proc = git(repo_path, "ls-tree", "-r", "-z", "--name-only", "--full-tree", "HEAD",
               check=False)
    return {p for p in proc.stdout.split("\0") if p} if proc.returncode == 0 else set()


def selector(repo_path, global_patterns):
    """Does a path match the critical patterns (the global ones, then the repository's
    own .strongroom-critical, negations included)? What a restore may put back."""
    import pathspec

    spec = pathspec.PathSpec.from_lines("gitwildmatch", read_patterns(repo_path,
                                                                      global_patterns))
    return spec.match_file


def pack_rule(tracked):
    """What a critical pack may hold: the files (and links among them) the critical
    patterns choose, and none that git tracks. Nothing under .git/ and nothing named HEAD
    (config and hooks run code at the user's next git command, and a folder with HEAD,
    objects/ and refs/ is a repository of its own, config included), no link into .git/,
    no directory."""
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


def unpack(pack_path, target, tracked=(), patterns=None):
    """Extract a critical-files pack into the restored work tree `target`.

    The whole pack is checked first (no '..', absolute paths, links out, devices, nothing
    under .git/ or named HEAD, nothing tracked, every path one the critical patterns in
    force choose: a store written by someone else cannot plant a Makefile, a .envrc or a
    virtualenv's activate script), then extracted member by member without following any
    link and without overwriting anything."""
    rule = pack_rule(set(tracked))
    chosen = selector(target, default_patterns() if patterns is None else patterns)
    strays = []

    def check(name, member):
        why = rule(name, member)
        if why is None and not chosen(name):
            strays.append(name)
        return why

    _pack_pass(pack_path, lambda tar: safeio.scan(tar, links="inside", refuse=check))
    if strays:
        raise StrongroomError(
            f"refusing critical-files pack {Path(pack_path).name}: {len(strays)} file(s) in "
            f"it are not chosen by the critical patterns in force, e.g. {strays[0]!r} (a pack "
            "holds what the patterns choose; if yours differed when it was made, give them "
            "with --critical PATTERN or --job NAME)")
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
