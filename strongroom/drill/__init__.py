"""Restore drills: prove, on a schedule, that every backup on this host restores.

A drill restores each artifact into its own scratch directory, checks it the way a
restore would be checked, records how long it took, and removes the scratch data.
Artifacts today are bundle chains: rebuilt with a checkout and their critical files,
refs compared with the ref manifest, then `git fsck --full --strict`. With
source `remote`, the chain is rebuilt from the off-site copy alone, into an empty
scratch store, which proves the remote rather than the local store.

A drill never writes to a store or a remote. A drill with nothing to test is a warning:
"0 of 0 restored" must not read as a pass.
"""

import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import bundles
from ..bundles import chain
from ..core import fsutil
from ..core.errors import ERROR, OK, WARNING, StrongroomError
from ..core.gitcmd import GitError, fsck_history
from ..core.lock import Lock
from ..jobs import config

SCRATCH_PREFIX = "drill-"
SOURCES = ("local", "remote", "both")


@dataclass
class Artifact:
    kind: str  # bundle_chain
    name: str
    job: str
    source: str  # local | remote
    result: str = "ok"  # ok | warning (restored, something to look at) | error
    duration_seconds: float = 0.0
    refs: int = 0
    message: str = ""

    def as_dict(self):
        return asdict(self)


@dataclass
class Plan:
    """One bundle store to drill, as a bundle_sync job describes it."""

    job: str
    store: Path
    opts: bundles.Options
    sources: tuple


def plans(config_dir, job_names=None, source="local"):
    """A Plan per bundle_sync job on this host (or per named job), and notes."""
    names = job_names or config.job_names(config_dir)
    out, notes = [], []
    for name in names:
        try:
            job = config.load_job(config_dir, name)
        except StrongroomError as exc:
            if job_names:
                raise
            notes.append(f"skipped {name}: {exc}")
            continue
        if job["type"] != "bundle_sync":
            if job_names:
                raise StrongroomError(f"job {name} is a {job['type']} job; restore drills "
                                      "test bundle_sync jobs")
            continue
        opts = bundles.options_from(job["options"], config_dir)
        wanted = ("local", "remote") if source == "both" else (source,)
        if "remote" in wanted and not opts.remote:
            notes.append(f"{name}: no remote configured; its off-site copy cannot be drilled")
            wanted = tuple(s for s in wanted if s != "remote")
        if wanted:
            out.append(Plan(name, Path(job["options"]["store"]).expanduser(), opts, wanted))
    return out, notes


_SCRATCH_RE = re.compile(r"^drill-(\d+)-\d+$")


def clean_scratch(scratch):
    """Remove what a killed drill left behind: only folders named as a drill names its
    own (drill-<pid>-<n>) whose PID is gone; a user's drill-notes/ is never touched."""
    scratch = Path(scratch)
    if not scratch.is_dir():
        return
    for child in scratch.iterdir():
        m = _SCRATCH_RE.match(child.name)
        if m and child.is_dir() and not child.is_symlink() and \
                not fsutil.pid_alive(int(m.group(1))):
            fsutil.rmtree_quiet(child)


def _check_scratch(scratch, stores):
    scratch = Path(scratch).resolve()
    for store in stores:
        store = Path(store).resolve()
        if scratch == store or store in scratch.parents or scratch in store.parents:
            raise StrongroomError(f"scratch directory {scratch} overlaps bundle store {store}; "
                                  "a drill must never write near what it tests")


def drill_chain(plan, name, source, work):
    """Restore one chain into work/ and check it. Never raises."""
    art = Artifact("bundle_chain", name, plan.job, source)
    started = time.monotonic()
    try:
        if source == "remote":
            # An empty store: every file, the chain manifest included, comes off-site.
            store = work / "store"
            store.mkdir()
        else:
            store = plan.store
        dest = work / "repo"
        dest.mkdir()
        refs, files, notes = bundles.rebuild(store, name, dest, plan.opts)
        art.refs = len(refs["refs"])
        source = chain.load(chain.repo_dir(store, name), check_files=False).get("source")
        verdict, text = fsck_history(dest, source)
        if verdict == "error":
            raise StrongroomError(text)
        art.result = "warning" if notes else verdict
        art.message = (f"restored {art.refs} refs"
                       + (f" and {len(files)} critical files" if files else "")
                       + f", refs match the manifest, {text}"
                       + "".join(f"; {n}" for n in notes))
    except (StrongroomError, GitError, OSError) as exc:
        art.result, art.message = "error", str(exc)
    except Exception as exc:  # "never raises": one chain's store, never the whole drill
        art.result, art.message = "error", f"unexpected {type(exc).__name__}: {exc}"
    art.duration_seconds = round(time.monotonic() - started, 3)
    return art


def run(plan_list, scratch, lock_wait=300.0, progress=None):
    """Drill every chain of every plan. Returns (artifacts, exit code, summary)."""
    scratch = Path(scratch).absolute()  # git runs inside the scratch repository
    _check_scratch(scratch, [p.store for p in plan_list])
    scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
    clean_scratch(scratch)
    artifacts = []
    for plan in plan_list:
        if not plan.store.is_dir() and "local" in plan.sources:
            artifacts.append(Artifact("bundle_chain", "*", plan.job, "local", "error",
                                      message=f"bundle store {plan.store} does not exist"))
            continue
        if not plan.store.is_dir():
            continue  # no local chains to list, and no store to hold a lock in
        # Hold the store's lock: a sync must not retire the chain being restored. The
        # chains are listed under it, as they are once the sync waited for is done.
        with Lock(plan.store / bundles.LOCK_NAME,
                  f"bundle store {plan.store}").acquire(lock_wait):
            for name in chain.store_repositories(plan.store):
                for source in plan.sources:
                    work = scratch / f"{SCRATCH_PREFIX}{os.getpid()}-{len(artifacts)}"
                    work.mkdir(mode=0o700)
                    try:
                        art = drill_chain(plan, name, source, work)
                    finally:
                        fsutil.rmtree_quiet(work)
                    artifacts.append(art)
                    if progress:
                        progress(art)
    failed = [a for a in artifacts if a.result == "error"]
    warned = [a for a in artifacts if a.result == "warning"]
    if not artifacts:
        return artifacts, WARNING, "nothing to test: no bundle chains found to restore"
    if failed:
        return artifacts, ERROR, (f"{len(failed)} of {len(artifacts)} restores FAILED: "
                                  + "; ".join(f"{a.job}/{a.name} ({a.source}): {a.message}"
                                              for a in failed))
    total = sum(a.duration_seconds for a in artifacts)
    summary = f"{len(artifacts)} of {len(artifacts)} restores passed in {total:.1f} s"
    if warned:
        return artifacts, WARNING, summary + "; look at: " + "; ".join(
            f"{a.job}/{a.name} ({a.source}): {a.message}" for a in warned)
    return artifacts, OK, summary


def summary_table(artifacts):
    from ..core.formats import render

    rows = [[a.job, a.name, a.source, a.result.upper() if a.result != "ok" else "ok",
             f"{a.duration_seconds:.1f}s", str(a.refs), a.message] for a in artifacts]
    return render(["JOB", "CHAIN", "FROM", "RESULT", "TIME", "REFS", "DETAIL"], rows)

