"""The job-file schema: every key of a job file, and every option of every job type, with
its type, default, bounds or allowed values, whether it is required, and what it means.

This module is the one place these are written. The engine's validator
(strongroom/jobs/config.py) checks job files against it, the runner and the capability
packages take their defaults from it, `strongroom config show|generate|schema` print it,
and scripts/gen-docs renders it into the role's argument_specs and the README's option
tables (`scripts/gen-docs --check` fails when either is stale).

Representation. Plain Python data: frozen dataclasses (`Kind`, `Option`, `Section`,
`JobType`) holding plain values, with each kind's check a small function. The engine runs
on each host's own Python (Debian 12's 3.11.2 and up) with only PyYAML, Jinja2, apprise and
pathspec installed; a model library such as pydantic would be one more dependency on every
host, a compiled one (pydantic-core) that must match each host's Python and architecture,
for what a few dozen declarations do here. Data also keeps the validator's own behaviour in
reach: it reports every error of a file at once, in the wording the tests and users know
(file, key, value, what was expected), which a model library would word its own way.

JSON Schema. `json_schema()` exports the same declarations as a JSON Schema (draft
2020-12), for editors and for checks outside the engine (`strongroom config schema`).
tests/jobs proves the export and the engine agree on valid and invalid files. Where JSON
Schema cannot say what the engine checks, the export is looser, and only there:

- a schedule: the export checks its shape (which words, a time HH:MM, five cron fields);
  the day names, the cron fields' values and the interval's bounds are the engine's check;
- a path starting with `~name`: the engine asks the host's user database whether NAME is a
  user; the export accepts any path starting with / or ~;
- JSON has one kind of number, so to JSON Schema 10.0 is an integer; YAML keeps 10.0 and 10
  apart, and the engine wants 10 where it says "an integer";
- what JSON cannot hold at all (a mapping key that is not a string, a date, NaN) is refused
  by the engine alone.
"""

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import notify


class _NoDefault:
    """An option without a default value (the engine works one out, or does without)."""

    def __repr__(self):
        return "NO_DEFAULT"


NO_DEFAULT = _NoDefault()

# The one rule for a job's name, wherever one is taken (run JOB, --job NAME, the `name`
# key, a restore drill's `jobs`, the files listed in <config-dir>/jobs): a name names a
# file, a lock, a log, a systemd unit and a cron entry, so it can be no path and no option.
JOB_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
JOB_NAME_RULE = ("a name of letters, digits, '.', '_' or '-', 1-64 characters starting with "
                 "a letter or digit (it names files, units and cron entries)")
# `$` in Python's re also matches before a final newline: the lookahead refuses "name\n"
# there, and is true at the end of the text in every other dialect
_JOB_NAME_PATTERN = "^" + JOB_NAME_RE.pattern + r"$(?!\n)"

SEVERITIES = notify.SEVERITIES
EVENTS = tuple(e for e in notify.EVENTS if e != "test")  # `test` is `notify test`'s own


# --- kinds: what a value may be --------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """What a value may be: the engine's check, the words for what was expected, and the
    same rule as JSON Schema and as an argument_specs type."""

    label: str  # the type as tables say it
    expected: str  # the words of an error: "key 'x' has value V; expected <expected>"
    test: Any  # value -> bool
    json: dict  # the JSON Schema (draft 2020-12) of a valid value
    ansible: str = "raw"  # the argument_specs type
    elements: str | None = None  # the argument_specs elements of a list
    choices: tuple = ()
    explain: Any = None  # value -> expected, when the words depend on the value
    secret: bool = False  # an error names the key, never the value (a ping URL)

    def problem(self, value):
        """None when value is valid; else what was expected."""
        if self.test(value):
            return None
        return self.explain(value) if self.explain else self.expected


def _nonblank(v):
    return isinstance(v, str) and v.strip() != ""


def _abs_path(v):
    if not _nonblank(v):
        return False
    try:
        return Path(v).expanduser().is_absolute()
    except (RuntimeError, ValueError, KeyError):  # ~name of no user, a NUL in ~name
        return False


def _int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v):
    return isinstance(v, int | float) and not isinstance(v, bool)


_NONBLANK_JSON = {"type": "string", "pattern": r"\S"}
_PATH_JSON = {"type": "string", "pattern": "^[/~]"}

TEXT = Kind("string", "a non-empty string", _nonblank, _NONBLANK_JSON, "str")
PATH = Kind("path", "an absolute path", _abs_path, _PATH_JSON, "path")
BOOL = Kind("true/false", "true or false", lambda v: isinstance(v, bool),
            {"type": "boolean"}, "bool")
TEXT_LIST = Kind("list of strings", "a list of non-empty strings",
                 lambda v: isinstance(v, list) and all(_nonblank(x) for x in v),
                 {"type": "array", "items": _NONBLANK_JSON}, "list", "str")
PATH_LIST = Kind("list of paths", "a list of absolute paths",
                 lambda v: isinstance(v, list) and all(_abs_path(x) for x in v),
                 {"type": "array", "items": _PATH_JSON}, "list", "path")


def is_job_name(v):
    return isinstance(v, str) and JOB_NAME_RE.fullmatch(v) is not None


JOB_NAME = Kind("job name", JOB_NAME_RULE, is_job_name,
                {"type": "string", "pattern": _JOB_NAME_PATTERN}, "str")
JOB_NAME_LIST = Kind("list of job names", "a list of job names, each " + JOB_NAME_RULE,
                     lambda v: isinstance(v, list) and all(is_job_name(x) for x in v),
                     {"type": "array", "items": JOB_NAME.json}, "list", "str")


def integer(minimum):
    return Kind(f"integer >= {minimum}", f"an integer >= {minimum}",
                lambda v: _int(v) and v >= minimum,
                {"type": "integer", "minimum": minimum}, "int")


def number(minimum):
    return Kind(f"number >= {minimum}", f"a number >= {minimum}",
                lambda v: _number(v) and v >= minimum,
                {"type": "number", "minimum": minimum}, "float")


def one_of(*choices):
    return Kind("one of: " + ", ".join(choices), "one of: " + ", ".join(choices),
                lambda v: isinstance(v, str) and v in choices, {"enum": list(choices)}, "str",
                choices=choices)


def list_of(*choices):
    return Kind("list of: " + ", ".join(choices), "a list of: " + ", ".join(choices),
                lambda v: isinstance(v, list) and all(isinstance(x, str) and x in choices
                                                      for x in v),
                {"type": "array", "items": {"enum": list(choices)}}, "list", "str",
                choices=choices)


_SIZE_RE = r"\d+(\.\d+)?\s*[kKmMgGtT]?i?[bB]?"


def _size(v):
    if _int(v):
        return v >= 0
    return isinstance(v, str) and re.fullmatch(_SIZE_RE, v.strip()) is not None


SIZE = Kind("size", "a size such as 50M, 2G or a byte count", _size,
            {"anyOf": [{"type": "integer", "minimum": 0},
                       {"type": "string", "pattern": r"^\s*" + _SIZE_RE + r"\s*$"}]}, "raw")

POLICIES = ("append", "block", "primary-wins")
POLICY_MAP = Kind(
    "mapping of pattern to policy", "a mapping of path pattern to append, block or primary-wins",
    lambda v: isinstance(v, dict) and all(_nonblank(k) and isinstance(p, str) and p in POLICIES
                                          for k, p in v.items()),
    {"type": "object", "propertyNames": {"pattern": r"\S"},
     "additionalProperties": {"enum": list(POLICIES)}}, "dict")


def _schedule_problem(v):
    from .. import schedule
    from ..core.errors import ConfigError

    if not _nonblank(v):
        return "a schedule spec"
    try:
        schedule.parse(v)
    except ConfigError as exc:
        return f"a schedule spec ({exc})"
    return None


# A schedule's shape, for JSON Schema: the words (any case), a time HH:MM, `every N(m|h)`,
# or five cron fields. Which days, fields and intervals are valid is the engine's check.
_HHMM = r"([01]?\d|2[0-3]):[0-5]\d"
_SCHEDULE_PATTERN = (
    r"^\s*(?:[Dd][Aa][Ii][Ll][Yy]\s+" + _HHMM
    + r"|[Ww][Ee][Ee][Kk][Ll][Yy]\s+\S+\s+" + _HHMM
    + r"|[Mm][Oo][Nn][Tt][Hh][Ll][Yy]\s+\d+\s+" + _HHMM
    + r"|[Ee][Vv][Ee][Rr][Yy]\s+\d+[MmHh]"
    + r"|\S+\s+\S+\s+\S+\s+\S+\s+\S+)\s*$")
SCHEDULE = Kind("schedule", "a schedule spec", lambda v: _schedule_problem(v) is None,
                {"type": "string", "pattern": _SCHEDULE_PATTERN}, "str",
                explain=_schedule_problem)


# --- options and sections ---------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One key: its kind, whether it is required, its default and what it means.

    default: the value the engine uses when the key is absent (NO_DEFAULT: none; then
    default_text says what happens instead, such as "<state-dir>/drill" or "no off-site
    copy"). placeholder: what `config generate` writes for a required option until it is
    filled in; example: a valid value of a required option (the tests fill a generated
    file in with it)."""

    name: str
    kind: Kind
    description: str
    required: bool = False
    default: Any = NO_DEFAULT
    default_text: str | None = None
    example: Any = None
    placeholder: str | None = None  # the text a generated file holds until filled in

    @property
    def has_default(self):
        return self.default is not NO_DEFAULT

    def default_value(self):
        """A copy of the default (lists are never shared)."""
        return copy.deepcopy(self.default)

    def shown_default(self):
        """The default as tables say it."""
        if self.required:
            return "required"
        if self.has_default:
            return _show(self.default)
        return self.default_text or "-"

    def placeholder_value(self):
        """The placeholder: a list of one for a list ("<path>" for a list of paths)."""
        label = self.kind.label
        if self.kind.ansible != "list":
            return self.placeholder or f"<{label}>"
        item = label[len("list of "):].removesuffix("s") if label.startswith("list of ") \
            else label
        return [self.placeholder or f"<{item}>"]


def _show(value):
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True)
class Section:
    """A mapping of options: a job type's `options`, or a job's `notify`, `log` or `ping`.

    shorthand: the option a bare value stands for (`ping: URL` is `ping: {url: URL}`);
    exactly_one: options of which exactly one is given; optional: a job without the
    mapping has none of it (no defaults filled in: no `ping` is no heartbeat)."""

    name: str
    options: tuple = ()
    shorthand: str | None = None
    exactly_one: tuple = ()
    optional: bool = False

    def __post_init__(self):
        names = [o.name for o in self.options]
        if len(names) != len(set(names)):
            raise ValueError(f"{self.name}: an option is declared twice")

    def __getitem__(self, key):
        for o in self.options:
            if o.name == key:
                return o
        raise KeyError(f"{self.name} has no option {key!r}")

    def __contains__(self, key):
        return any(o.name == key for o in self.options)

    def __iter__(self):
        return iter(self.options)

    @property
    def names(self):
        return tuple(o.name for o in self.options)

    @property
    def required(self):
        return tuple(o.name for o in self.options if o.required)

    @property
    def secret(self):
        """True when an option holds a secret: errors then show no value of the mapping."""
        return any(o.kind is not None and o.kind.secret for o in self.options)

    def defaults(self):
        """{option: default} for every option that has one (copies)."""
        return {o.name: o.default_value() for o in self.options if o.has_default}


@dataclass(frozen=True)
class JobType:
    """A job type: its name (one word), the names it had before, what it does, its options."""

    name: str
    summary: str
    options: Section
    old_names: tuple = ()

    @property
    def names(self):
        return (self.name, *self.old_names)


# Every job with an off-site copy re-reads it (strongroom/reverify): each remote object at
# least once in this many days, a share per run.
_VERIFY_DAYS = Option(
    "verify_days", integer(0), "Every object the job put off-site is read back and checked "
    "by SHA-256 at least once in this many days, a share of them per run; damage fails the "
    "run until `strongroom reverify JOB --repair` (0: never re-read).", default=30)


# Sealing off-site copies (strongroom/upload/seal.py, strongroom/crypt): what a job sends
# that can hold user content reaches the remote only as an age file.
_ENCRYPT_TO = Option(
    "encrypt_to", PATH, "An age recipients file (as `age -R` takes it): every file the job "
    "sends off-site that can hold user content goes as NAME.age with a plain NAME.age.json "
    "sidecar; manifests and checksum lists stay plain. Local copies stay as they are.",
    default_text="sent as they are")
_IDENTITY = Option(
    "identity", PATH, "An age identity file (0600) that opens what encrypt_to sealed, for "
    "restores and drills from the remote.", default_text="none: sealed copies cannot be "
    "opened")


# S3 Object Lock on what a job puts off-site (strongroom/core/s3api.py): rclone cannot set
# a retention, so the engine asks the S3 API itself once each upload is proven.
_OBJECT_LOCK_DAYS = Option(
    "object_lock_days", integer(1), "S3 Object Lock: every object version the job uploads "
    "is locked (no delete, no overwrite of that version) until N days after its upload, "
    "once it is verified. Needs an S3 remote on a bucket created with Object Lock.",
    default_text="no lock")
_OBJECT_LOCK_MODE = Option(
    "object_lock_mode", one_of("COMPLIANCE", "GOVERNANCE"), "COMPLIANCE: no one, the "
    "account's root included, can shorten or remove the lock; GOVERNANCE: a user with "
    "s3:BypassGovernanceRetention can.", default_text="COMPLIANCE")


# How a job's copies reach the remote (each through the upload path, proven by hash).
def _offsite():
    return (
        _ENCRYPT_TO,
        _IDENTITY,
        _OBJECT_LOCK_DAYS,
        _OBJECT_LOCK_MODE,
        Option("rclone_config", PATH, "The rclone.conf to use.",
               default_text="<config-dir>/rclone.conf when present"),
        Option("bwlimit", TEXT, "rclone --bwlimit for the off-site copy, such as 10M.",
               default_text="no limit"),
        Option("retries", integer(1), "Attempts at each off-site copy (rclone --retries).",
               default=3),
        Option("low_level_retries", integer(1),
               "Attempts at each request of an off-site copy (rclone --low-level-retries).",
               default=3),
        _VERIFY_DAYS,
    )


def _lock_wait(seconds, what):
    return Option("lock_wait", number(0),
                  f"Seconds to wait for {what} held by another run before exiting 11 "
                  "(`run --wait` replaces it).", default=seconds)


DELETE_DAYS = ("after_rollup", "after_upload", "never")
_DELETE_DAYS = Option(
    "delete_days", one_of(*DELETE_DAYS),
    "When a day folder is deleted here: after_rollup once it is verified on the remote and "
    "packed in a verified rollup, after_upload once it is verified on the remote, never. "
    "The daily and rollup jobs of one dest go by the most conservative value either sets.",
    default="after_rollup")
_KEEP_ROLLUPS = Option(
    "keep_rollups", integer(1),
    "Rollups kept here (older ones go once they are on the remote). The daily and rollup "
    "jobs of one dest go by the largest value either sets.", default=12)

DEFAULT_CRITICAL_PATTERNS = [".env", ".env.*", "!.env.example", "!.env.sample", "*.pem",
                             "*.key", "*.p12", "*.pfx", "id_rsa", "id_ed25519",
                             "credentials.json", "secrets.yml", "secrets.yaml"]

TYPES = (
    JobType("bundle", "keeps every git repository under a root as a verified chain of git "
            "bundles in a store, copied off-site and proven by hash", Section("bundle", (
                Option("root", PATH, "Directory searched for git repositories (working trees "
                       "and bare repositories).", required=True, example="/home/alice/projects",
                       placeholder="<directory of repositories>"),
                Option("store", PATH, "The bundle store the chains are written to.",
                       required=True, example="/var/lib/strongroom/bundles",
                       placeholder="<bundle store directory>"),
                Option("remote", TEXT, "rclone REMOTE:PATH the store is copied to and "
                       "verified against.", default_text="no off-site copy"),
                Option("rclone_config", PATH, "The rclone.conf to use.",
                       default_text="<config-dir>/rclone.conf when present"),
                Option("full_every", integer(1), "Incremental bundles before a fresh full "
                       "bundle.", default=10),
                Option("full_after_days", number(1), "Days after which a fresh full bundle "
                       "is written.", default=30),
                Option("keep_retired", integer(0), "Retired chains kept locally after a "
                       "consolidation (deleted only once the current chain is off-site).",
                       default=1),
                Option("critical_patterns", TEXT_LIST, "Gitignore-style patterns of the "
                       "critical ignored files (.env, keys, certificates) kept with each "
                       "chain; [] keeps none.", default=DEFAULT_CRITICAL_PATTERNS),
                Option("jobs", integer(0), "Repositories bundled in parallel (0: one per "
                       "core).", default=0),
                _ENCRYPT_TO,
                _IDENTITY,
                _OBJECT_LOCK_DAYS,
                _OBJECT_LOCK_MODE,
                _VERIFY_DAYS,
            )), ("bundle_sync",)),
    JobType("drill", "restores the backups of every job on the host whose type has a drill "
            "(bundle chains, snapshots, checkpoints, ...) into scratch space and checks them, "
            "from the local copy, the remote or both, timing each restore (the RTO)",
            Section("drill", (
                Option("jobs", JOB_NAME_LIST, "The jobs whose backups are drilled.",
                       default_text="every job on the host whose type has a drill"),
                Option("source", one_of("local", "remote", "both"),
                       "Restore from the local copy, from the remote alone (proving the "
                       "off-site copy), or both.", default="local"),
                Option("scratch", PATH, "Scratch directory the restores are made in.",
                       default_text="<state-dir>/drill"),
                _lock_wait(300, "a store's lock"),
                Option("identity", PATH, "An age identity file (0600) for the drilled jobs "
                       "whose remote copies are sealed (a job's own identity comes first).",
                       default_text="each drilled job's identity"),
            )), ("restore_drill",)),
    JobType("status", "alerts on stale jobs (no success within a multiple of their "
            "period) and writes the Prometheus textfile and the report page",
            Section("status", (
                Option("stale_factor", number(1), "A job is stale after this many times its "
                       "period without a success.", default=2),
                Option("prometheus", PATH, "Also write a node_exporter textfile-collector "
                       "file here.", default_text="none written"),
                Option("html", PATH, "Also write the report page (one self-contained HTML "
                       "file: every job's results, drills, coverage, a 30-day strip) here.",
                       default_text="none written"),
                Option("remind_hours", number(0), "Repeat a stale job's alert this often "
                       "while it stays stale (0: alert once).", default=24),
            )), ("status_check",)),
    JobType("sync", "pushes or pulls a work tree between two machines through git, with a "
            "snapshot before each sync and rollback", Section("sync", (
                Option("repo", PATH, "The work tree.", required=True,
                       example="/home/alice/notes", placeholder="<work tree>"),
                Option("direction", one_of("push", "pull"), "push: commit everything and "
                       "push; pull: fetch and merge under the conflict policies.",
                       required=True, example="push", placeholder="<push or pull>"),
                Option("role", one_of("primary", "secondary"), "This machine's role in the "
                       "pair (from the inventory); primary-wins needs it.", required=True,
                       example="primary", placeholder="<primary or secondary>"),
                Option("remote", TEXT, "The git remote.", default="origin"),
                Option("branch", TEXT, "The branch.", default_text="the current branch"),
                Option("include", TEXT_LIST, "Gitignore-style patterns of the files the "
                       "manifest covers.", default_text="every file"),
                Option("exclude", TEXT_LIST, "Patterns left out of the manifest.",
                       default=[]),
                Option("policies", POLICY_MAP, "Conflict policy per path pattern: append, "
                       "block or primary-wins.", default={}),
                Option("timeout", number(1), "Seconds a fetch or push may go without "
                       "progress before it stops.", default=120),
            )), ("git_sync",)),
    JobType("snapshot", "takes an immutable snapshot of a folder (critical files, SQLite "
            "copies, a full archive, checksums) and prunes by keep_last and keep_days; with "
            "pre_push_max_size the role also installs the source's pre-push hook",
            Section("snapshot", (
                Option("source", PATH, "The folder snapshotted.", required=True,
                       example="/srv/app", placeholder="<folder to snapshot>"),
                Option("dest", PATH, "Where the snapshots are kept.", required=True,
                       example="/var/backups/strongroom/app",
                       placeholder="<snapshot directory>"),
                Option("critical", TEXT_LIST, "Gitignore-style patterns of critical files, "
                       "copied on their own (0600) beside the archive.", default=[]),
                Option("db", TEXT_LIST, "SQLite databases (absolute or relative to source) "
                       "copied through the online backup API.", default=[]),
                Option("exclude", TEXT_LIST, "Patterns left out of the archive (beside "
                       "node_modules, venvs, __pycache__ and .git).", default=[]),
                Option("immutable", one_of("require", "warn", "off"), "chattr +i on the "
                       "snapshot: require fails without it, warn takes the snapshot and "
                       "exits 1, off does not try.", default="warn"),
                Option("format", one_of("zst", "gz"), "The archive's compression.",
                       default="zst"),
                Option("large_threshold", SIZE, "Files above this size are listed in "
                       "LARGE_FILES.txt.", default="50M"),
                Option("keep_last", integer(1), "Prune after each snapshot: the newest N "
                       "always stay (set together with keep_days).",
                       default_text="no pruning"),
                Option("keep_days", number(0), "Prune after each snapshot: every snapshot "
                       "younger than D days stays (set together with keep_last).",
                       default_text="no pruning"),
                _lock_wait(0, "the snapshot lock"),
                Option("pre_push_max_size", SIZE, "The role installs the source "
                       "repository's pre-push hook, refusing pushes that carry a file above "
                       "this size.", default_text="no hook"),
                Option("remote", TEXT, "rclone REMOTE:PATH each snapshot is copied to "
                       "(immutable, as REMOTE:PATH/<id>) and verified by hash.",
                       default_text="no off-site copy"),
                *_offsite(),
            ))),
    JobType("checkpoint", "saves a work tree's uncommitted changes and untracked files "
            "with a patch, and drops old checkpoints", Section("checkpoint", (
                Option("source", PATH, "The git work tree.", required=True,
                       example="/home/alice/notes", placeholder="<git work tree>"),
                Option("dest", PATH, "Where the checkpoints are kept.", required=True,
                       example="/home/alice/.local/state/strongroom/checkpoints",
                       placeholder="<checkpoint directory>"),
                Option("keep_days", number(0), "Delete checkpoints older than D days (never "
                       "the newest).", default_text="none deleted"),
                Option("max_file_size", SIZE, "Files above this size are left out (a "
                       "warning).", default="50M"),
                _lock_wait(0, "the checkpoint lock"),
            ))),
    JobType("daily", "copies its sources into a dated folder with a manifest (live "
            "databases through the backup API), uploads and verifies it", Section("daily", (
                Option("sources", PATH_LIST, "Folders copied into each day's folder.",
                       required=True, example=["/srv/app/config"],
                       placeholder="<folder to copy>"),
                Option("dest", PATH, "Where the day folders and rollups are kept.",
                       required=True, example="/var/backups/strongroom/daily",
                       placeholder="<day folder directory>"),
                Option("db", PATH_LIST, "SQLite databases copied through the online backup "
                       "API (besides those found in the sources).", default=[]),
                Option("exclude", TEXT_LIST, "Patterns left out of the copies.", default=[]),
                Option("remote", TEXT, "rclone REMOTE:PATH the days go to (as "
                       "REMOTE:PATH/YYYY-MM-DD, rollups under .../rollups), verified by "
                       "hash.", default_text="no off-site copy"),
                *_offsite(),
                _DELETE_DAYS,
                _KEEP_ROLLUPS,
                _lock_wait(600, "the dest's lock (a rollup of the same dest)"),
            ))),
    JobType("rollup", "packs the day folders of a daily job's dest into weekly archives, "
            "tests, uploads and verifies them before any day is deleted", Section("rollup", (
                Option("dest", PATH, "The daily job's dest.", required=True,
                       example="/var/backups/strongroom/daily",
                       placeholder="<the daily job's dest>"),
                Option("days", integer(1), "Days packed into one rollup at most.", default=7),
                Option("remote", TEXT, "rclone REMOTE:PATH the rollups go to (under "
                       ".../rollups), verified by hash.", default_text="no off-site copy"),
                *_offsite(),
                _DELETE_DAYS,
                _KEEP_ROLLUPS,
                _lock_wait(600, "the dest's lock (a daily job of the same dest)"),
            ))),
    JobType("bisync", "keeps a folder in two-way sync with managed storage (rclone "
            "bisync), stopping instead of deleting en masse", Section("bisync", (
                Option("local", PATH, "The local folder.", required=True,
                       example="/home/alice/Documents", placeholder="<local folder>"),
                Option("remote", TEXT, "rclone REMOTE:PATH of the other side.",
                       required=True, example="onedrive:Documents",
                       placeholder="<rclone REMOTE:PATH>"),
                Option("max_delete", integer(1), "Percent of one side's files a run may "
                       "delete; more stops the run with nothing deleted.", default=50),
                Option("check_access", BOOL, "Require the RCLONE_TEST marker on both sides, "
                       "so an unmounted or emptied side stops the run.", default=True),
                Option("rclone_config", PATH, "The rclone.conf to use.",
                       default_text="<config-dir>/rclone.conf when present"),
                _lock_wait(0, "the bisync lock"),
            ))),
    JobType("restic", "runs a restic backup, forgets by keep_weekly and re-reads a "
            "rotating subset of the data", Section("restic", (
                Option("repository", TEXT, "The restic repository: a local path or "
                       "rclone:REMOTE:PATH.", required=True,
                       example="rclone:offsite:strongroom-restic",
                       placeholder="<path or rclone:REMOTE:PATH>"),
                Option("password_file", PATH, "The repository's password file (must be "
                       "0600; the password never reaches argv, logs or status).",
                       required=True, example="/etc/strongroom/secrets/restic.pw",
                       placeholder="<password file>"),
                Option("paths", PATH_LIST, "What is backed up.", required=True,
                       example=["/srv/app"], placeholder="<path to back up>"),
                Option("exclude", TEXT_LIST, "Patterns left out (restic --exclude).",
                       default=[]),
                Option("tags", TEXT_LIST, "Tags of the job's snapshots; only snapshots "
                       "with them are ever forgotten.", default=["strongroom"]),
                Option("keep_weekly", integer(1), "Weekly snapshots kept (forget "
                       "--keep-weekly).", default=8),
                Option("check_subsets", integer(1), "Every pack is re-read once every N "
                       "runs (check --read-data-subset k/N).", default=7),
                Option("rclone_config", PATH, "The rclone.conf to use.",
                       default_text="<config-dir>/rclone.conf when present"),
            ))),
    JobType("db", "keeps versioned copies of a SQLite database on object storage; a "
            "scheduled run fires on the hours trigger, the application calls `strongroom db "
            "tick` per operation", Section("db", (
                Option("db", PATH, "The SQLite database.", required=True,
                       example="/srv/app/data/app.db", placeholder="<database file>"),
                Option("remote", TEXT, "rclone REMOTE:PATH the versions go to.",
                       default_text="from R2_* or AWS_* environment variables"),
                Option("keep", integer(1), "Distinct versions kept.", default=10),
                Option("host", TEXT, "The host name written into each version's key.",
                       default_text="this host's name"),
                Option("ops_threshold", integer(1), "A backup runs when this many "
                       "operations are pending.", default=10),
                Option("hours_threshold", number(0), "... or when this many hours have "
                       "passed since the last one.", default=24),
                Option("rclone_config", PATH, "The rclone.conf to use.",
                       default_text="<config-dir>/rclone.conf when present"),
                Option("retries", integer(1), "Attempts at each transfer (rclone "
                       "--retries).", default=3),
                Option("low_level_retries", integer(1), "Attempts at each request (rclone "
                       "--low-level-retries).", default=3),
                _ENCRYPT_TO,
                _IDENTITY,
                _OBJECT_LOCK_DAYS,
                _OBJECT_LOCK_MODE,
                _VERIFY_DAYS,
            )), ("db_backup",)),
)

BY_NAME = {t.name: t for t in TYPES}
OLD_NAMES = {old: t.name for t in TYPES for old in t.old_names}  # old name -> name
TYPE_NAMES = tuple(t.name for t in TYPES)
ALL_TYPE_NAMES = TYPE_NAMES + tuple(OLD_NAMES)
# what an error lists as expected for `type`: each type, with the old name it replaces
TYPE_CHOICES_TEXT = ", ".join(
    f"{t.old_names[0]} (now {t.name})" if t.old_names else t.name for t in TYPES)

NOTIFY = Section("notify", (
    Option("min_severity", one_of(*SEVERITIES), "Only events of this severity or above "
           "notify (info < success < warning < error).", default="info"),
    Option("events", list_of(*EVENTS), "The events that notify.", default=list(EVENTS)),
))
LOG = Section("log", (
    Option("max_bytes", integer(1024), "The job's log rotates at this size.",
           default=50 * 1024 * 1024),
    Option("keep", integer(1), "Rotated generations of the log kept.", default=3),
))
# A heartbeat URL (strongroom/ping): http or https, a host, then anything without
# whitespace. It is a secret, so an error names the key and never shows the value.
PING_URL_RE = re.compile(r"[Hh][Tt][Tt][Pp][Ss]?://[^\s/?#]+(?:[/?#]\S*)?")
PING_URL = Kind("http(s) URL", "an http:// or https:// URL (the value is a secret, so it "
                "is not shown)", lambda v: isinstance(v, str) and
                PING_URL_RE.fullmatch(v) is not None,
                {"type": "string", "pattern": "^" + PING_URL_RE.pattern + r"$(?!\n)"}, "str",
                secret=True)
PING_STYLES = ("healthchecks", "uptime_kuma")
PING = Section("ping", (
    Option("url", PING_URL, "The ping URL (a secret: keep it in the vault). Exactly one of "
           "url and url_file.", default_text="none: url_file"),
    Option("url_file", PATH, "A file holding the ping URL, readable by its owner only "
           "(0600); a file others may read is refused.", default_text="none: url"),
    Option("exit_code", BOOL, "healthchecks: a failed run pings URL/<exit code> instead of "
           "URL/fail.", default=False),
    Option("style", one_of(*PING_STYLES), "healthchecks: URL/start, then URL or URL/fail "
           "with the log tail; uptime_kuma: a push monitor's URL?status=up|down&msg=&ping= "
           "at the end only.", default="healthchecks"),
), shorthand="url", exactly_one=("url", "url_file"), optional=True)

# The keys of a job file. `options` is checked by the type's Section, `notify`, `log` and
# `ping` by theirs (kind None: a mapping checked below).
JOB = Section("job", (
    Option("name", JOB_NAME, "The job's name; the file is <config-dir>/jobs/NAME.yml, and it "
           "names the job's lock, log, status, unit and cron entry.", required=True,
           example="nightly", placeholder="<job name>"),
    Option("type", one_of(*ALL_TYPE_NAMES), "What the job does: one of the job types (an "
           "old name still works, with a warning).", required=True),
    Option("schedule", SCHEDULE, "When it runs: 'daily HH:MM', 'weekly DAY HH:MM', "
           "'monthly D HH:MM' (D 1-28), 'every Nm', 'every Nh' or a 5-field cron "
           "expression, in the host's local time.",
           default_text="none (the job runs only when asked)"),
    Option("options", None, "The type's options (below).", default_text="{}"),
    Option("description", TEXT, "Free text.", default_text="none"),
    Option("notify", None, "Which of the job's events notify (min_severity, events).",
           default_text="every event"),
    Option("log", None, "The job's log rotation (max_bytes, keep).",
           default_text="50 MiB, 3 kept"),
    Option("ping", None, "A heartbeat to a monitoring service (healthchecks.io, Uptime "
           "Kuma): a URL, or a mapping (url or url_file, exit_code, style).",
           default_text="no heartbeat"),
))
SUBSECTIONS = {"notify": NOTIFY, "log": LOG, "ping": PING}
# the off-site options the snapshot, daily and rollup jobs share (the upload path's)
OFFSITE = Section("offsite", _offsite())


# --- looking things up ----------------------------------------------------------------------


def canonical(type_name):
    """The type's name for a name or an old name; None for neither."""
    if not isinstance(type_name, str):
        return None
    if type_name in BY_NAME:
        return type_name
    return OLD_NAMES.get(type_name)


def job_type(type_name):
    """The JobType of a name or an old name (KeyError for neither)."""
    name = canonical(type_name)
    if name is None:
        raise KeyError(f"no job type {type_name!r}")
    return BY_NAME[name]


def options(type_name):
    return job_type(type_name).options


def default(type_name, key):
    """The default of option KEY of a job type (or of a job's `notify` or `log`, or of the
    shared off-site options: type_name "notify", "log", "offsite"); KeyError when there is
    none (the engine then works one out, as default_text says)."""
    section = {**SUBSECTIONS, "offsite": OFFSITE}.get(type_name) or options(type_name)
    opt = section[key]
    if not opt.has_default:
        raise KeyError(f"{section.name}.{key} has no default value ({opt.default_text})")
    return opt.default_value()


def get(job, key):
    """The value of option KEY in a loaded job: its own, else the schema's default (None
    when the option has no default value)."""
    opts = job.get("options") or {}
    if key in opts:
        return opts[key]
    opt = options(job["type"])[key]
    return opt.default_value() if opt.has_default else None


def effective(job):
    """A copy of a (valid) job with every default filled in: the type's options, notify and
    log. Keys without a default value (a default worked out when the job runs) stay out."""
    out = copy.deepcopy(job)
    jt = job_type(job["type"])
    out["type"] = jt.name
    out["options"] = _filled(jt.options, out.get("options"))
    for key, section in SUBSECTIONS.items():
        if section.optional and key not in out:
            continue
        given = out.get(key)
        if section.shorthand and isinstance(given, str):
            given = {section.shorthand: given}
        out[key] = _filled(section, given)
    return out


def _filled(section, given):
    """given's values, and each missing default, in the schema's order."""
    given = given or {}
    out = {}
    for opt in section:
        if opt.name in given:
            out[opt.name] = given[opt.name]
        elif opt.has_default:
            out[opt.name] = opt.default_value()
    out.update({k: v for k, v in given.items() if k not in out})
    return out


# --- JSON Schema --------------------------------------------------------------------------


def _option_json(opt):
    out = copy.deepcopy(opt.kind.json)
    out["description"] = opt.description
    if opt.has_default:
        out["default"] = opt.default_value()
    return out


def _section_json(section, title=None):
    out = {"type": "object",
           "properties": {o.name: _option_json(o) for o in section},
           "additionalProperties": False}
    if title:
        out["title"] = title
    if section.required:
        out["required"] = list(section.required)
    if section.exactly_one:
        out["oneOf"] = [{"required": [name]} for name in section.exactly_one]
    return out


def json_schema():
    """The job-file schema as JSON Schema (draft 2020-12): the same rules the engine checks,
    looser only where the module's docstring says."""
    job_keys = {}
    for opt in JOB:
        if opt.name in SUBSECTIONS and SUBSECTIONS[opt.name].shorthand:
            short = SUBSECTIONS[opt.name][SUBSECTIONS[opt.name].shorthand]
            job_keys[opt.name] = {"anyOf": [copy.deepcopy(short.kind.json),
                                            {"$ref": f"#/$defs/{opt.name}"}],
                                  "description": opt.description}
        elif opt.name in SUBSECTIONS:
            job_keys[opt.name] = {"$ref": f"#/$defs/{opt.name}", "description": opt.description}
        elif opt.name == "options":
            job_keys[opt.name] = {"type": "object", "description": opt.description}
        else:
            job_keys[opt.name] = _option_json(opt)
    defs = {key: _section_json(section) for key, section in SUBSECTIONS.items()}
    branches = []
    for t in TYPES:
        name = f"options.{t.name}"
        defs[name] = _section_json(t.options, title=f"{t.name}: {t.summary}")
        then = {"properties": {"options": {"$ref": f"#/$defs/{name}"}}}
        if t.options.required:
            then["required"] = ["options"]
        branches.append({"if": {"properties": {"type": {"enum": list(t.names)}},
                                "required": ["type"]},
                         "then": then})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Strongroom job file",
        "description": "One job: <config-dir>/jobs/NAME.yml. Checked by `strongroom config "
                       "check`; this schema is generated from strongroom/jobs/schema.py.",
        "type": "object",
        "properties": job_keys,
        "required": list(JOB.required),
        "additionalProperties": False,
        "allOf": branches,
        "$defs": defs,
    }


def _self_check():
    """Every default and example is a valid value of its own option (import-time)."""
    for section in (JOB, NOTIFY, LOG, PING, *(t.options for t in TYPES)):
        for opt in section:
            if opt.kind is None:
                continue
            for what, value in (("default", opt.default), ("example", opt.example)):
                if value is not NO_DEFAULT and value is not None and \
                        opt.kind.problem(value) is not None:
                    raise ValueError(f"{section.name}.{opt.name}: {what} {value!r} is not "
                                     f"{opt.kind.expected}")
            if opt.required and opt.has_default:
                raise ValueError(f"{section.name}.{opt.name}: required with a default")


_self_check()
