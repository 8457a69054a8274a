"""Restore drills (job type restore_drill and `strongroom drill`) on real chains."""

import json

from tests.helpers import commit, rich_repo, strongroom
from tests.notify.test_notify import CANARY, Receiver, write_targets


def sr(conf, state, *args, check=None):
    return strongroom("--config-dir", conf, "--state-dir", state, *args, check=check)


def setup_jobs(tmp, root, conf, drill_options="  source: both\n"):
    (conf / "jobs" / "bundles.yml").write_text(
        f"name: bundles\ntype: bundle_sync\nschedule: daily 01:00\noptions:\n"
        f"  root: {root}\n  store: {tmp / 'store'}\n  remote: {tmp / 'remote'}\n")
    (conf / "jobs" / "drill.yml").write_text(
        "name: drill\ntype: restore_drill\nschedule: weekly sun 04:30\noptions:\n"
        + drill_options)


def status_of(state, name):
    return json.loads((state / "status" / f"{name}.json").read_text())


def test_a_drill_restores_every_chain_locally_and_from_the_remote(bed):
    tmp, root, conf, state = bed
    rich_repo(root / "second")
    setup_jobs(tmp, root, conf)
    sr(conf, state, "run", "bundles", check=0)
    proc = sr(conf, state, "run", "drill", check=0)
    assert "4 of 4 restores passed" in proc.stdout
    st = status_of(state, "drill")
    assert st["result"] == "ok" and st["counts"] == {"restored": 4, "failed": 0}
    got = {(a["name"], a["source"]): a for a in st["artifacts"]}
    assert set(got) == {("r", "local"), ("r", "remote"), ("second", "local"),
                        ("second", "remote")}
    for a in got.values():
        assert a["result"] == "ok" and a["refs"] == 6 and a["duration_seconds"] > 0
        assert "refs match the manifest, fsck --full --strict clean" in a["message"]
    assert list((state / "drill").iterdir()) == []  # scratch removed


def test_a_drill_catches_a_corrupted_bundle_notifies_and_touches_nothing(bed):
    tmp, root, conf, state = bed
    rich_repo(root / "second")
    setup_jobs(tmp, root, conf, "  source: local\n")
    receiver = Receiver()
    try:
        write_targets(conf, receiver.port, ntfy_sev="warning")
        sr(conf, state, "run", "bundles", check=0)
        receiver.requests.clear()
        (bundle,) = (tmp / "store" / "second").glob("full-*.bundle")
        data = bytearray(bundle.read_bytes())
        data[len(data) // 2] ^= 0xFF
        bundle.write_bytes(bytes(data))
        before = {p: p.read_bytes() for p in (tmp / "store").rglob("*") if p.is_file()
                  and not p.name.startswith(".strongroom.lock")}
        proc = sr(conf, state, "run", "drill", check=2)
        assert "1 of 2 restores FAILED: bundles/second (local)" in proc.stdout
        assert "does not match its recorded SHA-256 (damaged)" in proc.stdout
        st = status_of(state, "drill")
        assert st["result"] == "error" and st["counts"] == {"restored": 1, "failed": 1}
        assert [(a["name"], a["result"]) for a in st["artifacts"]] == [
            ("r", "ok"), ("second", "error")]
        # the drill repairs nothing and deletes nothing: the evidence stays as it was
        after = {p: p.read_bytes() for p in (tmp / "store").rglob("*") if p.is_file()
                 and not p.name.startswith(".strongroom.lock")}
        assert after == before
        assert list((state / "drill").iterdir()) == []
        ntfy = [json.loads(r["body"]) for r in receiver.requests if r["path"] == "/"]
        (msg,) = ntfy
        assert "restore drill FAILED" in msg["title"] and msg["title"].startswith("[ERROR]")
        # each restore: its kind, source, result and RTO
        assert "- bundle_chain bundles/second from local: error, RTO " in msg["message"]
        assert "- bundle_chain bundles/r from local: ok, RTO " in msg["message"]
        hook = [json.loads(r["body"]) for r in receiver.requests if r["path"] != "/"]
        assert hook == []  # the webhook only wants job_failed and job_recovered
        assert st["notifications"] == [{"target": "phone", "event": "drill_failed",
                                         "severity": "error", "delivered": True}]
        assert CANARY not in proc.stdout + proc.stderr
    finally:
        receiver.close()


def test_a_remote_drill_proves_the_off_site_copy_not_the_local_store(bed):
    tmp, root, conf, state = bed
    setup_jobs(tmp, root, conf, "  source: remote\n")
    sr(conf, state, "run", "bundles", check=0)
    commit(root / "r", {"more.txt": "more\n"})
    sr(conf, state, "run", "bundles", check=0)
    (incremental,) = (tmp / "remote" / "r").glob("incremental-*.bundle")
    incremental.unlink()  # lost off-site; the local store still has it
    proc = sr(conf, state, "run", "drill", check=2)
    assert "bundles/r (remote)" in proc.stdout and incremental.name in proc.stdout
    assert (tmp / "store" / "r" / incremental.name).exists()
    assert not (tmp / "remote" / "r" / incremental.name).exists()  # nothing re-uploaded
    # the same chain drilled from the local store passes
    assert "1 of 1 restores passed" in sr(conf, state, "drill", "--job", "bundles",
                                          check=0).stdout


def test_a_drill_with_nothing_to_test_is_a_warning_not_a_pass(bed):
    tmp, root, conf, state = bed
    receiver = Receiver()
    try:
        write_targets(conf, receiver.port, ntfy_sev="warning")
        (conf / "jobs" / "drill.yml").write_text(
            "name: drill\ntype: restore_drill\nschedule: weekly sun 04:30\n")
        proc = sr(conf, state, "run", "drill", check=1)
        assert "nothing to test" in proc.stdout
        st = status_of(state, "drill")
        assert st["result"] == "warning" and st["artifacts"] == []
        (req,) = receiver.requests
        body = json.loads(req["body"])
        assert body["title"].startswith("[WARNING]") and "restore drill FAILED" in body["title"]
        assert "nothing to test" in body["message"]
    finally:
        receiver.close()


def test_drill_refuses_bad_options_and_a_scratch_inside_a_store(bed):
    tmp, root, conf, state = bed
    setup_jobs(tmp, root, conf, "  source: sideways\n")
    proc = sr(conf, state, "run", "drill", check=2)
    assert "key 'options.source' has value 'sideways'; expected one of: local, remote, both" \
        in proc.stderr
    setup_jobs(tmp, root, conf, "  jobs: [nope]\n")
    proc = sr(conf, state, "run", "drill", check=2)
    assert "no job named 'nope'" in proc.stdout
    setup_jobs(tmp, root, conf, f"  scratch: {tmp / 'store' / 'scratch'}\n")
    sr(conf, state, "run", "bundles", check=0)
    proc = sr(conf, state, "run", "drill", check=2)
    assert "overlaps bundle store" in proc.stdout
    assert not (tmp / "store" / "scratch").exists()
    proc = sr(conf, state, "drill", "--store", tmp / "store", "--source", "remote", check=2)
    assert "--source remote needs --remote" in proc.stderr


def test_a_killed_drills_scratch_is_cleaned_by_the_next_one(bed):
    tmp, root, conf, state = bed
    setup_jobs(tmp, root, conf, "  source: local\n")
    sr(conf, state, "run", "bundles", check=0)
    left = state / "drill" / "drill-99999-0" / "repo"
    left.mkdir(parents=True)
    (left / "big").write_bytes(b"x" * 1000)
    mine = state / "drill" / "keep-me"
    mine.mkdir()
    sr(conf, state, "run", "drill", check=0)
    assert sorted(p.name for p in (state / "drill").iterdir()) == ["keep-me"]


def test_a_store_locked_past_the_wait_is_that_jobs_error_and_the_others_still_drill(bed):
    from strongroom.core.lock import Lock
    from tests.drill.test_drill_snapshot import snapshot_job

    tmp, root, conf, state = bed
    setup_jobs(tmp, root, conf, "  source: local\n")
    sr(conf, state, "run", "bundles", check=0)
    snapshot_job(tmp, conf, remote=False)
    sr(conf, state, "run", "snap", check=0)
    with Lock(tmp / "store" / ".strongroom.lock", "bundle store").acquire(0):  # a long sync
        proc = sr(conf, state, "drill", "--wait", "0", "--json", check=2)
    got = [(a["kind"], a["name"], a["source"], a["result"])
           for a in json.loads(proc.stdout)["artifacts"]]
    assert got[0] == ("bundle_chain", "*", "local", "error")
    assert [g[0::3] for g in got[1:]] == [("snapshot", "ok")]
    assert f"bundle store {tmp / 'store'} is locked by PID" in proc.stdout
    assert list((state / "drill").iterdir()) == []
