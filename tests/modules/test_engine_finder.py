"""module_utils/strongroom_engine.py: a module finds the engine's virtualenv and runs on the
host's own Python; where it is not, the task says where it looked and how to install it."""

import pytest
from ansible_collections.strongroom.backup.plugins.module_utils import strongroom_engine

from tests.helpers import ROOT
from tests.modules.adhoc import VENV, adhoc, base_python, imports_engine

CHECKOUT_ENV = {"ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}


def test_a_virtualenv_of_another_python_is_refused_saying_what_to_do(tmp_path):
    venv = tmp_path / "venv"
    (venv / "lib/python3.0/site-packages").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /nowhere\n")
    with pytest.raises(strongroom_engine.EngineNotFound) as e:
        strongroom_engine.find_engine(str(venv))
    assert "was made with python3.0 but this module runs on python3." in str(e.value)
    assert f"ansible_python_interpreter to {venv}/bin/python" in str(e.value)
    with pytest.raises(strongroom_engine.EngineNotFound) as e:
        strongroom_engine.find_engine(str(tmp_path))
    assert str(e.value) == f"{tmp_path} is not a virtualenv (no pyvenv.cfg)"


def test_the_test_virtualenv_is_found_by_name():
    assert strongroom_engine.find_engine(str(VENV)) == str(VENV)


@pytest.fixture
def bare_python():
    python = base_python()
    if imports_engine(python):
        pytest.skip(f"{python} imports the engine by itself: nothing to find")
    return python


def test_a_module_runs_on_a_python_without_the_engine_given_the_virtualenv(tmp_path,
                                                                            bare_python):
    (tmp_path / "root").mkdir()
    (tmp_path / "root/a.txt").write_text("a\n")
    args = {"root": str(tmp_path / "root"), "path": str(tmp_path / "m.json")}
    home = tmp_path / "home"  # no default virtualenv there
    home.mkdir()
    rc, res = adhoc("strongroom.backup.checksum_manifest", dict(args, engine_venv=str(VENV)),
                    tmp_path, dict(CHECKOUT_ENV, HOME=str(home)), bare_python)
    assert rc == 0 and res["changed"] is True and res["added"] == ["a.txt"]
    # STRONGROOM_VENV in the module's environment stands for the option
    rc, res = adhoc("strongroom.backup.checksum_manifest", dict(args, state="verified"),
                    tmp_path, dict(CHECKOUT_ENV, HOME=str(home), STRONGROOM_VENV=str(VENV)),
                    bare_python)
    assert rc == 0 and res["verdict"]["passed"] is True
    rc, res = adhoc("strongroom.backup.checksum_manifest", args, tmp_path,
                    dict(CHECKOUT_ENV, HOME=str(home)), bare_python)
    (default,) = strongroom_engine.default_venvs()
    if strongroom_engine.os.path.isfile(f"{default}/pyvenv.cfg"):
        # `make run` before `make test` installed the role's default virtualenv on this
        # machine (the root default is not under HOME): the module finds the engine there
        assert rc == 0 and res["files"] == 1 and res["added"] == [], res
        return
    # nowhere to be found: the task fails saying where it looked and how to install it
    assert rc != 0 and res["changed"] is False
    assert "Failed to import the required Python library (strongroom)" in res["msg"]
    assert f"looked in {bare_python} (the module's Python)" in res["msg"]
    assert "Run playbooks/site.yml to install the engine" in res["msg"]
    assert "engine_venv (or STRONGROOM_VENV)" in res["msg"]
