"""The status a run leaves says what happened: a run killed while it tells someone has
its outcome recorded already, and a good catch-up run (--date) is no failure."""

import json
import signal
import socket
import subprocess
import threading

from tests.helpers import ENV, VENV_BIN, strongroom


def status(state, name):
    return json.loads((state / "status" / f"{name}.json").read_text())


def daily_job(tmp_path):
    conf, state, src = tmp_path / "conf", tmp_path / "state", tmp_path / "notes"
    (conf / "jobs").mkdir(parents=True)
    src.mkdir()
    (src / "plan.md").write_text("plan\n")
    (conf / "jobs" / "days.yml").write_text(
        f"name: days\ntype: daily\noptions:\n  sources: [{src}]\n  dest: {tmp_path / 'd'}\n")
    return conf, state


def test_a_run_killed_while_notifying_has_its_outcome_recorded(tmp_path):
    conf, state = daily_job(tmp_path)
    # a target that takes the connection and never answers: the run waits on it
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    reached = threading.Event()
    held = []

    def accept():
        conn, _ = server.accept()
        held.append(conn)
        reached.set()

    threading.Thread(target=accept, daemon=True).start()
    (conf / "notify.yml").write_text(
        f"urls:\n  - json://127.0.0.1:{server.getsockname()[1]}/hook:\n"
        "      - name: slow\n        min_severity: info\n")
    (conf / "notify.yml").chmod(0o600)
    proc = subprocess.Popen([str(VENV_BIN / "strongroom"), "--config-dir", str(conf),
                             "--state-dir", str(state), "run", "days"], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert reached.wait(30), "the run never tried to deliver"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        for c in held:
            c.close()
        server.close()
    st = status(state, "days")
    assert st["running"] is False and st["result"] == "ok" and st["exit_code"] == 0
    assert st["last_success"] == st["finished"] and st["notifications"] == "pending"


def test_a_good_catch_up_run_is_no_failure(tmp_path):
    conf, state = daily_job(tmp_path)
    for day in ("2026-11-20", "2026-11-21"):
        strongroom("--config-dir", conf, "--state-dir", state, "run", "days", "--date", day,
                   check=0)
        st = status(state, "days")
        assert (st["result"], st["consecutive_failures"], st["date"]) == ("ok", 0, day)
