"""strongroom sync: two real clones (desktop, laptop) of a real bare remote."""

import hashlib
import json
import os
import signal
import subprocess
import time
import zlib
from pathlib import Path

import pytest

from tests.helpers import ENV, VENV_BIN, g, strongroom

POLICIES = ["--policy", "log.md=append", "--policy", "clients/*/tasks.json=block"]


def sync(repo, verb, *args, role="primary", check=0):
    return strongroom("sync", verb, "--repo", repo, "--role", role, *POLICIES, *args,
                      check=check)


def fingerprint(repo):
    """Every file outside .git with its hash, and HEAD: 'identical tree' means equal."""
    files = {}
    for p in sorted(Path(repo).rglob("*")):
        if p.is_file() and ".git" not in p.relative_to(repo).parts:
            files[str(p.relative_to(repo))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return g(repo, "rev-parse", "HEAD").strip(), files


@pytest.fixture
def pair(tmp_path):
    remote = tmp_path / "remote.git"
    g(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    desk, lap = tmp_path / "desktop", tmp_path / "laptop"
    g(tmp_path, "clone", "-q", str(remote), str(desk))
    for rel, text in {"clients/acme/tasks.json": '[{"task": "a"}]\n',
                      "log.md": "done: first\n", "notes/idea.md": "idea\n"}.items():
        (desk / rel).parent.mkdir(parents=True, exist_ok=True)
        (desk / rel).write_text(text)
    g(desk, "add", "-A")
    g(desk, "commit", "-q", "-m", "start")
    g(desk, "push", "-q", "origin", "main")
    sync(desk, "push")
    g(tmp_path, "clone", "-q", str(remote), str(lap))
    sync(lap, "pull", role="secondary")
    return remote, desk, lap


def test_round_trip_with_tracked_edits_new_and_deleted_files(pair):
    remote, desk, lap = pair
    (desk / "notes/idea.md").write_text("idea, refined\n")  # a tracked edit, not staged
    (desk / "notes/new.md").write_text("new\n")
    (desk / "log.md").unlink()
    proc = sync(desk, "push")
    assert proc.stdout.startswith("push: ok: pushed ")
    assert g(desk, "status", "--porcelain") == ""
    committed = json.loads(g(desk, "show", "HEAD:.sync-checksums.json"))
    assert committed["metadata"]["phase"] == "pre-sync"
    assert "notes/new.md" in committed["checksums"] and "log.md" not in committed["checksums"]
    proc = sync(lap, "pull", role="secondary")
    assert "pull: ok: merged" in proc.stdout
    assert (lap / "notes/idea.md").read_text() == "idea, refined\n"
    assert (lap / "notes/new.md").read_text() == "new\n" and not (lap / "log.md").exists()
    assert "already up to date" in sync(lap, "pull", role="secondary").stdout
    st = json.loads(sync(lap, "status", "--json", role="secondary").stdout)
    assert (st["ahead"], st["behind"], st["dirty"]) == (0, 0, [])
    assert st["last"]["result"] == "ok" and st["snapshot"]["files"] >= 3


def test_concurrent_appends_merge_keeping_both_sides_lines(pair):
    remote, desk, lap = pair
    with open(desk / "log.md", "a") as fh:
        fh.write("done: on the desktop\n")
    with open(lap / "log.md", "a") as fh:
        fh.write("done: on the laptop\n")
    sync(desk, "push")
    sync(lap, "pull", role="secondary")
    assert (lap / "log.md").read_text() == ("done: first\ndone: on the laptop\n"
                                            "done: on the desktop\n")
    sync(lap, "push", role="secondary")
    sync(desk, "pull")
    assert (desk / "log.md").read_text() == (lap / "log.md").read_text()


def test_a_block_file_stops_the_sync_and_keeps_both_versions(pair):
    remote, desk, lap = pair
    (desk / "clients/acme/tasks.json").write_text('[{"task": "desk"}]\n')
    (lap / "clients/acme/tasks.json").write_text('[{"task": "lap"}]\n')
    sync(desk, "push")
    before = fingerprint(lap)
    proc = sync(lap, "pull", role="secondary", check=2)
    assert "merge blocked: both sides changed clients/acme/tasks.json" in proc.stdout
    assert "clients/acme/tasks.json.theirs" in proc.stdout
    assert (lap / "clients/acme/tasks.json").read_text() == '[{"task": "lap"}]\n'
    assert (lap / "clients/acme/tasks.json.theirs").read_text() == '[{"task": "desk"}]\n'
    head, files = fingerprint(lap)
    assert head == before[0]
    assert {k: v for k, v in files.items() if not k.endswith(".theirs")} == before[1]
    proc = sync(lap, "push", role="secondary", check=2)
    assert "a blocked merge is unresolved" in proc.stdout
    st = json.loads(sync(lap, "status", "--json", role="secondary", check=1).stdout)
    assert st["last"]["operation"] == "push" and st["last"]["result"] == "error"
    assert st["blocked"]["paths"] == ["clients/acme/tasks.json"]  # exit 1: it waits for you


def _corrupt_loose_object(repo, content):
    """Store `content` as a blob whose loose object file is then damaged."""
    sha = subprocess.run(["git", "-C", str(repo), "hash-object", "-w", "--stdin"],
                         input=content, capture_output=True, check=True).stdout.decode().strip()
    path = Path(repo) / ".git" / "objects" / sha[:2] / sha[2:]
    path.chmod(0o644)
    path.write_bytes(zlib.compress(b"blob 5\0junk!")[:-3])
    return sha


def test_a_corrupted_object_in_the_local_repository_rolls_back_to_an_identical_tree(pair):
    remote, desk, lap = pair
    content = b"idea with a damaged object\n"
    (desk / "notes/idea.md").write_bytes(content)
    _corrupt_loose_object(desk, content)
    before = fingerprint(desk)
    remote_before = g(remote, "rev-parse", "main")
    proc = sync(desk, "push", check=2)
    assert "rolled back to" in proc.stdout
    assert fingerprint(desk) == before  # the edit is still there, uncommitted
    assert g(remote, "rev-parse", "main") == remote_before


def test_a_file_corrupted_after_pull_rolls_back_to_an_identical_tree(pair, tmp_path):
    remote, desk, lap = pair
    # a third clone changes a file behind the manifest's back (damage at rest or in flight)
    other = tmp_path / "other"
    g(tmp_path, "clone", "-q", str(remote), str(other))
    (other / "notes/idea.md").write_text("silently altered\n")
    g(other, "commit", "-q", "-am", "altered")
    g(other, "push", "-q", "origin", "main")
    before = fingerprint(lap)
    proc = sync(lap, "pull", role="secondary", check=2)
    assert "post-pull check failed (corruption): notes/idea.md: does not match the other " \
           "side's manifest" in proc.stdout
    assert fingerprint(lap) == before


def test_an_unreachable_remote_fails_cleanly_with_nothing_lost(pair, tmp_path):
    remote, desk, lap = pair
    g(desk, "remote", "set-url", "origin", str(tmp_path / "gone.git"))
    (desk / "notes/idea.md").write_text("offline edit\n")
    before = fingerprint(desk)
    proc = sync(desk, "push", check=2)
    assert "cannot reach origin" in proc.stdout
    assert fingerprint(desk) == before
    proc = sync(desk, "pull", check=2)
    assert "cannot fetch from origin" in proc.stdout and fingerprint(desk) == before
    st = sync(desk, "status").stdout  # offline status works
    assert "dirty: 1 file(s): notes/idea.md" in st


def test_a_killed_push_leaves_a_snapshot_that_rollback_restores(pair):
    remote, desk, lap = pair
    # the remote's hook holds the push open (the engine runs git with hooks off locally)
    hook = remote / "hooks" / "pre-receive"
    marker = remote / "pushing"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\nsleep 60\n")
    hook.chmod(0o755)
    (desk / "notes/idea.md").write_text("edit in flight\n")
    before = fingerprint(desk)
    proc = subprocess.Popen([str(VENV_BIN / "strongroom"), "sync", "push", "--repo", str(desk),
                             *POLICIES], env=ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    hook.unlink()
    assert g(desk, "rev-parse", "HEAD").strip() != before[0]  # it had committed
    assert g(remote, "rev-parse", "main") != g(desk, "rev-parse", "HEAD")  # not pushed
    st = strongroom("sync", "rollback", "--repo", desk, "--status", check=0).stdout
    assert st.startswith("snapshot taken ") and before[0][:12] in st
    proc = strongroom("sync", "rollback", "--repo", desk, check=0)
    assert "files verified" in proc.stdout and "put back" in proc.stdout
    assert fingerprint(desk) == before
    assert sync(desk, "push").stdout.startswith("push: ok")  # and the edit goes out


def test_a_damaged_json_file_is_not_pushed(pair):
    remote, desk, lap = pair
    (desk / "clients/acme/tasks.json").write_text('[{"task": "a"')
    before = fingerprint(desk)
    proc = sync(desk, "push", check=2)
    assert "pre-sync check: not valid JSON (damaged?): clients/acme/tasks.json" in proc.stdout
    assert fingerprint(desk) == before


def test_primary_wins_for_regenerable_outputs(pair):
    remote, desk, lap = pair
    extra = ["--policy", "build/*=primary-wins"]
    for repo in (desk, lap):
        (repo / "build").mkdir()
        (repo / "build/out.txt").write_text("base\n")
    sync(desk, "push", *extra)
    sync(lap, "pull", *extra, role="secondary")
    (desk / "build/out.txt").write_text("desk build\n")
    (lap / "build/out.txt").write_text("lap build\n")
    sync(desk, "push", *extra)
    sync(lap, "pull", *extra, role="secondary")
    assert (lap / "build/out.txt").read_text() == "desk build\n"
    sync(lap, "push", *extra, role="secondary")
    (lap / "build/out.txt").write_text("lap again\n")
    (desk / "build/out.txt").write_text("desk again\n")
    sync(lap, "push", *extra, role="secondary")
    sync(desk, "pull", *extra)
    assert (desk / "build/out.txt").read_text() == "desk again\n"


def test_a_sync_job_that_rolls_back_notifies_rollback_done(pair, tmp_path):
    from tests.notify.test_notify import CANARY, Receiver, write_targets

    remote, desk, lap = pair
    conf, state = tmp_path / "conf", tmp_path / "state"
    (conf / "jobs").mkdir(parents=True)
    (conf / "jobs" / "pull.yml").write_text(
        "name: pull\ntype: git_sync\nschedule: every 1h\noptions:\n"
        f"  repo: {lap}\n  direction: pull\n  role: secondary\n"
        "  policies: {log.md: append, 'clients/*/tasks.json': block}\n")
    receiver = Receiver()
    try:
        write_targets(conf, receiver.port, ntfy_sev="warning")
        other = tmp_path / "other"
        g(tmp_path, "clone", "-q", str(remote), str(other))
        (other / "log.md").write_text("rewritten behind the manifest\n")
        g(other, "commit", "-q", "-am", "altered")
        g(other, "push", "-q", "origin", "main")
        before = fingerprint(lap)
        proc = strongroom("--config-dir", conf, "--state-dir", state, "run", "pull", check=2)
        assert "post-pull check failed (corruption): log.md" in proc.stdout
        assert fingerprint(lap) == before
        st = json.loads((state / "status" / "pull.json").read_text())
        assert st["result"] == "error" and st["rollback"].startswith("rolled back to")
        ntfy = [json.loads(r["body"]) for r in receiver.requests if r["path"] == "/"]
        (msg,) = ntfy
        assert "sync failed and was rolled back" in msg["title"]
        assert st["notifications"][0]["event"] == "rollback_done"
        assert CANARY not in proc.stdout + proc.stderr
    finally:
        receiver.close()


def test_sync_job_files_and_flags_are_checked(tmp_path, pair):
    remote, desk, lap = pair
    bad = tmp_path / "bad.yml"
    bad.write_text("name: s\ntype: git_sync\noptions:\n  repo: /srv/notes\n  direction: push\n"
                   "  role: primary\n  policies: {'*.md': newest-wins}\n")
    proc = strongroom("config", "check", bad, check=2)
    assert "key 'options.policies' has value {'*.md': 'newest-wins'}; expected a mapping of " \
           "path pattern to append, block or primary-wins" in proc.stderr
    bad.write_text("name: s\ntype: git_sync\noptions:\n  repo: /srv/notes\n  direction: both\n"
                   "  role: primary\n")
    assert "key 'options.direction' has value 'both'" in strongroom("config", "check", bad,
                                                                     check=2).stderr
    proc = strongroom("sync", "push", "--repo", desk, "--policy", "x=later", check=2)
    assert "policy for 'x' is 'later'; expected one of append, block, primary-wins" \
        in proc.stderr
    proc = strongroom("sync", "push", "--repo", tmp_path, check=2)
    assert "is not a git work tree" in proc.stderr
    assert strongroom("sync", "rollback", "--repo", lap, "--status", check=0).stdout.startswith(
        "snapshot taken")
