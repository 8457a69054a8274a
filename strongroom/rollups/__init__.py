"""Daily folders and weekly rollups, with nothing local deleted before it is proven elsewhere.

  <dest>/YYYY-MM-DD/              one per day: each source under its own name, live SQLite
                                  databases copied with the backup API, manifest.json
  <dest>/rollups/weekly_<start>_<end>.tar.zst
                                  day folders, packed, tested (zstd -t and every member
                                  against its day's manifest), then renamed; no day of
                                  another rollup lies between <start> and <end>
  <dest>/.rollups-state.json      which days and rollups are verified where, and when each
                                  rollup was made (what retention goes by)

A day folder is deleted locally only when it is verified on the remote AND packed into a
rollup that is itself verified (on the remote, or tested locally when there is no remote),
unless `delete_days: after_upload` or `never` is set (on either job of the dest: the most
conservative set applies, see delete_days_for). So the weekly rollup always finds the days
it must pack, whatever order the jobs run in.
"""

import bisect
import contextlib
import contextvars
import hashlib
import json
import os
import re
import subprocess
import tarfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

from .. import manifest
from ..core import fsutil, remote, safeio, sqlite
from ..core.errors import EmptySource, StrongroomError

DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
ROLLUP_RE = re.compile(r"^weekly_(\d{8})_(\d{8})\.tar\.zst$")
STATE = ".rollups-state.json"
MANIFEST = "manifest.json"
DB_SUFFIXES = (".db", ".sqlite", ".sqlite3")
CHUNK = 1 << 20


class RollupError(StrongroomError):
    pass


# --- the day a run is for ----------------------------------------------------------------

# `strongroom run JOB --date D` sets this around the job; the daily and rollup jobs read it
# (jobs.run calls every handler alike, so the day cannot travel as an argument).
_DATED = contextvars.ContextVar("strongroom_rollups_dated", default=None)


@contextlib.contextmanager
def dated(day):
    """Run the daily and rollup jobs inside this block as on `day` (a date, or None)."""
    token = _DATED.set(day)
    try:
        yield
    finally:
        _DATED.reset(token)


def dated_day():
    """The day set by `dated`, or None for a run on today's date."""
    return _DATED.get()


def parse_day(text, what="--date"):
    """A YYYY-MM-DD that is a real day, today or earlier. A day folder holds the sources as
    they are when it is made, so one for a day to come would claim a state nobody saw."""
    try:
        if not DAY_RE.match(text or ""):
            raise ValueError
        day = datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        raise RollupError(f"{what} wants a day as YYYY-MM-DD, got {text!r}") from None
    if day > _today():
        raise RollupError(f"{what} {text} is in the future (today is "
                          f"{_today().isoformat()}); give today or an earlier day")
    return day


# --- state -------------------------------------------------------------------------------


def read_state(dest):
    """Which days and rollups are verified where. Unreadable, or of another shape (it is
    input like any other), it counts as nothing verified: things are checked again, and
    nothing is deleted on its word."""
    try:
        data = safeio.load_json(safeio.read_regular(Path(dest) / STATE), STATE)
    except (OSError, ValueError, safeio.UnsafePath):
        data = {}
    if not isinstance(data, dict):
        data = {}
    days_ = data.get("days") if isinstance(data.get("days"), dict) else {}
    rolls = data.get("rollups") if isinstance(data.get("rollups"), dict) else {}
    data["days"] = {d: e for d, e in days_.items() if DAY_RE.match(d) and isinstance(e, dict)}
    data["rollups"] = {r: e for r, e in rolls.items() if ROLLUP_RE.match(r)
                       and isinstance(e, dict) and isinstance(e.get("days"), list)
                       and all(isinstance(d, str) and DAY_RE.match(d) for d in e["days"])}
    return data


def write_state(dest, state):
    fsutil.atomic_write_json(Path(dest) / STATE, state)


def days(dest):
    d = Path(dest)
    return sorted(p.name for p in d.iterdir() if p.is_dir() and DAY_RE.match(p.name)) \
        if d.is_dir() else []


def rollups(dest):
    d = Path(dest) / "rollups"
    return sorted(p.name for p in d.iterdir() if ROLLUP_RE.match(p.name)) if d.is_dir() else []


# --- the daily folder --------------------------------------------------------------------



def _names(sources):
    names = {}
    for s in sources:
        name = Path(s).name
        if name in names or name in ("db", MANIFEST):
            raise RollupError(f"two sources would share the folder name '{name}' "
                              f"({names.get(name, name)} and {s}); rename one")
        names[name] = s
    return names


def make_day(sources, dest, dbs=(), exclude=(), today=None):
    """Build <dest>/<today> (under a temporary name, renamed when complete).

    Returns the manifest, or None when the day's folder exists already, or when the state
    knows the day (uploaded, or packed into a rollup, and deleted since): a run for a past
    day (--date) must not make a second copy of it, holding other contents than the first.
    """
    today = today or _today()
    dest = Path(dest)
    final = dest / today.isoformat()
    if final.exists():
        return None
    state = read_state(dest)
    if today.isoformat() in state["days"] or any(
            today.isoformat() in e["days"] for e in state["rollups"].values()):
        return None
    names = _names(sources)
    for s in sources:
        if not Path(s).is_dir():
            raise RollupError(f"source {s} is not a directory")
    dest.mkdir(parents=True, exist_ok=True)
    fsutil.clean_stale_temps(dest)
    tmp = dest / f"{fsutil.TEMP_PREFIX}{today.isoformat()}.{os.getpid()}"
    fsutil.rmtree_quiet(tmp)
    tmp.mkdir(mode=0o700)  # copies of the sources, .env files among them: owner only
    files, items = {}, []
    started = time.monotonic()
    try:
        for name, src in sorted(names.items()):
            src = Path(src)
            sel = manifest.Selection([], list(exclude) + (
                [f"/{dest.relative_to(src).as_posix()}/"] if dest.is_relative_to(src) else []))
            count = size = 0
            rels = manifest.walk(src, sel)
            live = {r for r in rels if Path(r).suffix in DB_SUFFIXES
                    and sqlite.is_database(src / r)}
            for rel in rels:
                path, out = src / rel, tmp / name / rel
                if any(rel == db + j for db in live for j in ("-wal", "-shm", "-journal")):
                    continue  # inside the database's consistent copy
                if rel in live:
                    sqlite.backup(path, out)  # a live database: never the raw file
                    digest = fsutil.sha256_file(out)
                else:
                    try:
                        digest = fsutil.copy_hashing(path, out)
                    except FileNotFoundError:
                        continue  # deleted while we walked
                n = out.stat().st_size
                files[f"{name}/{rel}"] = {"size": n, "sha256": digest}
                count, size = count + 1, size + n
            items.append({"category": name, "src": str(src), "dst": name, "files": count,
                          "bytes": size})
        if not files and not dbs:  # a folder of nothing, uploaded and kept, helps no one
            where = ", ".join(str(s) for s in sources)
            raise EmptySource(f"nothing to back up: {where} "
                              f"{'holds' if len(sources) == 1 else 'hold'} no files; put the "
                              f"files to keep a copy of each day in {where}, or set the job's "
                              "options.sources to the folders that hold them")
        for db in dbs:
            db = Path(db)
            if not sqlite.is_database(db):
                raise RollupError(f"db {db}: not a SQLite database (or missing)")
            out = tmp / "db" / db.name
            rep = sqlite.backup(db, out)
            files[f"db/{db.name}"] = {"size": out.stat().st_size,
                                      "sha256": fsutil.sha256_file(out)}
            items.append({"category": "db", "src": str(db), "dst": f"db/{db.name}",
                          "files": 1, "bytes": out.stat().st_size, "tables": rep["tables"]})
        doc = {"day": today.isoformat(), "created": _now(), "items": items, "files": files,
            "seconds": round(time.monotonic() - started, 3)}
        (tmp / MANIFEST).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n",
                                    encoding="utf-8")
        for rel, is_dir in fsutil.walk(tmp):
            if not is_dir:
                fsutil.fsync_file(tmp / rel)
        os.rename(tmp, final)
        fsutil.fsync_dir(dest)
    except BaseException:
        fsutil.rmtree_quiet(tmp)
        raise
    return doc


def load_manifest(folder):
    """A day's manifest, read without following links, every path and entry checked."""
    if Path(folder).is_symlink():
        raise RollupError(f"{folder} is a symlink, not a day folder; refusing to read "
                          "through it")
    try:
        with safeio.Root(folder) as root, root.open_read(MANIFEST) as fh:
            doc = safeio.load_json(fh.read(safeio.JSON_MAX + 1), MANIFEST)
    except FileNotFoundError:
        raise RollupError(f"{folder} has no {MANIFEST}") from None
    except (OSError, ValueError, safeio.UnsafePath) as exc:
        raise RollupError(f"{Path(folder) / MANIFEST} is unreadable: {exc}") from None
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(files, dict):
        raise RollupError(f"{Path(folder) / MANIFEST} lists no files")
    for rel, e in files.items():
        try:
            clean = safeio.clean_relpath(rel, "manifest path")
        except safeio.UnsafePath as exc:
            raise RollupError(f"{Path(folder) / MANIFEST}: {exc}") from None
        if clean != rel or rel == MANIFEST or not isinstance(e, dict) or not isinstance(
                e.get("size"), int) or not isinstance(e.get("sha256"), str):
            raise RollupError(f"{Path(folder) / MANIFEST} has a malformed entry {rel!r}")
    return doc


def _hash_inside(root, rel):
    h = hashlib.sha256()
    size = 0
    with root.open_read(rel) as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def check_folder(folder, doc=None):
    """Problems of a day folder against its manifest (empty: every file present and equal).
    Every file is read without following links: nothing outside the folder is read."""
    folder = Path(folder)
    doc = doc or load_manifest(folder)
    problems = []
    with safeio.Root(folder) as root:
        for rel, e in sorted(doc["files"].items()):
            try:
                size, digest = _hash_inside(root, rel)
            except FileNotFoundError:
                problems.append(f"{rel}: missing")
                continue
            except (OSError, safeio.UnsafePath) as exc:
                problems.append(f"{rel}: {exc}")
                continue
            if size != e["size"] or digest != e["sha256"]:
                problems.append(f"{rel}: differs from the manifest")
    present, folders = set(), set()
    for rel, is_dir in fsutil.walk(folder):
        (folders if is_dir else present).add(rel)
    problems += [f"{rel}: not in the manifest" for rel in
                 sorted(present - set(doc["files"]) - {MANIFEST})]
    expected = {"/".join(rel.split("/")[:i]) for rel in doc["files"]
                for i in range(1, rel.count("/") + 1)}
    problems += [f"{rel}/: a folder the manifest does not account for" for rel in
                 sorted(folders - expected)]
    return problems


# --- the weekly rollup -------------------------------------------------------------------


# zstd names its input before the error, shortened to its last 20 characters (a name cut
# in the middle); fed on stdin it says /*stdin*\ instead, and that prefix is dropped here:
# our message names the rollup in full
_ZSTD_STDIN = re.compile(r"^(?:zstd: )?/\*stdin\*\\ ?: ?")


def _zstd_error(stderr):
    lines = [_ZSTD_STDIN.sub("", line.strip()) for line in stderr.splitlines()]
    return "; ".join(line for line in lines if line) or "no message from zstd"


def _check_archive(path, dest_days, name=None):
    """zstd -t, then every member hashed against its day's manifest (all must be there)."""
    name = name or path.name
    with open(path, "rb") as fh:
        proc = subprocess.run(["zstd", "-q", "-t"], stdin=fh, capture_output=True,
                              text=True, check=False)
    if proc.returncode != 0:
        raise RollupError(f"{name}: zstd -t failed: {_zstd_error(proc.stderr)}")
    expected = {}
    for day, doc in dest_days.items():
        expected.update({f"{day}/{rel}": e for rel, e in doc["files"].items()})
        expected[f"{day}/{MANIFEST}"] = None
    seen = set()
    dec = subprocess.Popen(["zstd", "-q", "-d", "-c", str(path)], stdout=subprocess.PIPE)
    try:
        with tarfile.open(fileobj=dec.stdout, mode="r|") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                if m.name not in expected:
                    raise RollupError(f"{name}: unexpected member {m.name}")
                h = hashlib.sha256()
                fh = tar.extractfile(m)
                while chunk := fh.read(CHUNK):
                    h.update(chunk)
                e = expected[m.name]
                if e is not None and (m.size != e["size"] or h.hexdigest() != e["sha256"]):
                    raise RollupError(f"{name}: {m.name} differs from its manifest")
                seen.add(m.name)
    finally:
        dec.stdout.close()
        dec.wait()
    missing = sorted(set(expected) - seen)
    if missing:
        raise RollupError(f"{name}: {len(missing)} file(s) missing, e.g. {missing[0]}")


def _groups(candidates, packed, span):
    """The days to pack, as rollups of at most `span` days whose names tell the truth: a
    run of days is cut wherever a day of another rollup lies between two of them (a
    leftover older day is packed on its own, not under a name spanning other rollups'
    weeks), and a long run is cut into `span`-day pieces, the newest one whole."""
    packed = sorted(packed)
    runs = []
    for d in candidates:
        if runs:
            i = bisect.bisect_right(packed, runs[-1][-1])
            if not (i < len(packed) and packed[i] < d):
                runs[-1].append(d)
                continue
        runs.append([d])
    groups = []
    for run in runs:
        pieces = []
        while run:
            pieces.insert(0, run[-span:])
            run = run[:-span]
        groups += pieces
    return groups


def rollup_name(group):
    return f"weekly_{group[0].replace('-', '')}_{group[-1].replace('-', '')}.tar.zst"


def make_rollup(dest, span=None, today=None):
    """Pack every day folder not yet in a rollup (today's and later ones excluded) into
    rollups of at most `span` days (see _groups), every day checked before any is packed.

    Returns [(name, days), ...] oldest first, [] when there is nothing to pack.
    """
    span = _job_default("days") if span is None else span
    dest = Path(dest)
    state = read_state(dest)
    today = (today or _today()).isoformat()
    packed = {d for r in state["rollups"].values() for d in r["days"]}
    candidates = [d for d in days(dest) if d not in packed and d < today]
    if not candidates and not (days(dest) or rollups(dest) or state["days"] or state["rollups"]):
        raise EmptySource(f"nothing to roll up: {dest} holds no day folders yet; the daily job "
                          f"writing to {dest} makes one a day from its sources (put files in "
                          "them), or set the job's options.dest to that job's dest")
    if not candidates:
        return []
    docs = {}
    for d in candidates:
        doc = load_manifest(dest / d)
        problems = check_folder(dest / d, doc)
        if problems:
            raise RollupError(f"day folder {d} does not match its manifest, not packing it: "
                              + "; ".join(problems[:5]))
        docs[d] = doc
    made = []
    for group in _groups(candidates, packed, span):
        name = rollup_name(group)
        _pack(dest, name, group, {d: docs[d] for d in group})
        made.append((name, group))
    return made


def _pack(dest, name, group, docs):
    out_dir = dest / "rollups"
    out_dir.mkdir(exist_ok=True)
    fsutil.clean_stale_temps(out_dir)
    final = out_dir / name
    if final.exists():
        raise RollupError(f"{final} exists already and is not in the state; check it by hand")
    tmp = fsutil.temp_path(final)
    try:
        # a rollup packs copies of .env files and keys: owner only, from the first byte
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
            tar = subprocess.Popen(["tar", "-C", str(dest), "-cf", "-", "--", *group],
                                   stdout=subprocess.PIPE)
            z = subprocess.run(["zstd", "-q", "-3", "-T0", "-c"], stdin=tar.stdout,
                               stdout=out, stderr=subprocess.PIPE, check=False)
            tar.stdout.close()
            if tar.wait() != 0 or z.returncode != 0:
                raise RollupError(f"packing {name} failed: "
                                  f"{_zstd_error(z.stderr.decode(errors='replace'))}")
        _check_archive(tmp, docs, name)
        digest = fsutil.sha256_file(tmp)
        fsutil.commit(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    state = read_state(dest)
    # "created" is what retention orders rollups by: a name says which days a rollup
    # holds, not when it was made (a leftover older day is packed after newer weeks)
    state["rollups"][name] = {"days": group, "sha256": digest, "tested": True,
                              "remote": None, "created": _now(precise=True)}
    write_state(dest, state)


# --- the remote side and local retirement ------------------------------------------------


def upload_pending(dest, uploader, remote_path):
    """Upload (immutable) every day folder and rollup not yet verified on remote_path."""
    dest = Path(dest)
    done = []
    for d in days(dest):
        state = read_state(dest)
        if (state["days"].get(d) or {}).get("remote") == remote_path:
            continue
        target = remote.join(remote_path, d)
        uploader.run(dest / d, target, immutable=True)
        state = read_state(dest)
        state["days"][d] = {"remote": remote_path, "verified": _now()}
        write_state(dest, state)
        done.append(d)
    for r in rollups(dest):
        state = read_state(dest)
        entry = state["rollups"].get(r)
        if entry is None or entry.get("remote") == remote_path:
            continue
        uploader.run(dest / "rollups" / r, remote.join(remote_path, "rollups"), immutable=True)
        state = read_state(dest)
        state["rollups"][r]["remote"] = remote_path
        state["rollups"][r]["verified"] = _now()
        write_state(dest, state)
        done.append(r)
    return done


def made_at(dest, name, entry):
    """When a rollup was made (seconds since the epoch), for retention: what its state
    records. State written before that record existed has none; the archive's mtime
    stands in, as it is written once, by the pack, and renamed into place unchanged (a
    copy that did not keep the time reads as newer, so it is kept longer, never deleted
    before its time)."""
    created = entry.get("created")
    for fmt in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(created, fmt).replace(tzinfo=UTC).timestamp()
        except (TypeError, ValueError):
            continue
    try:
        return os.lstat(Path(dest) / "rollups" / name).st_mtime
    except OSError:
        return float("inf")  # gone meanwhile: nothing to delete


class Retired(list):
    """What retire deleted (a list, as it always was), and in `in_use` what it kept only
    because a restore was reading it: {name: "kept: in use by a restore (PID n)"}."""

    def __init__(self):
        super().__init__()
        self.in_use = {}

    def messages(self):
        return [f"{name}: {why}" for name, why in sorted(self.in_use.items())]


def _delete_unless_read(dest, name, path, remove, out):
    """Delete a day folder or a rollup unless a restore reads it (lock.reading): that one
    is kept this time and goes on a later run. Its in-use lock is held while it goes, so
    no restore starts on a half-deleted day."""
    from ..core.lock import Deleting

    claim = Deleting(dest, name)
    if not claim.acquire():
        out.in_use[name] = claim.message
        return
    try:
        remove(path)
    finally:
        claim.release()
    out.append(name)


# delete_days, from the one that deletes soonest to the one that never does
POLICIES = ("after_upload", "after_rollup", "never")
def _job_default(key, job_type="rollup"):
    from ..jobs.schema import default  # the job schema: the daily and rollup jobs' defaults

    return default(job_type, key)


DEFAULT_POLICY = _job_default("delete_days")  # the same for both jobs of a dest


def delete_days_for(dest, job, setting):
    """The delete_days a job's retire goes by: (policy, the other job it comes from or
    None). The job's own setting (None: not set) is recorded first in the dest's state.

    The daily and the rollup job share a dest and both retire its days, so either one's
    default would overrule what the user set on the other (a `never` on the daily job was
    undone by the rollup job's after_rollup). So the policies set explicitly for the dest
    go before any default, and of those (or, none set, of the defaults) the most
    conservative applies: deleting is what cannot be taken back. A record stays after its
    job is gone or moved to another dest, and errs on the side of keeping. State from
    before these records holds none, and the job's own setting applies as it did."""
    return _reconcile(dest, "delete_days", "policy", job, setting or DEFAULT_POLICY,
                      bool(setting), lambda v: v in POLICIES, POLICIES.index)


def _reconcile(dest, key, field, job, own, explicit, valid, rank):
    """Record the job's own value under state[key][job] and return (the value that
    applies, the other job it comes from or None): of the values set explicitly (none
    set: of all recorded), the one ranked most conservative. See delete_days_for."""
    state = read_state(dest)
    recorded = state.get(key)
    recorded = dict(recorded) if isinstance(recorded, dict) else {}
    recorded[job] = {field: own, "explicit": explicit, "recorded": _now()}
    state[key] = recorded
    write_state(dest, state)
    ok = {name: e for name, e in recorded.items()
          if isinstance(e, dict) and valid(e.get(field))}
    pool = {n: e for n, e in ok.items() if e.get("explicit") is True} or ok
    # ties go to the job's own record, so another job is named only when it decides
    name = max(pool, key=lambda n: (rank(pool[n][field]), n == job))
    return pool[name][field], (None if name == job else name)


DEFAULT_KEEP_ROLLUPS = _job_default("keep_rollups")  # the same for both jobs of a dest


def keep_rollups_for(dest, job, setting):
    """The keep_rollups a job's retire goes by: (count, the other job it comes from or
    None), reconciled as delete_days is (delete_days_for). Both jobs of a dest retire its
    rollups, and without a remote those are the only copies of the days packed into
    them: the daily job's default 12 deleted what a rollup job's `keep_rollups: 20` kept.
    So of the values set explicitly for the dest (none set: of the defaults) the largest
    applies. Recorded under `keep_rollups` in the state."""
    return _reconcile(dest, "keep_rollups", "count", job,
                      DEFAULT_KEEP_ROLLUPS if setting is None else setting,
                      setting is not None,
                      lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                      lambda v: v)


def retired_lines(dest, gone, has_remote, keep_rollups):
    """What a retire deleted, in words that are true: with a remote all of it is verified
    there; without one a day folder's day is held by a rollup kept here, and a rollup
    beyond keep_rollups takes with it the days no day folder or other rollup here holds."""
    if not gone:
        return []
    if has_remote:
        return [f"deleted locally (safe elsewhere): {', '.join(gone)}"]
    state = read_state(Path(dest))
    here = set(rollups(dest))
    held = {r: set(e["days"]) for r, e in state["rollups"].items() if r in here}
    gone_days = [n for n in gone if DAY_RE.match(n)]
    gone_rolls = [n for n in gone if not DAY_RE.match(n)]
    lines = []
    if gone_days:
        holders = sorted(r for r, ds in held.items() if ds & set(gone_days))
        lines.append(f"deleted day folder(s) {', '.join(gone_days)}: no remote; "
                     + (f"their days are held by the rollup(s) kept here: "
                        f"{', '.join(holders)}" if holders else
                        "no rollup holding them is kept (keep_rollups 0)"))
    if gone_rolls:
        kept_days = set(days(dest)).union(*held.values())
        lost = sorted({d for r in gone_rolls for d in
                       (state["rollups"].get(r) or {}).get("days", [])} - kept_days)
        lines.append(f"deleted rollup(s) beyond keep_rollups {keep_rollups}: "
                     f"{', '.join(gone_rolls)}: no remote; "
                     + (f"{len(lost)} day(s) no longer kept anywhere: {', '.join(lost)}"
                        if lost else "their days are still here as day folders or in "
                                     "other rollups"))
    return lines


def retire(dest, policy, has_remote, keep_rollups=DEFAULT_KEEP_ROLLUPS, today=None, made=()):
    """Delete local day folders (per policy) and old rollups that are safe elsewhere:
    beyond the newest `keep_rollups`, newest by when they were made (made_at). One that a
    restore is reading is kept (see Retired).

    A rollup made after now (by this clock: one put back since) is kept and takes none of
    the keep_rollups places, as snapshot retention does: counted, it would push out the
    one made a minute ago, the newest there is. `made`, the rollups this run has just
    made, are never deleted by it. A day folder goes only while a copy of it stays: on the
    remote, or (without one) a rollup that is here and not deleted in this same pass (else
    a clock put back took the day folders with the rollup just made of them)."""
    dest = Path(dest)
    state = read_state(dest)
    today = (today or _today()).isoformat()
    now = _clock()
    when = {r: made_at(dest, r, state["rollups"].get(r) or {}) for r in rollups(dest)}
    local = sorted(when, key=lambda r: (when[r], r))
    counted = [r for r in local if r in made or when[r] <= now]
    kept = set(counted[-keep_rollups:]) if keep_rollups else set()
    old = [r for r in counted if r not in kept and r not in made and (
        (state["rollups"].get(r) or {}).get("remote") or not has_remote)]
    # Without a remote, a day's copy is a rollup that is here and stays: not one deleted in
    # this pass, nor one deleted before (its days then stay as they are, folders). But
    # keep_rollups 0 (no job's setting: they take 1 or more) asks for no local copy at
    # all, and there the days go with their rollups, as they always did.
    stays = set(when) - set(old) if keep_rollups else None
    safe_rollup_days = {d for name, r in state["rollups"].items()
                        if r.get("tested") and (r.get("remote") or not has_remote and (
                            stays is None or name in stays))
                        for d in r["days"]}
    deleted = Retired()
    for d in days(dest):
        if d >= today or policy == "never":
            continue
        uploaded = bool((state["days"].get(d) or {}).get("remote")) or not has_remote
        if policy == "after_upload" and has_remote and uploaded or \
                policy == "after_rollup" and uploaded and d in safe_rollup_days:
            _delete_unless_read(dest, d, dest / d, fsutil.rmtree, deleted)
    for r in old:
        _delete_unless_read(dest, r, dest / "rollups" / r, Path.unlink, deleted)
    return deleted


def _clock():
    # the one clock of this module (what "today" and "now" are), so that a test can put it
    # back as a wrong system clock would
    return time.time()


def _today():
    return date.fromtimestamp(_clock())


def _now(precise=False):
    # precise: rollups made in one run (or within a second) still order by when they were
    return datetime.fromtimestamp(_clock(), UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ" if precise else "%Y-%m-%dT%H:%M:%SZ")


# --- restore -----------------------------------------------------------------------------


def restore(dest, target, day=None, rollup=None, fetch=None):
    """Restore one day (from its folder, or from the rollup holding it) or a whole rollup
    into `target`, a new directory, and check every file against the manifests.

    `fetch(kind, name, into)` brings a missing day folder or rollup from the remote.
    """
    dest, target = Path(dest), Path(target)
    if day and not DAY_RE.match(day):
        raise RollupError(f"--day wants YYYY-MM-DD, got {day!r}")
    if rollup and not ROLLUP_RE.match(rollup):
        raise RollupError(f"{rollup!r} is not a rollup name (weekly_YYYYMMDD_YYYYMMDD.tar.zst)")
    if target.exists():
        raise RollupError(f"{target} exists; restore goes into a new directory")
    with contextlib.ExitStack() as marks:
        source, fetched = _source(dest, day, rollup, fetch, marks)
        restored, path = _restore_from(source, target, day)
    return {"target": str(target), "days": restored, "from": str(path), "fetched": fetched}


def _source(dest, day, rollup, fetch, marks):
    """(("folder" | "rollup", path), fetched): what the restore reads, each local day
    folder or rollup marked in use on `marks` (lock.reading) before it is looked for, and
    until the restore is done: a retire meanwhile keeps it."""
    from ..core.lock import reading

    if day and not rollup:
        marks.enter_context(reading(dest, day))
        if (dest / day).is_dir():
            return ("folder", dest / day), False
        state = read_state(dest)
        holder = next((r for r, e in state["rollups"].items() if ROLLUP_RE.match(r)
                       and isinstance(e, dict) and day in (e.get("days") or [])), None)
        if holder:
            marks.enter_context(reading(dest, holder))
            if (dest / "rollups" / holder).is_file():
                return ("rollup", dest / "rollups" / holder), False
        if fetch is not None:
            return fetch(day, holder), True
        raise RollupError(f"day {day} is neither here nor in a local rollup; give "
                          "--remote to fetch it")
    marks.enter_context(reading(dest, rollup))
    path = dest / "rollups" / rollup
    if path.is_file():
        return ("rollup", path), False
    if fetch is not None:
        return fetch(None, rollup), True
    raise RollupError(f"no rollup {rollup} in {dest / 'rollups'}")


def _restore_from(source, target, day):
    """Stage the source's days beside target, check them, rename: (days, path read)."""
    made = fsutil.make_parents(target.parent)
    fsutil.clean_stale_restores(target.parent)  # only what a killed restore of ours left
    stage = fsutil.restore_temp(target)
    fsutil.rmtree_quiet(stage)
    stage.mkdir(mode=0o700)
    try:
        kind, path = source
        if kind == "folder":
            _copy_day(path, stage / path.name)
        else:
            _extract(path, stage, only=day)
        restored = sorted(p.name for p in stage.iterdir())
        if day and day not in restored:
            raise RollupError(f"day {day} is not in {path.name}")
        problems = [f"{d}/{p}" for d in restored for p in check_folder(stage / d)]
        if problems:
            raise RollupError("restored files do not match their manifest: "
                              + "; ".join(problems[:5]))
        os.chmod(stage, fsutil.default_dir_mode())
        os.rename(stage, target)
    except BaseException:
        fsutil.rmtree_quiet(stage)
        fsutil.remove_made(made)
        raise
    return restored, path


def _days_only(name, member):
    """A rollup holds day folders and nothing else (never a .git/, never a file on top)."""
    day, _, rest = name.partition("/")
    if not DAY_RE.match(day) or (not rest and not member.isdir()):
        return "a rollup holds day folders (YYYY-MM-DD/) only"
    return None


def _copy_day(folder, into):
    """A day folder's listed files (and its manifest), each read without following a link
    and written without overwriting anything; the restore then checks every hash."""
    doc = load_manifest(folder)
    into.mkdir(mode=0o700)
    with safeio.Root(folder) as src, safeio.Root(into) as dst:
        for rel in [MANIFEST, *sorted(doc["files"])]:
            try:
                mode = src.lstat(rel).st_mode
                safeio.copy_in(src, rel, dst, rel, mode=safeio.safe_mode(mode, "file"))
            except FileNotFoundError:
                continue  # reported as missing by the check that follows
            except safeio.UnsafePath as exc:
                raise RollupError(f"refusing to restore from {folder}: {exc}") from None


def _extract(archive, into, only=None):
    """Unpack a rollup (or one day of it) member by member into `into`, a new directory."""
    try:
        with safeio.Root(archive.parent) as parent:
            packed = parent.open_read(archive.name)
    except (OSError, safeio.UnsafePath) as exc:
        raise RollupError(f"cannot read {archive}: {exc}") from None
    with packed:
        dec = subprocess.Popen(["zstd", "-q", "-d", "-c"], stdin=packed,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            with tarfile.open(fileobj=dec.stdout, mode="r|") as tar:
                safeio.extract(tar, into, only=(lambda name: name.split("/", 1)[0] == only)
                               if only else None, refuse=_days_only)
        except safeio.UnsafeArchive as exc:
            raise RollupError(f"refusing to restore from {archive.name}: {exc}") from None
        except tarfile.TarError as exc:
            unreadable = exc
            # a damaged rollup mostly ends tar's reading first: zstd is let finish, so that
            # its own reason (a checksum, a corrupted block) is told rather than tar's "end
            # of data"
            while dec.stdout.read(CHUNK):
                pass
        else:
            unreadable = None
        finally:
            dec.stdout.close()  # a refusal stops reading: zstd then ends on a closed pipe
            err = dec.stderr.read().decode(errors="replace").strip()
            dec.stderr.close()
            rc = dec.wait()
    if rc != 0:
        raise RollupError(f"{archive.name} cannot be decompressed: {_zstd_error(err)}")
    if unreadable is not None:
        raise RollupError(f"{archive.name} cannot be read to its end: {unreadable}")
