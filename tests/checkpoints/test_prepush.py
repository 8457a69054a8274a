"""strongroom hook: a real git pre-push hook, pushing to a real bare repository."""

import json
import os
import subprocess

from strongroom import snapshots
from tests.helpers import ENV, VENV_BIN, commit, g, init, refs, strongroom

LIMIT = "64K"


def setup(tmp_path):
    bare = init(tmp_path / "remote.git", bare=True)
    repo = init(tmp_path / "work")
    commit(repo, {"README.md": "hello\n"}, "start")
    g(repo, "remote", "add", "origin", str(bare))
    conf, state = tmp_path / "conf", tmp_path / "state"
    return bare, repo, ["--config-dir", conf, "--state-dir", state], state


def push(repo, *args):
    # the hook runs the engine under the same environment as the test's git
    env = dict(ENV, PATH=f"{VENV_BIN}:{os.environ['PATH']}")
    return subprocess.run(["git", "-C", str(repo), "push", *args], capture_output=True,
                          text=True, env=env, check=False)


def test_a_push_is_snapshotted_first_and_big_files_are_refused(tmp_path):
    bare, repo, base, state = setup(tmp_path)
    proc = strongroom(*base, "hook", "install", "--repo", repo, "--max-size", LIMIT, check=0)
    hook = repo / ".git/hooks/pre-push"
    assert proc.stdout.startswith(f"installed {hook}") and os.access(hook, os.X_OK)
    dest = state / "pre-push" / "work"
    proc = push(repo, "-q", "origin", "main")
    assert proc.returncode == 0, proc.stderr
    assert "no file above 64.0 KiB in this push" in proc.stderr
    first = snapshots.snapshot_ids(dest)
    assert len(first) == 1 and refs(bare).split()[0] == g(repo, "rev-parse", "HEAD").strip()
    # the big file sits in a middle commit: the whole pushed range is checked, not the tip
    commit(repo, {"media/clip.bin": os.urandom(100_000)}, "add clip")
    commit(repo, {"notes.md": "more\n"}, "notes")
    before = refs(bare)
    proc = push(repo, "origin", "main")
    assert proc.returncode != 0
    assert "strongroom: push refused: 1 file(s) above 64.0 KiB would be pushed:" in proc.stderr
    assert "97.7 KiB  media/clip.bin" in proc.stderr
    assert refs(bare) == before  # nothing reached the remote
    (new,) = set(snapshots.snapshot_ids(dest)) - set(first)
    assert f"A snapshot of the work tree was taken first: {dest / new}." in proc.stderr
    assert snapshots.verify(dest, new)["passed"]
    assert (repo / "media/clip.bin").stat().st_size == 100_000  # local work untouched
    # a new branch carrying it is refused too; deleting a branch sends nothing and passes
    g(repo, "branch", "topic")
    assert push(repo, "origin", "topic").returncode != 0
    g(repo, "push", "-q", "--no-verify", "origin", "main~2:refs/heads/old")
    proc = push(repo, "origin", "--delete", "old")
    assert proc.returncode == 0, proc.stderr
    # taking the file out of the commits lets the push through
    g(repo, "rm", "-q", "--cached", "media/clip.bin")
    g(repo, "commit", "-q", "-m", "drop clip")
    g(repo, "rebase", "-q", "--onto", "main~3", "main~1", "main")  # leave out "add clip"
    assert "media/clip.bin" not in g(repo, "log", "--name-only", "--format=", "main")
    proc = push(repo, "origin", "main")
    assert proc.returncode == 0, proc.stderr


def test_install_is_idempotent_and_leaves_other_hooks_alone(tmp_path):
    _, repo, base, _ = setup(tmp_path)
    hook = repo / ".git/hooks/pre-push"
    theirs = "#!/bin/sh\necho their hook\n"
    hook.write_text(theirs)
    hook.chmod(0o755)
    proc = strongroom(*base, "hook", "install", "--repo", repo, check=2)
    assert f"{hook} is another pre-push hook; Strongroom leaves it alone" in proc.stderr
    assert hook.read_text() == theirs
    out = json.loads(strongroom(*base, "hook", "install", "--repo", repo, "--force",
                                "--dry-run", "--json", check=0).stdout)
    assert out["changed"] is True and hook.read_text() == theirs  # dry run: nothing written
    out = json.loads(strongroom(*base, "hook", "install", "--repo", repo, "--force", "--json",
                                check=0).stdout)
    kept = repo / ".git/hooks/pre-push.before-strongroom"
    assert out["changed"] is True and out["replaced"] == str(kept) and kept.read_text() == theirs
    out = json.loads(strongroom(*base, "hook", "install", "--repo", repo, "--json",
                                check=0).stdout)
    assert out["changed"] is False
    out = json.loads(strongroom(*base, "hook", "install", "--repo", repo, "--max-size", "1G",
                                "--json", check=0).stdout)
    assert out["changed"] is True and "--max-size 1073741824" in hook.read_text()
    proc = strongroom(*base, "hook", "uninstall", "--repo", repo, check=0)
    assert proc.stdout.strip() == f"removed {hook}"
    assert hook.read_text() == theirs and not kept.exists()  # theirs is back
    proc = strongroom(*base, "hook", "uninstall", "--repo", repo, check=2)
    assert "was not installed by Strongroom; left alone" in proc.stderr
    assert hook.read_text() == theirs


def test_core_hookspath_and_a_snapshot_job_are_followed(tmp_path):
    bare, repo, base, state = setup(tmp_path)
    shared = tmp_path / "shared-hooks"
    g(repo, "config", "core.hooksPath", str(shared))
    conf = tmp_path / "conf"
    (conf / "jobs").mkdir(parents=True)
    snaps = tmp_path / "snaps"
    (conf / "jobs/work-snap.yml").write_text(
        f"name: work-snap\ntype: snapshot\noptions:\n  source: {repo}\n  dest: {snaps}\n"
        "  critical: ['*.md']\n  immutable: 'off'\n")
    out = json.loads(strongroom(*base, "hook", "install", "--repo", repo, "--json",
                                check=0).stdout)
    assert out["hook"] == str(shared / "pre-push") and out["snapshot"] == {"job": "work-snap"}
    assert not (repo / ".git/hooks/pre-push").exists()
    proc = push(repo, "origin", "main")
    assert proc.returncode == 0, proc.stderr
    (snap_id,) = snapshots.snapshot_ids(snaps)
    assert (snaps / snap_id / "critical/README.md").read_text() == "hello\n"


def test_a_failed_snapshot_refuses_the_push(tmp_path):
    bare, repo, base, _ = setup(tmp_path)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the snapshots should go\n")
    strongroom(*base, "hook", "install", "--repo", repo, "--dest", blocker, check=0)
    proc = push(repo, "origin", "main")
    assert proc.returncode != 0
    assert "strongroom: push refused: the snapshot before the push failed:" in proc.stderr
    assert "push with --no-verify" in proc.stderr
    assert refs(bare) == "" and blocker.read_text().startswith("a file where")
    proc = strongroom(*base, "hook", "install", "--repo", tmp_path, check=2)
    assert f"{tmp_path} is not a git work tree" in proc.stderr


def test_a_work_tree_with_no_files_pushes_and_says_no_snapshot_was_taken(tmp_path):
    """Deleting every file and pushing that is a user's choice: there is nothing to save,
    so the hook lets the push through, says so, and writes no snapshot."""
    bare, repo, base, state = setup(tmp_path)
    strongroom(*base, "hook", "install", "--repo", repo, "--max-size", LIMIT, check=0)
    g(repo, "rm", "-q", "README.md")
    g(repo, "commit", "-q", "-m", "empty it")
    proc = push(repo, "origin", "main")
    assert proc.returncode == 0, proc.stderr
    assert "holds no files" in proc.stderr and "no snapshot taken" in proc.stderr
    assert "no snapshot (nothing to save); no file above 64.0 KiB in this push" in proc.stderr
    assert refs(bare).split()[0] == g(repo, "rev-parse", "HEAD").strip()
    assert snapshots.snapshot_ids(state / "pre-push" / "work") == []
