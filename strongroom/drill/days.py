"""Drills of day folders (daily jobs, kind `day`) and weekly rollups (rollup jobs, kind
`rollup`): the newest of each and one older, a different one each drill (ctx.rotate),
restored by the restore `strongroom rollup restore` makes, and checked file by file
against their manifests; a rollup is unpacked (zstd, tar) and every day packed in it
checked.

From the remote, the day folder or rollup is fetched with rclone into scratch and
restored from that copy alone, through an empty dest: nothing of the local dest is read
but its state's record of each rollup's SHA-256 (what the fetched archive must match
before tar reads a byte of it). Every name and byte from the remote is hostile: listings
are filtered to our names, manifests and archives are read by the rollups restore code,
which refuses paths leaving the target, links and devices. A day retired locally and kept
only on the remote is a target like any other.

The dest's lock (.rollups.lock, the one the daily and rollup jobs take) is held while
targets are listed and restored, so a retire cannot delete what is being drilled.
"""

import contextlib
import json
import os
import re
from pathlib import Path

from .. import rollups
from ..core import remote, safeio
from ..core.errors import StrongroomError
from ..core.lock import Lock
from ..crypt import fetch as unseal
from . import base

LOCK_NAME = ".rollups.lock"  # the dest's lock, as jobs._rollup_job takes it
# a name the remote lists: group(1) is the day or rollup (a sealed rollup is NAME.age)
_DAY_LISTED = re.compile(r"^(\d{4}-\d{2}-\d{2})$")
_ROLLUP_LISTED = re.compile(r"^(weekly_\d{8}_\d{8}\.tar\.zst)(?:\.age)?$")


class _NoKey(Exception):  # noqa: N818 - not an error: a sealed copy checked without its key
    """A remote copy is sealed and no identity was given: checked as far as it can be."""

    def __init__(self, result):
        super().__init__(unseal.said(result))
        self.result = result


def plan(name, job, ctx):
    """The Plan of one daily job (kind day) or rollup job (kind rollup)."""
    from ..jobs import schema

    o = job.get("options") or {}
    kind = "day" if schema.job_type(job["type"]).name == "daily" else "rollup"
    sources = ctx.sources(name, bool(o.get("remote")))
    if not sources:
        return None
    return DaysPlan(name, kind, o, ctx, sources, identity=ctx.identity_of(job))


class DaysPlan(base.Plan):
    what_store = "dest"

    def __init__(self, job, kind, options, ctx, sources, identity=None):
        self.dest = Path(options["dest"]).expanduser()
        super().__init__(job, sources, stores=[self.dest])
        self.kind = kind
        self.options = options
        self.remote = options.get("remote")
        self.ctx = ctx
        self.listed = {}  # day -> the files its remote folder listed, when fetched
        self.identity = identity  # opens the remote's sealed files
        self.opened = None  # what the last fetch opened (fetch.said)

    def missing(self):
        # a dest not made yet is a job that has not run: nothing to restore, not an error
        if not self.dest.is_dir() and self.ctx.has_run(self.job):
            return (f"dest {self.dest} of job {self.job} does not exist, though the job "
                    "has run: what it kept is lost, or the disk is not mounted")
        return None

    def lock(self, wait):
        if not self.dest.is_dir():
            return contextlib.nullcontext()  # nothing here a retire could delete
        return Lock(self.dest / LOCK_NAME, f"daily folders in {self.dest}").acquire(wait)

    def nothing(self):
        what = "day folders" if self.kind == "day" else "rollups"
        return f"no {what} of job {self.job} to restore (in {self.dest}" + (
            f" or on {self.remote})" if self.remote else ")")

    # --- targets -------------------------------------------------------------------------

    def targets(self, source):
        if source == "local":
            names = rollups.days(self.dest) if self.kind == "day" else \
                rollups.rollups(self.dest)
        else:
            names = self._remote_names()
        if not names:
            return []
        newest, older = names[-1], names[:-1]
        other = self.ctx.rotate(f"{self.job}:{self.kind}:{source}", older)
        return [newest] + ([other] if other else [])

    def _rclone(self):
        shared = _offsite_defaults()
        return remote.Rclone(
            remote.rclone_config(self.options.get("rclone_config"), self.ctx.config_dir),
            bwlimit=self.options.get("bwlimit"),
            retries=self.options.get("retries", shared["retries"]),
            low_level_retries=self.options.get("low_level_retries",
                                               shared["low_level_retries"]))

    def _remote_names(self):
        """What the remote holds (its listing, only names of ours) and what the state says
        was verified there (a name gone from the listing is a target that then fails as
        missing). Raises when the remote cannot be listed and nothing is known of it."""
        state = rollups.read_state(self.dest)
        if self.kind == "day":
            known = {d for d, e in state["days"].items() if e.get("remote") == self.remote}
            where, pattern, only = self.remote, _DAY_LISTED, "--dirs-only"
        else:
            known = {r for r, e in state["rollups"].items() if e.get("remote") == self.remote}
            where, pattern = remote.join(self.remote, "rollups"), _ROLLUP_LISTED
            only = "--files-only"
        proc = self._rclone().run("lsjson", where, only, "--no-modtime", "--no-mimetype",
                                  check=False)
        listed, error = set(), None
        if proc.returncode == 0:
            try:
                entries = json.loads(proc.stdout or "[]")
                listed = {pattern.match(e["Name"]).group(1) for e in entries
                          if isinstance(e, dict) and isinstance(e.get("Name"), str)
                          and pattern.match(e["Name"])}
            except (ValueError, TypeError):
                error = f"the listing of {where} is not rclone's JSON"
        elif proc.returncode != 3:  # 3: the folder is not there (yet): nothing listed
            meaning = remote.RCLONE_EXIT.get(proc.returncode, "unknown error")
            error = (
                f"cannot list {where} (rclone exit {proc.returncode}: {meaning}): "
                f"{remote._tail(proc.stderr, 3)}")
        if error and not known:
            raise StrongroomError(error)
        # known names are drilled without the listing: each one's fetch says what failed
        return sorted(known | listed)

    # --- restores ------------------------------------------------------------------------

    def drill(self, name, source, work):
        work = Path(work)
        self.opened = None
        try:
            if self.kind == "day":
                art = self._day(name, source, work)
            else:
                art = self._rollup(name, source, work)
        except _NoKey as nokey:  # sealed, no key: checked as far as it can be
            art = self._art(name, source)
            art.result, art.files, art.message = "warning", nokey.result["sealed"], str(nokey)
            return art
        if unseal.said(self.opened):
            art.message += f"; {unseal.said(self.opened)}"
        return art

    def _art(self, name, source):
        return base.Artifact(self.kind, name, self.job, source)

    def _day(self, name, source, work):
        art = self._art(name, source)
        target = work / "restored"
        if source == "local":
            rollups.restore(self.dest, target, day=name)
            where = f"its folder in {self.dest}"
            notes = []
        else:
            fetched = work / "fetched"
            fetched.mkdir()
            rollups.restore(self._empty_dest(work), target, day=name,
                            fetch=self._fetcher(fetched))
            where = f"the remote ({remote.join(self.remote, name)})"
            notes = self._remote_day_notes(name, target / name)
        doc = rollups.load_manifest(target / name)
        if doc.get("day", name) != name:
            raise StrongroomError(f"day folder {name}'s manifest is of another day "
                                  f"({doc.get('day')!r})")
        art.files, art.bytes = _counted([doc])
        art.message = (f"restored day {name} from {where}: {art.files} file(s), every one "
                       "matches its manifest" + "".join(f"; {n}" for n in notes))
        art.result = "warning" if notes else "ok"
        return art

    def _rollup(self, name, source, work):
        art = self._art(name, source)
        target = work / "restored"
        record = rollups.read_state(self.dest)["rollups"].get(name) or {}
        if source == "local":
            self._check_sha(self.dest / "rollups" / name, name, record)
            out = rollups.restore(self.dest, target, rollup=name)
            where = f"found in {self.dest / 'rollups'}"
        else:
            fetched = work / "fetched"
            fetched.mkdir()
            out = rollups.restore(self._empty_dest(work), target, rollup=name,
                                  fetch=self._fetcher(fetched, record))
            where = f"fetched from {remote.join(self.remote, 'rollups', name)}"
        held = out["days"]
        span = ["-".join((x[:4], x[4:6], x[6:])) for x in rollups.ROLLUP_RE.match(name).groups()]
        if not held or [held[0], held[-1]] != span:
            raise StrongroomError(f"{name} holds the day(s) {', '.join(held) or 'none'}, not "
                                  f"the days {span[0]} to {span[1]} its name says")
        if record.get("days") and record["days"] != held:
            raise StrongroomError(f"{name} holds the day(s) {', '.join(held)}, not the "
                                  f"{', '.join(record['days'])} packed into it")
        art.files, art.bytes = _counted(rollups.load_manifest(target / d) for d in held)
        sha = "its SHA-256 as packed, " if record.get("sha256") else \
            "no SHA-256 recorded here to compare it with, "
        art.message = (f"restored {len(held)} day(s) {held[0]} to {held[-1]} from {name}, "
                       f"{where}: {sha}{art.files} file(s), every one matches its day's "
                       "manifest")
        return art

    def _empty_dest(self, work):
        """The dest a remote restore goes through: empty, so every byte comes off-site."""
        empty = work / "dest"
        empty.mkdir()
        return empty

    def _fetcher(self, into, record=None):
        """rollups.restore's fetch: the day folder or rollup, from the remote into scratch
        (rclone copy / copyto), a rollup checked against the SHA-256 recorded when it was
        packed before anything unpacks it."""
        rc = self._rclone()

        def fetch(day, rollup_name):
            if rollup_name:
                where = remote.join(self.remote, "rollups", rollup_name)
                try:
                    if not self.identity:
                        info = unseal.check_remote(rc, where, f"rollup {rollup_name}",
                                                   scratch=into)
                        if info is not None:
                            raise _NoKey({"sealed": 1, "checked": "ciphertext"})
                    got = unseal.fetch(rc, where, into / rollup_name, self.identity,
                                       f"rollup {rollup_name}")
                    if got["sealed"]:
                        self.opened = {"sealed": 1, "checked": "plaintext",
                                       "opened_with": [got["recipient"]]}
                except remote.RemoteError as exc:
                    raise StrongroomError(f"cannot fetch {rollup_name} from {where}: "
                                          f"{exc}") from None
                self._check_sha(into / rollup_name, rollup_name, record or {}, where)
                return "rollup", into / rollup_name
            where = remote.join(self.remote, day)
            try:
                names = _remote_files(rc, where)
                self.listed[day] = names
                listfile = rc._listfile(names)
                try:  # only the names checked above, whatever the remote holds meanwhile
                    rc.run("copy", where, str(into / day), "--files-from-raw", listfile,
                           "--no-traverse")
                finally:
                    os.unlink(listfile)
            except remote.RemoteError as exc:
                raise StrongroomError(f"cannot fetch day {day} from {where}: {exc}") from None
            if not (into / day).is_dir():  # an empty folder on the remote copies as nothing
                raise StrongroomError(f"cannot fetch day {day} from {where}: nothing there")
            opened = unseal.open_tree(into / day, self.identity, f"day {day}")
            if opened["checked"] == "ciphertext":
                raise _NoKey(opened)
            if opened["sealed"]:
                self.opened = opened  # the listing, as the files are now named
                self.listed[day] = sorted(unseal.plain_names(names))
            return "folder", into / day

        return fetch

    def _check_sha(self, path, name, record, where=None):
        want = record.get("sha256")
        if not isinstance(want, str) or not want:
            return
        try:
            with safeio.open_regular(path) as fh:
                got = _sha256(fh)
        except (OSError, safeio.UnsafePath) as exc:
            raise StrongroomError(f"cannot read {name}: {exc}") from None
        if got != want:
            raise StrongroomError(f"{name}{f' on {where}' if where else ''}: SHA-256 "
                                  f"{got[:12]} differs from the {want[:12]} recorded when "
                                  "it was packed; not unpacked")

    def _remote_day_notes(self, name, restored):
        """What a restore of the manifest's files does not see: files on the remote the
        manifest does not list (a warning: nothing of them was restored), and a manifest
        other than the local one (an error: the remote holds another day than the one
        made here)."""
        notes = []
        listed = set(rollups.load_manifest(restored)["files"]) | {rollups.MANIFEST}
        extra = sorted(rel for rel in self.listed.get(name, ()) if rel not in listed)
        if extra:
            notes.append(f"{len(extra)} file(s) on the remote not in the manifest, e.g. "
                         f"{extra[0]!r}")
        local = self.dest / name / rollups.MANIFEST
        try:
            mine = safeio.read_regular(local)
        except (OSError, safeio.UnsafePath):
            return notes  # retired here (or unreadable): the remote copy stands alone
        if safeio.read_regular(restored / rollups.MANIFEST) != mine:
            raise StrongroomError(f"the remote's manifest of day {name} differs from the "
                                  f"one in {self.dest / name}")
        return notes


def _remote_files(rc, where):
    """The files below WHERE on the remote, each name checked before anything is copied:
    a name that would leave the folder it is copied into (absolute, `..`) is refused."""
    proc = rc.run("lsjson", where, "-R", "--files-only", "--no-modtime", "--no-mimetype")
    try:
        entries = json.loads(proc.stdout or "[]")
        names = [e["Path"] for e in entries]
    except (ValueError, TypeError, KeyError):
        raise remote.RemoteError(f"the listing of {where} is not rclone's JSON") from None
    for name in names:
        try:
            if safeio.clean_relpath(name, "remote file name") != name:
                raise safeio.UnsafePath(f"remote file name {name!r} is not a plain path")
        except safeio.UnsafePath as exc:
            raise remote.RemoteError(f"refusing to fetch: {exc}") from None
    return names


def _sha256(fh):
    import hashlib

    h = hashlib.sha256()
    while chunk := fh.read(rollups.CHUNK):
        h.update(chunk)
    return h.hexdigest()


def _counted(docs):
    files = size = 0
    for doc in docs:
        files += len(doc["files"])
        size += sum(e["size"] for e in doc["files"].values())
    return files, size


def _offsite_defaults():
    from ..jobs import schema

    return schema.OFFSITE.defaults()
