"""The registry: one row per job type, and the runner dispatches through it."""

import dataclasses

import yaml

from strongroom import jobs, status
from strongroom.jobs import registry, schema
from tests.helpers import ROOT


def test_one_entry_per_schema_type_with_the_runners_functions():
    assert tuple(registry.REGISTRY) == schema.TYPE_NAMES
    for entry in registry.ENTRIES:
        assert entry.options is schema.job_type(entry.name)
        assert callable(entry.run) and entry.run.__module__ == "strongroom.jobs"
        assert getattr(jobs, entry.run.__name__) is entry.run
        for old in entry.old_names:
            assert registry.get(old) is entry
    assert not hasattr(jobs, "HANDLERS")  # no second table to keep in step


def test_drills_schedules_and_metrics():
    from strongroom.drill import bundle, checkpoint, snapshot

    assert registry.get("bundle").drill is bundle.plan
    assert registry.get("snapshot").drill is snapshot.plan
    assert registry.get("checkpoint").drill is checkpoint.plan
    assert registry.drilled_types() == tuple(e.name for e in registry.ENTRIES
                                             if e.drill is not None)
    assert {"bundle", "snapshot", "checkpoint"} <= set(registry.drilled_types())
    assert registry.get("status").metrics == status.METRIC_NAMES
    text = status.prometheus_text([{"job": "j", "type": "bundle", "valid": True}])
    assert {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")} == \
        set(status.METRIC_NAMES)
    assert all(e.metrics == () for e in registry.ENTRIES if e.name != "status")


def test_the_roles_type_schedules_are_the_registrys():
    defaults = yaml.safe_load((ROOT / "roles/strongroom_jobs/defaults/main.yml").read_text())
    assert defaults["strongroom_jobs_type_schedules"] == registry.default_schedules() == {
        "snapshot": "daily 03:15", "checkpoint": "every 15m"}
    specs = yaml.safe_load((ROOT / "roles/strongroom_jobs/meta/argument_specs.yml").read_text())
    opts = specs["argument_specs"]["main"]["options"]
    assert opts["strongroom_jobs_type_schedules"]["default"] == registry.default_schedules()
    # the role takes every job type by its name and its old name
    choices = opts["strongroom_jobs_list"]["options"]["type"]["choices"]
    assert set(choices) == set(schema.ALL_TYPE_NAMES)


def test_the_runner_dispatches_through_the_registry(tmp_path, monkeypatch):
    conf, state = tmp_path / "conf", tmp_path / "state"
    (conf / "jobs").mkdir(parents=True)
    (conf / "jobs" / "r.yml").write_text("name: r\ntype: restic\noptions: {repository: /r, "
                                         "password_file: /p, paths: [/x]}\n")
    ran = []

    def fake(job, paths):
        ran.append(job)
        return {"exit_code": 0, "message": "ran by the registry", "output": "done"}

    monkeypatch.setattr(jobs, "run_fake", fake, raising=False)
    entry = dataclasses.replace(registry.REGISTRY["restic"], run_ref="strongroom.jobs:run_fake")
    monkeypatch.setitem(registry.REGISTRY, "restic", entry)
    code, st, out = jobs.run(jobs.Paths(conf, state, state / "log"), "r")
    assert (code, st["message"], st["type"], out) == (0, "ran by the registry", "restic", "done")
    assert ran[0]["options"]["repository"] == "/r"
