"""The sealing upload path on its own (strongroom/upload/seal.py): what stays plain, a
run cut between a complete X.age and its sidecar, a sidecar on the remote that lies, and
what a dry run says. Real age, real rclone against a local folder."""

import hashlib

import pytest

from strongroom.core.remote import Rclone, RemoteError
from strongroom.crypt import policy
from strongroom.upload import Upload
from strongroom.upload.seal import Seal
from tests.seal.helpers import check_sealed, files_of, make_keys, remote_state, staging_left


@pytest.fixture
def bed(tmp_path):
    identity, recipients = make_keys(tmp_path)
    folder = tmp_path / "out"
    (folder / "sub").mkdir(parents=True)
    (folder / "data.bin").write_bytes(b"data " * 1000)
    (folder / "sub" / "manifest.json").write_text('{"user": "content"}\n')
    (folder / "manifest.json").write_text('{"files": {}}\n')
    conf = tmp_path / "rclone.conf"
    conf.write_text("[offsite]\ntype = local\n")
    return tmp_path, identity, recipients, folder, Rclone(str(conf))


def upload(tmp, rclone, recipients, state="state", **kw):
    said = []
    up = Upload(rclone, journal_dir=tmp / state, progress=said.append,
                seal=Seal(recipients))
    return up, said


def test_policy_keeps_only_top_level_metadata_plain():
    for name in ("bundle-manifest.json", "full-1.refs.json", "SHA256SUMS", "REPORT.json",
                 "MANIFEST.txt", "LARGE_FILES.txt", "manifest.json", "k_h_app.db.metadata.json"):
        assert not policy.sealed(name), name
    for name in ("full-1.bundle", "critical-1.tar.zst", "full.tar.zst", "critical/.env",
                 "db/app.db", "app/manifest.json", "app/SHA256SUMS", "weekly_1_2.tar.zst",
                 "k_h_app.db", "secret.age", "x.age.json"):
        assert policy.sealed(name), name


def test_plain_and_sealed_files_go_side_by_side(bed):
    tmp, identity, recipients, folder, rclone = bed
    up, _ = upload(tmp, rclone, recipients)
    out = up.run(folder, f"offsite:{tmp / 'remote'}", immutable=True)
    assert files_of(tmp / "remote") == ["data.bin.age", "data.bin.age.json", "manifest.json",
                                        "sub/manifest.json.age", "sub/manifest.json.age.json"]
    assert sorted(out["sealed"]) == ["data.bin", "sub/manifest.json"]
    assert out["sealed"]["data.bin"]["plain_sha256"] == hashlib.sha256(
        (folder / "data.bin").read_bytes()).hexdigest()
    check_sealed(tmp / "remote", identity, lambda rel: folder / rel, tmp)
    assert not staging_left(tmp / "state")
    assert (tmp / "state" / "seal-staging").stat().st_mode & 0o077 == 0


def test_a_run_cut_before_the_sidecar_sends_only_the_sidecar(bed):
    tmp, identity, recipients, folder, rclone = bed
    up, _ = upload(tmp, rclone, recipients)
    up.run(folder, f"offsite:{tmp / 'remote'}", immutable=True)
    # as a run killed after data.bin.age was proven, before its sidecar went, leaves it
    (tmp / "remote" / "data.bin.age.json").unlink()
    [record] = list((tmp / "state" / "sealed").rglob("done/data.bin.age.json"))
    pending = record.parent.parent / "pending" / record.name
    pending.parent.mkdir(exist_ok=True)
    record.rename(pending)
    before = remote_state(tmp / "remote")
    up, said = upload(tmp, rclone, recipients)
    out = up.run(folder, f"offsite:{tmp / 'remote'}", immutable=True)
    assert out["transferred"] == ["data.bin.age.json"]
    after = remote_state(tmp / "remote")
    assert after["data.bin.age"] == before["data.bin.age"]  # not sealed again, not touched
    assert not any(s.startswith("sealing data.bin") for s in said)
    check_sealed(tmp / "remote", identity, lambda rel: folder / rel, tmp)
    assert not pending.exists() and record.exists()


def test_a_lying_sidecar_on_the_remote_is_no_proof(bed):
    tmp, _identity, recipients, folder, rclone = bed
    up, _ = upload(tmp, rclone, recipients)
    up.run(folder, f"offsite:{tmp / 'remote'}", immutable=True)
    (tmp / "remote" / "data.bin.age.json").write_text('{"format": 1, "name": "other"}')
    before = remote_state(tmp / "remote")
    up, _ = upload(tmp, rclone, recipients, state="fresh-state")  # no records of its own
    with pytest.raises(RemoteError) as exc:
        up.run(folder, f"offsite:{tmp / 'remote'}", immutable=True)
    assert "with other content; --immutable never overwrites them: data.bin.age" \
        in str(exc.value)
    assert remote_state(tmp / "remote") == before  # nothing overwritten
    assert (folder / "data.bin").exists()
    assert not staging_left(tmp / "fresh-state")


def test_a_remote_copy_of_a_sealed_file_that_changed_fails_the_check(bed):
    tmp, _identity, recipients, folder, rclone = bed
    up, _ = upload(tmp, rclone, recipients)
    up.run(folder, f"offsite:{tmp / 'remote'}", immutable=True)
    age = tmp / "remote" / "data.bin.age"
    age.write_bytes(age.read_bytes()[:-10])  # truncated on the remote since
    up, _ = upload(tmp, rclone, recipients)
    with pytest.raises(RemoteError) as exc:
        up.run(folder, f"offsite:{tmp / 'remote'}", immutable=True, delete_local=True)
    assert "failed verification, nothing local deleted" in str(exc.value)
    assert "data.bin.age: missing or differs on the remote" in str(exc.value)
    assert (folder / "data.bin").exists()


def test_a_dry_run_sends_nothing(bed):
    tmp, _identity, recipients, folder, rclone = bed
    up, _ = upload(tmp, rclone, recipients)
    out = up.run(folder, f"offsite:{tmp / 'remote'}", immutable=True, dry_run=True)
    assert "data.bin.age" in out["transferred"] and "manifest.json" in out["transferred"]
    assert out["message"] == ("3 file(s) would copy, 2 of 3 would be sealed for "
                              "recipients.txt")
    assert not (tmp / "remote").exists()


def test_new_recipients_seal_again_and_an_immutable_copy_says_it_is_the_old_key(bed):
    """A rotated key: a plain remote gets the files sealed to the new one (the old key no
    longer opens them); an immutable remote keeps the old copy and the run says so."""
    import json
    import subprocess

    tmp, old_identity, old_recipients, folder, rclone = bed
    new_identity, new_recipients = make_keys(tmp / "new")
    dest = f"offsite:{tmp / 'remote'}"
    upload(tmp, rclone, old_recipients)[0].run(folder, dest)
    # to the new key with the old key's records, then back to the old one with no records
    # (the remote's sidecars say which key sealed each copy)
    for state, identity, recipients, other in (
            ("state", new_identity, new_recipients, old_identity),
            ("fresh-state", old_identity, old_recipients, new_identity)):
        out = upload(tmp, rclone, recipients, state=state)[0].run(folder, dest)
        assert sorted(out["transferred"]) == ["data.bin.age", "data.bin.age.json",
                                              "sub/manifest.json.age",
                                              "sub/manifest.json.age.json"], out
        assert out["other_recipients"] == []
        check_sealed(tmp / "remote", identity, lambda rel: folder / rel, tmp / state)
        side = json.loads((tmp / "remote" / "data.bin.age.json").read_text())
        assert side["recipients"] == [recipients.read_text().split()[-1]]
        opened = subprocess.run(["age", "-d", "-i", str(other),
                                 str(tmp / "remote" / "data.bin.age")], capture_output=True)
        assert opened.returncode != 0 and b"no identity matched" in opened.stderr
    _third_identity, third_recipients = make_keys(tmp / "third")
    before = remote_state(tmp / "remote")
    out = upload(tmp, rclone, third_recipients, state="third-state")[0].run(
        folder, dest, immutable=True)
    assert remote_state(tmp / "remote") == before
    assert out["other_recipients"] == ["data.bin", "sub/manifest.json"]
    assert "0 of 3 sealed for recipients.txt, all verified by hash; 2 stay sealed to "\
        "earlier recipients (the remote copy is immutable" in out["message"], out["message"]
    check_sealed(tmp / "remote", old_identity, lambda rel: folder / rel, tmp / "third-state")
