"""Fixtures shared by the reliability tests."""

import os

import pytest


@pytest.fixture
def world(tmp_path):
    """An outside folder with a victim file, and a target holding the user's own file."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("safe\n")
    os.chmod(outside / "victim.txt", 0o600)
    target = tmp_path / "target"
    target.mkdir()
    (target / "mine.txt").write_text("mine\n")
    return tmp_path, outside, target
