"""The drill of a snapshot job: the newest snapshot, and one older one in turn.

Each is put back twice by the real restore path (snapshots.restore): a full restore and a
critical restore, each into scratch. Then every restored critical file is hashed against
SHA256SUMS, the full tree is counted against what REPORT.json says the archive holds, and
every database put back passes PRAGMA integrity_check with the row counts REPORT.json
recorded when it was taken.

From the remote, the snapshot folder is fetched from REMOTE/<id> into scratch and
restored from that copy alone. Every byte and path of it is input: the restore code checks
it against SHA256SUMS before using any of it, and so does this drill for REPORT.json.

The snapshots being drilled are marked in use (lock.reading) from the moment they are
chosen: a prune meanwhile keeps them, without waiting for the drill.
"""

import os
import stat
from pathlib import Path
from urllib.parse import quote

from .. import snapshots
from ..core import fsutil, remote, safeio, sqlite
from ..core.errors import StrongroomError
from ..crypt import fetch
from ..snapshots import restore
from .base import Artifact, FolderPlan


class SnapshotPlan(FolderPlan):
    kind = "snapshot"
    what_store = "snapshot folder"

    def __init__(self, job, dest, sources, ctx, source_dir=None, remote_path=None,
                 rclone=None, identity=None):
        super().__init__(job, sources, stores=[dest])
        self.dest = Path(dest)
        self.ctx = ctx
        self.source_dir = source_dir
        self.remote = remote_path
        self.rclone = rclone
        self.identity = identity  # opens the remote's sealed files


    def _choose(self, source, ids):
        """The newest, and one of the older ones in turn (ctx.rotate)."""
        if not ids:
            return []
        older = self.ctx.rotate(f"{self.job}:snapshot:{source}", ids[:-1])
        return [ids[-1]] + ([older] if older else [])

    def targets(self, source):
        if source == "remote":
            return self._choose(source, self._remote_ids())
        chosen = []
        for snap_id in self._choose(source, snapshots.snapshot_ids(self.dest)):
            try:  # held until the drill is done: a prune keeps it meanwhile
                self.held.enter_context(snapshots.reading(self.dest, snap_id, by="drill"))
            except snapshots.SnapshotError:
                continue  # pruned since it was listed
            chosen.append(snap_id)
        return chosen

    def _remote_ids(self):
        try:
            proc = self.rclone.run("lsf", "--dirs-only", self.remote)
        except remote.RemoteError as exc:
            raise StrongroomError(f"cannot list the snapshots on {self.remote}: {exc}") \
                from None
        # names a remote says are input: only what a snapshot id can be is used
        names = (line.strip().rstrip("/") for line in proc.stdout.splitlines())
        return sorted(n for n in names if snapshots.parse_id(n))

    def drill(self, name, source, work):
        dest = self.dest
        art = Artifact(self.kind, name, self.job, source)
        opened = None
        if source == "remote":
            dest = work / "fetched"
            dest.mkdir()
            try:  # sealed files are checked against their sidecars and opened
                opened = fetch.fetch_tree(self.rclone, remote.join(self.remote, name),
                                          dest / name, self.identity, f"snapshot {name}",
                                          need_key=False)
            except remote.RemoteError as exc:
                raise StrongroomError(f"cannot fetch snapshot {name} from {self.remote}: "
                                      f"{exc}") from None
            if opened["checked"] == "ciphertext":  # no key: checked as far as it can be
                art.result = "warning"
                art.files = opened["sealed"]
                art.message = fetch.said(opened)
                return art
        full = restore.restore_full(dest, name, work / "full")
        with snapshots.reading(dest, name, by="drill") as folder:
            sums = snapshots.read_sums(folder)
            with safeio.Root(folder) as snap:
                report = restore.trusted_report(snap, sums, name)
        crit = None
        if any(k.startswith("critical/") for k in sums):
            crit = restore.restore_critical(dest, name, work / "critical")
        problems, said = [], []
        files, size = _check_tree(work / "full", full, report, problems)
        said.append(f"full restore: {files} files as REPORT.json counts")
        dbs = _check_databases(work / "full", full["databases"], report, problems)
        if full["databases"]:
            said.append(f"{dbs} database(s) pass integrity_check with REPORT.json's row "
                        "counts")
        if full["databases_not_in_tree"]:
            said.append(f"{len(full['databases_not_in_tree'])} database(s) from outside the "
                        "source are restored only with --full into db/")
        if crit is not None:
            n, crit_bytes = _check_critical(work / "critical", crit["files"], sums, report,
                                            problems)
            files += n
            size += crit_bytes
            said.append(f"critical restore: {n} files match SHA256SUMS")
        else:
            said.append("no critical files in this snapshot")
        if problems:
            raise StrongroomError(f"snapshot {name}: " + "; ".join(problems[:10]))
        art.files, art.bytes = files, size
        if fetch.said(opened):
            said.append(fetch.said(opened))
        art.message = ", ".join(said)
        return art

    def nothing(self):
        if "local" not in self.sources:
            return f"no snapshots found on {self.remote} (job {self.job})"
        what = f", which snapshots {self.source_dir}" if self.source_dir else ""
        return (f"no snapshots found to restore in {self.dest} (job {self.job}{what}: run "
                "it once its source holds files)")


def _count(value):
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 \
        else None


def _walk(top):
    """(files, dirs, symlinks, bytes of regular files) under top, links never followed."""
    files = dirs = links = size = 0
    for rel, is_dir in fsutil.walk(top):
        if is_dir:
            dirs += 1
            continue
        st = os.lstat(Path(top) / rel)
        if stat.S_ISLNK(st.st_mode):
            links += 1
        elif stat.S_ISREG(st.st_mode):
            files += 1
            size += st.st_size
    return files, dirs, links, size


def _check_tree(tree, full, report, problems):
    """The restored tree against REPORT.json's counts: the archive's files and symlinks,
    plus the databases put back from db/. Returns (files, bytes)."""
    files, dirs, links, size = _walk(tree)
    counts = report.get("counts") if isinstance(report.get("counts"), dict) else {}
    want_files = _count(counts.get("files"))
    want_links = _count(counts.get("symlinks"))
    if want_files is None or want_links is None:
        problems.append("REPORT.json records no file counts to check the restore against")
        return files, size
    want_files += len(full["databases"])
    if files != want_files:
        problems.append(f"the full restore holds {files} files, REPORT.json says "
                        f"{want_files}")
    if links != want_links:
        problems.append(f"the full restore holds {links} symlinks, REPORT.json says "
                        f"{want_links}")
    want_dirs = _count(counts.get("dirs"))
    if want_dirs is not None and dirs < want_dirs:
        problems.append(f"the full restore holds {dirs} folders, REPORT.json says "
                        f"{want_dirs}")
    return files, size


def _read_only(path):
    # immutable=1: a restored copy nobody writes; no -wal or -shm is made beside it
    uri = f"file:{quote(str(Path(path).absolute()))}?mode=ro&immutable=1"
    return sqlite.sqlite3.connect(uri, uri=True)


def _tables(path):
    con = _read_only(path)
    try:
        return sqlite.table_counts(con)
    finally:
        con.close()


def _check_databases(tree, rels, report, problems):
    """integrity_check and REPORT.json's row counts for every database put back."""
    recorded = {}
    for d in report.get("databases") if isinstance(report.get("databases"), list) else ():
        if isinstance(d, dict) and isinstance(d.get("copy"), str):
            recorded[d["copy"]] = d.get("tables")
    ok = 0
    for rel in rels:
        check = sqlite.integrity(Path(tree) / rel)
        if check != "ok":
            problems.append(f"database {rel}: integrity_check: {check}")
            continue
        want = recorded.get(f"db/{rel}")
        if not isinstance(want, dict):
            problems.append(f"database {rel}: REPORT.json records no row counts for it")
            continue
        try:
            got = _tables(Path(tree) / rel)
        except sqlite.sqlite3.DatabaseError as exc:
            problems.append(f"database {rel}: cannot count its rows: {exc}")
            continue
        if got != want:
            diff = sorted(set(got) | set(want), key=str)
            first = next(t for t in diff if got.get(t) != want.get(t))
            problems.append(f"database {rel}: table {str(first)[:80]!r} has "
                            f"{got.get(first, 'no')} rows restored, REPORT.json recorded "
                            f"{want.get(first, 'none')}")
            continue
        ok += 1
    return ok


def _check_critical(tree, rels, sums, report, problems):
    """Every critical file put back, hashed against SHA256SUMS. A database the restore put
    back in WAL mode has other header bytes than its copy: it is checked as a database
    (integrity_check) instead. Returns (files, bytes)."""
    meta = report.get("critical") if isinstance(report.get("critical"), dict) else {}
    n = size = 0
    for rel in rels:
        path = Path(tree) / rel
        entry = meta.get(rel) if isinstance(meta.get(rel), dict) else {}
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                problems.append(f"critical file {rel} was not restored as a file")
                continue
            digest = fsutil.sha256_file(path, follow=False)
        except OSError as exc:
            problems.append(f"critical file {rel}: {exc.strerror or exc}")
            continue
        n += 1
        size += st.st_size
        if digest == sums.get(f"critical/{rel}"):
            continue
        if entry.get("journal_mode") in sqlite.JOURNAL_MODES and sqlite.is_database(path):
            check = sqlite.integrity(path)
            if check != "ok":
                problems.append(f"critical database {rel}: integrity_check: {check}")
            continue
        problems.append(f"critical file {rel} does not match SHA256SUMS after its restore")
    return n, size


def plan(name, job, ctx):
    """The Plan of one snapshot job (None when none of the sources asked can be drilled)."""
    o = job["options"]
    wanted = ctx.sources(name, bool(o.get("remote")))
    if not wanted:
        return None
    rc = None
    if o.get("remote"):
        rc = remote.Rclone(remote.rclone_config(o.get("rclone_config"), ctx.config_dir),
                           retries=o.get("retries", 3),
                           low_level_retries=o.get("low_level_retries", 3))
    return SnapshotPlan(name, Path(o["dest"]).expanduser(), wanted, ctx,
                        source_dir=o.get("source"), remote_path=o.get("remote"), rclone=rc,
                        identity=ctx.identity_of(job))
