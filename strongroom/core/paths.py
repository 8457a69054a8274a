"""Where things live: system install as root, XDG directories for a desktop user."""

import os
from pathlib import Path


def _home():
    return Path(os.environ.get("HOME") or Path.home())


def is_system():
    return os.geteuid() == 0


def config_dir():
    if env := os.environ.get("STRONGROOM_CONFIG_DIR"):
        return Path(env)
    if is_system():
        return Path("/etc/strongroom")
    return Path(os.environ.get("XDG_CONFIG_HOME") or _home() / ".config") / "strongroom"


def state_dir():
    if env := os.environ.get("STRONGROOM_STATE_DIR"):
        return Path(env)
    if is_system():
        return Path("/var/lib/strongroom")
    return Path(os.environ.get("XDG_STATE_HOME") or _home() / ".local/state") / "strongroom"


def log_dir(state=None):
    """STRONGROOM_LOG_DIR; beside a state dir that was chosen explicitly; else the default."""
    if env := os.environ.get("STRONGROOM_LOG_DIR"):
        return Path(env)
    if state is not None:
        return Path(state) / "log"
    if is_system():
        return Path("/var/log/strongroom")
    return state_dir() / "log"
