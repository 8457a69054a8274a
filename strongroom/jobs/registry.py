"""Every job type in one table: its options (the schema entry), the runner's function that
runs it, its default schedule, the function that drills its backups, and the Prometheus
metrics its runs write.

The runner dispatches through `get(type).run`, so a new job type is one schema entry and
one row here. Functions are named by "module:attribute" and imported when first used:
looking up a type's options or schedule (the validator, `config generate`, scripts/gen-docs)
imports none of the capability packages.

default_schedule is the schedule the role gives a job of the type that names none
(strongroom_jobs_type_schedules; `schedule: manual` opts out); the engine itself runs a
job without a schedule only when asked.
"""

import importlib
from dataclasses import dataclass

from . import schema


def _resolve(ref):
    if ref is None:
        return None
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Entry:
    name: str
    run_ref: str  # (job, paths) -> outcome
    default_schedule: str | None = None
    drill_ref: str | None = None  # (name, job, drill.base.Context) -> drill.base.Plan
    metrics_ref: str | None = None  # a tuple of metric names

    @property
    def options(self):
        """The type's options model: its schema entry (schema.JobType)."""
        return schema.BY_NAME[self.name]

    @property
    def old_names(self):
        return self.options.old_names

    @property
    def run(self):
        return _resolve(self.run_ref)

    @property
    def drill(self):
        """The function that plans a drill of one job of this type; None: none yet."""
        return _resolve(self.drill_ref)

    @property
    def metrics(self):
        """Names of the Prometheus metrics a run of this type writes (() for none)."""
        return tuple(_resolve(self.metrics_ref) or ())


_RUNNER = "strongroom.jobs:"

ENTRIES = (
    Entry("bundle", _RUNNER + "run_bundle_sync", drill_ref="strongroom.drill.bundle:plan"),
    Entry("drill", _RUNNER + "run_restore_drill"),
    Entry("status", _RUNNER + "run_status_check",
          metrics_ref="strongroom.status:METRIC_NAMES"),  # with options.prometheus
    Entry("sync", _RUNNER + "run_git_sync"),
    Entry("snapshot", _RUNNER + "run_snapshot", default_schedule="daily 03:15",
          drill_ref="strongroom.drill.snapshot:plan"),
    Entry("checkpoint", _RUNNER + "run_checkpoint", default_schedule="every 15m",
          drill_ref="strongroom.drill.checkpoint:plan"),
    Entry("daily", _RUNNER + "run_daily", drill_ref="strongroom.drill.days:plan"),
    Entry("rollup", _RUNNER + "run_rollup", drill_ref="strongroom.drill.days:plan"),
    Entry("bisync", _RUNNER + "run_bisync"),
    Entry("restic", _RUNNER + "run_restic", drill_ref="strongroom.drill.restic:plan"),
    Entry("db", _RUNNER + "run_db_backup", drill_ref="strongroom.drill.db:plan"),
)
REGISTRY = {e.name: e for e in ENTRIES}

if tuple(REGISTRY) != schema.TYPE_NAMES:  # one row per schema entry, in its order
    raise ImportError("strongroom.jobs.registry and strongroom.jobs.schema list different "
                      f"job types: {tuple(REGISTRY)} != {schema.TYPE_NAMES}")


def get(type_name):
    """The entry of a job type, by its name or an old name (KeyError for neither)."""
    return REGISTRY[schema.job_type(type_name).name]


def default_schedules():
    """{type: schedule} of the types that have a default schedule."""
    return {e.name: e.default_schedule for e in ENTRIES if e.default_schedule}


def drilled_types():
    """The types whose jobs a restore drill tests."""
    return tuple(e.name for e in ENTRIES if e.drill_ref)
