"""Thin, explicit calls to git: argv lists, LC_ALL=C, stderr kept for the message."""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from .errors import StrongroomError

# Directories never searched for repositories: git's own, dependency trees, virtualenvs.
SKIP_DIRS = {".git", "node_modules", "__pycache__", "venv", ".venv", ".tox", ".mypy_cache"}
# Never run code a repository's config asks for while we only read it.
SAFE_CONFIG = ["-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null"]


class GitError(StrongroomError):
    def __init__(self, argv, rc, stderr):
        self.argv, self.rc, self.stderr = argv, rc, stderr.strip()
        super().__init__(f"git {' '.join(argv)} failed (exit {rc}): {self.stderr}")


def _env():
    env = dict(os.environ)
    env.update(LC_ALL="C", LANG="C", GIT_TERMINAL_PROMPT="0", GIT_OPTIONAL_LOCKS="0")
    return env


def git_argv(repo, *args):
    return ["git", *SAFE_CONFIG, "-C", str(repo), *args]


def git_env():
    return _env()


class GitTimeout(GitError):
    """A git command (a fetch or push over a stalled transport) ran past its bound."""

    def __init__(self, argv, seconds):
        self.seconds = seconds
        StrongroomError.__init__(self, f"git {' '.join(argv)} made no progress within "
                                       f"{seconds:g} s and was stopped (a stalled connection?)")
        self.argv, self.rc, self.stderr = argv, None, ""


def git(repo, *args, input=None, check=True, binary=False, timeout=None, env=None):
    """Run git in repo; with `timeout`, the command and everything it started (ssh) is
    killed when it runs longer, and GitTimeout raised."""
    full_env = _env()
    full_env.update(env or {})
    # names from the file system need not be UTF-8: they pass through as they are
    data = input if binary or input is None else input.encode("utf-8", "surrogateescape")
    if timeout is None:
        proc = subprocess.run(git_argv(repo, *args), input=data, capture_output=True,
                              env=full_env, check=False)
    else:
        proc = _bounded(git_argv(repo, *args), data, full_env, timeout, list(args))
    if check and proc.returncode != 0:
        raise GitError(list(args), proc.returncode, proc.stderr.decode("utf-8", "replace"))
    if not binary:
        proc.stdout = proc.stdout.decode("utf-8", "surrogateescape")
        proc.stderr = proc.stderr.decode("utf-8", "replace")
    return proc


def _bounded(argv, data, env, timeout, args):
    popen = subprocess.Popen(argv, stdin=subprocess.PIPE if data is not None else
                             subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env, start_new_session=True)
    try:
        out, err = popen.communicate(data, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(popen.pid, signal.SIGKILL)
        popen.communicate()
        raise GitTimeout(args, timeout) from None
    except BaseException:
        os.killpg(popen.pid, signal.SIGKILL)
        popen.wait()
        raise
    return subprocess.CompletedProcess(argv, popen.returncode, out, err)


def _is_bare_dir(path):
    return (path / "HEAD").is_file() and (path / "objects").is_dir() and (path / "refs").is_dir()


def _is_linked_worktree(dotgit):
    """A `git worktree add` checkout shares its refs with the main repository: skip it."""
    if not dotgit.is_file():
        return False
    try:
        text = dotgit.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "/worktrees/" in text


def find_repositories(root):
    """Every repository under root as (name, path); name is the path relative to root."""
    root = Path(root)
    found = []
    stack = [root]  # depth first, a loop not a recursion: a tree may be deeper than Python's
    while stack:
        here = stack.pop()
        dotgit = here / ".git"
        if dotgit.exists() and not _is_linked_worktree(dotgit):
            found.append(here)
        elif here != root and _is_bare_dir(here):
            found.append(here)
            continue  # a bare repository's insides are git's own
        try:
            with os.scandir(here) as it:
                subdirs = sorted(e.name for e in it if e.is_dir(follow_symlinks=False))
        except OSError:
            continue
        stack.extend(reversed([here / d for d in subdirs if d not in SKIP_DIRS
                               and not (here / d / "pyvenv.cfg").exists()]))
    named = []
    for path in found:
        rel = path.relative_to(root).as_posix()
        named.append((rel if rel != "." else root.resolve().name, path))
    return named


class RepoState:
    """What a repository looks like now: its git dir, kind, HEAD and every ref tip."""

    def __init__(self, path):
        self.path = Path(path)
        out = git(
            path, "rev-parse", "--absolute-git-dir", "--is-bare-repository",
            "--is-shallow-repository",
        ).stdout.split("\n")
        self.git_dir = Path(out[0])
        self.bare = out[1] == "true"
        self.shallow = out[2] == "true"
        self.refs, self.symrefs = read_refs(path)
        self.head = read_head(path, self.git_dir)
        self.stash = read_stash(path) if "refs/stash" in self.refs else []


def read_stash(path):
    """Every stash entry, newest first, as [sha, message]. refs/stash holds only the
    newest; the others live in its reflog, which no bundle carries."""
    proc = git(path, "reflog", "show", "--format=%H%x00%gs", "refs/stash", "--", check=False)
    if proc.returncode != 0:
        return []
    out = []
    for line in proc.stdout.splitlines():
        sha, _, message = line.partition("\0")
        if re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", sha):
            out.append([sha, message])
    return out


def restore_stash(repo, entries):
    """Rebuild refs/stash and its reflog from [sha, message] entries, newest first, so
    `git stash list` shows every entry as it was."""
    if not entries:
        return
    git(repo, "update-ref", "-d", "refs/stash", check=False)
    for sha, message in reversed(entries):
        git(repo, "update-ref", "--create-reflog", "-m", message or "stash", "refs/stash", sha)


def read_refs(path):
    """All refs (branches, tags, notes, remotes, stash) as {name: sha}, symbolic ones apart."""
    out = git(path, "for-each-ref", "--format=%(objectname) %(refname) %(symref)").stdout
    refs, symrefs = {}, {}
    for line in out.splitlines():
        sha, name, target = (line.split(" ", 2) + [""])[:3]
        if target:
            symrefs[name] = target
        else:
            refs[name] = sha
    return refs, symrefs


def read_head(path, git_dir):
    """HEAD as 'ref: refs/heads/x' or a detached sha (None when unreadable)."""
    try:
        text = (Path(git_dir) / "HEAD").read_text(encoding="utf-8").strip()
    except OSError:
        text = ""
    if text.startswith("ref: ") and not text.endswith(".invalid"):
        return text
    if len(text) in (40, 64):
        return text
    proc = git(path, "symbolic-ref", "-q", "HEAD", check=False)
    if proc.returncode == 0:
        return "ref: " + proc.stdout.strip()
    proc = git(path, "rev-parse", "--verify", "-q", "HEAD", check=False)
    return proc.stdout.strip() or None


def existing_objects(path, shas):
    """The subset of `shas` present in the repository (tips may be gone after a gc)."""
    shas = sorted(set(shas))
    if not shas:
        return set()
    out = git(path, "cat-file", "--batch-check=%(objectname) %(objecttype)",
              input="\n".join(shas) + "\n").stdout
    return {line.split()[0] for line in out.splitlines() if not line.endswith(" missing")}


# --- checking a restored history -------------------------------------------------------

_FSCK_WARNING = re.compile(r"^warning in (\w+) ([0-9a-f]{40}|[0-9a-f]{64}): (\w+): ")


def fsck_history(repo, source=None):
    """(status, text) for a restored repository: 'error' for damage, 'warning' or 'ok'.

    `git fsck --full` without --strict checks every object's hash, its content and every
    link: what it reports as an error is damage. What --strict adds are its warnings
    (zero-padded file modes, odd dates and the like): formats old git versions wrote,
    whose hashes check out. They pass when the source repository has the same objects
    (same id, same bytes); objects the source lacks, or a source not on this machine,
    make the result a warning that names them, never a pass that hides them."""
    proc = git(repo, "fsck", "--full", "--no-dangling", check=False)
    lines = [ln for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if ln.strip()]
    if proc.returncode != 0:
        errors = [ln for ln in lines if not ln.startswith("warning")] or lines or ["?"]
        return "error", "git fsck --full failed (damage): " + "; ".join(errors[-3:])
    legacy = {}
    for ln in lines:
        m = _FSCK_WARNING.match(ln)
        if m:
            legacy.setdefault(m.group(3), set()).add((m.group(1), m.group(2)))
    if not legacy:
        return "ok", "fsck --full --strict clean"
    kinds = ", ".join(sorted(legacy))
    objects = {oid for found in legacy.values() for _, oid in found}
    shared, why = set(), "not compared: the source repository is not on this machine"
    store = _object_store(source)
    if store:
        try:
            shared = objects_in(store, objects)
            why = "the source repository does not have them"
        except (StrongroomError, OSError):
            why = f"not compared: the source {source} could not be read"
    unshared = sorted(objects - shared)
    if not unshared:
        return "ok", (f"fsck --full clean; legacy formats the source has too ({kinds} in "
                      f"{len(objects)} object(s)) are not damage")
    return "warning", (f"git fsck --strict would fail on {kinds} in {len(unshared)} "
                       f"object(s), e.g. {unshared[0][:12]} ({why}); their hashes check "
                       "out, so this is an old format, not damage")


def _object_store(source):
    """The objects folder of the repository at `source` (a path read from a manifest, so
    hostile until checked), or None."""
    if not isinstance(source, str) or not source.startswith("/"):
        return None
    for candidate in (Path(source) / ".git" / "objects", Path(source) / "objects"):
        if candidate.is_dir() and not candidate.is_symlink():
            return candidate
    return None


def objects_in(object_dir, shas):
    """The subset of `shas` present in the object folder `object_dir`, asked through a
    throw-away repository that only borrows those objects (alternates). git reads no
    config, hook or promisor remote of the repository they belong to, so a path from
    metadata can never make it run a command or fetch."""
    import tempfile

    shas = sorted(set(shas))
    if not shas:
        return set()
    nested = Path(object_dir) / "info" / "alternates"
    if nested.is_symlink() or (nested.exists() and not nested.is_file()):
        raise StrongroomError(f"{nested} is not a regular file")  # a FIFO would block git
    with tempfile.TemporaryDirectory(prefix="strongroom-objects-") as tmp:
        git(tmp, "init", "-q", "--bare")
        (Path(tmp) / "objects" / "info" / "alternates").write_text(f"{object_dir}\n")
        # bounded: a FIFO among the objects would otherwise hold the drill forever
        out = git(tmp, "cat-file", "--batch-check=%(objectname) %(objecttype)",
                  input="\n".join(shas) + "\n", timeout=60).stdout
    return {line.split()[0] for line in out.splitlines() if not line.endswith(" missing")}


# --- leftover git lock files -------------------------------------------------------------

LOCK_GRACE_SECONDS = 60


def git_lock_files(git_dir):
    git_dir = Path(git_dir)
    found = [p for p in git_dir.glob("*.lock") if p.is_file()]
    refs = git_dir / "refs"
    if refs.is_dir():
        found += [p for p in refs.rglob("*.lock") if p.is_file()]
    return found


def processes_using(paths):
    """PIDs whose working directory or open files lie under any of `paths` (Linux /proc)."""
    prefixes = [os.path.realpath(p) for p in paths]

    def inside(target):
        return any(target == p or target.startswith(p + os.sep) for p in prefixes)

    users = set()
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if inside(os.readlink(f"/proc/{entry.name}/cwd")):
                users.add(int(entry.name))
                continue
            for fd in os.scandir(f"/proc/{entry.name}/fd"):
                if inside(os.readlink(fd.path)):
                    users.add(int(entry.name))
                    break
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return users


def clean_stale_git_locks(repo_path, git_dir, now=None):
    """Remove git .lock files whose owner is gone; report live ones. Returns (removed, live).

    git writes no PID into its lock files, so "owner gone" means: no process has its
    working directory in, or a file open under, the repository, and the lock is older
    than a grace period (a git that is just starting has not yet opened anything).
    """
    locks = git_lock_files(git_dir)
    if not locks:
        return [], []
    if not os.path.isdir("/proc"):
        return [], [str(p) for p in locks]  # cannot tell the owner here: never guess
    now = time.time() if now is None else now
    busy = processes_using([repo_path, git_dir])
    removed, live = [], []
    for lock in locks:
        try:
            age = now - lock.stat().st_mtime
        except FileNotFoundError:
            continue
        if busy or age < LOCK_GRACE_SECONDS:
            live.append(str(lock))
        else:
            lock.unlink(missing_ok=True)
            removed.append(str(lock))
    return removed, live
