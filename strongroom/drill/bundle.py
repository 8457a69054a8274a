"""The drill of a bundle job: every chain of its store, rebuilt by the real restore path.

Each chain is rebuilt with a checkout and its critical files, its refs compared with the
ref manifest, then `git fsck --full`. Every ref manifest the chain lists is read back and
checked against its recorded SHA-256, not only the newest: a superseded one is what a
restore to an earlier point reads, and a damaged one must not wait for that day.

From the local store, nothing is fetched: the store alone must restore (a file it lacks
is that chain's error, never a quiet download into the store). From the remote, the chain
is rebuilt from the off-site copy alone, into an empty scratch store.
"""

import contextlib
import dataclasses
from pathlib import Path

from .. import bundles
from ..bundles import chain
from ..core.errors import StrongroomError
from ..core.gitcmd import fsck_history
from ..core.lock import Lock
from ..core.remote import RemoteError
from ..crypt import fetch
from .base import Artifact, Plan


class BundlePlan(Plan):
    kind = "bundle_chain"
    what_store = "bundle store"

    def __init__(self, job, store, opts, sources, root=None):
        super().__init__(job, sources, stores=[store])
        self.store = Path(store)
        self.opts = opts
        self.root = root  # the job's repositories: what to fill when there is no chain

    def missing(self):
        if not self.store.is_dir():
            return f"bundle store {self.store} does not exist"
        return None

    @contextlib.contextmanager
    def lock(self, wait):
        # A sync must not retire the chain being restored; the chains are listed under the
        # lock, as they are once the sync waited for is done.
        if not self.store.is_dir():
            yield None  # nothing local to list, and no store to hold a lock in
            return
        with Lock(self.store / bundles.LOCK_NAME,
                  f"bundle store {self.store}").acquire(wait) as held:
            yield held

    def targets(self, source):
        if self.store.is_dir():
            return chain.store_repositories(self.store)
        if source != "remote":
            return []
        try:
            return bundles.remote_names(self.opts)
        except RemoteError as exc:
            raise StrongroomError(f"cannot list the chains on {self.opts.remote}: {exc}") \
                from None

    def drill(self, name, source, work):
        art = Artifact(self.kind, name, self.job, source)
        if source == "remote":
            # An empty store: every file, the chain manifest included, comes off-site.
            store = work / "store"
            store.mkdir()
            opts = dataclasses.replace(self.opts, opened=set())
        else:
            store = self.store
            opts = dataclasses.replace(self.opts, remote=None)  # nothing fetched into it
        dest = work / "repo"
        dest.mkdir()
        if source == "remote" and not opts.identity:
            sealed = check_sealed(store, name, opts)
            if sealed:  # no key: the off-site copy is checked as far as it can be
                art.files, art.bytes = sealed
                art.result = "warning"
                art.message = fetch.said({"sealed": art.files, "checked": "ciphertext"})
                return art
        try:
            refs, files, notes = bundles.rebuild(store, name, dest, opts)
            manifest = chain.load(chain.repo_dir(store, name), check_files=False)
            checked = check_ref_manifests(store, name, manifest, opts)
        except RemoteError as exc:
            raise StrongroomError(f"from the remote {opts.remote}: {exc}") from None
        art.refs = len(refs["refs"])
        art.files = len(files)
        art.bytes = sum(e.get("size") or 0 for e in manifest["bundles"] if e.get("filename"))
        verdict, text = fsck_history(dest, manifest.get("source"))
        if verdict == "error":
            raise StrongroomError(text)
        art.result = "warning" if notes else verdict
        art.message = (f"restored {art.refs} refs"
                       + (f" and {len(files)} critical files" if files else "")
                       + f", refs match the manifest, {text}, every ref manifest of the "
                         f"chain ({checked}) intact" + "".join(f"; {n}" for n in notes))
        if source == "remote" and opts.opened:
            art.message += f"; decrypted with {', '.join(sorted(opts.opened))}"
        return art

    def nothing(self):
        where = f"{self.store} (job {self.job}" + (
            f", which bundles the repositories under {self.root}: put (or clone) "
            "repositories there and run it)" if self.root else ")")
        return f"no bundle chains found to restore in {where}"


def check_sealed(store, name, opts):
    """Without a key: every file of the remote chain that is sealed, checked against its
    sidecar by the SHA-256 the remote reports. (files, bytes) when any is sealed, else None
    (the chain is plain: rebuilt as always)."""
    manifest = bundles._manifest_for_restore(store, name, opts)
    rclone = bundles.Rclone(opts.rclone_config)
    names = [e["filename"] for e in manifest["bundles"] if e.get("filename")]
    names += [c["filename"] for c in manifest.get("critical", []) if c.get("filename")]
    checked, size = 0, 0
    for filename in names:
        info = fetch.check_remote(rclone, bundles.join(opts.remote, name, filename),
                                  f"{name}: {filename}")
        if info is not None:
            checked, size = checked + 1, size + info["plain_size"]
    return (checked, size) if checked else None


def check_ref_manifests(store, name, manifest, opts):
    """Every ref manifest the chain lists, by its recorded SHA-256 and read as one (fetched
    into STORE first when it is a scratch store and opts has a remote). Returns how many."""
    repo_dir = chain.repo_dir(store, name)
    entries = manifest["bundles"]
    for e in entries:
        path = bundles._ensure_local(repo_dir, e["refs_file"], e["refs_sha256"], opts, name)
        try:
            chain.read_refs_file(path)
        except StrongroomError as exc:
            raise StrongroomError(f"{name}: {exc}") from None
    return len(entries)


def plan(name, job, ctx):
    """The Plan of one bundle job (None when none of the sources asked can be drilled)."""
    opts = bundles.options_from(job["options"], ctx.config_dir)
    opts = dataclasses.replace(opts, identity=ctx.identity_of(job))
    wanted = ctx.sources(name, bool(opts.remote))
    if not wanted:
        return None
    return BundlePlan(name, Path(job["options"]["store"]).expanduser(), opts, wanted,
                      Path(job["options"]["root"]).expanduser())


def store_plan(store, opts, sources):
    """A drill of a bare store given on the command line (`strongroom drill --store`)."""
    return BundlePlan("-", Path(store).absolute(), opts, sources)
