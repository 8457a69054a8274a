"""Restore drills: prove, on a schedule, that every backup on this host restores.

Every job type with a drill names its planner in its registry row (drill_ref); plans()
asks each job's planner for a base.Plan, and run() drives them: each Plan's lock is held
while its targets are listed and restored, each target is restored from each source into
its own scratch directory by the type's real restore path and checked, the time that took
is recorded (the RTO a user can expect), and the scratch data is removed. The planners
live beside this file: bundle.py (bundle chains), snapshot.py, checkpoint.py, and the
other types' modules.

A drill never writes to a store or a remote, but for one probe object: a job with an S3
remote gets a no_delete artifact (nodelete.py), whether its keys can delete. A drill with
nothing to test is a warning: "0 of 0 restored" must not read as a pass. One artifact
that fails, or cannot even be read, is that artifact's error: the others are still drilled.
"""

import os
import re
import time
from pathlib import Path

from ..core import fsutil
from ..core.errors import ERROR, OK, WARNING, StrongroomError
from ..jobs import config
from . import nodelete
from .base import Artifact, Context, Plan

__all__ = ["Artifact", "Context", "Plan", "clean_scratch", "plans", "run", "summary_table"]

SCRATCH_PREFIX = "drill-"
SOURCES = config.schema.options("drill")["source"].kind.choices  # local, remote, both
LOCK_WAIT = config.schema.default("drill", "lock_wait")  # seconds, a drill job's default


def _either(names):
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def plans(config_dir, state_dir, job_names=None, source="local", identity=None):
    """(a Plan per job on this host whose type has a drill, or per named job; notes).
    identity: the age identity for the jobs whose own `identity` is not set."""
    from ..jobs import registry

    ctx = Context(Path(config_dir), Path(state_dir), source, identity=identity)
    names = job_names or config.job_names(config_dir)
    out = []
    for name in names:
        try:
            job = config.load_job(config_dir, name)
        except StrongroomError as exc:
            if job_names:
                raise
            ctx.notes.append(f"skipped {name}: {exc}")
            continue
        plan_for = registry.get(job["type"]).drill
        if plan_for is None:
            if job_names:
                raise StrongroomError(f"job {name} is a {job['type']} job; restore drills "
                                      f"test {_either(registry.drilled_types())} jobs")
            continue
        plan = plan_for(name, job, ctx)
        if plan is not None:
            out.append(plan)
        probe = nodelete.plan(name, job, ctx)  # an S3 remote: can its keys delete?
        if probe is not None:
            out.append(probe)
    return out, ctx.notes


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


def _check_scratch(scratch, plan_list):
    scratch = Path(scratch).resolve()
    for plan in plan_list:
        for store in plan.stores:
            store = Path(store).resolve()
            if scratch == store or store in scratch.parents or scratch in store.parents:
                raise StrongroomError(
                    f"scratch directory {scratch} overlaps {plan.what_store} {store} of job "
                    f"{plan.job}; a drill must never write near what it tests")


def _message(exc):
    if isinstance(exc, (StrongroomError, OSError)):
        return str(exc)
    return f"unexpected {type(exc).__name__}: {exc}"


def _drill_one(plan, name, source, work):
    """plan.drill(), timed; any exception is this artifact's error."""
    started = time.monotonic()
    try:
        art = plan.drill(name, source, work)
    except Exception as exc:  # one artifact's damage, never the whole drill
        art = Artifact(plan.kind, name, plan.job, source, "error", message=_message(exc))
    art.duration_seconds = round(time.monotonic() - started, 3)
    return art


def run(plan_list, scratch, lock_wait=LOCK_WAIT, progress=None):
    """Drill every target of every plan. Returns (artifacts, exit code, summary)."""
    scratch = Path(scratch).absolute()  # git and the restores run inside it
    _check_scratch(scratch, plan_list)
    scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
    clean_scratch(scratch)
    artifacts, empty = [], []

    def add(art):
        artifacts.append(art)
        if progress:
            progress(art)

    for plan in plan_list:
        first = len(artifacts)
        sources = plan.sources
        why = plan.missing() if "local" in sources else None
        if why:
            add(Artifact(plan.kind, "*", plan.job, "local", "error", message=why))
            sources = tuple(s for s in sources if s != "local")
        if not sources:
            continue
        try:
            with plan.lock(lock_wait):
                for source in sources:
                    try:
                        names = list(plan.targets(source))
                    except Exception as exc:  # e.g. a remote that cannot be listed
                        add(Artifact(plan.kind, "*", plan.job, source, "error",
                                     message=_message(exc)))
                        continue
                    for name in names:
                        work = scratch / f"{SCRATCH_PREFIX}{os.getpid()}-{len(artifacts)}"
                        work.mkdir(mode=0o700)
                        try:
                            art = _drill_one(plan, name, source, work)
                        finally:
                            fsutil.rmtree_quiet(work)
                        add(art)
        except (StrongroomError, OSError) as exc:  # its lock: the other jobs still drill
            done = {a.source for a in artifacts[first:]}
            for source in [s for s in sources if s not in done] or sources[:1]:
                add(Artifact(plan.kind, "*", plan.job, source, "error",
                             message=_message(exc)))
        if len(artifacts) == first:
            empty.append(plan)
    failed = [a for a in artifacts if a.result == "error"]
    warned = [a for a in artifacts if a.result == "warning"]
    if not artifacts:
        return artifacts, WARNING, nothing_to_test(plan_list)
    pending = ("; nothing to restore yet: " + "; ".join(p.nothing() for p in empty)) \
        if empty else ""
    if failed:
        return artifacts, ERROR, (f"{len(failed)} of {len(artifacts)} restores FAILED: "
                                  + "; ".join(_said(a) for a in failed) + pending)
    total = sum(a.duration_seconds for a in artifacts)
    summary = f"{len(artifacts)} of {len(artifacts)} restores passed in {total:.1f} s"
    if warned:
        return artifacts, WARNING, summary + "; look at: " + "; ".join(
            _said(a) for a in warned) + pending
    return artifacts, OK, summary + pending


def _said(art):
    return f"{art.job}/{art.name} ({art.source}): {art.message}"


def nothing_to_test(plan_list):
    """What to put where, so that the next drill has something to restore."""
    if not plan_list:
        from ..jobs import registry

        return (f"nothing to test: no job to drill; add one of type "
                f"{_either(registry.drilled_types())} (what it backs up is what a drill "
                "restores), or name such jobs in options.jobs")
    return "nothing to test: " + "; ".join(p.nothing() for p in plan_list)


def summary_table(artifacts):
    from ..core.formats import render

    rows = [[a.job, a.kind, a.name, a.source,
             a.result.upper() if a.result != "ok" else "ok",
             f"{a.duration_seconds:.1f}s", a.message] for a in artifacts]
    return render(["JOB", "KIND", "NAME", "FROM", "RESULT", "RTO", "DETAIL"], rows)
