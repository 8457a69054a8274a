"""A job bed on the real S3 API server (moto): a bucket created with Object Lock (or
without), an rclone.conf naming it, and the test's own plain-HTTP look at the server."""

import json
import os
import urllib.error
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ET  # noqa: S405  (the test's own server)
from pathlib import Path

from strongroom import jobs


class Refused(Exception):
    """The server's error answer: its S3 code (AccessDenied, ...) and HTTP status."""

    def __init__(self, code, status):
        super().__init__(f"{code} ({status})")
        self.code, self.status = code, status


class Look:
    """The test's own look at the server: plain HTTP, independent of the engine's client
    (the engine-only virtualenvs of other Pythons have no boto3). moto reads the key id
    from the Authorization header and checks no signature; without one it answers as to
    an anonymous client, which may not read a private object."""

    def __init__(self, s3):
        self.endpoint = s3.endpoint

    def call(self, method, path, query="", body=None, headers=None):
        url = f"{self.endpoint}/{urllib.parse.quote(path)}" + (f"?{query}" if query else "")
        req = urllib.request.Request(url, data=body, method=method,  # noqa: S310
                                     headers={"content-type": "application/octet-stream",
                                              "authorization": AUTH, **(headers or {})})
        try:
            with urllib.request.urlopen(req) as resp:  # noqa: S310
                return {k.lower(): v for k, v in resp.headers.items()}, resp.read()
        except urllib.error.HTTPError as exc:
            text = exc.read()
            code = ET.fromstring(text).findtext("Code") if text.strip() else None  # noqa: S314
            raise Refused(code or f"HTTP{exc.code}", exc.code) from None

    def create_bucket(self, name, locked=True):
        self.call("PUT", name, headers={"x-amz-bucket-object-lock-enabled": "true"}
                  if locked else {})

    def enable_versioning(self, name):
        self.call("PUT", name, "versioning", body=(
            b'<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            b"<Status>Enabled</Status></VersioningConfiguration>"),
            headers={"content-type": "application/xml"})

    def versions(self, name, prefix=""):
        """{key: [version ids, newest first]} (delete markers left out)."""
        _, body = self.call("GET", name, "versions&prefix=" + urllib.parse.quote(prefix))
        out = {}
        for v in ET.fromstring(body).iter(f"{NS}Version"):  # noqa: S314
            out.setdefault(v.findtext(f"{NS}Key"), []).append(v.findtext(f"{NS}VersionId"))
        return out

    def head(self, name, key, version):
        return self.call("HEAD", f"{name}/{key}", "versionId=" + version)[0]

    def get(self, name, key, version=None):
        return self.call("GET", f"{name}/{key}", f"versionId={version}" if version else "")

    def put(self, name, key, body):
        return self.call("PUT", f"{name}/{key}", body=body)[0].get("x-amz-version-id")

    def delete(self, name, key, version=None):
        return self.call("DELETE", f"{name}/{key}", f"versionId={version}" if version else "")


NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
AUTH = ("AWS4-HMAC-SHA256 Credential=test-key/20260101/us-east-1/s3/aws4_request, "
        "SignedHeaders=host, Signature=" + "0" * 64)


def bucket(s3, locked=True):
    name = f"lock-{uuid.uuid4().hex[:12]}"
    Look(s3).create_bucket(name, locked)
    return name


def bed(tmp, s3):
    """(conf dir, state dir, Paths) with rclone.conf: [s3] the server, [disk] a folder."""
    conf, state = Path(tmp) / "conf", Path(tmp) / "state"
    (conf / "jobs").mkdir(parents=True)
    (conf / "rclone.conf").write_text(s3.rclone_section("s3") + "\n[disk]\ntype = local\n")
    (conf / "rclone.conf").chmod(0o600)
    return conf, state, jobs.Paths(conf, state, state / "log")


def write_job(conf, name, type_, options, schedule=None):
    lines = [f"name: {name}", f"type: {type_}"] + ([f"schedule: {schedule}"] if schedule
                                                   else []) + ["options:"]
    lines += [f"  {k}: {json.dumps(v)}" for k, v in options.items()]
    (Path(conf) / "jobs" / f"{name}.yml").write_text("\n".join(lines) + "\n")


def versions(s3, name, prefix=""):
    return Look(s3).versions(name, prefix)


def source_tree(root):
    root.mkdir(parents=True)
    (root / "notes.txt").write_text("what the snapshot keeps\n")
    (root / "data.bin").write_bytes(os.urandom(4096))
    return root
