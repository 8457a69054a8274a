"""`strongroom config show | generate | schema`, and `check` as it always was."""

import itertools
import json

import jsonschema
import pytest
import yaml

from strongroom.jobs import config, schema
from tests.jobs.helpers import run_config


@pytest.fixture
def conf(tmp_path):
    (tmp_path / "jobs").mkdir()
    return tmp_path


def test_show_prints_the_job_with_every_default_filled_in(conf, capsys):
    (conf / "jobs" / "snap.yml").write_text(
        "name: snap\ntype: snapshot\nschedule: daily 03:15\n"
        "options: {source: /srv/app, dest: /var/backups/app, keep_last: 7}\n"
        "notify: {min_severity: warning}\n")
    code, out, err = run_config(capsys, "show", "snap", config_dir=conf)
    assert code == 0 and err == ""
    shown = yaml.safe_load(out)
    assert shown == config.effective(config.load_job(conf, "snap"))
    opts = shown["options"]
    assert opts["source"] == "/srv/app" and opts["keep_last"] == 7  # the file's own
    assert opts["immutable"] == "warn" and opts["format"] == "zst"  # the defaults
    assert opts["large_threshold"] == "50M" and opts["lock_wait"] == 0
    assert opts["retries"] == opts["low_level_retries"] == 3
    assert shown["notify"] == {"min_severity": "warning", "events": list(schema.EVENTS)}
    assert shown["log"] == {"max_bytes": 52428800, "keep": 3}
    assert list(opts)[:2] == ["source", "dest"]  # in the schema's order
    # what has no default value is said as a comment: worked out when the job runs
    assert "  # options.keep_days: no pruning\n" in out
    assert "  # options.remote: no off-site copy\n" in out
    config.validate_job(shown, "snap.yml", file_name="snap.yml")  # itself a valid job file


def test_show_json_is_the_envelope_with_the_job(conf, capsys):
    (conf / "jobs" / "watch.yml").write_text("name: watch\ntype: status_check\n")
    code, out, _ = run_config(capsys, "show", "watch", "--json", config_dir=conf)
    env = json.loads(out)
    assert code == 0 and env["result"] == "ok" and env["exit_code"] == 0
    assert env["message"] == "job watch: a status job, every default filled in"
    assert env["job"] == {"name": "watch", "type": "status",
                          "options": {"stale_factor": 2, "remind_hours": 24},
                          "notify": {"min_severity": "info", "events": list(schema.EVENTS)},
                          "log": {"max_bytes": 52428800, "keep": 3}}


def test_show_of_a_missing_or_invalid_job_is_an_error(conf, capsys):
    code, out, err = run_config(capsys, "show", "nope", config_dir=conf)
    assert code == 2 and out == "" and "no job named 'nope'" in err
    (conf / "jobs" / "bad.yml").write_text("name: bad\ntype: daily\noptions: {dest: x}\n")
    code, out, err = run_config(capsys, "show", "bad", "--json", config_dir=conf)
    env = json.loads(out)
    assert code == 2 and env["result"] == "error"
    assert "missing required key 'options.sources'" in err and \
        "key 'options.dest' has value 'x'" in err


@pytest.mark.parametrize("job_type", schema.TYPE_NAMES)
def test_generate_writes_a_commented_example_that_checks_once_filled_in(tmp_path, capsys,
                                                                        job_type):
    out_file = tmp_path / f"my-{job_type}.yml"
    code, out, _ = run_config(capsys, "generate", job_type, "--output", out_file,
                              config_dir=tmp_path)
    assert code == 0 and out == f"wrote an example {job_type} job to {out_file}\n"
    text = out_file.read_text()
    jt = schema.job_type(job_type)
    # every option with what it means and its default
    for opt in jt.options:
        assert opt.name + ":" in text, opt.name
        assert opt.description.split()[0] in text
        if opt.has_default:
            assert f"Default: {opt.shown_default()}" in " ".join(
                line.strip("# ") for line in text.splitlines()), opt.name
    # each commented-out setting holds the option's default
    indent = "#   " if not jt.options.required else "  # "
    lines = text.splitlines()
    for opt in jt.options:
        if opt.has_default:
            at = [i for i, ln in enumerate(lines) if ln.startswith(f"{indent}{opt.name}:")]
            assert len(at) == 1, (opt.name, at)
            setting = [lines[at[0]][len(indent):]] + [  # a long list goes on below
                ln[len(indent):] for ln in itertools.takewhile(
                    lambda ln: ln.startswith(indent + "  "), lines[at[0] + 1:])]
            assert yaml.safe_load("\n".join(setting))[opt.name] == opt.default, opt.name
    doc = yaml.safe_load(text)
    assert doc["name"] == f"my-{job_type}" and doc["type"] == job_type
    # as written, a required option holds a placeholder, which check refuses, by name
    code, _, err = run_config(capsys, "check", out_file, config_dir=tmp_path)
    if jt.options.required:
        assert code == 2
        for name in jt.options.required:
            assert f"key 'options.{name}' has value " in err, name
        for name in jt.options.required:  # fill each placeholder in
            doc["options"][name] = jt.options[name].example
        out_file.write_text(yaml.safe_dump(doc))
        code, _, err = run_config(capsys, "check", out_file, config_dir=tmp_path)
    assert code == 0, err
    assert err == ""  # a generated file uses the type's one-word name


def test_generate_to_standard_output_refuses_an_unknown_type_and_keeps_files(tmp_path,
                                                                            capsys):
    code, out, _ = run_config(capsys, "generate", "restic", config_dir=tmp_path)
    assert code == 0 and out.startswith("# A restic job: ") and "\nname: restic\n" in out
    code, out, err = run_config(capsys, "generate", "nope", config_dir=tmp_path)
    assert code == 2 and "no job type 'nope': expected one of: bundle, drill" in err
    f = tmp_path / "x.yml"
    f.write_text("mine\n")
    code, _, err = run_config(capsys, "generate", "db", "--output", f, config_dir=tmp_path)
    assert code == 2 and "exists; give --force" in err and f.read_text() == "mine\n"
    code, _, err = run_config(capsys, "generate", "db_backup", "--output", f, "--force",
                              "--name", "app-db", config_dir=tmp_path)
    assert code == 0 and '"db_backup" is now "db"' in err
    assert yaml.safe_load(f.read_text())["type"] == "db"


def test_schema_prints_the_json_schema(tmp_path, capsys):
    code, out, _ = run_config(capsys, "schema", config_dir=tmp_path)
    assert code == 0 and json.loads(out) == schema.json_schema()
    jsonschema.Draft202012Validator.check_schema(json.loads(out))
    code, out, _ = run_config(capsys, "schema", "--json", config_dir=tmp_path)
    env = json.loads(out)
    assert env["result"] == "ok" and env["schema"] == schema.json_schema()


def test_check_is_what_it_was(tmp_path, capsys):
    good = tmp_path / "j.yml"
    good.write_text("name: j\ntype: bundle\noptions: {root: /srv, store: /var/s}\n")
    assert run_config(capsys, "check", good, config_dir=tmp_path) == (
        0, f"{good}: valid bundle job 'j'\n", "")
    code, out, err = run_config(capsys, "check", good, "--name-as", "k.yml",
                                config_dir=tmp_path)
    assert code == 2 and out == "" and \
        "k.yml: key 'name' has value 'j'; expected 'k' (the file's name)" in err
    code, out, err = run_config(capsys, "check", "--name-as", "host1: job j", good,
                                config_dir=tmp_path)
    assert code == 0 and out == "host1: job j: valid bundle job 'j'\n"
