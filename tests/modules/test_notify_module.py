"""library/notify.py in real playbook runs (ansible-runner, localhost) against a receiver,
and its main() in-process (tests/modules/harness.py) where a playbook run adds nothing."""

import json

import ansible_runner
import yaml

from tests.helpers import ENV, ROOT, VENV_BIN
from tests.modules import harness
from tests.notify.test_notify import CANARY, Receiver, closed_port, write_targets


def play(tmp_path, tasks, check=False):
    book = tmp_path / "book.yml"
    book.write_text(yaml.safe_dump([{"name": "notify", "hosts": "localhost",
                                     "gather_facts": False, "tasks": tasks}]))
    env = {k: v for k, v in ENV.items() if k.startswith(("PATH", "HOME", "LC_"))}
    env.update(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_LIBRARY=str(ROOT / "library"),
               ANSIBLE_NOCOLOR="1", LC_ALL="C.UTF-8", LANG="C.UTF-8",
               PATH=f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}")
    # a private dir per run: ansible-runner keeps a run's cmdline (--check) in it
    private = tmp_path / f"runner-{len(list(tmp_path.glob('runner-*')))}"
    private.mkdir()
    r = ansible_runner.run(private_data_dir=str(private), playbook=str(book),
                           inventory=str(ROOT / "inventory" / "local"), envvars=env,
                           cmdline="--check" if check else None, quiet=True)
    results = [e["event_data"] for e in r.events
               if e.get("event") in ("runner_on_ok", "runner_on_failed")]
    return r, results, r.stdout.read()


def task(conf, **args):
    return {"name": "send", "strongroom.backup.notify": {"config_dir": str(conf), **args}}


def test_sends_by_severity_never_changes_and_check_mode_sends_nothing(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    receiver = Receiver()
    try:
        write_targets(conf, receiver.port, ntfy_sev="info", json_sev="error")
        r, (res,), out = play(tmp_path, [task(conf, title="migrated", body="all good",
                                             severity="success")], check=True)
        assert r.rc == 0 and receiver.requests == []
        assert res["res"]["would_send"] == ["phone"] and res["res"]["changed"] is False
        r, (res,), out = play(tmp_path, [task(conf, title="migrated", body="all good",
                                             severity="success")])
        assert r.rc == 0 and res["res"]["changed"] is False
        assert res["res"]["sent"] == [{"target": "phone", "event": "message",
                                       "severity": "success", "delivered": True}]
        (req,) = receiver.requests
        assert json.loads(req["body"])["title"] == "migrated"
        assert "X-Priority" not in req["headers"]  # success is ntfy's default priority
        # an event narrows it to the targets that want that event
        r, (res,), out = play(tmp_path, [task(conf, title="drill broke", severity="error",
                                             event="job_failed")])
        assert sorted(x["target"] for x in res["res"]["sent"]) == ["phone", "webhook"]
        assert CANARY not in out + json.dumps(res)
    finally:
        receiver.close()


def test_an_unreachable_target_fails_the_task_by_name_and_unknown_names_are_refused(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    write_targets(conf, closed_port())
    r, (res,), out = play(tmp_path, [task(conf, title="x", severity="error")])
    assert r.rc != 0 and res["res"]["msg"] == "notification failed for: phone, webhook"
    r, (res,), out = play(tmp_path, [task(conf, title="x", severity="error",
                                          fail_on_error=False)])
    assert r.rc == 0 and res["res"]["failed_targets"] == ["phone", "webhook"]
    r, (res,), out = play(tmp_path, [task(conf, title="x", targets=["pager"])])
    assert r.rc != 0
    assert res["res"]["msg"].startswith("no target named pager in ")
    assert "(known: phone, webhook)" in res["res"]["msg"]
    assert CANARY not in out + json.dumps(res)


def test_no_notify_file_warns_and_sends_nothing(tmp_path):
    conf = tmp_path / "empty"
    conf.mkdir()
    r, (res,), out = play(tmp_path, [task(conf, title="x")])
    assert r.rc == 0 and res["res"]["would_send"] == []
    assert any("nothing sent" in w for w in res["res"]["warnings"])


def run_module(conf, check_mode=False, **args):
    """library/notify.py's main() in-process: (outcome, result, warnings)."""
    import notify as module  # library/notify.py (tests/conftest.py puts library/ on the path)
    from ansible.module_utils.common import warnings

    before = len(warnings.get_warning_messages())  # earlier tests' warnings stay there
    args = {"config_dir": str(conf), "title": "t", "severity": "error", **args}
    try:
        harness.run(module.main, args, check_mode=check_mode)
    except harness.Exit as e:
        return "ok", e.args[0], list(warnings.get_warning_messages()[before:])
    except harness.Fail as e:
        return "failed", e.args[0], list(warnings.get_warning_messages()[before:])


def test_a_non_utf8_notify_file_fails_the_task_by_name(tmp_path):
    (tmp_path / "notify.yml").write_bytes(f"urls:\n  - json://h/{CANARY}\xe9\n".encode("latin-1"))
    outcome, res, _ = run_module(tmp_path)
    assert outcome == "failed"
    assert res["msg"] == f"{tmp_path / 'notify.yml'}: not UTF-8 text (line 2); save it as UTF-8"
    assert res["failed_targets"] == [] and CANARY not in json.dumps(res)


def test_a_broken_entry_fails_by_name_while_the_others_still_get_the_message(tmp_path):
    from tests.notify.test_notify import TYPO, write_with_broken_entries

    receiver = Receiver()
    try:
        write_with_broken_entries(tmp_path, receiver.port)
        path = tmp_path / "notify.yml"
        outcome, res, warned = run_module(tmp_path, check_mode=True)
        assert outcome == "failed" and receiver.requests == []
        assert res["would_send"] == ["phone"]
        assert res["failed_targets"] == ["entry #1", "webhook"]
        assert res["msg"] == ("notification failed for: entry #1 (is not a URL Apprise "
                              f"understands), webhook ({TYPO})")
        assert warned == [
            f"{path}: target 'entry #1' is not a URL Apprise understands; it gets nothing "
            "until that is fixed",
            f"{path}: target 'webhook' {TYPO}; it gets nothing until that is fixed"]
        assert CANARY not in json.dumps([res, warned])
        outcome, res, _ = run_module(tmp_path, title="disk replaced")
        assert outcome == "failed" and res["failed_targets"] == ["entry #1", "webhook"]
        assert [(r["target"], r["delivered"]) for r in res["sent"]] == [
            ("entry #1", False), ("phone", True), ("webhook", False)]
        (req,) = receiver.requests
        assert json.loads(req["body"])["title"] == "disk replaced"
        outcome, res, _ = run_module(tmp_path, fail_on_error=False)
        assert outcome == "ok" and res["failed_targets"] == ["entry #1", "webhook"]
        assert len(receiver.requests) == 2
        # the working target alone, by name, is not held back by the broken ones
        outcome, res, _ = run_module(tmp_path, targets=["phone"])
        assert outcome == "ok" and res["failed_targets"] == []
        assert CANARY not in json.dumps(res)
    finally:
        receiver.close()


def test_a_title_only_message_is_delivered(tmp_path):
    receiver = Receiver()
    try:
        write_targets(tmp_path, receiver.port)
        outcome, res, _ = run_module(tmp_path, title="Restore drill could not start",
                                     targets=["phone"])
        assert outcome == "ok" and res["sent"][0]["delivered"] is True
        (req,) = receiver.requests
        assert json.loads(req["body"])["title"] == "Restore drill could not start"
    finally:
        receiver.close()
