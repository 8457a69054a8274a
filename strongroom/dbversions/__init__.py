"""Versioned SQLite backups on object storage: keep N, safe restore, smart sync, ticks.

Remote layout under REMOTE:PATH:

  backups/<db>/<UTC YYYYmmddTHHMMSS.ffffffZ>_<host>_<db>                 the copy
  backups/<db>/<UTC YYYYmmddTHHMMSS.ffffffZ>_<host>_<db>.metadata.json   sha256, size,
                                                                         tables, host, reason
A copy is taken with the online backup API and must pass `PRAGMA integrity_check`. The
`sha256` in the metadata is the uploaded file's (downloads are checked against it); the
`content_sha256` leaves out the two header fields SQLite bumps on every write of the file
(its change counter and version-valid-for), so a copy of a copy of unchanged data has the
same content digest. Sync compares content digests, a backup uploads nothing when the
newest version already holds its content, and `keep` counts distinct contents (a version
holding the same content as a newer one takes no slot). The state file
(<state>/db/<db>-<id>.json) remembers the version this machine last agreed with the remote
on (`current`, `synced_sha256`, `current_file_sha256`) and the pending operations.

A new version's key sorts after every version its backup listed, whatever the clocks say.
A version whose metadata is missing or damaged is never pulled, restored or counted as
holding any content: sync and status work from the newest version with readable metadata
and name the others.
"""

import hashlib
import json
import os
import re
import shutil
import socket
import sqlite3
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ..core import fsutil, remote, sqlite
from ..core.errors import OK, WARNING, EmptySource, StrongroomError
from ..core.lock import Lock
from ..crypt import policy
from ..upload import Upload

META = ".metadata.json"
SEALED = ".age"  # a version sealed by encrypt_to (strongroom/crypt SUFFIX)
TS_RE = re.compile(r"^(\d{8}T\d{6}\.\d{6}Z)_")
KEY_TIME = "%Y%m%dT%H%M%S.%fZ"
HEX64 = re.compile(r"^[0-9a-f]{64}$")


class DbError(StrongroomError):
    pass


class Conflict(DbError):
    pass


def _key_time(name):
    """The time a version's key starts with, or None for a name that is no key of ours
    (another file in the folder, or a time no calendar has): such a name is not a
    version, and must not break the ordering every new key is placed by."""
    m = TS_RE.match(name)
    try:
        return datetime.strptime(m.group(1), KEY_TIME).replace(tzinfo=UTC) if m else None
    except ValueError:
        return None


def _now():
    return datetime.now(UTC)


def _iso(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


class DbSync:
    def __init__(self, db, remote_path, state_dir, rclone, keep=None, host=None,
                 ops_threshold=None, hours_threshold=None):
        """keep, ops_threshold, hours_threshold: a db job's options (None: its default)."""
        from ..jobs.schema import options as job_options

        d = job_options("db").defaults()
        keep = d["keep"] if keep is None else keep
        ops_threshold = d["ops_threshold"] if ops_threshold is None else ops_threshold
        hours_threshold = d["hours_threshold"] if hours_threshold is None else hours_threshold
        self.db = Path(db).absolute()
        self.name = self.db.name
        self.prefix = remote.join(remote_path, "backups", self.name)
        self.rclone = rclone
        self.keep = keep
        self.host = re.sub(r"[^A-Za-z0-9.-]", "-", host or socket.gethostname())
        self.ops_threshold, self.hours_threshold = ops_threshold, hours_threshold
        ident = hashlib.sha256(str(self.db).encode()).hexdigest()[:10]
        self.state_path = Path(state_dir) / "db" / f"{self.name}-{ident}.json"
        self.lock_path = self.state_path.with_suffix(".lock")
        self.sealed_keys = set()  # versions the remote holds as KEY.age (encrypt_to)
        self.opened = set()  # the recipients the identity opened fetched versions for

    # --- state ---------------------------------------------------------------------------

    def state(self):
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        data.setdefault("ops", 0)
        return data

    def save_state(self, data):
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        fsutil.atomic_write_json(self.state_path, data, mode=0o600)

    def lock(self, wait=30):
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        return Lock(self.lock_path, f"database {self.db}").acquire(wait)

    # --- the remote ----------------------------------------------------------------------

    def listing(self):
        """{key: size in bytes} of every version (rclone reads every page of the listing)."""
        proc = self.rclone.run("lsjson", self.prefix, "--files-only", "--no-mimetype",
                               check=False)
        if proc.returncode == 3 or "directory not found" in proc.stderr:
            return {}
        if proc.returncode != 0:
            raise remote.RemoteError(f"cannot list {self.prefix}: "
                                     f"{remote._tail(proc.stderr, 3)}")
        found = {}
        for e in json.loads(proc.stdout or "[]"):
            key = e["Name"]
            if key.endswith(SEALED):  # encrypt_to: KEY.age; its size is the ciphertext's
                key = key[: -len(SEALED)]
            if _key_time(key) and key.endswith("_" + self.name):
                if key != e["Name"]:
                    self.sealed_keys.add(key)
                found[key] = None if key != e["Name"] else e.get("Size")
        return found

    def versions(self):
        """Every version, oldest first."""
        return sorted(self.listing())

    def metadata(self, key):
        meta, problem = self.read_metadata(key)
        if meta is None:
            raise DbError(unreadable_message(key, problem))
        return meta

    def read_metadata(self, key, size=None):
        """(metadata, None), or (None, what is wrong with it). Readable means: JSON that
        describes this version, with well-formed digests, the size of the stored copy
        (`size`, from the listing, when known), and, for the version this machine last
        agreed on, the digests it agreed on (a version is never rewritten, so metadata
        that disagrees with them was damaged since)."""
        proc = self.rclone.run("cat", remote.join(self.prefix, key + META), check=False)
        if proc.returncode != 0:
            return None, "is missing" if "not found" in proc.stderr else \
                f"cannot be read ({remote._tail(proc.stderr, 1)})"
        try:
            meta = json.loads(proc.stdout)
        except ValueError:
            return None, "is not JSON"
        problem = self._problem(key, meta, size, self.state())
        return (None, problem) if problem else (meta, None)

    def _problem(self, key, meta, size, st):
        """What makes `meta` no readable metadata of `key` (see read_metadata), or None."""
        if not isinstance(meta, dict):
            return "is not a JSON object"
        if meta.get("key", key) != key:
            return f"describes another version ({meta.get('key')})"
        for field in ("sha256", "content_sha256"):
            if not isinstance(meta.get(field), str) or not HEX64.match(meta[field]):
                return f"has no valid {field}"
        if size is not None and meta.get("size") not in (None, size):
            return f"gives a size of {meta.get('size')} bytes, the copy has {size}"
        if key == st.get("current"):
            for field, agreed in (("content_sha256", st.get("synced_sha256")),
                                  ("sha256", st.get("current_file_sha256"))):
                if agreed and meta[field] != agreed:
                    return (f"gives a {field} of {meta[field][:12]}, not the "
                            f"{agreed[:12]} this machine agreed on")
        return None

    def readable_head(self, held=None):
        """(key, metadata, [(key, problem)]): the newest version with readable metadata
        and every newer one without. A version without readable metadata cannot be
        checked, so it is never pulled or restored; work goes on from the one before."""
        held = self.listing() if held is None else held
        bad = []
        for key in sorted(held, reverse=True):
            meta, problem = self.read_metadata(key, held[key])
            if meta is not None:
                return key, meta, bad[::-1]
            bad.append((key, problem))
        return None, None, bad[::-1]

    def contents(self, keys):
        """{key: content digest, or None when its metadata is unreadable}. One `cat` of
        every metadata object beside them, not one round trip per version; a version whose
        metadata that pass did not yield is read on its own."""
        proc = self.rclone.run("cat", self.prefix, "--max-depth", "1", "--include",
                               "*" + META, check=False)
        found, text, at = {}, proc.stdout or "", 0
        dec, st = json.JSONDecoder(), self.state()
        while True:
            while at < len(text) and text[at].isspace():
                at += 1
            if at >= len(text):
                break
            try:
                obj, at = dec.raw_decode(text, at)
            except ValueError:
                break  # a damaged object: the rest is read one by one below
            if isinstance(obj, dict) and isinstance(obj.get("key"), str):
                # the checks read_metadata makes (but the size): readable means the same
                found[obj["key"]] = None if self._problem(obj["key"], obj, None, st) \
                    else obj["content_sha256"]
        return {k: found[k] if k in found else self._content(k) for k in keys}

    def _content(self, key):
        """The content digest of `key`, or None when its metadata is unreadable (an upload
        cut off between the copy and its metadata)."""
        try:
            meta = self.metadata(key)
        except DbError:
            return None
        return meta.get("content_sha256") if isinstance(meta, dict) else None

    ledger = None  # the db job's re-verification ledger (strongroom/reverify)
    seal = None  # the db job's encrypt_to (strongroom/upload/seal.py): versions go as KEY.age
    identity = None  # the db job's identity: opens a KEY.age a restore or drill fetches

    def _upload(self, path, immutable=True):
        Upload(self.rclone, ledger=self.ledger, seal=self.seal).run(path, self.prefix,
                                                                    immutable=immutable)
        if self.seal is not None and policy.sealed(Path(path).name):
            self.sealed_keys.add(Path(path).name)

    # --- local content -------------------------------------------------------------------

    def copy(self, into):
        """A consistent, checked copy of the database: (path, content digest, report)."""
        out = Path(into) / self.name
        rep = sqlite.backup(self.db, out)
        return out, content_digest(out), rep

    def local_sha(self):
        if not self.db.exists():
            return None
        with tempfile.TemporaryDirectory(prefix=".strongroom-db-", dir=self.db.parent) as t:
            return self.copy(t)[1]

    # --- operations ----------------------------------------------------------------------

    def backup(self, reason="manual", protect=(), only_if_changed=True):
        """Upload a new version (the copy, then its metadata, each verified); then prune.

        When the newest version already holds this content nothing is uploaded or pruned
        (`unchanged`): a second copy of it would only push an older, different version
        out of the `keep` newest."""
        if not self.db.exists() and not self.state().get("current"):  # never backed up here
            raise EmptySource(f"nothing to back up: {self.db} does not exist; put the SQLite "
                              f"database to keep versions of at {self.db} (or a link to it), "
                              "or set the job's options.db to its path")
        with tempfile.TemporaryDirectory(prefix=".strongroom-db-", dir=self.db.parent) as t:
            path, sha, rep = self.copy(t)
            held = self.listing()
            newest = max(held, default=None)
            replaces = None
            if newest and only_if_changed:
                # a version without readable metadata never counts as holding this content,
                # even the one the state agreed on: answered `unchanged`, nothing would ever
                # replace it, and sync, status and restore would go on without a checkable
                # newest version. A new version goes on top of it instead.
                seen, _problem = self.read_metadata(newest, held[newest])
                if seen is not None and seen["content_sha256"] == sha:
                    return self._unchanged(newest, sha, rep, reason, held[newest],
                                           seen["sha256"])
                replaces = newest if seen is None else None
            at = _now()
            key = self._new_key(at, newest)
            stage = Path(t) / "stage"
            stage.mkdir()
            os.rename(path, stage / key)
            meta = {"key": key, "sha256": fsutil.sha256_file(stage / key),
                    "content_sha256": sha, "size": (stage / key).stat().st_size,
                    "tables": rep["tables"], "host": self.host, "reason": reason,
                    "created": _iso(at), "database": str(self.db), "integrity": "ok"}
            self._upload(stage / key)  # the database first ...
            (stage / (key + META)).write_text(json.dumps(meta, indent=2, sort_keys=True),
                                              encoding="utf-8")
            self._upload(stage / (key + META))  # ... then what describes it
        # the listing taken before the upload, with this version: one round trip fewer (a
        # version another host uploaded meanwhile only makes this prune keep more)
        pruned = self.prune(protect=set(protect) | {key}, keys=sorted({*held, key}))
        st = self.state()
        st.update(current=key, synced_sha256=sha, current_file_sha256=meta["sha256"],
                  last_backup={"key": key, "at": _iso(at), "reason": reason},
                  last_check={"key": key, "at": _iso(at)})
        self.save_state(st)
        return {"key": key, "content_sha256": sha, "size": meta["size"], "tables": rep["tables"],
                "reason": reason, "pruned": pruned, "unchanged": False,
                "replaces_unreadable": replaces}

    def _new_key(self, at, newest):
        """The key of a version made at `at`. Versions are ordered by the time in their
        key, so one made while a clock ran ahead (here or on another host) would stay the
        newest: every later version would sort before it, sync would pull it back over
        newer work, and prune would count the newer work as the older. A new version
        sorts after every version its backup saw: it takes the clock's time, or one
        microsecond after the newest key's when that would not sort after it."""
        key = f"{at.strftime(KEY_TIME)}_{self.host}_{self.name}"
        if newest and key <= newest:
            try:
                after = _key_time(newest) + timedelta(microseconds=1)
            except OverflowError:  # a key dated 9999-12-31 23:59:59.999999
                raise DbError(f"version {newest} is dated at the end of time; no version "
                              "can sort after it: move it out of the way") from None
            key = f"{after.strftime(KEY_TIME)}_{self.host}_{self.name}"
        return key

    def _unchanged(self, key, sha, rep, reason, size, file_sha):
        """The newest version `key` holds this content: this machine agrees with it, and the
        check counts for the hours trigger (else every later tick would look again)."""
        st = self.state()
        st.update(current=key, synced_sha256=sha, current_file_sha256=file_sha,
                  last_check={"key": key, "at": _iso(_now())})
        self.save_state(st)
        return {"key": key, "content_sha256": sha, "size": size,
                "tables": rep["tables"], "reason": reason, "pruned": [], "unchanged": True,
                "replaces_unreadable": None}

    def prune(self, protect=(), keys=None):
        """Delete the versions older than the newest `keep` distinct contents, never a
        protected one. A version holding the same content as a newer one takes no slot
        (a restore re-uploads an old content; it must not push another version out).

        Only versions with readable metadata count: one without can never be restored, so
        it takes no slot (versions whose metadata upload failed would otherwise push every
        restorable one out). Those older than the oldest readable version kept go with the
        pruned ones; newer ones stay (they may be repaired, or be an upload in flight)."""
        keys = self.versions() if keys is None else keys
        cut = 0
        if self.keep and len(keys) > self.keep:
            digests = self.contents(keys)
            seen, oldest = set(), len(keys)
            for i in range(len(keys) - 1, -1, -1):
                d = digests[keys[i]]
                if d is None:
                    continue  # unreadable: no slot
                if d not in seen and len(seen) == self.keep:
                    cut = oldest  # keys[i] would be one distinct content too many
                    break
                seen.add(d)
                oldest = i
        doomed = [k for k in keys[:cut] if k not in protect]
        for k in doomed:
            copy = [k + SEALED, k + SEALED + ".json"] if k in self.sealed_keys else [k]
            self.rclone.run("deletefile", remote.join(self.prefix, copy[0]))
            for other in copy[1:] + [k + META]:
                self.rclone.run("deletefile", remote.join(self.prefix, other), check=False)
            if self.ledger is not None:  # deleted on purpose: no longer re-verified
                self.ledger.forget(self.prefix, copy + [k + META])
        return doomed

    def _fetch(self, key, into, meta=None):
        """Download a version and check it against its metadata and integrity_check."""
        from ..crypt import fetch

        meta = meta or self.metadata(key)
        out = Path(into) / key
        # KEY itself, or KEY.age checked against its sidecar and opened with the identity
        got = fetch.fetch(self.rclone, remote.join(self.prefix, key), out, self.identity,
                          f"database version {key}")
        if got["sealed"]:
            self.opened.add(got["recipient"])
        got = fsutil.sha256_file(out)
        if got != meta["sha256"]:
            raise DbError(f"the download of {key} does not match its metadata (SHA-256 "
                          f"{got[:12]}, expected {meta['sha256'][:12]}); local database "
                          "left untouched, nothing uploaded or pruned")
        check = sqlite.integrity(out)
        if check != "ok":
            raise DbError(f"the download of {key} fails integrity_check ({check}); local "
                          "database left untouched, nothing uploaded or pruned")
        return out, meta

    def _replace(self, source):
        """Put a checked copy in place: through the backup API into the live database (so
        a WAL and open readers stay consistent), or by rename when there is none yet."""
        if not self.db.exists():
            tmp = fsutil.temp_path(self.db)
            shutil.copyfile(source, tmp)
            fsutil.commit(tmp, self.db)
            return
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        dst = sqlite3.connect(str(self.db), timeout=30)
        try:
            src.backup(dst)  # one transaction in the destination: all or nothing
        finally:
            src.close()
            dst.close()
        con = sqlite3.connect(str(self.db), timeout=30)  # reads the WAL too
        try:
            check = "; ".join(str(r[0]) for r in con.execute("PRAGMA integrity_check"))
        finally:
            con.close()
        if check != "ok":
            raise DbError(f"{self.db} fails integrity_check after the restore: {check}")

    def restore(self, key):
        """Download and check `key`, back the current database up, then put `key` in place
        and make it the newest version, so the next sync (here or elsewhere) keeps it.

        The download is checked before anything else is done: a refused restore uploads
        nothing, prunes nothing and leaves the database and the state as they were."""
        held = self.listing()
        if key not in held:
            raise DbError(f"no version {key} under {self.prefix}")
        meta, problem = self.read_metadata(key, held[key])
        if meta is None:
            raise DbError(f"cannot restore {key}: {key}{META} {problem}, so its download "
                          "cannot be checked; nothing changed. Restore another version "
                          "(`strongroom db list --long` shows which are readable)")
        with tempfile.TemporaryDirectory(prefix=".strongroom-db-", dir=self.db.parent) as t:
            path, meta = self._fetch(key, t, meta)
            before = self.backup(reason="pre-restore", protect={key}) if self.db.exists() \
                else None
            self._replace(path)
        after = self.backup(reason=f"restore of {key}",
                            protect={key} | ({before["key"]} if before else set()))
        return {"restored": key, "pre_restore_backup": before and before["key"],
                "current": after["key"], "content_sha256": after["content_sha256"]}

    def plan_sync(self):
        """('none'|'pull'|'push'|'adopt', head key, detail); Conflict when both changed."""
        return self._plan()[:3]

    def _plan(self):
        """plan_sync's answer, the head's metadata and [(key, problem)] of the versions
        newer than the head without readable metadata. The head is the newest version with
        readable metadata: one without cannot be checked, so it is never pulled."""
        held = self.listing()
        head, meta, bad = self.readable_head(held)
        st = self.state()
        local = self.local_sha()
        head_sha = meta["content_sha256"] if meta else None
        if local is None and head is None:
            raise DbError(f"{self.db} does not exist and {self.prefix} holds no version"
                          + "".join(f"; {unreadable_message(k, p)}" for k, p in bad))
        cur, synced = st.get("current"), st.get("synced_sha256")
        if local == head_sha:
            return ("adopt" if cur != head else "none"), head, "in sync", meta, bad
        if local is None:
            return "pull", head, "no local database", meta, bad
        if head is None:
            return "push", None, "the remote holds no version with readable metadata" \
                if bad else "the remote holds no version", meta, bad
        local_changed = synced is None or local != synced
        # a version newer than any this machine agreed on, made by another host, that
        # cannot be read: it may hold that host's newer work. Pushed over, it would stop
        # being the newest, and that host's next sync would pull this content over its own
        theirs = [(k, p) for k, p in bad if _key_host(k) not in (None, self.host)
                  and (cur is None or k > cur)]
        if local_changed and theirs:
            key, problem = theirs[-1]
            host = _key_host(key)
            raise Conflict(
                f"both sides may have changed: {self.db} differs from the version last "
                f"synced ({cur or 'none yet'}), and the remote's newest version {key}, "
                f"made on {host}, has no readable metadata ({key}{META} {problem}), so "
                "what it holds cannot be checked. Nothing was changed. A `strongroom db "
                f"backup` on {host} puts a checked version on top; sync here then. Or "
                "keep yours with `strongroom db backup` (then that host's next sync pulls "
                "it over its own database, after backing its own up).")
        # the version agreed on sorts after every readable one: its metadata was lost
        # since, and the remote did not move past it (the older head is no newer work)
        behind = cur in held and head < cur
        remote_changed = head != cur and head_sha != synced and not behind
        if local_changed and remote_changed:
            raise Conflict(
                f"both sides changed: {self.db} differs from the version last synced "
                f"({cur or 'none yet'}), and the remote's newest is {head} "
                f"from {meta.get('host')} ({meta.get('reason')}). Nothing was changed. Keep "
                f"yours with `strongroom db backup`, or take theirs with `strongroom db "
                f"restore {head}` (which backs yours up first).")
        if local_changed:
            return "push", head, "local changes", meta, bad
        if remote_changed:
            return "pull", head, "a newer version on the remote", meta, bad
        # neither changed, yet they differ: the version agreed on lost its metadata. Its
        # content is this database's: uploaded again, it is a checkable newest version.
        return "push", head, f"the version last synced ({cur}) has no readable metadata; " \
            "this database goes up again as the newest version", meta, bad

    def sync(self, dry_run=False):
        try:
            action, head, why, meta, bad = self._plan()
        except remote.RemoteError as exc:
            return {"action": "offline", "changed": False, "exit_code": WARNING,
                    "message": f"offline: cannot reach {self.prefix}; nothing changed "
                               f"({str(exc)[:200]})"}
        # a push puts a checkable version on top of the unreadable ones; otherwise they stay
        # the newest and are said so (exit 1) until the host that made them backs up again
        out = {"action": action, "head": head, "why": why, "changed": action != "none",
               "exit_code": WARNING if bad and (dry_run or action != "push") else OK,
               "dry_run": dry_run, "unreadable": [k for k, _ in bad]}
        note = "".join(f"; {unreadable_message(k, p)}" for k, p in bad)
        if bad and head:
            note += f"; worked from {head}, the newest version with readable metadata"
        if dry_run or action == "none":
            out["message"] = f"{'would ' if dry_run else ''}{action}: {why}{note}"
            return out
        if action == "adopt":
            st = self.state()
            st.update(current=head, synced_sha256=meta["content_sha256"],
                      current_file_sha256=meta["sha256"])
            self.save_state(st)
        elif action == "push":
            out["key"] = self.backup(reason="sync")["key"]
        else:  # pull: the local content is on the remote already, or is backed up first
            self.db.parent.mkdir(parents=True, exist_ok=True)
            st = self.state()
            cur = st.get("current")
            held = self.listing()
            agreed = self.read_metadata(cur, held[cur])[0] if cur in held else None
            kept = agreed is not None and agreed["content_sha256"] == st.get("synced_sha256")
            with tempfile.TemporaryDirectory(prefix=".strongroom-db-",
                                             dir=self.db.parent) as t:
                # checked first: a refusal changes nothing
                path, meta = self._fetch(head, t, meta)
                pre = None
                if self.db.exists() and not kept:  # its version was pruned: keep it anyway
                    pre = self.backup(reason="pre-sync", protect={head})["key"]
                    out["pre_sync_backup"] = pre
                self._replace(path)
            if pre:
                # the copy just taken is now the newest version: left so, the next sync
                # here and every other host's would pull it back and undo this pull. The
                # pulled content goes on top again, as a restore's does.
                out["key"] = self.backup(reason=f"pull of {head}", protect={head, pre})["key"]
            else:
                st = self.state()
                st.update(current=head, synced_sha256=meta["content_sha256"],
                          current_file_sha256=meta["sha256"])
                self.save_state(st)
        out["message"] = f"{action}: {why}{note}"
        if out.get("pre_sync_backup"):
            pre = out["pre_sync_backup"]
            out["exit_code"] = WARNING  # this database's content was held by no checkable
            out["message"] += (       # version: it was kept, and said so
                f"; this database before the pull was held by no checkable version on "
                f"the remote (its own was pruned, or its metadata is unreadable), so it "
                f"was backed up first as {pre}: `strongroom db restore "
                f"{pre}` brings it back")
        return out

    def tick(self, ops=1):
        """Count operations; back up when N are pending or H hours passed."""
        st = self.state()
        st["ops"] = st.get("ops", 0) + ops
        self.save_state(st)
        # hours since the remote was last found to hold this content: an upload, or a
        # backup that found the newest version already holding it
        last = (st.get("last_backup") or {}).get("at")
        checked = (st.get("last_check") or {}).get("at")
        since = "the last backup" if not checked or (last and last >= checked) else \
            "the last check"
        last = max(filter(None, (last, checked)), default=None)
        hours = (time.time() - datetime.strptime(last, "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=UTC).timestamp()) / 3600 if last else None
        reason = (f"{st['ops']} operations" if st["ops"] >= self.ops_threshold else
                  f"{hours:.1f} hours since {since}" if hours is not None
                  and hours >= self.hours_threshold else
                  "no backup yet" if hours is None else None)
        if reason is None:
            return {"backup": None, "ops": st["ops"], "changed": ops > 0}
        rep = self.backup(reason=reason)  # raises on failure: the counter stays
        st = self.state()
        st["ops"] = 0  # only after a successful backup
        self.save_state(st)
        return {"backup": rep, "ops": 0, "reason": reason, "changed": True}

    def status(self):
        st = self.state()
        out = {"database": str(self.db), "remote": self.prefix, "pending_ops": st["ops"],
               "last_backup": st.get("last_backup"), "current": st.get("current"),
               "local_sha256": self.local_sha()}
        try:
            held = self.listing()
            head, meta, bad = self.readable_head(held)
            # the newest version with readable metadata, and each newer one without
            out.update(versions=len(held), newest=head,
                       remote_sha256=meta["content_sha256"] if meta else None,
                       unreadable=[{"key": k, "problem": p, "message": unreadable_message(k, p)}
                                   for k, p in bad])
        except remote.RemoteError:
            out.update(versions=None, remote_sha256=None, offline=True)
        out["in_sync"] = out["local_sha256"] is not None and \
            out["local_sha256"] == out.get("remote_sha256")
        return out


def _key_host(key):
    """The host a version's key names, or None for a name that is no key of ours."""
    m = TS_RE.match(key)
    return key[len(m.group(0)):].split("_", 1)[0] if m else None


def unreadable_message(key, problem):
    """What is wrong with a version's metadata, and what to do about it."""
    host = key[len(TS_RE.match(key).group(0)):].split("_", 1)[0] if TS_RE.match(key) \
        else "its host"
    return (f"version {key} has no readable metadata ({key}{META} {problem}), so it is "
            f"never pulled or restored: a `strongroom db backup` on {host} puts a new, "
            "checked version of that database on top of it")


def content_digest(path):
    """SHA-256 of a database file without its change counter and version-valid-for."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        head = bytearray(fh.read(100))
        head[24:28] = head[92:96] = b"\0\0\0\0"
        h.update(head)
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()

