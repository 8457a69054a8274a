"""A heartbeat endpoint that is down, too slow, failing for a while or refusing the URL:
the job's result never changes, the status and the log say what happened (without the
URL), and the attempts are bounded (counted here, not timed)."""

import pytest

from strongroom.ping import send
from tests.ping.helpers import TOKEN, log_of, run, status_of, write_job
from tests.servers import PingReceiver, closed_port


@pytest.fixture(autouse=True)
def no_pause(monkeypatch):
    monkeypatch.setattr(send, "BACKOFF", (0.0,))


def assert_said_without_the_url(tmp_path, url):
    log = log_of(tmp_path)
    status = (tmp_path / "state" / "status" / "beat.json").read_text()
    for text in (log, status):
        assert url not in text and TOKEN not in text


def test_an_endpoint_that_is_down_changes_nothing_but_the_record(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/ping/{TOKEN}"
    write_job(tmp_path / "conf", url)
    code, status, output = run(tmp_path)
    assert code == 0 and status["result"] == "ok" and status["consecutive_failures"] == 0
    failed = {"delivered": False, "attempts": send.ATTEMPTS, "error": "connection refused"}
    assert send.ATTEMPTS == 3
    assert status_of(tmp_path)["ping"] == {"start": failed,
                                           "end": {**failed, "signal": "success"}}
    assert status_of(tmp_path)["last_success"] is not None  # the run still counts
    log = log_of(tmp_path)
    assert "heartbeat start: FAILED after 3 attempts: connection refused" in log
    assert "heartbeat end: FAILED after 3 attempts: connection refused" in log
    assert "Heartbeat failed: start: connection refused; end: connection refused" in output
    assert_said_without_the_url(tmp_path, url)


def test_an_endpoint_slower_than_the_timeout_is_given_up_on_after_the_attempts(
        tmp_path, monkeypatch):
    monkeypatch.setattr(send, "TIMEOUT", 0.2)
    slow = PingReceiver(hold=True)  # takes each request and never answers
    try:
        write_job(tmp_path / "conf", slow.url())
        code, status, _ = run(tmp_path)
        assert code == 0 and status["result"] == "ok"
        # three attempts at the start, three at the end, and not one more
        assert [r["path"] for r in slow.requests] == [f"/ping/{TOKEN}/start"] * 3 + [
            f"/ping/{TOKEN}"] * 3
        rec = status_of(tmp_path)["ping"]
        assert rec["start"] == {"delivered": False, "attempts": 3,
                                "error": "no answer within 0.2 s"}
        assert rec["end"]["attempts"] == 3 and not rec["end"]["delivered"]
        assert "heartbeat end: FAILED after 3 attempts: no answer within 0.2 s" in \
            log_of(tmp_path)
        assert_said_without_the_url(tmp_path, slow.url())
    finally:
        slow.close()


def test_an_endpoint_answering_500_then_200_gets_the_signal_on_the_retry(tmp_path):
    flaky = PingReceiver(statuses=[500, 503])  # the start's first two attempts fail
    try:
        write_job(tmp_path / "conf", flaky.url())
        code, _, _ = run(tmp_path)
        assert code == 0
        assert [r["path"] for r in flaky.requests] == [f"/ping/{TOKEN}/start"] * 3 + [
            f"/ping/{TOKEN}"]
        assert len({r["query"]["rid"] for r in flaky.requests}) == 1  # one run id
        rec = status_of(tmp_path)["ping"]
        assert rec["start"] == {"delivered": True, "attempts": 3, "error": None}
        assert rec["end"] == {"delivered": True, "attempts": 1, "error": None,
                              "signal": "success"}
        assert "heartbeat start: delivered (attempt 3)" in log_of(tmp_path)
    finally:
        flaky.close()


def test_an_endpoint_that_keeps_failing_is_tried_three_times_and_said_by_status(tmp_path):
    down = PingReceiver(statuses=[500] * 6)
    try:
        write_job(tmp_path / "conf", down.url())
        assert run(tmp_path)[0] == 0
        assert len(down.requests) == 6
        assert status_of(tmp_path)["ping"]["end"]["error"] == "HTTP 500"
        assert "heartbeat end: FAILED after 3 attempts: HTTP 500" in log_of(tmp_path)
    finally:
        down.close()


def test_a_url_the_endpoint_does_not_know_is_not_retried(tmp_path):
    gone = PingReceiver(statuses=[404, 404])  # no such check: trying again cannot help
    try:
        write_job(tmp_path / "conf", gone.url())
        assert run(tmp_path)[0] == 0
        assert len(gone.requests) == 2  # one start, one end
        assert status_of(tmp_path)["ping"]["start"] == {"delivered": False, "attempts": 1,
                                                        "error": "HTTP 404"}
        assert "heartbeat start: FAILED after 1 attempt: HTTP 404" in log_of(tmp_path)
    finally:
        gone.close()


def test_a_failed_job_stays_failed_whatever_the_heartbeat_does(tmp_path):
    from tests.ping.helpers import break_a_job

    write_job(tmp_path / "conf", f"http://127.0.0.1:{closed_port()}/ping/{TOKEN}")
    break_a_job(tmp_path / "conf")
    code, status, _ = run(tmp_path)
    assert code == 2 and status["result"] == "error" and status["consecutive_failures"] == 1
    assert status_of(tmp_path)["ping"]["end"] == {
        "delivered": False, "attempts": 3, "error": "connection refused", "signal": "fail"}
