"""library/rclone_transfer.py through main(): check mode, honest changed, failures."""

import rclone_transfer

from tests.modules import harness
from tests.upload.test_upload import place_old_copy, remote_files, remote_times, tree


def ok(args, **kw):
    return harness.ok(rclone_transfer.main, args, **kw)


def failed(args, **kw):
    return harness.failed(rclone_transfer.main, args, **kw)


def test_check_mode_then_copy_then_no_change_then_delete(tmp_path, remotes, monkeypatch):
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    src = tmp_path / "day"
    files = tree(src)
    args = {"src": str(src), "dest": remotes["s3"], "rclone_config": str(remotes["conf"]),
            "immutable": True, "journal_dir": str(tmp_path / "journal")}
    res = ok(args, check_mode=True)
    assert res["changed"] is True and len(res["transferred"]) == 4
    assert remote_files(remotes, remotes["s3"], tmp_path) == {}
    res = ok(args)
    assert res["changed"] is True and res["verified_by"] == "hash"
    assert res["bytes_moved"] == sum(len(v) for v in files.values())
    res = ok(args)
    assert res["changed"] is False and res["transferred"] == []
    res = ok(dict(args, delete_local_after_verify=True))
    assert res["changed"] is True and sorted(res["deleted"]) == sorted(files)
    assert not src.exists() and remote_files(remotes, remotes["s3"], tmp_path) == files


def test_a_conflict_and_a_missing_source_fail_with_the_reason(tmp_path, remotes):
    src = tmp_path / "day"
    tree(src)
    ok({"src": str(src), "dest": remotes["local"], "rclone_config": str(remotes["conf"])})
    (tmp_path / "remote" / "a.txt").write_text("someone else's\n")
    res = failed({"src": str(src), "dest": remotes["local"], "immutable": True,
                  "delete_local_after_verify": True, "rclone_config": str(remotes["conf"])})
    assert "--immutable never overwrites them: a.txt" in res["msg"]
    assert (src / "a.txt").read_bytes() == b"alpha\n"
    res = failed({"src": str(tmp_path / "nope"), "dest": remotes["local"]})
    assert "does not exist" in res["msg"]


def test_our_content_under_another_time_is_no_conflict(tmp_path, remotes):
    src = tmp_path / "day"
    files = tree(src)
    dest = remotes["local"]
    before = place_old_copy(remotes, tmp_path, dest, {"a.txt": files["a.txt"]})
    res = ok({"src": str(src), "dest": dest, "immutable": True,
              "delete_local_after_verify": True, "rclone_config": str(remotes["conf"]),
              "journal_dir": str(tmp_path / "journal")})
    assert res["changed"] is True and res["verified_by"] == "hash"
    assert sorted(res["transferred"]) == sorted(set(files) - {"a.txt"})
    assert sorted(res["deleted"]) == sorted(files)
    assert remote_files(remotes, dest, tmp_path) == files
    assert remote_times(remotes, dest)["a.txt"] == before["a.txt"]  # untouched
    # other content is still refused, and neither side loses anything
    for rel, data in files.items():  # the same day again
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    (tmp_path / "remote" / "a.txt").write_bytes(b"ALPHA\n")
    res = failed({"src": str(src), "dest": dest, "immutable": True,
                  "delete_local_after_verify": True, "rclone_config": str(remotes["conf"])})
    assert res["msg"].endswith("--immutable never overwrites them: a.txt")
    assert (src / "a.txt").read_bytes() == b"alpha\n"
    assert (tmp_path / "remote" / "a.txt").read_bytes() == b"ALPHA\n"
