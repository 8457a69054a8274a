"""Drills of database versions (db jobs, kind `db_version`): the newest version and one
older, a different one each drill (ctx.rotate), downloaded into scratch by the download a
`strongroom db restore` makes (checked against the SHA-256 in its metadata, then `PRAGMA
integrity_check`), and then checked further: its content digest and the row count of
every table against what the metadata recorded when the version was made.

A db job keeps its versions on its remote only (the live database is no version), so a
drill reads them from there whichever source was asked. The job's lock (the one its
scheduled run and `strongroom db` take) is held, so a prune cannot delete the version
being drilled.
"""

import contextlib
import sqlite3

from ..core import sqlite
from ..core.errors import StrongroomError
from . import base


def plan(name, job, ctx):
    from ..dbversions.settings import env_remote, settings

    wanted = ctx.sources(name, True)
    if not wanted:
        return None
    options = job.get("options") or {}
    if not options.get("remote") and not env_remote()[0]:
        return DbPlan(name, None, ctx, error=(
            f"job {name} names no remote (options.remote, or R2_* / AWS_* variables), "
            "where its versions would be: none can be drilled"))
    try:
        d = settings(options, ctx.config_dir, ctx.state_dir)
    except StrongroomError as exc:  # said as this job's error; the other jobs still drill
        return DbPlan(name, None, ctx, error=f"job {name}: {exc}")
    d.identity = ctx.identity_of(job)
    if "local" in wanted:
        ctx.notes.append(f"{name}: a db job keeps its versions on its remote only "
                         f"({d.prefix}); they are drilled from there")
    return DbPlan(name, d, ctx)


class DbPlan(base.Plan):
    kind = "db_version"

    def __init__(self, job, d, ctx, error=None):
        super().__init__(job, ("remote",))
        self.d = d
        self.ctx = ctx
        self.error = error
        self.held = None

    def lock(self, wait):
        if self.d is None:
            return contextlib.nullcontext()
        return self.d.lock(wait)

    def nothing(self):
        return f"no version of job {self.job} to restore on {self.d.prefix}" if self.d \
            else super().nothing()

    def targets(self, source):
        if self.d is None:
            raise StrongroomError(self.error)
        try:
            self.held = self.d.listing()
        except (ValueError, TypeError, KeyError, AttributeError):
            raise StrongroomError(f"the listing of {self.d.prefix} is not rclone's "
                                  "JSON") from None
        keys = sorted(self.held)
        current = self.d.state().get("current")
        if not keys:
            # this host agreed on a version there: an empty listing is a remote emptied or
            # gone, not a job that never ran
            return [current] if isinstance(current, str) else []
        other = self.ctx.rotate(f"{self.job}:db_version", keys[:-1])
        return [keys[-1]] + ([other] if other else [])

    def drill(self, name, source, work):
        d = self.d
        art = base.Artifact(self.kind, name, self.job, source)
        held = self.held if self.held is not None else d.listing()
        if name not in held:
            raise StrongroomError(f"no version {name} under {d.prefix} (the remote holds "
                                  f"{len(held)} version(s))")
        meta, problem = d.read_metadata(name, held[name])
        if meta is None:
            from ..dbversions import unreadable_message

            raise StrongroomError(unreadable_message(name, problem))
        if not d.identity:  # sealed and no key: its ciphertext against its sidecar only
            from ..core import remote
            from ..crypt import fetch

            if fetch.check_remote(d.rclone, remote.join(d.prefix, name),
                                  f"database version {name}", scratch=work) is not None:
                art.result, art.files = "warning", 1
                art.message = fetch.said({"sealed": 1, "checked": "ciphertext"})
                return art
        d.opened = set()
        path, meta = d._fetch(name, work, meta)  # the restore's download and checks
        from ..dbversions import content_digest

        if content_digest(path) != meta["content_sha256"]:
            raise StrongroomError(f"the download of {name} holds other content than its "
                                  "metadata's content_sha256")
        tables = _counts(path)
        recorded = meta.get("tables")
        if not isinstance(recorded, dict):
            raise StrongroomError(f"the metadata of {name} records no row counts")
        if tables != recorded:
            differ = sorted(set(tables) | set(recorded))
            said = "; ".join(f"{t}: {tables.get(t, 'no table')} rows, metadata "
                             f"{recorded.get(t, 'no table')}" for t in differ
                             if tables.get(t) != recorded.get(t))
            raise StrongroomError(f"the row counts of {name} differ from its metadata: "
                                  f"{said}")
        art.files, art.bytes = 1, path.stat().st_size
        rows = sum(tables.values())
        art.message = (f"restored version {name} from {d.prefix}: SHA-256 matches its "
                       f"metadata, integrity_check ok, {len(tables)} table(s) with the "
                       f"{rows} rows the metadata records")
        if d.opened:
            art.message += f"; decrypted with {', '.join(sorted(d.opened))}"
        return art


def _counts(path):
    try:
        con = sqlite._read_only(path)
        try:
            return sqlite.table_counts(con)
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise StrongroomError(f"cannot count the rows of {path.name}: {exc}") from None
