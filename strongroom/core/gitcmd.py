"""Thin, explicit calls to git: argv lists, LC_ALL=C, stderr kept for the message."""

import contextlib
import os
import re
import select
import selectors
import signal
import subprocess
import sys
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
    """A git command (a fetch or push over a stalled transport) was stopped: it made no
    progress for `seconds` (kind "idle"), or ran past its total cap (kind "total")."""

    def __init__(self, argv, seconds, kind="idle", stderr=""):
        self.seconds, self.kind = seconds, kind
        if kind == "total":
            text = f"ran longer than its limit of {seconds:g} s and was stopped"
        else:
            text = f"made no progress for {seconds:g} s and was stopped (a stalled connection?)"
        StrongroomError.__init__(self, f"git {' '.join(argv)} {text}")
        # what git said before it was stopped (its tail): context, not the message
        self.argv, self.rc, self.stderr = argv, None, stderr.strip()


def git(repo, *args, input=None, check=True, binary=False, timeout=None, env=None,
        watch=None, max_seconds=None):
    """Run git in repo.

    `timeout` is an idle bound: the command, and everything it started (ssh,
    index-pack), is stopped and GitTimeout raised only once it has made no progress for
    `timeout` seconds. Progress is new bytes on its stdout or stderr (pass --progress to
    fetch and push: git prints progress to stderr), input it accepted, or a change in the
    files named tmp_* or incoming-* in the directories `watch` lists (index-pack writes
    objects/pack/tmp_pack_* as data arrives and may print nothing). `max_seconds` is an
    optional cap on the total time (None: none).

    A bounded command also dies with us: should this process be killed (even SIGKILL), a
    watchdog stops its whole process group, and on Linux git itself gets SIGTERM from the
    kernel (PR_SET_PDEATHSIG), so no git, ssh or index-pack is left holding locks."""
    full_env = _env()
    full_env.update(env or {})
    # names from the file system need not be UTF-8: they pass through as they are
    data = input if binary or input is None else input.encode("utf-8", "surrogateescape")
    if timeout is None and max_seconds is None:
        proc = subprocess.run(git_argv(repo, *args), input=data, capture_output=True,
                              env=full_env, check=False)
    else:
        proc = _bounded(git_argv(repo, *args), data, full_env, list(args), idle=timeout,
                        watch=watch, max_seconds=max_seconds)
    if check and proc.returncode != 0:
        raise GitError(list(args), proc.returncode, proc.stderr.decode("utf-8", "replace"))
    if not binary:
        proc.stdout = proc.stdout.decode("utf-8", "surrogateescape")
        proc.stderr = proc.stderr.decode("utf-8", "replace")
    return proc


POLL_SECONDS = 0.5  # how often a bounded command's watched files and clocks are checked
STDERR_KEPT = 1 << 20  # bytes of a bounded command's stderr kept (the tail): progress is long
TERM_GRACE = 1.0  # seconds a stopped command has to remove its lock files before SIGKILL
DRAIN_GRACE = 1.0  # seconds, once git exited, its pipes are still read
_WATCHED_PREFIXES = ("tmp_", "incoming-")
_WATCH_ENTRIES = 20000  # files looked at per scan at most: a scan must stay cheap

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_pdeathsig = None  # (prctl, option, signal) resolved in the parent, never after fork; or False


def _child_setup():
    """A preexec_fn that has the kernel send the child SIGTERM when its parent dies
    (Linux PR_SET_PDEATHSIG), or None where that is unavailable (macOS: no prctl).

    Popen runs it after the setsid of start_new_session=True, in the child between fork
    and exec, so it only calls what the parent resolved: no import, no lookup.
    PR_SET_PDEATHSIG fires when the parent *thread* that forked the child exits, not only
    the process. That is harmless here: the thread that starts a bounded git (the main one
    in the CLI, a pool worker for objects_in) always waits for it before returning. The
    signal reaches git alone (git removes its lock files and stops its direct children);
    what those started is the watchdog's to stop, which also covers systems without
    prctl. (preexec_fn is documented as unsafe in threaded programs: it is kept to one
    call through a function and arguments resolved beforehand.)"""
    global _pdeathsig
    if _pdeathsig is None:
        found = False
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                found = (ctypes.CDLL(None, use_errno=True).prctl,
                         ctypes.c_int(PR_SET_PDEATHSIG), ctypes.c_ulong(signal.SIGTERM))
            except (OSError, AttributeError, ImportError):
                pass
        _pdeathsig = found
    if not _pdeathsig:
        return None
    (prctl, option, sig), parent = _pdeathsig, os.getpid()

    def setup():
        prctl(option, sig)
        if os.getppid() != parent:  # the parent died before the prctl took effect
            os._exit(125)

    return setup


def _watched_state(dirs):
    """(count, total size, sum of mtimes) of the tmp_* and incoming-* files in `dirs`
    (and inside such folders): any change means data is arriving."""
    count = size = mtimes = 0
    stack = [(str(d), False) for d in dirs]
    while stack and count < _WATCH_ENTRIES:
        here, inside = stack.pop()
        try:
            with os.scandir(here) as it:
                for entry in it:
                    if not inside and not entry.name.startswith(_WATCHED_PREFIXES):
                        continue
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append((entry.path, True))
                        elif entry.is_file(follow_symlinks=False):
                            st = entry.stat(follow_symlinks=False)
                            count, size, mtimes = count + 1, size + st.st_size, \
                                mtimes + st.st_mtime_ns
                    except OSError:
                        continue  # renamed or removed meanwhile: the next scan sees it
        except OSError:
            continue
    return count, size, mtimes


def _signal_group(popen, sig):
    # the group may be gone (macOS answers EPERM for a group of zombies)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(popen.pid, sig)


def _stop(popen):
    """Stop the command's whole process group: SIGTERM (git removes its lock files),
    then SIGKILL for whatever is left."""
    try:
        _signal_group(popen, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(TERM_GRACE)
    finally:
        _signal_group(popen, signal.SIGKILL)
        popen.wait()


# Stops a command's process group should the Python process die without doing so (a
# SIGKILL, the OOM killer): it reads the group id, then waits; "done" means all is well,
# end of file without it means we are gone. A separate process because nothing in the
# group can be trusted to do it: git forwards our death signal only to its own children,
# never to what they started (ssh under `sh -c`, a shell alias's commands).
_WATCHDOG = """read -r pgid || exit 0
read -r word
[ "$word" = done ] && exit 0
kill -s TERM -- "-$pgid" 2>/dev/null || exit 0
sleep 1
kill -s KILL -- "-$pgid" 2>/dev/null
exit 0"""


def _start_watchdog():
    try:
        return subprocess.Popen(["/bin/sh", "-c", _WATCHDOG, "strongroom-git-watchdog"],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError:
        return None  # no /bin/sh to spare: PR_SET_PDEATHSIG (Linux) still covers git


def _tell_watchdog(watchdog, line, last=False):
    if watchdog is None:
        return
    if line is not None:
        try:
            watchdog.stdin.write(line.encode() + b"\n")
            watchdog.stdin.flush()
        except OSError:
            pass  # it is gone: nothing to tell
    if last:
        with contextlib.suppress(OSError):
            watchdog.stdin.close()
        watchdog.wait()


def _bounded(argv, data, env, args, idle=None, watch=None, max_seconds=None):
    """Run argv in a session of its own; stop it when it makes no progress for `idle`
    seconds or runs past `max_seconds`. Returns a CompletedProcess with bytes."""
    watchdog = _start_watchdog()
    try:
        popen = subprocess.Popen(argv, stdin=subprocess.PIPE if data is not None else
                                 subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, env=env, start_new_session=True,
                                 preexec_fn=_child_setup())
    except BaseException:
        _tell_watchdog(watchdog, None, last=True)  # no group id: it has nothing to stop
        raise
    try:
        _tell_watchdog(watchdog, str(popen.pid))  # the session leader's pid is the group's
        return _supervise(popen, argv, data, args, idle, watch, max_seconds)
    finally:
        _tell_watchdog(watchdog, "done", last=True)


def _supervise(popen, argv, data, args, idle, watch, max_seconds):
    out, err = bytearray(), bytearray()
    sel = selectors.DefaultSelector()
    try:
        sel.register(popen.stdout, selectors.EVENT_READ, out)
        sel.register(popen.stderr, selectors.EVENT_READ, err)
        view, offset = memoryview(data or b""), 0
        if data is not None:
            if data:
                sel.register(popen.stdin, selectors.EVENT_WRITE)
            else:
                popen.stdin.close()
        watch = [str(d) for d in watch or []]
        start = last = time.monotonic()
        state = _watched_state(watch) if watch else None
        next_scan, exited = start + POLL_SECONDS, None
        while True:
            for key, _ in sel.select(POLL_SECONDS if sel.get_map() else 0):
                if key.fileobj is popen.stdin:
                    try:
                        offset += os.write(key.fd, view[offset:offset + select.PIPE_BUF])
                    except BrokenPipeError:
                        offset = len(view)  # git stopped reading: its exit code tells why
                    if offset >= len(view):
                        sel.unregister(key.fileobj)
                        key.fileobj.close()
                else:
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        sel.unregister(key.fileobj)
                        continue
                    key.data.extend(chunk)
                    if key.data is err and len(err) > STDERR_KEPT:
                        del err[:len(err) - STDERR_KEPT]  # progress meters: keep the tail
                last = time.monotonic()  # bytes out, or input taken: progress
            now = time.monotonic()
            if exited is None and popen.poll() is not None:
                exited = now
            if exited is not None:
                if not sel.get_map() or now - exited > DRAIN_GRACE:
                    break  # done; a leftover (an ssh master) may hold a pipe open: not ours
                continue
            if not sel.get_map():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    popen.wait(POLL_SECONDS)  # its pipes are closed, git still runs
                now = time.monotonic()
            if watch and now >= next_scan:
                seen = _watched_state(watch)
                if seen != state:
                    state, last = seen, now
                next_scan = now + POLL_SECONDS
            if popen.poll() is not None:
                continue
            if max_seconds is not None and now - start > max_seconds:
                _stop(popen)
                raise GitTimeout(args, max_seconds, "total", _tail(err))
            if idle is not None and now - last > idle:
                _stop(popen)
                raise GitTimeout(args, idle, "idle", _tail(err))
    except BaseException:
        if popen.returncode is None:
            _stop(popen)  # KeyboardInterrupt, SystemExit: the group goes, then re-raise
        raise
    finally:
        sel.close()
        for stream in (popen.stdin, popen.stdout, popen.stderr):
            if stream:
                stream.close()
    return subprocess.CompletedProcess(argv, popen.returncode, bytes(out), bytes(err))


def _tail(err, lines=5):
    text = bytes(err[-4096:]).decode("utf-8", "replace").replace("\r", "\n")
    return "\n".join([ln for ln in text.splitlines() if ln.strip()][-lines:])


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
        plain = plain_checkout(self.path)
        if plain:
            self.git_dir, self.bare, self.shallow = plain, False, False
        else:
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


# What would make git find another git dir, work tree or core.bare than the plain look at
# `.git` does: these ask `git rev-parse` instead.
_LOCATION_ENV = ("GIT_DIR", "GIT_WORK_TREE", "GIT_COMMON_DIR", "GIT_OBJECT_DIRECTORY",
                 "GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT", "GIT_NAMESPACE")
_HEAD_TEXT = re.compile(r"^(ref: refs/\S+|[0-9a-f]{40}|[0-9a-f]{64})\n?$")
_CONFIG_ASKS = re.compile(r"bare|worktree|include", re.IGNORECASE)
_NOT_BARE = re.compile(r"^\s*bare\s*=\s*(false|no|off|0)\s*$", re.IGNORECASE)


def plain_checkout(path):
    """The git dir of a checkout whose `.git` is a real directory git itself would take
    as the repository (HEAD naming a ref or a commit, objects/ and refs/ folders), with
    no `shallow` file, no core.bare other than false, no core.worktree and no include in
    its config, and no environment that moves git elsewhere: what `git rev-parse
    --absolute-git-dir --is-bare-repository --is-shallow-repository` answers there (that
    dir, false, false) without starting git. None for anything else: git is asked.

    git decides bareness from the repository's own config (read before any global one)
    and shallowness by the existence of $GIT_DIR/shallow, so these checks are the ones it
    makes; a git dir it would not accept (git would then search the parent folders)
    fails the HEAD, objects/ or refs/ check here and is left to git as well."""
    if any(os.environ.get(name) for name in _LOCATION_ENV):
        return None
    dotgit = Path(path) / ".git"
    try:
        if not dotgit.is_dir() or dotgit.is_symlink():
            return None
        head = (dotgit / "HEAD").read_text(encoding="utf-8")
        config = (dotgit / "config").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if not _HEAD_TEXT.match(head) or not (dotgit / "objects").is_dir() or \
            not (dotgit / "refs").is_dir() or os.path.lexists(dotgit / "shallow") or \
            os.path.lexists(dotgit / "commondir"):
        return None
    for line in config.splitlines():
        if _CONFIG_ASKS.search(line) and not _NOT_BARE.match(line):
            return None
    return Path(os.path.realpath(dotgit))


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
