"""Re-verification of remote copies: every object a job put off-site is read back and
hashed at least once every `verify_days`, a share per run.

An upload that proved its files by SHA-256 records them in the job's ledger
(strongroom/reverify/ledger.py); after each good run of the job, `after_run` lists the
job's remote once (a deleted object is damage, found on the next run), re-reads the objects
the rotation chooses (strongroom/reverify/rotation.py) and compares each SHA-256 with the
ledger's. An object on the remote without an entry (uploaded before the ledger, or by a
command outside a job) is adopted on its first read: its expected hash is its local copy's
when there is one, else what the remote returns (trust on first use).

Damage (another SHA-256, another size, a missing object) fails the run, stays in the ledger
and fails every later run, naming the object, until a read finds the recorded bytes again
(`strongroom reverify JOB --repair` re-uploads a good local copy, after moving the damaged
object aside as <name>.damaged-<UTC stamp>).
"""

from datetime import UTC, datetime, timedelta

from ..core.errors import ERROR, OK, WARNING, StrongroomError
from ..core.remote import RemoteError
from ..crypt import fetch
from . import read, rotation, targets
from .ledger import ADOPTED_FIRST_READ, ADOPTED_LOCAL, Ledger, LedgerError, iso

# a sealed object with no ledger entry: expected to be what its sidecar records
ADOPTED_SIDECAR = "adopted from its sidecar (ciphertext checked; plaintext not: no key)"

BATCH = 64  # objects read per rclone call; the ledger is saved after each batch

__all__ = ["Ledger", "LedgerError", "after_run", "forget", "ledger_for", "repair",
           "verify", "verify_job"]


def ledger_for(paths, job):
    """The ledger an upload of this job records into; None when the job re-verifies
    nothing (verify_days 0, no remote), or when the ledger cannot be read: the upload goes
    ahead (an off-site copy matters more), and the re-verification after the job's work
    fails, naming the ledger."""
    try:
        target = targets.target(job, paths)
        if target is None:
            return None
        return Ledger(targets.ledger_path(paths, job["name"]), target.root)
    except StrongroomError:
        return None


def _damage(entry, reason, now):
    old = entry.get("damaged")
    if old and old.get("reason") == reason:
        return False
    entry["damaged"] = {"reason": reason, "found": iso(now)}
    return True


def _short(sha):
    return sha[:12] if sha else "-"


def verify(target, ledger, now, window, period, everything=False, progress=None):
    """Re-read what the rotation chooses; returns the report (the status's `verify` and
    more: notes, adopted, cleared). RemoteError when the remote cannot be listed or read;
    the ledger then holds only what was read before."""
    progress = progress or (lambda text: None)
    objects = ledger.objects
    listed = read.listing(target.rclone, target.root, target.scope,
                          tolerate_missing=not objects)
    warnings, notes = [], []  # warnings make an ok run a warning; notes are said
    if ledger.ignored:
        warnings.append(f"ignored {len(ledger.ignored)} ledger entry(ies) naming no object "
                        "under the remote: " + ", ".join(ledger.ignored[:5]))
    if ledger.moved_aside:  # said once, by the first re-verification after the change
        warnings.append(f"the job's remote changed: the previous ledger is kept as "
                        f"{ledger.moved_aside}")
        ledger.moved_aside = None
    # deleted on purpose (a pruned database version), else a deletion is damage
    missing = sorted(n for n in objects if n not in listed)
    gone = set(target.pruned(missing, list(listed)) if target.pruned else ())
    for name in sorted(gone):
        del objects[name]
    if gone:
        notes.append(f"{len(gone)} pruned version(s) no longer tracked")
    for name in missing:
        if name not in gone:
            _damage(objects[name], "missing on the remote", now)
    resized = []  # a replaced mutable object (a chain manifest) is read now, whatever due
    for name, entry in objects.items():
        if name in listed and listed[name] != entry["size"]:
            if entry.get("mutable"):
                resized.append(name)
            else:
                _damage(entry, f"size {listed[name]} on the remote, {entry['size']} "
                               "uploaded", now)
    new = sorted(n for n in listed if n not in objects and target.wanted(n))
    # what is worth reading: neither missing nor of another size now (damage already,
    # by the listing); an object back at its size is read, and clears when it is good
    readable = {n: e for n, e in objects.items() if n in listed and (
        e.get("mutable") or listed[n] == e["size"])}
    chosen = rotation.choose(readable, now, window, period, everything)
    todo = chosen + [n for n in resized if n not in chosen] + new
    progress(f"re-reading {len(todo)} of {len(objects) + len(new)} object(s) on {target.root}")
    cleared, adopted, checked = [], [], 0
    for i in range(0, len(todo), BATCH):
        batch = todo[i:i + BATCH]
        got, target.method = read.hashes(target.rclone, target.root, batch, target.method)
        for name in batch:
            sha = got.get(name)
            if name in objects:
                entry = objects[name]
                if sha is None:
                    _damage(entry, "missing on the remote", now)
                elif sha == entry["sha256"]:
                    if entry.pop("damaged", None):
                        cleared.append(name)
                    entry["verified"] = iso(now)
                elif entry.get("mutable") and target.local_sha(name)[0] == sha:
                    # replaced by the job's own kind of upload run outside the job
                    entry.update(sha256=sha, size=listed[name], verified=iso(now))
                    if entry.pop("damaged", None):
                        cleared.append(name)
                else:
                    _damage(entry, f"SHA-256 differs (remote {_short(sha)}, recorded "
                                   f"{_short(entry['sha256'])})", now)
            elif sha is not None:
                local_sha, local_size = target.local_sha(name)
                # a sealed X.age has no local copy of its bytes: its sidecar says them
                # (the ciphertext is checked; the plaintext is not, without the key)
                sealed_sha, bad_sidecar = (None, None) if local_sha else \
                    fetch.sidecar_says(target.rclone, target.root, name)
                entry = {"size": listed[name], "sha256": local_sha or sealed_sha or sha,
                         "uploaded": iso(now), "verified": None,
                         "adopted": ADOPTED_LOCAL if local_sha else ADOPTED_SIDECAR
                         if sealed_sha else ADOPTED_FIRST_READ}
                if target.is_mutable(name):
                    entry["mutable"] = True
                if local_sha and (local_sha != sha or local_size != listed[name]):
                    entry["damaged"] = {"reason": f"differs from the local copy (remote "
                                                  f"{_short(sha)}, local {_short(local_sha)})",
                                        "found": iso(now)}
                elif bad_sidecar or (sealed_sha and sealed_sha != sha):
                    entry["damaged"] = {"reason": bad_sidecar or (
                        f"differs from its sidecar (remote {_short(sha)}, sidecar "
                        f"{_short(sealed_sha)}); the plaintext was not checked (no key)"),
                        "found": iso(now)}
                else:
                    entry["verified"] = iso(now)
                objects[name] = entry
                adopted.append(name)
            checked += 1
        ledger.save()
    if not todo:
        ledger.save()  # missing objects and pruned versions are recorded all the same
    fresh, oldest = rotation.coverage(objects, now, window)
    damaged = sorted(n for n, e in objects.items() if e.get("damaged"))
    return {
        "window_days": round(window.total_seconds() / 86400),
        "objects": len(objects),
        "verified": fresh,
        "coverage_ratio": round(fresh / len(objects), 6) if objects else 1.0,
        "oldest_verified_age_seconds": oldest,
        "checked_this_run": checked,
        "damaged": damaged,
        "method": target.method or _method_guess(target),
        "error": None,
        "remote": target.root,
        "reasons": {n: objects[n]["damaged"]["reason"] for n in damaged},
        "adopted": adopted,
        "cleared": cleared,
        "notes": notes,
        "warnings": warnings,
    }


def _method_guess(target):
    """The method a run that read nothing would have used: a local folder has its hash."""
    local = target.rclone.local_path(target.root)
    return read.HASH if local is not None else read.DOWNLOAD


def _failed(target, window, ledger, error, now):
    """The report of a run that could not list or read the remote."""
    objects = ledger.objects if ledger else {}
    fresh, oldest = rotation.coverage(objects, now, window)
    damaged = sorted(n for n, e in objects.items() if e.get("damaged"))
    return {"window_days": round(window.total_seconds() / 86400), "objects": len(objects),
            "verified": fresh,
            "coverage_ratio": round(fresh / len(objects), 6) if objects else 1.0,
            "oldest_verified_age_seconds": oldest, "checked_this_run": 0,
            "damaged": damaged, "method": target.method or _method_guess(target),
            "error": error,
            "remote": target.root,
            "reasons": {n: objects[n]["damaged"]["reason"] for n in damaged},
            "adopted": [], "cleared": [], "notes": [], "warnings": []}


def refresh(report, job, paths, now=None):
    """The report with the ledger's counts as they are now (after a repair), no read."""
    target = targets.target(job, paths)
    now = now or datetime.now(UTC)
    window = timedelta(days=targets.verify_days(job))
    objects = Ledger(targets.ledger_path(paths, job["name"]), target.root).objects
    fresh, oldest = rotation.coverage(objects, now, window)
    damaged = sorted(n for n, e in objects.items() if e.get("damaged"))
    return {**report, "objects": len(objects), "verified": fresh,
            "coverage_ratio": round(fresh / len(objects), 6) if objects else 1.0,
            "oldest_verified_age_seconds": oldest, "damaged": damaged,
            "reasons": {n: objects[n]["damaged"]["reason"] for n in damaged}}


def verify_job(job, paths, now=None, everything=False, progress=None):
    """(report, target) of one job's re-verification; (None, None) for a job that
    re-verifies nothing."""
    target = targets.target(job, paths)
    if target is None:
        return None, None
    now = now or datetime.now(UTC)
    window = timedelta(days=targets.verify_days(job))
    ledger = None
    try:
        ledger = Ledger(targets.ledger_path(paths, job["name"]), target.root)
        return verify(target, ledger, now, window, targets.period(job), everything,
                      progress), target
    except (LedgerError, RemoteError) as exc:
        return _failed(target, window, ledger, str(exc), now), target


def damage_lines(report, name):
    out = [f"{n}: {report['reasons'][n]}" for n in report["damaged"]]
    if out:
        out.append(f"run `strongroom reverify {name} --repair` to re-upload from a good "
                   "local copy (the damaged object is kept aside)")
    return out


def status_view(report):
    """The status file's `verify` (contract: exactly these keys)."""
    keys = ("window_days", "objects", "verified", "coverage_ratio",
            "oldest_verified_age_seconds", "checked_this_run", "damaged", "method", "error")
    return {k: report[k] for k in keys}


def after_run(job, paths, outcome, now=None):
    """The runner's hook: after a run that succeeded or warned, re-verify the job's remote
    share; damage or an unreadable remote turns the outcome into an error."""
    if outcome.get("exit_code") not in (OK, WARNING):
        return outcome
    report, target = verify_job(job, paths, now)
    if report is None:
        return outcome
    outcome = dict(outcome)
    outcome["extra"] = {**(outcome.get("extra") or {}), "verify": status_view(report)}
    lines = [f"re-verified {report['checked_this_run']} of {report['objects']} object(s) on "
             f"{target.root} by {report['method']}; coverage {report['coverage_ratio']}"]
    lines += [f"note: {n}" for n in report["notes"]]
    lines += [f"warning: {n}" for n in report["warnings"]]
    lines += [f"{n}: reads back good again" for n in report["cleared"]]
    if report["adopted"]:
        lines.append(f"adopted {len(report['adopted'])} object(s) already on the remote")
    if report["error"]:
        message = f"re-verification of {target.root} failed: {report['error']}"
        outcome.update(exit_code=ERROR, message=message)
        lines.append(message)
    elif report["damaged"]:
        message = (f"re-verification found {len(report['damaged'])} damaged object(s) on "
                   f"{target.root}: " + "; ".join(
                       f"{n} ({report['reasons'][n]})" for n in report["damaged"][:10]))
        outcome.update(exit_code=ERROR, message=message)
        lines += damage_lines(report, job["name"])
    elif report["warnings"] and outcome["exit_code"] == OK:
        outcome["exit_code"] = WARNING
        outcome["message"] = f"{outcome.get('message', '')}; {report['warnings'][0]}"
    out = outcome.get("output", "")
    outcome["output"] = (out + "\n" if out else "") + "\n".join(lines)
    return outcome


def _stamp(now):
    return now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def repair(job, paths, now=None, progress=None):
    """Re-upload each damaged object from a local copy whose SHA-256 is the recorded one,
    after moving the damaged object aside. Returns [{object, result, steps}]."""
    target = targets.target(job, paths)
    if target is None:
        raise StrongroomError(f"job {job['name']} re-verifies nothing (no remote, or "
                              "verify_days is 0)")
    ledger = Ledger(targets.ledger_path(paths, job["name"]), target.root)
    return repair_target(target, ledger, now or datetime.now(UTC), progress)


def repair_target(target, ledger, now, progress=None):
    """repair() on one target and its ledger."""
    progress = progress or (lambda text: None)
    listed = read.listing(target.rclone, target.root, target.scope, tolerate_missing=False)
    out = []
    for name in sorted(n for n, e in ledger.objects.items() if e.get("damaged")):
        entry = ledger.objects[name]
        steps = []

        def step(text, steps=steps):
            steps.append(text)
            progress(text)

        local = target.local_file(name)
        local_sha = target.local_sha(name)[0]
        if local is None or local_sha != entry["sha256"]:
            where = (f"{target.local / name}: " + ("missing" if local is None else
                     f"SHA-256 {_short(local_sha)}, recorded {_short(entry['sha256'])}")
                     if target.local else "this job type keeps no local copy")
            out.append({"object": name, "result": "unrepairable", "steps": steps,
                        "message": f"{name}: no local copy with the recorded SHA-256 "
                                   f"({where}); put a good copy there and run --repair "
                                   f"again, or `strongroom reverify {target.job} --forget "
                                   f"{name}` to stop tracking it (the damaged object is "
                                   "kept aside)"})
            continue
        try:
            if name in listed:
                aside = f"{name}.damaged-{_stamp(now)}"
                read.move_aside(target.rclone, target.root, name, aside)
                step(f"moved the damaged {name} aside as {aside}")
            read.put(target.rclone, local, target.root, name)
            step(f"uploaded {local} as {name}")
            got, target.method = read.hashes(target.rclone, target.root, [name],
                                             target.method)
        except RemoteError as exc:
            out.append({"object": name, "result": "failed", "steps": steps,
                        "message": f"{name}: repair failed: {exc}"})
            continue
        if got.get(name) != entry["sha256"]:
            out.append({"object": name, "result": "failed", "steps": steps,
                        "message": f"{name}: the re-uploaded copy reads back with SHA-256 "
                                   f"{_short(got.get(name))}, not {_short(entry['sha256'])}"})
            continue
        step(f"re-read {name}: SHA-256 matches the ledger")
        entry.pop("damaged", None)
        entry["verified"] = iso(now)
        ledger.save()
        out.append({"object": name, "result": "repaired", "steps": steps,
                    "message": f"{name}: repaired"})
    return out


def forget(job, paths, names, now=None, progress=None):
    """Stop tracking damaged objects that cannot be repaired: each one still on the remote
    is moved aside first (never deleted). Returns the steps said."""
    progress = progress or (lambda text: None)
    target = targets.target(job, paths)
    if target is None:
        raise StrongroomError(f"job {job['name']} re-verifies nothing (no remote, or "
                              "verify_days is 0)")
    now = now or datetime.now(UTC)
    ledger = Ledger(targets.ledger_path(paths, job["name"]), target.root)
    unknown = [n for n in names if not (ledger.objects.get(n) or {}).get("damaged")]
    if unknown:
        raise StrongroomError("--forget takes damaged objects of the ledger only; not "
                              "damaged or not tracked: " + ", ".join(unknown))
    listed = read.listing(target.rclone, target.root, target.scope, tolerate_missing=False)
    steps = []
    for name in names:
        if name in listed:
            aside = f"{name}.damaged-{_stamp(now)}"
            read.move_aside(target.rclone, target.root, name, aside)
            steps.append(f"moved the damaged {name} aside as {aside}")
            progress(steps[-1])
        del ledger.objects[name]
        ledger.save()
        steps.append(f"{name}: no longer tracked")
        progress(steps[-1])
    return steps
