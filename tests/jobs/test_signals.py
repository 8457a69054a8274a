"""A SIGTERM (a scheduler stopping the run, a shutdown) ends the whole run at once, with
an honest status: never a traceback, never `running: true`, never swallowed by the
handler that keeps one repository's or one artifact's failure from stopping the others.

The signal is real (os.kill of this process), sent at chosen points by wrapping one
engine function, so the moment it lands is deterministic."""

import json
import os
import signal

import pytest

from strongroom import jobs
from strongroom.core import fsutil
from tests.drill.test_drill import setup_jobs
from tests.helpers import g, rich_repo, strongroom
from tests.sync.test_gitsync import fingerprint
from tests.sync.test_sync_exact import make_pair


@pytest.fixture
def pair(tmp_path):
    return make_pair(tmp_path)


def paths(conf, state):
    return jobs.Paths(conf, state, state / "log")


def status(state, name):
    return json.loads((state / "status" / f"{name}.json").read_text())


def term_self():
    os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before the next line


def test_a_signal_while_the_running_status_is_written_is_still_caught(bed, monkeypatch):
    # The moment a supervisor sees `running` is the moment it may send SIGTERM: the
    # handler must already be ours, and inside the runner's try.
    tmp, root, conf, state = bed
    (conf / "jobs" / "bundles.yml").write_text(
        f"name: bundles\ntype: bundle\noptions:\n  root: {root}\n  store: {tmp / 'store'}\n")
    real = fsutil.atomic_write_json

    def write(path, data, *a, **kw):
        real(path, data, *a, **kw)
        if isinstance(data, dict) and data.get("running"):
            term_self()

    monkeypatch.setattr(fsutil, "atomic_write_json", write)
    before = signal.getsignal(signal.SIGTERM)
    code, st, _ = jobs.run(paths(conf, state), "bundles")
    assert code == 143
    assert (st["result"], st["running"], st["message"]) == (
        "error", False, "terminated by signal 15")
    assert status(state, "bundles")["running"] is False
    assert "run finished: result=error exit=143" in (state / "log" / "bundles.log").read_text()
    assert signal.getsignal(signal.SIGTERM) is before  # the caller's handler is back
    assert not (tmp / "store").exists()  # it ended before bundling anything


def test_a_signal_during_a_drill_ends_the_drill_instead_of_failing_one_artifact(
        bed, monkeypatch):
    tmp, root, conf, state = bed
    rich_repo(root / "second")
    setup_jobs(tmp, root, conf, "  source: local\n")
    strongroom("--config-dir", conf, "--state-dir", state, "run", "bundles", check=0)
    from strongroom.drill import bundle

    drilled = []
    real = bundle.BundlePlan.drill

    def drill(self, name, source, work):
        drilled.append(name)
        art = real(self, name, source, work)
        term_self()
        return art

    monkeypatch.setattr(bundle.BundlePlan, "drill", drill)
    code, st, out = jobs.run(paths(conf, state), "drill")
    assert drilled == ["r"]  # the second chain was not started
    assert code == 143 and st["message"] == "terminated by signal 15"
    assert "unexpected" not in out
    # the next drill removes what the stopped one left in its scratch, and passes
    monkeypatch.undo()
    code, st, _ = jobs.run(paths(conf, state), "drill")
    assert code == 0 and st["counts"] == {"restored": 2, "failed": 0}
    assert list((state / "drill").iterdir()) == []


def test_a_signal_during_a_sync_job_puts_the_side_back_and_says_so(pair, tmp_path,
                                                                   monkeypatch):
    remote, desk, lap = pair
    conf, state = tmp_path / "conf", tmp_path / "state"
    (conf / "jobs").mkdir(parents=True)
    (conf / "jobs" / "push.yml").write_text(
        "name: push\ntype: git_sync\noptions:\n"
        f"  repo: {desk}\n  direction: push\n  role: primary\n"
        "  policies: {log.md: append, 'clients/*/tasks.json': block}\n")
    (desk / "notes" / "idea.md").write_text("idea, the user's unsaved work\n")
    (desk / "notes" / "new.md").write_text("a new note\n")
    before = fingerprint(desk)
    remote_before = g(remote, "rev-parse", "main")
    from strongroom import sync

    real = sync._commit_all

    def commit_then_term(s, message):
        made = real(s, message)
        term_self()  # after the commit: the rollback has a commit to take back
        return made

    monkeypatch.setattr(sync, "_commit_all", commit_then_term)
    code, st, _ = jobs.run(paths(conf, state), "push")
    assert code == 143
    assert st["message"].startswith("terminated by signal 15; rolled back to ")
    assert fingerprint(desk) == before  # the user's edits are there, uncommitted
    assert (desk / "notes" / "new.md").read_text() == "a new note\n"
    assert g(remote, "rev-parse", "main") == remote_before
    monkeypatch.undo()
    code, st, _ = jobs.run(paths(conf, state), "push")  # and the next run goes through
    assert code == 0, st["message"]
    assert g(remote, "show", "main:notes/idea.md") == "idea, the user's unsaved work\n"


def test_a_signal_during_a_bundle_run_starts_no_more_repositories(bed, monkeypatch):
    tmp, root, conf, state = bed
    for i in range(5):
        rich_repo(root / f"more{i}")
    (conf / "jobs" / "bundles.yml").write_text(
        f"name: bundles\ntype: bundle\noptions:\n  root: {root}\n  store: {tmp / 'store'}\n"
        "  jobs: 1\n")
    from strongroom import bundles

    started = []
    real = bundles.sync_repo

    def sync_repo(name, *a, **kw):
        started.append(name)
        res = real(name, *a, **kw)
        if len(started) == 1:
            term_self()  # from the worker: the runner's handler runs in the main thread
        return res

    monkeypatch.setattr(bundles, "sync_repo", sync_repo)
    code, st, _ = jobs.run(paths(conf, state), "bundles")
    assert code == 143 and st["message"] == "terminated by signal 15"
    assert len(started) <= 2, started  # the one signalled in, and at most one begun
    monkeypatch.undo()
    code, st, _ = jobs.run(paths(conf, state), "bundles")  # the next run does them all
    assert code == 0 and st["counts"]["repositories"] == 6
