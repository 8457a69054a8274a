"""What the CLI contract tests share: the verbs the parser offers, the envelope check, and
the real CLI in-process or in a subprocess."""

import argparse
import json
import subprocess

from strongroom.cli import app, main
from tests.helpers import ENV, VENV_BIN, strongroom

RESULTS = {0: "ok", 1: "warning", 2: "error", 3: "incomplete", 11: "locked"}
# groups left out of the contract checks (none: every group keeps it)
OUTSIDE = ()


def leaves(parser=None, prefix=()):
    """{verb path: parser} for every command line a user (or git) can reach."""
    parser = parser or app.build_parser()
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return {" ".join(prefix): parser}
    out = {}
    for name, sub in subs[0].choices.items():
        out.update(leaves(sub, (*prefix, name)))
    return out


def contract_leaves():
    return {path: p for path, p in leaves().items() if path.split()[0] not in OUTSIDE}


def group_leaves(command):
    return {path for path in leaves() if path.split()[0] == command}


def verb_path(argv):
    """The verb path a command line reaches ('bundle sync', 'run', ...)."""
    args = app.build_parser().parse_args([str(a) for a in argv])
    return args.command + (f" {args.verb}" if getattr(args, "verb", None) else "")


def envelope(proc):
    """The --json object of a finished subprocess, checked against its exit code."""
    assert proc.stdout.strip(), f"no JSON on stdout (exit {proc.returncode}):\n{proc.stderr}"
    data = json.loads(proc.stdout)
    assert isinstance(data, dict), data
    assert data["exit_code"] == proc.returncode, (data, proc.stderr)
    assert data["result"] == RESULTS[proc.returncode], data
    assert isinstance(data["message"], str) and data["message"].strip(), data
    assert "\n" not in data["message"], data["message"]
    return data


class Runner:
    """strongroom --config-dir/--state-dir/--log-dir in tmp_path, --json, in a subprocess;
    remembers every verb path it ran."""

    def __init__(self, tmp_path):
        self.conf, self.state, self.log = tmp_path / "conf", tmp_path / "state", \
            tmp_path / "log"
        (self.conf / "jobs").mkdir(parents=True, exist_ok=True)
        self.ran = set()

    @property
    def base(self):
        return ["--config-dir", self.conf, "--state-dir", self.state, "--log-dir", self.log]

    def json(self, *argv, expect=None, **kw):
        """Run with --json; the envelope, checked (and its code, when expect is given)."""
        self.ran.add(verb_path([*self.base, *argv]))
        proc = strongroom(*self.base, *argv, "--json", **kw)
        data = envelope(proc)
        if expect is not None:
            assert proc.returncode in (expect if isinstance(expect, tuple) else (expect,)), \
                (argv, proc.stdout, proc.stderr)
        return data

    def run(self, *argv, **kw):
        return strongroom(*self.base, *argv, **kw)

    def json_in(self, cwd, stdin, *argv, expect=None):
        """As json(), run in cwd with stdin (what git does with a hook)."""
        self.ran.add(verb_path([*self.base, *argv]))
        proc = subprocess.run([str(VENV_BIN / "strongroom"), *map(str, self.base),
                               *map(str, argv), "--json"], cwd=cwd, input=stdin,
                              capture_output=True, text=True, env=ENV, timeout=120,
                              check=False)
        data = envelope(proc)
        if expect is not None:
            assert proc.returncode == expect, (argv, proc.stdout, proc.stderr)
        return data


def in_process(capsys, *argv):
    """(exit code, stdout, stderr) of strongroom.cli.main, SystemExit included."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err
