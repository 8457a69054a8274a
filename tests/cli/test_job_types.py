"""--job NAME on every verb that takes it refuses a job of another type, by name, with one
message and exit 2, before anything is written."""

import json

import pytest

from strongroom.cli import jobfile
from tests.cli.support import contract_leaves, in_process
from tests.helpers import commit, init

# verb path -> (arguments beyond --job, the command named in the message)
CASES = {
    "bundle sync": ([], "bundle"),
    "bundle verify": ([], "bundle"),
    "bundle restore": (["r", "--to", "{tmp}/t"], "bundle"),
    "bundle list": ([], "bundle"),
    "bundle consolidate": (["r"], "bundle"),
    "drill": ([], "drill"),
    "sync push": ([], "sync"),
    "sync pull": ([], "sync"),
    "sync status": ([], "sync"),
    "sync rollback": ([], "sync"),
    "sync resolve": ([], "sync"),
    "snapshot now": ([], "snapshot"),
    "snapshot list": ([], "snapshot"),
    "snapshot verify": ([], "snapshot"),
    "snapshot restore": (["ID", "--full", "--to", "{tmp}/t"], "snapshot"),
    "snapshot prune": ([], "snapshot"),
    "backup now": ([], "snapshot"),
    "checkpoint save": ([], "checkpoint"),
    "checkpoint list": ([], "checkpoint"),
    "checkpoint verify": ([], "checkpoint"),
    "save": ([], "checkpoint"),
    "checkpoints list": ([], "checkpoint"),
    "hook install": (["--repo", "{tmp}/repo"], "hook"),
    "hook pre-push": (["--max-size", "1"], "hook"),
    "rollup list": ([], "rollup"),
    "rollup restore": (["--day", "2020-03-01", "--to", "{tmp}/t"], "rollup"),
    "db backup": ([], "db"),
    "db list": ([], "db"),
    "db restore": (["KEY"], "db"),
    "db sync": ([], "db"),
    "db status": ([], "db"),
    "db tick": ([], "db"),
    "bisync": ([], "bisync"),
    "restic restore": (["latest", "--to", "{tmp}/t"], "restic"),
}


@pytest.fixture
def conf(tmp_path):
    repo = init(tmp_path / "repo")
    commit(repo, {"a.txt": "a\n"})
    jobs = tmp_path / "conf" / "jobs"
    jobs.mkdir(parents=True)
    (jobs / "wip.yml").write_text(f"name: wip\ntype: checkpoint\noptions:\n  source: {repo}\n"
                                  f"  dest: {tmp_path / 'ckpts'}\n")
    (jobs / "snap.yml").write_text(f"name: snap\ntype: snapshot\noptions:\n  source: {repo}\n"
                                   f"  dest: {tmp_path / 'snaps'}\n")
    (jobs / "stale.yml").write_text("name: stale\ntype: status\n")  # a type with no drill
    return tmp_path / "conf"


def test_every_verb_with_job_is_in_the_table():
    takes_job = {path for path, p in contract_leaves().items()
                 if any("--job" in a.option_strings for a in p._actions)}
    old_names = {"backup list", "backup verify", "backup restore", "backup prune",
                 "checkpoints verify"}  # the same parsers as their new names
    assert takes_job - old_names == set(CASES)


@pytest.mark.parametrize("path", sorted(CASES))
def test_a_job_of_another_type_is_refused(path, conf, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path / "repo")  # the pre-push hook runs in the work tree
    extra, command = CASES[path]
    name, kind = ("snap", "snapshot") if command == "checkpoint" else \
        ("stale", "status") if command == "drill" else ("wip", "checkpoint")
    argv = ["--config-dir", conf, "--state-dir", tmp_path / "state", *path.split(),
            "--job", name, *[a.format(tmp=tmp_path) for a in extra]]
    wanted = " or ".join(jobfile.takes(command))
    message = f"job {name} is a {kind} job; `strongroom {command}` takes {wanted} jobs"
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code, out, err = in_process(capsys, *argv)
    assert code == 2 and f"strongroom: error: {message}" in err, err
    code, out, err = in_process(capsys, *argv, "--json")
    assert code == 2 and message in err
    assert json.loads(out) == {"result": "error", "exit_code": 2, "message": message}
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_a_job_of_the_right_type_is_taken(conf, tmp_path, capsys):
    code, out, err = in_process(capsys, "--config-dir", conf, "--state-dir", tmp_path / "st",
                                "checkpoint", "list", "--job", "wip", "--json")
    assert code == 0, err
    assert json.loads(out)["dest"] == str(tmp_path / "ckpts")
