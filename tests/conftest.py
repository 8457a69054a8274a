import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The Ansible modules live in library/ (not a package) and are imported by file name.
sys.path.insert(0, str(ROOT / "library"))


@pytest.fixture
def bed(tmp_path):
    """A repository under root/ and empty config and state dirs for the job runner.

    (The fleet and integration modules define their own, larger `bed`.)
    """
    from tests.helpers import rich_repo

    root = tmp_path / "root"
    rich_repo(root / "r")
    conf, state = tmp_path / "conf", tmp_path / "state"
    (conf / "jobs").mkdir(parents=True)
    return tmp_path, root, conf, state
