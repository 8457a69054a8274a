"""Every module returns what its RETURN documents, and check mode writes nothing.

Each module runs for real (tests/modules/harness.py) through its states, in and out of
check mode; every result is held to the module's RETURN: the keys documented as
`returned: always` are there, and no key is returned that RETURN does not list (besides
Ansible's standard ones). Every check-mode run is also held to its promise: the whole test
folder (paths, types, modes, contents, link targets) is byte-identical before and after.
"""

import importlib.util

import pytest
import yaml

from tests.dbversions.test_dbsync import add, make_db
from tests.helpers import ROOT, rich_repo
from tests.manifest.test_manifest import tree as manifest_tree
from tests.modules import harness
from tests.notify.test_notify import closed_port, write_targets
from tests.snapshots.test_snapshots import make_source
from tests.sync.test_gitsync import pair  # noqa: F401 -- the fixture
from tests.upload.test_upload import tree as upload_tree

MODULES = sorted(p.stem for p in (ROOT / "library").glob("*.py"))
# what Ansible itself puts in (or lets a module put in) any result
STANDARD = {"changed", "failed", "msg", "diff", "warnings", "deprecations", "invocation",
            "exception", "skipped"}


def load(name):
    """A library/ module by its file (git_sync's name is taken by the engine's package)."""
    spec = importlib.util.spec_from_file_location(f"returns_{name}",
                                                  ROOT / "library" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def tree_diff(before, after):
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


class Runner:
    """Runs one module and holds every result to its RETURN."""

    def __init__(self, name, tmp_path, ignore=()):
        self.name, self.tmp, self.ignore = name, tmp_path, set(ignore)
        self.mod = load(name)
        ret = yaml.safe_load(self.mod.RETURN) or {}
        self.documented = set(ret)
        self.always = {k for k, v in ret.items() if str(v.get("returned")).strip() == "always"}
        self.results = []

    def _run(self, expect, args, check_mode=False, diff=False):
        before = harness.tree_state(self.tmp) if check_mode else None
        call = harness.ok if expect == "ok" else harness.failed
        res = call(self.mod.main, args, check_mode=check_mode, diff=diff)
        extra = set(res) - self.documented - STANDARD
        assert not extra, (f"{self.name} returned undocumented keys {sorted(extra)} "
                           f"for {args} (check_mode={check_mode}): {res}")
        if expect == "ok":
            missing = self.always - set(res)
            assert not missing, (f"{self.name} lacks keys documented as returned always: "
                                 f"{sorted(missing)} for {args}: {res}")
        if check_mode:
            changed = [p for p in tree_diff(before, harness.tree_state(self.tmp))
                       if p not in self.ignore]
            assert not changed, f"{self.name} in check mode wrote {changed} for {args}"
        self.results.append(res)
        return res

    def ok(self, args, **kw):
        return self._run("ok", args, **kw)

    def failed(self, args, **kw):
        return self._run("failed", args, **kw)


def rclone_local(tmp_path):
    conf = tmp_path / "rclone.conf"
    conf.write_text("[local]\ntype = local\n")
    conf.chmod(0o600)
    return conf, f"local:{tmp_path / 'remote'}"


def run_checksum_manifest(run, tmp_path):
    root = manifest_tree(tmp_path / "t")
    args = {"root": str(root), "path": str(tmp_path / "m.json")}
    run.ok(args, check_mode=True, diff=True)
    run.ok(args, diff=True)
    run.ok(args)
    (root / "notes/a.md").write_text("edited\n")
    run.ok(args, check_mode=True, diff=True)
    run.failed(dict(args, state="verified"))
    run.ok(args)
    run.ok(dict(args, state="verified"), check_mode=True)
    run.ok(dict(args, state="verified", mode="fast"))


def run_db_backup(run, tmp_path):
    conf, remote = rclone_local(tmp_path)
    db = make_db(tmp_path / "a/app.db")
    args = {"db": str(db), "remote": remote, "host": "alpha",
            "state_dir": str(tmp_path / "sa"), "rclone_config": str(conf)}
    run.ok(args, check_mode=True)
    run.ok(args)
    run.ok(args)
    run.ok(args, check_mode=True)
    add(db, 2)
    run.ok(dict(args, only_if_changed=False, bwlimit="10M", retries=2))
    run.ok(dict(args, operation="status"))
    other = {"db": str(tmp_path / "b/app.db"), "remote": remote, "host": "beta",
             "state_dir": str(tmp_path / "sb"), "rclone_config": str(conf),
             "operation": "sync"}
    run.ok(other, check_mode=True)
    run.ok(other)
    run.ok(other)
    add(tmp_path / "b/app.db", 1, tag="beta")
    run.ok(other)  # a push
    add(db, 1, tag="alpha")
    run.failed(dict(args, operation="sync"))  # both sides changed


def run_git_bundle(run, tmp_path):
    root, store = tmp_path / "root", tmp_path / "store"
    rich_repo(root / "app")
    args = {"root": str(root), "store": str(store)}
    run.ok(args, check_mode=True, diff=True)
    run.ok(args, diff=True)
    run.ok(args, check_mode=True, diff=True)
    run.ok(args)
    run.ok({"state": "verified", "store": str(store)})
    restore = {"state": "restored", "store": str(store), "names": ["app"],
               "target": str(tmp_path / "restored")}
    run.ok(restore, check_mode=True)
    run.ok(restore)
    run.ok(restore, check_mode=True)
    run.ok(restore)
    run.failed({"state": "verified", "store": str(tmp_path / "empty-store")})


def run_git_sync(run, tmp_path, pair):  # noqa: F811
    remote, desk, lap = pair
    policies = {"log.md": "append", "clients/*/tasks.json": "block"}

    def args(repo, operation, role="primary"):
        return {"repo": str(repo), "operation": operation, "role": role, "policies": policies}

    run.ok(args(desk, "status"))
    run.ok(args(desk, "policies"), check_mode=True)
    run.ok(args(desk, "policies"))
    (desk / "notes/idea.md").write_text("idea, refined\n")
    run.ok(args(desk, "push"), check_mode=True)
    run.ok(args(desk, "push"))
    run.ok(args(lap, "pull", "secondary"), check_mode=True)
    run.ok(args(lap, "pull", "secondary"))
    (lap / "notes/idea.md").write_text("damaged after the sync\n")
    run.ok(args(lap, "rollback", "secondary"), check_mode=True)
    run.ok(args(lap, "rollback", "secondary"))
    run.ok(args(lap, "status", "secondary"))


def run_immutable_snapshot(run, tmp_path):
    src, dest = make_source(tmp_path), tmp_path / "snaps"
    args = {"source": str(src), "dest": str(dest), "critical": ["*.md"], "immutable": "off",
            "min_age_hours": 20}
    run.ok(args, check_mode=True)
    run.ok(args)
    run.ok(args)
    run.ok(args, check_mode=True)
    run.ok({"dest": str(dest), "state": "verified"}, check_mode=True)
    run.ok({"dest": str(dest), "state": "verified"})
    run.ok({"dest": str(dest), "state": "verified"}, check_mode=True)
    run.ok(dict(args, min_age_hours=0))
    prune = {"dest": str(dest), "state": "pruned", "keep_last": 1, "keep_days": 0}
    run.ok(prune, check_mode=True)
    run.ok(prune)
    run.failed({"dest": str(tmp_path / "none"), "state": "verified"})


def run_notify(run, tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    run.ok({"title": "nothing to send", "config_dir": str(conf)})
    write_targets(conf, closed_port())
    run.ok({"title": "x", "severity": "error", "config_dir": str(conf)}, check_mode=True)
    run.ok({"title": "x", "severity": "error", "config_dir": str(conf),
            "fail_on_error": False})
    run.failed({"title": "x", "severity": "error", "config_dir": str(conf)})
    run.failed({"title": "x", "config_dir": str(conf), "targets": ["pager"]})


def run_rclone_transfer(run, tmp_path):
    conf, remote = rclone_local(tmp_path)
    src = tmp_path / "day"
    upload_tree(src)
    args = {"src": str(src), "dest": remote, "rclone_config": str(conf),
            "journal_dir": str(tmp_path / "journal"), "immutable": True}
    run.ok(args, check_mode=True)
    run.ok(args)
    run.ok(args)
    run.ok(args, check_mode=True)
    run.ok(dict(args, delete_local_after_verify=True, bwlimit="10M"))
    src.mkdir(exist_ok=True)
    (src / "a.txt").write_text("other content\n")
    run.failed(args)  # immutable: other content on the remote


SCENARIOS = {
    "checksum_manifest": run_checksum_manifest,
    "db_backup": run_db_backup,
    "git_bundle": run_git_bundle,
    "git_sync": run_git_sync,
    "immutable_snapshot": run_immutable_snapshot,
    "notify": run_notify,
    "rclone_transfer": run_rclone_transfer,
}
# git refreshes its index's stat cache when it reads a work tree (git status does): a
# cache of what is there, not a change to it
IGNORED = {"git_sync": {"desktop/.git/index", "laptop/.git/index"}}


def test_every_module_has_a_scenario():
    assert sorted(SCENARIOS) == MODULES


@pytest.mark.parametrize("name", MODULES)
def test_results_match_return_and_check_mode_writes_nothing(name, tmp_path, request,
                                                             monkeypatch):
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("STRONGROOM_VENV", raising=False)
    run = Runner(name, tmp_path, IGNORED.get(name, ()))
    scenario = SCENARIOS[name]
    if name == "git_sync":
        scenario(run, tmp_path, request.getfixturevalue("pair"))
    else:
        scenario(run, tmp_path)
    assert run.results


@pytest.mark.parametrize("name", MODULES)
def test_documentation_declares_attributes_and_full_returns(name):
    mod = load(name)
    doc = yaml.safe_load(mod.DOCUMENTATION)
    fragments = doc.get("extends_documentation_fragment") or []
    assert "ansible.builtin.action_common_attributes" in fragments
    assert "strongroom.backup.engine" in fragments
    assert "strongroom.backup.engine.attributes" in fragments
    assert {"check_mode", "diff_mode"} <= set(doc["attributes"])
    for attr in ("check_mode", "diff_mode"):
        assert doc["attributes"][attr]["support"] in ("full", "partial", "none")
    ret = yaml.safe_load(mod.RETURN) or {}
    for key, entry in ret.items():
        assert {"description", "returned", "type"} <= set(entry), f"{name}: RETURN {key}"
    assert "strongroom.backup." + name in mod.EXAMPLES
    assert "ansible_python_interpreter" not in mod.EXAMPLES
