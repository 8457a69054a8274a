"""Faults a restore drill must catch and survive: bad bytes and missing objects on the
remote, an unreachable remote, a drill killed midway, a damaged database. Each names what
failed, leaves the backups and the remote exactly as they were, and leaves no scratch."""

import json
import os
import signal
import subprocess
import time

from strongroom import snapshots
from strongroom.bundles import chain
from tests.drill.test_drill import setup_jobs, sr, status_of
from tests.drill.test_drill_snapshot import (
    drill_job,
    files_of,
    rewrite_sum,
    snapshot_job,
)
from tests.helpers import ENV, VENV_BIN, commit


def flip(path, at=None):
    """One byte changed, the size kept: only a hash can tell."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if at is None else at] ^= 0xFF
    path.write_bytes(bytes(data))


def everything(tmp):
    """What a drill must never change: every backup and every off-site copy."""
    return {name: files_of(tmp / name) for name in ("store", "remote", "snaps", "offsite")
            if (tmp / name).exists()}


def by_source(state):
    return {(a["kind"], a["source"]): a for a in status_of(state, "drill")["artifacts"]}


def test_a_flipped_byte_in_a_remote_snapshot_fails_only_the_remote_restore(bed):
    tmp, _, conf, state = bed
    snapshot_job(tmp, conf)
    sr(conf, state, "run", "snap", check=0)
    (snap_id,) = snapshots.snapshot_ids(tmp / "snaps")
    flip(tmp / "offsite" / snap_id / "full.tar.zst")
    drill_job(conf, "  source: both\n")
    before = everything(tmp)
    proc = sr(conf, state, "run", "drill", check=2)
    assert (f"1 of 2 restores FAILED: snap/{snap_id} (remote): full.tar.zst in "
            f"{snap_id} does not match its checksum; nothing was restored") in proc.stdout
    got = by_source(state)
    assert got[("snapshot", "local")]["result"] == "ok"
    assert got[("snapshot", "remote")]["result"] == "error"
    assert everything(tmp) == before
    assert list((state / "drill").iterdir()) == []


def test_a_deleted_remote_object_is_named(bed):
    tmp, _, conf, state = bed
    snapshot_job(tmp, conf)
    sr(conf, state, "run", "snap", check=0)
    (snap_id,) = snapshots.snapshot_ids(tmp / "snaps")
    (tmp / "offsite" / snap_id / "REPORT.json").unlink()
    drill_job(conf, "  source: remote\n")
    before = everything(tmp)
    proc = sr(conf, state, "run", "drill", check=2)
    assert (f"REPORT.json of snapshot {snap_id} is missing; without it the databases cannot "
            "be put back, so nothing was restored") in proc.stdout
    assert everything(tmp) == before
    assert not (tmp / "offsite" / snap_id / "REPORT.json").exists()  # nothing re-uploaded
    assert list((state / "drill").iterdir()) == []


def test_a_damaged_superseded_ref_manifest_on_the_remote_fails_the_remote_drill(bed):
    tmp, root, conf, state = bed
    setup_jobs(tmp, root, conf)
    sr(conf, state, "run", "bundles", check=0)
    commit(root / "r", {"more.txt": "more\n"})
    sr(conf, state, "run", "bundles", check=0)
    manifest = json.loads((tmp / "store" / "r" / chain.MANIFEST).read_text())
    first, last = manifest["bundles"][0]["refs_file"], manifest["bundles"][-1]["refs_file"]
    assert first != last  # the first one is superseded: a restore today reads only the last
    flip(tmp / "remote" / "r" / first)
    before = everything(tmp)
    proc = sr(conf, state, "run", "drill", check=2)
    assert (f"1 of 2 restores FAILED: bundles/r (remote): r: {first} from the "
            "remote does not match its recorded SHA-256; refusing it") in proc.stdout
    got = by_source(state)
    assert got[("bundle_chain", "local")]["result"] == "ok"
    assert "every ref manifest of the chain (2) intact" in \
        got[("bundle_chain", "local")]["message"]
    assert everything(tmp) == before
    assert list((state / "drill").iterdir()) == []


def test_an_unreachable_remote_is_that_jobs_error_and_the_others_still_drill(bed):
    tmp, root, conf, state = bed
    setup_jobs(tmp, root, conf)
    sr(conf, state, "run", "bundles", check=0)
    snapshot_job(tmp, conf)
    sr(conf, state, "run", "snap", check=0)
    job = conf / "jobs" / "snap.yml"
    # a remote whose rclone remote is not configured at all
    job.write_text(job.read_text().replace(f"remote: {tmp / 'offsite'}", "remote: gone:snaps"))
    before = everything(tmp)
    proc = sr(conf, state, "run", "drill", check=2)
    got = by_source(state)
    assert got[("snapshot", "remote")]["name"] == "*"
    assert got[("snapshot", "remote")]["message"].startswith(
        "cannot list the snapshots on gone:snaps: rclone lsf failed")
    assert "snap/* (remote): cannot list the snapshots on gone:snaps" in proc.stdout
    assert [a["result"] for k, a in got.items() if k != ("snapshot", "remote")] == \
        ["ok", "ok", "ok"]
    # a local-folder remote whose folder is gone
    job.write_text(job.read_text().replace("remote: gone:snaps", f"remote: {tmp / 'moved'}"))
    proc = sr(conf, state, "run", "drill", check=2)
    assert (f"snap/* (remote): cannot list the snapshots on {tmp / 'moved'}: "
            "rclone lsf failed (exit 3: directory not found)") in proc.stdout
    assert sum(a["result"] == "ok" for a in by_source(state).values()) == 3
    assert everything(tmp) == before
    assert not (tmp / "moved").exists()
    assert list((state / "drill").iterdir()) == []


def test_a_damaged_local_database_fails_its_integrity_check_by_name(bed):
    """The copy damaged and its SHA256SUMS line rewritten with it: only integrity_check
    can tell now."""
    tmp, _, conf, state = bed
    snapshot_job(tmp, conf, remote=False)
    sr(conf, state, "run", "snap", check=0)
    (snap_id,) = snapshots.snapshot_ids(tmp / "snaps")
    folder = tmp / "snaps" / snap_id
    db = folder / "db/data/app.db"
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    data[page:page + 8] = b"\xff" * 8  # the table's b-tree page header
    db.write_bytes(bytes(data))
    rewrite_sum(folder, "db/data/app.db")
    drill_job(conf, "  source: local\n")
    before = everything(tmp)
    proc = sr(conf, state, "run", "drill", check=2)
    assert f"snap/{snap_id} (local): db/data/app.db in {snap_id} fails " \
           "integrity_check (" in proc.stdout
    assert everything(tmp) == before
    assert list((state / "drill").iterdir()) == []


def test_a_drill_killed_midway_is_cleaned_up_by_the_next_one(bed):
    tmp, _, conf, state = bed
    src = snapshot_job(tmp, conf, remote=False)
    (src / "media/huge.bin").write_bytes(os.urandom(48 << 20))  # a restore that takes a while
    sr(conf, state, "run", "snap", check=0)
    before = everything(tmp)
    scratch = state / "drill"
    proc = subprocess.Popen([str(VENV_BIN / "strongroom"), "--config-dir", str(conf),
                             "--state-dir", str(state), "drill", "--job", "snap"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    mine = f"drill-{proc.pid}-"
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:  # until it is restoring: its scratch has a tree
            work = [p for p in scratch.glob(mine + "*")] if scratch.exists() else []
            if any(any(w.iterdir()) for w in work if w.is_dir()):
                break
            time.sleep(0.005)  # a poll, not a timing: the loop ends on what it sees
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    left = [p.name for p in scratch.iterdir()]
    assert left and all(n.startswith(mine) for n in left)  # killed while restoring
    out = sr(conf, state, "drill", "--job", "snap", "--json", check=0)
    assert json.loads(out.stdout)["artifacts"][0]["result"] == "ok"
    assert list(scratch.iterdir()) == []
    assert everything(tmp) == before
    marks = tmp / "snaps" / ".in-use"
    assert not marks.exists() or list(marks.iterdir()) == []
