"""library/db_backup.py through main(): check mode, honest changed, conflicts."""

import json

import db_backup

from tests.dbversions.test_dbsync import add, make_db, rows
from tests.modules import harness


def ok(args, **kw):
    return harness.ok(db_backup.main, args, **kw)


def failed(args, **kw):
    return harness.failed(db_backup.main, args, **kw)


def test_backup_only_when_the_content_changed_and_check_mode_writes_nothing(tmp_path,
                                                                            remotes):
    dbfile = make_db(tmp_path / "app.db")
    args = {"db": str(dbfile), "remote": remotes["local"], "host": "alpha",
            "state_dir": str(tmp_path / "state"), "rclone_config": str(remotes["conf"])}
    res = ok(args, check_mode=True)
    assert res["changed"] is True and not (tmp_path / "remote").exists()
    res = ok(args)
    assert res["changed"] is True and res["key"].endswith("_alpha_app.db")
    assert ok(args)["changed"] is False  # same content: no new version
    assert ok(args, check_mode=True)["changed"] is False
    # the newest version's metadata lost: check mode says what a real run does, no crash
    meta = next((tmp_path / "remote").rglob("*.metadata.json"))
    meta.write_text("{not json")
    assert ok(args, check_mode=True)["changed"] is True
    res = ok(args)
    assert res["changed"] is True  # a checked version goes on top of the damaged one
    meta.unlink()
    add(dbfile, 1)
    assert ok(args)["changed"] is True
    status = ok(dict(args, operation="status"))
    # the damaged version stays (as distinct content) below the two checked ones
    assert status["changed"] is False and status["versions"] == 3 and status["in_sync"]


def test_sync_check_mode_and_a_conflict(tmp_path, remotes):
    a, b = make_db(tmp_path / "a/app.db"), tmp_path / "b/app.db"
    common = {"remote": remotes["local"], "rclone_config": str(remotes["conf"])}
    ok(dict(common, db=str(a), state_dir=str(tmp_path / "sa")))
    bargs = dict(common, db=str(b), state_dir=str(tmp_path / "sb"), operation="sync")
    res = ok(bargs, check_mode=True)
    assert res["changed"] is True and res["action"] == "pull" and not b.exists()
    assert ok(bargs)["action"] == "pull" and rows(b) == 5
    assert ok(bargs)["changed"] is False
    add(a, 1)
    ok(dict(common, db=str(a), state_dir=str(tmp_path / "sa")))
    add(b, 2)
    res = failed(bargs)
    assert res["action"] == "conflict" and "both sides changed" in res["msg"]
    assert rows(b) == 7


def test_a_copy_of_unchanged_content_takes_no_keep_slot(tmp_path, remotes):
    dbfile = make_db(tmp_path / "app.db")
    args = {"db": str(dbfile), "remote": remotes["local"], "host": "alpha", "keep": 2,
            "state_dir": str(tmp_path / "state"), "rclone_config": str(remotes["conf"])}
    old = ok(args)["key"]
    add(dbfile, 1)
    new = ok(args)["key"]
    folder = tmp_path / "remote/backups/app.db"
    held = {p.name: p.read_bytes() for p in folder.iterdir()}
    res = ok(dict(args, only_if_changed=False))  # asked for: a copy of the newest content
    # two distinct contents, and keep is 2: the older one stays
    now = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert {k: now.get(k) for k in held} == held
    assert sorted(k for k in now if not k.endswith(".json")) == [old, new, res["key"]]
    assert res["changed"] is True and res["pruned"] == [] and res["unchanged"] is False


def test_state_dir_defaults_to_the_engine_default_of_the_user_it_runs_as(tmp_path, remotes,
                                                                        monkeypatch):
    from strongroom.core import paths
    from strongroom.dbversions import DbSync

    dbfile = make_db(tmp_path / "app.db")
    monkeypatch.delenv("STRONGROOM_STATE_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(paths.os, "geteuid", lambda: 1000)  # a user install, not root
    args = {"db": str(dbfile), "remote": remotes["local"], "host": "alpha",
            "rclone_config": str(remotes["conf"])}
    key = ok(args)["key"]
    system = DbSync(dbfile, remotes["local"], "/var/lib/strongroom", None).state_path
    ours = DbSync(dbfile, remotes["local"], tmp_path / "xdg/strongroom", None).state_path
    assert not system.exists()
    assert json.loads(ours.read_text())["current"] == key
    status = ok(dict(args, operation="status"))
    assert status["current"] == key and status["in_sync"]
    # STRONGROOM_STATE_DIR wins, as it does for the strongroom command
    monkeypatch.setenv("STRONGROOM_STATE_DIR", str(tmp_path / "chosen"))
    assert ok(args)["changed"] is False
    chosen = DbSync(dbfile, remotes["local"], tmp_path / "chosen", None).state_path
    assert json.loads(chosen.read_text())["current"] == key
