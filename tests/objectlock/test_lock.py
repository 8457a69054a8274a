"""Object Lock on what jobs upload, on the real S3 API server (moto): each object version
a job proved on the remote carries a retention; the server then refuses to delete that
version, an upload of the same key leaves it as it was, and the lock outlives the job's own
local prune. A bucket without Object Lock, or a remote that is no S3, is said clearly and
costs nothing: the copy stays verified and the local one stays."""

import datetime
import hashlib
import time

import pytest

from strongroom import jobs
from strongroom.core import remote, s3api
from strongroom.upload import Upload
from tests.helpers import rich_repo
from tests.objectlock.helpers import Look, Refused, bed, bucket, source_tree, versions, write_job


def _until(text):
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)


def _snapshot_job(conf, tmp_path, name, remote_path, **extra):
    src = source_tree(tmp_path / "src") if not (tmp_path / "src").exists() else tmp_path / "src"
    write_job(conf, name, "snapshot", {"source": str(src), "dest": str(tmp_path / "snaps"),
                                       "immutable": "off", "remote": remote_path, **extra})
    return src


def test_a_snapshots_objects_carry_retention_and_the_status_says_until_when(tmp_path, s3):
    conf, state, paths = bed(tmp_path, s3)
    b = bucket(s3)
    _snapshot_job(conf, tmp_path, "snap", f"s3:{b}/snaps", object_lock_days=3)
    before = datetime.datetime.now(datetime.UTC)
    code, status, output = jobs.run(paths, "snap")
    assert code == 0, output
    snap = status["snapshot"]["id"]
    keys = versions(s3, b, f"snaps/{snap}/")
    local = sorted(p.relative_to(tmp_path / "snaps" / snap).as_posix()
                   for p in (tmp_path / "snaps" / snap).rglob("*") if p.is_file())
    assert sorted(k.split("/", 2)[2] for k in keys) == local
    for key, (version,) in keys.items():
        head = Look(s3).head(b, key, version)
        assert head["x-amz-object-lock-mode"] == "COMPLIANCE"
        held = s3api.parse_time(head["x-amz-object-lock-retain-until-date"])
        assert before + datetime.timedelta(days=3) - datetime.timedelta(seconds=5) <= held \
            <= datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=3)
    lock = status["object_lock"]
    assert (lock["mode"], lock["days"], lock["objects"]) == ("COMPLIANCE", 3, len(local))
    assert lock["dests"] == [f"s3:{b}/snaps/{snap}"]
    assert abs(_until(lock["retain_until"]) - (before + datetime.timedelta(days=3))) \
        < datetime.timedelta(seconds=30)
    assert status["offsite"]["lock"] == {"dest": f"s3:{b}/snaps/{snap}", "mode": "COMPLIANCE",
                                         "retain_until": lock["retain_until"],
                                         "objects": len(local)}
    assert jobs.read_status(paths, "snap")["object_lock"] == lock
    assert "test-secret" not in (state / "log" / "snap.log").read_text() + str(status)


def test_the_server_refuses_to_delete_a_locked_version_and_an_overwrite_keeps_it(tmp_path, s3):
    conf, _, paths = bed(tmp_path, s3)
    b = bucket(s3)
    _snapshot_job(conf, tmp_path, "snap", f"s3:{b}/snaps", object_lock_days=1)
    code, status, output = jobs.run(paths, "snap")
    assert code == 0, output
    snap = status["snapshot"]["id"]
    key = next(k for k in versions(s3, b, f"snaps/{snap}/") if k.endswith(".tar.zst"))
    (version,) = versions(s3, b, key)[key]
    ours = hashlib.sha256((tmp_path / "snaps" / key.split("/", 1)[1]).read_bytes()).hexdigest()
    c = Look(s3)
    with pytest.raises(Refused) as refused:
        c.delete(b, key, version)
    assert (refused.value.code, refused.value.status) == ("AccessDenied", 403)
    # S3 has no overwrite of a version in place: a PUT of the key makes a new version and
    # the locked one keeps its bytes and its lock (the server accepts the PUT itself)
    c.put(b, key, b"someone else's bytes")
    assert len(versions(s3, b, key)[key]) == 2
    headers, body = c.get(b, key, version)
    assert hashlib.sha256(body).hexdigest() == ours
    assert headers["x-amz-object-lock-mode"] == "COMPLIANCE"
    with pytest.raises(Refused) as again:
        c.delete(b, key, version)
    assert again.value.code == "AccessDenied"
    # a delete without a version only hides the key behind a marker: the version stays
    assert c.delete(b, key)[0]["x-amz-delete-marker"] == "true"
    assert hashlib.sha256(c.get(b, key, version)[1]).hexdigest() == ours


def test_the_lock_outlives_the_local_prune(tmp_path, s3):
    conf, _, paths = bed(tmp_path, s3)
    b = bucket(s3)
    _snapshot_job(conf, tmp_path, "snap", f"s3:{b}/snaps", object_lock_days=2,
                  keep_last=1, keep_days=0)
    code, first, output = jobs.run(paths, "snap")
    assert code == 0, output
    old = first["snapshot"]["id"]
    time.sleep(1.1)  # snapshot ids go by the second
    (tmp_path / "src" / "notes.txt").write_text("a later day\n")
    code, second, output = jobs.run(paths, "snap")
    assert code == 0, output
    assert old in second["prune"]["deleted"] and not (tmp_path / "snaps" / old).exists()
    keys = versions(s3, b, f"snaps/{old}/")
    assert keys
    c = Look(s3)
    for key, (version,) in keys.items():
        assert c.head(b, key, version)["x-amz-object-lock-mode"] == "COMPLIANCE"
        with pytest.raises(Refused) as refused:
            c.delete(b, key, version)
        assert refused.value.code == "AccessDenied"
    assert second["object_lock"]["dests"] == [f"s3:{b}/snaps/{second['snapshot']['id']}"]


def test_a_bucket_without_object_lock_is_said_and_the_copy_stays_verified(tmp_path, s3):
    conf, state, paths = bed(tmp_path, s3)
    b = bucket(s3, locked=False)
    _snapshot_job(conf, tmp_path, "snap", f"s3:{b}/snaps", object_lock_days=1,
                  keep_last=1, keep_days=0)
    code, status, output = jobs.run(paths, "snap")
    assert code == 2
    snaps = [p for p in (tmp_path / "snaps").iterdir() if p.is_dir()]
    (snap,) = snaps
    assert status["message"] == (
        f"remote copy on s3:{b}/snaps/{snap.name} verified but not locked, nothing local "
        f"deleted: bucket {b} has no Object Lock configuration; create it with object "
        "lock enabled")
    # nothing lost: every file is on the remote with our bytes, the local snapshot is kept
    for p in snap.rglob("*"):
        if p.is_file():
            key = f"snaps/{snap.name}/{p.relative_to(snap).as_posix()}"
            assert Look(s3).get(b, key)[1] == p.read_bytes()
    assert status["object_lock"]["objects"] == 0 and status["object_lock"]["retain_until"] \
        is None


def test_object_lock_on_a_remote_that_is_not_s3_is_a_config_error(tmp_path, s3):
    conf, _, paths = bed(tmp_path, s3)
    _snapshot_job(conf, tmp_path, "snap", f"disk:{tmp_path / 'remote'}", object_lock_days=1)
    code, status, _ = jobs.run(paths, "snap")
    assert code == 2
    assert status["message"] == (
        f"object_lock_days is set, but remote disk:{tmp_path / 'remote'} cannot be locked: "
        "rclone remote disk is not an S3 remote (type = local); Object Lock and the "
        "no-delete check need one of type s3")
    assert not (tmp_path / "snaps").exists() or not any((tmp_path / "snaps").iterdir())
    assert not (tmp_path / "remote").exists()
    assert "object_lock" not in status  # no lock was ever taken


def test_a_bundle_jobs_chain_is_locked(tmp_path, s3):
    conf, _, paths = bed(tmp_path, s3)
    b = bucket(s3)
    rich_repo(tmp_path / "root" / "r")
    write_job(conf, "bundles", "bundle", {"root": str(tmp_path / "root"),
                                          "store": str(tmp_path / "store"),
                                          "remote": f"s3:{b}/bundles", "object_lock_days": 1,
                                          "object_lock_mode": "GOVERNANCE"})
    code, status, output = jobs.run(paths, "bundles")
    assert code == 0, output
    keys = versions(s3, b, "bundles/")
    locked = {k for k, (v, *_) in keys.items()
              if Look(s3).head(b, k, v).get("x-amz-object-lock-mode") == "GOVERNANCE"}
    bundles = {k for k in keys if k.endswith(".bundle")}
    assert bundles and bundles <= locked
    assert status["object_lock"]["mode"] == "GOVERNANCE"
    assert status["object_lock"]["objects"] == len(locked)


def test_an_expired_retention_is_read_back_as_expired_and_the_server_lets_it_go(tmp_path, s3):
    _, _, paths = bed(tmp_path, s3)
    b = bucket(s3)
    src = source_tree(tmp_path / "src")
    rc = remote.Rclone(str(paths.config_dir / "rclone.conf"))
    lock = s3api.ObjectLock(1, "GOVERNANCE", seconds=2)
    out = Upload(rc, lock=lock).run(src, f"s3:{b}/short", immutable=True)
    assert out["lock"]["objects"] == 2
    c = s3api.Client(s3.endpoint, "us-east-1", "test-key", "test-secret")
    version = c.head(b, "short/notes.txt")["version"]
    with pytest.raises(s3api.S3Error) as refused:
        c.delete(b, "short/notes.txt", version)
    assert (refused.value.code, refused.value.status) == ("AccessDenied", 403)
    time.sleep(2.5)
    held = c.get_retention(b, "short/notes.txt", version)
    assert held["mode"] == "GOVERNANCE" and held["retain_until"] < s3api.utcnow()
    c.delete(b, "short/notes.txt", version)  # expired: the server lets it go
    assert "short/notes.txt" not in versions(s3, b, "short/")


def test_a_db_jobs_versions_are_locked(tmp_path, s3):
    import sqlite3

    conf, _, paths = bed(tmp_path, s3)
    b = bucket(s3)
    con = sqlite3.connect(tmp_path / "app.db")
    con.execute("create table t (x)")
    con.execute("insert into t values (1)")
    con.commit()
    con.close()
    write_job(conf, "appdb", "db", {"db": str(tmp_path / "app.db"), "remote": f"s3:{b}/db",
                                    "object_lock_days": 1})
    code, status, output = jobs.run(paths, "appdb")
    assert code == 0, output
    keys = versions(s3, b, "db/")
    assert keys
    for key, (version, *_) in keys.items():
        assert Look(s3).head(b, key, version)["x-amz-object-lock-mode"] == "COMPLIANCE", key
    assert status["object_lock"]["objects"] == len(keys)


def test_a_daily_jobs_day_folder_is_locked(tmp_path, s3):
    conf, _, paths = bed(tmp_path, s3)
    b = bucket(s3)
    write_job(conf, "days", "daily", {"sources": [str(source_tree(tmp_path / "src"))],
                                      "dest": str(tmp_path / "days"),
                                      "remote": f"s3:{b}/days", "object_lock_days": 1})
    code, status, output = jobs.run(paths, "days")
    assert code == 0, output
    (day,) = status["uploaded"]
    keys = versions(s3, b, "days/")
    assert keys and all(k.startswith(f"days/{day}/") for k in keys)
    for key, (version,) in keys.items():
        assert Look(s3).head(b, key, version)["x-amz-object-lock-mode"] == "COMPLIANCE", key
    assert status["object_lock"]["objects"] == len(keys)
    assert status["object_lock"]["dests"] == [f"s3:{b}/days/{day}"]


def test_an_s3_remote_without_keys_is_a_config_error(tmp_path, s3):
    conf, _, paths = bed(tmp_path, s3)
    b = bucket(s3)
    text = (conf / "rclone.conf").read_text()
    (conf / "rclone.conf").write_text(text.replace("access_key_id = test-key\n", "").replace(
        "secret_access_key = test-secret\n", ""))
    _snapshot_job(conf, tmp_path, "snap", f"s3:{b}/snaps", object_lock_days=1)
    code, status, _ = jobs.run(paths, "snap")
    assert code == 2
    assert status["message"] == (
        f"object_lock_days is set, but remote s3:{b}/snaps cannot be locked: rclone remote s3 "
        "has no access_key_id and secret_access_key (nor env_auth with AWS_* variables or a "
        "shared credentials file); an instance role is not read here")
    assert not (tmp_path / "snaps").exists() and versions(s3, b) == {}


def _sealed_upload(tmp_path, s3, lock):
    from strongroom.upload.seal import Seal
    from tests.seal.helpers import make_keys

    conf, state, _ = bed(tmp_path, s3)
    b = bucket(s3)
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "secret.env").write_text("TOKEN=sealed-and-locked\n")
    _, recipients = make_keys(tmp_path)

    def run():
        up = Upload(remote.Rclone(str(conf / "rclone.conf")), journal_dir=str(state / "up"),
                    seal=Seal(recipients, state), lock=lock)
        return up.run(str(src), f"s3:{b}/job", immutable=True)
    return b, src, run


def _held(s3, b, key):
    (version,) = versions(s3, b, key)[key]
    head = Look(s3).head(b, key, version)
    return head.get("x-amz-object-lock-mode"), head.get("x-amz-object-lock-retain-until-date")


def test_a_sealed_file_whose_lock_failed_once_is_locked_by_the_next_run(tmp_path, s3,
                                                                         monkeypatch):
    lock = s3api.ObjectLock(2, "GOVERNANCE")
    b, src, run = _sealed_upload(tmp_path, s3, lock)
    real, calls = s3api.Client.put_retention, []

    def refused_once(self, *args, **kwargs):
        calls.append(args[1])
        if len(calls) == 1:
            raise s3api.S3Error("S3 PUT job/secret.env.age: InternalError (500)",
                                "InternalError", 500)
        return real(self, *args, **kwargs)
    monkeypatch.setattr(s3api.Client, "put_retention", refused_once)
    with pytest.raises(remote.RemoteError) as exc:
        run()
    assert "verified but not locked, nothing local deleted" in str(exc.value)
    assert (src / "secret.env").exists()
    # the rerun sends only the sidecar, and still locks the X.age the first run sent
    out = run()
    assert out["transferred"] == ["secret.env.age.json"], out
    for key in ("job/secret.env.age", "job/secret.env.age.json"):
        assert _held(s3, b, key)[0] == "GOVERNANCE", key
    assert lock.record()["objects"] == 2
    with pytest.raises(Refused) as refused:
        Look(s3).delete(b, "job/secret.env.age", versions(s3, b, "job/secret.env.age")[
            "job/secret.env.age"][0])
    assert refused.value.code == "AccessDenied"


def test_turning_object_lock_on_locks_what_was_sealed_before(tmp_path, s3):
    b, _src, run = _sealed_upload(tmp_path, s3, None)
    run()
    assert _held(s3, b, "job/secret.env.age") == (None, None)
    lock = s3api.ObjectLock(2, "GOVERNANCE")
    with s3api.locking(lock):
        out = run()
    assert out["transferred"] == [], out
    for key in ("job/secret.env.age", "job/secret.env.age.json"):
        assert _held(s3, b, key)[0] == "GOVERNANCE", key


def test_the_upload_verb_locks_what_it_sent_and_says_until_when(tmp_path, s3):
    import json

    from tests.helpers import strongroom

    conf, state, _ = bed(tmp_path, s3)
    b = bucket(s3)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("kept for two days\n")
    base = ("--config-dir", conf, "--state-dir", state, "upload", src, f"s3:{b}/up")
    for args, words in (((*base, "--object-lock-days", "0"), "1 or more"),
                        ((*base, "--object-lock-mode", "GOVERNANCE"), "needs --object-lock")):
        proc = strongroom(*args)
        assert proc.returncode == 64 and words in proc.stderr, proc.stderr
    assert versions(s3, b) == {}
    proc = strongroom(*base[:-1], "disk:" + str(tmp_path / "plain"), "--object-lock-days", "2")
    assert proc.returncode == 2
    assert "remote disk:" in proc.stderr and "is not an S3 remote (type = local)" in proc.stderr
    assert not (tmp_path / "plain").exists()
    proc = strongroom(*base, "--object-lock-days", "2", "--object-lock-mode", "GOVERNANCE",
                      "--json", check=0)
    out = json.loads(proc.stdout)
    assert (out["lock"]["mode"], out["lock"]["objects"]) == ("GOVERNANCE", 1)
    (version,) = versions(s3, b, "up/a.txt")["up/a.txt"]
    assert Look(s3).head(b, "up/a.txt", version)["x-amz-object-lock-mode"] == "GOVERNANCE"
    with pytest.raises(Refused) as refused:
        Look(s3).delete(b, "up/a.txt", version)
    assert refused.value.code == "AccessDenied"
    assert "test-secret" not in proc.stdout + proc.stderr
