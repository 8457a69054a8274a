"""A job's heartbeat, delivered to a real HTTP receiver on 127.0.0.1: the start and end
pair up by run id, the end's body is the run's log tail, a failed run pings /fail (or its
exit code), Uptime Kuma's push monitors get status, msg and ping, and a url_file others
may read is refused."""

import os
import re
import time
import uuid

import pytest

from strongroom.ping import send
from tests.ping.helpers import (
    TOKEN,
    break_a_job,
    log_of,
    run,
    status_of,
    write_job,
)
from tests.servers import PingReceiver

RID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


@pytest.fixture
def receiver():
    r = PingReceiver()
    yield r
    r.close()


@pytest.fixture(autouse=True)
def no_pause(monkeypatch):
    """Retries without their pauses: attempts are counted here, not timed."""
    monkeypatch.setattr(send, "BACKOFF", (0.0,))


def test_start_and_success_pair_up_by_one_run_id(tmp_path, receiver):
    write_job(tmp_path / "conf", receiver.url())
    code, status, _ = run(tmp_path)
    assert code == 0 and status["result"] == "ok"
    start, end = receiver.requests
    assert (start["method"], start["path"]) == ("POST", f"/ping/{TOKEN}/start")
    assert (end["method"], end["path"]) == ("POST", f"/ping/{TOKEN}")
    assert RID.fullmatch(start["query"]["rid"]) and start["query"] == end["query"]
    assert str(uuid.UUID(start["query"]["rid"])) == start["query"]["rid"]  # canonical form
    assert b"beat started on" in start["body"]
    body = end["body"].decode()
    assert body.startswith("run started (pid ") and "heartbeat start: delivered" in body
    assert body.rstrip("\n").splitlines()[-1].startswith("run finished: result=ok exit=0")
    assert status_of(tmp_path)["ping"] == {
        "start": {"delivered": True, "attempts": 1, "error": None},
        "end": {"delivered": True, "attempts": 1, "error": None, "signal": "success"}}
    log = log_of(tmp_path)
    assert "heartbeat start: delivered" in log and "heartbeat end: delivered" in log


def test_a_failed_run_pings_fail_with_the_newest_100_kB_of_its_300_kB_log(tmp_path, receiver):
    write_job(tmp_path / "conf", receiver.url())
    break_a_job(tmp_path / "conf", keys=2500)  # the status job says each: over 300 kB
    code, status, output = run(tmp_path)
    assert code == 2 and status["result"] == "error"
    assert len(output.encode()) > 300_000
    end = receiver.requests[-1]
    assert end["path"] == f"/ping/{TOKEN}/fail"
    body = end["body"]
    assert 90_000 < len(body) <= 100_000
    text = body.decode("utf-8")  # whole lines, still UTF-8
    first, *rest = text.splitlines()
    assert re.fullmatch(r"\[left out: \d+ earlier line\(s\) of this run, and the start of the "
                        r"line below\]", first)
    assert rest[-1].startswith("run finished: result=error exit=2")
    assert "unknown_key_02499" in text and "unknown_key_00000'" not in text  # newest kept
    assert status_of(tmp_path)["ping"]["end"] == {"delivered": True, "attempts": 1,
                                                  "error": None, "signal": "fail"}


def test_exit_code_true_pings_the_exit_code_of_a_failure_and_plain_url_on_success(
        tmp_path, receiver):
    write_job(tmp_path / "conf", f"{{url: '{receiver.url()}', exit_code: true}}")
    assert run(tmp_path)[0] == 0
    assert receiver.requests[-1]["path"] == f"/ping/{TOKEN}"  # success: no suffix
    # a job installed two hours ago that never ran: stale, so the status job warns, and a
    # warning is a success to the monitor
    late = tmp_path / "conf" / "jobs" / "late.yml"
    late.write_text("name: late\ntype: status\nschedule: every 15m\n")
    os.utime(late, (time.time() - 7200, time.time() - 7200))
    assert run(tmp_path)[0] == 1
    assert receiver.requests[-1]["path"] == f"/ping/{TOKEN}"
    assert status_of(tmp_path)["ping"]["end"]["signal"] == "success"
    late.unlink()
    break_a_job(tmp_path / "conf")
    assert run(tmp_path)[0] == 2
    assert receiver.requests[-1]["path"] == f"/ping/{TOKEN}/2"
    assert status_of(tmp_path)["ping"]["end"]["signal"] == 2


def test_uptime_kuma_gets_one_push_at_the_end_with_status_msg_and_ping(tmp_path, receiver):
    # pasted as Uptime Kuma shows it: its own status, msg and ping are replaced
    url = receiver.url(f"/api/push/{TOKEN}") + "?status=up&msg=OK&ping="
    write_job(tmp_path / "conf", f"{{url: '{url}', style: uptime_kuma}}")
    assert run(tmp_path)[0] == 0
    (push,) = receiver.requests  # no start signal
    assert (push["method"], push["path"]) == ("GET", f"/api/push/{TOKEN}")
    assert push["query"]["status"] == "up" and push["query"]["msg"].startswith("ok: ")
    assert push["query"]["ping"].isdigit() and "rid" not in push["query"]
    assert status_of(tmp_path)["ping"] == {
        "start": None,
        "end": {"delivered": True, "attempts": 1, "error": None, "signal": "success"}}
    break_a_job(tmp_path / "conf")
    assert run(tmp_path)[0] == 2
    down = receiver.requests[-1]["query"]
    assert down["status"] == "down" and down["msg"].startswith("error: ")
    assert "\n" not in down["msg"] and len(down["msg"]) <= 200


def test_a_url_file_0600_is_read_each_run(tmp_path, receiver):
    secret = tmp_path / "conf" / "secrets" / "beat.url"
    secret.parent.mkdir(parents=True)
    secret.write_text(receiver.url() + "\n")
    secret.chmod(0o600)
    write_job(tmp_path / "conf", f"{{url_file: {secret}}}")
    assert run(tmp_path)[0] == 0
    assert [r["path"] for r in receiver.requests] == [f"/ping/{TOKEN}/start",
                                                      f"/ping/{TOKEN}"]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_url_file_others_may_read_is_refused_and_the_job_still_runs(tmp_path, receiver,
                                                                       mode):
    secret = tmp_path / "beat.url"
    secret.write_text(receiver.url())
    secret.chmod(mode)
    write_job(tmp_path / "conf", f"{{url_file: {secret}}}")
    code, status, output = run(tmp_path)
    assert code == 0 and status["result"] == "ok"  # the backup is not what failed
    assert receiver.requests == []  # nothing sent from a file others may have read
    said = (f"ping url_file {secret} is readable by others (mode {mode:04o}); the URL in "
            f"it is a secret: chmod 600 {secret}")
    assert status_of(tmp_path)["ping"] == {
        "start": {"delivered": False, "attempts": 0, "error": said},
        "end": {"delivered": False, "attempts": 0, "error": said, "signal": "success"}}
    assert f"heartbeat start: FAILED: {said}" in log_of(tmp_path)
    assert f"Heartbeat failed: start: {said}; end: {said}" in output
    assert secret.read_text() == receiver.url()  # the file is left as it was
    secret.chmod(0o600)  # and once fixed, the next run pings
    assert run(tmp_path)[0] == 0 and len(receiver.requests) == 2


def test_a_url_file_that_is_missing_or_holds_no_url_is_said_without_its_content(tmp_path):
    secret = tmp_path / "beat.url"
    write_job(tmp_path / "conf", f"{{url_file: {secret}}}")
    run(tmp_path)
    assert status_of(tmp_path)["ping"]["start"]["error"] == (
        f"ping url_file {secret} does not exist")
    secret.write_text(f"ftp://example.org/{TOKEN}\n")
    secret.chmod(0o600)
    run(tmp_path)
    err = status_of(tmp_path)["ping"]["end"]["error"]
    assert err == (f"ping url_file {secret} does not hold one http:// or https:// URL (its "
                   "content is not shown)")
    assert TOKEN not in log_of(tmp_path)


def test_a_job_without_ping_sends_nothing_and_records_nothing(tmp_path, receiver):
    (tmp_path / "conf" / "jobs").mkdir(parents=True)
    (tmp_path / "conf" / "jobs" / "beat.yml").write_text("name: beat\ntype: status\n")
    assert run(tmp_path)[0] == 0
    assert receiver.requests == [] and "ping" not in status_of(tmp_path)
    assert "heartbeat" not in log_of(tmp_path)


def test_a_job_file_others_may_read_that_holds_the_url_is_warned_about(tmp_path, receiver):
    path = write_job(tmp_path / "conf", receiver.url())
    path.chmod(0o644)
    assert run(tmp_path)[0] == 0
    said = (f"warning: {path} holds the ping URL and others may read it (mode 0644): chmod "
            "600 it, or give the URL in a 0600 url_file")
    assert said in log_of(tmp_path) and said in receiver.requests[-1]["body"].decode()
    path.chmod(0o600)
    (tmp_path / "state" / "log" / "beat.log").unlink()
    assert run(tmp_path)[0] == 0
    assert "holds the ping URL" not in log_of(tmp_path)
