"""library/db_backup.py through main(): check mode, honest changed, conflicts."""

import db_backup

from tests.modules import harness
from tests.unit.test_dbsync import add, make_db, rows


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
    add(dbfile, 1)
    assert ok(args)["changed"] is True
    status = ok(dict(args, operation="status"))
    assert status["changed"] is False and status["versions"] == 2 and status["in_sync"]


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
