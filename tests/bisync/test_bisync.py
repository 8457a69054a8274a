"""bisync jobs with real rclone bisync between a folder and a local-folder remote."""

import json
import os

from strongroom.core.lock import Lock
from tests.helpers import strongroom


def setup(tmp_path, extra=""):
    local, other = tmp_path / "local", tmp_path / "remote"
    local.mkdir()
    other.mkdir()
    conf, state = tmp_path / "conf", tmp_path / "state"
    (conf / "jobs").mkdir(parents=True)
    rc = tmp_path / "rclone.conf"
    rc.write_text("[managed]\ntype = local\n")
    (conf / "jobs/docs.yml").write_text(
        f"name: docs\ntype: bisync\nschedule: every 30m\noptions:\n  local: {local}\n"
        f"  remote: managed:{other}\n  rclone_config: {rc}\n{extra}")
    return local, other, ["--config-dir", conf, "--state-dir", state], state


def files(d):
    return {p.relative_to(d).as_posix(): p.read_text() for p in d.rglob("*") if p.is_file()}


def status(state):
    return json.loads((state / "status/docs.json").read_text())


def test_first_run_resyncs_then_changes_flow_both_ways_and_conflicts_keep_both(tmp_path):
    local, other, base, state = setup(tmp_path)
    for i in range(6):
        (local / f"note{i}.md").write_text(f"note {i}\n")
    (other / "from-cloud.md").write_text("cloud\n")
    strongroom(*base, "run", "docs", check=0)
    assert status(state)["bisync"]["resync"] is True
    assert files(local) == files(other) and "from-cloud.md" in files(local)
    assert "RCLONE_TEST" in files(other)  # the access marker went across
    (local / "note1.md").write_text("edited here\n")
    (other / "note2.md").write_text("edited there\n")
    (local / "note0.md").unlink()
    strongroom(*base, "run", "docs", check=0)
    s = status(state)
    assert s["bisync"]["resync"] is False and s["changed"] is True
    assert files(other)["note1.md"] == "edited here\n"
    assert files(local)["note2.md"] == "edited there\n"
    assert "note0.md" not in files(other)
    (local / "note3.md").write_text("mine\n")
    (other / "note3.md").write_text("theirs\n")
    strongroom(*base, "run", "docs", check=1)
    s = status(state)
    assert s["bisync"]["conflicts"] == ["note3.md"] and "conflict" in s["message"]
    for side in (local, other):
        got = files(side)
        assert got["note3.md..path1"] == "mine\n" and got["note3.md..path2"] == "theirs\n"


def test_a_mass_deletion_is_stopped_with_nothing_deleted(tmp_path):
    local, other, base, state = setup(tmp_path, "  max_delete: 50\n")
    for i in range(10):
        (local / f"f{i}.txt").write_text(f"{i}\n")
    strongroom(*base, "run", "docs", check=0)
    for i in range(7):
        (local / f"f{i}.txt").unlink()
    strongroom(*base, "run", "docs", check=2)
    msg = status(state)["message"]
    assert "bisync stopped: more than 50% of the files would be deleted" in msg, msg
    assert f"in {local}" in msg and "nothing was deleted" in msg
    assert len([n for n in files(other) if n.startswith("f")]) == 10
    # the owner says it is intended: --force lets this one run through
    proc = strongroom(*base, "bisync", "--job", "docs", "--force", check=0)
    assert proc.stdout.startswith("bisync: ")
    assert sorted(n for n in files(other) if n.startswith("f")) == ["f7.txt", "f8.txt",
                                                                    "f9.txt"]


def test_a_missing_marker_stops_the_run_and_one_run_at_a_time(tmp_path):
    local, other, base, state = setup(tmp_path)
    (local / "a.md").write_text("a\n")
    strongroom(*base, "run", "docs", check=0)
    os.unlink(other / "RCLONE_TEST")  # the remote side looks unmounted or emptied
    (local / "b.md").write_text("b\n")
    strongroom(*base, "run", "docs", check=2)
    msg = status(state)["message"]
    assert "the RCLONE_TEST marker is missing on one side" in msg and "--resync" in msg
    assert files(other) == {"a.md": "a\n"}
    lock = Lock(state / "bisync/docs/bisync.lock", "test").acquire()
    try:
        proc = strongroom(*base, "bisync", "--job", "docs", "--resync", check=11)
        assert "is locked by PID" in proc.stderr
    finally:
        lock.release()
    (other / "RCLONE_TEST").write_text("back\n")
    proc = strongroom(*base, "bisync", "--job", "docs", "--resync", check=0)
    assert proc.stdout.startswith("resync:")
    assert files(other)["b.md"] == "b\n"
