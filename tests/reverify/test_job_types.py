"""Each job type with an off-site copy records what it uploads and re-verifies it: bundle
chains (whose manifest is replaced by every sync), daily folders, database versions (which
`keep` prunes here or on another host)."""

import json
import sqlite3

from strongroom.core.errors import ERROR, OK
from tests.helpers import commit, strongroom
from tests.reverify.helpers import Bed, flip


def reverify_json(bed, *args, check):
    proc = strongroom(*bed.cli("reverify", *args, "--json"), check=check)
    return json.loads(proc.stdout)


def test_bundle_chains_are_tracked_and_a_replaced_manifest_is_no_damage(bed):
    tmp, root, conf, state = bed
    b = Bed(tmp / "b")
    b.job("bundles", "bundle", {"root": str(root), "store": str(tmp / "store"),
                                "remote": f"local:{b.remote_dir}"})
    code, st, _ = b.run("bundles")
    assert code == OK, st["message"]
    objects = b.ledger("bundles")["objects"]
    assert "r/bundle-manifest.json" in objects and objects["r/bundle-manifest.json"]["mutable"]
    assert any(n.endswith(".bundle") for n in objects)
    assert st["verify"]["objects"] == len(objects)
    commit(root / "r", {"more.txt": "more\n"}, "more")
    code, st, _ = b.run("bundles")  # a new incremental, a new manifest
    assert code == OK and st["verify"]["damaged"] == []
    # a sync outside the job (no ledger) replaces the manifest and adds a bundle: the
    # manifest matches the local one, the new bundle is adopted from the local copy
    commit(root / "r", {"again.txt": "again\n"}, "again")
    strongroom("bundle", "sync", "--root", root, "--store", tmp / "store", "--remote",
               f"local:{b.remote_dir}", "--rclone-config", b.conf / "rclone.conf", check=0)
    out = reverify_json(b, "bundles", "--all", check=0)
    assert out["verify"]["damaged"] == [] and out["adopted"]
    assert all(b.ledger("bundles")["objects"][n]["adopted"] == "adopted from the local copy"
               for n in out["adopted"])
    name = next(n for n in b.ledger("bundles")["objects"] if n.endswith(".bundle"))
    flip(b.remote_dir / name)
    out = reverify_json(b, "bundles", "--all", check=2)
    assert out["verify"]["damaged"] == [name]
    code, st, _ = b.run("bundles")
    assert code == ERROR and name in st["message"]


def test_daily_folders_are_tracked_from_their_upload(tmp_path):
    b = Bed(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.ini").write_text("[a]\nb = 1\n")
    b.job("days", "daily", {"sources": [str(src)], "dest": str(tmp_path / "daily"),
                            "remote": f"local:{b.remote_dir}", "verify_days": 7})
    code, st, _ = b.run("days")
    assert code == OK, st["message"]
    names = set(b.ledger("days")["objects"])
    assert any(n.endswith("/app/config.ini") or n.endswith("config.ini") for n in names)
    assert st["verify"]["window_days"] == 7 and st["verify"]["objects"] == len(names)
    assert set(st["verify"]) == {"window_days", "objects", "verified", "coverage_ratio",
                                 "oldest_verified_age_seconds", "checked_this_run",
                                 "damaged", "method", "error"}


def _db(path, rows):
    con = sqlite3.connect(path)
    con.execute("create table if not exists t (v text)")
    con.executemany("insert into t values (?)", [(f"row {i}",) for i in range(rows)])
    con.commit()
    con.close()


def test_db_versions_pruned_by_keep_are_forgotten_and_a_missing_kept_one_is_damage(tmp_path):
    b = Bed(tmp_path)
    db = tmp_path / "app.db"
    b.job("appdb", "db", {"db": str(db), "remote": f"local:{b.remote_dir}", "keep": 2,
                          "hours_threshold": 0})
    for rows in (1, 2, 3, 4):
        _db(db, rows)
        code, st, _ = b.run("appdb")
        assert code == OK, st["message"]
    versions = b.remote_dir / "backups" / "app.db"
    on_remote = sorted(p.name for p in versions.iterdir())
    assert len(on_remote) == 4  # two versions, each with its metadata
    assert sorted(n.rsplit("/", 1)[-1] for n in b.ledger("appdb")["objects"]) == on_remote
    # another host's prune takes the oldest kept version: no damage, no longer tracked
    oldest = on_remote[0].removesuffix(".metadata.json")
    for p in versions.glob(f"{oldest}*"):
        p.unlink()
    out = reverify_json(b, "appdb", "--all", check=0)
    assert out["verify"]["objects"] == 2 and any("pruned" in n for n in out["notes"])
    # the newest version's copy gone (its metadata still there) is damage
    (newest,) = [p for p in versions.iterdir() if not p.name.endswith(".metadata.json")]
    newest.unlink()
    out = reverify_json(b, "appdb", "--all", check=2)
    assert out["verify"]["damaged"] == [f"backups/app.db/{newest.name}"]
    assert "missing on the remote" in out["message"]
    proc = strongroom(*b.cli("reverify", "appdb", "--repair", "--json"), check=2)
    (repair,) = json.loads(proc.stdout)["repairs"]
    assert repair["result"] == "unrepairable" and "keeps no local copy" in repair["message"]
