"""Job files: one schema, checked before any side effect.

An error names the file, the key, the value and what was expected; unknown keys are
refused (a typo must not silently turn a setting off).
"""

import re
from pathlib import Path

from .errors import ConfigError

JOB_TYPES = ("bundle_sync", "restore_drill", "status_check", "git_sync", "snapshot",
             "checkpoint", "daily", "rollup", "bisync", "restic",
             "db_backup")


def _str(v):
    return isinstance(v, str) and v.strip() != ""


def _int_min(lo):
    def check(v):
        return isinstance(v, int) and not isinstance(v, bool) and v >= lo

    check.expected = f"an integer >= {lo}"
    return check


def _num_min(lo):
    def check(v):
        return isinstance(v, int | float) and not isinstance(v, bool) and v >= lo

    check.expected = f"a number >= {lo}"
    return check


def _job_name(v):
    return isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", v) is not None


_job_name.expected = ("a name of letters, digits, '.', '_' or '-' (it names files, units and "
                      "cron entries)")


def _str_list(v):
    return isinstance(v, list) and all(isinstance(x, str) and x.strip() for x in v)


def _abs_path(v):
    return _str(v) and Path(v).expanduser().is_absolute()


def _bool(v):
    return isinstance(v, bool)


_bool.expected = "true or false"


def _abs_list(v):
    return _str_list(v) and all(_abs_path(x) for x in v)


_abs_list.expected = "a list of absolute paths"


def _schedule(v):
    from . import schedule

    if not _str(v):
        return False
    try:
        schedule.parse(v)
    except ConfigError as exc:
        _schedule.expected = f"a schedule spec ({exc})"
        return False
    return True


def _one_of(*choices):
    def check(v):
        return v in choices

    check.expected = "one of: " + ", ".join(choices)
    return check


def _list_of(*choices):
    def check(v):
        return isinstance(v, list) and all(x in choices for x in v)

    check.expected = "a list of: " + ", ".join(choices)
    return check


def _policies(v):
    return isinstance(v, dict) and all(
        isinstance(k, str) and k.strip() and p in ("append", "block", "primary-wins")
        for k, p in v.items())


_policies.expected = "a mapping of path pattern to append, block or primary-wins"


def _size(v):
    if isinstance(v, int) and not isinstance(v, bool):
        return v >= 0
    return isinstance(v, str) and re.fullmatch(r"\d+(\.\d+)?\s*[kKmMgGtT]?i?[bB]?", v.strip()) \
        is not None


_size.expected = "a size such as 50M, 2G or a byte count"
_str.expected = "a non-empty string"
_str_list.expected = "a list of non-empty strings"
_abs_path.expected = "an absolute path"
_schedule.expected = "a schedule spec"

SEVERITIES = ("info", "success", "warning", "error")
EVENTS = ("job_failed", "job_recovered", "job_succeeded", "rollback_done", "backup_stale",
          "drill_passed", "drill_failed")

# How a job's copies reach the remote (each through the upload path, proven by hash).
OFFSITE = {
    "rclone_config": (False, _abs_path),
    "bwlimit": (False, _str),
    "retries": (False, _int_min(1)),  # of each off-site copy (rclone --retries)
    "low_level_retries": (False, _int_min(1)),
}

# key: (required, check)
JOB_SCHEMA = {
    "name": (True, _job_name),
    "type": (True, None),
    "schedule": (False, _schedule),
    "options": (False, None),  # checked below, per type
    "description": (False, _str),
    "notify": (False, None),  # checked below: {min_severity, events}
    "log": (False, None),  # checked below: {max_bytes, keep}
}
NOTIFY_SCHEMA = {"min_severity": (False, _one_of(*SEVERITIES)),
                 "events": (False, _list_of(*EVENTS))}
LOG_SCHEMA = {"max_bytes": (False, _int_min(1024)), "keep": (False, _int_min(1))}
OPTION_SCHEMAS = {
    "bundle_sync": {
        "root": (True, _abs_path),
        "store": (True, _abs_path),
        "remote": (False, _str),
        "rclone_config": (False, _abs_path),
        "full_every": (False, _int_min(1)),
        "full_after_days": (False, _num_min(1)),
        "keep_retired": (False, _int_min(0)),
        "critical_patterns": (False, _str_list),
        "jobs": (False, _int_min(0)),
    },
    "restore_drill": {
        # default: every bundle_sync job on the host
        "jobs": (False, _str_list),
        "source": (False, _one_of("local", "remote", "both")),
        "scratch": (False, _abs_path),  # default <state-dir>/drill
        "lock_wait": (False, _num_min(0)),
    },
    "git_sync": {
        "repo": (True, _abs_path),
        "direction": (True, _one_of("push", "pull")),
        "role": (True, _one_of("primary", "secondary")),  # from the inventory
        "remote": (False, _str),
        "branch": (False, _str),
        "include": (False, _str_list),
        "exclude": (False, _str_list),
        "policies": (False, _policies),
        "timeout": (False, _num_min(1)),  # seconds a fetch or push may go without progress
    },
    "snapshot": {
        "source": (True, _abs_path),
        "dest": (True, _abs_path),
        "critical": (False, _str_list),  # gitignore-style patterns
        "db": (False, _str_list),  # SQLite files, absolute or relative to source
        "exclude": (False, _str_list),
        "immutable": (False, _one_of("require", "warn", "off")),
        "format": (False, _one_of("zst", "gz")),
        "large_threshold": (False, _size),
        # after each snapshot; both must be set for the job to prune
        "keep_last": (False, _int_min(1)),
        "keep_days": (False, _num_min(0)),
        "lock_wait": (False, _num_min(0)),
        # the role installs the pre-push hook in the source when this is set
        "pre_push_max_size": (False, _size),
        # each snapshot is copied to REMOTE:PATH/<id> (immutable) and checked by hash
        "remote": (False, _str),
        **OFFSITE,
    },
    "checkpoint": {
        "source": (True, _abs_path),  # a git work tree
        "dest": (True, _abs_path),
        "keep_days": (False, _num_min(0)),
        "max_file_size": (False, _size),
        "lock_wait": (False, _num_min(0)),
    },
    "daily": {
        "sources": (True, _abs_list),
        "dest": (True, _abs_path),
        "db": (False, _abs_list),
        "exclude": (False, _str_list),
        "remote": (False, _str),  # days go to REMOTE:PATH/YYYY-MM-DD, rollups to .../rollups
        **OFFSITE,
        "delete_days": (False, _one_of("after_rollup", "after_upload", "never")),
        "keep_rollups": (False, _int_min(1)),
        "lock_wait": (False, _num_min(0)),
    },
    "rollup": {
        "dest": (True, _abs_path),  # the daily job's dest
        "days": (False, _int_min(1)),
        "remote": (False, _str),
        **OFFSITE,
        "delete_days": (False, _one_of("after_rollup", "after_upload", "never")),
        "keep_rollups": (False, _int_min(1)),
        "lock_wait": (False, _num_min(0)),
    },
    "bisync": {
        "local": (True, _abs_path),
        "remote": (True, _str),
        "max_delete": (False, _int_min(1)),  # percent; more deletions stop the run
        "check_access": (False, _bool),
        "rclone_config": (False, _abs_path),
        "lock_wait": (False, _num_min(0)),
    },
    "restic": {
        "repository": (True, _str),  # a local path or rclone:REMOTE:PATH
        "password_file": (True, _abs_path),  # 0600; the password never goes elsewhere
        "paths": (True, _abs_list),
        "exclude": (False, _str_list),
        "tags": (False, _str_list),
        "keep_weekly": (False, _int_min(1)),
        "check_subsets": (False, _int_min(1)),  # all data re-read once every N runs
        "rclone_config": (False, _abs_path),
    },
    "db_backup": {
        "db": (True, _abs_path),
        "remote": (False, _str),  # default: from R2_* or AWS_* environment variables
        "keep": (False, _int_min(1)),
        "host": (False, _str),
        "ops_threshold": (False, _int_min(1)),
        "hours_threshold": (False, _num_min(0)),
        "rclone_config": (False, _abs_path),
        "retries": (False, _int_min(1)),
        "low_level_retries": (False, _int_min(1)),
    },
    "status_check": {
        "stale_factor": (False, _num_min(1)),  # stale after F x a job's period (default 2)
        "prometheus": (False, _abs_path),  # also write a node_exporter textfile here
        "remind_hours": (False, _num_min(0)),  # repeat a stale alert this often (0: once)
    },
}


def _describe(value):
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_mapping(where, data, schema, prefix=""):
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'the file'} must be a mapping, "
                          f"got {_describe(data)}")
    for key in data:
        if key not in schema:
            raise ConfigError(f"{where}: unknown key '{prefix}{key}' "
                              f"(expected one of: {', '.join(sorted(schema))})")
    for key, (required, check) in schema.items():
        if key not in data:
            if required:
                raise ConfigError(f"{where}: missing required key '{prefix}{key}'")
            continue
        if check is not None and not check(data[key]):
            raise ConfigError(f"{where}: key '{prefix}{key}' has value {_describe(data[key])}; "
                              f"expected {check.expected}")


def validate_job(data, where):
    _check_mapping(where, data, JOB_SCHEMA)
    if data["type"] not in JOB_TYPES:
        raise ConfigError(f"{where}: key 'type' has value {_describe(data['type'])}; "
                          f"expected one of: {', '.join(JOB_TYPES)}")
    schema = OPTION_SCHEMAS[data["type"]]
    if "options" not in data and any(required for required, _ in schema.values()):
        raise ConfigError(f"{where}: missing required key 'options'")
    _check_mapping(where, data.get("options", {}), schema, "options.")
    if "notify" in data:
        _check_mapping(where, data["notify"], NOTIFY_SCHEMA, "notify.")
    if "log" in data:
        _check_mapping(where, data["log"], LOG_SCHEMA, "log.")
    return data


def load_job(config_dir, name):
    import yaml  # only verbs that read a job file pay for it

    path = Path(config_dir) / "jobs" / f"{name}.yml"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"no job named '{name}': {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    validate_job(data, str(path))
    if data["name"] != name:
        raise ConfigError(f"{path}: key 'name' has value {_describe(data['name'])}; "
                          f"expected '{name}' (the file's name)")
    return data


def load_job_of_type(config_dir, name, *types):
    """load_job, refusing a job of another type by name (types: the ones that fit)."""
    job = load_job(config_dir, name)
    if job["type"] not in types:
        raise ConfigError(f"job {name} is a {job['type']} job, not a {' or '.join(types)} job")
    return job


def job_names(config_dir):
    """Names of every job file in <config-dir>/jobs, sorted."""
    jobs = Path(config_dir) / "jobs"
    return sorted(p.stem for p in jobs.glob("*.yml")) if jobs.is_dir() else []
