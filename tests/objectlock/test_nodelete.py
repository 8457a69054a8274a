"""The drill's no_delete step on the real S3 API server (moto): with the job's own keys a
probe goes under .strongroom-probe/ and DeleteObject is tried on it. moto's default keys
may delete anything, so an unlocked bucket is the failing case; a job with Object Lock
locks its probe as it locks its uploads, and the server's refusal passes; so does a key
whose IAM policy has no s3:DeleteObject, on a moto server that enforces IAM policies and
signatures (INITIAL_NO_AUTH_ACTION_COUNT)."""

import json
import os
import socket
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET  # noqa: S405  (the test's own server)

import pytest

from strongroom import jobs
from tests.objectlock.helpers import (
    AUTH,
    Look,
    bed,
    bucket,
    source_tree,
    versions,
    write_job,
)
from tests.servers import S3Server


def _jobs(conf, tmp_path, b, **lock):
    write_job(conf, "snap", "snapshot", {"source": str(source_tree(tmp_path / "src")),
                                         "dest": str(tmp_path / "snaps"), "immutable": "off",
                                         "remote": f"s3:{b}/snaps", **lock})
    write_job(conf, "drill", "drill", {"jobs": ["snap"], "source": "remote",
                                       "scratch": str(tmp_path / "scratch")})


def _probe(b):
    return f"snaps/.strongroom-probe/{socket.gethostname()}"


def test_keys_that_can_delete_fail_the_drill_and_say_what_to_do(tmp_path, s3):
    conf, _, paths = bed(tmp_path, s3)
    b = bucket(s3, locked=False)
    _jobs(conf, tmp_path, b)
    assert jobs.run(paths, "snap")[0] == 0
    backup = {k for k in versions(s3, b, "snaps/") if ".strongroom-probe" not in k}
    code, status, output = jobs.run(paths, "drill")
    assert code == 2
    arts = {a["kind"]: a for a in status["artifacts"]}
    assert arts["snapshot"]["result"] == "ok"
    probe = arts["no_delete"]
    assert (probe["job"], probe["name"], probe["source"], probe["result"]) == (
        "snap", f"s3:{b}/snaps", "remote", "error")
    assert probe["message"] == (
        "the upload credentials can delete: anyone holding them can erase the backups; use "
        "a key without s3:DeleteObject or turn on Object Lock (a DeleteObject of "
        f"{b}/{_probe(b)} removed it)")
    assert "no_delete" in output and "test-secret" not in output + str(status)
    # the probe is all it deleted: the backup is where it was
    assert {k for k in versions(s3, b, "snaps/") if ".strongroom-probe" not in k} == backup


def test_a_versioned_bucket_whose_versions_can_be_deleted_fails_too(tmp_path, s3):
    conf, _, paths = bed(tmp_path, s3)
    b = bucket(s3, locked=False)
    Look(s3).enable_versioning(b)
    _jobs(conf, tmp_path, b)
    assert jobs.run(paths, "snap")[0] == 0
    code, status, _ = jobs.run(paths, "drill")
    assert code == 2
    (probe,) = [a for a in status["artifacts"] if a["kind"] == "no_delete"]
    assert probe["result"] == "error"
    assert probe["message"].startswith("the upload credentials can delete: anyone holding "
                                       "them can erase the backups; use a key without "
                                       "s3:DeleteObject or turn on Object Lock (a DeleteObject "
                                       "of version ")
    assert probe["message"].endswith(f" of {b}/{_probe(b)} removed it)")


def test_a_locked_probe_passes(tmp_path, s3):
    conf, _, paths = bed(tmp_path, s3)
    b = bucket(s3)
    _jobs(conf, tmp_path, b, object_lock_days=1, object_lock_mode="GOVERNANCE")
    assert jobs.run(paths, "snap")[0] == 0
    code, status, output = jobs.run(paths, "drill")
    assert code == 0, output
    (probe,) = [a for a in status["artifacts"] if a["kind"] == "no_delete"]
    assert probe["result"] == "ok"
    assert probe["message"].startswith(
        "the upload credentials cannot delete: a DeleteObject without a versionId only left "
        "a delete marker; a DeleteObject of its version was refused: the version is locked "
        "(GOVERNANCE until ")
    (version,) = versions(s3, b, _probe(b))[_probe(b)]
    assert Look(s3).get(b, _probe(b), version)[1].startswith(b"strongroom no-delete probe")


def test_a_local_drill_does_not_probe(tmp_path, s3):
    conf, _, paths = bed(tmp_path, s3)
    b = bucket(s3, locked=False)
    _jobs(conf, tmp_path, b)
    write_job(conf, "drill", "drill", {"jobs": ["snap"], "source": "local",
                                       "scratch": str(tmp_path / "scratch")})
    assert jobs.run(paths, "snap")[0] == 0
    code, status, _ = jobs.run(paths, "drill")
    assert code == 0
    assert [a["kind"] for a in status["artifacts"]] == ["snapshot"]
    assert not [k for k in versions(s3, b, "snaps/") if ".strongroom-probe" in k]


@pytest.fixture(scope="module")
def iam_s3(tmp_path_factory):
    """A second moto server that checks signatures and IAM policies once its first
    INITIAL_NO_AUTH_ACTION_COUNT requests are done: those make a user whose policy has no
    s3:DeleteObject, its key, and a bucket."""
    saved = os.environ.get("INITIAL_NO_AUTH_ACTION_COUNT")
    os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "4"
    try:
        server = S3Server(tmp_path_factory.mktemp("iam-s3"))
    finally:
        if saved is None:
            os.environ.pop("INITIAL_NO_AUTH_ACTION_COUNT")
        else:
            os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = saved
    try:
        policy = json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Resource": "*",
            "Action": ["s3:PutObject", "s3:GetObject", "s3:GetObjectVersion",
                       "s3:ListBucket", "s3:PutObjectRetention", "s3:GetObjectRetention"]}]})
        iam(server, "CreateUser", UserName="uploader")
        iam(server, "PutUserPolicy", UserName="uploader", PolicyName="no-delete",
            PolicyDocument=policy)
        answer = ET.fromstring(iam(server, "CreateAccessKey", UserName="uploader"))  # noqa: S314
        key = {e.tag.split("}")[-1]: e.text for e in answer.iter()}
        server.keys = key["AccessKeyId"], key["SecretAccessKey"]
        server.bucket = bucket(server, locked=False)
        yield server
    finally:
        server.stop()


def iam(server, action, **params):
    body = urllib.parse.urlencode({"Action": action, "Version": "2010-05-08", **params})
    req = urllib.request.Request(server.endpoint + "/", data=body.encode(), method="POST",  # noqa: S310
                                 headers={"content-type": "application/x-www-form-urlencoded",
                                          "authorization": AUTH.replace("/s3/", "/iam/")})
    with urllib.request.urlopen(req) as resp:  # noqa: S310
        return resp.read()


def test_keys_without_delete_permission_pass(tmp_path, iam_s3):
    conf, _, paths = bed(tmp_path, iam_s3)
    access, secret = iam_s3.keys
    (conf / "rclone.conf").write_text(
        iam_s3.rclone_section("s3").replace("test-key", access).replace("test-secret", secret))
    _jobs(conf, tmp_path, iam_s3.bucket)
    code, status, output = jobs.run(paths, "drill")
    (probe,) = [a for a in status["artifacts"] if a["kind"] == "no_delete"]
    assert probe["result"] == "ok", output
    assert probe["message"] == ("the upload credentials cannot delete: a DeleteObject was "
                                "refused (AccessDenied)")
    assert code != 2 and secret not in output + str(status)
    # the server checked the engine's signatures: a wrong secret is refused outright
    (conf / "rclone.conf").write_text(
        iam_s3.rclone_section("s3").replace("test-key", access).replace("test-secret", "x"))
    code, status, _ = jobs.run(paths, "drill")
    (probe,) = [a for a in status["artifacts"] if a["kind"] == "no_delete"]
    assert probe["result"] == "error"
    assert probe["message"].startswith(
        f"the probe {iam_s3.bucket}/snaps/.strongroom-probe/{socket.gethostname()} could not "
        "be written with the job's keys: S3 PUT ")
    assert "SignatureDoesNotMatch (403)" in probe["message"]


def test_an_endpoint_that_cannot_be_reached_is_the_steps_error(tmp_path, s3):
    conf, _, paths = bed(tmp_path, s3)
    (conf / "rclone.conf").write_text(
        s3.rclone_section("s3").replace(s3.endpoint, "http://127.0.0.1:9"))
    _jobs(conf, tmp_path, "nowhere")
    code, status, output = jobs.run(paths, "drill")
    assert code == 2
    (probe,) = [a for a in status["artifacts"] if a["kind"] == "no_delete"]
    assert probe["result"] == "error"
    assert probe["message"].startswith(
        f"the probe nowhere/snaps/.strongroom-probe/{socket.gethostname()} could not be "
        "written with the job's keys: S3 endpoint http://127.0.0.1:9 could not be reached: ")
    assert "test-secret" not in output + str(status)


def _env_auth_bed(tmp_path, s3, monkeypatch):
    """A job whose S3 remote takes its keys from the environment (env_auth, as on a host
    with ~/.aws/credentials): the rclone.conf holds no key."""
    conf, _, paths = bed(tmp_path, s3)
    (conf / "rclone.conf").write_text(f"[s3]\ntype = s3\nprovider = Other\nenv_auth = true\n"
                                      f"endpoint = {s3.endpoint}\nregion = us-east-1\n")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    creds = tmp_path / "aws-credentials"
    creds.write_text("[default]\naws_access_key_id = test-key\n"
                     "aws_secret_access_key = test-secret\n")
    creds.chmod(0o600)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    return conf, paths, creds


def test_env_auth_keys_from_the_shared_credentials_file_are_probed(tmp_path, s3, monkeypatch):
    conf, paths, _ = _env_auth_bed(tmp_path, s3, monkeypatch)
    b = bucket(s3, locked=False)
    _jobs(conf, tmp_path, b)
    assert jobs.run(paths, "snap")[0] == 0
    code, status, output = jobs.run(paths, "drill")
    (probe,) = [a for a in status["artifacts"] if a["kind"] == "no_delete"]
    assert code == 2 and probe["result"] == "error", output
    assert probe["message"].startswith("the upload credentials can delete")
    assert "test-secret" not in output + str(status)


def test_keys_the_check_cannot_read_are_a_warning_not_a_failed_drill(tmp_path, s3,
                                                                       monkeypatch):
    from strongroom.core.remote import Rclone
    from strongroom.drill.nodelete import NoDeletePlan

    conf, _, creds = _env_auth_bed(tmp_path, s3, monkeypatch)
    creds.unlink()  # an instance role, say: keys rclone finds and this check cannot
    b = bucket(s3, locked=False)
    probe = NoDeletePlan("snap", {"options": {}}, Rclone(str(conf / "rclone.conf")),
                         f"s3:{b}/snaps").drill(f"s3:{b}/snaps", "remote", tmp_path / "w")
    assert probe.result == "warning"
    assert probe.message == (
        "the no-delete check was not made: rclone remote s3 has no access_key_id and "
        "secret_access_key (nor env_auth with AWS_* variables or a shared credentials "
        "file); an instance role is not read here")
    assert versions(s3, b) == {}  # nothing was written
