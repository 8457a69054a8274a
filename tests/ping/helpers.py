"""A status job (quick, with real output and a real result) and a heartbeat to a
PingReceiver; the run goes through the job runner or the real CLI."""

import json
from pathlib import Path

from strongroom import jobs
from tests.helpers import strongroom

# the path token of every test URL: like a check's UUID, it must never show up anywhere
TOKEN = "0f5c1e42-7d1b-4c2a-9e0e-5b3f6a1d2c3b"


def write_job(conf, ping, name="beat"):
    """A status job with this `ping` (YAML text of the value)."""
    (conf / "jobs").mkdir(parents=True, exist_ok=True)
    path = conf / "jobs" / f"{name}.yml"
    path.write_text(f"name: {name}\ntype: status\nping: {ping}\n")
    return path


def break_a_job(conf, keys=8):
    """A job file with `keys` unknown keys: the status job then fails, saying each one."""
    (conf / "jobs").mkdir(parents=True, exist_ok=True)
    lines = ["name: junk", "type: status"] + [f"unknown_key_{i:05d}: {i}" for i in range(keys)]
    (conf / "jobs" / "junk.yml").write_text("\n".join(lines) + "\n")


def paths(tmp_path):
    return jobs.Paths(tmp_path / "conf", tmp_path / "state", tmp_path / "state" / "log")


def run(tmp_path, name="beat"):
    return jobs.run(paths(tmp_path), name)


def status_of(tmp_path, name="beat"):
    return json.loads((tmp_path / "state" / "status" / f"{name}.json").read_text())


def log_of(tmp_path, name="beat"):
    return (tmp_path / "state" / "log" / f"{name}.log").read_text()


def cli(tmp_path, *args, check=None):
    return strongroom("--config-dir", tmp_path / "conf", "--state-dir", tmp_path / "state",
                      *args, check=check)


def every_file_text(*dirs):
    """{path: text} of every file under dirs (status, log, history, locks: all of it)."""
    out = {}
    for d in dirs:
        for p in Path(d).rglob("*"):
            if p.is_file():
                out[str(p)] = p.read_text(encoding="utf-8", errors="replace")
    return out
