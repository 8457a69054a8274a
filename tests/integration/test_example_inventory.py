"""The example inventory takes its notification URLs from a real ansible-vault file."""

import json
import shutil
import subprocess

import pytest

from tests.helpers import ENV, ROOT, VENV_BIN

SECRET = "vaultcanary31a9"


def test_notify_urls_come_from_the_vault_and_never_show(tmp_path):
    inv = tmp_path / "example"
    shutil.copytree(ROOT / "inventory" / "example", inv)
    vault = inv / "group_vars" / "all" / "vault.yml"
    vault.write_text(f"vault_ntfy_topic: backups-{SECRET}\nvault_smtp_user: alice\n"
                     f"vault_smtp_password: {SECRET}\n")
    pw = tmp_path / "vault-pass"
    pw.write_text("correct horse\n")
    pw.chmod(0o600)
    env = dict(ENV, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), LC_ALL="C.UTF-8",
               ANSIBLE_NOCOLOR="1")
    subprocess.run([str(VENV_BIN / "ansible-vault"), "encrypt", "--vault-password-file",
                    str(pw), str(vault)], check=True, env=env, capture_output=True)
    assert SECRET not in vault.read_text() and vault.read_text().startswith("$ANSIBLE_VAULT")
    # the debug action runs on the controller: no connection to the example hosts is made
    proc = subprocess.run(
        [str(VENV_BIN / "ansible"), "laptop", "-i", str(inv), "--vault-password-file", str(pw),
         "-m", "ansible.builtin.debug", "-a",
         "msg={{ strongroom_notify_targets | map(attribute='url') | list | to_json }}"],
        capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    urls = json.loads(json.loads(proc.stdout.split("=>", 1)[1])["msg"])
    assert urls == [f"ntfys://ntfy.sh/backups-{SECRET}",
                    f"mailtos://alice:{SECRET}@example.org?smtp=smtp.example.org"
                    "&from=backups@example.org&to=alice@example.org"]
    # without the vault password the inventory cannot be read at all
    proc = subprocess.run([str(VENV_BIN / "ansible-inventory"), "-i", str(inv), "--list"],
                          capture_output=True, text=True, env=env, check=False)
    assert "Attempting to decrypt but no vault secrets found" in proc.stdout + proc.stderr
    assert SECRET not in proc.stdout + proc.stderr


def test_every_example_job_passes_the_engines_schema():
    import re

    import yaml

    checked = []
    for f in sorted((ROOT / "inventory" / "example").rglob("*.yml")):
        data = yaml.safe_load(f.read_text()) or {}
        for job in data.get("strongroom_jobs_list", []) if isinstance(
                data.get("strongroom_jobs_list"), list) else []:
            checked.append(job)
        checked += data.get("strongroom_host_jobs", []) + data.get("strongroom_common_jobs", [])
    assert {"daily", "rollup", "restic", "bisync", "checkpoint", "snapshot"} <= {
        j["type"] for j in checked}
    for job in checked:
        job = {k: v for k, v in job.items() if k != "jitter"}
        # the role's path variables stand for absolute paths on each host
        text = re.sub(r"\{\{ *strongroom_\w+ *\}\}", "/home/alice/x", yaml.safe_dump(job))
        text = text.replace("{{ inventory_hostname }}", "host")
        proc = subprocess.run([str(VENV_BIN / "strongroom"), "config", "check", "-"],
                              input=text, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, f"{job['name']}: {proc.stderr}"


SET = {"vault_ntfy_topic": "topic-canary-1c", "vault_smtp_user": "alice",
       "vault_smtp_password": "smtp-canary-2d", "vault_r2_account_id": "acct",
       "vault_r2_access_key_id": "key-canary-3e", "vault_r2_secret_access_key": "s3-canary-4f",
       "vault_restic_password": "restic-canary-5a"}


def site_yml(tmp_path, host, vault):
    inv = tmp_path / "example"
    shutil.copytree(ROOT / "inventory" / "example", inv)
    (inv / "group_vars" / "all" / "vault.yml").write_text(
        "".join(f"{k}: {v!r}\n" for k, v in vault.items()))
    home = tmp_path / "home"
    home.mkdir()
    env = dict(ENV, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), LC_ALL="C.UTF-8",
               ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", str(inv), str(ROOT / "playbooks/site.yml"),
         "--limit", host, "-e", "ansible_connection=local",
         "-e", f"ansible_python_interpreter={VENV_BIN / 'python'}",
         "-e", "strongroom_install_mode=user", "-e", f"strongroom_home={home}",
         "-e", f"strongroom_state_dir={home}/state", "-e", f"strongroom_config_dir={home}/etc",
         "-e", f"strongroom_venv={home}/venv", "-e", f"strongroom_log_dir={home}/log"],
        capture_output=True, text=True, env=env, check=False)
    return proc, home


def test_a_vault_variable_set_to_nothing_is_refused_by_name(tmp_path):
    """A URL is a template with a fixed prefix: an empty topic leaves `ntfys://ntfy.sh/`,
    which is not empty, so the variables themselves are checked."""
    proc, home = site_yml(tmp_path, "laptop", dict(SET, vault_ntfy_topic="",
                                                    vault_r2_access_key_id=" "))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert ("vault variables set to nothing: vault_ntfy_topic, vault_r2_access_key_id; "
            "rclone remote settings with no value: offsite.access_key_id") in out
    assert list(home.iterdir()) == []
    for name, value in SET.items():
        assert value not in out, name


@pytest.mark.parametrize(("host", "missing"), [
    ("laptop", "vault_ntfy_topic"), ("laptop", "vault_smtp_password"),
    ("laptop", "vault_r2_secret_access_key"), ("server", "vault_restic_password")])
def test_a_missing_vault_variable_stops_site_yml_by_name_before_any_change(
        tmp_path, host, missing):
    """No placeholder stands in for a secret: failure messages sent to a public
    ntfy topic, or a restic repository keyed 'CHANGE-ME', are worse than stopping."""
    # the host is this machine, reached locally; everything it would write is under home
    proc, home = site_yml(tmp_path, host, {k: v for k, v in SET.items() if k != missing})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert f"'{missing}' is undefined" in out
    assert "changed=0" in out and list(home.iterdir()) == []
    for name, value in SET.items():
        assert value not in out, name
    assert "CHANGE-ME" not in (ROOT / "inventory/example/group_vars/all/main.yml").read_text()
