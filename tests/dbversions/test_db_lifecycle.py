"""Database versions over their life: a refused restore or pull changes nothing anywhere,
unchanged content is never uploaded again (CLI backup, the job's hours trigger, the copy a
restore takes first), `keep` counts distinct contents, and `db list` shows sizes. Real
SQLite databases and rclone against a local folder; the CLI is called in-process to keep
each test cheap."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from strongroom.cli import app as cli
from strongroom.core.remote import Rclone
from strongroom.dbversions import DbError, DbSync
from tests.dbversions.test_dbsync import add, make_db, rows


@pytest.fixture
def place(tmp_path):
    conf = tmp_path / "rclone.conf"
    conf.write_text("[local]\ntype = local\n")
    return {"conf": conf, "remote": f"local:{tmp_path / 'remote'}",
            "folder": tmp_path / "remote/backups/casman.db", "state": tmp_path / "state",
            "db": make_db(tmp_path / "app/casman.db")}


def engine(place, db=None, state=None, keep=2, host="alpha"):
    return DbSync(db or place["db"], place["remote"], state or place["state"],
                  Rclone(place["conf"]), keep=keep, host=host)


def main(capsys, place, *args, state=None):
    """The real CLI entry point; returns (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = cli.main([str(a) for a in ("--state-dir", state or place["state"], *args)])
    out, err = capsys.readouterr()
    return code, out, err


def db_args(place, *extra):
    return ["--db", place["db"], "--remote", place["remote"], "--host", "alpha",
            "--rclone-config", place["conf"], *extra]


def seed(place, n=2, keep=2):
    """n versions of n distinct contents, oldest first."""
    d = engine(place, keep=keep)
    made = []
    for i in range(n):
        if i:
            add(place["db"], 1, f"v{i}")
        made.append(d.backup()["key"])
    return d, made


def remote_files(place):
    return {p.name: p.read_bytes() for p in place["folder"].iterdir()}


def local_files(folder):
    return {p.name: p.read_bytes() for p in folder.rglob("*") if p.is_file()
            and not p.name.endswith(".lock")}  # a lock file is runtime, not state


def corrupt(place, key):
    stored = place["folder"] / key
    data = bytearray(stored.read_bytes())
    data[-100] ^= 0xFF
    stored.write_bytes(bytes(data))


def test_a_refused_restore_changes_nothing_anywhere(capsys, place):
    d, (old, new) = seed(place)
    corrupt(place, old)
    add(place["db"], 3, "unsaved")  # local work never backed up: must not be touched
    before = (remote_files(place), local_files(place["db"].parent),
              local_files(place["state"]))
    code, out, err = main(capsys, place, "db", "restore", old, *db_args(place, "--keep", "2"))
    with pytest.raises(DbError) as second:
        d.restore(old)  # a second attempt
    # every version is still there, as it was, and nothing new; the local database and
    # the state are byte for byte what they were
    assert (remote_files(place), local_files(place["db"].parent),
            local_files(place["state"])) == before
    assert d.versions() == [old, new] and rows(place["db"]) == 9
    assert code == 2 and out == ""
    assert f"the download of {old} does not match its metadata" in err
    assert "local database left untouched, nothing uploaded or pruned" in err
    assert "nothing uploaded or pruned" in str(second.value)


def test_a_refused_pull_backs_nothing_up_first(place, tmp_path):
    a, (first,) = seed(place, n=1)
    b = engine(place, db=tmp_path / "b/casman.db", state=tmp_path / "sb", host="beta")
    assert b.sync()["action"] == "pull"  # beta agrees on `first`
    add(a.db, 1, "v1")
    second = a.backup()["key"]
    add(a.db, 1, "v2")
    third = a.backup()["key"]  # `first`, beta's version, is pruned by this one
    corrupt(place, third)
    before = (remote_files(place), local_files(b.db.parent), local_files(tmp_path / "sb"))
    with pytest.raises(DbError, match=f"the download of {third} does not match"):
        b.sync()
    # beta's content is not on the remote any more, yet a refused pull uploads no copy of
    # it: that copy would be the newest version and push alpha's `second` out
    assert (remote_files(place), local_files(b.db.parent), local_files(tmp_path / "sb")) \
        == before
    assert a.versions() == [second, third] and rows(b.db) == 5


def test_a_pull_that_backs_up_first_is_not_undone_by_the_next_sync(place, tmp_path):
    a, (first,) = seed(place, n=1)
    b = engine(place, db=tmp_path / "b/casman.db", state=tmp_path / "sb", host="beta")
    assert b.sync()["action"] == "pull"  # beta agrees on `first`
    for tag in ("v1", "v2"):
        add(a.db, 1, tag)
        a.backup()  # `first`, beta's version, is pruned by the second
    out = b.sync()
    assert out["action"] == "pull" and out["pre_sync_backup"]  # beta's content kept
    assert rows(b.db) == rows(a.db) == 7
    # the copy beta took first is not the newest: nobody pulls it back over alpha's work
    for side in (b, a, b):
        assert side.sync()["action"] in ("none", "adopt")
    assert rows(b.db) == rows(a.db) == 7
    assert a.metadata(out["pre_sync_backup"])["reason"] == "pre-sync"
    assert a.versions()[-1] == out["key"]


def test_unchanged_content_is_uploaded_neither_by_the_cli_nor_by_the_hours_trigger(
        capsys, place, tmp_path):
    d, (old, new) = seed(place)
    held = remote_files(place)
    code, out, _ = main(capsys, place, "db", "backup", *db_args(place, "--keep", "2"))
    assert code == 0
    assert remote_files(place) == held  # nothing new, and the older version is still there
    assert out.strip() == (f"unchanged: the newest version {new} already holds this "
                           "content; nothing uploaded")
    # the scheduled job: 25 hours after the last backup its hours trigger fires
    cfg = tmp_path / "conf"
    (cfg / "jobs").mkdir(parents=True)
    (cfg / "jobs/casman.yml").write_text(
        f"name: casman\ntype: db_backup\nschedule: every 1h\noptions:\n  db: {d.db}\n"
        f"  remote: {place['remote']}\n  rclone_config: {place['conf']}\n  keep: 2\n"
        "  host: alpha\n  hours_threshold: 24\n")
    st = json.loads(d.state_path.read_text())
    then = (datetime.now(UTC) - timedelta(hours=25)).strftime("%Y-%m-%dT%H:%M:%SZ")
    st["last_backup"]["at"] = then
    st.pop("last_check", None)  # as a state file written before such checks were noted
    d.state_path.write_text(json.dumps(st))

    def run():
        assert main(capsys, place, "--config-dir", cfg, "run", "casman")[0] == 0
        return json.loads((place["state"] / "status/casman.json").read_text())

    status = run()
    assert status["changed"] is False
    assert status["message"] == (f"unchanged (25.0 hours since the last backup): the newest "
                                 f"version {new} already holds this content; nothing uploaded")
    assert remote_files(place) == held
    # the check counts: the next run is not due, and looks at the remote no more
    status = run()
    assert status["changed"] is False and status["message"].startswith("not due")
    assert remote_files(place) == held and d.versions() == [old, new]


def test_a_restore_over_content_the_remote_holds_uploads_no_copy_of_it_first(place):
    d, (old, new) = seed(place)
    held = remote_files(place)
    out = d.restore(old)
    now = remote_files(place)
    assert {k: now.get(k) for k in held} == held  # nothing pushed out
    keys = d.versions()
    assert keys[:2] == [old, new] and len(keys) == 3 and out["current"] == keys[-1]
    assert out["pre_restore_backup"] == new  # the newest already held it: no new copy
    assert rows(d.db) == 5


def test_db_list_shows_sizes_without_long(capsys, place):
    d, made = seed(place)
    code, out, _ = main(capsys, place, "db", "list", *db_args(place))
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split() == ["KEY", "SIZE"]
    sizes = {k: (place["folder"] / k).stat().st_size for k in made}
    assert [line.split()[0] for line in lines[1:]] == made
    for line, key in zip(lines[1:], made, strict=True):
        assert line.split()[1:] == [f"{sizes[key] / 1024:.1f}", "KiB"]


def test_a_version_made_while_the_clock_ran_ahead_does_not_stay_the_newest(
        place, monkeypatch):
    from strongroom import dbversions
    d = engine(place)
    real = dbversions._now
    monkeypatch.setattr(dbversions, "_now", lambda: real() + timedelta(days=30))
    ahead = d.backup()["key"]  # 5 rows, made under a clock 30 days ahead
    monkeypatch.setattr(dbversions, "_now", real)
    add(place["db"], 1, "second")
    later = d.backup()["key"]  # 6 rows, made under the right clock
    assert d.versions() == [ahead, later]  # it sorts after every version it saw
    assert d.sync()["action"] == "none" and rows(place["db"]) == 6  # nothing pulled back
    held = remote_files(place)
    assert d.backup()["unchanged"] and remote_files(place) == held  # nothing uploaded
    add(place["db"], 1, "third")
    newest = d.backup()["key"]  # keep 2: the one made ahead is pruned, nothing else
    assert d.versions() == [later, newest] and newest > later
    assert rows(place["db"]) == rows(place["folder"] / newest) == 7
    assert rows(place["folder"] / later) == 6  # every row is still held remotely


def test_files_that_are_no_versions_never_break_the_ordering(place):
    d, (first,) = seed(place, n=1)
    # a name with a time no calendar has is no version; one dated at the end of time is
    for name in ("99999999T999999.999999Z_x_casman.db", "notes.txt"):
        (place["folder"] / name).write_text("not ours\n")
    add(place["db"], 1, "more")
    assert d.versions()[0] == first and d.backup()["key"] in d.versions()
    (place["folder"] / "99991231T235959.999999Z_x_casman.db").write_text("x")
    add(place["db"], 1, "again")
    with pytest.raises(DbError, match="is dated at the end of time; no version can sort"):
        d.backup()
    assert rows(place["db"]) == 7


def damage(place, key, how):
    meta = place["folder"] / (key + ".metadata.json")
    if how == "deleted":
        meta.unlink()
    elif how == "not JSON":
        meta.write_text('{"key": "' + key + '", "sha2')
    else:  # a wrong digest of the file in otherwise sound JSON
        doc = json.loads(meta.read_text())
        meta.write_text(json.dumps(dict(doc, sha256="0" * 64)))


PROBLEM = {"deleted": "is missing", "not JSON": "is not JSON",
           "wrong sha": "gives a sha256 of 000000000000, not the"}


@pytest.mark.parametrize("how", sorted(PROBLEM))
def test_a_newest_version_without_readable_metadata_is_named_and_replaced(
        capsys, place, how):
    d, (old, new) = seed(place)
    damage(place, new, how)
    said = f"version {new} has no readable metadata ({new}.metadata.json {PROBLEM[how]}"
    todo = "a `strongroom db backup` on alpha puts a new, checked version"
    code, out, err = main(capsys, place, "db", "list", "--long", *db_args(place))
    assert code == 1 and said in err and todo in err
    assert [line.split()[0] for line in out.strip().splitlines()[1:]] == [old, new]
    code, out, _ = main(capsys, place, "db", "status", *db_args(place))
    assert code == 1 and said in out and f"that of {old}, the newest version" in out
    code, out, err = main(capsys, place, "db", "restore", new, *db_args(place))
    assert code == 2 and f"cannot restore {new}: {new}.metadata.json {PROBLEM[how]}" in err
    assert rows(place["db"]) == 6 and d.versions() == [old, new]
    # the state agreed on `new`, yet it does not count as holding this content
    code, out, _ = main(capsys, place, "db", "backup", *db_args(place, "--keep", "2"))
    fresh = d.versions()[-1]
    assert code == 0 and fresh not in (old, new)
    assert f"it replaces {new}, which has no readable metadata" in out
    # keep 2 counts versions with readable metadata only: `new` takes no slot, and stays
    # as it is newer than `old`, the oldest readable version kept
    assert d.versions() == [old, new, fresh]
    assert rows(place["folder"] / fresh) == rows(place["db"]) == 6  # no row lost
    code, out, _ = main(capsys, place, "db", "sync", *db_args(place))
    assert (code, out.strip()) == (0, "none: in sync")
    assert main(capsys, place, "db", "status", *db_args(place))[0] == 0


def test_sync_puts_the_agreed_content_back_on_top_and_another_host_keeps_working(
        capsys, place, tmp_path):
    d, (old, new) = seed(place, keep=3)
    b = engine(place, db=tmp_path / "b/casman.db", state=tmp_path / "sb", host="beta")
    damage(place, new, "not JSON")
    # beta never saw `new`: it works from `old`, never pulls the unreadable one, and says so
    out = b.sync()
    assert out["action"] == "pull" and out["head"] == old and out["exit_code"] == 1
    assert f"version {new} has no readable metadata" in out["message"] and rows(b.db) == 5
    # alpha agreed on `new`: its content goes up again, not `old` pulled over it
    code, text, _ = main(capsys, place, "db", "sync", *db_args(place, "--keep", "3"))
    fresh = d.versions()[-1]
    assert code == 0 and text.startswith(f"push: the version last synced ({new}) has no "
                                         "readable metadata")
    assert rows(place["db"]) == rows(place["folder"] / fresh) == 6
    assert d.versions() == [old, new, fresh]
    assert b.sync()["action"] == "pull" and rows(b.db) == 6
    assert d.sync()["action"] == "none"


def restorable(d, key, into):
    """The rows of `key` after the checks a restore makes (download digest, integrity)."""
    return rows(d._fetch(key, into)[0])


def test_unreadable_versions_take_no_keep_slot_and_push_no_restorable_one_out(
        place, tmp_path):
    d, good = seed(place, n=3, keep=3)  # 5, 6, 7 rows
    failed, pruned = [], []
    for i in range(3):  # the copy went up, its metadata did not
        add(place["db"], 1, f"lost{i}")
        made = d.backup()
        failed.append(made["key"])
        pruned += made["pruned"]  # the first one prunes good[0]: its metadata was there
        (place["folder"] / (failed[-1] + ".metadata.json")).unlink()
    add(place["db"], 1, "last")
    out = d.backup()
    # keep 3 counts the readable versions only: out, good[2], good[1]; the unreadable ones
    # take no slot, and stay as they are newer than the oldest readable one kept
    assert pruned + out["pruned"] == [good[0]]
    assert d.versions() == [*good[1:], *failed, out["key"]]
    held = d.listing()
    readable = [k for k in held if d.read_metadata(k, held[k])[0] is not None]
    assert readable == [*good[1:], out["key"]]
    assert [restorable(d, k, tmp_path) for k in readable] == [6, 7, 11] == \
        [6, 7, rows(place["db"])]


def test_sync_does_not_push_over_a_newer_version_of_another_host_it_cannot_read(
        capsys, place, tmp_path):
    a, (a1,) = seed(place, n=1, keep=3)
    b = engine(place, db=tmp_path / "b/casman.db", state=tmp_path / "sb", host="beta",
               keep=3)
    assert b.sync()["action"] == "pull" and rows(b.db) == 5
    add(place["db"], 1, "a2")
    a2 = a.backup()["key"]
    damage(place, a2, "not JSON")
    out = b.sync()
    assert (out["action"], out["exit_code"]) == ("none", 1)
    add(b.db, 1, "b3")
    held = remote_files(place)
    beta = ["--db", b.db, "--remote", place["remote"], "--host", "beta",
            "--rclone-config", place["conf"], "--keep", "3"]
    code, text, _ = main(capsys, place, "db", "sync", *beta, state=tmp_path / "sb")
    assert code == 2 and text.startswith("conflict: both sides may have changed")
    assert f"{a2}, made on alpha, has no readable metadata" in text
    assert "`strongroom db backup` on alpha puts a checked version on top" in text
    assert remote_files(place) == held  # nothing pushed over a2
    assert rows(b.db) == 6 and rows(place["db"]) == 6 and rows(place["folder"] / a2) == 6
    # alpha agreed on a2: its content goes up again, checked, on top
    code, text, _ = main(capsys, place, "db", "sync", *db_args(place, "--keep", "3"))
    top = a.versions()[-1]
    assert code == 0 and text.startswith(f"push: the version last synced ({a2})")
    assert a.versions() == [a1, a2, top] and rows(place["folder"] / top) == 6
    # now beta sees both changes, and still changes nothing
    code, text, _ = main(capsys, place, "db", "sync", *beta, state=tmp_path / "sb")
    assert code == 2 and text.startswith("conflict: both sides changed")
    assert rows(b.db) == 6 and rows(place["db"]) == 6 and a.versions() == [a1, a2, top]


def test_a_pull_that_backs_up_first_names_that_backup_and_warns(capsys, place, tmp_path):
    a, (a1,) = seed(place, n=1, keep=3)
    b = engine(place, db=tmp_path / "b/casman.db", state=tmp_path / "sb", host="beta",
               keep=3)
    assert b.sync()["action"] == "pull"
    damage(place, a1, "not JSON")  # the version both agreed on
    add(b.db, 1, "b2")
    out = b.sync()  # a1 is beta's own agreed version: no conflict, its work goes on top
    assert out["action"] == "push" and rows(place["folder"] / out["key"]) == 6
    code, text, _ = main(capsys, place, "db", "sync", *db_args(place, "--keep", "3"))
    pre = next(k for k in a.versions() if a.read_metadata(k)[0] and
               a.metadata(k)["reason"] == "pre-sync")
    assert code == 1 and text.startswith("pull: a newer version on the remote")
    assert f"backed up first as {pre}" in text and f"`strongroom db restore {pre}`" in text
    assert rows(place["db"]) == 6 and rows(place["folder"] / pre) == 5  # no row lost
