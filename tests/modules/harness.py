"""Run a module's main() in-process, with exit_json/fail_json turned into exceptions."""

import os
import stat
from pathlib import Path
from unittest import mock

import pytest
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args


class Exit(Exception):
    pass


class Fail(Exception):
    pass


def _exit(self, **kw):
    raise Exit(kw)


def _fail(self, **kw):
    raise Fail(kw)


def run(main, args, check_mode=False, diff=False):
    args = dict(args)
    if check_mode:
        args["_ansible_check_mode"] = True
    if diff:
        args["_ansible_diff"] = True
    with mock.patch.multiple(basic.AnsibleModule, exit_json=_exit, fail_json=_fail), \
            patch_module_args(args):
        main()
    raise AssertionError("the module returned without exit_json or fail_json")


def ok(main, args, **kw):
    with pytest.raises(Exit) as e:
        run(main, args, **kw)
    return e.value.args[0]


def failed(main, args, **kw):
    with pytest.raises(Fail) as e:
        run(main, args, **kw)
    return e.value.args[0]


def tree_state(root):
    """Everything a write could change under root: paths, types, modes, bytes, links
    (a check-mode run must leave it byte-identical)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = Path(dirpath, name)
            st = p.lstat()
            rel = str(p.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("file", stat.S_IMODE(st.st_mode), p.read_bytes())
            else:
                out[rel] = ("other", stat.S_IFMT(st.st_mode))
    return out
