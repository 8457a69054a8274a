"""`strongroom key generate|recipient|check-recipients` through the real CLI: the identity
lands 0600 in a 0700 folder, is never overwritten without --force, and its secret key is
in no command's stdout or stderr."""

import json
import os

import pytest

from strongroom import crypt
from tests.crypt.helpers import identity, mode, recipients_file
from tests.helpers import ENV, strongroom


@pytest.fixture
def run(tmp_path):
    """The CLI with its config dir in tmp_path; every output is checked for secret keys."""
    env = dict(ENV, STRONGROOM_CONFIG_DIR=str(tmp_path / "cfg"),
               STRONGROOM_STATE_DIR=str(tmp_path / "state"))

    def go(*args, check):
        proc = strongroom("key", *args, check=check, env=env)
        assert "AGE-SECRET-KEY" not in proc.stdout + proc.stderr
        return proc
    return go


def test_generate_default_place_and_modes(run, tmp_path):
    proc = run("generate", check=0)
    out = tmp_path / "cfg" / "secrets" / "age-identity.txt"
    assert mode(out) == 0o600 and mode(out.parent) == 0o700
    recipient = proc.stdout.strip()
    assert crypt.check_identity(out) == [recipient]
    assert "somewhere other than this machine and its backups" in proc.stderr
    assert os.listdir(out.parent) == ["age-identity.txt"]  # no temp file left


def test_generate_refuses_to_overwrite(run, tmp_path):
    out = tmp_path / "id.txt"
    run("generate", "--out", out, check=0)
    before = out.read_bytes()
    proc = run("generate", "--out", out, check=2)
    assert f"{out} already exists; not overwriting an identity" in proc.stderr
    assert "--force" in proc.stderr
    assert out.read_bytes() == before
    proc = run("generate", "--out", out, "--json", check=2)
    assert json.loads(proc.stdout)["result"] == "error"
    assert out.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["id.txt"]


def test_generate_force_replaces_and_says_so(run, tmp_path):
    out = tmp_path / "id.txt"
    old = run("generate", "--out", out, check=0).stdout.strip()
    proc = run("generate", "--out", out, "--force", check=1)
    new = proc.stdout.strip()
    assert new != old and crypt.check_identity(out) == [new]
    assert f"replaced the identity at {out} (it was {old}" in proc.stderr
    assert mode(out) == 0o600


def test_generate_recipients_file(run, tmp_path):
    rfile = tmp_path / "recipients.txt"
    first = run("generate", "--out", tmp_path / "a.txt", "--recipients", rfile,
                check=0).stdout.strip()
    assert mode(rfile) == 0o644
    rfile.write_text(rfile.read_text().rstrip("\n"))  # a file without a final newline
    proc = run("generate", "--out", tmp_path / "b.txt", "--recipients", rfile, "--json",
               check=0)
    data = json.loads(proc.stdout)
    assert data["added"] is True and data["identity"] == str(tmp_path / "b.txt")
    assert crypt.check_recipients(rfile) == [first, data["recipient"]]


def test_generate_refuses_a_broken_recipients_file(run, tmp_path):
    rfile = recipients_file(tmp_path / "r.txt", "garbage")
    proc = run("generate", "--out", tmp_path / "id.txt", "--recipients", rfile, check=2)
    assert f"recipients file {rfile}, line 1:" in proc.stderr
    assert not (tmp_path / "id.txt").exists() and rfile.read_text() == "garbage\n"


def test_recipient_and_check_recipients(run, tmp_path):
    me = identity(tmp_path / "id.txt")
    assert run("recipient", tmp_path / "id.txt", check=0).stdout == me + "\n"
    data = json.loads(run("recipient", tmp_path / "id.txt", "--json", check=0).stdout)
    assert data["recipients"] == [me] and data["result"] == "ok"
    (tmp_path / "id.txt").chmod(0o640)
    proc = run("recipient", tmp_path / "id.txt", check=2)
    assert f"chmod 600 {tmp_path / 'id.txt'}" in proc.stderr
    rfile = recipients_file(tmp_path / "r.txt", "# mine", me)
    assert run("check-recipients", rfile, check=0).stdout == me + "\n"
    data = json.loads(run("check-recipients", rfile, "--json", check=0).stdout)
    assert data["recipients"] == [me] and data["count"] == 1
    bad = recipients_file(tmp_path / "bad.txt", me, "", "ssh-ed25519 notbase64!")
    proc = run("check-recipients", bad, "--json", check=2)
    assert f"recipients file {bad}, line 3:" in json.loads(proc.stdout)["message"]
    proc = run("check-recipients", tmp_path / "none.txt", check=2)
    assert "does not exist" in proc.stderr


def test_help_texts(run):
    for verb in ("generate", "recipient", "check-recipients"):
        proc = run(verb, "--help", check=0)
        assert "--json" in proc.stdout and "exit codes" in proc.stdout
