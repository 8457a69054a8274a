"""library/immutable_snapshot.py through main(): changed, check mode, failures."""

import json
import os

import immutable_snapshot
import pytest

from strongroom import snapshots
from tests.modules import harness
from tests.snapshots.test_snapshots import make_source


def ok(args, **kw):
    return harness.ok(immutable_snapshot.main, args, **kw)


def failed(args, **kw):
    return harness.failed(immutable_snapshot.main, args, **kw)


def test_present_check_mode_takes_nothing_then_min_age_makes_a_rerun_no_change(tmp_path):
    src, dest = make_source(tmp_path), tmp_path / "snaps"
    args = {"source": str(src), "dest": str(dest), "critical": ["*.md"],
            "db": ["data/app.db"], "min_age_hours": 20}
    res = ok(args, check_mode=True)
    assert res["changed"] is True and snapshots.snapshot_ids(dest) == []
    res = ok(args)
    assert res["changed"] is True and snapshots.snapshot_ids(dest) == [res["id"]]
    assert res["report"]["counts"]["databases"] == 1
    expected = "yes" if os.geteuid() == 0 else "no"
    assert res["immutable"] == expected
    again = ok(args)
    assert again["changed"] is False and again["id"] == res["id"]
    assert ok(args, check_mode=True)["changed"] is False


def test_verified_passes_then_fails_naming_the_damage(tmp_path):
    src, dest = make_source(tmp_path), tmp_path / "snaps"
    snap = ok({"source": str(src), "dest": str(dest), "critical": ["*.md"],
               "immutable": "off"})["id"]
    res = ok({"dest": str(dest), "state": "verified"})
    assert res["changed"] is False and res["results"][0]["passed"] is True
    (dest / snap / "critical/docs/plan.md").write_text("tampered\n")
    res = failed({"dest": str(dest), "state": "verified"})
    assert res["msg"] == f"{snap}: critical/docs/plan.md: checksum mismatch"
    res = failed({"dest": str(tmp_path / "empty"), "state": "verified"})
    assert res["msg"] == f"no snapshots in {tmp_path / 'empty'} to verify"


@pytest.mark.skipif(os.geteuid() != 0, reason="prune of immutable snapshots needs root")
def test_pruned_is_honest_in_both_modes(tmp_path):
    src, dest = make_source(tmp_path), tmp_path / "snaps"
    first = ok({"source": str(src), "dest": str(dest)})["id"]
    second = ok({"source": str(src), "dest": str(dest)})["id"]
    args = {"dest": str(dest), "state": "pruned", "keep_last": 1, "keep_days": 0}
    res = ok(args, check_mode=True)
    assert res == {"changed": True, "deleted": [first], "kept": [second]}
    assert snapshots.snapshot_ids(dest) == [first, second]
    assert ok(args)["deleted"] == [first]
    assert snapshots.snapshot_ids(dest) == [second]
    assert snapshots.immutability_of(dest / second) == "yes"
    assert ok(args)["changed"] is False
    res = failed({**args, "keep_last": 0})
    assert "--keep-last must be at least 1" in res["msg"]


def test_present_needs_a_source_and_refuses_a_missing_one(tmp_path):
    res = failed({"dest": str(tmp_path / "snaps")})
    assert res["msg"] == "source is required with state=present"
    res = failed({"dest": str(tmp_path / "snaps"), "source": str(tmp_path / "nope")})
    assert res["msg"] == f"source {tmp_path / 'nope'} is not a directory"


def test_verified_in_check_mode_records_nothing(tmp_path):
    src, dest = make_source(tmp_path), tmp_path / "snaps"
    snap = ok({"source": str(src), "dest": str(dest), "critical": ["*.md"],
               "immutable": "off"})["id"]
    record = dest / ".strongroom" / "verified.json"
    before = harness.tree_state(tmp_path)
    res = ok({"dest": str(dest), "state": "verified"}, check_mode=True)
    assert res["changed"] is False and res["results"][0]["passed"] is True
    assert harness.tree_state(tmp_path) == before and not record.exists()
    # a real run records the verdict (what `backup list` and pruning read) ...
    ok({"dest": str(dest), "state": "verified"})
    assert json.loads(record.read_text())[snap]["result"] == "ok"
    # ... and a check-mode run leaves that record as it was, a failing verdict included
    (dest / snap / "critical/docs/plan.md").write_text("tampered\n")
    before = harness.tree_state(tmp_path)
    res = failed({"dest": str(dest), "state": "verified"}, check_mode=True)
    assert "checksum mismatch" in res["msg"]
    assert harness.tree_state(tmp_path) == before
    assert json.loads(record.read_text())[snap]["result"] == "ok"
