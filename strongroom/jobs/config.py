"""Job files: one schema, checked before any side effect.

An error names the file, the key, the value and what was expected; unknown keys are
refused (a typo must not silently turn a setting off).
"""

import os
import re
import reprlib
import stat
import sys
from pathlib import Path

from ..core.errors import ConfigError

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


# The one rule for a job's name, wherever one is taken (run JOB, --job NAME, the `name`
# key, a restore drill's `jobs`, the files listed in <config-dir>/jobs): a name names a
# file, a lock, a log, a systemd unit and a cron entry, so it can be no path and no option.
JOB_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
JOB_NAME_RULE = ("a name of letters, digits, '.', '_' or '-', 1-64 characters starting with "
                 "a letter or digit (it names files, units and cron entries)")
# A job file is a screenful; a bigger one is a mistake, and parsing it would stall every
# verb that lists jobs (PyYAML reads about 1.5 MB a second).
MAX_JOB_FILE_BYTES = 1024 * 1024


def is_job_name(v):
    return isinstance(v, str) and JOB_NAME_RE.fullmatch(v) is not None


def check_job_name(name):
    """name, or ConfigError: checked before any file is opened under it."""
    if is_job_name(name):
        return name
    hint = ""
    if isinstance(name, str) and ("/" in name or name.endswith((".yml", ".yaml"))):
        hint = ("; give the name of a file in <config-dir>/jobs without '.yml' "
                "(`strongroom config check FILE` checks a file by its path)")
    # a path given as a name is shown whole up to a long limit, so the user sees what ran
    shown = repr(name) if isinstance(name, str) and len(name) <= 400 else _describe(name)
    raise ConfigError(f"job name {shown} is not valid: expected {JOB_NAME_RULE}" + hint)


def _job_name(v):
    return is_job_name(v)


_job_name.expected = JOB_NAME_RULE


def _job_name_list(v):
    return isinstance(v, list) and all(is_job_name(x) for x in v)


_job_name_list.expected = "a list of job names, each " + JOB_NAME_RULE


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
    from .. import schedule

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
        "jobs": (False, _job_name_list),
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


# Containers are shown through reprlib: a few YAML aliases can nest a value of billions of
# items, whose full repr would take minutes to build only to be cut to 80 characters.
_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 12
_REPR.maxstring = _REPR.maxother = 80


def _describe(value):
    text = _REPR.repr(value) if isinstance(value, list | tuple | dict | set) else repr(value)
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


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"))


def _too_big(where, size=None, what="a job file"):
    """size: from fstat; None when only reading showed the file is over the cap (a pipe)."""
    size = f"{size} bytes" if size is not None else f"over {MAX_JOB_FILE_BYTES} bytes"
    return ConfigError(f"{where}: {size}; {what} may be at most "
                       f"{MAX_JOB_FILE_BYTES // 1024 // 1024} MiB ({MAX_JOB_FILE_BYTES} bytes): "
                       "is this the file you meant?")


def read_job_bytes(path, regular_only=True, what="a job file"):
    """The bytes of a job file, refused by size before any is parsed.

    Opened non-blocking and checked with fstat, so a FIFO or a device named x.yml in
    <config-dir>/jobs cannot stall every verb that lists jobs (regular_only=False is for
    `config check` of a file someone named, such as a pipe: that is read as given).
    A missing file raises FileNotFoundError, for the caller to word.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | (os.O_NONBLOCK if regular_only else 0))
    except FileNotFoundError:
        if path.is_symlink():
            raise ConfigError(f"{path} is a symbolic link to {os.readlink(path)}, which does "
                              "not exist") from None
        raise
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        for test, kind in _KINDS:
            if test(st.st_mode) and (regular_only or kind == "a directory"):
                raise ConfigError(f"{path} is {kind}, not {what} (expected a regular "
                                  "file of YAML)")
        if st.st_size > MAX_JOB_FILE_BYTES:
            raise _too_big(path, st.st_size, what)
        chunks, size = [], 0
        while size <= MAX_JOB_FILE_BYTES:  # a file growing while read stops at the cap
            chunk = os.read(fd, MAX_JOB_FILE_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if size > MAX_JOB_FILE_BYTES:
        raise _too_big(path, what=what)
    return b"".join(chunks)


class _DuplicateKey(Exception):
    def __init__(self, key, line, first):
        super().__init__(key)
        self.key, self.line, self.first = key, line, first


_LOADER = []


def _strict_loader():
    """A SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last,
    so a second `remote:` further down would silently replace the first)."""
    if _LOADER:
        return _LOADER[0]
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def _check(self, node, done):
            """No key twice in this mapping, nor in any mapping merged into it (the base
            class flattens a merged mapping into this one without constructing it, so its
            own keys would never be looked at), and one `<<:` per mapping."""
            if id(node) in done:  # an anchor merged in several places: checked once
                return
            done.add(id(node))
            seen = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    # `<<: *base` then overriding a key is what merges are for; the
                    # mappings merged in must hold each key once themselves
                    merged = value_node.value if isinstance(value_node, yaml.SequenceNode) \
                        else [value_node]
                    for m in merged:
                        if isinstance(m, yaml.MappingNode):
                            self._check(m, done)
                    key, line = "<<", key_node.start_mark.line + 1
                else:
                    key = self.construct_object(key_node, deep=True)
                    line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise _DuplicateKey(key, line, seen[key])
                    seen[key] = line
                except TypeError:
                    continue  # an unhashable key: the base class refuses it by name

        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                self._check(node, set())
            return super().construct_mapping(node, deep)

    _LOADER.append(StrictLoader)
    return StrictLoader


def parse_job_bytes(data, where):
    """The YAML document in a job file's bytes: UTF-8, one mapping, no key twice."""
    import yaml  # only verbs that read a job file pay for it

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{where}: not UTF-8 text: byte 0x{data[exc.start]:02x} on line "
                          f"{line} is not valid UTF-8 (expected a UTF-8 YAML file)") from None
    loader = _strict_loader()(text)
    try:
        doc = loader.get_single_data()
    except _DuplicateKey as exc:
        raise ConfigError(f"{where}: key {_describe(exc.key)} is given twice in one mapping, "
                          f"on line {exc.first} and line {exc.line} (expected each key once: "
                          "the later one would silently win)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{where}: not valid YAML: nested too deeply") from None
    finally:
        loader.dispose()
    if doc is None:
        raise ConfigError(f"{where}: the file holds no YAML document (empty, or only "
                          "comments); expected a mapping with at least 'name' and 'type'")
    return doc


def check_file_name(data, file_name, where):
    """The one naming rule, for `run` and `config check` alike: a job in NAME.yml is named
    NAME (the runner finds a job by its file, and names its lock, log and status by `name`).
    A file whose name does not end in .yml (standard input, a temporary file checked
    under a label) has no name to match."""
    base = Path(str(file_name)).name
    if base.endswith(".yml") and data["name"] != base[:-4]:
        raise ConfigError(f"{where}: key 'name' has value {_describe(data['name'])}; "
                          f"expected '{base[:-4]}' (the file's name)")


def load_job(config_dir, name):
    check_job_name(name)
    path = Path(config_dir) / "jobs" / f"{name}.yml"
    try:
        raw = read_job_bytes(path)
    except FileNotFoundError:
        hint = " (a job is named without '.yml')" if name.endswith((".yml", ".yaml")) else ""
        raise ConfigError(f"no job named '{name}': {path} does not exist{hint}") from None
    data = validate_job(parse_job_bytes(raw, path), str(path))
    check_file_name(data, path, path)
    return data


def check_file(file, name_as=None):
    """`strongroom config check FILE|-`: (job, label), the same checks `run` makes."""
    where = name_as or str(file)
    if file == "-":
        raw = sys.stdin.buffer.read(MAX_JOB_FILE_BYTES + 1)
        if len(raw) > MAX_JOB_FILE_BYTES:
            raise _too_big(where)
    else:
        try:
            raw = read_job_bytes(file, regular_only=False)
        except FileNotFoundError:
            raise ConfigError(f"cannot read {file}: it does not exist") from None
    data = validate_job(parse_job_bytes(raw, where), where)
    check_file_name(data, name_as or file, where)
    return data, where


def load_job_of_type(config_dir, name, *types):
    """load_job, refusing a job of another type by name (types: the ones that fit)."""
    job = load_job(config_dir, name)
    if job["type"] not in types:
        raise ConfigError(f"job {name} is a {job['type']} job, not a {' or '.join(types)} job")
    return job


def job_names(config_dir):
    """Names of every job file in <config-dir>/jobs, sorted."""
    jobs = Path(config_dir) / "jobs"
    if not jobs.exists() and not jobs.is_symlink():
        return []  # a host with no jobs yet
    if not jobs.is_dir():
        raise ConfigError(f"{jobs} is not a directory (expected the directory of job files)")
    return sorted(_printable(p.stem) for p in jobs.glob("*.yml"))


def _printable(stem):
    """A file's stem as text every output can carry. A stem that needs escaping breaks the
    name rule anyway, so its job is refused by name, in a form a terminal, a JSON reader
    and a Prometheus textfile all take, instead of crashing the listing."""
    text = os.fsencode(stem).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)
