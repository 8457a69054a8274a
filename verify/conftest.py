"""Host verification: what every check in test_host.py needs to know about a host.

A host's paths (engine virtualenv, config, state and log directories), scheduler and
secret files come from its inventory variables, falling back to the role defaults
(roles/strongroom/defaults/main.yml, roles/strongroom_jobs/defaults/main.yml). Templates
in either are rendered with Jinja2 the way the role sees them: against the host's
variables, the defaults, and the facts Ansible gathers for site.yml (`setup`, subset
min). Only the variables a check asks for are rendered, so a vault variable behind an
rclone setting is never needed.

The engine is only ever used through its command line: the host's own
(`<strongroom_venv>/bin/strongroom`), and for `schedule explain` the controller's (this
checkout's `.venv`, which the role's own checks use) when the host's cannot answer.
"""

import contextlib
import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jinja2
import jinja2.meta
import jinja2.nativetypes
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ROLE_DEFAULTS = [ROOT / "roles/strongroom/defaults/main.yml",
                 ROOT / "roles/strongroom_jobs/defaults/main.yml"]
CONTROLLER_ENGINE = Path(sys.executable).parent / "strongroom"
BACKENDS = ("cron", "systemd", "launchd", "none")
MAX_MESSAGE = 300


class Unresolved(Exception):
    """A variable the checks need could not be rendered."""


class CheckFailed(Exception):
    """A host could not be checked at all (set-up); each problem is one line naming it."""

    def __init__(self, host, check, problems):
        self.host, self.check, self.problems = host, check, list(problems)
        super().__init__("\n".join(f"host {host}: {p}" for p in self.problems))


def one_line(text, limit=MAX_MESSAGE):
    """A command's message as one line: `strongroom: error:` dropped, whitespace folded,
    and of a Python traceback only its last line (the exception)."""
    text = str(text)
    if "Traceback (most recent call last):" in text:
        text = [ln for ln in text.splitlines() if ln.strip()][-1]
    text = " ".join(text.replace("strongroom: error: ", "").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- rendering variables as the role would ----------------------------------------------


def _bool(value):
    if isinstance(value, str):
        return value.strip().lower() in ("yes", "on", "1", "true", "y", "t")
    return bool(value)


def _combine(*dicts, recursive=False):
    out = {}
    for d in dicts:
        for k, v in d.items():
            if recursive and isinstance(v, dict) and isinstance(out.get(k), dict):
                out[k] = _combine(out[k], v, recursive=True)
            else:
                out[k] = v
    return out


def _environment():
    env = jinja2.nativetypes.NativeEnvironment(undefined=jinja2.StrictUndefined)
    # the Ansible filters and tests the roles' defaults and inventories commonly use
    env.filters.update({
        "basename": posixpath.basename,
        "bool": _bool,
        "combine": _combine,
        "dict2items": lambda d: [{"key": k, "value": v} for k, v in d.items()],
        "dirname": posixpath.dirname,
        "items2dict": lambda items: {i["key"]: i["value"] for i in items},
        "quote": lambda s: shlex.quote(str(s)),
        "regex_escape": lambda s: re.escape(str(s)),
        "regex_replace": lambda s, pattern, repl="": re.sub(pattern, repl, str(s)),
        "split": lambda s, sep=None: str(s).split(sep),
        "to_json": json.dumps,
    })
    env.tests.update({
        "match": lambda s, pattern: re.match(pattern, str(s)) is not None,
        "search": lambda s, pattern: re.search(pattern, str(s)) is not None,
    })
    return env


class Variables:
    """A host's variables: role defaults under the inventory's, rendered on demand."""

    def __init__(self, inventory_vars, facts, defaults=None):
        raw = {}
        for path in ROLE_DEFAULTS if defaults is None else defaults:
            raw.update(yaml.safe_load(path.read_text()) or {})
        raw.update(inventory_vars)
        raw["ansible_facts"] = facts
        raw.update({f"ansible_{k}": v for k, v in facts.items()})
        raw.setdefault("playbook_dir", str(ROOT / "playbooks"))
        raw.setdefault("ansible_playbook_python", sys.executable)
        self.raw = raw
        self.env = _environment()
        self._cache = {}

    def __contains__(self, name):
        return name in self.raw

    def get(self, name, deep=True, _stack=()):
        """The variable rendered; `deep=False` leaves strings inside lists and dicts as
        they are (enough for names and lengths, and no vault variable is touched)."""
        key = (name, deep)
        if key in self._cache:
            return self._cache[key]
        if name in _stack:
            raise Unresolved(f"{name} refers to itself ({' -> '.join([*_stack, name])})")
        if name not in self.raw:
            raise Unresolved(f"{name} is not set")
        value = self.render(self.raw[name], deep, (*_stack, name))
        self._cache[key] = value
        return value

    def render(self, value, deep=True, _stack=()):
        if isinstance(value, str):
            if "{{" not in value and "{%" not in value:
                return value
            try:
                ast = self.env.parse(value)
                names = jinja2.meta.find_undeclared_variables(ast)
                context = {n: self.get(n, deep, _stack) for n in names if n in self.raw}
                return self.env.from_string(value).render(context)
            except jinja2.TemplateError as exc:
                where = f" (in {_stack[-1]})" if _stack else ""
                raise Unresolved(f"{value!r}{where}: {exc}") from exc
        if deep and isinstance(value, dict):
            return {k: self.render(v, deep, _stack) for k, v in value.items()}
        if deep and isinstance(value, list):
            return [self.render(v, deep, _stack) for v in value]
        return value


def _json(text):
    try:
        return json.loads(text)
    except ValueError:
        return None


# --- a host as the checks see it ----------------------------------------------------------


class Target:
    """One inventory host: its name, paths, scheduler backend, and the engine on it."""

    def __init__(self, host):
        self.host = host
        self.name = getattr(host.backend, "host", None) or host.backend.get_pytest_id()
        self._job_files = None
        self._jobs = {}
        self._status = None
        self._explained = {}
        try:
            reach = host.run("true")
        except Exception as exc:  # testinfra's ssh backend raises when ssh itself fails
            found = exc.args[0] if exc.args else exc
            self.fail_setup(f"cannot connect to it: {one_line(getattr(found, 'stderr', found))}")
        if reach.rc != 0:
            self.fail_setup(f"cannot run commands on it (exit {reach.rc}): "
                            f"{one_line(reach.stderr) or 'no message'}")
        result = _FACTS.get("hosts", {}).get(self.name)
        if not result or "ansible_facts" not in result:
            try:
                result = host.ansible("setup", "gather_subset=min", check=False)
            except Exception as exc:  # testinfra's AnsibleException, or no ansible at all
                self.fail_setup(f"cannot gather its facts with Ansible's setup: "
                                f"{one_line(exc)}")
        facts = {k.removeprefix("ansible_"): v
                 for k, v in (result.get("ansible_facts") or {}).items()}
        if "user_uid" not in facts:
            self.fail_setup(f"Ansible's setup returned no facts: {one_line(result)}")
        self.facts = facts
        self.vars = Variables(host.ansible.get_variables(), facts)
        try:
            self.venv = self.path("strongroom_venv")
            self.config_dir = self.path("strongroom_config_dir")
            self.state_dir = self.path("strongroom_state_dir")
            self.log_dir = self.path("strongroom_log_dir")
            self.backend = self._backend()
        except Unresolved as exc:
            self.fail_setup(f"cannot work out its Strongroom settings: {exc}")
        self.engine = f"{self.venv}/bin/strongroom"

    def fail_setup(self, message):
        raise CheckFailed(self.name, "setup", [message])

    def path(self, name):
        value = self.vars.get(name)
        if not isinstance(value, str) or not value.startswith("/"):
            raise Unresolved(f"{name} is {value!r}, not an absolute path")
        return value.rstrip("/") or "/"

    def _backend(self):
        chosen = self.vars.get("strongroom_scheduler")
        if chosen == "auto":  # as roles/strongroom_jobs/tasks/validate.yml chooses
            if self.facts.get("system") == "Darwin":
                return "launchd"
            return "systemd" if self.facts.get("service_mgr") == "systemd" else "cron"
        if chosen not in BACKENDS:
            raise Unresolved(f"strongroom_scheduler is {chosen!r}; expected auto, "
                             f"{', '.join(BACKENDS)}")
        return chosen

    # --- running things ---------------------------------------------------------------

    def run(self, argv):
        return self.host.run(" ".join(shlex.quote(str(a)) for a in argv))

    def strongroom(self, *args):
        """The host's engine, with the directories the role's schedulers pass."""
        return self.run([self.engine, "--config-dir", self.config_dir, "--state-dir",
                         self.state_dir, "--log-dir", self.log_dir, *args])

    def explain(self, spec):
        """`strongroom schedule explain SPEC --json`: every backend's rendering of a job
        file's schedule, from the host's engine, else from the controller's (the one
        validate.yml renders schedules with); a string says why neither could."""
        if spec not in self._explained:
            argv = ["schedule", "explain", str(spec), "--json"]
            res = self.run([self.engine, *argv])
            found = _json(res.stdout) if res.rc == 0 else None
            why = one_line(res.stderr or res.stdout) or f"exit {res.rc}"
            if found is None and CONTROLLER_ENGINE.exists():
                proc = subprocess.run([str(CONTROLLER_ENGINE), *argv], capture_output=True,
                                      text=True, check=False)
                found = _json(proc.stdout) if proc.returncode == 0 else None
            self._explained[spec] = found if isinstance(found, dict) else why
        return self._explained[spec]

    # --- what is on the host --------------------------------------------------------------

    def job_files(self):
        """{job name: path} of every *.yml in <config>/jobs."""
        if self._job_files is None:
            jobs = self.host.file(f"{self.config_dir}/jobs")
            names = sorted(jobs.listdir()) if jobs.is_directory else []
            self._job_files = {n[:-4]: f"{self.config_dir}/jobs/{n}" for n in names
                               if n.endswith(".yml")}
        return self._job_files

    def job(self, name):
        """The job file parsed, or None when it is not a YAML mapping."""
        if name not in self._jobs:
            try:
                data = yaml.safe_load(self.host.file(self.job_files()[name]).content_string)
            except (yaml.YAMLError, UnicodeDecodeError):
                data = None
            self._jobs[name] = data if isinstance(data, dict) else None
        return self._jobs[name]

    def status(self):
        """`strongroom status --json` on the host: {"jobs": [...], "stale": [...]}, or the
        reason it could not be read."""
        if self._status is None:
            res = self.strongroom("status", "--json")
            try:
                self._status = json.loads(res.stdout)
            except ValueError:
                self._status = (f"`strongroom status --json` failed (exit {res.rc}): "
                                f"{one_line(res.stderr or res.stdout) or 'no output'}")
        return self._status


_TARGETS = {}
_FACTS = {}  # "hosts": {inventory host: Ansible's setup result}, gathered all at once
_CONTROL = {}  # the directory of this run's ssh control sockets, once made


def _multiplex(host):
    """One ssh connection per host for all its checks. testinfra's ssh backend asks for a
    ControlMaster but has no ControlPath unless ansible.cfg names one (the project's does
    not), so without this every command is a new ssh login."""
    backend = host.backend
    if not hasattr(backend, "ansible_runner"):
        return
    found = backend.ansible_runner.get_host(backend.host, ssh_config=backend.ssh_config,
                                            ssh_identity_file=backend.ssh_identity_file)
    ssh = getattr(found, "backend", None)
    if ssh is None or ssh.NAME != "ssh" or ssh.controlpath or not ssh.controlpersist:
        return
    if "dir" not in _CONTROL:
        _CONTROL["dir"] = tempfile.mkdtemp(prefix="strongroom-verify-")
    ssh.controlpath = f"{_CONTROL['dir']}/%%C"  # testinfra %-formats the command line


def _gather_facts(config):
    """The facts site.yml gathers (`setup`, subset min), for every host in one Ansible
    run, so a fleet's hosts answer in parallel. A host missing here is asked on its own,
    which then says why."""
    if _FACTS.get("gathered") or config.option.connection != "ansible":
        return
    _FACTS["gathered"] = True
    _FACTS["hosts"] = {}
    ansible = Path(sys.executable).parent / "ansible"
    inventory = config.option.ansible_inventory
    pattern = config.option.hosts or "all"
    with tempfile.TemporaryDirectory(prefix="strongroom-verify-facts-") as tree:
        argv = [str(ansible) if ansible.exists() else "ansible", "--tree", tree,
                *(["-i", inventory] if inventory else []), "-m", "setup",
                "-a", "gather_subset=min", pattern]
        try:
            subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600,
                           env={**os.environ, "ANSIBLE_VERBOSITY": "0"})
        except (OSError, subprocess.TimeoutExpired):
            return
        for path in Path(tree).iterdir():
            with contextlib.suppress(OSError, ValueError):
                _FACTS["hosts"][path.name] = json.loads(path.read_text())


def pytest_unconfigure(config):
    control = _CONTROL.pop("dir", None)
    if control:
        for sock in Path(control).iterdir():
            subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "verify"],
                           capture_output=True, check=False, timeout=10)
        shutil.rmtree(control, ignore_errors=True)


@pytest.fixture(scope="module")
def target(host, request):
    """The host behind testinfra's `host` fixture, worked out once per host."""
    key = host.backend.get_pytest_id()
    if key not in _TARGETS:
        _gather_facts(request.config)
        _multiplex(host)
        try:
            _TARGETS[key] = Target(host)
        except CheckFailed as exc:
            _TARGETS[key] = exc
    found = _TARGETS[key]
    if isinstance(found, CheckFailed):
        pytest.fail(str(found), pytrace=False)
    return found


# --- one line per failing host and check --------------------------------------------------

_RESULTS = []  # (outcome, host, check, lines)


def pytest_configure(config):
    config.addinivalue_line("markers", "check(name): the check's name in verify's summary")


def _host_of(item):
    host = getattr(item, "callspec", None) and item.callspec.params.get("_testinfra_host")
    if host is None:
        return "?"
    return getattr(host.backend, "host", None) or host.backend.get_pytest_id()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    marker = item.get_closest_marker("check")
    # a failed set-up is the host's (unreachable, settings unknown), not one check's
    check = "setup" if report.when == "setup" else (marker.args[0] if marker else item.name)
    if report.failed:
        exc = call.excinfo.value if call.excinfo else None
        if isinstance(exc, CheckFailed):
            lines = exc.problems
        elif isinstance(exc, pytest.fail.Exception):
            prefix = f"host {_host_of(item)}: "
            lines = [ln.removeprefix(prefix) for ln in str(exc.msg).splitlines() if ln]
        elif exc is not None:
            lines = [one_line(f"{type(exc).__name__}: {exc}")]
        else:
            lines = [one_line(report.longreprtext)]
        _RESULTS.append(("FAILED", _host_of(item), check, lines))
    elif report.skipped and call.excinfo:
        _RESULTS.append(("SKIPPED", _host_of(item), check, [one_line(call.excinfo.value)]))
    elif report.passed and report.when == "call":
        _RESULTS.append(("PASSED", _host_of(item), check, []))
    return report


def pytest_terminal_summary(terminalreporter):
    if not _RESULTS:
        return
    hosts = sorted({h for _, h, _, _ in _RESULTS})
    failed = sorted({(h, c) for o, h, c, _ in _RESULTS if o == "FAILED"})
    tr = terminalreporter
    tr.write_sep("=", "strongroom verify")
    seen = set()
    for outcome, host, check, lines in _RESULTS:
        if outcome == "PASSED":
            continue
        # a host that could not be reached fails every check with the same words: once
        key = (outcome, host, check, tuple(lines))
        if key in seen:
            continue
        seen.add(key)
        tr.write_line(f"{outcome} host {host} [{check}]: {'; '.join(lines)}")
    bad = sorted({h for h, _ in failed})
    if bad:
        tr.write_line(f"verify: {len(failed)} check(s) failed on {len(bad)} of "
                      f"{len(hosts)} host(s): {', '.join(bad)}")
    else:
        tr.write_line(f"verify: every check passed on {len(hosts)} host(s): "
                      f"{', '.join(hosts)}")
