"""Notifications delivered to a real HTTP receiver on 127.0.0.1 (ntfy and JSON webhook)."""

import http.server
import json
import socket
import threading

import pytest

from tests.helpers import strongroom

CANARY = "canary-7f3b9d2e"  # planted in every URL; must never show up anywhere


class Receiver:
    """A tiny HTTP server that records requests and answers with a chosen status."""

    def __init__(self, status=200):
        self.requests = []
        self.status = status
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                outer.requests.append({"method": "POST", "path": self.path,
                                       "headers": dict(self.headers),
                                       "body": self.rfile.read(n)})
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_job(conf, root, store, notify=""):
    (conf / "jobs" / "bundles.yml").write_text(
        f"name: bundles\ntype: bundle_sync\nschedule: daily 01:00\noptions:\n"
        f"  root: {root}\n  store: {store}\n{notify}")


def write_targets(conf, port, ntfy_sev="info", json_sev="info", json_port=None):
    path = conf / "notify.yml"
    path.write_text(
        "urls:\n"
        f"  - ntfy://127.0.0.1:{port}/backups-{CANARY}:\n"
        f"      - name: phone\n        min_severity: {ntfy_sev}\n"
        f"  - json://127.0.0.1:{json_port or port}/hook?token={CANARY}:\n"
        f"      - name: webhook\n        min_severity: {json_sev}\n"
        "        events: [job_failed, job_recovered]\n")
    path.chmod(0o600)


def sr(conf, state, *args, check=None):
    return strongroom("--config-dir", conf, "--state-dir", state, *args, check=check)


def everything(tmp_path, *procs):
    """Every output and every file the run wrote, for the canary check."""
    text = "".join(p.stdout + p.stderr for p in procs)
    for p in (tmp_path / "state").rglob("*"):
        if p.is_file():
            text += p.read_text(errors="replace")
    return text


def test_a_failed_job_notifies_ntfy_and_webhook_with_the_log_tail(bed, receiver):
    tmp, root, conf, state = bed
    write_job(conf, tmp / "missing-root", tmp / "store")
    write_targets(conf, receiver.port)
    proc = sr(conf, state, "run", "bundles", check=2)
    by_path = {r["path"].split("?")[0]: r for r in receiver.requests}
    ntfy = by_path["/"]
    assert ntfy["method"] == "POST" and ntfy["headers"]["X-Priority"] == "max"
    payload = json.loads(ntfy["body"])
    assert payload["topic"] == f"backups-{CANARY}"
    assert payload["title"].startswith("[ERROR] ") and "bundles failed" in payload["title"]
    assert "Result: error (exit 2)" in payload["message"]
    assert "Last lines of the job's log:" in payload["message"]
    assert "does not exist" in payload["message"]
    hook = json.loads(by_path["/hook"]["body"])
    assert hook["type"] == "failure" and "bundles failed" in hook["title"]
    status = json.loads((state / "status" / "bundles.json").read_text())
    assert [(n["target"], n["delivered"]) for n in status["notifications"]] == [
        ("phone", True), ("webhook", True)]
    assert CANARY not in everything(tmp, proc)


def test_delivery_failures_never_change_the_result_and_are_recorded(bed):
    tmp, root, conf, state = bed
    bad = Receiver(status=500)
    try:
        write_job(conf, root, tmp / "store")
        write_targets(conf, bad.port, json_port=closed_port())
        proc = sr(conf, state, "run", "bundles", check=0)  # the job itself succeeded
        status = json.loads((state / "status" / "bundles.json").read_text())
        assert (status["result"], status["exit_code"]) == ("ok", 0)
        assert status["notifications"] == [{"target": "phone", "event": "job_succeeded",
                                            "severity": "success", "delivered": False}]
        assert "Notification failed: phone" in proc.stdout
        log = (state / "log" / "bundles.log").read_text()
        assert "notification job_succeeded to phone: FAILED" in log
        assert len(bad.requests) == 1  # it was tried
        # a failing job stays failed, whether or not anyone could be told
        write_job(conf, tmp / "missing", tmp / "store")
        proc2 = sr(conf, state, "run", "bundles", check=2)
        status = json.loads((state / "status" / "bundles.json").read_text())
        assert status["result"] == "error"
        assert {n["target"]: n["delivered"] for n in status["notifications"]} == {
            "phone": False, "webhook": False}
        assert CANARY not in everything(tmp, proc, proc2)
    finally:
        bad.close()


def test_severity_and_event_filters_and_recovery(bed, receiver):
    tmp, root, conf, state = bed
    write_targets(conf, receiver.port, ntfy_sev="warning", json_sev="info")
    write_job(conf, root, tmp / "store")
    sr(conf, state, "run", "bundles", check=0)
    assert receiver.requests == []  # success is below phone's minimum; webhook skips it
    write_job(conf, tmp / "gone", tmp / "store")
    sr(conf, state, "run", "bundles", check=2)
    assert len(receiver.requests) == 2
    write_job(conf, root, tmp / "store")
    sr(conf, state, "run", "bundles", check=0)
    recovered = [json.loads(r["body"]) for r in receiver.requests[2:]]
    assert [r["title"].split("] ", 1)[1].split(": ")[1] for r in recovered] == [
        "bundles recovered"]
    # the job's own rules narrow it further
    write_job(conf, tmp / "gone", tmp / "store", notify="notify:\n  events: [job_recovered]\n")
    sr(conf, state, "run", "bundles", check=2)
    assert len(receiver.requests) == 3


def test_notify_test_names_each_failed_target(bed, receiver):
    tmp, root, conf, state = bed
    write_targets(conf, receiver.port, json_port=closed_port())
    proc = sr(conf, state, "notify", "test", "--severity", "warning", check=2)
    assert "phone: delivered" in proc.stdout and "webhook: FAILED" in proc.stdout
    assert "notification failed for: webhook" in proc.stderr
    (req,) = receiver.requests
    assert req["headers"]["X-Priority"] == "high"
    assert "Strongroom test from" in json.loads(req["body"])["title"]
    write_targets(conf, receiver.port)
    assert "webhook: delivered" in sr(conf, state, "notify", "test", check=0).stdout
    assert CANARY not in proc.stdout + proc.stderr


@pytest.mark.parametrize(("text", "message"), [
    ("urls: [oops\n", "notify.yml: not valid YAML (line 2)"),
    ("urls: {a: 1}\n", "'urls' must be a list"),
    (f"urls:\n  - notascheme-{CANARY}\n", "target 'entry #1' is not a URL Apprise understands"),
    (f"urls:\n  - json://h/{CANARY}:\n      - min_severity: loud\n",
     "min_severity 'loud'; expected one of"),
    (f"urls:\n  - json://h/{CANARY}:\n      - events: [everything]\n", "events must be a list"),
])
def test_bad_notify_files_are_clear_errors_without_secrets(bed, text, message):
    tmp, root, conf, state = bed
    (conf / "notify.yml").write_text(text)
    proc = sr(conf, state, "notify", "test", check=2)
    assert message in proc.stderr and CANARY not in proc.stdout + proc.stderr


def test_group_readable_notify_file_is_warned_about(bed, receiver):
    tmp, root, conf, state = bed
    write_targets(conf, receiver.port)
    (conf / "notify.yml").chmod(0o644)
    proc = sr(conf, state, "notify", "test", check=1)
    assert "is readable by others; it holds secrets and should be 0600" in proc.stdout


def test_a_crash_while_notifying_never_costs_the_job_its_status(bed, monkeypatch):
    from strongroom import jobs, notify

    tmp, root, conf, state = bed
    write_job(conf, root, tmp / "store")

    def boom(*args, **kwargs):
        raise RuntimeError(f"exploded with {CANARY}")

    monkeypatch.setattr(notify, "notify_job", boom)
    code, status, _ = jobs.run(jobs.Paths(conf, state, state / "log"), "bundles")
    assert code == 0 and status["result"] == "ok"
    saved = json.loads((state / "status" / "bundles.json").read_text())
    assert saved["notifications"] == [{"target": "-", "event": "-", "delivered": False,
                                       "error": "notification failed internally: "
                                                "RuntimeError"}]
    assert CANARY not in (state / "log" / "bundles.log").read_text()
