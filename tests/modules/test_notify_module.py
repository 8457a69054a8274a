"""library/notify.py in real playbook runs (ansible-runner, localhost) against a receiver."""

import json

import ansible_runner
import yaml

from tests.helpers import ENV, ROOT, VENV_BIN
from tests.unit.test_notify import CANARY, Receiver, closed_port, write_targets


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
    return {"name": "send", "ansible.legacy.notify": {"config_dir": str(conf), **args}}


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
