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
        # a short poll: shutdown() waits up to one interval, and every test closes one
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

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
    # Latin-1 from an editor: the file as a whole cannot be read, so it is the error
    (f"urls:\n  - json://h/{CANARY}-caf\xe9\n".encode("latin-1"),
     "notify.yml: not UTF-8 text (line 2); save it as UTF-8"),
])
def test_bad_notify_files_are_clear_errors_without_secrets(bed, text, message):
    tmp, root, conf, state = bed
    if isinstance(text, bytes):
        (conf / "notify.yml").write_bytes(text)
    else:
        (conf / "notify.yml").write_text(text)
    proc = sr(conf, state, "notify", "test", check=2)
    assert message in proc.stderr and CANARY not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_non_utf8_notify_file_is_named_and_the_job_keeps_its_result(bed):
    tmp, root, conf, state = bed
    write_job(conf, root, tmp / "store")
    (conf / "notify.yml").write_bytes(f"urls:\n  - json://h/{CANARY}\xff\n".encode("latin-1"))
    proc = sr(conf, state, "run", "bundles", check=0)
    status = json.loads((state / "status" / "bundles.json").read_text())
    assert (status["result"], status["exit_code"]) == ("ok", 0)
    (note,) = status["notifications"]
    assert (note["target"], note["delivered"]) == ("notify.yml", False)
    assert note["error"] == f"{conf / 'notify.yml'}: not UTF-8 text (line 2); save it as UTF-8"
    assert "Notification failed: notify.yml" in proc.stdout
    assert CANARY not in everything(tmp, proc)


@pytest.mark.parametrize("kind", ["fifo", "zero", "big"])
def test_a_notify_file_that_is_no_regular_file_never_hangs_or_floods_a_run(bed, kind):
    import os

    tmp, root, conf, state = bed
    write_job(conf, root, tmp / "store")
    path = conf / "notify.yml"
    if kind == "fifo":
        os.mkfifo(path)  # read as a file, every run would wait for a writer forever
        expected = f"{path} is a FIFO, not a notification file"
    elif kind == "zero":
        path.symlink_to("/dev/zero")  # read whole, it would take all memory
        expected = f"{path} is a character device, not a notification file"
    else:
        path.write_text("urls: []\n" + "#" * (1 << 20))
        expected = f"{path}: {path.stat().st_size} bytes; a notification file may be at most"
    proc = sr(conf, state, "notify", "test", check=2)
    assert expected in proc.stderr, proc.stderr
    proc = sr(conf, state, "run", "bundles", check=0)
    status = json.loads((state / "status" / "bundles.json").read_text())
    assert (status["running"], status["result"]) == (False, "ok")
    (note,) = status["notifications"]
    assert note["target"] == "notify.yml" and expected in note["error"]


def write_with_broken_entries(conf, port):
    """A working ntfy target between an unparsable URL and a target with a misspelt key."""
    path = conf / "notify.yml"
    path.write_text(
        "urls:\n"
        # mistyped so that the text before '://' holds the password: never shown
        f"  - https//alice:{CANARY}@example.org://x\n"
        f"  - ntfy://127.0.0.1:{port}/backups-{CANARY}:\n"
        "      - name: phone\n        min_severity: info\n"
        f"  - json://127.0.0.1:{port}/hook?token={CANARY}:\n"
        "      - name: webhook\n        min_severty: error\n")
    path.chmod(0o600)


TYPO = ("has an unknown key 'min_severty' (did you mean 'min_severity'? Strongroom's keys "
        "are name, min_severity, events)")


def test_one_broken_entry_costs_only_itself_and_is_named_without_its_url(bed, receiver):
    tmp, root, conf, state = bed
    write_with_broken_entries(conf, receiver.port)
    test = sr(conf, state, "notify", "test", check=2)
    assert [r["path"] for r in receiver.requests] == ["/"]  # phone got it; nobody else tried
    assert test.stdout.splitlines()[-3:] == [
        "entry #1: FAILED", "phone: delivered", "webhook: FAILED"]
    path = conf / "notify.yml"
    # warnings go to stderr, as on every verb
    assert (f"warning: {path}: target 'entry #1' is not a URL Apprise understands; it gets "
            "nothing until that is fixed") in test.stderr
    assert f"warning: {path}: target 'webhook' {TYPO}; it gets" in test.stderr
    assert "notification failed for: entry #1, webhook" in test.stderr
    # a job's message goes out the same way, and its status names each broken entry
    write_job(conf, tmp / "missing-root", tmp / "store")
    run = sr(conf, state, "run", "bundles", check=2)
    assert len(receiver.requests) == 2
    message = json.loads(receiver.requests[1]["body"])
    assert "bundles failed" in message["title"]
    assert CANARY not in message["title"] + message["message"]
    status = json.loads((state / "status" / "bundles.json").read_text())
    assert status["result"] == "error"
    assert [(n["target"], n["delivered"], n.get("error")) for n in status["notifications"]] == [
        ("entry #1", False, "is not a URL Apprise understands"), ("phone", True, None),
        ("webhook", False, TYPO)]
    assert "notification job_failed to webhook: FAILED (has an unknown key 'min_severty'" in (
        state / "log" / "bundles.log").read_text()
    assert CANARY not in everything(tmp, test, run)


@pytest.mark.parametrize(("entry", "problem"), [
    (f"json://127.0.0.1:9/{CANARY}:\n      - min_severity: loud\n",
     "has min_severity 'loud'; expected one of info, success, warning, error"),
    (f"json://127.0.0.1:9/{CANARY}:\n      - events: [everything]\n",
     "has events that are not a list of: job_failed, "),
    (f"json://127.0.0.1:9/{CANARY}: [oops]\n", "has arguments that are not a mapping"),
    (f"json://127.0.0.1:9/{CANARY}:\n    name: lost-indent\n",
     "is neither a URL nor a URL with arguments (its settings go indented below the URL)"),
    (f"notascheme-{CANARY}\n", "is not a URL Apprise understands"),
    (f"json://127.0.0.1:9/{CANARY}:\n      - severity: error\n",
     "has an unknown key 'severity' (did you mean 'min_severity'?"),
    (f"json://127.0.0.1:9/{CANARY}:\n      - event: [job_failed]\n",
     "has an unknown key 'event' (did you mean 'events'?"),
    (f"json://127.0.0.1:9/{CANARY}:\n      - nmae: pager\n",
     "has an unknown key 'nmae' (did you mean 'name'? Strongroom's keys are name, "
     "min_severity, events)"),
])
def test_each_kind_of_broken_entry_is_a_named_failure_beside_a_working_target(
        tmp_path, receiver, entry, problem):
    from strongroom import notify

    (tmp_path / "notify.yml").write_text(
        f"urls:\n  - ntfy://127.0.0.1:{receiver.port}/t:\n      - name: phone\n"
        f"  - {entry}")
    targets, _ = notify.load(tmp_path)
    results = notify.send(targets, "job_failed", "error", "title", "body")
    assert results[0] == {"target": "phone", "event": "job_failed", "severity": "error",
                          "delivered": True}
    assert len(receiver.requests) == 1
    (broken,) = results[1:]
    assert broken["target"] in ("json #2", "entry #2") and broken["delivered"] is False
    assert broken["error"].startswith(problem)
    (line,) = notify.problems(tmp_path, targets)
    assert line.startswith(f"{tmp_path / 'notify.yml'}: target '{broken['target']}' {problem}")
    assert CANARY not in json.dumps(results) + line


def test_apprise_keys_that_look_like_ours_are_passed_on(tmp_path):
    from strongroom import notify

    # PagerDuty's own `severity`, and a JSON webhook's header and payload keys
    (tmp_path / "notify.yml").write_text(
        "urls:\n  - pagerduty://ikey@akey:\n      - name: pd\n        severity: critical\n"
        "  - json://127.0.0.1:9/h:\n      - +X-Event: backup\n        ':events': x\n")
    targets, _ = notify.load(tmp_path)
    assert [(t.name, t.problem) for t in targets] == [("pd", None), ("json #2", None)]
    assert targets[0].args == {"severity": "critical"}


def test_group_readable_notify_file_is_warned_about(bed, receiver):
    tmp, root, conf, state = bed
    write_targets(conf, receiver.port)
    (conf / "notify.yml").chmod(0o644)
    proc = sr(conf, state, "notify", "test", check=1)
    assert "is readable by others; it holds secrets and should be 0600" in proc.stderr


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
