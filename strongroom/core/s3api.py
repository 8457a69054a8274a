"""A small S3 API client (urllib and SigV4, standard library only) for what rclone cannot do:
S3 Object Lock retention on the object versions an upload wrote, and the drill's probe of
whether the upload credentials can delete.

The endpoint, region and keys come from the job's rclone remote (`rclone config dump`, so a
remote from an encrypted rclone.conf or from RCLONE_CONFIG_* variables works as rclone sees
it). Keys stay in memory: never in argv, logs, status files or error messages. Requests go
path-style (ENDPOINT/BUCKET/KEY), which AWS, R2, MinIO and moto all answer.
"""

import base64
import contextlib
import datetime
import hashlib
import hmac
import json
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET  # noqa: S405  (answers of the remote the job writes to)

from .errors import ConfigError
from .remote import RemoteError

MODES = ("COMPLIANCE", "GOVERNANCE")
NO_LOCK_CONFIG = "ObjectLockConfigurationNotFoundError"
_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
_EMPTY_SHA = hashlib.sha256(b"").hexdigest()


class S3Error(RemoteError):
    """An S3 error answer: code (AccessDenied, NoSuchKey, ...) and HTTP status kept."""

    def __init__(self, message, code="", status=0):
        super().__init__(message)
        self.code, self.status = code, status


def utcnow():
    return datetime.datetime.now(datetime.UTC)


def iso(dt):
    return dt.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text):
    """An S3 date (ISO 8601, with or without fractions) as an aware datetime; None if not."""
    if not text:
        return None
    with contextlib.suppress(ValueError):
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(
            datetime.UTC)
    return None


def split_remote(dest):
    """'NAME:bucket/prefix' -> (NAME, bucket, prefix)."""
    name, _, path = dest.partition(":")
    bucket, _, prefix = path.strip("/").partition("/")
    return name, bucket, prefix.strip("/")


def section(rclone, name):
    """The rclone remote NAME's settings as rclone itself reads them ({} when none)."""
    proc = rclone.run("config", "dump", check=False)
    try:
        return json.loads(proc.stdout or "{}").get(name) or {}
    except ValueError:
        return {}


class Client:
    """One S3 endpoint with one pair of keys."""

    def __init__(self, endpoint, region, access_key, secret_key, token=None, timeout=30):
        self.endpoint = endpoint.rstrip("/")
        # an endpoint with a path (https://host/prefix, as some gateways want) is signed
        # with that path, as the server sees it
        self._prefix = urllib.parse.urlsplit(self.endpoint).path.rstrip("/")
        self.region = region or "us-east-1"
        self._access, self._secret, self._token = access_key, secret_key, token
        self.timeout = timeout

    @classmethod
    def from_rclone(cls, rclone, remote_name):
        """A client for rclone remote REMOTE_NAME; ConfigError when it is not S3."""
        conf = section(rclone, remote_name)
        if conf.get("type") != "s3":
            what = f"type = {conf['type']}" if conf.get("type") else "not defined"
            raise ConfigError(f"rclone remote {remote_name} is not an S3 remote ({what}); "
                              "Object Lock and the no-delete check need one of type s3")
        access, secret = conf.get("access_key_id"), conf.get("secret_access_key")
        token = conf.get("session_token")
        if not (access and secret) and str(conf.get("env_auth", "")).lower() == "true":
            access, secret = os.environ.get("AWS_ACCESS_KEY_ID"), \
                os.environ.get("AWS_SECRET_ACCESS_KEY")
            token = os.environ.get("AWS_SESSION_TOKEN")
            if not (access and secret):
                access, secret, token = _shared_credentials(conf.get("profile"))
        if not (access and secret):
            raise ConfigError(f"rclone remote {remote_name} has no access_key_id and "
                              "secret_access_key (nor env_auth with AWS_* variables or a "
                              "shared credentials file); an instance role is not read here")
        region = conf.get("region") or "us-east-1"
        endpoint = conf.get("endpoint") or f"https://s3.{region}.amazonaws.com"
        if "://" not in endpoint:
            endpoint = "https://" + endpoint
        return cls(endpoint, region, access, secret, token)

    # --- signing (AWS Signature Version 4) ---------------------------------------------

    def _sign(self, method, path, query, headers, payload_hash):
        now = utcnow()
        stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        host = urllib.parse.urlsplit(self.endpoint).netloc
        headers = {**headers, "host": host, "x-amz-date": stamp,
                   "x-amz-content-sha256": payload_hash}
        if self._token:
            headers["x-amz-security-token"] = self._token
        names = sorted(k.lower() for k in headers)
        canon_headers = "".join(f"{k}:{str(headers[k]).strip()}\n" for k in names)
        canon_query = "&".join(f"{_q(k)}={_q(v)}" for k, v in sorted(query.items()))
        canonical = "\n".join([method, path, canon_query, canon_headers, ";".join(names),
                               payload_hash])
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope,
                             hashlib.sha256(canonical.encode()).hexdigest()])
        key = ("AWS4" + self._secret).encode()
        for part in (day, self.region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={self._access}/{scope}, "
                                    f"SignedHeaders={';'.join(names)}, Signature={signature}")
        del headers["host"]  # urllib sets it
        return headers, canon_query

    def request(self, method, bucket, key="", query=None, body=b"", headers=None):
        """(status, headers, body) of a 2xx answer; S3Error for any other."""
        query = dict(query or {})
        path = self._prefix + "/" + _q(bucket, "/") + ("/" + _q(key, "/") if key else "")
        headers = dict(headers or {})
        if body:  # urllib's default type (a form) would have the body read as one
            headers.setdefault("content-type", "application/octet-stream")
            headers["content-md5"] = base64.b64encode(hashlib.md5(body).digest()).decode()  # noqa: S324  (S3 wants it)
        signed, canon_query = self._sign(method, path, query, headers,
                                         hashlib.sha256(body).hexdigest() if body
                                         else _EMPTY_SHA)
        url = self.endpoint[: len(self.endpoint) - len(self._prefix)] + path + (
            "?" + canon_query if canon_query else "")
        req = urllib.request.Request(url, data=body or None, method=method,  # noqa: S310
                                     headers=signed)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}, \
                    resp.read()
        except urllib.error.HTTPError as exc:
            raise _error(exc, method, bucket, key) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise S3Error(f"S3 endpoint {self.endpoint} could not be reached: {reason}") \
                from None

    # --- the calls -------------------------------------------------------------------

    def head(self, bucket, key, version=None):
        """HeadObject: {version, mode, retain_until} of the object (its current version)."""
        _, h, _ = self.request("HEAD", bucket, key, {"versionId": version} if version else {})
        return {"version": h.get("x-amz-version-id"), "mode": h.get("x-amz-object-lock-mode"),
                "retain_until": parse_time(h.get("x-amz-object-lock-retain-until-date"))}

    def lock_configuration(self, bucket):
        """GetObjectLockConfiguration: {enabled, mode, days, years} of the bucket's default,
        or None when the bucket has no Object Lock."""
        try:
            _, _, body = self.request("GET", bucket, query={"object-lock": ""})
        except S3Error as exc:
            if exc.code == NO_LOCK_CONFIG:
                return None
            raise
        root = ET.fromstring(body)  # noqa: S314
        return {"enabled": _text(root, "ObjectLockEnabled") == "Enabled",
                "mode": _text(root, "Rule/DefaultRetention/Mode"),
                "days": _text(root, "Rule/DefaultRetention/Days"),
                "years": _text(root, "Rule/DefaultRetention/Years")}

    def put_retention(self, bucket, key, version, mode, until):
        body = (f'<Retention xmlns="{_NS[1:-1]}"><Mode>{mode}</Mode>'
                f"<RetainUntilDate>{iso(until)}</RetainUntilDate></Retention>").encode()
        query = {"retention": ""}
        if version:
            query["versionId"] = version
        self.request("PUT", bucket, key, query, body=body,
                     headers={"content-type": "application/xml"})

    def get_retention(self, bucket, key, version=None):
        """GetObjectRetention: {mode, retain_until}, or None when the version has none."""
        query = {"retention": ""}
        if version:
            query["versionId"] = version
        try:
            _, _, body = self.request("GET", bucket, key, query)
            root = ET.fromstring(body)  # noqa: S314
        except S3Error as exc:
            if exc.code in ("NoSuchObjectLockConfiguration", "ObjectLockConfigurationNotFound"):
                return None
            if exc.status not in (500, 501):
                raise
            root = None
        except ET.ParseError:
            root = None
        if root is None or root.tag not in ("Retention", _NS + "Retention"):
            # a server without this call (moto answers with the object itself): the
            # version's HeadObject carries the same two values
            got = self.head(bucket, key, version)
            return {"mode": got["mode"], "retain_until": got["retain_until"]} \
                if got["mode"] else None
        return {"mode": _text(root, "Mode"),
                "retain_until": parse_time(_text(root, "RetainUntilDate"))}

    def put(self, bucket, key, data):
        """PutObject: the new version's id (None on an unversioned bucket)."""
        _, h, _ = self.request("PUT", bucket, key, body=data)
        return h.get("x-amz-version-id")

    def delete(self, bucket, key, version=None):
        """DeleteObject: {delete_marker, version} of what the server did."""
        _, h, _ = self.request("DELETE", bucket, key, {"versionId": version} if version else {})
        return {"delete_marker": h.get("x-amz-delete-marker") == "true",
                "version": h.get("x-amz-version-id")}


def _shared_credentials(profile=None):
    """(access, secret, token) of PROFILE in the shared credentials file (env_auth's
    ~/.aws/credentials, as rclone reads it), or Nones."""
    import configparser

    path = os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or os.path.expanduser(
        "~/.aws/credentials")
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, OSError, UnicodeDecodeError):
        return None, None, None
    name = profile or os.environ.get("AWS_PROFILE") or "default"
    if not parser.has_section(name):
        return None, None, None
    got = parser[name]
    return (got.get("aws_access_key_id"), got.get("aws_secret_access_key"),
            got.get("aws_session_token"))


def _q(text, safe=""):
    return urllib.parse.quote(str(text), safe="-_.~" + safe)


def _text(root, path):
    node = root.find("/".join(_NS + p for p in path.split("/")))
    if node is None:
        node = root.find(path)  # an answer without the namespace
    return node.text if node is not None else None


def _error(exc, method, bucket, key):
    code, message = "", ""
    with contextlib.suppress(Exception):
        body = exc.read()
        if body:
            root = ET.fromstring(body)  # noqa: S314
            code, message = _text(root, "Code") or "", _text(root, "Message") or ""
    code = code or {403: "AccessDenied", 404: "NoSuchKey"}.get(exc.code, f"HTTP{exc.code}")
    where = f"{bucket}/{key}" if key else bucket
    return S3Error(f"S3 {method} {where}: {code} ({exc.code})" + (f": {message}" if message
                                                                 else ""),
                   code, exc.code)


# --- Object Lock on what a job uploads --------------------------------------------------


def no_lock_message(bucket):
    return f"bucket {bucket} has no Object Lock configuration; create it with object lock enabled"


class ObjectLock:
    """A job's `object_lock_days` and `object_lock_mode`: after an upload is checked, each
    object version it wrote gets a retention until now + days. What it locked in a run is
    kept for the job's status (`record()`)."""

    def __init__(self, days, mode="COMPLIANCE", seconds=None):
        self.days, self.mode = days, mode
        self.seconds = seconds if seconds is not None else days * 86400
        self.locked = []  # (dest, objects, retain_until) of this run
        self._buckets = {}  # bucket -> checked (a bucket's configuration is asked once)
        self._mutex = threading.Lock()  # bundles upload from several threads

    @classmethod
    def for_options(cls, options):
        days = (options or {}).get("object_lock_days")
        if not days:
            return None
        return cls(days, (options or {}).get("object_lock_mode") or "COMPLIANCE")

    def check_remote(self, rclone, remote):
        """Before a run does anything: REMOTE must be an S3 remote with keys."""
        try:
            Client.from_rclone(rclone, split_remote(remote)[0])
        except ConfigError as exc:
            raise ConfigError(f"object_lock_days is set, but remote {remote} cannot be "
                              f"locked: {exc}") from None

    def apply(self, rclone, dest, names, fresh=()):
        """Lock each of NAMES under DEST (just checked by the upload): the names in FRESH
        (written by this upload) up to now + days; the others only when they hold no
        retention (an earlier run that stopped before locking them). Returns the record."""
        remote, bucket, prefix = split_remote(dest)
        client = Client.from_rclone(rclone, remote)
        self._check_bucket(client, bucket)
        until = (utcnow() + datetime.timedelta(seconds=self.seconds)).replace(microsecond=0)
        count = 0
        for name in names:
            key = f"{prefix}/{name}" if prefix else name
            now_held = client.head(bucket, key)
            held = now_held["retain_until"]
            if held and held > utcnow() and (name not in fresh or held >= until):
                continue  # locked already, as long as asked or by an earlier run
            client.put_retention(bucket, key, now_held["version"], self.mode, until)
            got = client.get_retention(bucket, key, now_held["version"])  # read it back
            if not got or got["mode"] != self.mode or not got["retain_until"] \
                    or got["retain_until"] < until:
                raise RemoteError(f"{dest}/{name}: the server did not keep the retention "
                                  f"asked for ({self.mode} until {iso(until)}): {got}")
            count += 1
        rec = {"dest": dest, "mode": self.mode, "retain_until": iso(until), "objects": count}
        with self._mutex:
            self.locked.append(rec)
        return rec

    def _check_bucket(self, client, bucket):
        with self._mutex:
            if self._buckets.get(bucket):
                return
        conf = client.lock_configuration(bucket)
        if not conf or not conf["enabled"]:
            raise RemoteError(no_lock_message(bucket))
        with self._mutex:
            self._buckets[bucket] = True

    def record(self, previous=None):
        """What the job's status keeps: this run's lock, or (a run that locked nothing new)
        the previous run's, so the status still says until when the newest copy is held."""
        objects = sum(r["objects"] for r in self.locked)
        if not objects and isinstance(previous, dict) and previous.get("retain_until"):
            return previous
        if not objects:
            return {"mode": self.mode, "days": self.days, "retain_until": None, "objects": 0}
        return {"mode": self.mode, "days": self.days, "objects": objects,
                "retain_until": min(r["retain_until"] for r in self.locked if r["objects"]),
                "dests": sorted({r["dest"] for r in self.locked})}


# The lock of the job being run (jobs.run): every upload it makes, on whichever path
# (bundles, db versions, sealed files, day folders), locks what it proved.
_active = []


@contextlib.contextmanager
def locking(lock):
    _active.append(lock)
    try:
        yield lock
    finally:
        _active.pop()


def active():
    return _active[-1] if _active else None
