"""library/git_sync.py in-process over two real clones of a real bare remote."""

import importlib.util
import time
from pathlib import Path

from tests.helpers import g
from tests.modules.harness import failed, ok
from tests.sync.test_gitsync import fingerprint, pair  # noqa: F401 -- the fixture

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("git_sync_module", ROOT / "library/git_sync.py")
module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(module)
POLICIES = {"log.md": "append", "clients/*/tasks.json": "block"}


def args(repo, operation, role="primary", **extra):
    return {"repo": str(repo), "operation": operation, "role": role, "policies": POLICIES,
            **extra}


def git_state(repo):
    """Everything a check-mode run must leave alone: refs, config, attributes, tree."""
    refs = g(repo, "for-each-ref", "--format=%(refname) %(objectname)")
    git_dir = Path(repo) / ".git"
    extra = {p.name: p.read_bytes() for p in (git_dir / "config", git_dir / "info/attributes",
                                              git_dir / "FETCH_HEAD") if p.exists()}
    return refs, extra, fingerprint(repo)


def test_policies_are_installed_once_and_check_mode_writes_nothing(tmp_path):
    repo = tmp_path / "r"
    g(tmp_path, "init", "-q", "-b", "main", str(repo))
    g(repo, "commit", "-q", "--allow-empty", "-m", "start")
    before = git_state(repo)
    out = ok(module.main, args(repo, "policies"), check_mode=True)
    assert out["changed"] and "info/attributes" in out["policy_changes"]
    assert git_state(repo) == before
    out = ok(module.main, args(repo, "policies"))
    assert out["changed"] and "merge.strongroom-append.driver" in out["policy_changes"]
    attrs = (repo / ".git/info/attributes").read_text()
    assert "log.md merge=strongroom-append\n" in attrs
    assert "clients/*/tasks.json merge=strongroom-block\n" in attrs
    assert ok(module.main, args(repo, "policies")) == {"changed": False, "policy_changes": []}
    # a changed policy is a change, and only the block is rewritten
    out = ok(module.main, args(repo, "policies", policies={"log.md": "block"}))
    assert out["changed"] and out["policy_changes"] == ["info/attributes"]
    # the secondary's primary-wins driver takes the other side's version
    out = ok(module.main, args(repo, "policies", role="secondary"))
    assert "merge.strongroom-primary-wins.driver" in out["policy_changes"]
    assert "merge-driver theirs" in g(repo, "config", "merge.strongroom-primary-wins.driver")


def test_push_check_mode_reports_and_changes_nothing_then_pushes_once(pair):  # noqa: F811
    remote, desk, lap = pair
    (desk / "notes/idea.md").write_text("idea, refined\n")
    before, remote_before = git_state(desk), g(remote, "rev-parse", "main")
    out = ok(module.main, args(desk, "push"), check_mode=True)
    assert out["changed"] and out["dirty"] == ["notes/idea.md"]
    assert out["message"] == "would commit 1 file(s) and push"
    assert out["remote_head"] == remote_before.strip()
    assert git_state(desk) == before and g(remote, "rev-parse", "main") == remote_before
    out = ok(module.main, args(desk, "push"))
    assert out["changed"] and out["message"].startswith("pushed ")
    assert g(remote, "rev-parse", "main").strip() == out["head"]
    time.sleep(1.1)  # a new manifest timestamp must not make a commit of nothing
    assert ok(module.main, args(desk, "push"))["changed"] is False
    assert g(remote, "rev-parse", "main").strip() == out["head"]
    assert ok(module.main, args(desk, "push"), check_mode=True)["changed"] is False


def test_pull_check_mode_does_not_fetch_then_pull_merges_once(pair):  # noqa: F811
    remote, desk, lap = pair
    (desk / "notes/new.md").write_text("new\n")
    ok(module.main, args(desk, "push"))
    before = git_state(lap)
    out = ok(module.main, args(lap, "pull", role="secondary"), check_mode=True)
    assert out["changed"] and out["message"].startswith("would merge ")
    assert git_state(lap) == before and not (lap / "notes/new.md").exists()
    out = ok(module.main, args(lap, "pull", role="secondary"))
    assert out["changed"] and "notes/new.md" in out["incoming"]
    assert (lap / "notes/new.md").read_text() == "new\n"
    assert ok(module.main, args(lap, "pull", role="secondary"))["changed"] is False
    assert ok(module.main, args(lap, "pull", role="secondary"),
              check_mode=True)["changed"] is False


def test_a_failed_pull_fails_the_task_saying_it_rolled_back(pair, tmp_path):  # noqa: F811
    remote, desk, lap = pair
    other = tmp_path / "other"
    g(tmp_path, "clone", "-q", str(remote), str(other))
    (other / "notes/idea.md").write_text("silently altered\n")
    g(other, "commit", "-q", "-am", "altered")
    g(other, "push", "-q", "origin", "main")
    before = fingerprint(lap)
    out = failed(module.main, args(lap, "pull", role="secondary"))
    assert out["msg"].startswith(f"pull of {lap} failed: post-pull check failed (corruption)")
    assert "; rolled back to " in out["msg"] and out["rollback"].startswith("rolled back to")
    assert fingerprint(lap) == before


def test_rollback_is_honest_about_changed_in_both_modes(pair):  # noqa: F811
    remote, desk, lap = pair
    assert ok(module.main, args(lap, "rollback", role="secondary"))["changed"] is False
    (lap / "notes/idea.md").write_text("damaged after the sync\n")
    out = ok(module.main, args(lap, "rollback", role="secondary"), check_mode=True)
    assert out["changed"] and out["changed_files"] == ["notes/idea.md"]
    assert (lap / "notes/idea.md").read_text() == "damaged after the sync\n"
    out = ok(module.main, args(lap, "rollback", role="secondary"))
    assert out["changed"] and out["changed_files"] == ["notes/idea.md"]
    assert (lap / "notes/idea.md").read_text() == "idea\n"
    # a snapshot holding an uncommitted edit: rolling back onto the same tree changes
    # nothing and keeps the edit
    (lap / "log.md").write_text("done: first\nunsynced\n")
    assert ok(module.main, args(lap, "pull", role="secondary"))["changed"] is False
    assert ok(module.main, args(lap, "rollback", role="secondary"))["changed"] is False
    assert (lap / "log.md").read_text() == "done: first\nunsynced\n"


def test_status_unreachable_remote_and_missing_snapshot(pair, tmp_path):  # noqa: F811
    remote, desk, lap = pair
    (desk / "log.md").write_text("edited\n")
    out = ok(module.main, args(desk, "status"))
    assert out["changed"] is False and out["dirty"] == ["log.md"]
    assert out["status"]["ahead"] == 0 and out["status"]["last"]["result"] == "ok"
    g(desk, "remote", "set-url", "origin", str(tmp_path / "gone.git"))
    before = git_state(desk)
    out = failed(module.main, args(desk, "push"), check_mode=True)
    assert out["msg"].startswith("cannot reach origin: ")
    assert git_state(desk) == before
    fresh = tmp_path / "fresh"
    g(tmp_path, "init", "-q", "-b", "main", str(fresh))
    out = failed(module.main, args(fresh, "rollback"))
    assert out["msg"] == f"{fresh}: no snapshot to roll back to"
    out = failed(module.main, args(tmp_path / "nothing", "push"))
    assert out["msg"].endswith("is not a git work tree (no .git directory)")
