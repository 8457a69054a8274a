"""The real CLI: `strongroom run` with a heartbeat, `strongroom ping JOB`, and the job file
checks, with the URL (and its path token) found nowhere: not in the log, the status, the
history, stdout or stderr."""

import json

import pytest

from tests.ping.helpers import TOKEN, break_a_job, cli, every_file_text, write_job
from tests.servers import PingReceiver, closed_port


@pytest.fixture
def receiver():
    r = PingReceiver()
    yield r
    r.close()


def assert_nowhere(url, tmp_path, *procs):
    """Not in any file under the state dir (tmp_path None: there is none), nor in any
    output of procs."""
    texts = every_file_text(tmp_path / "state") if tmp_path else {}
    assert texts or not tmp_path, "the run wrote nothing to look at"
    texts.update({f"proc{i}.{k}": getattr(p, k) for i, p in enumerate(procs)
                  for k in ("stdout", "stderr")})
    for where, text in texts.items():
        assert url not in text and TOKEN not in text, where


def test_a_run_through_the_cli_pings_and_never_shows_the_url(tmp_path, receiver):
    url = receiver.url()
    write_job(tmp_path / "conf", url)
    ok = cli(tmp_path, "run", "beat", check=0)
    js = cli(tmp_path, "run", "beat", "--json", check=0)
    status = json.loads(js.stdout)["status"]
    assert status["ping"]["end"] == {"delivered": True, "attempts": 1, "error": None,
                                     "signal": "success"}
    assert [r["path"] for r in receiver.requests] == [f"/ping/{TOKEN}/start",
                                                      f"/ping/{TOKEN}"] * 2
    assert receiver.requests[0]["headers"]["User-Agent"].startswith("strongroom/")
    # a notification target on the same receiver: the failure message quotes the log's
    # tail, which holds the heartbeat's lines, and never the URL
    notify = tmp_path / "conf" / "notify.yml"
    notify.write_text(f"urls:\n  - json://127.0.0.1:{receiver.port}/hook:\n"
                      "      - name: hook\n        min_severity: error\n")
    notify.chmod(0o600)
    break_a_job(tmp_path / "conf")
    failed = cli(tmp_path, "run", "beat", check=2)
    pings = [r for r in receiver.requests if r["path"] != "/hook"]
    assert pings[-1]["path"] == f"/ping/{TOKEN}/fail"
    told = [r["body"] for r in receiver.requests if r["path"] == "/hook"]
    assert any(b"heartbeat start: delivered" in body for body in told)  # job_failed's tail
    assert all(TOKEN.encode() not in body and b"/ping/" not in body for body in told)
    shown = cli(tmp_path, "config", "show", "beat", check=0)
    shown_js = cli(tmp_path, "config", "show", "beat", "--json", check=0)
    assert f"url: http://127.0.0.1:{receiver.port}/…" in shown.stdout
    assert json.loads(shown_js.stdout)["job"]["ping"]["url"] == (
        f"http://127.0.0.1:{receiver.port}/…")
    status_cmd = cli(tmp_path, "status", "--json")
    assert_nowhere(url, tmp_path, ok, js, failed, shown, shown_js, status_cmd)


def test_a_run_whose_endpoint_is_down_exits_as_the_job_did_and_says_so(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/ping/{TOKEN}"
    write_job(tmp_path / "conf", url)
    proc = cli(tmp_path, "run", "beat", check=0)  # the job was fine: exit 0
    assert "Heartbeat failed: start: connection refused; end: connection refused" in \
        proc.stdout
    log = (tmp_path / "state" / "log" / "beat.log").read_text()
    assert "heartbeat end: FAILED after 3 attempts: connection refused" in log
    assert_nowhere(url, tmp_path, proc)


def test_strongroom_ping_sends_one_signal_and_records_nothing(tmp_path, receiver):
    write_job(tmp_path / "conf", receiver.url()).chmod(0o644)
    proc = cli(tmp_path, "ping", "beat", "--json", check=0)
    out = json.loads(proc.stdout)
    assert out["result"] == "ok" and out["delivered"] is True and out["attempts"] == 1
    assert "holds the ping URL and others may read it (mode 0644)" in proc.stderr
    assert out["target"] == f"http://127.0.0.1:{receiver.port}/…"
    assert out["signal"] == "success" and out["style"] == "healthchecks"
    start = cli(tmp_path, "ping", "beat", "--signal", "start", check=0)
    assert start.stdout.strip() == (f"beat: start signal delivered to "
                                    f"http://127.0.0.1:{receiver.port}/…")
    cli(tmp_path, "ping", "beat", "--signal", "fail", check=0)
    assert [r["path"] for r in receiver.requests] == [
        f"/ping/{TOKEN}", f"/ping/{TOKEN}/start", f"/ping/{TOKEN}/fail"]
    assert b"sent by hand for job beat" in receiver.requests[0]["body"]
    assert not (tmp_path / "state" / "status").exists()  # a test ping is no run
    assert_nowhere(receiver.url(), None, proc, start)


def test_strongroom_ping_says_why_it_could_not(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/ping/{TOKEN}"
    write_job(tmp_path / "conf", url)
    down = cli(tmp_path, "ping", "beat", "--json", check=2)
    out = json.loads(down.stdout)
    assert out["delivered"] is False and out["attempts"] == 3
    assert out["message"] == (f"beat: success signal to {url.split('/ping')[0]}/… FAILED "
                              "after 3 attempts: connection refused")
    assert "strongroom: error: beat: success signal" in down.stderr
    secret = tmp_path / "beat.url"
    secret.write_text(url)
    secret.chmod(0o644)
    write_job(tmp_path / "conf", f"{{url_file: {secret}}}")
    unsafe = cli(tmp_path, "ping", "beat", check=2)
    assert unsafe.stderr.strip() == (
        f"strongroom: error: ping url_file {secret} is readable by others (mode 0644); "
        f"the URL in it is a secret: chmod 600 {secret}")
    write_job(tmp_path / "conf", f"{{url: '{url}', style: uptime_kuma}}")
    kuma = cli(tmp_path, "ping", "beat", "--signal", "start", check=2)
    assert "an Uptime Kuma push monitor has no start signal" in kuma.stderr
    (tmp_path / "conf" / "jobs" / "beat.yml").write_text("name: beat\ntype: status\n")
    none = cli(tmp_path, "ping", "beat", check=2)
    assert "job beat has no ping" in none.stderr
    assert_nowhere(url, None, down, unsafe, kuma, none)


@pytest.mark.parametrize("ping, said", [
    (f"ftp://hc-ping.com/{TOKEN}", "key 'ping.url' is not valid; expected an http:// or "
     "https:// URL (the value is a secret, so it is not shown)"),
    (f"'https://hc-ping.com/{TOKEN} x'", "key 'ping.url' is not valid"),
    (f"{{url: 'hc-ping.com/{TOKEN}'}}", "key 'ping.url' is not valid"),
    (f"[https://hc-ping.com/{TOKEN}]", "ping must be a mapping, got a value of type list"),
    (f"{{url: 'https://hc-ping.com/{TOKEN}', url_file: /etc/x}}",
     "'ping' needs exactly one of: 'ping.url', 'ping.url_file' (got 2)"),
    ("{exit_code: true}", "'ping' needs exactly one of: 'ping.url', 'ping.url_file'"),
    (f"{{url: 'https://hc-ping.com/{TOKEN}', style: kuma}}",
     "key 'ping.style' has value 'kuma'; expected one of: healthchecks, uptime_kuma"),
])
def test_a_bad_ping_is_refused_naming_file_and_key_never_the_url(tmp_path, ping, said):
    path = write_job(tmp_path / "conf", ping)
    proc = cli(tmp_path, "config", "check", path, check=2)
    assert f"{path}: {said}" in proc.stderr
    run = cli(tmp_path, "run", "beat", check=2)  # refused before anything runs
    assert said in run.stderr and not (tmp_path / "state" / "status" / "beat.json").exists()
    for p in (proc, run):
        assert TOKEN not in p.stdout + p.stderr
