"""Job files: one schema (strongroom/jobs/schema.py), checked before any side effect.

An error names the file, the key, the value and what was expected; unknown keys are
refused (a typo must not silently turn a setting off), and every error of a file is
reported at once, one line each. A job type's old name still works: the loaded job carries
the type's one-word name, and the old name is said as a deprecation warning (`config
check`, and the run's log and stderr).
"""

import os
import reprlib
import stat
import sys
from pathlib import Path

from ..core.errors import ConfigError
from . import schema

JOB_TYPES = schema.TYPE_NAMES
OLD_TYPE_NAMES = schema.OLD_NAMES
SEVERITIES = schema.SEVERITIES
EVENTS = schema.EVENTS
JOB_NAME_RE = schema.JOB_NAME_RE
JOB_NAME_RULE = schema.JOB_NAME_RULE
is_job_name = schema.is_job_name
# A job file is a screenful; a bigger one is a mistake, and parsing it would stall every
# verb that lists jobs (PyYAML reads about 1.5 MB a second).
MAX_JOB_FILE_BYTES = 1024 * 1024


class JobFileError(ConfigError):
    """Everything wrong with one job file: `errors`, one line each (str: the lines)."""

    def __init__(self, errors):
        super().__init__("\n".join(errors))
        self.errors = list(errors)


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


# Containers are shown through reprlib: a few YAML aliases can nest a value of billions of
# items, whose full repr would take minutes to build only to be cut to 80 characters.
_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 12
_REPR.maxstring = _REPR.maxother = 80


def _describe(value):
    text = _REPR.repr(value) if isinstance(value, list | tuple | dict | set) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_section(where, data, section, prefix, errors):
    """Append to errors what is wrong with data against section; False when data is no
    mapping (nothing in it could be checked)."""
    if not isinstance(data, dict):
        got = f"a value of type {type(data).__name__}" if section.secret else _describe(data)
        errors.append(f"{where}: {prefix.rstrip('.') or 'the file'} must be a mapping, "
                      f"got {got}")
        return False
    expected = ", ".join(sorted(section.names))
    for key in data:
        if key not in section:
            errors.append(f"{where}: unknown key '{prefix}{key}' (expected one of: {expected})")
    for opt in section:
        if opt.name not in data:
            if opt.required:
                errors.append(f"{where}: missing required key '{prefix}{opt.name}'")
            continue
        if opt.kind is None or (opt.name == "type" and not prefix):
            continue  # a mapping checked by its own section, or the job's type (below)
        problem = opt.kind.problem(data[opt.name])
        if problem is not None:
            if opt.kind.secret:  # named by its key alone: the value is a secret
                errors.append(f"{where}: key '{prefix}{opt.name}' is not valid; expected "
                              f"{problem}")
                continue
            errors.append(f"{where}: key '{prefix}{opt.name}' has value "
                          f"{_describe(data[opt.name])}; expected {problem}")
    given = [name for name in section.exactly_one if name in data]
    if section.exactly_one and len(given) != 1:
        errors.append(f"{where}: '{prefix.rstrip('.')}' needs exactly one of: "
                      + ", ".join(f"'{prefix}{n}'" for n in section.exactly_one)
                      + (f" (got {len(given)})" if given else ""))
    return True


def job_errors(data, where, file_name=None):
    """Every error of a job file's document, in the order of the file's keys and the
    schema's, one line each ([] for a valid job). file_name: the file the job is read from
    (a job in NAME.yml is named NAME), or None."""
    errors = []
    if not _check_section(where, data, schema.JOB, "", errors):
        return errors
    jt = None
    if "type" in data:
        jt = schema.BY_NAME.get(schema.canonical(data["type"]))
        if jt is None:
            errors.append(f"{where}: key 'type' has value {_describe(data['type'])}; "
                          f"expected one of: {schema.TYPE_CHOICES_TEXT}")
    if jt is not None:
        if "options" not in data:
            if jt.options.required:
                errors.append(f"{where}: missing required key 'options'")
        else:
            _check_section(where, data["options"], jt.options, "options.", errors)
    for key, section in schema.SUBSECTIONS.items():
        if key in data:
            value = data[key]
            if section.shorthand and isinstance(value, str):  # `ping: URL`
                value = {section.shorthand: value}
            _check_section(where, value, section, f"{key}.", errors)
    if file_name is not None and is_job_name(data.get("name")):
        _check_file_name(data, file_name, where, errors)
    return errors


def validate_job(data, where, file_name=None):
    """data, or JobFileError naming every problem at once (see job_errors)."""
    errors = job_errors(data, where, file_name)
    if errors:
        raise JobFileError(errors)
    return data


def deprecations(data):
    """The warnings a valid job's document earns (an old type name), one line each."""
    old = data.get("type")
    new = schema.OLD_NAMES.get(old) if isinstance(old, str) else None
    if new is None:
        return []
    return [f'job {data["name"]}: type "{old}" is now "{new}"; the old name will be removed '
            "in a later release"]


def normalised(data):
    """The job as the engine sees it: its type by its one-word name."""
    name = schema.canonical(data["type"])
    return data if name == data["type"] else {**data, "type": name}


def effective(job):
    """The job with every default filled in (schema.effective)."""
    return schema.effective(job)


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
    errors = []
    _check_file_name(data, file_name, where, errors)
    if errors:
        raise JobFileError(errors)


def _check_file_name(data, file_name, where, errors):
    base = Path(str(file_name)).name
    if base.endswith(".yml") and data["name"] != base[:-4]:
        errors.append(f"{where}: key 'name' has value {_describe(data['name'])}; "
                      f"expected '{base[:-4]}' (the file's name)")


def load_job(config_dir, name, notes=None):
    """The valid job <config-dir>/jobs/NAME.yml, its type by its one-word name; each
    deprecation warning is appended to notes (a list) when one is given."""
    check_job_name(name)
    path = Path(config_dir) / "jobs" / f"{name}.yml"
    try:
        raw = read_job_bytes(path)
    except FileNotFoundError:
        hint = " (a job is named without '.yml')" if name.endswith((".yml", ".yaml")) else ""
        raise ConfigError(f"no job named '{name}': {path} does not exist{hint}") from None
    data = validate_job(parse_job_bytes(raw, path), str(path), file_name=path)
    if notes is not None:
        notes.extend(deprecations(data))
    return normalised(data)


def check_file(file, name_as=None, notes=None):
    """`strongroom config check FILE|-`: (job, label), the same checks `run` makes. The job
    is returned as the file says it (its type as written); each deprecation warning is
    appended to notes (a list) when one is given."""
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
    data = validate_job(parse_job_bytes(raw, where), where, file_name=name_as or file)
    if notes is not None:
        notes.extend(deprecations(data))
    return data, where


def load_job_of_type(config_dir, name, *types):
    """load_job, refusing a job of another type by name (types: the ones that fit, by name
    or old name)."""
    job = load_job(config_dir, name)
    wanted = tuple(dict.fromkeys(schema.canonical(t) or t for t in types))
    if job["type"] not in wanted:
        raise ConfigError(f"job {name} is a {job['type']} job, not a {' or '.join(wanted)} "
                          "job")
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
