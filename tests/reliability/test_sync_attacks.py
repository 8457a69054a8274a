"""strongroom sync attacked the way a user's day (or a hostile checkout) attacks it: work
done after a kill, edits typed while a pull runs, a folder where a file was, an ignored
secret the other side commits, half-done git operations, stale locks, a failed rollback.
Every test asserts the message and that nothing the user made is lost."""

import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from strongroom import sync
from strongroom.sync import state as sync_state
from tests.helpers import ENV, g
from tests.sync.test_sync_exact import _uploadpack, make_pair, state
from tests.sync.test_sync_exact import sync as sync_cli

CRASH = "STRONGROOM_TEST_CRASH"


@pytest.fixture
def pair(tmp_path):
    return make_pair(tmp_path)


def _kept(repo, rel):
    """The versions a rollback set aside for rel, oldest first."""
    root = Path(repo) / ".git" / "strongroom" / "kept"
    return [p.read_text() for p in sorted(root.glob(f"*/{rel}"))]


def test_work_done_after_a_killed_pull_survives_its_recovery(pair):
    remote, desk, lap = pair
    (desk / "notes/desk.md").write_text("from desk\n")
    sync_cli(desk, "push")
    (lap / "notes/idea.md").write_text("idea v2, before the killed pull\n")
    sync_cli(lap, "pull", role="secondary", env={**ENV, CRASH: "pull-after-commit"}, check=None)
    assert (lap / ".git/strongroom/op.json").exists()
    st = json.loads(sync_cli(lap, "status", "--json", role="secondary", check=1).stdout)
    assert st["interrupted"]["operation"] == "pull"  # status says a run was cut short
    # an hour of work after the reboot, before the next scheduled pull
    (lap / "notes/idea.md").write_text("idea v3: an hour of work after the crash\n")
    (lap / "many/f001.txt").write_text("edited after the crash\n")
    (lap / "notes/new.md").write_text("brand new after the crash\n")
    g(lap, "add", "notes/new.md")
    proc = sync_cli(lap, "pull", role="secondary")
    assert "recovered from an interrupted pull" in proc.stdout
    assert "kept as they are now (changed meanwhile, not by the sync): many/f001.txt, " \
           "notes/idea.md" in proc.stdout
    assert (lap / "notes/idea.md").read_text() == "idea v3: an hour of work after the crash\n"
    assert (lap / "many/f001.txt").read_text() == "edited after the crash\n"
    assert (lap / "notes/new.md").read_text() == "brand new after the crash\n"
    assert (lap / "notes/desk.md").read_text() == "from desk\n"
    assert _kept(lap, "notes/idea.md") == ["idea v2, before the killed pull\n"]
    proc = sync_cli(lap, "status", role="secondary")
    assert "kept: 1 folder(s), 39 bytes of versions rollbacks set aside in " in proc.stdout
    # and it all travels: the desktop gets the newest work
    sync_cli(lap, "push", role="secondary")
    sync_cli(desk, "pull")
    assert (desk / "notes/idea.md").read_text() == "idea v3: an hour of work after the crash\n"


def test_a_recovery_never_undoes_commits_the_user_made_after_the_kill(pair):
    remote, desk, lap = pair
    (desk / "notes/desk.md").write_text("from desk\n")
    sync_cli(desk, "push")
    (lap / "notes/idea.md").write_text("edit\n")
    sync_cli(lap, "pull", role="secondary", env={**ENV, CRASH: "pull-after-commit"}, check=None)
    (lap / "notes/mine.md").write_text("committed by hand after the crash\n")
    g(lap, "add", "notes/mine.md")
    g(lap, "commit", "-q", "-m", "my own commit")
    mine = g(lap, "rev-parse", "HEAD").strip()
    proc = sync_cli(lap, "pull", role="secondary")
    assert "the repository has moved on since (new commits or another branch): nothing " \
           "was rolled back" in proc.stdout
    assert g(lap, "merge-base", "--is-ancestor", mine, "HEAD", check=False) == ""
    assert (lap / "notes/mine.md").read_text() == "committed by hand after the crash\n"


def test_edits_typed_while_a_pull_fetches_are_carried_not_lost(pair):
    remote, desk, lap = pair
    (desk / "notes/desk.md").write_text("from desk\n")
    sync_cli(desk, "push")
    _uploadpack(lap, 'sleep 2; exec git-upload-pack "$@"\n')  # a slow remote

    def user():
        time.sleep(1.0)  # while the pull fetches
        (lap / "notes/idea.md").write_text("typed during the pull\n")
        (lap / "notes/during.md").write_text("a new file written during the pull\n")

    t = threading.Thread(target=user)
    t.start()
    proc = sync_cli(lap, "pull", role="secondary")
    t.join()
    assert "pull: ok: merged" in proc.stdout  # an edit before the local commit is local work
    assert (lap / "notes/idea.md").read_text() == "typed during the pull\n"
    assert (lap / "notes/during.md").read_text() == "a new file written during the pull\n"
    sync_cli(lap, "push", role="secondary")
    sync_cli(desk, "pull")
    assert (desk / "notes/idea.md").read_text() == "typed during the pull\n"


def test_an_edit_typed_while_a_push_lands_is_not_rolled_back_behind_the_push(pair):
    remote, desk, lap = pair
    (desk / "notes/idea.md").write_text("first edit, to be pushed\n")
    # the push's receive-pack says it has started and waits until the edit is made: the
    # edit lands after the push committed and before it finished, however busy the machine
    started, go = desk.parent / "push-started", desk.parent / "edit-made"
    hook = desk.parent / "slow-receive.sh"
    hook.write_text(f'#!/bin/sh\ntouch {started}\ni=0\n'
                    f'while [ ! -e {go} ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done\n'
                    'exec git-receive-pack "$@"\n')
    hook.chmod(0o755)
    g(desk, "config", "remote.origin.receivepack", str(hook))

    def user():
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        (desk / "notes/idea.md").write_text("second edit typed while the push ran\n")
        go.touch()

    t = threading.Thread(target=user)
    t.start()
    proc = sync_cli(desk, "push", check=1)
    t.join()
    assert "but these changed while it ran and go with the next push: notes/idea.md" \
        in proc.stdout
    assert g(desk, "rev-parse", "HEAD") == g(remote, "rev-parse", "main")
    assert g(remote, "show", "main:notes/idea.md") == "first edit, to be pushed\n"
    assert (desk / "notes/idea.md").read_text() == "second edit typed while the push ran\n"
    sync_cli(desk, "push")
    assert g(remote, "show", "main:notes/idea.md") == "second edit typed while the push ran\n"


def test_a_folder_where_a_tracked_file_was_survives_an_offline_pull(pair, tmp_path):
    remote, desk, lap = pair
    (lap / "notes/idea.md").unlink()
    (lap / "notes/idea.md").mkdir()
    (lap / "notes/idea.md/part1.md").write_text("part one\n")
    (lap / "notes/idea.md/part2.md").write_text("part two\n")
    g(lap, "remote", "set-url", "origin", str(tmp_path / "gone.git"))
    before = state(lap)
    for _ in range(2):  # and the next run neither loses it nor its snapshot
        proc = sync_cli(lap, "pull", role="secondary", check=2)
        assert "cannot fetch from origin" in proc.stdout and "ROLLBACK FAILED" not in proc.stdout
        assert state(lap) == before


def test_a_folder_where_a_file_must_go_back_is_moved_aside_not_removed(pair):
    remote, desk, lap = pair
    s = sync.Settings(repo=lap, role="secondary")
    (lap / "notes/idea.md").write_text("a local edit\n")
    sync.snapshot(s)
    (lap / "notes/idea.md").unlink()
    (lap / "notes/idea.md").mkdir()
    (lap / "notes/idea.md/inside.md").write_text("made after the snapshot\n")
    proc = sync_cli(lap, "rollback", role="secondary")
    assert (lap / "notes/idea.md").read_text() == "a local edit\n"
    assert "the newer versions of " in proc.stdout and "notes/idea.md/inside.md" in proc.stdout
    assert _kept(lap, "notes/idea.md/inside.md") == ["made after the snapshot\n"]


def test_after_a_failed_rollback_no_run_replaces_the_snapshot(pair):
    remote, desk, lap = pair
    (lap / "notes/idea.md").write_text("only in the snapshot after this\n")
    sync_cli(lap, "pull", role="secondary", env={**ENV, CRASH: "pull-after-fetch"}, check=None)
    meta = sync_state.load(lap)
    obj = lap / ".git/strongroom/objects" / meta["files"]["notes/idea.md"]["sha256"][:2]
    # the snapshot's copy becomes unreadable, and the file is gone from the work tree
    saved = {p: p.read_bytes() for p in obj.iterdir()}
    for p in obj.iterdir():
        p.unlink()
    g(lap, "checkout", "-q", "--", "notes/idea.md")
    (desk / "notes/desk.md").write_text("from desk\n")
    sync_cli(desk, "push")
    g(lap, "merge", "-q", "--no-edit", "origin/main", check=False)  # a merge the run "made"
    proc = sync_cli(lap, "pull", role="secondary", check=2)
    assert "ROLLBACK FAILED while recovering from an interrupted pull" in proc.stderr
    snap = (lap / ".git/strongroom/snapshot.json").read_bytes()
    proc = sync_cli(lap, "pull", role="secondary", check=2)
    assert "a rollback failed at" in proc.stderr and "no sync runs until" in proc.stderr
    assert (lap / ".git/strongroom/snapshot.json").read_bytes() == snap
    st = json.loads(sync_cli(lap, "status", "--json", role="secondary", check=2).stdout)
    assert st["rollback_failed"]["operation"] == "pull"
    for p, data in saved.items():  # the copy found again: the rollback now succeeds
        p.write_bytes(data)
    sync_cli(lap, "rollback", role="secondary")
    assert (lap / "notes/idea.md").read_text() == "only in the snapshot after this\n"
    sync_cli(lap, "pull", role="secondary")


def test_an_ignored_local_secret_is_never_overwritten_by_a_pull(pair, tmp_path):
    remote, desk, lap = pair
    (lap / ".git/info/exclude").write_text("local.env\n")
    (lap / "local.env").write_text("LAPTOP_ONLY_TOKEN=abc\n")
    (desk / "local.env").write_text("DESKTOP=1\n")
    sync_cli(desk, "push")
    for extra in ([], ["--include", "notes/**"]):  # covered by the manifest or not
        proc = sync_cli(lap, "pull", *extra, role="secondary", check=2)
        assert "the other side added local.env, which here is a local file or folder of " \
               "yours (ignored or untracked) with other content; git would overwrite or " \
               "remove it, so nothing was merged" in proc.stdout
        assert (lap / "local.env").read_text() == "LAPTOP_ONLY_TOKEN=abc\n"


def test_the_committed_manifest_names_no_ignored_file(pair):
    remote, desk, lap = pair
    (desk / ".gitignore").write_text(".env\nsecrets/\n")
    (desk / ".env").write_text("TOKEN=hunter2\n")
    (desk / "secrets").mkdir()
    (desk / "secrets/key").write_text("k\n")
    sync_cli(desk, "push")
    published = g(remote, "show", "main:.sync-checksums.json")
    assert ".env" not in json.loads(published)["checksums"]
    assert "secrets/key" not in published and ".gitignore" in published


def test_a_half_done_cherry_pick_is_never_pushed(pair):
    remote, desk, lap = pair
    g(desk, "checkout", "-q", "-b", "side")
    (desk / "notes/idea.md").write_text("side\n")
    g(desk, "commit", "-q", "-am", "side")
    g(desk, "checkout", "-q", "main")
    (desk / "notes/idea.md").write_text("main\n")
    g(desk, "commit", "-q", "-am", "main")
    g(desk, "cherry-pick", "side", check=False)
    assert (desk / ".git/CHERRY_PICK_HEAD").exists()
    remote_before = g(remote, "rev-parse", "main")
    proc = sync_cli(desk, "push", check=2)
    assert "a cherry-pick is in progress (.git/CHERRY_PICK_HEAD); finish or abort it " \
           "first" in proc.stderr
    assert (desk / ".git/CHERRY_PICK_HEAD").exists()
    assert "<<<<<<<" in (desk / "notes/idea.md").read_text()  # left for the user
    assert g(remote, "rev-parse", "main") == remote_before


def test_a_stale_index_lock_from_a_killed_git_does_not_stop_sync_forever(pair):
    remote, desk, lap = pair
    lock = desk / ".git/index.lock"
    lock.write_text("")
    old = time.time() - 3600
    os.utime(lock, (old, old))
    (desk / "notes/idea.md").write_text("edit\n")
    proc = sync_cli(desk, "push", "--json")
    assert json.loads(proc.stdout)["stale_locks_removed"] == ["index.lock"]
    assert g(remote, "show", "main:notes/idea.md") == "edit\n"


def test_a_repository_without_commits_rolls_back_to_no_commit(tmp_path):
    repo = tmp_path / "fresh"
    g(tmp_path, "init", "-q", "-b", "main", str(repo))
    g(repo, "remote", "add", "origin", str(tmp_path / "nowhere.git"))
    (repo / "first.md").write_text("first note\n")
    proc = sync_cli(repo, "push", check=2)
    assert "rolled back to no commit (an unborn branch) exactly" in proc.stdout
    assert g(repo, "rev-parse", "-q", "--verify", "HEAD", check=False) == ""
    assert g(repo, "status", "--porcelain") == "?? first.md\n"


def test_a_nested_repository_is_refused_not_pushed_as_an_empty_pointer(pair):
    remote, desk, lap = pair
    inner = desk / "vendor/tool"
    g(desk, "init", "-q", str(inner))
    (inner / "README").write_text("inner\n")
    g(inner, "add", "-A")
    g(inner, "-c", "user.name=x", "-c", "user.email=x@y", "commit", "-qm", "inner")
    remote_before = g(remote, "rev-parse", "main")
    proc = sync_cli(desk, "push", check=2)
    assert "vendor/tool: a git repository inside the synced one; a commit would carry " \
           "only a pointer to it" in proc.stdout
    assert g(remote, "rev-parse", "main") == remote_before
    assert (inner / "README").read_text() == "inner\n"


def test_a_users_own_dot_theirs_file_is_not_a_block(pair):
    remote, desk, lap = pair
    (desk / "notes/draft.theirs").write_text("a file of mine\n")
    sync_cli(desk, "push")
    proc = sync_cli(desk, "resolve", "--ours", check=2)
    assert "nothing is blocked" in proc.stderr


def test_json_the_user_never_kept_strict_is_synced_and_damage_is_not(pair):
    remote, desk, lap = pair
    (desk / "tsconfig.json").write_text('{\n  // comments, as tsconfig allows\n  "a": 1\n}\n')
    (desk / "bom.json").write_bytes(b'\xef\xbb\xbf{"a": 1}\n')
    (desk / "empty.json").write_text("")
    sync_cli(desk, "push")
    (desk / "tsconfig.json").write_text('{\n  // edited\n  "a": 2\n}\n')
    sync_cli(desk, "push")
    (desk / "bom.json").write_bytes(b'\xef\xbb\xbf{"a": ')  # torn: it parsed before
    proc = sync_cli(desk, "push", check=2)
    assert "pre-sync check: not valid JSON (damaged?): bom.json" in proc.stdout


def test_resolve_quotes_paths_and_knows_a_wrong_repo(pair, tmp_path):
    remote, desk, lap = pair
    s = sync.Settings(repo=Path("/tmp/my notes"))
    assert "--repo '/tmp/my notes' 'clients/a b/tasks.json'" in sync.resolve_hint(
        s, ["clients/a b/tasks.json"])
    proc = sync_cli(tmp_path / "not-a-repo", "resolve", "--ours", check=2)
    assert "is not a git work tree (no .git directory)" in proc.stdout + proc.stderr


def test_status_fetch_over_a_stalled_transport_says_the_fetch_failed(pair):
    remote, desk, lap = pair
    _uploadpack(lap, "sleep 120\n")
    proc = sync_cli(lap, "status", "--fetch", "--timeout", "2", role="secondary", check=1)
    assert "fetch FAILED" in proc.stdout
    assert "made no progress for 2 s and was stopped" in proc.stdout


def test_the_snapshot_copies_only_what_git_does_not_hold(pair):
    remote, desk, lap = pair
    (lap / "notes/idea.md").write_text("an edit\n")
    (lap / "untracked.md").write_text("untracked\n")
    sync.snapshot(sync.Settings(repo=lap, role="secondary"))
    objects = [p for p in (lap / ".git/strongroom/objects").rglob("*") if p.is_file()]
    assert len(objects) == 2  # 200 clean tracked files cost no copy
    meta = sync_state.load(lap)
    assert meta["files"]["many/f001.txt"]["blob"]
    (lap / "many/f001.txt").write_text("damaged\n")
    (lap / "notes/idea.md").write_text("damaged too\n")
    sync_cli(lap, "rollback", role="secondary")
    assert (lap / "many/f001.txt").read_text() == "file 1\n"
    assert (lap / "notes/idea.md").read_text() == "an edit\n"


def test_a_slow_but_steady_fetch_outlasts_the_timeout(pair):
    remote, desk, lap = pair
    (desk / "big.bin").write_bytes(os.urandom(1_500_000))
    sync_cli(desk, "push")
    trickle = lap.parent / "trickle.py"  # ~200 kB/s: slow, never stalled
    trickle.write_text(
        f"#!{sys.executable}\nimport os, subprocess, sys, time\n"
        "p = subprocess.Popen(['git-upload-pack'] + sys.argv[1:], stdout=subprocess.PIPE)\n"
        "while b := os.read(p.stdout.fileno(), 20000):\n"
        "    os.write(1, b)\n    time.sleep(0.1)\nsys.exit(p.wait())\n")
    trickle.chmod(0o755)
    g(lap, "config", "remote.origin.uploadpack", str(trickle))
    started = time.monotonic()
    proc = sync_cli(lap, "pull", "--timeout", "3", role="secondary")
    assert time.monotonic() - started > 3  # it ran past the bound, and was let go on
    assert "pull: ok: merged" in proc.stdout
    assert (lap / "big.bin").read_bytes() == (desk / "big.bin").read_bytes()


# --- round two: what a user does after a kill, and what git does with ignored files --------


def _killed_pull(lap, point="pull-after-commit"):
    sync_cli(lap, "pull", role="secondary", env={**ENV, CRASH: point}, check=None)
    assert (lap / ".git/strongroom/op.json").exists()


def test_a_pull_never_removes_an_ignored_file_or_folder_in_the_way(pair):
    remote, desk, lap = pair
    (lap / ".git/info/exclude").write_text("secret.key\nprivate/\n")
    (lap / "secret.key").write_text("the only copy of my key\n")
    (lap / "private").mkdir()
    (lap / "private/.env").write_text("TOKEN=only here\n")
    (desk / "secret.key").mkdir()
    (desk / "secret.key/readme").write_text("a folder on the desktop\n")
    (desk / "private").write_text("a file on the desktop\n")
    sync_cli(desk, "push")
    proc = sync_cli(lap, "pull", role="secondary", check=2)
    assert "the other side added private/, secret.key, which here is a local file or " \
           "folder of yours" in proc.stdout
    assert (lap / "secret.key").read_text() == "the only copy of my key\n"
    assert (lap / "private/.env").read_text() == "TOKEN=only here\n"


def test_a_merge_the_user_started_after_a_kill_is_never_aborted_for_them(pair):
    remote, desk, lap = pair
    (desk / "notes/idea.md").write_text("desktop version\n")
    sync_cli(desk, "push")
    (lap / "notes/idea.md").write_text("laptop version\n")
    _killed_pull(lap)
    g(lap, "merge", "FETCH_HEAD", check=False)  # by hand: a conflict, resolved by hand
    (lap / "notes/idea.md").write_text("both, merged by hand (30 minutes of work)\n")
    proc = sync_cli(lap, "pull", role="secondary", check=2)
    assert "a merge is in progress (.git/MERGE_HEAD); finish or abort it first" in proc.stderr
    assert (lap / "notes/idea.md").read_text() == "both, merged by hand (30 minutes of work)\n"
    assert (lap / ".git/MERGE_HEAD").exists()


def test_a_hand_resolution_of_the_killed_syncs_own_merge_is_set_aside(pair):
    remote, desk, lap = pair
    (desk / "notes/idea.md").write_text("desktop version\n")
    sync_cli(desk, "push")
    (lap / "notes/idea.md").write_text("laptop version\n")
    s = sync.Settings(repo=lap, role="secondary")
    snap = sync.snapshot(s)
    (lap / ".git/strongroom/op.json").write_text(json.dumps(
        {"operation": "pull", "pid": 1, "started": "then", "ts": time.time()}))
    g(lap, "fetch", "-q", "origin", "main")
    theirs = g(lap, "rev-parse", "FETCH_HEAD").strip()
    g(lap, "add", "-A")
    g(lap, "commit", "-qm", "sync: local changes")
    sync._note(s, "commits", sync.current_head(s))
    sync._note(s, "merging", theirs)
    g(lap, "merge", theirs, check=False)  # killed here, conflict markers in the file
    (lap / "notes/idea.md").write_text("resolved by hand after the crash\n")
    proc = sync_cli(lap, "pull", role="secondary", check=2)  # the recovery, then the block
    assert "were copied to" in proc.stdout and snap["head"]
    assert _kept(lap, "notes/idea.md") == ["resolved by hand after the crash\n"]
    assert "<<<<<<<" not in (lap / "notes/idea.md").read_text()


def test_a_merge_commit_the_user_made_after_a_kill_is_not_undone(pair):
    remote, desk, lap = pair
    (desk / "notes/idea.md").write_text("desktop version\n")
    sync_cli(desk, "push")
    (lap / "notes/idea.md").write_text("laptop version\n")
    _killed_pull(lap)
    g(lap, "merge", "FETCH_HEAD", check=False)
    (lap / "notes/idea.md").write_text("both, merged by hand and committed\n")
    g(lap, "commit", "-qam", "Merge commit 'x'")  # the title git gives such a merge
    mine = g(lap, "rev-parse", "HEAD").strip()
    proc = sync_cli(lap, "pull", role="secondary")
    assert "the repository has moved on since" in proc.stdout
    assert g(lap, "merge-base", "--is-ancestor", mine, "HEAD", check=False) == ""
    assert (lap / "notes/idea.md").read_text() == "both, merged by hand and committed\n"


def test_what_the_user_staged_after_a_kill_stays_reachable(pair):
    remote, desk, lap = pair
    (desk / "notes/desk.md").write_text("from desk\n")
    sync_cli(desk, "push")
    (lap / "notes/idea.md").write_text("edit\n")
    _killed_pull(lap)
    (lap / "notes/idea.md").write_text("STAGED after the crash\n")
    g(lap, "add", "notes/idea.md")
    (lap / "notes/idea.md").write_text("then edited further\n")
    g(lap, "remote", "set-url", "origin", str(lap.parent / "offline.git"))
    proc = sync_cli(lap, "pull", role="secondary", check=2)
    assert "the index it replaced is saved as refs/strongroom/kept-index" in proc.stdout
    assert g(lap, "show", "refs/strongroom/kept-index:notes/idea.md") == \
        "STAGED after the crash\n"
    assert (lap / "notes/idea.md").read_text() == "then edited further\n"


def test_a_staged_version_survives_a_gc_between_snapshot_and_rollback(pair):
    remote, desk, lap = pair
    (desk / "notes/desk.md").write_text("from desk\n")
    sync_cli(desk, "push")
    (lap / "notes/idea.md").write_text("STAGED version A\n")
    g(lap, "add", "notes/idea.md")
    (lap / "notes/idea.md").write_text("work tree version B\n")
    _killed_pull(lap)
    g(lap, "reflog", "expire", "--all", "--expire=now")
    g(lap, "gc", "-q", "--prune=now")
    g(lap, "remote", "set-url", "origin", str(lap.parent / "offline.git"))
    sync_cli(lap, "pull", role="secondary", check=2)
    assert g(lap, "diff", "--cached", "--name-only") == "notes/idea.md\n"
    assert g(lap, "show", ":notes/idea.md") == "STAGED version A\n"  # readable after gc
    assert (lap / "notes/idea.md").read_text() == "work tree version B\n"


def test_going_back_to_the_committed_version_after_a_kill_is_respected(pair):
    remote, desk, lap = pair
    (desk / "notes/desk.md").write_text("from desk\n")
    sync_cli(desk, "push")
    (lap / "notes/idea.md").write_text("an edit the user then throws away\n")
    (lap / "many/f001.txt").chmod(0o755)
    _killed_pull(lap, "pull-after-fetch")
    g(lap, "checkout", "--", "notes/idea.md")  # back to the committed version
    (lap / "many/f001.txt").chmod(0o600)  # and a mode made private meanwhile
    sync_cli(lap, "pull", role="secondary")
    assert (lap / "notes/idea.md").read_text() == "idea\n"
    assert (lap / "many/f001.txt").stat().st_mode & 0o777 == 0o600


def test_a_killed_push_that_landed_is_not_undone(pair):
    remote, desk, lap = pair
    (desk / "notes/idea.md").write_text("desktop edit\n")
    s = sync.Settings(repo=desk, role="primary")
    sync.snapshot(s)
    (desk / ".git/strongroom/op.json").write_text(json.dumps(
        {"operation": "push", "pid": 1, "started": "then", "ts": time.time()}))
    g(desk, "add", "-A")
    g(desk, "commit", "-qm", "sync: desktop")
    g(desk, "push", "-q", "origin", "HEAD:main")  # landed; killed before its check
    landed = g(desk, "rev-parse", "HEAD").strip()
    proc = sync_cli(desk, "push")
    assert "its push had landed" in proc.stdout
    assert g(desk, "merge-base", "--is-ancestor", landed, "HEAD", check=False) == ""
    assert g(desk, "rev-parse", "HEAD") == g(remote, "rev-parse", "main")


def test_a_rename_on_one_side_and_an_edit_on_the_other_merges(pair):
    remote, desk, lap = pair
    g(lap, "mv", "notes/idea.md", "notes/renamed.md")
    (desk / "notes/idea.md").write_text("idea, edited on the desktop\n")
    sync_cli(desk, "push")
    proc = sync_cli(lap, "pull", role="secondary")
    assert "pull: ok: merged" in proc.stdout
    assert (lap / "notes/renamed.md").read_text() == "idea, edited on the desktop\n"
    sync_cli(lap, "push", role="secondary")


def test_files_git_converts_on_checkout_are_the_syncs_own_not_user_edits(pair):
    remote, desk, lap = pair
    (desk / ".gitattributes").write_text("*.txt text eol=crlf\n")
    sync_cli(desk, "push")
    sync_cli(lap, "pull", role="secondary")
    g(lap, "rm", "-q", "--cached", "-r", ".")
    g(lap, "reset", "-q", "--hard")  # the laptop's work tree now has CRLF files
    before = state(lap)
    for i in range(3):
        (desk / f"many/f00{i}.txt").write_text(f"desktop changed {i}\n")
    sync_cli(desk, "push")
    _killed_pull(lap, "pull-after-merge")
    g(lap, "remote", "set-url", "origin", str(lap.parent / "offline.git"))
    proc = sync_cli(lap, "pull", role="secondary", check=2)
    assert "kept as they are now" not in proc.stdout
    assert state(lap) == before


# --- round three: the sync's own state as input, and a kill during the rollback ----------


def test_a_snapshot_naming_paths_outside_the_work_tree_is_refused(pair, tmp_path):
    remote, desk, lap = pair
    (lap / "notes/idea.md").write_text("an edit\n")
    sync.snapshot(sync.Settings(repo=lap, role="secondary"))
    path = lap / ".git/strongroom/snapshot.json"
    meta = json.loads(path.read_text())
    victim = tmp_path / "victim.txt"
    victim.write_text("not the sync's to touch\n")
    entry = dict(meta["files"]["notes/idea.md"])
    for bad in ("../victim.txt", ".git/config", "/etc/x"):
        meta["files"] = {bad: entry}
        path.write_text(json.dumps(meta))
        proc = sync_cli(lap, "rollback", role="secondary", check=2)
        assert "the snapshot (" in proc.stderr and "is damaged" in proc.stderr
    assert victim.read_text() == "not the sync's to touch\n"
    assert (lap / "notes/idea.md").read_text() == "an edit\n"


def test_a_garbled_marker_never_crashes_the_next_run(pair):
    remote, desk, lap = pair
    for junk in ('[1, 2]', '{"incoming": [5], "merging": null, "ts": "x"}',
                 '{"incoming": ["--output=/tmp/x"], "operation": "pull"}'):
        (lap / ".git/strongroom/op.json").write_text(junk)
        proc = sync_cli(lap, "pull", role="secondary")
        assert "pull: ok" in proc.stdout and "Traceback" not in proc.stderr
        assert not Path("/tmp/x").exists() or junk.count("output") == 0


def test_a_name_that_is_not_utf8_syncs(pair):
    remote, desk, lap = pair
    name = os.fsdecode(b"caf\xe9.txt")
    (desk / name).write_text("bytes, not UTF-8, in the name\n")
    sync_cli(desk, "push")
    proc = sync_cli(lap, "pull", role="secondary")
    assert "pull: ok: merged" in proc.stdout
    assert (lap / name).read_text() == "bytes, not UTF-8, in the name\n"
    assert not (lap / ".git/strongroom/op.json").exists()


def test_an_ignored_file_deleted_after_a_kill_stays_deleted(pair):
    remote, desk, lap = pair
    (desk / "notes/desk.md").write_text("from desk\n")
    sync_cli(desk, "push")
    (lap / ".git/info/exclude").write_text("old.env\n")
    (lap / "old.env").write_text("OLD=1\n")
    (lap / "notes/idea.md").write_text("an edit to push\n")
    sync_cli(lap, "push", role="secondary", env={**ENV, CRASH: "push-after-commit"}, check=None)
    (lap / "old.env").unlink()  # the user throws it away
    sync_cli(lap, "pull", role="secondary")
    assert not (lap / "old.env").exists()
    assert _kept(lap, "old.env") == ["OLD=1\n"]  # the snapshot's copy, set aside


def test_a_kill_during_the_rollback_loses_nothing_the_user_made(pair):
    remote, desk, lap = pair
    (desk / "notes/desk.md").write_text("from desk\n")
    sync_cli(desk, "push")
    (lap / "notes/idea.md").write_text("before the crash\n")
    _killed_pull(lap)
    (lap / "notes/idea.md").write_text("typed after the crash\n")
    sync_cli(lap, "pull", role="secondary", env={**ENV, CRASH: "rollback-after-journal"},
         check=None)
    assert (lap / ".git/strongroom/rollback-saved.json").exists()
    proc = sync_cli(lap, "pull", role="secondary")
    assert "recovered from an interrupted pull" in proc.stdout
    assert (lap / "notes/idea.md").read_text() == "typed after the crash\n"
    assert not (lap / ".git/strongroom/rollback-saved.json").exists()
