"""Run one module for real through `ansible localhost -m`, on a Python without the engine."""

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import VENV_BIN

VENV = VENV_BIN.parent  # the virtualenv running the tests: it has the engine


def base_python():
    """The interpreter the test virtualenv was made from: the same version, no engine."""
    cfg = dict(line.split(" = ", 1) for line in
               (VENV / "pyvenv.cfg").read_text().splitlines() if " = " in line)
    home = Path(cfg["home"])
    for candidate in (home / f"python{sys.version_info[0]}.{sys.version_info[1]}",
                      home / "python3"):
        if candidate.exists():
            return candidate
    raise AssertionError(f"no python in {home}")


def imports_engine(python):
    return subprocess.run([str(python), "-c", "import strongroom"], capture_output=True,
                          cwd="/", check=False).returncode == 0


def adhoc(module, args, cwd, env, interpreter, check=False, diff=False):
    """(rc, result) of `ansible localhost -m MODULE -a JSON`, the result from --tree."""
    tree = Path(cwd) / f"tree-{len(list(Path(cwd).glob('tree-*')))}"
    argv = [str(VENV_BIN / "ansible"), "localhost", "-m", module, "-a", json.dumps(args),
            "-e", f"ansible_python_interpreter={interpreter}", "--tree", str(tree)]
    if check:
        argv.append("--check")
    if diff:
        argv.append("--diff")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    full_env.update(PATH=f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                    ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="False",
                    ANSIBLE_INVENTORY_UNPARSED_WARNING="False", LC_ALL="C.UTF-8")
    full_env.update(env)
    proc = subprocess.run(argv, cwd=cwd, env=full_env, capture_output=True, text=True,
                          check=False)
    out = tree / "localhost"
    if not out.exists():
        raise AssertionError(f"ansible wrote no result (rc {proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.returncode, json.loads(out.read_text())
