"""roles/strongroom_jobs with ping URLs in the inventory, through ansible-runner against
localhost at -vvv: each URL lands in its own 0600 file, the job file names that file, no
task output holds the URL, a second run changes nothing, a URL that is no longer listed is
removed, and a URL that is not http(s) stops the play naming the job alone.

The role's checks and job-file tasks are run from a small play (the role's defaults and
vars, then tasks/validate.yml and tasks/files.yml), so the engine install the role depends
on is not repeated here (tests/integration runs the whole of site.yml)."""

import os
import stat

import ansible_runner
import pytest
import yaml

from tests.helpers import ENV, ROOT, VENV_BIN
from tests.ping.helpers import TOKEN

pytestmark = pytest.mark.slow  # ansible-playbook
URL = f"https://hc-ping.com/{TOKEN}"
KUMA = f"https://kuma.example.org/api/push/{TOKEN}kuma?status=up&msg=OK&ping="
ROLE = ROOT / "roles" / "strongroom_jobs"


def play(tmp_path, jobs, expect_ok=True):
    conf = tmp_path / "conf"
    book = tmp_path / "play.yml"
    book.write_text(yaml.safe_dump([{
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")],
        "tasks": [{"name": "Check", "ansible.builtin.include_tasks": str(ROLE / "tasks" /
                                                                          "validate.yml")},
                  {"name": "Files", "ansible.builtin.include_tasks": str(ROLE / "tasks" /
                                                                         "files.yml")}]}]))
    (tmp_path / "runner").mkdir(exist_ok=True)
    (conf / "jobs").mkdir(parents=True, exist_ok=True)  # the strongroom role's, as installed
    if not (tmp_path / "templates").exists():  # the role's templates, for its template tasks
        (tmp_path / "templates").symlink_to(ROLE / "templates")
    env = {k: v for k, v in ENV.items() if k.startswith(("PATH", "HOME", "LC_"))}
    env.update(PATH=f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
               ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LIBRARY=str(ROOT / "library"), LC_ALL="C.UTF-8", LANG="C.UTF-8")
    r = ansible_runner.run(
        private_data_dir=str(tmp_path / "runner"), playbook=str(book),
        inventory="localhost ansible_connection=local "
                  "ansible_python_interpreter={{ ansible_playbook_python }}",
        envvars=env, quiet=True,
        verbosity=3, extravars={
            "strongroom_config_dir": str(conf), "strongroom_state_dir": str(tmp_path / "s"),
            "strongroom_log_dir": str(tmp_path / "log"), "strongroom_venv": str(VENV_BIN.parent),
            "strongroom_scheduler": "none", "strongroom_jobs_list": jobs})
    out = r.stdout.read()
    assert (r.rc == 0) == expect_ok, out[-6000:]
    # the URL, its token and Uptime Kuma's token: in no line of -vvv output, no event
    events = "".join(str(e) for e in r.events)
    for secret in (URL, TOKEN):
        assert secret not in out and secret not in events
    return r, out


def jobs(**ping):
    return [{"name": name, "type": "status", "schedule": "manual", "ping": value}
            for name, value in ping.items()]


def test_ping_urls_go_to_0600_files_the_job_files_name(tmp_path):
    r, _ = play(tmp_path, jobs(beat=URL, kuma={"url": KUMA, "style": "uptime_kuma"}))
    conf = tmp_path / "conf"
    for name, url in (("beat", URL), ("kuma", KUMA)):
        secret = conf / "secrets" / f"ping-{name}.url"
        assert secret.read_text() == url + "\n"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        job_file = conf / "jobs" / f"{name}.yml"
        assert TOKEN not in job_file.read_text()
        job = yaml.safe_load(job_file.read_text())
        assert job["ping"]["url_file"] == str(secret)
    assert yaml.safe_load((conf / "jobs" / "kuma.yml").read_text())["ping"] == {
        "url_file": str(conf / "secrets" / "ping-kuma.url"), "style": "uptime_kuma"}
    assert stat.S_IMODE((conf / "secrets").stat().st_mode) == 0o700
    again, _ = play(tmp_path, jobs(beat=URL, kuma={"url": KUMA, "style": "uptime_kuma"}))
    assert sum(again.stats.get("changed", {}).values()) == 0
    # kuma is gone, beat has a file of the user's own: neither old URL is left behind
    own = conf / "own.url"
    play(tmp_path, jobs(beat={"url_file": str(own)}))
    assert not (conf / "secrets" / "ping-kuma.url").exists()
    assert not (conf / "secrets" / "ping-beat.url").exists()
    assert yaml.safe_load((conf / "jobs" / "beat.yml").read_text())["ping"] == {
        "url_file": str(own)}


def test_a_ping_url_that_is_not_http_stops_the_play_naming_the_job(tmp_path):
    _, out = play(tmp_path, jobs(beat=f"ftp://hc-ping.com/{TOKEN}"), expect_ok=False)
    assert ("localhost: the ping URL of job(s) beat is not an http:// or https:// URL (the "
            "URL is a secret and is not shown)") in out
    # stopped before anything was written
    assert list((tmp_path / "conf").rglob("*")) == [tmp_path / "conf" / "jobs"]
