"""A bad job file is refused by name and never blinds the host to its other jobs."""

import json
import os
import time

import pytest

from strongroom.core.errors import ConfigError
from strongroom.jobs import config
from tests.helpers import ENV, strongroom

CAP = 1024 * 1024  # the largest job file read
GOOD = "name: {name}\ntype: status_check\nschedule: daily 01:00\n"


def setup(tmp_path, **files):
    """A config dir holding two good jobs and `files` ({stem: bytes}) beside them."""
    conf, state = tmp_path / "conf", tmp_path / "state"
    (conf / "jobs").mkdir(parents=True)
    for name in ("alpha", "omega"):
        (conf / "jobs" / f"{name}.yml").write_text(GOOD.format(name=name))
    for stem, data in files.items():
        (conf / "jobs" / f"{stem}.yml").write_bytes(data)
    return conf, state


def sr(conf, state, *args, check=None, env=None):
    return strongroom("--config-dir", conf, "--state-dir", state, *args, check=check, env=env,
                      timeout=20)


def snapshot(conf):
    return {p.name: p.read_bytes() for p in (conf / "jobs").iterdir() if p.is_file()}


def test_a_non_utf8_job_file_is_named_and_every_other_job_is_still_listed_and_checked(
        tmp_path):
    conf, state = setup(tmp_path, bad=b"name: bad\ntype: status_check\ndescription: caf\xe9\n")
    (conf / "jobs" / "watch.yml").write_text(
        f"name: watch\ntype: status_check\noptions:\n  prometheus: {tmp_path / 'sr.prom'}\n")
    before = snapshot(conf)
    said = "bad.yml: not UTF-8 text: byte 0xe9 on line 3 is not valid UTF-8"

    proc = sr(conf, state, "jobs", "list", check=2)
    assert "Traceback" not in proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()[1:]}
    assert said in lines["bad"] and "INVALID" in lines["bad"]
    assert "due now" in lines["alpha"] and "due now" in lines["omega"]
    assert lines["watch"].split()[1] == "status"  # the type by its one-word name

    # --stale must not read as "stale" (1): the host has a configuration error (2)
    proc = sr(conf, state, "status", "--stale", check=2)
    assert f"strongroom: error: {conf / 'jobs' / 'bad.yml'}: not UTF-8" in proc.stderr
    assert "Traceback" not in proc.stderr and "alpha" in proc.stdout
    out = json.loads(sr(conf, state, "status", "--stale", "--json", check=2).stdout)
    rows = {r["job"]: r for r in out["jobs"]}
    assert rows["bad"]["valid"] is False and said in rows["bad"]["error"]
    assert rows["alpha"]["valid"] and rows["alpha"]["result"] == "never run"

    # the scheduled check still checks every other job, and says which file is broken
    proc = sr(conf, state, "run", "watch", check=2)
    assert "invalid job files: " in proc.stdout and said in proc.stdout
    raw = (state / "status" / "watch.json").read_bytes()
    st = json.loads(raw.decode("utf-8"))
    assert b"caf" not in raw  # the file's content is not copied into the status
    assert st["exit_code"] == 2 and st["counts"]["invalid"] == 1 and st["counts"]["jobs"] == 3
    assert said in st["message"]
    prom = (tmp_path / "sr.prom").read_text()
    assert 'strongroom_stale{job="alpha",type="status"} 0' in prom
    assert 'strongroom_job_file_valid{job="bad"} 0' in prom
    assert 'strongroom_job_file_valid{job="omega",type="status"} 1' in prom
    assert snapshot(conf) == before  # nothing rewritten
    assert sorted(p.name for p in (state / "status").iterdir()) == ["watch.json"]


def test_unreadable_and_misshapen_job_files_are_each_refused_by_name(tmp_path):
    conf, state = setup(tmp_path, listed=b"- a\n- b\n", empty=b"", comments=b"# nothing\n",
                        deep=b"[" * 1000 + b"\n")
    jobs = conf / "jobs"
    (jobs / "folder.yml").mkdir()
    os.mkfifo(jobs / "pipe.yml")  # opened blocking, this would hang every listing
    (jobs / "dangling.yml").symlink_to(tmp_path / "nowhere.yml")
    (jobs / "with space.yml").write_text(GOOD.format(name="ok"))
    (jobs / os.fsdecode(b"caf\xe9.yml")).write_text(GOOD.format(name="ok"))
    expected = {
        "listed": "listed.yml: the file must be a mapping, got ['a', 'b']",
        "empty": "empty.yml: the file holds no YAML document",
        "comments": "comments.yml: the file holds no YAML document",
        "deep": "deep.yml: not valid YAML: nested too deeply",
        "folder": "folder.yml is a directory, not a job file",
        "pipe": "pipe.yml is a FIFO, not a job file",
        "dangling": f"dangling.yml is a symbolic link to {tmp_path / 'nowhere.yml'}, which "
                    "does not exist",
        "with space": "job name 'with space' is not valid: expected a name of letters",
        "caf\\xe9": "job name 'caf\\\\xe9' is not valid",
    }
    # a UTF-8 locale's stdout refuses an undecodable file name unless it is escaped first
    env = dict(ENV, LC_ALL="C.UTF-8")
    out = json.loads(sr(conf, state, "jobs", "list", "--json", check=2, env=env).stdout)
    rows = {r["job"]: r for r in out["jobs"]}
    assert set(rows) == {*expected, "alpha", "omega"}
    for name, message in expected.items():
        assert rows[name]["valid"] is False and message in rows[name]["error"], name
    assert rows["alpha"]["valid"] and rows["omega"]["valid"]
    proc = sr(conf, state, "status", check=2, env=env)
    assert "Traceback" not in proc.stderr and "caf\\xe9" in proc.stdout
    for message in expected.values():
        assert message in proc.stderr
    assert "due now" in proc.stdout.splitlines()[1 + sorted(rows).index("alpha")]
    assert not (state / "status").exists()


def test_a_jobs_path_that_is_not_a_directory_is_an_error_not_an_empty_host(tmp_path):
    conf, state = tmp_path / "conf", tmp_path / "state"
    conf.mkdir()
    (conf / "jobs").write_text("name: x\n")
    for verb in (("jobs", "list"), ("status", "--stale")):
        proc = sr(conf, state, *verb, check=2)
        assert f"{conf / 'jobs'} is not a directory" in proc.stderr
    assert not state.exists()


def test_a_job_name_is_checked_before_any_file_is_opened(tmp_path):
    conf, state = setup(tmp_path)
    secret = tmp_path / "secret.yml"
    secret.write_text("password: hunter2: oops\n")  # its YAML error would quote the line
    for args in (("run", tmp_path / "secret"), ("run", "../secret"),
                 ("bundle", "list", "--job", tmp_path / "secret"),
                 ("drill", "--job", "../secret")):
        proc = sr(conf, state, *args, check=2)
        assert "hunter2" not in proc.stdout + proc.stderr, args
        assert "is not valid: expected a name of letters, digits" in proc.stderr, args
        if args[0] == "run" and args[1] != "../secret":
            assert f"job name '{tmp_path / 'secret'}' is not valid" in proc.stderr
            assert "`strongroom config check FILE` checks a file by its path" in proc.stderr
    proc = sr(conf, state, "run", "alpha.yml", check=2)
    assert "no job named 'alpha.yml'" in proc.stderr and "without '.yml'" in proc.stderr
    assert not state.exists()  # no lock, status or log made under any of those names


def test_the_name_rule_is_the_same_for_the_name_key_and_a_drills_jobs():
    for bad in ("../etc", "a b", "-rf", ".hidden", "x" * 65, "caf\xe9"):
        with pytest.raises(ConfigError, match="key 'name' has value"):
            config.validate_job({"name": bad, "type": "status_check"}, "j.yml")
        with pytest.raises(ConfigError, match="key 'options.jobs' has value .*expected a "
                                              "list of job names"):
            config.validate_job({"name": "d", "type": "restore_drill",
                                 "options": {"jobs": ["ok", bad]}}, "d.yml")
        assert not config.is_job_name(bad)
    for good in ("a", "nightly-bundles", "db_2.x", "9" * 64):
        assert config.is_job_name(good)


def test_a_key_given_twice_is_refused_with_its_lines(tmp_path):
    dup = b"name: dup\ntype: status_check\noptions:\n  stale_factor: 2\n  stale_factor: 9\n"
    conf, state = setup(tmp_path, dup=dup,
                        top=b"name: top\ntype: status_check\n\nname: top\n")
    before = snapshot(conf)
    proc = sr(conf, state, "run", "dup", check=2)
    assert (f"{conf / 'jobs' / 'dup.yml'}: key 'stale_factor' is given twice in one mapping, "
            "on line 4 and line 5") in proc.stderr
    rows = {r["job"]: r for r in json.loads(sr(conf, state, "jobs", "list", "--json",
                                               check=2).stdout)["jobs"]}
    assert "top.yml: key 'name' is given twice in one mapping, on line 1 and line 4" \
        in rows["top"]["error"]
    assert rows["alpha"]["valid"] and rows["omega"]["valid"]
    proc = sr(conf, state, "config", "check", conf / "jobs" / "dup.yml", check=2)
    assert "key 'stale_factor' is given twice in one mapping, on line 4 and line 5" \
        in proc.stderr
    assert snapshot(conf) == before and not state.exists()
    # a merge key and a key that overrides it is YAML's way to share settings, not a repeat
    merged = tmp_path / "merged.yml"
    merged.write_text("name: merged\ntype: status_check\noptions:\n"
                      "  <<: {stale_factor: 2, remind_hours: 1}\n  stale_factor: 3\n")
    sr(conf, state, "config", "check", merged, check=0)


def test_a_job_file_over_the_size_cap_is_refused_before_parsing(tmp_path):
    # valid YAML and a valid job, only too big: the cap is what refuses it
    body = b"name: big\ntype: status_check\ndescription: >\n" + (
        b"  " + b"x" * 69 + b"\n") * (CAP // 72 + 10)
    assert len(body) > CAP
    conf, state = setup(tmp_path, big=body)
    said = f"big.yml: {len(body)} bytes; a job file may be at most 1 MiB ({CAP} bytes)"
    proc = sr(conf, state, "run", "big", check=2)
    assert said in proc.stderr
    rows = {r["job"]: r for r in json.loads(sr(conf, state, "jobs", "list", "--json",
                                               check=2).stdout)["jobs"]}
    assert said in rows["big"]["error"] and rows["alpha"]["valid"]
    assert said in sr(conf, state, "config", "check", conf / "jobs" / "big.yml",
                      check=2).stderr
    assert not state.exists()


def test_config_check_and_run_apply_one_rule_to_the_name_key(tmp_path):
    conf, state = setup(tmp_path)
    (conf / "jobs" / "x.yml").write_text("name: other\ntype: status_check\n")
    said = "key 'name' has value 'other'; expected 'x' (the file's name)"
    assert said in sr(conf, state, "run", "x", check=2).stderr
    assert said in sr(conf, state, "config", "check", conf / "jobs" / "x.yml", check=2).stderr
    # as the role checks a template: a temporary file, named by --name-as
    tmp = tmp_path / "tmpabc123"
    tmp.write_text("name: other\ntype: status_check\n")
    proc = sr(conf, state, "config", "check", "--name-as", "x.yml", tmp, check=2)
    assert f"x.yml: {said}" in proc.stderr
    assert "valid status_check job 'other'" in sr(conf, state, "config", "check", "--name-as",
                                                  "other.yml", tmp, check=0).stdout
    # a file with no .yml name (standard input, a label) has no file name to match
    assert "host1: job other: valid" in sr(conf, state, "config", "check", "--name-as",
                                           "host1: job other", tmp, check=0).stdout
    assert not state.exists()


def test_a_value_nested_by_aliases_is_described_without_building_its_repr():
    value = ["x"] * 9
    for _ in range(7):  # 9 ** 8 items by reference: a full repr takes seconds and gigabytes
        value = [value] * 9
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as exc:
        config.validate_job({"name": "s", "type": "status_check",
                             "options": {"stale_factor": value}}, "s.yml")
    assert time.monotonic() - t0 < 1.0
    assert "key 'options.stale_factor' has value [[[" in str(exc.value)
    assert len(str(exc.value)) < 200


@pytest.mark.parametrize(("text", "said"), [
    # a mapping merged in holds a key twice: the later one would silently win
    ("options:\n  <<: &b {root: /a, root: /b}\n  store: /s\n",
     "key 'root' is given twice in one mapping, on line 4 and line 4"),
    # two merge keys in one mapping: the second silently replaces the first
    ("options:\n  <<: {root: /a}\n  <<: {root: /b}\n  store: /s\n",
     "key '<<' is given twice in one mapping, on line 4 and line 5"),
    ("options:\n  <<: [{root: /a}, {store: /s, store: /t}]\n",
     "key 'store' is given twice in one mapping, on line 4 and line 4"),
])
def test_a_key_twice_inside_a_merge_is_refused_too(text, said):
    with pytest.raises(ConfigError) as exc:
        config.parse_job_bytes(f"name: m\ntype: bundle_sync\n{text}".encode(), "m.yml")
    assert f"m.yml: {said}" in str(exc.value)


def test_merges_that_repeat_nothing_still_work():
    doc = config.parse_job_bytes(
        b"name: m\ntype: bundle_sync\nbase: &b {root: /a, store: /s}\n"
        b"options:\n  <<: [*b, {full_every: 3}]\n  store: /t\n", "m.yml")
    assert doc["options"] == {"root": "/a", "store": "/t", "full_every": 3}
