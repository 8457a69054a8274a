"""The `config` command group run in-process (through `strongroom` once the CLI has it,
else through a parser of its own), and the job files of the inventories and the tests."""

import argparse
import ast
import re
from pathlib import Path

import yaml

from strongroom.cli import config as cli_config
from strongroom.cli import output
from strongroom.core.errors import ERROR, StrongroomError
from tests.helpers import ROOT


def _app_has_config_verbs():
    from strongroom.cli import app

    parser = app.build_parser()
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    config = groups[0].choices.get("config") if groups else None
    if config is None:
        return False
    verbs = [a for a in config._actions if isinstance(a, argparse._SubParsersAction)]
    return bool(verbs) and {"show", "generate", "schema"} <= set(verbs[0].choices)


def run_config(capsys, *argv, config_dir, state_dir=None):
    """(exit code, stdout, stderr) of `strongroom --config-dir D config ARGV...`."""
    argv = [str(a) for a in argv]
    state_dir = state_dir or Path(config_dir).parent / "state"
    if _app_has_config_verbs():
        from strongroom.cli import app

        code = app.main(["--config-dir", str(config_dir), "--state-dir", str(state_dir),
                         "config", *argv])
    else:
        parser = output.UsageParser(prog="strongroom")
        sub = parser.add_subparsers(dest="command", required=True,
                                    parser_class=output.UsageParser)
        cli_config.add_parser(sub)
        args = parser.parse_args(["config", *argv])
        args.config_dir, args.state_dir = str(config_dir), str(state_dir)
        args.log_dir = str(Path(state_dir) / "log")
        try:
            code = args.func(args)
        except StrongroomError as exc:  # as strongroom's main reports it
            output.error(str(exc))
            code = output.emit(args, exc.exit_code or ERROR, str(exc))
    out = capsys.readouterr()
    return code, out.out, out.err


# --- the job files of the inventories, rendered as the role renders them ---------------------


def _render(value, context, env):
    if isinstance(value, str):
        for _ in range(5):
            if "{{" not in value and "{%" not in value:
                break
            value = env.from_string(value).render(**context)
        return value
    if isinstance(value, list):
        return [_render(v, context, env) for v in value]
    if isinstance(value, dict):
        return {k: _render(v, context, env) for k, v in value.items()}
    return value


def inventory_jobs(name):
    """[(host, job)] of inventory/NAME: every job of every host, its Jinja rendered with
    the role's path variables, the role's own keys taken out and the type's default
    schedule filled in, as the role writes the job file."""
    import jinja2

    from strongroom.jobs import registry

    inv = ROOT / "inventory" / name
    hosts = yaml.safe_load((inv / "hosts.yml").read_text())

    def walk(group, groups=("all",)):
        for host in (group.get("hosts") or {}):
            yield host, groups
        for child, body in (group.get("children") or {}).items():
            yield from walk(body or {}, (*groups, child))

    out = []
    for host, groups in walk(hosts["all"]):
        context = {"inventory_hostname": host, "strongroom_install_mode": "user",
                   "strongroom_home": "/home/alice",
                   "strongroom_state_dir": "/home/alice/.local/state/strongroom",
                   "strongroom_config_dir": "/home/alice/.config/strongroom"}
        files = [p for g in groups for p in sorted((inv / "group_vars").glob(f"{g}*"))]
        files += [inv / "host_vars" / f"{host}.yml"]
        for f in files:
            for p in sorted(f.rglob("*.yml")) if f.is_dir() else [f]:
                if p.is_file():
                    context.update(yaml.safe_load(p.read_text()) or {})
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)  # noqa: S701
        jobs = context.get("strongroom_jobs_list")
        if not isinstance(jobs, list):
            jobs = (context.get("strongroom_common_jobs") or []) + (
                context.get("strongroom_host_jobs") or [])
        for job in _render(jobs, context, env):
            job = {k: v for k, v in job.items() if k != "jitter"}
            if job.get("schedule") == "manual":
                del job["schedule"]
            elif "schedule" not in job and job.get("type") in registry.default_schedules():
                job["schedule"] = registry.default_schedules()[job["type"]]
            out.append((host, job))
    return out


# --- the job files the tests write ------------------------------------------------------------

_JOBISH = re.compile(r"(^|\n)\s*name:.*\n(.*\n)*?\s*type:|(^|\n)\s*type:.*\n(.*\n)*?\s*name:")


_HOLE = "\x00"


def _text(node):
    """A string constant, or an f-string, with each {...} (an f-string's value, a .format
    field) filled: a job name where the line is `name: ...`, else an absolute path."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        text = re.sub(r"\{[A-Za-z_][A-Za-z0-9_]*\}", _HOLE, node.value)
    elif isinstance(node, ast.JoinedStr):
        text = "".join(v.value if isinstance(v, ast.Constant) else _HOLE for v in node.values)
    else:
        return None
    return "\n".join(line.replace(_HOLE, "x" if line.strip().startswith("name:")
                                   else "/tmp/sr/x") for line in text.split("\n"))


def documents_in_the_tests():
    """[(where, document)] of every string in tests/ that reads as a job file: a YAML
    mapping with a name and a type (valid or, as many are on purpose, not)."""
    out = []
    for f in sorted((ROOT / "tests").rglob("*.py")):
        if "jobs" in f.relative_to(ROOT / "tests").parts[:1]:
            continue
        tree = ast.parse(f.read_text(encoding="utf-8"))
        parts = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr)
                 for v in n.values}  # an f-string's pieces are read with the f-string
        for node in ast.walk(tree):
            text = None if id(node) in parts else _text(node)
            if not text or not _JOBISH.search(text):
                continue
            try:
                doc = yaml.safe_load(text)
            except yaml.YAMLError:
                continue
            if isinstance(doc, dict) and "name" in doc and "type" in doc:
                out.append((f"{f.relative_to(ROOT)}:{node.lineno}", doc))
    return out
