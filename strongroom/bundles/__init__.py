"""Git bundle chains: full + incrementals over ALL refs, verified, copied off-site, restorable.

A chain is one full bundle followed by incrementals (new objects since every tip the
chain has recorded) and refs-only entries (a ref moved back or was deleted: nothing new
to bundle, but a restore must reproduce it). Ref tips live in the store, one ref manifest
per entry, never inside the user's repository.
"""

import hashlib
import os
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..core import fsutil, safeio
from ..core.errors import ERROR, INCOMPLETE, OK, WARNING, StrongroomError, worst
from ..core.gitcmd import (
    GitError,
    RepoState,
    clean_stale_git_locks,
    existing_objects,
    find_repositories,
    fsck_history,
    git,
    git_argv,
    git_env,
    read_refs,
    restore_stash,
)
from ..core.lock import Lock
from ..core.remote import Rclone, RemoteError, join
from ..upload import Upload
from ..upload.seal import remote_hashes
from . import chain, critical

EMPTY_BUNDLE = "Refusing to create empty bundle"
LOCK_NAME = ".strongroom.lock"


def _default(key):
    """A bundle job's default for option KEY (strongroom/jobs/schema.py); read when used, as
    the jobs package imports this one."""
    from ..jobs.schema import default

    return default("bundle", key)


@dataclass
class Options:
    # a bundle job's options; each default is the job schema's
    full_every: int = field(default_factory=lambda: _default("full_every"))
    full_after_days: float = field(default_factory=lambda: _default("full_after_days"))
    keep_retired: int = field(default_factory=lambda: _default("keep_retired"))
    critical_patterns: list = field(default_factory=lambda: _default("critical_patterns"))
    remote: str | None = None
    rclone_config: str | None = None
    jobs: int = field(default_factory=lambda: _default("jobs"))  # 0: one per core
    dry_run: bool = False
    force_full: bool = False
    ledger: object = None  # the job's re-verification ledger (strongroom/reverify)
    seal: object = None  # encrypt_to (strongroom/upload/seal.py): what goes off-site sealed
    identity: str | None = None  # an age identity file: opens what the remote holds sealed
    opened: set = field(default_factory=set)  # the recipients it opened files for


def options_from(mapping, config_dir=None, dry_run=False, ledger=None):
    """Options from a job file's `options` (or the CLI's overlay of them)."""
    conf = mapping.get("rclone_config")
    if not conf and config_dir and (Path(config_dir) / "rclone.conf").is_file():
        conf = str(Path(config_dir) / "rclone.conf")
    given = {k: mapping[k] for k in ("full_every", "full_after_days", "keep_retired", "jobs")
             if k in mapping}
    if "critical_patterns" in mapping:
        given["critical_patterns"] = list(mapping["critical_patterns"])
    from ..upload.seal import for_options

    return Options(**given, remote=mapping.get("remote"), rclone_config=conf, dry_run=dry_run,
                   ledger=ledger, seal=for_options(mapping, config_dir),
                   identity=mapping.get("identity"))


@dataclass
class RepoResult:
    name: str
    path: str = ""
    action: str = "unchanged"  # full, incremental, refs, unchanged, empty, failed
    status: str = "ok"  # ok, warning, error
    message: str = ""
    notes: list = field(default_factory=list)
    written: list = field(default_factory=list)
    bytes_written: int = 0
    chain_length: int = 0
    critical_files: int = 0
    critical_packed: bool = False
    refs_before: dict = field(default_factory=dict)
    refs_after: dict = field(default_factory=dict)
    remote: str = ""  # "", "verified", "failed"

    @property
    def exit_code(self):
        return {"ok": OK, "warning": WARNING, "error": ERROR}[self.status]

    @property
    def changed(self):
        return bool(self.written)

    def as_dict(self):
        d = asdict(self)
        d["changed"] = self.changed
        return d


def overall_exit(results):
    """0 ok, 1 warnings, 2 all failed, 3 some failed (the rest done)."""
    if not results:
        return WARNING
    failed = [r for r in results if r.status == "error"]
    if failed:
        return ERROR if len(failed) == len(results) else INCOMPLETE
    return worst(r.exit_code for r in results)


# --- writing artifacts ---------------------------------------------------------------------


def _write_bundle(repo_path, repo_dir, filename, positives, negatives):
    """Create a bundle under a temp name, hashing it as git writes it (one pass, no re-read).

    Returns (size, sha256), or None when git finds nothing new to bundle.
    """
    final = Path(repo_dir) / filename
    tmp = fsutil.temp_path(final)
    revs = "".join(f"{r}\n" for r in positives) + "".join(f"^{s}\n" for s in sorted(negatives))
    digest = hashlib.sha256()
    size = 0
    try:  # any failure, also on closing the file (a full disk), leaves no temp behind
        # stderr to a file, not a pipe: a chatty git must never block while we drain stdout
        with tempfile.TemporaryFile() as err, open(tmp, "wb") as out:
            proc = subprocess.Popen(git_argv(repo_path, "bundle", "create", "--quiet", "-",
                                             "--stdin"),
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=err, env=git_env())
            try:
                proc.stdin.write(revs.encode())
                proc.stdin.close()
                while chunk := proc.stdout.read(fsutil.CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                rc = proc.wait()
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            finally:
                proc.stdout.close()
            err.seek(0)
            stderr = err.read().decode("utf-8", "replace")
        if rc != 0:
            tmp.unlink(missing_ok=True)
            if EMPTY_BUNDLE in stderr:
                return None
            raise GitError(["bundle", "create"], rc, stderr)
        fsutil.commit(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return size, digest.hexdigest()


def _write_refs(repo_dir, filename, name, state, now):
    data = {
        "version": chain.VERSION,
        "repository": name,
        "timestamp": chain.iso(now),
        "head": state.head,
        "refs": state.refs,
        "symrefs": state.symrefs,
        "stash": state.stash,  # every entry: refs/stash alone keeps only the newest
    }
    path = Path(repo_dir) / filename
    fsutil.atomic_write_json(path, data)
    return path.stat().st_size, fsutil.sha256_file(path)


def _head_commit(state):
    head = state.head or ""
    if head.startswith("ref: "):
        return state.refs.get(head[5:])
    return head or None


# --- is the chain still what the manifest says? -------------------------------------------

HASHED = "hashed-state.json"  # local only: when each chain file was last hashed here


def _read_hashed(repo_dir):
    try:  # a regular file of the store only: a FIFO here would hold every sync
        data = safeio.load_json(safeio.read_regular(Path(repo_dir) / HASHED), HASHED)
    except (OSError, ValueError, safeio.UnsafePath):
        return {"run": 0, "files": {}}
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict) or \
            not isinstance(data.get("run", 0), int):
        return {"run": 0, "files": {}}
    return {"run": data.get("run") or 0, "files": data["files"]}


def _fingerprint(st):
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def damaged_files(repo_dir, manifest, write=True):
    """Chain files whose bytes no longer match the manifest, checked before a chain is
    extended: extending a damaged chain gives backups that cannot restore.

    A file is re-hashed when its size, mtime or inode changed since it was last hashed
    here, and the file hashed longest ago is re-hashed on every run anyway: a chain of n
    files is read in full at least once every n extending runs, even where damage kept
    the size and mtime."""
    repo_dir = Path(repo_dir)
    expected = chain.expected_hashes(manifest)
    cache = _read_hashed(repo_dir)
    run = cache["run"] + 1
    stats, bad = {}, []
    for name in expected:
        try:
            stats[name] = (repo_dir / name).stat()
        except FileNotFoundError:
            bad.append(name)
    known = cache["files"]
    fresh = [n for n in stats if isinstance(known.get(n), dict)
             and known[n].get("fp") == _fingerprint(stats[n])
             and known[n].get("sha256") == expected[n]]
    rotate = min(fresh, key=lambda n: (known[n].get("run", 0), n), default=None)
    for name in sorted(stats):
        if name in fresh and name != rotate:
            continue
        try:
            same = fsutil.sha256_file(repo_dir / name, follow=False) == expected[name]
        except OSError:
            same = False  # a link or a FIFO where a chain file should be: damage too
        if not same:
            bad.append(name)
        else:
            known[name] = {"fp": _fingerprint(stats[name]), "sha256": expected[name],
                           "run": run}
    if write:
        files = {n: v for n, v in known.items() if n in expected}
        fsutil.atomic_write_json(repo_dir / HASHED, {"run": run, "files": files})
    return sorted(bad)


def remember_hashes(repo_dir, written):
    """Files this run wrote were hashed as they were written: no need to read them again."""
    repo_dir = Path(repo_dir)
    try:
        expected = chain.expected_hashes(chain.load(repo_dir, check_files=False))
    except chain.ChainInvalid:
        return
    names = [n for n in written if n in expected]
    if not names:
        return
    cache = _read_hashed(repo_dir)
    for name in names:
        cache["files"][name] = {"fp": _fingerprint((repo_dir / name).stat()),
                                "sha256": expected[name], "run": cache["run"]}
    fsutil.atomic_write_json(repo_dir / HASHED, cache)


# --- sync ----------------------------------------------------------------------------------


def _plan(manifest, last, state, opts, now):
    """Decide full / incremental / unchanged, and why, without writing anything."""
    if manifest is None:
        return "full", "first bundle"
    if opts.force_full:
        return "full", "consolidation requested"
    if manifest["incremental_count"] >= opts.full_every:
        return "full", f"{manifest['incremental_count']} incrementals since the full bundle"
    if chain.age_days(manifest, now) >= opts.full_after_days:
        return "full", f"full bundle older than {opts.full_after_days:g} days"
    # a chain recorded before stash entries were kept records them with its next change
    if (last["refs"], last.get("symrefs", {}), last.get("head"),
            last.get("stash", state.stash)) == (
            state.refs, state.symrefs, state.head, state.stash):
        return "unchanged", ""
    return "incremental", ""


def _ref_changes(before, after):
    lines = []
    for name in sorted(set(before) | set(after)):
        if name not in after:
            lines.append(f"deleted {name}")
        elif name not in before:
            lines.append(f"new {name}")
        elif before[name] != after[name]:
            lines.append(f"moved {name}")
    return lines


def _load_chain(repo_dir, result):
    """(manifest, last ref manifest) if the record reads back; (None, None) otherwise."""
    try:
        manifest = chain.load(repo_dir)
        last = chain.read_refs_file(Path(repo_dir) / chain.last_refs_entry(manifest)["refs_file"])
        return manifest, last
    except chain.ChainInvalid as exc:
        _inconsistent(repo_dir, result, exc)
        return None, None


def _inconsistent(repo_dir, result, exc):
    if (Path(repo_dir) / chain.MANIFEST).exists():
        result.notes.append(f"store state inconsistent ({exc}); starting a new chain")
        result.status = "warning"


def _retire(repo_dir, manifest, label, now):
    """Move a chain's files aside (kept, not deleted) and return the retired record."""
    parent = Path(repo_dir) / chain.RETIRED_DIR
    parent.mkdir(exist_ok=True)
    # a name a record still holds (its folder deleted by hand) is never given again: two
    # records of one folder, and pruning the older would delete the newer's files
    held = {Path(r["path"]).name for r in (manifest or {}).get("retired", [])}
    dest = parent / chain.unique_name(parent, label, "", held)
    dest.mkdir()
    names = [n for n, _ in chain.files_with_sizes(manifest)] if manifest else []
    if (Path(repo_dir) / chain.MANIFEST).exists():
        names.append(chain.MANIFEST)
    for n in names:
        src = Path(repo_dir) / n
        if src.exists():
            os.replace(src, dest / n)
    fsutil.fsync_dir(dest)
    fsutil.fsync_dir(repo_dir)
    return {"chain_id": manifest["chain_id"] if manifest else label,
            "path": dest.relative_to(repo_dir).as_posix(), "retired": chain.iso(now)}


def _orphans(repo_dir, manifest):
    """Complete artifacts no manifest points at (a run killed before recording them)."""
    known = {n for n, _ in chain.files_with_sizes(manifest)} if manifest else set()
    known |= {chain.MANIFEST, chain.REMOTE_STATE}
    out = []
    for entry in os.scandir(repo_dir):
        ours = entry.name.endswith((".bundle", ".refs.json", ".tar.zst"))
        if ours and entry.is_file() and entry.name not in known and entry.name[0] != ".":
            out.append(entry.name)
    return out


def _verify_full(bundle_path, refs, scratch_parent):
    """Unbundle a new full bundle into scratch and check its refs and connectivity."""
    # Named like every temp file (PID inside), so a killed run's scratch is cleaned up.
    with tempfile.TemporaryDirectory(prefix=".tmp-verify-", suffix=f".{os.getpid()}",
                                     dir=scratch_parent) as tmp:
        git(tmp, "init", "-q", "--bare")
        git(tmp, "bundle", "unbundle", str(bundle_path))
        _set_refs(tmp, {"refs": refs, "symrefs": {}, "head": None})
        git(tmp, "fsck", "--connectivity-only", "--no-dangling")


def sync_repo(name, path, store, opts, now=None):
    now = now or chain.utcnow()
    result = RepoResult(name=name, path=str(path))
    try:
        _sync_repo(name, Path(path).absolute(), Path(store).absolute(), opts, now, result)
    except (StrongroomError, OSError) as exc:
        result.status, result.action = "error", "failed"
        result.message = str(exc)
    except Exception as exc:  # one repository's store, never all of them
        result.status, result.action = "error", "failed"
        result.message = f"unexpected {type(exc).__name__}: {exc}"
    return result


def _sync_repo(name, path, store, opts, now, result):
    state = RepoState(path)
    if state.shallow:
        raise StrongroomError(
            f"{path} is a shallow clone: its bundle would verify but not restore. "
            "Run `git fetch --unshallow` in it, or move it out of the backup root.")
    result.refs_after = dict(state.refs)
    if not state.refs:
        result.action, result.message = "empty", "no commits yet: nothing to bundle"
        return
    repo_dir = store / name
    manifest = last = None
    if repo_dir.is_dir():
        manifest, last = _load_chain(repo_dir, result)
    if manifest is not None:
        result.refs_before = last["refs"]
    action, why = _plan(manifest, last, state, opts, now)
    basis = set()  # the recorded tips the repository still has: what an incremental skips
    if action == "incremental":
        try:
            tips = chain.chain_tips(manifest, repo_dir)
        except chain.ChainInvalid as exc:  # an older ref manifest is damaged
            _inconsistent(repo_dir, result, exc)
            manifest, action, why = None, "full", "first bundle"
            result.refs_before = {}
        else:
            basis = existing_objects(path, tips)
            if not basis:
                action, why = "full", ("none of the recorded tips exist in the repository "
                                       "any more")
    if action == "incremental":
        bad = damaged_files(repo_dir, manifest, write=not opts.dry_run)
        if bad:
            result.status = "warning"
            result.notes.append(
                f"{', '.join(bad[:3])}{' and more' if len(bad) > 3 else ''} no longer "
                "match(es) the recorded SHA-256: starting a new full chain instead of "
                f"extending a damaged one (the old chain is kept in {chain.RETIRED_DIR}/)")
            action, why = "full", f"damaged chain file {bad[0]}"

    files = critical.select(path, opts.critical_patterns) if not state.bare else []
    crit_digest = critical.digest(path, files) if files else ""
    last_crit = (manifest or {}).get("critical") or [{}]
    crit_needed = action == "full" or crit_digest != last_crit[-1].get("digest", "")
    if action == "full" and not files:
        crit_needed = False
    result.critical_files = len(files)

    if opts.dry_run:
        result.action = action if action != "unchanged" or not crit_needed else "critical"
        result.message = why or ("would bundle new commits" if action == "incremental" else "")
        result.chain_length = len((manifest or {}).get("bundles", []))
        if files:
            result.notes.append(f"{len(files)} critical ignored file(s) would be stored "
                                "UNENCRYPTED")
        return

    if not repo_dir.exists():
        repo_dir.mkdir(parents=True, mode=0o700)  # bundles carry private history
    for gone in fsutil.clean_stale_temps(repo_dir):
        result.notes.append(f"removed leftover temp file {gone}")
    removed, live = clean_stale_git_locks(path, state.git_dir)
    for lock in removed:
        result.notes.append(f"removed stale git lock {lock} (no process uses the repository)")
    for lock in live:
        result.notes.append(f"git lock {lock} is held by a running process; left alone")

    before = set(os.listdir(repo_dir))
    try:
        _write(name, path, state, repo_dir, manifest, action, why, files, crit_digest,
               crit_needed, opts, now, result, basis)
    except BaseException:
        _remove_unrecorded(repo_dir, before)
        raise
    if result.critical_files:
        result.notes.append(f"{result.critical_files} critical ignored file(s) stored "
                            + ("unencrypted in the store (0600), sealed with age off-site"
                               if opts.seal is not None and opts.remote else "UNENCRYPTED"))
    remember_hashes(repo_dir, result.written)
    if opts.remote:
        _upload(name, repo_dir, opts, result)


def _write(name, path, state, repo_dir, manifest, action, why, files, crit_digest,
           crit_needed, opts, now, result, basis=frozenset()):
    old_manifest = manifest
    if action == "full":
        manifest = chain.new_manifest(name, path, state.bare, now)
    orphans = _orphans(repo_dir, old_manifest)
    ts = chain.stamp(now)
    taken = _used_names(repo_dir)

    if action in ("full", "incremental"):
        kind = "full" if action == "full" else "incremental"
        # the bundle and its ref manifest share a stem: both names must be free (a run
        # that lost its bundle leaves the old ref manifest, parked as an orphan below)
        filename = chain.unique_name(repo_dir, f"{kind}-{ts}", ".bundle", taken | {
            n[: -len(".refs.json")] + ".bundle" for n in os.listdir(repo_dir)
            if n.endswith(".refs.json")})
        if kind == "full":
            manifest["chain_id"] = filename[len("full-"): -len(".bundle")]  # unique per store
        # read once by the caller, in this run, under the store's lock
        negatives = set(basis) if kind == "incremental" else set()
        # older stash entries are no ref's tip: named by id, their objects come along
        positives = sorted(state.refs) + [sha for sha, _ in state.stash[1:]]
        made = _write_bundle(path, repo_dir, filename, positives, negatives)
        if made is None:
            action, filename, size, digest = "refs", None, 0, None
        else:
            size, digest = made
            result.written.append(filename)
            result.bytes_written += size
        stem = filename[: -len(".bundle")] if filename else chain.unique_name(
            repo_dir, f"refs-{ts}", ".refs.json", taken)[: -len(".refs.json")]
        refs_file = f"{stem}.refs.json"
        refs_size, refs_sha = _write_refs(repo_dir, refs_file, name, state, now)
        result.written.append(refs_file)
        entry = {
            "type": "full" if kind == "full" else ("refs" if filename is None else "incremental"),
            "filename": filename, "timestamp": chain.iso(now), "size": size, "sha256": digest,
            "refs_file": refs_file, "refs_size": refs_size, "refs_sha256": refs_sha,
            "parent": manifest["bundles"][-1]["refs_file"] if manifest["bundles"] else None,
            "commit": _head_commit(state),
        }
        if kind == "full":
            if old_manifest is not None:
                # Keep the old chain until the new full bundle has proved it restores.
                _verify_full(repo_dir / filename, state.refs, repo_dir)
            manifest["last_full_bundle_date"] = chain.iso(now)
            manifest["incremental_count"] = 0
        else:
            manifest["incremental_count"] += 1
        manifest["bundles"].append(entry)
        result.action = entry["type"]
        result.message = why or "; ".join(_ref_changes(result.refs_before, state.refs)[:8])

    if crit_needed:
        crit_name = chain.unique_name(repo_dir, f"critical-{ts}", ".tar.zst", taken)
        rec = {"filename": None, "sha256": None, "size": 0, "files": files,
               "digest": crit_digest, "timestamp": chain.iso(now)}
        if files:
            tmp = fsutil.temp_path(repo_dir / crit_name)
            try:
                packed, left = critical.pack(path, files, tmp)
                rec.update(filename=crit_name, sha256=fsutil.sha256_file(tmp),
                           size=tmp.stat().st_size, files=packed)
                result.critical_files = len(packed)
                for rel, why in sorted(left.items()):
                    result.notes.append(f"critical file {rel} not stored: {why}")
                fsutil.commit(tmp, repo_dir / crit_name)
            finally:
                tmp.unlink(missing_ok=True)
            result.written.append(crit_name)
            result.bytes_written += rec["size"]
        manifest["critical"].append(rec)
        result.critical_packed = True
        if result.action == "unchanged":
            result.action, result.message = "critical", "critical files changed"

    if result.written:
        if action == "full" and old_manifest is not None:
            retired = _retire(repo_dir, old_manifest, f"chain-{old_manifest['chain_id']}", now)
            manifest["retired"] = old_manifest.get("retired", []) + [retired]
        elif action == "full" and (repo_dir / chain.MANIFEST).exists():
            manifest["retired"] = [_retire(repo_dir, None, f"inconsistent-{ts}", now)]
        chain.save(repo_dir, manifest)
        result.written.append(chain.MANIFEST)
        if orphans:
            _park_orphans(repo_dir, orphans, now, result)
    result.chain_length = len(manifest["bundles"])


def _remove_unrecorded(repo_dir, before):
    """After a failed write (a full disk): what this run made under a final name and no
    manifest records is removed, so no complete-looking artifact is left that nothing
    points at."""
    try:
        known = {n for n, _ in chain.files_with_sizes(chain.load(repo_dir, check_files=False))}
    except chain.ChainInvalid:
        known = set()
    for name in set(os.listdir(repo_dir)) - before - known:
        if name.endswith((".bundle", ".refs.json", ".tar.zst")) and not name.startswith("."):
            (Path(repo_dir) / name).unlink(missing_ok=True)


def _park_orphans(repo_dir, orphans, now, result):
    parent = Path(repo_dir) / chain.RETIRED_DIR
    parent.mkdir(exist_ok=True)
    dest = parent / chain.unique_name(parent, f"orphans-{chain.stamp(now)}", "")
    dest.mkdir()
    for n in orphans:
        os.replace(Path(repo_dir) / n, dest / n)
    result.notes.append(f"moved {len(orphans)} unrecorded file(s) from a killed run aside")


def _used_names(repo_dir):
    """Every artifact name this repository has used: retired chains and remote copies."""
    used = set()
    retired = Path(repo_dir) / chain.RETIRED_DIR
    if retired.is_dir():
        used.update(p.name for p in retired.glob("*/*"))
    for remote in _remote_state(repo_dir).values():
        used.update(remote.get("verified", {}))
    return used


def _remote_state(repo_dir):
    """{remote: {verified: {name: sha256}, manifest, when}}; anything unreadable or of
    another shape counts as nothing proven, so files are checked again, never trusted."""
    try:
        data = safeio.load_json(safeio.read_regular(Path(repo_dir) / chain.REMOTE_STATE),
                                chain.REMOTE_STATE)
    except (OSError, ValueError, safeio.UnsafePath):
        return {}
    if not isinstance(data, dict):
        return {}
    return {remote: entry for remote, entry in data.items()
            if isinstance(entry, dict) and isinstance(entry.get("verified"), dict)}


def _upload(name, repo_dir, opts, result):
    """Copy files the remote lacks, prove them by SHA-256, then the manifest last."""
    try:
        manifest = chain.load(repo_dir)
    except chain.ChainInvalid:
        return
    rclone = Rclone(opts.rclone_config)
    remote_dir = join(opts.remote, name)
    state = _remote_state(repo_dir)
    done = dict(state.get(opts.remote, {}).get("verified", {}))  # name -> proven SHA-256
    expected = chain.expected_hashes(manifest)
    todo = {n: h for n, h in expected.items() if done.get(n) != h}
    manifest_sha = fsutil.sha256_file(repo_dir / chain.MANIFEST)
    if not todo and state.get(opts.remote, {}).get("manifest") == manifest_sha:
        result.remote = "verified"
        return
    try:
        if todo:  # the path every off-site copy takes: immutable, journalled, proven
            up = Upload(rclone, journal_dir=repo_dir.parent / ".uploads", ledger=opts.ledger,
                        seal=opts.seal).run(repo_dir, remote_dir, immutable=True,
                                            only=sorted(todo))
            # and by the SHA-256 the chain manifest records (a sealed file: its sidecar's)
            rclone.verify(remote_dir, remote_hashes(up, todo))
        rclone.copy_over(repo_dir / chain.MANIFEST, join(remote_dir, chain.MANIFEST))
        rclone.verify(remote_dir, {chain.MANIFEST: manifest_sha})
        if opts.ledger is not None:  # replaced by every sync: re-read against the newest
            opts.ledger.record(remote_dir, {chain.MANIFEST: (
                (repo_dir / chain.MANIFEST).stat().st_size, manifest_sha)}, mutable=True)
    except (RemoteError, StrongroomError) as exc:  # sealing's too (strongroom/crypt)
        result.remote = "failed"
        result.status = "error"
        result.message = f"off-site copy failed; local store kept: {exc}"
        return
    state[opts.remote] = {"verified": {**done, **todo}, "manifest": manifest_sha,
                          "when": chain.iso(chain.utcnow())}
    fsutil.atomic_write_json(repo_dir / chain.REMOTE_STATE, state)
    result.remote = "verified"
    if todo:
        result.written.append(f"{len(todo)} file(s) off-site")


def _prune_retired(repo_dir, opts, result):
    """Delete retired chains beyond keep_retired, only once the current chain is off-site."""
    manifest = chain.load(repo_dir, check_files=False)
    retired = manifest.get("retired", [])
    if len(retired) <= opts.keep_retired:
        return
    if opts.remote:
        verified = _remote_state(repo_dir).get(opts.remote, {}).get("verified", {})
        if any(verified.get(n) != h for n, h in chain.expected_hashes(manifest).items()):
            return  # the current chain is not yet proven off-site: keep the old ones
    keep = retired[-opts.keep_retired:] if opts.keep_retired else []
    kept_paths = {rec["path"] for rec in keep}
    for rec in retired[: len(retired) - len(keep)]:
        target = Path(repo_dir) / rec["path"]
        if rec["path"] not in kept_paths and target.is_dir():  # never a kept chain's folder
            fsutil.rmtree(target)
        result.notes.append(f"pruned retired chain {rec['chain_id']}")
    manifest["retired"] = keep
    chain.save(repo_dir, manifest)


def sync(root, store, opts, names=None, lock_wait=0.0, now=None, progress=None):
    """Bundle every repository under root. Returns (results, exit_code)."""
    root, store = Path(root).absolute(), Path(store).absolute()
    if not root.is_dir():
        raise StrongroomError(f"repositories root {root} does not exist or is not a directory")
    found = find_repositories(root)
    unknown = sorted(set(names or []) - {n for n, _ in found})
    if unknown:
        raise StrongroomError(f"no repository named {', '.join(unknown)} under {root} "
                              "(names are paths relative to the root)")
    repos = [(n, p) for n, p in found if names is None or n in names]
    if opts.seal is not None and opts.remote:  # a bad recipients file: said before anything
        opts.seal.check()
    if opts.dry_run:
        return [sync_repo(n, p, store, opts, now) for n, p in repos], OK
    store.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = Lock(store / LOCK_NAME, f"bundle store {store}").acquire(lock_wait)
    try:
        workers = opts.jobs or os.cpu_count() or 1
        results = []
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(sync_repo, n, p, store, opts, now) for n, p in repos]
            try:
                for i, fut in enumerate(futures, 1):
                    res = fut.result()
                    if res.status != "error" and res.action not in ("empty",):
                        try:
                            _prune_retired(store / res.name, opts, res)
                        except (StrongroomError, OSError) as exc:
                            res.notes.append(f"retired chains not pruned: {exc}")
                    results.append(res)
                    if progress:
                        progress(i, len(futures), res)
            except BaseException:
                # a signal or Ctrl-C: the repositories not started are not started (the
                # pool would otherwise bundle every one of them before the run could end)
                for fut in futures:
                    fut.cancel()
                raise
        if lock.previous_owner:
            for r in results[:1]:
                r.notes.append(f"took over the lock of PID {lock.previous_owner}, "
                               "which is gone")
    finally:
        lock.release()
    return results, overall_exit(results)


# --- restore and verify --------------------------------------------------------------------


def _set_refs(repo, refs_data):
    """Make the repository's refs exactly those recorded: same names, targets, HEAD."""
    current, current_sym = read_refs(repo)
    lines = [f"delete {n}\n" for n in current if n not in refs_data["refs"]]
    lines += [f"update {n} {sha}\n" for n, sha in sorted(refs_data["refs"].items())]
    if lines:
        git(repo, "update-ref", "--stdin", input="".join(lines))
    for n, target in sorted(refs_data.get("symrefs", {}).items()):
        git(repo, "symbolic-ref", n, target)
    head = refs_data.get("head")
    if head and head.startswith("ref: "):
        git(repo, "symbolic-ref", "HEAD", head[5:])
    elif head:
        git(repo, "update-ref", "--no-deref", "HEAD", head)


def _ensure_local(repo_dir, filename, digest, opts, name):
    """The file in the store with the recorded hash, fetched from the remote if missing."""
    path = Path(repo_dir) / filename
    if not path.exists():
        if not opts.remote:
            raise StrongroomError(f"{name}: {filename} is missing from the store and no "
                                  "--remote was given to fetch it from")
        tmp = fsutil.temp_path(path)
        try:
            # X itself, or X.age checked against its sidecar and opened with the identity
            from ..crypt import fetch

            got = fetch.fetch(Rclone(opts.rclone_config), join(opts.remote, name, filename),
                              tmp, identity=opts.identity, what=f"{name}: {filename}")
            if got["sealed"]:
                opts.opened.add(got["recipient"])
            os.chmod(tmp, 0o600)  # bundles hold private history, packs hold secrets
            if fsutil.sha256_file(tmp, follow=False) != digest:
                raise StrongroomError(f"{name}: {filename} from the remote does not match "
                                      "its recorded SHA-256; refusing it")
            fsutil.commit(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    else:
        try:
            actual = fsutil.sha256_file(path, follow=False)
        except OSError as exc:
            raise StrongroomError(f"{name}: {filename} in the store cannot be read as a file "
                                  f"of its own ({exc.strerror or exc}); refusing it") from None
        if actual != digest:
            raise StrongroomError(f"{name}: {filename} in the store does not match its "
                                  "recorded SHA-256 (damaged); refusing to restore from it")
    return path


def remote_names(opts):
    """Names of every chain the remote holds (a folder with a chain manifest)."""
    proc = Rclone(opts.rclone_config).run("lsf", "-R", "--files-only", "--include",
                                          chain.MANIFEST, opts.remote)
    names = []
    for line in proc.stdout.splitlines():
        rel = line.strip().removesuffix(chain.MANIFEST).rstrip("/")
        if rel and chain.RETIRED_DIR not in rel.split("/"):
            names.append(rel)
    return sorted(names)


def _manifest_for_restore(store, name, opts):
    name = chain.repo_name(name)
    repo_dir = chain.repo_dir(store, name)
    try:
        return chain.load(repo_dir, check_files=False)
    except chain.ChainInvalid as exc:
        if not opts.remote:
            raise StrongroomError(f"{name}: no usable chain in {repo_dir} ({exc})") from None
    held = remote_names(opts)
    if name not in held:
        raise StrongroomError(f"no chain named {name!r} on {opts.remote}; it holds: "
                              + (", ".join(held) if held else "no chains at all"))
    repo_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = fsutil.temp_path(repo_dir / chain.MANIFEST)
    try:
        Rclone(opts.rclone_config).fetch(join(opts.remote, name, chain.MANIFEST), tmp)
        fsutil.commit(tmp, repo_dir / chain.MANIFEST)
    finally:
        tmp.unlink(missing_ok=True)
    return chain.load(repo_dir, check_files=False)


def rebuild(store, name, dest, opts, bare=None, checkout=True):
    """Rebuild `name` into the empty directory dest. Returns (the final ref manifest,
    the critical files put back, notes)."""
    store = Path(store).absolute()
    manifest = _manifest_for_restore(store, name, opts)
    repo_dir = chain.repo_dir(store, name)
    entries = manifest["bundles"]
    start = max(i for i, e in enumerate(entries) if e["type"] == "full")
    bare = manifest.get("bare", False) if bare is None else bare
    git(dest, "init", "-q", *(["--bare"] if bare else []))
    for e in entries[start:]:
        if e.get("filename"):
            bundle = _ensure_local(repo_dir, e["filename"], e["sha256"], opts, name)
            git(dest, "bundle", "unbundle", str(bundle))
    last = entries[-1]
    refs_path = _ensure_local(repo_dir, last["refs_file"], last["refs_sha256"], opts, name)
    refs = chain.read_refs_file(refs_path)
    _set_refs(dest, refs)
    restore_stash(dest, chain.stash_entries(refs))
    got, got_sym = read_refs(dest)
    if got != refs["refs"]:
        raise StrongroomError(f"{name}: restored refs differ from the ref manifest")
    git(dest, "fsck", "--connectivity-only", "--no-dangling")
    restored_files, notes = [], []
    if not bare and checkout:
        head = refs.get("head") or ""
        target = refs["refs"].get(head[5:]) if head.startswith("ref: ") else head
        if target:
            git(dest, "reset", "-q", "--hard")
        tracked = critical.tracked_paths(dest)
        packs = [c for c in manifest.get("critical", []) if c.get("timestamp")]
        if packs and packs[-1].get("filename") and not target:
            # nothing checked out: no .gitignore says what is ignored, nothing is tracked
            notes.append(f"critical files not put back: HEAD ({head or 'none'}) names no "
                         f"commit, so nothing is checked out; {packs[-1]['filename']} stays "
                         "in the store")
        elif packs and packs[-1].get("filename"):
            pack = _ensure_local(repo_dir, packs[-1]["filename"], packs[-1]["sha256"], opts, name)
            restored_files = critical.unpack(pack, dest, tracked=tracked,
                                             patterns=opts.critical_patterns)
        notes += _embedded_repositories(tracked)
    return refs, restored_files, notes


def _embedded_repositories(tracked):
    """Folders the history itself holds as git repositories (HEAD, objects/, refs/ all
    tracked): git run inside one would use its config, hooks and fsmonitor included."""
    found = []
    for path in tracked:
        parent, _, leaf = path.rpartition("/")
        if leaf == "HEAD":
            prefix = f"{parent}/" if parent else ""
            if any(p.startswith(prefix + "objects/") for p in tracked) and any(
                    p.startswith(prefix + "refs/") for p in tracked):
                found.append(parent or ".")
    return [f"the restored history holds a git repository of its own at {p}/: git run "
            "inside it would use its config and hooks; `git config --global "
            "safe.bareRepository explicit` makes git refuse it" for p in sorted(found)]


def restore(store, name, target, opts, force=False):
    """Rebuild into a temp dir beside target, then move it into place (old target kept)."""
    target = Path(target).absolute()
    busy = target.exists() and (not target.is_dir() or any(target.iterdir()))
    if busy and not force:
        raise StrongroomError(f"target {target} exists and is not empty; "
                              "choose an empty or new directory, or pass --force "
                              "(the current contents are moved aside, not deleted)")
    made = fsutil.make_parents(target.parent)
    fsutil.clean_stale_restores(target.parent)  # only what a killed restore of ours left
    tmp = fsutil.restore_temp(target)
    try:
        tmp.mkdir(mode=0o700)  # inside: a SIGTERM right after it still cleans up
        try:
            refs, files, notes = rebuild(store, name, tmp, opts)
        except GitError as exc:
            if fsutil.disk_full(tmp):  # git says "could not reset index file" and the like
                raise StrongroomError(f"{exc} (No space left on device in {target.parent})") \
                    from None
            raise
        os.chmod(tmp, fsutil.default_dir_mode())
        moved_aside = None
        if target.exists():
            if any(target.iterdir()):
                moved_aside = target.with_name(
                    f"{target.name}.before-restore-{chain.stamp(chain.utcnow())}")
                os.replace(target, moved_aside)
            else:
                target.rmdir()
        os.replace(tmp, target)
        fsutil.fsync_dir(target.parent)
    except BaseException:
        fsutil.rmtree_settled(tmp)
        fsutil.remove_made(made)
        raise
    return {"name": name, "target": str(target), "refs": len(refs["refs"]),
            "head": refs.get("head"), "critical_files": files, "notes": notes,
            "moved_aside": str(moved_aside) if moved_aside else None}


@dataclass
class VerifyResult:
    name: str
    status: str = "ok"
    message: str = ""
    checked_files: int = 0
    refs: int = 0
    seconds: float = 0.0

    def as_dict(self):
        return asdict(self)


def verify_repo(store, name, opts):
    res = VerifyResult(name=name)
    started = time.monotonic()
    store = Path(store).absolute()
    try:
        repo_dir = chain.repo_dir(store, name)
        manifest = chain.load(repo_dir)
        bad = []
        for filename, digest in sorted(chain.expected_hashes(manifest).items()):
            try:
                if fsutil.sha256_file(repo_dir / filename, follow=False) != digest:
                    bad.append(filename)
            except OSError:
                bad.append(filename)  # a link or FIFO where a chain file should be
            res.checked_files += 1
        if bad:
            raise StrongroomError("SHA-256 mismatch (damaged): " + ", ".join(bad))
        for c in manifest.get("critical", []):
            if c.get("filename") and not critical.test_pack(repo_dir / c["filename"]):
                raise StrongroomError(f"critical-files pack {c['filename']} is unreadable")
        with tempfile.TemporaryDirectory(prefix="strongroom-verify-") as tmp:
            refs, _, _ = rebuild(store, name, tmp, opts, bare=True, checkout=False)
            verdict, text = fsck_history(tmp, manifest.get("source"))
            if verdict == "error":
                raise StrongroomError(text)
            res.refs = len(refs["refs"])
        res.status = "warning" if verdict == "warning" else "ok"
        res.message = f"{res.checked_files} files hashed, chain restores, {text}"
    except (StrongroomError, OSError) as exc:
        res.status, res.message = "error", str(exc)
    except Exception as exc:  # one chain's store, never the whole verify
        res.status, res.message = "error", f"unexpected {type(exc).__name__}: {exc}"
    res.seconds = round(time.monotonic() - started, 3)
    return res


def verify(store, opts, names=None, lock_wait=0.0):
    store = Path(store).absolute()
    if not store.is_dir():
        raise StrongroomError(f"bundle store {store} does not exist")
    headless = chain.unmanifested(store)
    names = [chain.repo_name(n) for n in names] if names else sorted(
        set(chain.store_repositories(store)) | set(headless))
    missing = [n for n in names if not (store / n / chain.MANIFEST).exists()]
    with Lock(store / LOCK_NAME, f"bundle store {store}").acquire(lock_wait):
        results = [verify_repo(store, n, opts) for n in names]
    for r in results:
        if r.name in headless:
            r.status, r.message = "error", (
                f"{r.name} has bundle files but no {chain.MANIFEST} in {store}: they cannot "
                "be checked or restored in order without it; `bundle restore --remote` "
                "fetches it from the off-site copy, or the next sync starts a new chain "
                "(the old files are moved aside, not deleted)")
        elif r.name in missing:
            r.status, r.message = "error", f"no chain for {r.name} in {store}"
    if not results:
        return results, WARNING
    failed = [r for r in results if r.status == "error"]
    code = OK if not failed else (ERROR if len(failed) == len(results) else INCOMPLETE)
    if code == OK and any(r.status == "warning" for r in results):
        code = WARNING
    return results, code


def consolidate(store, name, opts, lock_wait=0.0, root=None):
    """Start a fresh chain for one repository now. The repository is found under `root`
    by its name, as a sync finds it: git runs in it, so it is never a path read from the
    store (whose manifest says `source`, which is then only compared)."""
    store = Path(store).absolute()
    name = chain.repo_name(name)
    manifest = chain.load(chain.repo_dir(store, name), check_files=False)
    if root is None:
        raise StrongroomError("consolidate needs --root (or --job NAME): the repository is "
                              "found under the root, never at a path read from the store")
    found = dict(find_repositories(Path(root).absolute()))
    if name not in found:
        raise StrongroomError(f"no repository named {name} under {root} (the chain is "
                              "untouched)")
    source = Path(found[name]).absolute()
    if manifest.get("source") != str(source):
        raise StrongroomError(f"{name}: the chain was made from {manifest.get('source')!r}, "
                              f"not {source}; refusing to mix repositories (the chain is "
                              "untouched)")
    forced = Options(**{**asdict(opts), "force_full": True})
    with Lock(store / LOCK_NAME, f"bundle store {store}").acquire(lock_wait):
        res = sync_repo(name, source, store, forced)
        if res.status != "error":
            _prune_retired(store / name, forced, res)
    return res


def list_remote(opts):
    """What the remote holds, from its chain manifests alone (a new machine has no store):
    every manifest is fetched in one rclone run into scratch space and checked."""
    with tempfile.TemporaryDirectory(prefix="strongroom-list-") as tmp:
        # the packs' sidecars too (a few hundred bytes each): they say a pack is sealed
        Rclone(opts.rclone_config).run("copy", opts.remote, tmp, "--include", chain.MANIFEST,
                                       "--include", "/*/critical-*.age.json")
        rows = []
        for name in sorted(chain.store_repositories(tmp)):
            try:
                m = chain.load(Path(tmp) / name, check_files=False)
            except chain.ChainInvalid as exc:
                rows.append({"name": name, "status": "error", "message": str(exc)})
                continue
            crit = (m.get("critical") or [{}])[-1]
            rows.append({
                "name": name, "status": "ok", "source": m.get("source"),
                "chain_id": m.get("chain_id"),
                "bundles": sum(1 for e in m["bundles"] if e.get("filename")),
                "incrementals": m.get("incremental_count"),
                "last_sync": m["bundles"][-1].get("timestamp"),
                "last_full": m.get("last_full_bundle_date"),
                "bytes": sum(s for _, s in chain.files_with_sizes(m)),
                "critical_files": len(crit.get("files", [])),
                "critical_encrypted": bool(crit.get("filename")) and (
                    Path(tmp) / name / f"{crit['filename']}.age.json").is_file(),
                "remotes": [opts.remote],
            })
    return rows


def list_store(store):
    rows = []
    for name in chain.store_repositories(store):
        repo_dir = Path(store) / name
        try:
            m = chain.load(repo_dir, check_files=False)
            refs = chain.read_refs_file(repo_dir / m["bundles"][-1]["refs_file"])
        except chain.ChainInvalid as exc:
            rows.append({"name": name, "status": "error", "message": str(exc)})
            continue
        crit = (m.get("critical") or [{}])[-1]
        remote = _remote_state(repo_dir)
        rows.append({
            "name": name,
            "status": "ok",
            "source": m["source"],
            "chain_id": m["chain_id"],
            "bundles": sum(1 for e in m["bundles"] if e.get("filename")),
            "incrementals": m["incremental_count"],
            "last_sync": m["bundles"][-1]["timestamp"],
            "last_full": m["last_full_bundle_date"],
            "bytes": sum(s for _, s in chain.files_with_sizes(m)),
            "refs": len(refs["refs"]),
            "critical_files": len(crit.get("files", [])),
            "critical_encrypted": False,
            "retired_chains": len(m.get("retired", [])),
            "remotes": sorted(remote),
        })
    return rows
