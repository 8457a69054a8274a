"""The CLI's contract, verb by verb, from the parser itself: --help works, a usage error
exits 64 and prints no JSON, every verb takes --json and --quiet, the verbs git calls are
hidden but work, and nothing below the CLI imports it."""

import ast
import json

import pytest

from strongroom.cli import app, output
from tests.cli.support import OUTSIDE, contract_leaves, in_process, leaves
from tests.helpers import ROOT, commit, init

ALL = sorted(leaves())
CONTRACT = sorted(contract_leaves())
HIDDEN = {"hook pre-push", "sync merge-driver"}
OLD_COMMANDS = {"backup", "save", "checkpoints"}


def test_the_parser_offers_the_groups_the_contract_names():
    paths = set(ALL)
    for verb in ("bundle sync", "run", "jobs list", "drill", "status", "notify test",
                 "schedule explain", "manifest verify", "sync push", "snapshot now",
                 "snapshot protect", "checkpoint save", "checkpoint verify", "hook install",
                 "upload", "rollup restore", "bisync", "restic restore", "db tick",
                 "config check",
                 *HIDDEN, "backup now", "save", "checkpoints list"):
        assert verb in paths, verb


@pytest.mark.parametrize("path", ALL)
def test_help_works_on_every_verb(path, capsys):
    code, out, err = in_process(capsys, *path.split(), "--help")
    assert code == 0, err
    assert out.startswith("usage: strongroom " + path)
    if path.split()[0] not in OUTSIDE:
        assert "exit codes: 0 ok, 1 warning" in " ".join(out.split())
        assert "64 usage error" in " ".join(out.split())


@pytest.mark.parametrize("path", ALL)
def test_a_usage_error_exits_64_with_no_json(path, capsys):
    json_flag = [] if path.split()[0] in OUTSIDE else ["--json"]
    code, out, err = in_process(capsys, *path.split(), *json_flag, "--no-such-option")
    assert code == 64
    assert out == ""  # no envelope: the command line itself was wrong
    assert err.startswith("usage: strongroom") and "error:" in err


@pytest.mark.parametrize("argv", [[], ["bundle"], ["snapshot"], ["nonsense"],
                                  ["bundle", "nonsense"], ["run"], ["run", "a", "--all"],
                                  ["db", "list", "--keep", "many"],
                                  ["snapshot", "restore", "ID", "--full"]])
def test_other_usage_errors_exit_64(argv, capsys):
    code, out, err = in_process(capsys, *argv)
    assert code == 64 and out == "" and "usage:" in err


@pytest.mark.parametrize("path", CONTRACT)
def test_every_verb_takes_json_and_quiet(path):
    parser = contract_leaves()[path]
    options = {o for a in parser._actions for o in a.option_strings}
    assert {"--json", "--quiet", "-q"} <= options


def test_a_usage_error_is_not_the_error_code():
    assert output.USAGE == 64 and output.USAGE not in output.RESULTS


@pytest.mark.parametrize("group, hidden", [("hook", "pre-push"), ("sync", "merge-driver")])
def test_the_verbs_git_calls_are_hidden_from_help(group, hidden, capsys):
    code, out, _ = in_process(capsys, group, "--help")
    assert code == 0 and hidden not in _listed(out) and f"{{{hidden}" not in out
    assert len(_listed(out)) >= 2  # the others are listed
    code, out, err = in_process(capsys, group, "nonsense")  # nor listed as a choice
    assert code == 64 and hidden not in err and "choose from" in err
    code, out, _ = in_process(capsys, group, hidden, "--help")  # but they are there
    assert code == 0 and out.startswith(f"usage: strongroom {group} {hidden}")


def _listed(help_text):
    """The command or verb names a --help lists (its 4-space indented lines)."""
    return {line.split()[0] for line in help_text.splitlines()
            if line.startswith("    ") and not line.startswith("     ") and line.split()}


def test_old_command_names_are_hidden_from_help(capsys):
    code, out, _ = in_process(capsys, "--help")
    assert code == 0
    listed = _listed(out)
    assert {"snapshot", "checkpoint", "bundle", "run"} <= listed
    assert not listed & OLD_COMMANDS


def test_the_merge_driver_still_merges(tmp_path, capsys):
    files = {}
    for name, text in (("base", "a\n"), ("ours", "a\nb\n"), ("theirs", "a\nc\n")):
        files[name] = tmp_path / name
        files[name].write_text(text)
    code, out, _ = in_process(capsys, "sync", "merge-driver", "append", files["base"],
                              files["ours"], files["theirs"], "log.md")
    assert code == 0 and out == ""
    assert files["ours"].read_text().splitlines() == ["a", "b", "c"]
    code, out, _ = in_process(capsys, "sync", "merge-driver", "block", files["base"],
                              files["ours"], files["theirs"], "x.json", "--json")
    assert code == 1 and json.loads(out)["result"] == "warning"


def test_the_pre_push_hook_verb_still_runs(tmp_path):
    import subprocess

    from tests.helpers import ENV, VENV_BIN

    repo = init(tmp_path / "repo")
    commit(repo, {"a.txt": "a\n"})
    proc = subprocess.run([str(VENV_BIN / "strongroom"), "--state-dir", str(tmp_path / "st"),
                           "hook", "pre-push", "origin", "url", "--max-size", "1000000",
                           "--dest", str(tmp_path / "snaps")], cwd=repo, input="",
                          capture_output=True, text=True, env=ENV, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "no file above" in proc.stderr and proc.stdout == ""
    assert len([p for p in (tmp_path / "snaps").iterdir() if p.is_dir()]) == 1


def test_app_keeps_only_the_parser_and_main():
    tree = ast.parse((ROOT / "strongroom/cli/app.py").read_text())
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert functions == {"build_parser", "main", "_terminate", "_failed"}


def _imported_modules(path, text=None):
    """Absolute module names a file imports (relative imports resolved)."""
    package = list(path.relative_to(ROOT).parts[:-1])  # a module's and an __init__'s
    found = []
    source = text if text is not None else path.read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.append(module)
            found += [f"{module}.{a.name}" for a in node.names]
    return found


def test_nothing_below_the_cli_imports_it():
    offenders = []
    for path in sorted((ROOT / "strongroom").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("strongroom/cli/") or rel == "strongroom/__main__.py":
            continue
        offenders += [f"{rel}: {m}" for m in _imported_modules(path)
                      if m == "strongroom.cli" or m.startswith("strongroom.cli.")]
    assert offenders == []


def test_the_import_check_sees_every_spelling_of_an_import_of_the_cli():
    runner = ROOT / "strongroom/jobs/__init__.py"
    for text in ("from ..cli import backup\n", "from ..cli.backup import take\n",
                 "from .. import cli\n", "import strongroom.cli.db\n",
                 "def f():\n    from ..cli import save\n"):
        assert any(m == "strongroom.cli" or m.startswith("strongroom.cli.")
                   for m in _imported_modules(runner, text)), text
    assert not any(m.startswith("strongroom.cli")
                   for m in _imported_modules(runner, "from ..core import remote\n"))


def test_the_engine_packages_hold_what_the_runner_calls():
    from strongroom.checkpoints.take import take_checkpoint
    from strongroom.core.remote import rclone_config
    from strongroom.dbversions.settings import settings, tick_text
    from strongroom.snapshots.take import take

    assert all(callable(f) for f in (take, take_checkpoint, settings, tick_text,
                                     rclone_config))
    assert app.DEPRECATED == {"backup": "snapshot", "save": "checkpoint save",
                              "checkpoints": "checkpoint"}
