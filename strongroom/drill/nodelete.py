"""The drill's check that the upload credentials cannot delete: a thief of a host's keys
must not be able to erase its off-site copies.

For a job whose remote is on S3, a few bytes go to <prefix>/.strongroom-probe/<host> with
the job's own keys (locked as the job's uploads are, when it has object_lock_days), then
DeleteObject is tried on it without a versionId and with the version just written. The
check passes when the server refuses (AccessDenied: a key without s3:DeleteObject, or the
version is locked); a delete without a versionId that only leaves a delete marker hides the
key but keeps the version, so only the versioned delete decides. It fails when a delete
took the probe's bytes away. This is the one write a drill makes to a remote; the probe's
key is the same each time, so probes do not pile up beyond the versions a lock holds.
"""

import datetime
import socket

from ..core import remote, s3api
from ..core.errors import ConfigError, StrongroomError
from .base import Artifact, Plan

PROBE_DIR = ".strongroom-probe"
PROBE_BODY = b"strongroom no-delete probe: safe to ignore\n"
PROBE_LOCK = datetime.timedelta(days=1)  # a locked probe is held this long, not the job's N
CAN_DELETE = ("the upload credentials can delete: anyone holding them can erase the "
              "backups; use a key without s3:DeleteObject or turn on Object Lock")


def _s3_remote(job, ctx):
    """(rclone, remote) of the job's S3 remote, or None when it has none."""
    o = job.get("options") or {}
    dest = o.get("remote")
    if not dest or ":" not in dest:
        return None
    rc = remote.Rclone(remote.rclone_config(o.get("rclone_config"), ctx.config_dir))
    if s3api.section(rc, s3api.split_remote(dest)[0]).get("type") != "s3":
        return None
    return rc, dest


def plan(name, job, ctx):
    """A NoDeletePlan for a job with an S3 remote, when the drill reads remotes."""
    if ctx.source not in ("remote", "both"):
        return None
    found = _s3_remote(job, ctx)
    return NoDeletePlan(name, job, *found) if found else None


class NoDeletePlan(Plan):
    kind = "no_delete"
    what_store = "remote"

    def __init__(self, name, job, rclone, dest):
        super().__init__(name, ("remote",))
        self.rclone, self.dest = rclone, dest
        self.lock_mode = (job.get("options") or {}).get("object_lock_mode") or "COMPLIANCE"
        self.locks = bool((job.get("options") or {}).get("object_lock_days"))

    def targets(self, source):
        return [self.dest]

    def nothing(self):
        return f"no S3 remote of job {self.job} to probe"

    def drill(self, name, source, work):
        remote_name, bucket, prefix = s3api.split_remote(self.dest)
        try:
            client = s3api.Client.from_rclone(self.rclone, remote_name)
        except ConfigError as exc:
            # rclone may hold keys this check cannot read (an instance role): the check is
            # not made, and that is said, but the copies themselves were drilled
            return Artifact(self.kind, name, self.job, "remote", "warning",
                            message=f"the no-delete check was not made: {exc}")
        key = "/".join(p for p in (prefix, PROBE_DIR, socket.gethostname()) if p)
        try:
            version = client.put(bucket, key, PROBE_BODY)
        except s3api.S3Error as exc:
            raise StrongroomError(f"the probe {bucket}/{key} could not be written with the "
                                  f"job's keys: {exc}") from None
        if self.locks:  # as the job's uploads are: the probe shows what protects them
            client.put_retention(bucket, key, version, self.lock_mode,
                                 s3api.utcnow().replace(microsecond=0) + PROBE_LOCK)
        said = []
        try:
            plain = client.delete(bucket, key)
        except s3api.S3Error as exc:
            if exc.code != "AccessDenied":
                raise
            said.append("a DeleteObject was refused (AccessDenied)")
        else:
            if not plain["delete_marker"] or not version:
                return self._failed(name, f"a DeleteObject of {bucket}/{key} removed it")
            said.append("a DeleteObject without a versionId only left a delete marker")
        if version:
            try:
                client.delete(bucket, key, version)
            except s3api.S3Error as exc:
                if exc.code != "AccessDenied":
                    raise
                held = client.get_retention(bucket, key, version)
                why = (f"the version is locked ({held['mode']} until "
                       f"{s3api.iso(held['retain_until'])})" if held and held["retain_until"]
                       and held["retain_until"] > s3api.utcnow() else "AccessDenied")
                said.append(f"a DeleteObject of its version was refused: {why}")
            else:
                return self._failed(name, f"a DeleteObject of version {version} of "
                                          f"{bucket}/{key} removed it")
        return Artifact(self.kind, name, self.job, "remote", "ok", files=1,
                        bytes=len(PROBE_BODY),
                        message="the upload credentials cannot delete: " + "; ".join(said))

    def _failed(self, name, how):
        return Artifact(self.kind, name, self.job, "remote", "error", files=1,
                        bytes=len(PROBE_BODY), message=f"{CAN_DELETE} ({how})")
