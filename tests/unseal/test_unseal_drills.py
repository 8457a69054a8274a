"""Drills of sealed remotes: with an identity (the drilled job's own, or the drill's) every
kind is restored from the remote alone and its artifact says what it was decrypted with;
without one the ciphertexts are checked against their sidecars, and the artifact says the
plaintext was not checked, a warning rather than a failure; a damaged X.age fails its
artifact naming it, either way. The identity is said in no output, log or status."""

import json
import shutil

import pytest

from strongroom import jobs
from tests.seal.helpers import write_job
from tests.unseal.helpers import cli, make_place, secret_of
from tests.unseal.test_unseal_restores import Quiet, victim

DRILLED = {"bundles": "bundle_chain", "snap": "snapshot", "daily": "day", "weekly": "rollup",
           "db": "db_version"}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    place = make_place(tmp_path_factory.mktemp("drills"), Quiet())
    # the same jobs without an identity: their drills have no key
    for name in DRILLED:
        text = (place["conf"] / "jobs" / f"{name}.yml").read_text()
        lines = [line for line in text.splitlines() if not line.startswith("  identity:")]
        lines[0] = f"name: {name}-nokey"
        (place["conf"] / "jobs" / f"{name}-nokey.yml").write_text("\n".join(lines) + "\n")
    return place


def drill(capsys, place, *args):
    code, out, err = cli(capsys, place, "drill", "--source", "remote", "--json", *args)
    return code, json.loads(out), err


@pytest.mark.parametrize("job", sorted(DRILLED))
def test_a_drill_with_the_jobs_identity_decrypts(made, capsys, job):
    code, out, err = drill(capsys, made, "--job", job)
    arts = [a for a in out["artifacts"] if a["kind"] == DRILLED[job]]
    assert arts and code == 0, out["output"] + err
    for art in arts:
        assert art["result"] == "ok", art
        assert f"decrypted with {made['public']}" in art["message"], art


@pytest.mark.parametrize("job", sorted(DRILLED))
def test_a_drill_without_a_key_checks_the_ciphertext(made, capsys, job):
    code, out, err = drill(capsys, made, "--job", f"{job}-nokey")
    arts = out["artifacts"]
    assert arts and code == 1, out["output"] + err
    for art in arts:
        assert art["result"] == "warning", art
        assert "plaintext was not checked (no key" in art["message"], art
        assert "match their sidecars" in art["message"], art


def test_the_drills_own_identity_serves_jobs_without_one(made, capsys):
    code, out, err = drill(capsys, made, "--job", "snap-nokey", "--identity",
                           made["identity"])
    assert code == 0, out["output"] + err
    assert all(f"decrypted with {made['public']}" in a["message"] for a in out["artifacts"])


def test_a_drill_job_passes_its_identity_and_says_nothing_of_it(made, capsys):
    write_job(made["conf"], "drill", "drill", {"jobs": ["snap-nokey", "db-nokey"],
                                               "source": "remote",
                                               "identity": str(made["identity"])})
    code, status, output = jobs.run(made["paths"], "drill")
    said = capsys.readouterr()
    assert code == 0, output
    assert output.count(f"decrypted with {made['public']}") >= 2 or \
        all("decrypted with" in a["message"] for a in status["artifacts"]), output
    key = secret_of(made["identity"])
    for text in (output, said.out, said.err, made["paths"].log("drill").read_text(),
                 made["paths"].status("drill").read_text()):
        assert key not in text


@pytest.mark.parametrize("job,kind", [("bundles", "bundle"), ("snap", "full"),
                                      ("daily", "day"), ("weekly", "rollup"), ("db", "db")])
@pytest.mark.parametrize("key", ["identity", "nokey"])
def test_a_bit_flipped_copy_fails_its_artifact(made, tmp_path, capsys, job, kind, key):
    from tests.unseal.test_unseal_restores import remote_of

    remote = made["tmp"] / remote_of(kind)
    kept = tmp_path / "kept"
    shutil.copytree(remote, kept, symlinks=True)
    rel = victim(made, kind)
    try:
        data = bytearray((remote / rel).read_bytes())
        data[len(data) // 2] ^= 0x01
        (remote / rel).write_bytes(bytes(data))
        code, out, err = drill(capsys, made, "--job", job if key == "identity" else
                               f"{job}-nokey")
        bad = [a for a in out["artifacts"] if a["result"] == "error"]
        assert code == 2 and bad, out["output"] + err
        assert any(rel.split("/")[-1].removesuffix(".age") in a["message"]
                   and "SHA-256" in a["message"] for a in bad), bad
    finally:
        shutil.rmtree(remote)
        shutil.copytree(kept, remote, symlinks=True)


def test_reverification_adopts_a_sealed_object_by_its_sidecar(made, tmp_path, capsys):
    """With its ledger gone, each X.age is expected to be what its sidecar records (no key
    needed): a bit flip is damage naming it, said to leave the plaintext unchecked."""
    from tests.unseal.test_unseal_restores import remote_of

    ledger = made["state"] / "verify" / "snap.json"
    assert ledger.is_file()
    ledger.unlink()
    code, out, err = cli(capsys, made, "reverify", "snap", "--all", "--json")
    assert code == 0, out + err
    entries = json.loads(ledger.read_text())
    entries = entries.get("objects", entries)
    sealed = [e for n, e in _flat(entries) if n.endswith(".age")]
    assert sealed and all("sidecar" in e.get("adopted", "") for e in sealed), entries
    remote = made["tmp"] / remote_of("full")
    kept = tmp_path / "kept"
    shutil.copytree(remote, kept, symlinks=True)
    rel = victim(made, "critical")
    try:
        ledger.unlink()
        data = bytearray((remote / rel).read_bytes())
        data[len(data) // 2] ^= 0x01
        (remote / rel).write_bytes(bytes(data))
        code, out, err = cli(capsys, made, "reverify", "snap", "--all", "--json")
        assert code == 2, out + err
        assert "differs from its sidecar" in out and "plaintext was not checked" in out, out
        assert ".env.age" in out
    finally:
        shutil.rmtree(remote)
        shutil.copytree(kept, remote, symlinks=True)
        ledger.unlink(missing_ok=True)


def _flat(entries):
    """(name, entry) of a ledger's objects, however it nests them by remote."""
    for name, value in entries.items():
        if isinstance(value, dict) and "sha256" in value:
            yield name, value
        elif isinstance(value, dict):
            yield from ((f"{name}/{n}", e) for n, e in _flat(value))


def test_a_drill_of_a_store_given_on_the_command_line(made, tmp_path, capsys):
    remote = f"offsite:{made['tmp'] / 'r-bundles'}"
    args = ["--store", tmp_path / "no-store", "--remote", remote,
            "--rclone-config", made["conf"] / "rclone.conf"]
    code, out, err = drill(capsys, made, *args, "--identity", made["identity"])
    assert code == 0, out["output"] + err
    assert f"decrypted with {made['public']}" in out["artifacts"][0]["message"]
    code, out, err = drill(capsys, made, *args)
    assert code == 1 and out["artifacts"][0]["result"] == "warning", out["output"] + err
    assert "plaintext was not checked" in out["artifacts"][0]["message"]
