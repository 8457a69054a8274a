"""Email through a real SMTP server and Slack at the HTTP layer, both on 127.0.0.1."""

import email
import email.policy
import html
import json
import re

import pytest

from tests.helpers import ENV, strongroom
from tests.notify.test_notify import everything, write_job
from tests.servers import InterceptingProxy, SMTPServer

# Slack tokens and SMTP passwords are letters and digits only; this one is planted in both.
SECRET = "canary9c41e7d0"


def sr(conf, state, *args, check=None, env=None):
    return strongroom("--config-dir", conf, "--state-dir", state, *args, check=check, env=env)


@pytest.fixture
def smtp():
    server = SMTPServer("backup", SECRET)
    yield server
    server.stop()


def write_mail_target(conf, port, min_severity="warning"):
    path = conf / "notify.yml"
    path.write_text(
        "urls:\n"
        f"  - mailto://backup:{SECRET}@example.org:{port}?smtp=127.0.0.1"
        "&from=strongroom@example.org&to=alice@example.org:\n"
        f"      - name: mail\n        min_severity: {min_severity}\n")
    path.chmod(0o600)


def test_a_failed_job_is_emailed_with_its_log_tail(bed, smtp):
    tmp, root, conf, state = bed
    write_job(conf, tmp / "missing-root", tmp / "store")
    write_mail_target(conf, smtp.port)
    proc = sr(conf, state, "run", "bundles", check=2)
    assert smtp.logins == [True]  # it authenticated with the password from notify.yml
    (msg,) = smtp.messages
    assert msg["from"] == "strongroom@example.org" and msg["to"] == ["alice@example.org"]
    parsed = email.message_from_string(msg["data"], policy=email.policy.default)
    assert parsed["Subject"].startswith("[ERROR] ") and "bundles failed" in parsed["Subject"]
    text = parsed.get_body(preferencelist=("plain", "html")).get_content()
    assert "Result: error (exit 2)" in text and "does not exist" in text
    assert "Last lines of the job's log:" in text
    status = json.loads((state / "status" / "bundles.json").read_text())
    assert status["notifications"] == [{"target": "mail", "event": "job_failed",
                                        "severity": "error", "delivered": True}]
    assert SECRET not in everything(tmp, proc) + msg["data"]


def part_lines(part):
    """The lines a reader sees in one text part (HTML: as a mail client lays it out)."""
    text = part.get_content()
    if part.get_content_type() == "text/html":
        text = re.sub(r"<br\s*/?>|</p>|</div>", "\n", text.replace("\r\n", " "))
        text = html.unescape(re.sub(r"<[^>]+>", "", text)).replace("\xa0", " ")
    return [line.strip() for line in text.splitlines()]


def test_emails_keep_their_line_breaks_in_plain_and_html_parts(bed, smtp):
    tmp, root, conf, state = bed
    write_job(conf, tmp / "missing-root", tmp / "store")
    path = conf / "notify.yml"
    mailto = (f"mailto://backup:{SECRET}@example.org:{smtp.port}?smtp=127.0.0.1"
              "&from=strongroom@example.org&to=alice@example.org")
    # Apprise's default mail, and one asking for HTML (a plain part beside an HTML one)
    path.write_text(f"urls:\n  - {mailto}:\n      - name: mail\n"
                    f"  - {mailto}:\n      - name: html-mail\n        format: html\n")
    path.chmod(0o600)
    proc = sr(conf, state, "run", "bundles", check=2)
    assert len(smtp.messages) == 2
    kinds = []
    for msg in smtp.messages:
        parsed = email.message_from_string(msg["data"], policy=email.policy.default)
        parts = [p for p in parsed.walk() if not p.is_multipart()]
        kinds.append(sorted(p.get_content_type() for p in parts))
        for part in parts:
            lines = part_lines(part)
            for line in ("Result: error (exit 2)", "No successful run yet.",
                         "Last lines of the job's log:"):
                assert line in lines, (part.get_content_type(), lines)
            assert lines[0].startswith("Job: bundles on ")
            assert any("does not exist" in line for line in lines)
    assert kinds == [["text/plain"], ["text/html", "text/plain"]]
    status = json.loads((state / "status" / "bundles.json").read_text())
    assert [n["delivered"] for n in status["notifications"]] == [True, True]
    assert SECRET not in everything(tmp, proc) + "".join(m["data"] for m in smtp.messages)


def test_a_stopped_smtp_server_leaves_the_result_and_records_the_failure(bed, smtp):
    tmp, root, conf, state = bed
    write_job(conf, root, tmp / "store")
    write_mail_target(conf, smtp.port, min_severity="info")
    smtp.stop()
    proc = sr(conf, state, "run", "bundles", check=0)
    status = json.loads((state / "status" / "bundles.json").read_text())
    assert (status["result"], status["exit_code"]) == ("ok", 0)
    assert status["notifications"] == [{"target": "mail", "event": "job_succeeded",
                                        "severity": "success", "delivered": False}]
    assert "Notification failed: mail" in proc.stdout
    assert "notification job_succeeded to mail: FAILED" in (
        state / "log" / "bundles.log").read_text()
    # and the data is there: the job's bundles were written despite the dead server
    assert list((tmp / "store" / "r").glob("full-*.bundle"))
    test = sr(conf, state, "notify", "test", check=2)
    assert "mail: FAILED" in test.stdout
    assert SECRET not in everything(tmp, proc, test)


@pytest.fixture
def slack(tmp_path):
    d = tmp_path / "tls"
    d.mkdir()
    proxy = InterceptingProxy(d, "hooks.slack.com")
    yield proxy
    proxy.close()


def write_slack_target(conf):
    path = conf / "notify.yml"
    path.write_text(f"urls:\n  - slack://T0AAAA1/B0BBBB2/{SECRET}/#backups:\n"
                    "      - name: slack\n        min_severity: warning\n")
    path.chmod(0o600)


def test_slack_gets_the_failure_as_its_webhook_expects(bed, slack):
    tmp, root, conf, state = bed
    write_job(conf, tmp / "missing-root", tmp / "store")
    write_slack_target(conf)
    proc = sr(conf, state, "run", "bundles", check=2, env=slack.env(ENV))
    assert [c.split()[:2] for c in slack.connects] == [["CONNECT", "hooks.slack.com:443"]]
    (req,) = slack.requests
    assert req["method"] == "POST"
    assert req["path"] == f"/services/T0AAAA1/B0BBBB2/{SECRET}"  # only on the wire
    assert req["headers"]["content-type"].startswith("application/json")
    payload = json.loads(req["body"])
    assert payload["channel"] == "#backups"
    (att,) = payload["attachments"]
    assert "bundles failed" in att["title"] and att["title"].startswith("[ERROR]")
    assert "Result: error (exit 2)" in att["text"]
    assert att["color"] == "#A32037"  # Apprise's failure colour
    status = json.loads((state / "status" / "bundles.json").read_text())
    assert status["notifications"][0]["delivered"] is True
    assert SECRET not in everything(tmp, proc)


def test_slack_answering_500_is_a_recorded_failure_not_a_changed_result(bed, tmp_path):
    tmp, root, conf, state = bed
    d = tmp_path / "tls500"
    d.mkdir()
    proxy = InterceptingProxy(d, "hooks.slack.com", status=500, answer=b"boom")
    try:
        write_job(conf, tmp / "missing-root", tmp / "store")
        write_slack_target(conf)
        proc = sr(conf, state, "run", "bundles", check=2, env=proxy.env(ENV))
        assert len(proxy.requests) == 1
        status = json.loads((state / "status" / "bundles.json").read_text())
        assert status["result"] == "error" and status["exit_code"] == 2
        assert status["notifications"][0] == {"target": "slack", "event": "job_failed",
                                              "severity": "error", "delivered": False}
        assert SECRET not in everything(tmp, proc)
    finally:
        proxy.close()
