"""gitcmd.git's bounds, with real git processes: `timeout` is an idle bound (output or
growing tmp_* files are progress), `max_seconds` a total one, and nothing git started
outlives a stop, an interrupt or a SIGKILLed parent."""

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from strongroom.core import gitcmd
from strongroom.core.gitcmd import GitTimeout, git

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def repo(tmp_path):
    path = tmp_path / "r"
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    return path


def alias(command):
    """git arguments that make git itself run `command` (a shell alias)."""
    return ["-c", f"alias.x=!{command}", "x"]


def script(tmp_path, name, body):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def alive(pid):
    """True while `pid` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if sys.platform.startswith("linux"):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state not in ("Z", "X")
    stat = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True,
                          text=True).stdout.strip()
    return bool(stat) and not stat.startswith("Z")


def wait_until(predicate, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def read_pid(path, seconds=10):
    assert wait_until(lambda: path.exists() and path.read_text().strip(), seconds), path
    return int(path.read_text())


def descendants(pid):
    """Every process under `pid` (Linux /proc), as {pid: command name}."""
    children = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append((int(entry.name), comm))
    found, stack = {}, [pid]
    while stack:
        for child, comm in children.get(stack.pop(), []):
            found[child] = comm
            stack.append(child)
    return found


# --- the idle bound ---------------------------------------------------------------------


def test_a_command_that_keeps_printing_outlives_its_idle_bound(repo):
    ticks = 'sh -c "for i in 1 2 3 4 5 6; do echo tick >&2; sleep 0.5; done"'
    start = time.monotonic()
    proc = git(repo, *alias(ticks), timeout=1.5)
    took = time.monotonic() - start
    assert proc.returncode == 0
    assert proc.stderr.split() == ["tick"] * 6
    assert took > 2.5  # twice the bound in all, never more than 0.5 s without a word


def test_a_silent_command_is_stopped_with_everything_it_started(repo, tmp_path):
    silent = script(tmp_path, "silent.sh", """\
        echo $$ > "$1/sh.pid"
        sleep 60 &
        echo $! > "$1/sleep.pid"
        wait
        """)
    start = time.monotonic()
    with pytest.raises(GitTimeout) as caught:
        git(repo, *alias(f"sh {silent} {tmp_path}"), timeout=1)
    took = time.monotonic() - start
    assert 1 <= took < 3
    assert "made no progress for 1 s and was stopped" in str(caught.value)
    assert caught.value.kind == "idle" and caught.value.seconds == 1
    pids = [int((tmp_path / n).read_text()) for n in ("sh.pid", "sleep.pid")]
    assert wait_until(lambda: not any(alive(p) for p in pids), 1), pids


def test_growing_tmp_files_in_watched_folders_are_progress(repo, tmp_path):
    objects = repo / ".git" / "objects"
    trickle = script(tmp_path, "trickle.sh", """\
        mkdir -p "$2/$(dirname "$3")"
        for i in 1 2 3 4; do echo data >> "$2/pack/$1"; sleep 0.4; done
        for i in 1 2 3 4; do echo data >> "$2/$3"; sleep 0.4; done
        """)

    def run(pack_name, quarantined):
        return git(repo, *alias(f"sh {trickle} {pack_name} {objects} {quarantined}"),
                   timeout=1.2, watch=[objects / "pack", objects])

    # a pack index-pack writes, then a receive-pack quarantine: 3.2 s without output
    proc = run("tmp_pack_x", "incoming-1/pack/tmp_pack_y")
    assert proc.returncode == 0 and proc.stdout == proc.stderr == ""
    assert (objects / "pack" / "tmp_pack_x").stat().st_size == 20
    # files of other names are not watched: the same silence is a stall
    with pytest.raises(GitTimeout, match="made no progress for 1.2 s"):
        run("pack-x.pack", "info/y")


def test_max_seconds_caps_even_a_command_that_progresses(repo):
    ticks = 'sh -c "for i in 1 2 3 4 5 6 7 8 9 10; do echo tick >&2; sleep 0.2; done"'
    start = time.monotonic()
    with pytest.raises(GitTimeout) as caught:
        git(repo, *alias(ticks), timeout=5, max_seconds=1)
    assert time.monotonic() - start < 3
    assert "ran longer than its limit of 1 s and was stopped" in str(caught.value)
    assert caught.value.kind == "total" and "tick" in caught.value.stderr


def test_input_and_output_pass_whole_while_stderr_keeps_its_tail(repo):
    data = os.urandom(3 << 20)
    proc = git(repo, "hash-object", "--stdin", input=data, binary=True, timeout=10)
    assert proc.stdout.decode().strip() == hashlib.sha1(  # noqa: S324 git's object id
        b"blob %d\0" % len(data) + data).hexdigest()
    flood = "head -c 3000000 /dev/zero | tr '\\0' x >&2; echo END >&2; head -c 2000000 /dev/zero"
    proc = git(repo, *alias(flood), timeout=10, binary=True)
    assert proc.returncode == 0
    assert len(proc.stdout) == 2000000
    assert len(proc.stderr) == gitcmd.STDERR_KEPT and proc.stderr.endswith(b"xxEND\n")


def test_an_interrupt_stops_the_group_and_is_raised_again(repo, tmp_path):
    silent = script(tmp_path, "silent.sh", """\
        echo $$ > "$1/sh.pid"
        sleep 60 &
        echo $! > "$1/sleep.pid"
        wait
        """)

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 1.0)
        with pytest.raises(KeyboardInterrupt):
            git(repo, *alias(f"sh {silent} {tmp_path}"), timeout=30)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    pids = [int((tmp_path / n).read_text()) for n in ("sh.pid", "sleep.pid")]
    assert wait_until(lambda: not any(alive(p) for p in pids), 1), pids


# --- a parent killed with SIGKILL -----------------------------------------------------------

DRIVER = """\
import sys
sys.path.insert(0, {root!r})
from strongroom.core import gitcmd
if sys.argv[3] == "no-watchdog":
    gitcmd._start_watchdog = lambda: None
gitcmd.git(sys.argv[1], "-c", "alias.x=!sh " + sys.argv[2], "x", timeout=30)
"""


def start_driver(repo, tmp_path, mode):
    """A Python process running a long, silent git; returns it, the pid of the shell
    git ran and every process under the driver (git among them)."""
    loop = script(tmp_path, "loop.sh", f"""\
        echo $$ > {tmp_path}/sh.tmp && mv {tmp_path}/sh.tmp {tmp_path}/sh.pid
        while :; do sleep 0.2; done
        """)
    driver = subprocess.Popen([sys.executable, "-c", DRIVER.format(root=str(ROOT)),
                               str(repo), str(loop), mode])
    sh = read_pid(tmp_path / "sh.pid")
    tree = descendants(driver.pid)
    assert "git" in tree.values() and sh in tree, tree
    return driver, sh, tree


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="walks /proc to find the processes a killed parent left")
def test_a_sigkilled_parent_leaves_no_git_nor_anything_git_started(repo, tmp_path):
    driver, sh, tree = start_driver(repo, tmp_path, "watchdog")
    try:
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        assert wait_until(lambda: not any(alive(p) for p in tree), 3), \
            {p: c for p, c in tree.items() if alive(p)}
    finally:
        for pid in tree:
            if alive(pid) and pid != driver.pid:
                os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="PR_SET_PDEATHSIG is Linux's; elsewhere only the watchdog acts")
def test_without_the_watchdog_git_itself_still_dies_with_its_parent(repo, tmp_path):
    driver, sh, tree = start_driver(repo, tmp_path, "no-watchdog")
    gits = [p for p, comm in tree.items() if comm == "git"]
    try:
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        assert wait_until(lambda: not any(alive(p) for p in gits), 2), gits
    finally:
        for pid in tree:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
