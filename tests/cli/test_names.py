"""One word per capability, one spelling per restore target: the old names still work and
warn on stderr (never on --json's stdout); "nothing to verify" is 1 on every verify verb."""

import json

import pytest

from tests.cli.support import Runner, envelope, in_process
from tests.helpers import commit, init, rich_repo


def warning(old, new):
    return (f'strongroom: warning: "{old}" is now "{new}"; the old name will be removed in '
            "a later release")


def test_backup_is_now_snapshot(tmp_path):
    sr = Runner(tmp_path)
    src, dest = tmp_path / "src", tmp_path / "snaps"
    src.mkdir()
    (src / "a.txt").write_text("a\n")
    proc = sr.run("backup", "now", "--source", src, "--dest", dest, "--immutable", "off",
                  "--json")
    assert proc.returncode == 0
    assert proc.stderr.splitlines() == [warning("backup", "snapshot")]
    snap_id = envelope(proc)["id"]  # stdout is the object alone
    new = sr.run("snapshot", "list", "--dest", dest, "--json", check=0)
    assert new.stderr == ""
    old = sr.run("backup", "list", "--dest", dest, "--json", check=0)
    assert warning("backup", "snapshot") in old.stderr
    for proc in (old, new):
        assert [s["id"] for s in json.loads(proc.stdout)["snapshots"]] == [snap_id]


def test_save_and_checkpoints_are_now_checkpoint(tmp_path):
    sr = Runner(tmp_path)
    repo = init(tmp_path / "repo")
    commit(repo, {"a.txt": "a\n"})
    (repo / "a.txt").write_text("edited\n")
    dest = tmp_path / "ckpts"
    proc = sr.run("save", "--source", repo, "--dest", dest, check=0)
    assert proc.stderr.splitlines()[0] == warning("save", "checkpoint save")
    assert proc.stdout.strip().startswith(str(dest / "progress"))
    for verb in ("list", "verify"):
        old = sr.run("checkpoints", verb, "--dest", dest, "--json", check=0)
        assert old.stderr.splitlines() == [warning("checkpoints", "checkpoint")]
        new = sr.run("checkpoint", verb, "--dest", dest, "--json", check=0)
        assert new.stderr == "" and json.loads(old.stdout) == json.loads(new.stdout)


def test_restore_targets_are_to_everywhere(tmp_path):
    sr = Runner(tmp_path)
    rich_repo(tmp_path / "root" / "r")
    store = tmp_path / "store"
    sr.run("bundle", "sync", "--root", tmp_path / "root", "--store", store, check=0)
    proc = sr.run("bundle", "restore", "--store", store, "r", "--to", tmp_path / "a", check=0)
    assert "warning" not in proc.stderr and (tmp_path / "a/.git").is_dir()
    proc = sr.run("bundle", "restore", "--store", store, "r", tmp_path / "b", check=0)
    assert warning("bundle restore NAME TARGET", "bundle restore NAME --to TARGET") \
        in proc.stderr and (tmp_path / "b/.git").is_dir()
    proc = sr.run("bundle", "restore", "--store", store, "r")
    assert proc.returncode == 64 and "--to DIR is required" in proc.stderr
    proc = sr.run("bundle", "restore", "--store", store, "r", tmp_path / "c", "--to",
                  tmp_path / "d")
    assert proc.returncode == 64 and not (tmp_path / "c").exists()

    src, dest = tmp_path / "src", tmp_path / "snaps"
    (src / "docs").mkdir(parents=True)
    (src / "docs/plan.md").write_text("plan\n")
    snap_id = sr.run("snapshot", "now", "--source", src, "--dest", dest, "--immutable", "off",
                     check=0).stdout.strip()
    proc = sr.run("snapshot", "restore", "--dest", dest, snap_id, "--full", "--target",
                  tmp_path / "e", check=0)
    assert warning("--target", "--to") in proc.stderr
    assert (tmp_path / "e/docs/plan.md").read_text() == "plan\n"
    proc = sr.run("snapshot", "restore", "--dest", dest, snap_id, "--full", "--to",
                  tmp_path / "f", check=0)
    assert proc.stderr == "" and (tmp_path / "f/docs/plan.md").exists()
    proc = sr.run("snapshot", "restore", "--dest", dest, snap_id, "--full")
    assert proc.returncode == 64 and "--to DIR is required" in proc.stderr


@pytest.mark.parametrize("path", ["bundle restore", "snapshot restore", "rollup restore",
                                  "restic restore"])
def test_every_restore_verb_says_to_dir_the_same_way(path, capsys):
    code, out, _ = in_process(capsys, *path.split(), "--help")
    text = " ".join(out.split())
    assert code == 0 and "--to DIR the directory to restore into" in text
    assert "--target" not in text  # the old spelling works, out of the help


def test_nothing_to_verify_is_1_on_every_verify_verb(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    conf = tmp_path / "conf"
    (conf / "jobs").mkdir(parents=True)
    manifest = tmp_path / "m.json"
    assert in_process(capsys, "manifest", "create", empty, "--out", manifest)[0] == 0
    base = ["--config-dir", conf, "--state-dir", tmp_path / "state"]
    for argv in (["bundle", "verify", "--store", empty],
                 ["snapshot", "verify", "--dest", empty],
                 ["backup", "verify", "--dest", empty],
                 ["checkpoint", "verify", "--dest", empty],
                 ["checkpoints", "verify", "--dest", empty],
                 ["manifest", "verify", empty, "--manifest", manifest],
                 ["drill"]):
        code, out, err = in_process(capsys, *base, *argv)
        assert code == 1, (argv, out, err)
        assert "nothing to verify" in out, argv
        code, out, err = in_process(capsys, *base, *argv, "--json")
        data = json.loads(out)
        assert (code, data["result"], data["exit_code"]) == (1, "warning", 1), argv
        assert data["message"].startswith("nothing to verify"), (argv, data["message"])
