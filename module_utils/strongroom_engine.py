# Copyright: Strongroom contributors
# MIT License
"""Find the Strongroom engine for a module running on the host's own Python.

The engine lives in a virtualenv on the host (the strongroom role's ``strongroom_venv``).
A module does not need that virtualenv's interpreter: the virtualenv's site-packages (and
its ``.pth`` files) are added to the module's ``sys.path``, ahead of the interpreter's own
site-packages and behind the standard library and the module's payload, so the module
runs on the host's usual ``ansible_python_interpreter``. The virtualenv must have been
made with the same Python version (compiled dependencies are built for it).

Where the engine is looked for, first match wins:

1. the module option ``engine_venv`` (its fallback is ``STRONGROOM_VENV`` in the module's
   environment): only there;
2. the module's own Python, when it can import the engine already;
3. the role's default virtualenv for the user the module runs as: ``/opt/strongroom/venv``
   as root, ``~/.local/share/strongroom/venv`` otherwise.
"""

import contextlib
import os
import site
import sys
import traceback

from ansible.module_utils.basic import env_fallback, missing_required_lib

ENGINE_VENV_ENV = "STRONGROOM_VENV"
INSTALL_HINT = ("Run playbooks/site.yml to install the engine on the host (the role "
                "strongroom.backup.strongroom), and give the module its virtualenv in "
                f"engine_venv (or {ENGINE_VENV_ENV}).")


def engine_argument_spec(**spec):
    """The module's argument spec with the option every Strongroom module takes."""
    out = dict(engine_venv=dict(type="path", fallback=(env_fallback, [ENGINE_VENV_ENV])))
    out.update(spec)
    return out


def default_venvs():
    """The strongroom role's default virtualenv for the user this runs as."""
    if os.geteuid() == 0:
        return ["/opt/strongroom/venv"]
    return [os.path.expanduser("~/.local/share/strongroom/venv")]


class EngineNotFound(Exception):
    pass


def _site_packages(venv):
    """The virtualenv's site-packages for this interpreter's version, or why not."""
    if not os.path.isdir(venv):
        raise EngineNotFound(f"{venv} does not exist")
    if not os.path.isfile(os.path.join(venv, "pyvenv.cfg")):
        raise EngineNotFound(f"{venv} is not a virtualenv (no pyvenv.cfg)")
    want = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    path = os.path.join(venv, "lib", want, "site-packages")
    if os.path.isdir(path):
        return path
    lib = os.path.join(venv, "lib")
    have = sorted(d for d in os.listdir(lib) if d.startswith("python")) \
        if os.path.isdir(lib) else []
    if have:
        raise EngineNotFound(
            f"the virtualenv {venv} was made with {', '.join(have)} but this module runs on "
            f"{want} ({sys.executable}); set ansible_python_interpreter to "
            f"{os.path.join(venv, 'bin', 'python')} or to a {have[0]} interpreter, or "
            "remake the virtualenv with the host's Python (strongroom_python)")
    raise EngineNotFound(f"the virtualenv {venv} has no site-packages for {want}")


def _activate(venv):
    """Put the virtualenv's site-packages, with what its .pth files add (an editable
    install's finder, for one), in front of this interpreter's own site-packages."""
    path = _site_packages(venv)
    before = list(sys.path)
    site.addsitedir(path)
    added = [p for p in sys.path if p not in before]
    if not added:
        return  # already there: this interpreter is the virtualenv's
    sys.path[:] = [p for p in sys.path if p not in added]
    own = set()
    with contextlib.suppress(AttributeError):  # an old virtualenv's site module lacks it
        own.update(site.getsitepackages())
    own.add(site.getusersitepackages())
    at = next((i for i, p in enumerate(sys.path) if p in own), len(sys.path))
    sys.path[at:at] = added


def _importable():
    import importlib

    try:
        importlib.invalidate_caches()
        importlib.import_module("strongroom")
    except ImportError:
        return False
    return True


def find_engine(venv=None):
    """Make the engine importable; returns the virtualenv it came from (None when the
    module's own Python had it). Raises EngineNotFound saying where it looked."""
    if venv:
        _activate(venv)
        if not _importable():
            raise EngineNotFound(f"the virtualenv {venv} has no strongroom package")
        return venv
    if _importable():
        return None
    looked = [f"{sys.executable} (the module's Python)"]
    for candidate in default_venvs():
        if not os.path.isdir(candidate):
            looked.append(f"{candidate} (absent)")
            continue
        try:
            _activate(candidate)
        except EngineNotFound as exc:
            looked.append(str(exc))
            continue
        if _importable():
            return candidate
        looked.append(f"{candidate} (no strongroom package)")
    raise EngineNotFound("looked in " + "; ".join(looked))


def require_engine(module, reason):
    """find_engine for an AnsibleModule with engine_argument_spec(): fails the task
    saying how to install the engine when it is not there. Returns the virtualenv."""
    try:
        return find_engine(module.params.get("engine_venv"))
    except EngineNotFound as exc:
        why = str(exc)
    except Exception as exc:  # a broken engine install: say so, with its traceback
        why = f"importing it failed: {type(exc).__name__}: {exc}"
    module.fail_json(msg=f"{missing_required_lib('strongroom', reason=reason)}. "
                         f"Strongroom's engine: {why}. {INSTALL_HINT}",
                     exception=traceback.format_exc())
