"""Every error of a job file is said at once, in the validator's words; the engine takes its
defaults from the schema."""

import json

import pytest

from strongroom.core.errors import ConfigError
from strongroom.jobs import config, schema
from tests.helpers import ENV, strongroom


def test_every_error_of_a_file_is_reported_at_once_one_line_each():
    doc = {"name": "j", "type": "bundle_sync", "schedule": "daily 25:00", "colour": "red",
           "options": {"root": "relative", "full_every": 0, "critical_patterns": [".env", 3],
                       "full_evry": 3},
           "notify": {"min_severity": "loud", "events": "job_failed"},
           "log": {"max_bytes": 10, "kept": 3}}
    with pytest.raises(config.JobFileError) as exc:
        config.validate_job(doc, "jobs/j.yml", file_name="jobs/other.yml")
    assert isinstance(exc.value, ConfigError)  # what every caller catches
    lines = str(exc.value).splitlines()
    assert lines == exc.value.errors
    assert all(line.startswith("jobs/j.yml: ") for line in lines)
    expected = [
        "unknown key 'colour' (expected one of: description, log, name, notify, options, "
        "ping, schedule, type)",
        "key 'schedule' has value 'daily 25:00'; expected a schedule spec (schedule 'daily "
        "25:00': '25:00' is not a time HH:MM (00:00-23:59))",
        "unknown key 'options.full_evry' (expected one of: critical_patterns, encrypt_to, "
        "full_after_days, full_every, identity, jobs, keep_retired, object_lock_days, "
        "object_lock_mode, rclone_config, remote, root, store, verify_days)",
        "key 'options.root' has value 'relative'; expected an absolute path",
        "missing required key 'options.store'",
        "key 'options.full_every' has value 0; expected an integer >= 1",
        "key 'options.critical_patterns' has value ['.env', 3]; expected a list of non-empty "
        "strings",
        "key 'notify.min_severity' has value 'loud'; expected one of: info, success, "
        "warning, error",
        "key 'notify.events' has value 'job_failed'; expected a list of: job_failed, "
        "job_recovered, job_succeeded, rollback_done, backup_stale, drill_passed, "
        "drill_failed",
        "unknown key 'log.kept' (expected one of: keep, max_bytes)",
        "key 'log.max_bytes' has value 10; expected an integer >= 1024",
        "key 'name' has value 'j'; expected 'other' (the file's name)",
    ]
    assert [line.removeprefix("jobs/j.yml: ") for line in lines] == expected


def test_one_error_reads_as_it_always_has():
    with pytest.raises(ConfigError) as exc:
        config.validate_job({"name": "j", "type": "bundle", "options": {"root": "/srv"}},
                            "jobs/j.yml")
    assert str(exc.value) == "jobs/j.yml: missing required key 'options.store'"
    with pytest.raises(ConfigError) as exc:
        config.validate_job(["a"], "jobs/j.yml")
    assert str(exc.value) == "jobs/j.yml: the file must be a mapping, got ['a']"


def test_a_bad_type_still_lets_the_other_keys_be_checked():
    with pytest.raises(config.JobFileError) as exc:
        config.validate_job({"name": "j", "type": "bundel", "schedule": "hourly",
                             "log": {"keep": 0}}, "j.yml")
    assert len(exc.value.errors) == 3
    assert exc.value.errors[1].startswith(
        "j.yml: key 'type' has value 'bundel'; expected one of: bundle_sync (now bundle), ")


def test_the_command_line_says_every_error(tmp_path):
    bad = tmp_path / "j.yml"
    bad.write_text("name: j\ntype: git_sync\noptions: {repo: here, direction: both}\n")
    proc = strongroom("config", "check", bad, check=2)
    said = [line.removeprefix("strongroom: error: ") for line in proc.stderr.splitlines()
            if line.strip()]
    # unknown keys first, then in the schema's order
    assert said == [f"{bad}: key 'options.repo' has value 'here'; expected an absolute path",
                    f"{bad}: key 'options.direction' has value 'both'; expected one of: "
                    "push, pull",
                    f"{bad}: missing required key 'options.role'"]


def test_the_schema_is_consistent_with_itself():
    for section in (schema.JOB, schema.NOTIFY, schema.LOG, *(t.options for t in schema.TYPES)):
        for opt in section:
            assert opt.description.endswith("."), (section.name, opt.name)
            assert not (opt.required and opt.has_default), (section.name, opt.name)
            assert opt.required or opt.has_default or opt.default_text, (section.name,
                                                                         opt.name)
            if opt.required and section is not schema.JOB:
                assert opt.example is not None and opt.kind.problem(opt.example) is None
    assert set(schema.OLD_NAMES) == {"bundle_sync", "restore_drill", "status_check",
                                     "git_sync", "db_backup"}
    assert all(" " not in t and "_" not in t for t in schema.TYPE_NAMES)  # one word each


# --- defaults --------------------------------------------------------------------------------


def test_effective_fills_in_every_default_and_keeps_what_the_file_says():
    job = config.normalised({"name": "b", "type": "bundle_sync",
                             "options": {"root": "/r", "store": "/s", "full_every": 3}})
    eff = config.effective(job)
    assert eff["type"] == "bundle"
    assert eff["options"] == {"root": "/r", "store": "/s", "full_every": 3,
                              "full_after_days": 30, "keep_retired": 1,
                              "critical_patterns": schema.DEFAULT_CRITICAL_PATTERNS,
                              "jobs": 0, "verify_days": 30}
    assert eff["notify"] == {"min_severity": "info", "events": list(schema.EVENTS)}
    assert eff["log"] == {"max_bytes": 50 * 1024 * 1024, "keep": 3}
    assert "schedule" not in eff  # no default: the job runs only when asked
    assert job["options"] == {"root": "/r", "store": "/s", "full_every": 3}  # not changed
    config.validate_job(eff, "b.yml")  # what show prints is a valid job file itself
    eff["options"]["critical_patterns"].append("x")  # defaults are copies, never shared
    assert "x" not in schema.default("bundle", "critical_patterns")


def test_the_engine_takes_its_defaults_from_the_schema(monkeypatch):
    from strongroom import bisync, bundles, drill, rollups, snapshots, status, sync
    from strongroom.bundles import critical
    from strongroom.checkpoints import MAX_FILE_DEFAULT

    opts = bundles.options_from({}, None)
    assert (opts.full_every, opts.full_after_days, opts.keep_retired, opts.jobs) == (
        schema.default("bundle", "full_every"), schema.default("bundle", "full_after_days"),
        schema.default("bundle", "keep_retired"), schema.default("bundle", "jobs"))
    assert opts.critical_patterns == critical.DEFAULT_PATTERNS == schema.DEFAULT_CRITICAL_PATTERNS
    assert bundles.Options().full_every == schema.default("bundle", "full_every")
    assert schema.default("sync", "timeout") == sync.TRANSPORT_TIMEOUT
    assert snapshots.LARGE_DEFAULT == 50 * 1024 * 1024 == MAX_FILE_DEFAULT
    assert rollups.DEFAULT_POLICY == schema.default("daily", "delete_days") == "after_rollup"
    assert rollups.DEFAULT_KEEP_ROLLUPS == schema.default("rollup", "keep_rollups") == 12
    assert schema.default("status", "stale_factor") == status.STALE_FACTOR
    assert schema.default("drill", "lock_wait") == drill.LOCK_WAIT
    assert drill.SOURCES == ("local", "remote", "both")
    # a default changed in the schema is the one the engine uses (read when used)
    real = schema.default
    monkeypatch.setattr(schema, "default", lambda t, k: 4 if (t, k) == ("bundle", "full_every")
                        else real(t, k))
    assert bundles.options_from({}, None).full_every == 4
    assert bundles.options_from({"full_every": 7}, None).full_every == 7
    assert bisync.run.__defaults__[:2] == (None, None)  # max_delete, check_access: the job's


def test_schema_get_is_the_files_value_else_the_default():
    job = {"name": "d", "type": "restore_drill", "options": {"source": "both"}}
    assert schema.get(job, "source") == "both"
    assert schema.get(job, "lock_wait") == 300
    assert schema.get(job, "scratch") is None  # worked out when the job runs
    with pytest.raises(KeyError):
        schema.get(job, "no_such_option")
    with pytest.raises(KeyError, match="no default value"):
        schema.default("drill", "scratch")


def test_a_status_job_without_options_runs_with_the_schemas_defaults(tmp_path):
    conf, state = tmp_path / "conf", tmp_path / "state"
    (conf / "jobs").mkdir(parents=True)
    (conf / "jobs" / "watch.yml").write_text("name: watch\ntype: status\n")
    (conf / "jobs" / "hourly.yml").write_text("name: hourly\ntype: status\nschedule: every 1h\n")
    proc = strongroom("--config-dir", conf, "--state-dir", state, "run", "watch", check=0,
                      env=ENV)
    # never ran, so measured from its file's time: not stale within 2 x 1 h
    assert "none of 1 jobs stale" in proc.stdout
    st = json.loads((state / "status" / "watch.json").read_text())
    assert st["type"] == "status" and st["counts"]["jobs"] == 1
