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


def digest(repo_path, files):
    """One hash over names, modes and contents: equal digest means nothing to re-pack."""
    h = hashlib.sha256()
    for rel in files:
        full = Path(repo_path) / rel
        st = full.lstat()
        h.update(rel.encode("utf-8", "surrogateescape") + b"\0")
        h.update(f"{st.st_mode:o}\0".encode())
        if full.is_symlink():
            h.update(os.readlink(full).encode("utf-8", "surrogateescape"))
        else:
            h.update(fsutil.sha256_file(full).encode())
        h.update(b"\n")
    return h.hexdigest()


def pack(repo_path, files, temp_out):
    """Write files as tar.zst to temp_out (the caller renames it into place)."""
    # The pack holds secrets (.env, keys): readable by its owner only, from the first byte.
    fd = os.open(temp_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        proc = subprocess.Popen(["zstd", "-q", "-c", "-T0"], stdin=subprocess.PIPE, stdout=out,
                                stderr=subprocess.PIPE)
        try:
            with tarfile.open(fileobj=proc.stdin, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for rel in files:
                    tar.add(Path(repo_path) / rel, arcname=rel, recursive=False)
            proc.stdin.close()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        err = proc.stderr.read().decode("utf-8", "replace")
        if proc.wait() != 0:
            raise StrongroomError(f"zstd failed while packing critical files: {err.strip()}")


def tracked_paths(repo_path):
    """Every path tracked at HEAD (files and submodules), for refusing a pack that would
    plant one; empty when there is no commit yet."""
    proc = git(repo_path, "ls-tree", "-r", "-z", "--name-only", "--full-tree", "HEAD",
               check=False)
    return {p for p in proc.stdout.split("\0") if p} if proc.returncode == 0 else set()


def pack_rule(tracked):
    """What a critical pack may hold: ignored work-tree files only. Nothing under .git/
    (config and hooks run code at the user's next git command) and nothing git tracks."""
    ancestors = {"/".join(p.split("/")[:i]) for p in tracked for i in range(1, p.count("/") + 1)}

    def refuse(name):
        parts = name.split("/")
        if any(part.lower() == ".git" for part in parts):
            return "a critical pack may not write into .git/"
        if name in tracked or name in ancestors:
            return "a critical pack may not replace a file git tracks"
        if any("/".join(parts[:i]) in tracked for i in range(1, len(parts))):
            return "a critical pack may not write below a file git tracks"
        return None

    return refuse


def unpack(pack_path, target, tracked=()):
    """Extract a critical-files pack into the restored work tree `target`.

    The whole pack is checked first (no '..', absolute paths, links out, devices, nothing
    under .git/, nothing in `tracked`), then extracted member by member without following
    any link and without overwriting anything."""
    rule = pack_rule(set(tracked))
    with tempfile.TemporaryDirectory(prefix="strongroom-critical-") as tmp:
        tar_path = os.path.join(tmp, "critical.tar")
        proc = subprocess.run(["zstd", "-q", "-d", "-f", "-o", tar_path, str(pack_path)],
                              capture_output=True, check=False)
        if proc.returncode != 0:
            raise StrongroomError(
                f"cannot decompress {pack_path}: {proc.stderr.decode(errors='replace').strip()}")
        try:
            with tarfile.open(tar_path, "r:") as tar:
                members = tar.getmembers()
                safeio.check_members(members)
                for m in members:
                    why = rule(safeio.member_name(m))
                    if why:
                        raise safeio.UnsafeArchive(f"{why}: {m.name!r}")
                return safeio.extract(tar, target, refuse=rule)
        except safeio.UnsafeArchive as exc:
            raise StrongroomError(f"refusing critical-files pack {Path(pack_path).name}: "
                                  f"{exc}") from None
        except tarfile.TarError as exc:
            raise StrongroomError(f"critical-files pack {Path(pack_path).name} is "
                                  f"unreadable: {exc}") from None


def test_pack(pack_path):
    """True when zstd can read the pack to its end."""
    return subprocess.run(["zstd", "-q", "-t", str(pack_path)], capture_output=True,
                          check=False).returncode == 0


