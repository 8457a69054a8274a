"""Two-machine sync on the fleet bed: a desktop and a laptop user, provisioned by site.yml
over real SSH, syncing one notes repository through a bare remote that a third user
serves over the same sshd. The jobs run as their schedulers would run them:
`strongroom run JOB` as the host's user, with the engine site.yml installed.
"""

import hashlib
import json
import os
import plistlib
import pwd
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from tests.fleet.bed import GIT_ENV, Bed, as_user

pytestmark = pytest.mark.slow
VENV_BIN = str(Path(sys.executable).parent)
# user names of their own: the main fleet bed may run at the same time on the other core
HOSTS = {"desktop": ("sy-desktop", "launchd"), "laptop": ("sy-laptop", "launchd")}
GIT_USER = "sy-git"
INCLUDE = ["clients/*/tasks.json", "*.md"]
POLICIES = {"log/completed.md": "append", "clients/*/tasks.json": "block",
            "build/": "primary-wins"}
START = {"clients/acme/tasks.json": '[{"task": "invoice"}]\n',
         "log/completed.md": "done: set up\n", "notes/idea.md": "idea\n",
         "build/site.html": "<p>v1</p>\n"}


def sync_job(name, home, direction, role, schedule):
    return {"name": name, "type": "git_sync", "schedule": schedule,
            "options": {"repo": f"{home}/brain", "direction": direction, "role": role,
                        "include": INCLUDE, "policies": POLICIES}}


def sh(bed, host, *argv, check=True):
    user = HOSTS[host][0] if host in HOSTS else host
    proc = as_user(user, list(argv), env=GIT_ENV)
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} as {user} failed: {proc.stdout}{proc.stderr}")
    return proc


def git(bed, host, *args, check=True):
    repo = bed.home(host) / "brain"
    return sh(bed, host, "git", "-C", str(repo), *args, check=check).stdout


def run_job(bed, host, job, expect=0):
    proc = bed.strongroom(host, "run", job)
    assert proc.returncode == expect, f"{host} {job}: {proc.stdout}{proc.stderr}"
    return proc


def fingerprint(repo):
    """HEAD and every file outside .git with its hash: equal means an identical tree."""
    files = {str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(Path(repo).rglob("*"))
             if p.is_file() and ".git" not in p.relative_to(repo).parts}
    head = subprocess.run(["git", "-c", "safe.directory=*", "-C", str(repo), "rev-parse",
                           "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    return head, files


def write(bed, host, rel, text, append=False):
    """Edit a file as the host's user would (root writes it, the user owns it)."""
    path = bed.home(host) / "brain" / rel
    with open(path, "a" if append else "w") as fh:
        fh.write(text)
    pw = pwd.getpwnam(HOSTS[host][0])
    os.chown(path, pw.pw_uid, pw.pw_gid)


def job_status(bed, host, job):
    path = bed.home(host) / ".local/state/strongroom/status" / f"{job}.json"
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def bed():
    if os.geteuid() != 0:
        pytest.skip("the fleet bed needs root (it creates users and starts sshd); "
                    "this machine's test run is not root")
    os.environ["PATH"] = f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    b = Bed(hosts=HOSTS, extra_users=[GIT_USER])
    b.jobs = {
        "desktop": [sync_job("notes-push", b.home("desktop"), "push", "primary", "every 2h")],
        "laptop": [sync_job("notes-pull", b.home("laptop"), "pull", "secondary", "every 1h")],
    }
    try:
        b.start()
        _serve_and_clone(b)
        yield b
    finally:
        b.stop()


def _serve_and_clone(b):
    """The bare remote in the git user's home; each host reaches it over ssh with the key."""
    remote = b.base / "home" / GIT_USER / "notes.git"
    sh(b, GIT_USER, "git", "init", "-q", "--bare", "-b", "main", str(remote))
    url = f"ssh://{GIT_USER}@127.0.0.1:{b.port}{remote}"
    for host, (user, _) in HOSTS.items():
        pw = pwd.getpwnam(user)
        ssh = b.home(host) / ".ssh"
        (ssh / "id_ed25519").write_bytes(b.key.read_bytes())
        (ssh / "config").write_text("Host 127.0.0.1\n  BatchMode yes\n"
                                    "  StrictHostKeyChecking no\n"
                                    "  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n")
        for p in (ssh / "id_ed25519", ssh / "config"):
            p.chmod(0o600)
            os.chown(p, pw.pw_uid, pw.pw_gid)
    home = b.home("desktop")
    sh(b, "desktop", "git", "clone", "-q", url, f"{home}/brain")
    git(b, "desktop", "symbolic-ref", "HEAD", "refs/heads/main")  # an empty clone's branch
    for rel, text in START.items():
        path = home / "brain" / rel
        sh(b, "desktop", "mkdir", "-p", str(path.parent))
        write(b, "desktop", rel, text)
    git(b, "desktop", "add", "-A")
    git(b, "desktop", "commit", "-q", "-m", "start")
    git(b, "desktop", "push", "-q", "origin", "main")
    sh(b, "laptop", "git", "clone", "-q", url, f"{b.home('laptop')}/brain")
    b.remote = remote


def test_site_installs_the_sync_jobs_policies_and_agents(bed):
    first = bed.playbook("site.yml")
    out = first.stdout.read()
    assert first.rc == 0, out[-5000:]
    again = bed.playbook("site.yml")
    assert again.rc == 0 and sum((again.stats or {}).get("changed", {}).values()) == 0, \
        again.stats
    for host, interval in (("desktop", 7200), ("laptop", 3600)):
        home = bed.home(host)
        job = "notes-push" if host == "desktop" else "notes-pull"
        plist = plistlib.loads(
            (home / f"Library/LaunchAgents/org.strongroom.{job}.plist").read_bytes())
        assert plist["StartInterval"] == interval
        assert plist["ProgramArguments"][-2:] == ["run", job]
        attrs = (home / "brain/.git/info/attributes").read_text()
        assert "log/completed.md merge=strongroom-append\n" in attrs
        assert "clients/*/tasks.json merge=strongroom-block\n" in attrs
        driver = git(bed, host, "config", "merge.strongroom-primary-wins.driver")
        side = "ours" if host == "desktop" else "theirs"
        assert driver.startswith(f"{bed.engine(host)} sync merge-driver {side} ")


def test_round_trip_with_tracked_edits_new_and_deleted_files(bed):
    write(bed, "desktop", "notes/idea.md", "idea, refined\n")  # tracked edit, not staged
    write(bed, "desktop", "notes/new.md", "new\n")
    git(bed, "desktop", "rm", "-q", "build/site.html")
    run_job(bed, "desktop", "notes-push")
    assert git(bed, "desktop", "status", "--porcelain") == ""
    assert git(bed, "desktop", "rev-parse", "HEAD") == sh(
        bed, GIT_USER, "git", "-C", str(bed.remote), "rev-parse", "main").stdout
    run_job(bed, "laptop", "notes-pull")
    assert fingerprint(bed.home("laptop") / "brain")[1] == \
        fingerprint(bed.home("desktop") / "brain")[1]
    st = job_status(bed, "laptop", "notes-pull")
    assert st["result"] == "ok" and st["changed"] is True
    run_job(bed, "laptop", "notes-pull")
    assert job_status(bed, "laptop", "notes-pull")["changed"] is False  # already up to date


def changed_hosts(r):
    return {h for h, n in (r.stats or {}).get("changed", {}).items() if n}


def test_sync_playbook_pushes_then_pulls_and_check_mode_touches_nothing(bed):
    write(bed, "desktop", "notes/idea.md", "idea from the playbook\n")
    desk, lap = bed.home("desktop") / "brain", bed.home("laptop") / "brain"
    before = fingerprint(desk), fingerprint(lap)
    check = bed.playbook("sync.yml", check=True)
    assert check.rc == 0, check.stdout.read()[-4000:]
    assert changed_hosts(check) == {"desktop"}  # the laptop cannot know before the push
    assert (fingerprint(desk), fingerprint(lap)) == before
    r = bed.playbook("sync.yml")
    assert r.rc == 0, r.stdout.read()[-4000:]
    assert changed_hosts(r) == {"desktop", "laptop"}
    assert (lap / "notes/idea.md").read_text() == "idea from the playbook\n"
    again = bed.playbook("sync.yml")
    changed_results = [e["event_data"]["res"] for e in again.events
                       if e.get("event") == "runner_on_ok" and e["event_data"]["res"].get(
                           "changed")]
    assert again.rc == 0 and changed_hosts(again) == set(), changed_results


def test_concurrent_edits_of_an_append_file_merge(bed):
    write(bed, "desktop", "log/completed.md", "done: on the desktop\n", append=True)
    write(bed, "laptop", "log/completed.md", "done: on the laptop\n", append=True)
    run_job(bed, "desktop", "notes-push")
    run_job(bed, "laptop", "notes-pull")
    text = (bed.home("laptop") / "brain/log/completed.md").read_text()
    assert text == "done: set up\ndone: on the laptop\ndone: on the desktop\n"
    # the laptop sends its side back by hand; the desktop's next pull takes it
    proc = bed.strongroom("laptop", "sync", "push", "--job", "notes-pull")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = bed.strongroom("desktop", "sync", "pull", "--job", "notes-push")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (bed.home("desktop") / "brain/log/completed.md").read_text() == text


def test_concurrent_edits_of_a_block_file_stop_keeping_both_versions(bed):
    write(bed, "desktop", "clients/acme/tasks.json", '[{"task": "desk"}]\n')
    write(bed, "laptop", "clients/acme/tasks.json", '[{"task": "lap"}]\n')
    run_job(bed, "desktop", "notes-push")
    lap = bed.home("laptop") / "brain"
    before = fingerprint(lap)
    proc = run_job(bed, "laptop", "notes-pull", expect=2)
    assert "merge blocked: both sides changed clients/acme/tasks.json" in proc.stdout
    assert (lap / "clients/acme/tasks.json").read_text() == '[{"task": "lap"}]\n'
    assert (lap / "clients/acme/tasks.json.theirs").read_text() == '[{"task": "desk"}]\n'
    head, files = fingerprint(lap)
    assert head == before[0]
    assert {k: v for k, v in files.items() if not k.endswith(".theirs")} == before[1]
    st = job_status(bed, "laptop", "notes-pull")
    assert st["result"] == "error" and st["sync"]["conflicts"] == ["clients/acme/tasks.json"]
    # resolved by hand: keep the desktop's list, drop the copy; then the pull goes through
    (lap / "clients/acme/tasks.json.theirs").replace(lap / "clients/acme/tasks.json")
    run_job(bed, "laptop", "notes-pull")
    assert (lap / "clients/acme/tasks.json").read_text() == '[{"task": "desk"}]\n'


def _corrupt_loose_object(bed, host, content):
    repo = bed.home(host) / "brain"
    sha = sh(bed, host, "sh", "-c", f"printf '%s' '{content}' | git -C {repo} "
             "hash-object -w --stdin").stdout.strip()
    path = repo / ".git/objects" / sha[:2] / sha[2:]
    path.chmod(0o644)
    path.write_bytes(zlib.compress(b"blob 5\0junk!")[:-3])


def test_a_corrupted_object_in_the_local_repository_rolls_back(bed):
    desk = bed.home("desktop") / "brain"
    content = "idea with a damaged object\n"
    write(bed, "desktop", "notes/idea.md", content)
    _corrupt_loose_object(bed, "desktop", content)
    before = fingerprint(desk)
    remote_before = sh(bed, GIT_USER, "git", "-C", str(bed.remote), "rev-parse", "main").stdout
    proc = run_job(bed, "desktop", "notes-push", expect=2)
    assert "rolled back to" in proc.stdout
    assert fingerprint(desk) == before  # the edit is still there, uncommitted
    assert sh(bed, GIT_USER, "git", "-C", str(bed.remote), "rev-parse",
              "main").stdout == remote_before
    assert job_status(bed, "desktop", "notes-push")["rollback"].startswith("rolled back to")
    # repair: drop the damaged object; the next run pushes the edit
    obj = hashlib.sha1(f"blob {len(content)}\0{content}".encode()).hexdigest()  # noqa: S324
    (desk / ".git/objects" / obj[:2] / obj[2:]).unlink()
    run_job(bed, "desktop", "notes-push")
    run_job(bed, "laptop", "notes-pull")


def test_a_file_corrupted_in_transit_rolls_back_the_pull(bed):
    # the remote's branch is rewritten behind the desktop's manifest (damage at rest)
    work = bed.base / "home" / GIT_USER / "tamper"
    sh(bed, GIT_USER, "git", "clone", "-q", str(bed.remote), str(work))
    sh(bed, GIT_USER, "sh", "-c", f"echo 'silently altered' > {work}/notes/idea.md")
    sh(bed, GIT_USER, "git", "-C", str(work), "commit", "-q", "-am", "altered")
    sh(bed, GIT_USER, "git", "-C", str(work), "push", "-q", "origin", "main")
    lap = bed.home("laptop") / "brain"
    before = fingerprint(lap)
    proc = run_job(bed, "laptop", "notes-pull", expect=2)
    assert "post-pull check failed (corruption): notes/idea.md: does not match the other " \
           "side's manifest" in proc.stdout
    assert fingerprint(lap) == before
    # repaired on the remote: the laptop's next pull goes through, the desktop catches up
    sh(bed, GIT_USER, "git", "-C", str(work), "revert", "--no-edit", "HEAD")
    sh(bed, GIT_USER, "git", "-C", str(work), "push", "-q", "origin", "main")
    run_job(bed, "laptop", "notes-pull")
    proc = bed.strongroom("desktop", "sync", "pull", "--job", "notes-push")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (lap / "notes/idea.md").read_text() == "idea with a damaged object\n"


def test_an_unreachable_remote_fails_cleanly_with_nothing_lost(bed):
    lap = bed.home("laptop") / "brain"
    url = git(bed, "laptop", "remote", "get-url", "origin").strip()
    closed = url.replace(f":{bed.port}/", ":9/")
    git(bed, "laptop", "remote", "set-url", "origin", closed)
    try:
        write(bed, "laptop", "notes/offline.md", "written on the train\n")
        before = fingerprint(lap)
        proc = run_job(bed, "laptop", "notes-pull", expect=2)
        assert "cannot fetch from origin" in proc.stdout
        assert fingerprint(lap) == before
        st = bed.strongroom("laptop", "sync", "status", "--job", "notes-pull")
        assert st.returncode == 0 and "dirty: 1 file(s): notes/offline.md" in st.stdout
    finally:
        git(bed, "laptop", "remote", "set-url", "origin", url)


def test_a_killed_push_leaves_a_snapshot_that_rollback_restores(bed):
    desk = bed.home("desktop") / "brain"
    hook, marker = bed.remote / "hooks/pre-receive", bed.remote.parent / "pushing"
    sh(bed, GIT_USER, "sh", "-c", f"printf '#!/bin/sh\\ntouch {marker}\\nsleep 60\\n' > {hook}"
       f" && chmod 755 {hook}")
    write(bed, "desktop", "notes/idea.md", "edit in flight\n")
    before = fingerprint(desk)
    pw = pwd.getpwnam(HOSTS["desktop"][0])
    proc = subprocess.Popen(
        [str(bed.engine("desktop")), "run", "notes-push"], user=pw.pw_uid, group=pw.pw_gid,
        extra_groups=[], cwd=pw.pw_dir, start_new_session=True, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={"HOME": pw.pw_dir, "USER": pw.pw_name, "PATH": "/usr/bin:/bin",
             "LC_ALL": "C.UTF-8"})
    try:
        deadline = time.time() + 60
        while not marker.exists() and time.time() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the push never reached the remote"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        # and the remote side of the push, which would otherwise finish once the hook ends
        subprocess.run(["pkill", "-KILL", "-u", GIT_USER], check=False)
        hook.unlink()
    assert git(bed, "desktop", "rev-parse", "HEAD").strip() != before[0]  # it had committed
    st = bed.strongroom("desktop", "sync", "rollback", "--job", "notes-push", "--status")
    assert st.stdout.startswith("snapshot taken ") and before[0][:12] in st.stdout
    back = bed.strongroom("desktop", "sync", "rollback", "--job", "notes-push")
    assert back.returncode == 0 and "files verified" in back.stdout, back.stderr
    assert fingerprint(desk) == before
    run_job(bed, "desktop", "notes-push")  # and the edit goes out
    run_job(bed, "laptop", "notes-pull")
    assert (bed.home("laptop") / "brain/notes/idea.md").read_text() == "edit in flight\n"
