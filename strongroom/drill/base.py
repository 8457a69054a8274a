"""What every drill is made of: an Artifact (one restore's result) and a Plan (one job's
restores, the lock they are taken under, and what to say when there is nothing to test).

Each job type's drill module (drill/bundle.py, drill/snapshot.py, ...) has a planner
`plan(name, job, ctx) -> Plan | None`, named by the job type's row in jobs/registry.py.
drill.run() takes each Plan's lock, lists its targets under it, restores each target
from each source into its own scratch directory, times it (the restore time is the RTO
a user can expect) and removes the scratch data. A Plan's drill() may raise: run() turns
any exception into an error artifact, so one damaged artifact never stops the others.
"""

import contextlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Artifact:
    kind: str  # bundle_chain | snapshot | checkpoint | day | rollup | db_version | restic
    name: str  # the chain, snapshot id, checkpoint, day, rollup, version key, snapshot id
    job: str
    source: str  # local | remote
    result: str = "ok"  # ok | warning (restored, something to look at) | error
    duration_seconds: float = 0.0  # the restore and its checks: the measured RTO
    files: int = 0  # files restored and checked
    bytes: int = 0  # bytes restored
    refs: int = 0  # bundle chains: refs restored
    message: str = ""

    def as_dict(self):
        return asdict(self)


@dataclass
class Context:
    """What a planner may need besides its job: where things live and what was asked."""

    config_dir: Path
    state_dir: Path
    source: str = "local"  # local | remote | both
    notes: list = field(default_factory=list)  # said once, under the drill's table
    identity: str | None = None  # --identity or the drill job's: for sealed remote copies

    def identity_of(self, job):
        """The age identity that opens job's sealed remote copies: its own, else ours."""
        return (job.get("options") or {}).get("identity") or self.identity

    def sources(self, name, has_remote):
        """The sources of SOURCE a job can be drilled from: a job with no remote has only
        its local copy, said in a note when the remote was asked for."""
        wanted = ("local", "remote") if self.source == "both" else (self.source,)
        if "remote" in wanted and not has_remote:
            self.notes.append(f"{name}: no remote configured; its off-site copy cannot "
                              "be drilled")
            wanted = tuple(s for s in wanted if s != "remote")
        return wanted

    def has_run(self, name):
        """Whether job NAME has ever finished a run here (it has a status file): a backup
        folder missing then is lost or unmounted, not simply not made yet."""
        return (Path(self.state_dir) / "status" / f"{name}.json").is_file()

    def rotate(self, key, names):
        """One of NAMES, a different one each time KEY is asked (a persisted counter under
        <state-dir>/drill-rotation.json), so a weekly drill walks through every older
        version in turn. None when NAMES is empty. Deterministic: the counter, not chance."""
        names = list(names)
        if not names:
            return None
        path = Path(self.state_dir) / ROTATION_FILE
        try:
            counters = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(counters, dict):
                counters = {}
        except (OSError, ValueError):
            counters = {}
        n = counters.get(key, 0)
        n = n if isinstance(n, int) and n >= 0 else 0
        counters[key] = n + 1
        from ..core import fsutil

        path.parent.mkdir(parents=True, exist_ok=True)
        fsutil.atomic_write_json(path, counters)
        return names[n % len(names)]


ROTATION_FILE = "drill-rotation.json"


class Plan:
    """One job's drill. Subclasses set kind and implement targets() and drill()."""

    kind = "artifact"
    what_store = "backup folder"  # how errors name what stores holds ("bundle store")

    def __init__(self, job, sources, stores=()):
        self.job = job  # the job's name ("-" for a drill of a path given on the CLI)
        self.sources = tuple(sources)
        self.stores = tuple(Path(s) for s in stores)  # what scratch must never overlap

    def missing(self):
        """An error message when what the job keeps locally is not there at all and a
        local drill was asked for (a store that does not exist); None otherwise."""
        return None

    def lock(self, wait):
        """The lock held while targets are listed and restored (a job's own store lock,
        so a run cannot retire what is being restored)."""
        return contextlib.nullcontext()

    def targets(self, source):
        """The names of what to restore from SOURCE, listed under the lock."""
        raise NotImplementedError

    def drill(self, name, source, work):
        """Restore NAME from SOURCE into the empty directory WORK and check it; return an
        Artifact (its duration is set by run()). May raise."""
        raise NotImplementedError

    def nothing(self):
        """What to put where, when there was nothing to restore."""
        return f"nothing of job {self.job} to restore"


class FolderPlan(Plan):
    """A Plan over one folder of the job's (a snapshot or checkpoint dest): the folder
    missing once the job has run is an error, and what is chosen is marked in use (held
    until the drill ends) instead of locking the folder, which would block the job's runs
    for as long as a drill takes. Subclasses set self.dest and self.ctx; targets() enters
    its in-use marks into self.held."""

    held = None

    def missing(self):
        if not self.dest.is_dir() and self.ctx.has_run(self.job):
            return (f"{self.what_store} {self.dest} does not exist, yet job {self.job} has "
                    "run: is its disk mounted, or was the folder moved or deleted?")
        return None  # a job that never ran: nothing() says so

    @contextlib.contextmanager
    def lock(self, wait):
        with contextlib.ExitStack() as held:
            self.held = held
            try:
                yield held
            finally:
                self.held = None
