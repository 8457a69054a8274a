"""The templates a user may customize: shipped once (templates/), found both from a checkout
and from an installed engine, and overridable per host in <config-dir>/templates/."""

import shutil
import subprocess
import sys
from pathlib import Path

from strongroom import notify

ROOT = Path(__file__).resolve().parents[2]
CTX = {"severity": "info", "job": None, "status": {}, "log_tail": [], "pid": 1}


def test_the_shipped_templates_render_from_a_checkout():
    title, body = notify.render("test", CTX)
    assert title.startswith("Strongroom test from ")
    assert "this target works" in body


def test_an_installed_engine_finds_the_templates_inside_its_package(tmp_path):
    """As the wheel lays it out: strongroom/templates/*.j2 and no templates/ beside it."""
    site = tmp_path / "site"
    shutil.copytree(ROOT / "strongroom", site / "strongroom",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "templates", site / "strongroom" / "templates")
    code = ("from strongroom import notify; from strongroom.core import templates; "
            "print(templates.shipped_dir()); "
            f"print(notify.render('test', {CTX!r})[0])")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(site)},
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == str(site / "strongroom" / "templates")
    assert out[1].startswith("Strongroom test from ")


def test_a_hosts_own_template_wins_and_may_extend_the_shipped_one(tmp_path):
    own = tmp_path / "templates"
    own.mkdir()
    (own / "notify_title.j2").write_text("[backup] {% include 'shipped/notify_title.j2' %}")
    title, body = notify.render("test", CTX, config_dir=tmp_path)
    assert title.startswith("[backup] Strongroom test from ")
    assert "this target works" in body  # the body is still the shipped one
