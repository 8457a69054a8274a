"""roles/strongroom's age tasks: the identity from the vault is written by a no_log task,
0600 in a 0700 folder, and shows in no line of -vvv output; the recipients file is 0644;
without the variables nothing is written; age is among the packages on Debian and macOS.

tasks/age.yml runs alone in a small play (the rest of the role installs the engine)."""

import os
import stat
import subprocess

import ansible_runner
import pytest
import yaml

from strongroom import crypt
from tests.helpers import ENV, ROOT, VENV_BIN

ROLE = ROOT / "roles" / "strongroom"


def tasks():
    return yaml.safe_load((ROLE / "tasks" / "age.yml").read_text())


def test_identity_task_is_no_log_and_0600():
    [task] = [t for t in tasks() if "age-identity.txt" in str(t)]
    assert task["no_log"] is True
    assert task["ansible.builtin.copy"]["mode"] == "0600"
    assert task["when"] == "strongroom_age_identity is defined"
    included = yaml.safe_load((ROLE / "tasks" / "main.yml").read_text())
    assert {"name": "Write the age identity and recipients",
            "ansible.builtin.include_tasks": "age.yml"} in included
    for family in ("Debian", "Darwin"):
        names = yaml.safe_load((ROLE / "vars" / f"{family}.yml").read_text())
        assert "age" in names["strongroom_family_packages"]


def play(tmp_path, **extravars):
    book = tmp_path / "play.yml"
    book.write_text(yaml.safe_dump([{
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "vars_files": [str(ROLE / "defaults" / "main.yml")],
        "tasks": [{"name": "Age", "ansible.builtin.include_tasks": str(ROLE / "tasks" /
                                                                        "age.yml")}]}]))
    (tmp_path / "runner").mkdir(exist_ok=True)
    env = {k: v for k, v in ENV.items() if k.startswith(("PATH", "HOME", "LC_"))}
    env.update(PATH=f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
               ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               LC_ALL="C.UTF-8", LANG="C.UTF-8")
    r = ansible_runner.run(
        private_data_dir=str(tmp_path / "runner"), playbook=str(book),
        inventory="localhost ansible_connection=local "
                  "ansible_python_interpreter={{ ansible_playbook_python }}",
        envvars=env, quiet=True, verbosity=3,
        extravars={"strongroom_config_dir": str(tmp_path / "conf"), **extravars})
    out = r.stdout.read()
    assert r.rc == 0, out[-6000:]
    return out + "".join(str(e) for e in r.events)


@pytest.mark.slow  # ansible-playbook
def test_role_writes_identity_and_recipients(tmp_path):
    key = tmp_path / "made.txt"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    secret = key.read_text()
    me = crypt.check_identity(key)[0]
    out = play(tmp_path, strongroom_age_identity=secret, strongroom_age_recipients=[me])
    secret_line = [ln for ln in secret.splitlines() if ln.startswith("AGE-SECRET-KEY-")][0]
    assert secret_line not in out and "AGE-SECRET-KEY" not in out
    conf = tmp_path / "conf"
    written = conf / "secrets" / "age-identity.txt"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert stat.S_IMODE(written.parent.stat().st_mode) == 0o700
    assert crypt.check_identity(written) == [me]
    rfile = conf / "age-recipients.txt"
    assert stat.S_IMODE(rfile.stat().st_mode) == 0o644
    assert crypt.check_recipients(rfile) == [me]


@pytest.mark.slow  # ansible-playbook
def test_role_without_age_variables_writes_nothing(tmp_path):
    (tmp_path / "conf").mkdir()
    play(tmp_path)
    assert os.listdir(tmp_path / "conf") == []
