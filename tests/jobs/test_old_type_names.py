"""A job type's old name works as its new one does, and says so: in `config check`, and in
the run's log and stderr. The engine past the loader sees the new name only."""

import json

import pytest

from strongroom import notify
from strongroom.jobs import config, schema
from tests.helpers import strongroom
from tests.jobs.helpers import run_config

RENAMED = {"bundle_sync": "bundle", "git_sync": "sync", "db_backup": "db",
           "restore_drill": "drill", "status_check": "status"}


def warning(name, old):
    return (f'job {name}: type "{old}" is now "{RENAMED[old]}"; the old name will be removed '
            "in a later release")


def sr(conf, state, *args, check=None):
    return strongroom("--config-dir", conf, "--state-dir", state, *args, check=check)


def test_the_renames_are_the_ones_the_schema_knows():
    assert schema.OLD_NAMES == RENAMED
    for old, new in RENAMED.items():
        assert schema.canonical(old) == schema.canonical(new) == new
        assert schema.job_type(old) is schema.job_type(new)
    assert schema.canonical("nope") is None and schema.canonical(["bundle"]) is None


@pytest.mark.parametrize("old", sorted(RENAMED))
def test_config_check_takes_the_old_name_and_warns(tmp_path, capsys, old):
    opts = {"bundle_sync": "{root: /srv, store: /s}", "git_sync":
            "{repo: /r, direction: push, role: primary}", "db_backup": "{db: /d.db}",
            "restore_drill": "{}", "status_check": "{}"}[old]
    for spelling in (old, RENAMED[old]):
        f = tmp_path / f"{spelling}-job.yml"
        f.write_text(f"name: {spelling}-job\ntype: {spelling}\noptions: {opts}\n")
        code, out, err = run_config(capsys, "check", f, config_dir=tmp_path)
        assert code == 0
        # the type as the file says it, as before; the warning says what it is now
        assert out == f"{f}: valid {spelling} job '{spelling}-job'\n"
        if spelling == old:
            assert err == f"warning: {warning(f'{old}-job', old)}\n"
        else:
            assert err == ""
        code, out, _ = run_config(capsys, "check", f, "--json", config_dir=tmp_path)
        env = json.loads(out)
        assert env["type"] == RENAMED[old] and env["type_as_written"] == spelling
        assert env["warnings"] == ([warning(f"{old}-job", old)] if spelling == old else [])


def test_the_loader_gives_the_rest_of_the_engine_one_name(tmp_path):
    (tmp_path / "jobs").mkdir()
    for name, kind in (("a", "bundle_sync"), ("b", "bundle")):
        (tmp_path / "jobs" / f"{name}.yml").write_text(
            f"name: {name}\ntype: {kind}\noptions: {{root: /r, store: /s}}\n")
    notes = []
    a, b = config.load_job(tmp_path, "a", notes=notes), config.load_job(tmp_path, "b")
    assert a["type"] == b["type"] == "bundle"
    assert notes == [warning("a", "bundle_sync")]
    assert {**a, "name": "b"} == b
    # a verb that takes a type by either name takes the job by either name
    for wanted in ("bundle_sync", "bundle"):
        assert config.load_job_of_type(tmp_path, "a", wanted)["type"] == "bundle"
    with pytest.raises(config.ConfigError, match="job a is a bundle job, not a db job"):
        config.load_job_of_type(tmp_path, "a", "db_backup")


def test_notifications_read_either_name_the_same():
    for code in (0, 1, 2, 3):
        for prev in (None, "ok", "error"):
            for old, new in RENAMED.items():
                assert notify.job_event(code, prev, old) == notify.job_event(code, prev, new)
    assert notify.job_event(1, None, "drill") == ("drill_failed", "warning")
    assert notify.job_event(1, None, "status") == (None, None)


def test_a_status_job_runs_the_same_by_either_name_and_the_old_one_warns(tmp_path):
    conf, state = tmp_path / "conf", tmp_path / "state"
    (conf / "jobs").mkdir(parents=True)
    prom = {}
    for name, kind in (("old", "status_check"), ("new", "status")):
        prom[name] = tmp_path / f"{name}.prom"
        (conf / "jobs" / f"{name}.yml").write_text(
            f"name: {name}\ntype: {kind}\noptions: {{prometheus: {prom[name]}}}\n")
    runs = {name: sr(conf, state, "run", name, check=0) for name in ("old", "new")}
    assert runs["old"].stderr == f"strongroom: warning: {warning('old', 'status_check')}\n"
    assert runs["new"].stderr == ""
    log = (state / "log" / "old.log").read_text()
    assert f"warning: {warning('old', 'status_check')}" in log
    assert "warning" not in (state / "log" / "new.log").read_text()
    status = {n: json.loads((state / "status" / f"{n}.json").read_text()) for n in runs}
    assert status["old"]["type"] == status["new"]["type"] == "status"
    for key in ("result", "exit_code", "counts"):
        assert status["old"][key] == status["new"][key], key
    # the textfile and `jobs list` say the type by its one word
    assert 'type="status"' in prom["new"].read_text()
    assert "status_check" not in prom["old"].read_text()
    rows = {r["job"]: r for r in json.loads(sr(conf, state, "jobs", "list", "--json",
                                               check=0).stdout)["jobs"]}
    assert rows["old"]["type"] == rows["new"]["type"] == "status"


def test_a_bundle_job_and_its_drill_run_the_same_by_either_name(bed):
    tmp, root, conf, state = bed
    for suffix, bundle, drill in (("old", "bundle_sync", "restore_drill"),
                                  ("new", "bundle", "drill")):
        (conf / "jobs" / f"b-{suffix}.yml").write_text(
            f"name: b-{suffix}\ntype: {bundle}\noptions:\n  root: {root}\n"
            f"  store: {tmp / ('store-' + suffix)}\n  critical_patterns: []\n")
        (conf / "jobs" / f"d-{suffix}.yml").write_text(
            f"name: d-{suffix}\ntype: {drill}\noptions:\n  jobs: [b-{suffix}]\n"
            f"  scratch: {tmp / ('scratch-' + suffix)}\n")
    out = {}
    for suffix in ("old", "new"):
        b = sr(conf, state, "run", f"b-{suffix}", check=0)
        d = sr(conf, state, "run", f"d-{suffix}", check=0)
        out[suffix] = [json.loads((state / "status" / f"{kind}-{suffix}.json").read_text())
                       for kind in ("b", "d")]
        warned = [line for line in b.stderr.splitlines() + d.stderr.splitlines()
                  if "warning" in line]
        assert len(warned) == (2 if suffix == "old" else 0), warned
    for old, new in zip(out["old"], out["new"], strict=True):
        assert old["type"] == new["type"]
        assert (old["result"], old["exit_code"], old["counts"]) == (
            new["result"], new["exit_code"], new["counts"])
    assert out["new"][1]["counts"]["restored"] == 1 and out["new"][1]["counts"]["failed"] == 0


def test_config_show_gives_one_job_for_either_name(tmp_path, capsys):
    (tmp_path / "jobs").mkdir()
    for name, kind in (("a", "git_sync"), ("b", "sync")):
        (tmp_path / "jobs" / f"{name}.yml").write_text(
            f"name: {name}\ntype: {kind}\noptions: {{repo: /r, direction: pull, "
            "role: secondary}\n")
    shown = {}
    for name in ("a", "b"):
        code, out, err = run_config(capsys, "show", name, "--json", config_dir=tmp_path)
        assert code == 0
        shown[name] = json.loads(out)["job"]
        assert (err == f"warning: {warning('a', 'git_sync')}\n") if name == "a" else not err
    assert shown["a"]["type"] == "sync" and {**shown["a"], "name": "b"} == shown["b"]
