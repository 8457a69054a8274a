"""Every retention rule keeps the newest artifact by when it was made, never by its name:
snapshots, checkpoints and retired bundle chains, with clocks put back, ties, artifacts
from the future, a failed verification and a hand-deleted folder. (Restic's rule is in
test_restic.py.)"""

import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from strongroom import bundles, checkpoints, snapshots
from strongroom.bundles import chain
from tests.helpers import commit, g, init, refs


def stamp(when):
    return when.strftime("%Y%m%d-%H%M%S")


def one_snapshot(tmp_path):
    src = tmp_path / "project"
    src.mkdir()
    (src / "notes.txt").write_text("the latest notes\n")
    dest = tmp_path / "snaps"
    rep = snapshots.create(src, dest, immutable="off")
    return dest, rep["id"]


def copy_as(dest, snap_id, new_id, mtime_ns=None):
    """A copy of a real snapshot under another id (made at another time, or on another
    commit); with mtime_ns, the folder's own time says when it was made."""
    shutil.copytree(dest / snap_id, dest / new_id)
    if mtime_ns is not None:
        os.utime(dest / new_id, ns=(mtime_ns, mtime_ns))
    return new_id


# --- snapshots ---------------------------------------------------------------------------


def test_a_snapshot_made_after_the_clock_was_put_back_is_kept(tmp_path):
    dest, made = one_snapshot(tmp_path)  # made now, with a clock put back
    now = snapshots.parse_id(made)
    sha = made.rsplit("-", 1)[1]
    # taken while the clock ran ahead: dated after now
    ahead = [copy_as(dest, made, f"{stamp(now + timedelta(days=d))}-{sha}") for d in (3, 4)]
    old = copy_as(dest, made, f"{stamp(now - timedelta(days=9))}-{sha}")
    out = snapshots.prune(dest, keep_last=1, keep_days=0, now=now + timedelta(seconds=5))
    assert out["deleted"] == [old] and out["problems"] == []
    assert sorted(out["kept"]) == sorted([made, *ahead])
    assert snapshots.snapshot_ids(dest) == sorted([made, *ahead])
    assert snapshots.verify(dest, made)["passed"]  # intact, and it restores
    assert (dest / made / "REPORT.json").is_file()


def test_of_one_second_the_snapshot_made_later_is_the_newest(tmp_path):
    dest, made = one_snapshot(tmp_path)
    when = snapshots.parse_id(made) + timedelta(days=1)
    base = int(when.timestamp()) * 10**9
    # one second, two commits: the id of the later one sorts first ("aaa" < "fff")
    first = copy_as(dest, made, f"{stamp(when)}-fffffff", mtime_ns=base + 100_000_000)
    later = copy_as(dest, made, f"{stamp(when)}-aaaaaaa", mtime_ns=base + 900_000_000)
    out = snapshots.prune(dest, keep_last=1, keep_days=0, now=when + timedelta(days=30))
    assert out["kept"] == [later] and sorted(out["deleted"]) == sorted([made, first])
    assert snapshots.verify(dest, later)["passed"]


def test_the_last_snapshot_verified_good_is_kept_when_newer_ones_fail(tmp_path):
    dest, good = one_snapshot(tmp_path)
    sha = good.rsplit("-", 1)[1]
    when = snapshots.parse_id(good)
    assert snapshots.verify(dest, good)["passed"]
    newer = [copy_as(dest, good, f"{stamp(when + timedelta(days=d))}-{sha}") for d in (1, 2)]
    for snap_id in newer:  # damaged since: their checks fail
        (dest / snap_id / "slipped-in.txt").write_text("x\n")
        assert not snapshots.verify(dest, snap_id)["passed"]
    out = snapshots.prune(dest, keep_last=1, keep_days=0, now=when + timedelta(days=30))
    assert out["deleted"] == [newer[0]] and out["kept"] == [good, newer[1]]
    assert snapshots.verify(dest, good)["passed"]  # the last one known to restore


# --- checkpoints -------------------------------------------------------------------------


def work_tree(tmp_path):
    repo = init(tmp_path / "work")
    commit(repo, {"a.txt": "start\n"}, "start")
    return repo, tmp_path / "ckpts"


def test_the_checkpoint_saved_while_the_clock_was_behind_is_kept(tmp_path):
    repo, dest = work_tree(tmp_path)
    now = datetime.now(UTC).replace(microsecond=0)
    for days, text in ((2, "two days ago\n"), (1, "yesterday\n")):
        (repo / "a.txt").write_text(text)
        checkpoints.save(repo, dest, now=now - timedelta(days=days))
    (repo / "a.txt").write_text("the latest work\n")
    latest = checkpoints.save(repo, dest, now=now - timedelta(days=40))  # clock behind
    out = checkpoints.prune(dest, 14, now=now)
    assert out == {"deleted": [], "kept": 3}
    folder = Path(latest["path"])
    assert checkpoints.verify(folder) == []
    assert (folder / "files" / "a.txt").read_text() == "the latest work\n"
    # the tree unchanged since: no newer checkpoint, and the latest work still stays
    assert not checkpoints.save(repo, dest, now=now)["saved"]
    assert checkpoints.prune(dest, 0.5, now=now + timedelta(days=1))["kept"] == 2
    assert folder.is_dir()


def test_of_one_second_the_last_checkpoint_made_is_the_newest(tmp_path):
    repo, dest = work_tree(tmp_path)
    when = datetime.now(UTC).replace(microsecond=0) - timedelta(days=5)
    for i in range(11):  # ckpt-<time>, -2, ..., -11: by name, -10 and -11 sort before -2
        (repo / "a.txt").write_text(f"edit {i}\n")
        last = checkpoints.save(repo, dest, now=when)
    assert last["name"].endswith("-11")
    (dest / checkpoints.PROGRESS / checkpoints.LAST).unlink()  # the record lost
    out = checkpoints.prune(dest, 1, now=when + timedelta(days=5))
    assert len(out["deleted"]) == 10 and out["kept"] == 1
    (left,) = [f for _, f in checkpoints.checkpoints(dest)]
    assert left.name == last["name"] and checkpoints.verify(left) == []
    assert (left / "files" / "a.txt").read_text() == "edit 10\n"


# --- retired bundle chains ---------------------------------------------------------------


def chained(tmp_path):
    root, store = tmp_path / "root", tmp_path / "store"
    src = init(root / "r")
    commit(src, {"f": "1\n"})
    return root, store, src


def sync_full(root, store, now, src, text, keep_retired=1):
    commit(src, {"f": text})
    opts = bundles.Options(critical_patterns=[], jobs=1, force_full=True, keep_retired=keep_retired)
    (res,), code = bundles.sync(root, store, opts, now=now)
    assert code == 0 and res.action == "full", res.message
    return res


def retired(store):
    return chain.load(store / "r", check_files=False)["retired"]


def test_the_chain_retired_last_is_kept_whatever_the_clock_said(tmp_path):
    root, store, src = chained(tmp_path)
    t0 = chain.utcnow()
    bundles.sync(root, store, bundles.Options(critical_patterns=[], jobs=1), now=t0)
    first = chain.load(store / "r")["chain_id"]
    sync_full(root, store, t0 - timedelta(days=3), src, "2\n")  # the clock put back
    second = chain.load(store / "r")["chain_id"]
    assert second < first  # by name the newer chain is the older
    res = sync_full(root, store, t0 - timedelta(days=6), src, "3\n")
    assert res.notes == [f"pruned retired chain {first}"]
    (rec,) = retired(store)
    assert rec["chain_id"] == second
    kept = store / "r" / rec["path"]
    old = chain.load(kept)  # the retired chain is whole: every file there, sizes right
    assert old["chain_id"] == second
    assert not bundles.damaged_files(kept, old, write=False)
    out = tmp_path / "out"
    out.mkdir()
    bundles.rebuild(store, "r", out, bundles.Options(critical_patterns=[]))
    assert refs(out) == refs(src) and g(out, "show", "HEAD:f") == "3\n"


def test_a_retired_chain_is_never_deleted_through_a_stale_record(tmp_path):
    root, store, src = chained(tmp_path)
    now = chain.utcnow()  # a clock that stood still: chains of one second
    bundles.sync(root, store, bundles.Options(critical_patterns=[], jobs=1), now=now)
    sync_full(root, store, now, src, "2\n", keep_retired=2)
    (gone,) = retired(store)
    shutil.rmtree(store / "r" / gone["path"])  # deleted by hand; its record stays
    sync_full(root, store, now, src, "3\n", keep_retired=2)
    # the third chain takes the first one's freed name: retired, it must not take the
    # first one's folder too, or pruning that record deletes it
    sync_full(root, store, now, src, "4\n", keep_retired=2)
    recs = retired(store)
    assert len(recs) == 2
    for rec in recs:
        kept = store / "r" / rec["path"]
        old = chain.load(kept)  # whole: every file there, sizes and hashes right
        assert not bundles.damaged_files(kept, old, write=False)
    assert gone["path"] not in [r["path"] for r in recs]
    out = tmp_path / "out"
    out.mkdir()
    bundles.rebuild(store, "r", out, bundles.Options(critical_patterns=[]))
    assert refs(out) == refs(src)
