"""strongroom sync that never loses work: exact rollback, true append merges, a way out of
a block, and transports that cannot hang a machine's sync forever."""

import hashlib
import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from strongroom.sync.merge import merge_additions
from tests.helpers import ENV, VENV_BIN, g, strongroom

POLICIES = ["--policy", "log.md=append", "--policy", "clients/*/tasks.json=block"]


def sync(repo, verb, *args, role="primary", check=0, env=None, timeout=120):
    return strongroom("sync", verb, "--repo", repo, "--role", role, *POLICIES, *args,
                      check=check, env=env, timeout=timeout)


def state(repo):
    """Everything `exactly as it was` means: HEAD, branch, the index entry by entry,
    git status, and every file outside .git with its kind, mode and content."""
    files = {}
    for dirpath, dirs, names in os.walk(repo):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in names + [d for d in dirs if os.path.islink(os.path.join(dirpath, d))]:
            p = Path(dirpath) / name
            st = p.lstat()
            files[str(p.relative_to(repo))] = (
                ("link", os.readlink(p)) if p.is_symlink() else
                (stat.S_IMODE(st.st_mode), hashlib.sha256(p.read_bytes()).hexdigest()))
    return {"head": g(repo, "rev-parse", "HEAD").strip(),
            "branch": g(repo, "symbolic-ref", "-q", "HEAD", check=False).strip(),
            "index": g(repo, "ls-files", "-s"),
            "status": g(repo, "status", "--porcelain=v1", "--untracked-files=all"),
            "files": files}


@pytest.fixture
def pair(tmp_path):
    return make_pair(tmp_path)


def make_pair(tmp_path):
    """A bare remote, the desktop that pushed 203 files and the laptop that pulled them."""
    remote = tmp_path / "remote.git"
    g(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    desk, lap = tmp_path / "desktop", tmp_path / "laptop"
    g(tmp_path, "clone", "-q", str(remote), str(desk))
    files = {"clients/acme/tasks.json": '[{"task": "a"}]\n',
             "log.md": "# log\n- weekly report sent\n", "notes/idea.md": "idea\n"}
    files.update({f"many/f{i:03d}.txt": f"file {i}\n" for i in range(200)})
    for rel, text in files.items():
        (desk / rel).parent.mkdir(parents=True, exist_ok=True)
        (desk / rel).write_text(text)
    g(desk, "add", "-A")
    g(desk, "commit", "-q", "-m", "start")
    g(desk, "push", "-q", "origin", "main")
    sync(desk, "push")
    g(tmp_path, "clone", "-q", str(remote), str(lap))
    sync(lap, "pull", role="secondary")
    return remote, desk, lap


def make_a_mess(repo):
    """What a user has in progress on any given day: all of it must survive a failure."""
    for i in range(20):
        (repo / f"many/f{i:03d}.txt").unlink()  # deletions not yet committed
    g(repo, "rm", "-q", "many/f100.txt")  # a staged deletion
    (repo / "notes/idea.md").write_text("idea, staged version\n")
    g(repo, "add", "notes/idea.md")
    (repo / "notes/idea.md").write_text("idea, staged version, then edited again\n")  # MM
    (repo / "notes/staged-new.md").write_text("new and staged\n")
    g(repo, "add", "notes/staged-new.md")
    (repo / "notes/intent.md").write_text("intent to add\n")
    g(repo, "add", "-N", "notes/intent.md")
    (repo / "untracked.txt").write_text("untracked\n")
    (repo / "many/f150.txt").chmod(0o755)  # a mode change
    (repo / "shortcut").symlink_to("notes/idea.md")
    g(repo, "mv", "many/f199.txt", "many/renamed.txt")


def test_a_failed_pull_puts_back_the_exact_local_state(pair, tmp_path):
    remote, desk, lap = pair
    make_a_mess(lap)
    before = state(lap)
    os.rename(remote, tmp_path / "away")  # the offline laptop
    for _ in range(3):  # an hourly pull, three hours offline
        proc = sync(lap, "pull", role="secondary", check=2)
        assert "rolled back to" in proc.stdout
        assert state(lap) == before
    assert "many/f005.txt" not in before["files"]  # the deletions stayed deleted


def test_a_pull_that_fails_after_merging_puts_back_the_exact_local_state(pair, tmp_path):
    remote, desk, lap = pair
    other = tmp_path / "other"  # a third clone commits behind the manifest's back
    g(tmp_path, "clone", "-q", str(remote), str(other))
    (other / "notes/idea.md").write_text("changed without a manifest\n")
    g(other, "-c", "user.name=x", "-c", "user.email=x@y", "commit", "-qam", "sneaky")
    g(other, "push", "-q", "origin", "main")
    make_a_mess(lap)
    (lap / "notes/idea.md").write_text("idea, staged version, then edited again\n")
    before = state(lap)
    proc = sync(lap, "pull", role="secondary", check=2)
    assert "post-pull check failed" in proc.stdout or "merge blocked" in proc.stdout
    after = state(lap)
    after["files"] = {k: v for k, v in after["files"].items() if not k.endswith(".theirs")}
    after["status"] = "".join(ln + "\n" for ln in after["status"].splitlines()
                              if not ln.endswith(".theirs"))
    assert after == before


def test_sync_rollback_puts_back_the_index_and_the_deletions(pair):
    remote, desk, lap = pair
    make_a_mess(desk)
    before = state(desk)
    from strongroom import sync

    s = sync.Settings(repo=desk, role="primary")
    sync.snapshot(s)
    g(desk, "add", "-A")
    g(desk, "-c", "user.name=x", "-c", "user.email=x@y", "commit", "-qm", "oops")
    (desk / "many/f001.txt").write_text("back from the dead\n")
    oops = g(desk, "rev-parse", "HEAD").strip()
    proc = strongroom("sync", "rollback", "--repo", desk, check=2)
    assert "1 commit(s) of yours since the snapshot" in proc.stderr
    assert g(desk, "rev-parse", "HEAD").strip() == oops  # refused: nothing changed
    proc = strongroom("sync", "rollback", "--repo", desk, "--force", check=0)
    assert g(desk, "rev-parse", "refs/strongroom/before-rollback").strip() == oops
    assert "the index (staged changes) restored" in proc.stdout
    assert state(desk) == before


# --- append: every line either side added ----------------------------------------------


def test_a_line_added_again_is_kept_on_both_machines(pair):
    remote, desk, lap = pair
    with open(desk / "log.md", "a") as fh:
        fh.write("- weekly report sent\n")  # a second week's report: the same words
    with open(lap / "log.md", "a") as fh:
        fh.write("- laptop note\n")
    sync(desk, "push")
    sync(lap, "pull", role="secondary")
    sync(lap, "push", role="secondary")
    sync(desk, "pull")
    want = "# log\n- weekly report sent\n- laptop note\n- weekly report sent\n"
    assert (lap / "log.md").read_text() == want
    assert (desk / "log.md").read_text() == want


def test_blocks_under_date_headings_stay_together():
    base = b"## 2026-11-30\n- a\n\n"
    ours = base + b"## 2026-12-01\n- desk one\n- desk two\n\n"
    theirs = base + b"## 2026-12-01\n- lap one\n\n"
    assert merge_additions(base, ours, theirs) == (
        base + b"## 2026-12-01\n- desk one\n- desk two\n\n## 2026-12-01\n- lap one\n\n")


@pytest.mark.parametrize("base,ours,theirs,want", [
    (b"", b"x\n", b"x\n", b"x\nx\n"),  # each side added it once: twice
    (b"a\n", b"a\nb", b"a\nc", b"a\nb\nc"),  # no newline at the end
    (b"1\n2\n3\n", b"0\n1\n2\n3\n", b"1\n2\n3\n4\n", b"0\n1\n2\n3\n4\n"),  # apart: both
    (b"a\nb\n", b"a\nb\n", b"a\nb\nb\n", b"a\nb\nb\n"),  # one side only
    (b"a\nold\nz\n", b"a\nmine\nz\n", b"a\ntheirs\nz\n", b"a\nmine\ntheirs\nz\n"),
])
def test_append_merges_keep_every_added_line(base, ours, theirs, want):
    assert merge_additions(base, ours, theirs) == want


# --- block: a way out --------------------------------------------------------------------


def test_a_block_is_resolved_by_hand_and_the_next_push_carries_it(pair):
    remote, desk, lap = pair
    (desk / "clients/acme/tasks.json").write_text('[{"task": "desk"}]\n')
    (lap / "clients/acme/tasks.json").write_text('[{"task": "lap"}]\n')
    sync(desk, "push")
    proc = sync(lap, "pull", role="secondary", check=2)
    assert (f"then run: strongroom sync resolve --repo {lap} clients/acme/tasks.json (or add "
            "--ours / --theirs to keep one side as it is), then strongroom sync push") \
        in proc.stdout
    merged = '[{"task": "lap"}, {"task": "desk"}]\n'
    (lap / "clients/acme/tasks.json").write_text(merged)  # the hand merge
    proc = sync(lap, "push", role="secondary", check=2)
    assert "a blocked merge is unresolved: clients/acme/tasks.json" in proc.stdout
    proc = sync(lap, "resolve", "clients/acme/tasks.json", role="secondary")
    assert "resolved clients/acme/tasks.json (by hand)" in proc.stdout
    assert not (lap / "clients/acme/tasks.json.theirs").exists()
    assert "already up to date" in sync(lap, "pull", role="secondary").stdout  # no re-block
    assert "pushed" in sync(lap, "push", role="secondary").stdout
    sync(desk, "pull")
    assert (desk / "clients/acme/tasks.json").read_text() == merged
    assert (lap / "clients/acme/tasks.json").read_text() == merged
    assert "nothing is blocked" in sync(lap, "resolve", "x", role="secondary", check=2).stdout \
        + sync(lap, "resolve", "x", role="secondary", check=2).stderr


@pytest.mark.parametrize("side", ["--ours", "--theirs"])
def test_a_block_is_resolved_by_taking_one_side(pair, side):
    remote, desk, lap = pair
    (desk / "clients/acme/tasks.json").write_text('[{"task": "desk"}]\n')
    (lap / "clients/acme/tasks.json").write_text('[{"task": "lap"}]\n')
    sync(desk, "push")
    sync(lap, "pull", role="secondary", check=2)
    sync(lap, "resolve", side, role="secondary")
    sync(lap, "push", role="secondary")
    sync(desk, "pull")
    want = '[{"task": "lap"}]\n' if side == "--ours" else '[{"task": "desk"}]\n'
    assert (desk / "clients/acme/tasks.json").read_text() == want
    assert (lap / "clients/acme/tasks.json").read_text() == want


def test_resolve_refuses_half_a_block_and_unknown_files(pair):
    remote, desk, lap = pair
    for repo, who in ((desk, "desk"), (lap, "lap")):
        for client in ("acme", "zeta"):
            (repo / f"clients/{client}/tasks.json").parent.mkdir(parents=True, exist_ok=True)
            (repo / f"clients/{client}/tasks.json").write_text(f'[{{"task": "{who}"}}]\n')
    sync(desk, "push")
    sync(lap, "pull", role="secondary", check=2)
    before = state(lap)
    proc = sync(lap, "resolve", "clients/acme/tasks.json", role="secondary", check=2)
    assert "also blocked: clients/zeta/tasks.json" in proc.stderr
    proc = sync(lap, "resolve", "notes/idea.md", role="secondary", check=2)
    assert "notes/idea.md is not blocked" in proc.stderr
    assert state(lap) == before


# --- smaller losses of truth --------------------------------------------------------------


def test_an_unreachable_remote_says_what_failed(pair):
    remote, desk, lap = pair
    g(lap, "remote", "set-url", "origin", "ssh://127.0.0.1:9/nowhere.git")
    proc = sync(lap, "pull", role="secondary", check=2)
    assert "cannot fetch from origin: ssh: connect to host 127.0.0.1 port 9: Connection " \
           "refused" in proc.stdout
    assert "and the repository exists." not in proc.stdout
    g(lap, "remote", "set-url", "origin", str(remote.parent / "missing.git"))
    proc = sync(lap, "push", role="secondary", check=2)
    assert "does not appear to be a git repository" in proc.stdout


def test_status_fetch_says_when_the_fetch_failed_and_how_old_the_figures_are(pair, tmp_path):
    remote, desk, lap = pair
    proc = sync(lap, "status", "--fetch", role="secondary")
    assert "fetch FAILED" not in proc.stdout
    os.rename(remote, tmp_path / "away")
    proc = sync(lap, "status", "--fetch", role="secondary", check=1)
    assert "fetch FAILED: fatal: " in proc.stdout
    assert "the figures below are from the last fetch that worked: last fetched " in proc.stdout
    st = json.loads(sync(lap, "status", "--fetch", "--json", role="secondary", check=1).stdout)
    assert st["fetch"]["ok"] is False and st["last_fetch_age_seconds"] >= 0


def test_primary_wins_needs_the_role_and_never_guesses(pair):
    remote, desk, lap = pair
    proc = strongroom("sync", "pull", "--repo", lap, "--policy", "notes/*=primary-wins",
                      check=2)
    assert "the primary-wins policy for 'notes/*' depends on which machine this is: give " \
           "--role primary or --role secondary" in proc.stderr
    from strongroom import sync

    sync.install_policies(sync.Settings(repo=lap, policies={"notes/*": "primary-wins"}))
    driver = g(lap, "config", "merge.strongroom-primary-wins.driver").strip()
    assert driver.endswith("sync merge-driver block %O %A %B %P")  # blocks, never wins


def _uploadpack(repo, script):
    """Make the remote end of fetches from `repo` run `script` (a stalled or dropped
    transport, for real: git runs it as its upload-pack)."""
    path = Path(repo).parent / f"upload-pack-{Path(repo).name}.sh"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    g(repo, "config", "remote.origin.uploadpack", str(path))


def test_a_stalled_transport_is_stopped_and_its_partial_pack_removed(pair):
    remote, desk, lap = pair
    (desk / "big.bin").write_bytes(os.urandom(400_000))
    sync(desk, "push")
    # the remote sends part of the pack and then goes silent
    _uploadpack(lap, 'git-upload-pack "$@" | { head -c 60000; sleep 120; }\n')
    before = state(lap)
    started = time.monotonic()
    proc = sync(lap, "pull", "--timeout", "4", role="secondary", check=2)
    assert time.monotonic() - started < 40
    assert "the fetch from origin made no progress for 4 s and was stopped" in proc.stdout
    assert not list((lap / ".git/objects/pack").glob("tmp_*"))
    assert state(lap) == before
    g(lap, "config", "--unset", "remote.origin.uploadpack")
    sync(lap, "pull", role="secondary")  # the lock was let go: the next pull works
    assert (lap / "big.bin").stat().st_size == 400_000


def test_ssh_gets_keepalives_and_a_connect_timeout(pair, tmp_path):
    remote, desk, lap = pair
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "ssh-args"
    (bindir / "ssh").write_text(f'#!/bin/sh\necho "$@" > {log}\nexit 255\n')
    (bindir / "ssh").chmod(0o755)
    g(lap, "remote", "set-url", "origin", "ssh://example.invalid/repo.git")
    env = dict(ENV, PATH=f"{bindir}:{ENV['PATH']}")
    env.pop("GIT_SSH_COMMAND", None)
    sync(lap, "pull", role="secondary", check=2, env=env)
    args = log.read_text()
    for opt in ("ServerAliveInterval=15", "ServerAliveCountMax=4", "ConnectTimeout=20"):
        assert opt in args, args


@pytest.mark.parametrize("point", ["pull-after-commit", "pull-after-merge"])
def test_a_pull_killed_between_steps_is_rolled_back_by_the_next_run(pair, point):
    remote, desk, lap = pair
    (desk / "notes/desk.md").write_text("from the desktop\n")
    sync(desk, "push")
    make_a_mess(lap)
    before = state(lap)
    proc = sync(lap, "pull", role="secondary", env=dict(ENV, STRONGROOM_TEST_CRASH=point),
                check=None)
    assert proc.returncode != 0 and "_Crash" in proc.stderr  # stands in for a kill -9
    assert (lap / ".git/strongroom/op.json").exists()
    proc = strongroom("sync", "rollback", "--repo", lap, check=0)
    assert state(lap) == before
    proc = sync(lap, "pull", role="secondary")
    assert (lap / "notes/desk.md").read_text() == "from the desktop\n"
    assert not (lap / "many/f005.txt").exists()  # the pending deletion survived


def test_a_pull_killed_for_real_is_rolled_back_by_the_next_pull(pair):
    remote, desk, lap = pair
    (desk / "notes/desk.md").write_text("from the desktop\n")
    sync(desk, "push")
    make_a_mess(lap)
    before = state(lap)
    _uploadpack(lap, "sleep 120\n")
    proc = subprocess.Popen([str(VENV_BIN / "strongroom"), "sync", "pull", "--repo", str(lap),
                             "--role", "secondary", *POLICIES], env=ENV,
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while time.time() < deadline and not (lap / ".git/strongroom/op.json").exists():
        time.sleep(0.05)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    g(lap, "config", "--unset", "remote.origin.uploadpack")
    out = sync(lap, "pull", role="secondary").stdout
    assert "recovered from an interrupted pull" in out
    assert (lap / "notes/desk.md").read_text() == "from the desktop\n"
    for rel, value in before["files"].items():
        if not rel.startswith(".sync-checksums"):
            assert state(lap)["files"].get(rel) == value, rel
