"""library/git_bundle.py through main(), with exit_json/fail_json turned into exceptions."""

import json

import git_bundle
import pytest

from tests.helpers import commit, refs, rich_repo, store_snapshot
from tests.modules import harness


def run(args, **kw):
    return harness.run(git_bundle.main, args, **kw)


def ok(args, **kw):
    return harness.ok(git_bundle.main, args, **kw)


def failed(args, **kw):
    return harness.failed(git_bundle.main, args, **kw)


@pytest.fixture
def repos(tmp_path):
    root = tmp_path / "root"
    src = rich_repo(root / "r")
    return root, tmp_path / "store", src


def test_check_mode_writes_nothing_and_reports_the_plan(repos):
    root, store, _ = repos
    out = ok({"root": str(root), "store": str(store)}, check_mode=True)
    assert out["changed"] is True
    assert [r["action"] for r in out["repositories"]] == ["full"]
    assert not store.exists()


def test_sync_then_second_run_is_not_changed(repos):
    root, store, src = repos
    out = ok({"root": str(root), "store": str(store)})
    assert out["changed"] is True and out["exit_code"] == 0
    before = store_snapshot(store)
    out = ok({"root": str(root), "store": str(store)})
    assert out["changed"] is False
    assert [r["action"] for r in out["repositories"]] == ["unchanged"]
    assert store_snapshot(store) == before
    out = ok({"root": str(root), "store": str(store)}, check_mode=True)
    assert out["changed"] is False


def test_diff_shows_ref_changes(repos):
    root, store, src = repos
    ok({"root": str(root), "store": str(store)})
    commit(src, {"n": "1\n"})
    out = ok({"root": str(root), "store": str(store)}, check_mode=True, diff=True)
    (d,) = out["diff"]
    assert d["before_header"] == "r (last bundled)"
    assert "refs/heads/main" in d["before"] and d["before"] != d["after"]


def test_verified_and_restored_states(repos, tmp_path):
    root, store, src = repos
    ok({"root": str(root), "store": str(store)})
    out = ok({"state": "verified", "store": str(store)})
    assert out["changed"] is False and out["repositories"][0]["status"] == "ok"
    target = tmp_path / "out"
    args = {"state": "restored", "store": str(store), "names": ["r"], "target": str(target)}
    out = ok(args, check_mode=True)
    assert out["changed"] is True and not target.exists()
    out = ok(args)
    assert out["changed"] is True and refs(target) == refs(src)
    assert ok(args)["changed"] is False  # already holds the last synced refs


def test_failure_messages(repos, tmp_path):
    root, store, _ = repos
    out = failed({"state": "synced", "store": str(store)})
    assert out["msg"] == "state is synced but all of the following are missing: root"
    out = failed({"state": "restored", "store": str(store), "names": ["a", "b"],
                  "target": str(tmp_path / "t")})
    assert out["msg"] == "state=restored needs exactly one repository in names, got ['a', 'b']"
    out = failed({"state": "bogus", "store": str(store)})
    assert "value of state must be one of: synced, verified, restored, got: bogus" in out["msg"]
    out = failed({"state": "verified", "store": str(tmp_path / "nostore")})
    assert out["msg"] == f"bundle store {tmp_path / 'nostore'} does not exist"
    out = failed({"root": str(tmp_path / "nope"), "store": str(store)})
    assert out["msg"] == (f"repositories root {tmp_path / 'nope'} does not exist or is not "
                          "a directory")
    ok({"root": str(root), "store": str(store)})
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    out = failed({"state": "restored", "store": str(store), "names": ["r"],
                  "target": str(busy)})
    assert out["msg"].startswith(f"target {busy} exists and is not empty")
    assert (busy / "keep.txt").read_text() == "mine"


def test_a_failing_repository_fails_the_task_and_names_it(tmp_path):
    root = tmp_path / "root"
    rich_repo(root / "good")
    bad = root / "bad"
    bad.mkdir(parents=True)
    (bad / ".git").write_text("gitdir: /nonexistent/place\n")
    out = failed({"root": str(root), "store": str(tmp_path / "store")})
    assert out["msg"].startswith("1 of 2 repositories failed: bad: git rev-parse")
    assert out["exit_code"] == 3
    good = [r for r in out["repositories"] if r["name"] == "good"][0]
    assert good["action"] == "full"


def test_missing_engine_says_how_to_install_it(tmp_path):
    nowhere = tmp_path / "nowhere"
    out = failed({"root": str(tmp_path), "store": str(tmp_path / "s"),
                  "engine_venv": str(nowhere)})
    assert "Failed to import the required Python library (strongroom)" in out["msg"]
    assert f"{nowhere} does not exist" in out["msg"]
    assert "Run playbooks/site.yml to install the engine" in out["msg"]


def test_documentation_examples_and_return_parse_as_yaml():
    import yaml

    doc = yaml.safe_load(git_bundle.DOCUMENTATION)
    assert doc["module"] == "git_bundle"
    yaml.safe_load(git_bundle.EXAMPLES)
    json.dumps(yaml.safe_load(git_bundle.RETURN))
