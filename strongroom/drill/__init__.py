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
SOURCES = config.schema.options("drill")["source"].kind.choices  # local, remote, both
LOCK_WAIT = config.schema.default("drill", "lock_wait")  # seconds, a drill job's default


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
    """One bundle store to drill, as a bundle job describes it."""

    job: str
    store: Path
    opts: bundles.Options
    sources: tuple
    root: Path | None = None  # the job's repositories: what to fill when there is no chain


def plans(config_dir, job_names=None, source="local"):
    """A Plan per job on this host whose type has a drill (the registry's: bundle jobs),
    or per named job, and notes."""
    from ..jobs import registry

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
        plan_for = registry.get(job["type"]).drill
        if plan_for is None:
            if job_names:
                raise StrongroomError(f"job {name} is a {job['type']} job; restore drills "
                                      f"test {' or '.join(registry.drilled_types())} jobs")
            continue
        plan = plan_for(name, job, config_dir, source, notes)
        if plan is not None:
            out.append(plan)
    return out, notes


def bundle_plan(name, job, config_dir, source, notes):
    """The Plan of one bundle job (None when none of the sources asked can be drilled)."""
    opts = bundles.options_from(job["options"], config_dir)
    wanted = ("local", "remote") if source == "both" else (source,)
    if "remote" in wanted and not opts.remote:
        notes.append(f"{name}: no remote configured; its off-site copy cannot be drilled")
        wanted = tuple(s for s in wanted if s != "remote")
    if not wanted:
        return None
    return Plan(name, Path(job["options"]["store"]).expanduser(), opts, wanted,
                Path(job["options"]["root"]).expanduser())


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


def run(plan_list, scratch, lock_wait=LOCK_WAIT, progress=None):
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
        return artifacts, WARNING, nothing_to_test(plan_list)
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


def nothing_to_test(plan_list):
    """What to put where, so that the next drill has chains to restore."""
    if not plan_list:
        return ("nothing to test: no bundle job to drill; add one (its repositories' "
                "chains are what a drill restores), or name bundle jobs in options.jobs")
    where = "; ".join(
        f"{p.store} (job {p.job}" + (f", which bundles the repositories under {p.root}: put "
                                     "(or clone) repositories there and run it)" if p.root
                                     else ")") for p in plan_list)
    return f"nothing to test: no bundle chains found to restore in {where}"


def summary_table(artifacts):
    from ..core.formats import render

    rows = [[a.job, a.name, a.source, a.result.upper() if a.result != "ok" else "ok",
             f"{a.duration_seconds:.1f}s", str(a.refs), a.message] for a in artifacts]
    return render(["JOB", "CHAIN", "FROM", "RESULT", "TIME", "REFS", "DETAIL"], rows)

