"""The example inventory takes its notification URLs from a real ansible-vault file."""

import json
import shutil
import subprocess

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
