"""Which layers protect a job's backups, for `status --json` and the report page:

- local_immutable: the local copy carries chattr +i (true/false), as the job's last run
  recorded it; null when the job's type records no such state;
- remote_lock: the S3 Object Lock on its newest off-site copy ({mode, retain_until, locked});
  locked is false once retain_until has passed (the server then lets a delete through);
  null when nothing is locked;
- encrypted: its off-site copies are sealed for age recipients (options.encrypt_to, on a
  job with a remote).
"""

from datetime import datetime

# what a snapshot's status says of its chattr +i (snapshots.create: report["applied"])
_APPLIED = {"yes": True, "no": False, "partial": False}


def _local_immutable(st):
    snap = st.get("snapshot")
    if not isinstance(snap, dict) or "immutable" not in snap:
        return None
    value = snap["immutable"]
    return value if isinstance(value, bool) else _APPLIED.get(value, False)


def _remote_lock(st, now):
    lock = st.get("object_lock")
    if not isinstance(lock, dict) or not isinstance(lock.get("retain_until"), str):
        return None
    try:
        until = datetime.strptime(lock["retain_until"], "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=now.tzinfo)
    except ValueError:
        return None
    return {"mode": lock.get("mode"), "retain_until": lock["retain_until"],
            "locked": until > now}


def protection(job, st, now):
    """The protection of JOB (a loaded job file) from its status ST, at NOW (aware UTC)."""
    st = st if isinstance(st, dict) else {}
    opts = job.get("options") or {}
    return {"local_immutable": _local_immutable(st),
            "remote_lock": _remote_lock(st, now),
            # sealed copies need a remote to go to: a job without one encrypts nothing
            "encrypted": bool(opts.get("encrypt_to") and opts.get("remote"))}
