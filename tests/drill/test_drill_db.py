"""Drills of database versions (strongroom/drill/db.py): real SQLite databases, versions
made by the db job's own backup, rclone against a local folder as the remote; a damaged
version, one failing integrity_check and one whose rows differ from its metadata are each
refused, with the remote, the live database and scratch left as they were."""

import hashlib
import json
import os
import shutil
import sqlite3

import pytest

from strongroom.core.errors import LockedError
from strongroom.core.remote import Rclone
from strongroom.dbversions import DbSync, content_digest
from strongroom.drill import base, db
from tests.dbversions.test_dbsync import add, make_db
from tests.drill.test_drill_days import drive, tree


@pytest.fixture
def bed(tmp_path):
    """Three versions of a database of a few pages, oldest first."""
    conf = tmp_path / "rclone.conf"
    conf.write_text("[local]\ntype = local\n")
    place = {"tmp": tmp_path, "conf": conf, "where": f"local:{tmp_path / 'remote'}",
             "state": tmp_path / "state", "scratch": tmp_path / "scratch",
             "db": make_db(tmp_path / "app/casman.db", rows=400),
             "folder": tmp_path / "remote/backups/casman.db"}
    d = DbSync(place["db"], place["where"], place["state"], Rclone(conf), keep=5, host="alpha")
    place["keys"] = []
    for i in range(3):
        if i:
            add(place["db"], 50, f"v{i}")
        place["keys"].append(d.backup()["key"])
    place["job"] = {"name": "casman", "type": "db", "options": {
        "db": str(place["db"]), "remote": place["where"], "rclone_config": str(conf),
        "host": "alpha", "keep": 5}}
    return place


def plan_of(bed, source="local"):
    ctx = base.Context(config_dir=bed["tmp"], state_dir=bed["state"], source=source)
    return db.plan("casman", bed["job"], ctx), ctx


def snapshot(bed):
    return tree(bed["folder"]), tree(bed["db"].parent), tree(bed["state"] / "db",
                                                                 skip=("casman.db",))


def untouched(bed, before):
    now = snapshot(bed)
    assert now[0] == before[0] and now[1] == before[1]
    # the state: only the lock file, which is runtime (its name ends in .lock)
    assert {k: v for k, v in now[2].items() if not k.endswith(".lock")} == \
        {k: v for k, v in before[2].items() if not k.endswith(".lock")}
    assert list(bed["scratch"].iterdir()) == []


def meta_path(bed, key):
    return bed["folder"] / (key + ".metadata.json")


def test_the_newest_and_a_rotating_older_version_restore_and_match_their_metadata(bed):
    before = snapshot(bed)
    plan, ctx = plan_of(bed)
    assert plan.sources == ("remote",)
    assert ctx.notes == [f"casman: a db job keeps its versions on its remote only "
                         f"({bed['where']}/backups/casman.db); they are drilled from there"]
    oldest, middle, newest = bed["keys"]
    arts = drive(plan, bed["scratch"])
    assert [(a.kind, a.name, a.source, a.result) for a in arts] == [
        ("db_version", newest, "remote", "ok"), ("db_version", oldest, "remote", "ok")]
    assert arts[0].message == (f"restored version {newest} from {bed['where']}/backups/"
                               "casman.db: SHA-256 matches its metadata, integrity_check ok, "
                               "1 table(s) with the 500 rows the metadata records")
    assert "with the 400 rows" in arts[1].message
    assert arts[0].files == 1 and arts[0].bytes == json.loads(
        meta_path(bed, newest).read_text())["size"]
    # the next drill takes the next older version
    assert [a.name for a in drive(plan_of(bed)[0], bed["scratch"])] == [newest, middle]
    untouched(bed, before)


def test_a_damaged_version_fails_its_checksum(bed):
    oldest = bed["keys"][0]
    stored = bed["folder"] / oldest
    data = bytearray(stored.read_bytes())
    data[-100] ^= 0xFF
    stored.write_bytes(bytes(data))
    before = snapshot(bed)
    arts = {a.name: a for a in drive(plan_of(bed)[0], bed["scratch"])}
    assert arts[bed["keys"][-1]].result == "ok"
    assert arts[oldest].result == "error"
    assert arts[oldest].message.startswith(f"the download of {oldest} does not match its "
                                           "metadata (SHA-256 ")
    untouched(bed, before)


def rewrite_metadata(bed, key, **fields):
    path = meta_path(bed, key)
    meta = json.loads(path.read_text())
    meta.update(fields)
    path.write_text(json.dumps(meta, indent=2, sort_keys=True))


def test_a_version_failing_integrity_check_is_refused_though_its_hash_matches(bed):
    oldest = bed["keys"][0]
    stored = bed["folder"] / oldest
    data = bytearray(stored.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    assert len(data) >= 3 * page
    data[page + 8: page + 64] = b"\xa5" * 56  # the cells of the table's second page
    stored.write_bytes(bytes(data))
    # metadata made to match the damaged copy: only the database's own check can tell
    rewrite_metadata(bed, oldest, sha256=hashlib.sha256(bytes(data)).hexdigest(),
                     content_sha256=content_digest(stored))
    before = snapshot(bed)
    arts = {a.name: a for a in drive(plan_of(bed)[0], bed["scratch"])}
    assert arts[oldest].result == "error"
    assert arts[oldest].message.startswith(f"the download of {oldest} fails integrity_check (")
    untouched(bed, before)


def test_rows_differing_from_the_metadata_are_refused(bed):
    oldest = bed["keys"][0]
    rewrite_metadata(bed, oldest, tables={"parts": 401})
    before = snapshot(bed)
    arts = {a.name: a for a in drive(plan_of(bed)[0], bed["scratch"])}
    assert arts[oldest].result == "error"
    assert arts[oldest].message == (f"the row counts of {oldest} differ from its metadata: "
                                    "parts: 400 rows, metadata 401")
    untouched(bed, before)


def test_a_remote_emptied_or_gone_is_an_error_naming_it(bed):
    shutil.rmtree(bed["tmp"] / "remote")
    before = snapshot(bed)
    (art,) = drive(plan_of(bed)[0], bed["scratch"])
    # this host agreed on the newest version there: its absence is the finding
    assert (art.name, art.result) == (bed["keys"][-1], "error")
    assert art.message == (f"no version {bed['keys'][-1]} under {bed['where']}/backups/"
                           "casman.db (the remote holds 0 version(s))")
    untouched(bed, before)


def test_a_remote_that_cannot_be_listed_names_it(bed):
    bed["job"]["options"]["remote"] = "nosuch:backups"
    bed["job"]["options"]["retries"] = 1
    (art,) = drive(plan_of(bed)[0], bed["scratch"])
    assert (art.name, art.result) == ("*", "error")
    assert art.message.startswith("cannot list nosuch:backups/backups/casman.db: ")


def test_the_jobs_lock_is_held_while_drilling(bed):
    from strongroom.dbversions.settings import settings

    plan, _ = plan_of(bed)
    with plan.lock(0):
        other = settings(bed["job"]["options"], bed["tmp"], bed["state"])
        with pytest.raises(LockedError, match="database .*casman.db is locked by PID"):
            other.lock(0)
    # and the live database is still a database, never opened for writing by the drill
    assert sqlite3.connect(bed["db"]).execute("SELECT count(*) FROM parts").fetchone() == \
        (500,)


@pytest.mark.parametrize("damage, said", [
    ("no metadata", "has no readable metadata ({key}.metadata.json is missing)"),
    ("other content", "the download of {key} holds other content than its metadata's "
                      "content_sha256"),
    ("no row counts", "the metadata of {key} records no row counts"),
])
def test_a_version_whose_metadata_cannot_vouch_for_it_is_refused(bed, damage, said):
    oldest = bed["keys"][0]
    if damage == "no metadata":
        meta_path(bed, oldest).unlink()
    elif damage == "other content":
        rewrite_metadata(bed, oldest, content_sha256="0" * 64)
    else:
        meta = json.loads(meta_path(bed, oldest).read_text())
        del meta["tables"]
        meta_path(bed, oldest).write_text(json.dumps(meta))
    before = snapshot(bed)
    arts = {a.name: a for a in drive(plan_of(bed)[0], bed["scratch"])}
    assert arts[oldest].result == "error"
    assert said.format(key=oldest) in arts[oldest].message
    untouched(bed, before)


def test_a_db_job_without_a_remote_is_an_error_of_its_own(bed, monkeypatch):
    for var in [v for v in os.environ if v.startswith(("R2_", "AWS_"))]:
        monkeypatch.delenv(var)
    del bed["job"]["options"]["remote"]
    (art,) = drive(plan_of(bed)[0], bed["scratch"])
    assert (art.name, art.source, art.result) == ("*", "remote", "error")
    assert art.message == ("job casman names no remote (options.remote, or R2_* / AWS_* "
                           "variables), where its versions would be: none can be drilled")


def test_db_jobs_are_drilled_by_this_module():
    from strongroom.jobs import registry

    assert registry.get("db").drill is db.plan
