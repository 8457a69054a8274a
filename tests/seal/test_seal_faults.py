"""What goes wrong with encrypt_to: a recipients file that does not parse or is missing
fails the run naming it (file and line), with nothing sent and the local backups as they
were; a run killed mid-upload leaves no plaintext on the remote, and the next run
finishes the job and removes the staging the killed one left."""

import json
import os
import signal
import subprocess
import time

import pytest

from strongroom import jobs
from tests.helpers import ENV, VENV_BIN, strongroom
from tests.seal.helpers import (
    assert_nowhere,
    bed,
    canary,
    check_sealed,
    files_of,
    make_keys,
    staging_left,
    write_job,
)
from tests.seal.test_seal_jobs import app_tree, run


@pytest.fixture
def keys(tmp_path):
    return make_keys(tmp_path)


def snapshot_job(tmp_path, recipients, **extra):
    conf, state, paths = bed(tmp_path)
    secret = canary()
    src, dest, remote_dir = app_tree(tmp_path / "app", secret), tmp_path / "snaps", \
        tmp_path / "remote"
    write_job(conf, "snap", "snapshot", {
        "source": str(src), "dest": str(dest), "critical": [".env"], "immutable": "off",
        "remote": f"offsite:{remote_dir}", "encrypt_to": str(recipients), **extra})
    return conf, state, paths, secret, src, dest, remote_dir


def local_snapshots(dest):
    return {p.name: sorted(files_of(p)) for p in dest.iterdir() if p.is_dir()
            and not p.name.startswith(".")} if dest.exists() else {}


@pytest.mark.parametrize("broken", ["garbage", "missing"])
def test_a_bad_recipients_file_fails_the_run_with_nothing_sent(tmp_path, keys, capsys,
                                                               broken):
    _identity, recipients = keys
    conf, state, paths, secret, src, dest, remote_dir = snapshot_job(tmp_path, recipients)
    code, _status, output, _ = run(paths, "snap", capsys)  # a good run first
    assert code == 0, output
    kept_local, kept_remote = local_snapshots(dest), files_of(remote_dir)
    if broken == "garbage":
        good = recipients.read_text()
        recipients.write_text(good + "not-a-recipient\n")
        line = len(good.splitlines()) + 1
    else:
        recipients.unlink()
    code, status, output, said = run(paths, "snap", capsys)
    assert code == 2
    assert str(recipients) in status["message"]
    if broken == "garbage":
        assert f"line {line}" in status["message"]
    assert status["result"] == "error"
    assert str(recipients) in paths.log("snap").read_text()
    assert local_snapshots(dest) == kept_local  # nothing taken, nothing lost
    assert files_of(remote_dir) == kept_remote  # nothing sent
    assert secret not in output + said


def test_a_bad_recipients_file_fails_a_bundle_sync_before_anything(tmp_path, keys):
    _identity, recipients = keys
    from tests.helpers import commit, init

    root, store, remote_dir = tmp_path / "root", tmp_path / "store", tmp_path / "remote"
    commit(init(root / "r"), {"a.txt": "a\n"})
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "rclone.conf").write_text("[offsite]\ntype = local\n")
    recipients.write_text("age1notakey\n")
    proc = strongroom("--config-dir", conf, "bundle", "sync", "--root", root, "--store", store,
                      "--remote", f"offsite:{remote_dir}", "--encrypt-to", recipients)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{recipients}, line 1" in proc.stderr
    assert not remote_dir.exists()


def test_the_upload_verb_seals_and_a_bad_file_stops_it(tmp_path, keys):
    identity, recipients = keys
    secret = canary()
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "secret.txt").write_text(secret)
    (folder / "SHA256SUMS").write_text("0" * 64 + "  secret.txt\n")
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "rclone.conf").write_text("[offsite]\ntype = local\n")
    remote_dir = tmp_path / "remote"
    base = ("--config-dir", conf, "--state-dir", tmp_path / "state", "upload", folder,
            f"offsite:{remote_dir}", "--immutable", "--encrypt-to")
    proc = strongroom(*base, tmp_path / "nowhere.txt")
    assert proc.returncode == 2 and str(tmp_path / "nowhere.txt") in proc.stderr
    assert not remote_dir.exists()
    proc = strongroom(*base, recipients, "--json")
    assert proc.returncode == 0, proc.stderr
    # a user's own folder: even a name a job's metadata has (SHA256SUMS) is content here
    assert sorted(files_of(remote_dir)) == ["SHA256SUMS.age", "SHA256SUMS.age.json",
                                            "secret.txt.age", "secret.txt.age.json"]
    assert_nowhere(secret, remote_dir)
    assert secret not in proc.stdout + proc.stderr
    check_sealed(remote_dir, identity, lambda rel: folder / rel, tmp_path)
    out = json.loads(proc.stdout)
    assert out["exit_code"] == 0
    proc = strongroom(*base, recipients, "--delete-local-after-verify")
    assert proc.returncode == 0, proc.stderr
    assert not folder.exists()  # each verified (sealed or plain) before it went


def test_a_run_killed_mid_upload_leaves_no_plaintext_and_the_next_finishes(tmp_path, keys):
    identity, recipients = keys
    conf, state, paths, secret, src, dest, remote_dir = snapshot_job(
        tmp_path, recipients, bwlimit="256k")
    (src / "big.bin").write_bytes(os.urandom(6 << 20))  # about 20 s at the limit
    proc = subprocess.Popen([str(VENV_BIN / "strongroom"), "--config-dir", str(conf),
                             "--state-dir", str(state), "--log-dir", str(state / "log"),
                             "run", "snap"], env=ENV, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    partial = None
    while time.monotonic() < deadline and partial is None:
        for p in remote_dir.rglob("full.tar.zst.age*") if remote_dir.exists() else ():
            if p.stat().st_size > 1 << 20:  # well inside the copy
                partial = p
        time.sleep(0.05)
    assert partial is not None, "the upload never started"
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its rclone, at once
    proc.wait()
    assert staging_left(state)  # a killed run cleans nothing up ...
    assert_nowhere(secret, remote_dir)  # ... and sent no plaintext
    assert_sealed_layout_partial(remote_dir)
    snap = partial.parent.name
    # the next run (no bandwidth limit) takes and sends its own snapshot ...
    write_job(conf, "snap", "snapshot", {
        "source": str(src), "dest": str(dest), "critical": [".env"], "immutable": "off",
        "remote": f"offsite:{remote_dir}", "encrypt_to": str(recipients)})
    code, status, output = jobs.run(paths, "snap")
    assert code == 0, output
    assert status["snapshot"]["id"] != snap
    assert not staging_left(state)  # the killed run's staging went with it
    # ... and sending the killed run's snapshot again finishes it
    upload, said = jobs.offsite(paths, {"encrypt_to": str(recipients)}), []
    upload.progress = said.append
    up = upload.run(dest / snap, f"offsite:{remote_dir}/{snap}", immutable=True)
    assert up["verified_by"] == "hash"
    assert "replacing 1 file(s) a killed upload left partial" in said
    assert not staging_left(state)
    assert_nowhere(secret, remote_dir)
    check_sealed(remote_dir, identity, lambda rel: dest / rel, tmp_path)


def assert_sealed_layout_partial(root):
    """After a kill: only plain files (by policy), .age files and sidecars are there."""
    from strongroom.crypt import policy

    for n in files_of(root):
        if not n.endswith((".age", ".age.json")):
            assert not policy.sealed(n.split("/", 1)[1]), f"{n} reached the remote in plain"


def test_sigterm_mid_upload_removes_the_staging(tmp_path, keys):
    _identity, recipients = keys
    conf, state, paths, secret, src, dest, remote_dir = snapshot_job(
        tmp_path, recipients, bwlimit="256k")
    (src / "big.bin").write_bytes(os.urandom(4 << 20))
    proc = subprocess.Popen([str(VENV_BIN / "strongroom"), "--config-dir", str(conf),
                             "--state-dir", str(state), "--log-dir", str(state / "log"),
                             "run", "snap"], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(remote_dir.rglob("*.age")):
        time.sleep(0.05)
    assert list(remote_dir.rglob("*.age")), "the upload never started"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert not staging_left(state)
    assert local_snapshots(dest)  # the local snapshot stays
    assert_nowhere(secret, remote_dir)
    assert_sealed_layout_partial(remote_dir)


def test_snapshot_now_with_remote_and_encrypt_to(tmp_path, keys):
    identity, recipients = keys
    secret = canary()
    src, dest, remote_dir = app_tree(tmp_path / "app", secret), tmp_path / "snaps", \
        tmp_path / "remote"
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "rclone.conf").write_text("[offsite]\ntype = local\n")
    base = ("--config-dir", conf, "--state-dir", tmp_path / "state", "backup", "now",
            "--source", src, "--dest", dest, "--critical", ".env", "--immutable", "off")
    proc = strongroom(*base, "--encrypt-to", recipients)
    assert proc.returncode == 2 and "give --remote REMOTE:PATH too" in proc.stderr
    assert not dest.exists()
    proc = strongroom(*base, "--remote", f"offsite:{remote_dir}", "--encrypt-to", recipients)
    assert proc.returncode == 0, proc.stderr
    snap = proc.stdout.strip()  # stdout carries the id alone
    assert f"{snap}/critical/.env.age" in files_of(remote_dir)
    assert_nowhere(secret, remote_dir)
    assert secret not in proc.stdout + proc.stderr
    check_sealed(remote_dir, identity, lambda rel: dest / rel, tmp_path)
    assert not staging_left(tmp_path / "state")
    help_text = strongroom("snapshot", "now", "--help").stdout
    assert "--encrypt-to FILE" in help_text and "age recipients file" in help_text


def test_a_relative_encrypt_to_on_bundle_sync_is_taken_from_where_the_user_stands(
        tmp_path, keys, monkeypatch):
    identity, recipients = keys
    from tests.helpers import commit, init

    root, store, remote_dir = tmp_path / "root", tmp_path / "store", tmp_path / "remote"
    commit(init(root / "r"), {"a.txt": "a\n"})
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "rclone.conf").write_text("[offsite]\ntype = local\n")
    monkeypatch.chdir(recipients.parent)
    proc = strongroom("--config-dir", conf, "--state-dir", tmp_path / "state", "bundle",
                      "sync", "--root", root, "--store", store, "--remote",
                      f"offsite:{remote_dir}", "--encrypt-to", recipients.name)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "does not exist" not in proc.stderr
    opened = check_sealed(remote_dir, identity, lambda rel: None, tmp_path)
    assert any(name.endswith(".bundle") for name in opened)


def test_config_check_warns_of_an_encrypt_to_that_run_would_refuse(tmp_path, keys):
    """The job file is valid either way; what run would refuse is said with exit 1."""
    _identity, recipients = keys
    conf, _state, _paths = bed(tmp_path)
    job = conf / "jobs" / "snap.yml"
    base = {"source": str(tmp_path), "dest": str(tmp_path / "snaps")}
    cases = [
        ({**base, "remote": "offsite:/x", "encrypt_to": str(recipients)}, 0, None),
        ({**base, "remote": "offsite:/x", "encrypt_to": str(tmp_path / "absent.txt")},
         1, f"encrypt_to: recipients file {tmp_path / 'absent.txt'} does not exist"),
        ({**base, "remote": "offsite:/x", "encrypt_to": str(tmp_path)}, 1, "encrypt_to: "),
        ({**base, "encrypt_to": str(recipients)}, 1,
         "encrypt_to seals what goes off-site, and this job has no remote: nothing is sealed"),
    ]
    for options, code, words in cases:
        write_job(conf, "snap", "snapshot", options)
        proc = strongroom("--config-dir", conf, "config", "check", job)
        assert proc.returncode == code, (options, proc.stdout, proc.stderr)
        assert "valid snapshot job 'snap'" in proc.stdout
        if words:
            assert words in proc.stderr, proc.stderr
    # a private key in the recipients file is named by its line, and not shown
    key = [ln for ln in _identity.read_text().splitlines() if ln.startswith("AGE-SECRET")][0]
    recipients.write_text("\ufeff" + key + "\n")
    write_job(conf, "snap", "snapshot", {**base, "remote": "offsite:/x",
                                         "encrypt_to": str(recipients)})
    proc = strongroom("--config-dir", conf, "config", "check", job)
    assert proc.returncode == 1 and "line 1: this is a private key" in proc.stderr
    assert key[15:] not in proc.stdout + proc.stderr
