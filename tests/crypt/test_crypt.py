"""strongroom.crypt over the real age binaries: round trips, and every way a seal or an
open can fail. Each failure names what went wrong, leaves its source as it was and leaves
nothing at the destination (no temp file either)."""

import json
import os
import subprocess

import pytest

from strongroom import crypt
from tests.crypt.helpers import identity, listing, mode, recipients_file, sha


@pytest.fixture
def sealed(tmp_path):
    """A 3 MiB file (several age chunks) sealed to one identity."""
    keys, work = tmp_path / "keys", tmp_path / "work"
    keys.mkdir()
    work.mkdir()
    me = identity(keys / "id.txt")
    rfile = recipients_file(keys / "recipients.txt", me)
    src = work / "archive.tar"
    src.write_bytes(os.urandom(3 << 20) + b"tail")
    info = crypt.encrypt_file(src, work / "archive.tar.age", rfile)
    return {"keys": keys, "work": work, "id": keys / "id.txt", "me": me, "rfile": rfile,
            "src": src, "age": work / "archive.tar.age", "info": info}


def fails(exc_type, call, folder, *args, **kw):
    """Run `call`; it must raise exc_type and leave `folder` exactly as it was."""
    before = listing(folder)
    with pytest.raises(exc_type) as err:
        call(*args, **kw)
    assert listing(folder) == before, "a failure changed or left files behind"
    return str(err.value)


def test_round_trip_bytes_hashes_and_modes(sealed):
    s = sealed
    info = s["info"]
    assert info == {"plain_sha256": sha(s["src"]), "plain_size": (3 << 20) + 4,
                    "age_sha256": sha(s["age"]), "age_size": s["age"].stat().st_size}
    assert mode(s["age"]) == 0o600
    assert crypt.is_age_file(s["age"]) and not crypt.is_age_file(s["src"])
    assert s["src"].read_bytes() not in s["age"].read_bytes()
    out = s["work"] / "back.tar"
    got = crypt.decrypt_file(s["age"], out, s["id"], expect_plain_sha256=info["plain_sha256"],
                             expect_age_sha256=info["age_sha256"])
    assert got == info
    assert out.read_bytes() == s["src"].read_bytes()
    assert mode(out) == 0o600
    assert sorted(os.listdir(s["work"])) == ["archive.tar", "archive.tar.age", "back.tar"]
    # what a user types by hand opens it too
    plain = subprocess.run(["age", "-d", "-i", str(s["id"]), str(s["age"])],
                           capture_output=True, check=True).stdout
    assert plain == s["src"].read_bytes()


def test_empty_file_round_trip(sealed, tmp_path):
    src = sealed["work"] / "empty"
    src.write_bytes(b"")
    info = crypt.encrypt_file(src, sealed["work"] / "empty.age", sealed["rfile"])
    assert info["plain_size"] == 0 and info["plain_sha256"] == sha(src)
    crypt.decrypt_file(sealed["work"] / "empty.age", tmp_path / "e", sealed["id"],
                       expect_plain_sha256=info["plain_sha256"])
    assert (tmp_path / "e").read_bytes() == b""


def test_multiple_recipients_each_opens(tmp_path):
    a, b = identity(tmp_path / "a.txt"), identity(tmp_path / "b.txt")
    rfile = recipients_file(tmp_path / "r.txt", "# the laptop", a, "", "# the safe", b, a)
    assert crypt.check_recipients(rfile) == [a, b]
    src = tmp_path / "db.sqlite"
    src.write_bytes(b"rows" * 1000)
    crypt.encrypt_file(src, tmp_path / "db.sqlite.age", rfile)
    for who in ("a", "b"):
        crypt.decrypt_file(tmp_path / "db.sqlite.age", tmp_path / f"out-{who}",
                           tmp_path / f"{who}.txt")
        assert (tmp_path / f"out-{who}").read_bytes() == src.read_bytes()
    both = tmp_path / "both.txt"
    both.write_text((tmp_path / "a.txt").read_text() + (tmp_path / "b.txt").read_text())
    both.chmod(0o600)
    assert crypt.check_identity(both) == [a, b]


def test_ssh_ed25519_recipient(tmp_path):
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "me@host", "-f",
                    str(key)], check=True)
    pub = key.with_suffix(".pub").read_text().strip()
    rfile = recipients_file(tmp_path / "r.txt", pub)
    found = crypt.check_recipients(rfile)
    assert found == [" ".join(pub.split()[:2])]  # without its comment
    assert crypt.check_identity(key) == found  # the sidecar names what the key is for
    src = tmp_path / "notes"
    src.write_bytes(b"hello\n" * 50)
    info = crypt.encrypt_file(src, tmp_path / "notes.age", rfile)
    crypt.decrypt_file(tmp_path / "notes.age", tmp_path / "out", key,
                       expect_plain_sha256=info["plain_sha256"])
    assert (tmp_path / "out").read_bytes() == src.read_bytes()


def test_wrong_identity(sealed):
    other = identity(sealed["keys"] / "other.txt")
    msg = fails(crypt.WrongIdentity, crypt.decrypt_file, sealed["work"], sealed["age"],
                sealed["work"] / "out", sealed["keys"] / "other.txt",
                recipients=[sealed["me"]])
    assert str(sealed["age"]) in msg and "sealed to other keys" in msg
    assert other in msg and sealed["me"] in msg


def test_missing_identity(sealed):
    msg = fails(crypt.MissingIdentity, crypt.decrypt_file, sealed["work"], sealed["age"],
                sealed["work"] / "out", sealed["keys"] / "nope.txt")
    assert "nope.txt does not exist" in msg
    msg = fails(crypt.MissingIdentity, crypt.decrypt_file, sealed["work"], sealed["age"],
                sealed["work"] / "out", None)
    assert "no identity given" in msg
    msg = fails(crypt.MissingIdentity, crypt.decrypt_file, sealed["work"], sealed["age"],
                sealed["work"] / "out", sealed["keys"] / "nope.txt", recipients=[sealed["me"]])
    assert msg.startswith(f"{sealed['age']} is sealed to {sealed['me']}: ")


def test_identity_readable_by_others(sealed):
    sealed["id"].chmod(0o644)
    msg = fails(crypt.CryptError, crypt.decrypt_file, sealed["work"], sealed["age"],
                sealed["work"] / "out", sealed["id"])
    assert f"chmod 600 {sealed['id']}" in msg
    assert "AGE-SECRET-KEY" not in msg


def test_not_an_identity(sealed):
    sealed["rfile"].chmod(0o600)  # the recipients file given by mistake
    msg = fails(crypt.CryptError, crypt.decrypt_file, sealed["work"], sealed["age"],
                sealed["work"] / "out", sealed["rfile"])
    assert "not an age identity file" in msg


def test_a_readable_recipients_file_given_as_the_identity_is_named_not_sent_to_chmod(sealed):
    sealed["rfile"].chmod(0o644)  # as key generate leaves a recipients file
    msg = fails(crypt.CryptError, crypt.decrypt_file, sealed["work"], sealed["age"],
                sealed["work"] / "out", sealed["rfile"])
    assert msg == (f"identity file {sealed['rfile']} holds no private key (a recipients file "
                   "of public keys?); give the identity (AGE-SECRET-KEY-1..., as age-keygen "
                   "writes it), not the recipients file")
    assert not (sealed["work"] / "out").exists()


def test_truncated_age_file(sealed):
    bad = sealed["work"] / "cut.age"
    bad.write_bytes(sealed["age"].read_bytes()[:200_000])
    msg = fails(crypt.Damaged, crypt.decrypt_file, sealed["work"], bad, sealed["work"] / "out",
                sealed["id"])
    assert str(bad) in msg and "damaged" in msg


def flipped(sealed, name, at):
    data = bytearray(sealed["age"].read_bytes())
    data[at(data)] ^= 0x01
    path = sealed["work"] / name
    path.write_bytes(bytes(data))
    return path


def test_bit_flip_in_header(sealed):
    bad = flipped(sealed, "hdr.age", lambda d: d.index(b"\n--- ") + 8)  # the header MAC
    msg = fails(crypt.Damaged, crypt.decrypt_file, sealed["work"], bad, sealed["work"] / "out",
                sealed["id"])
    assert str(bad) in msg and "header" in msg
    # with the sidecar's hash, caught before the key is used
    msg = fails(crypt.Damaged, crypt.decrypt_file, sealed["work"], bad, sealed["work"] / "out",
                sealed["id"], expect_age_sha256=sealed["info"]["age_sha256"])
    assert "SHA-256" in msg and "nothing was decrypted" in msg


def test_bit_flip_in_payload(sealed):
    bad = flipped(sealed, "body.age", lambda d: len(d) // 2)
    msg = fails(crypt.Damaged, crypt.decrypt_file, sealed["work"], bad, sealed["work"] / "out",
                sealed["id"])
    assert str(bad) in msg and "payload" in msg


def test_not_an_age_file(sealed):
    msg = fails(crypt.Damaged, crypt.decrypt_file, sealed["work"], sealed["src"],
                sealed["work"] / "out", sealed["id"])
    assert str(sealed["src"]) in msg and "not an age file" in msg
    assert not crypt.is_age_file(sealed["src"])
    # a plaintext stored under an .age name is not quoted back (age's own error would)
    plain = sealed["work"] / "stored.env.age"
    plain.write_text("DB_PASS=CANARY-quoted\n")
    msg = fails(crypt.Damaged, crypt.decrypt_file, sealed["work"], plain,
                sealed["work"] / "out", sealed["id"])
    assert "it does not start with the age header" in msg and "CANARY" not in msg
    assert not (sealed["work"] / "out").exists()


def test_plaintext_hash_mismatch(sealed):
    msg = fails(crypt.Damaged, crypt.decrypt_file, sealed["work"], sealed["age"],
                sealed["work"] / "out", sealed["id"], expect_plain_sha256="0" * 64)
    assert "not to the plaintext that was sealed" in msg


def test_recipients_file_that_does_not_parse(sealed):
    rfile = recipients_file(sealed["keys"] / "bad.txt", "# ok", sealed["me"], "age1nope")
    msg = fails(crypt.CryptError, crypt.encrypt_file, sealed["work"], sealed["src"],
                sealed["work"] / "new.age", rfile)
    assert msg.startswith(f"recipients file {rfile}, line 3: not an age recipient")
    assert msg.endswith("its 8 characters are not shown, in case they are a secret")
    # the line itself is not shown: it may be a password pasted into the wrong file
    assert "age1nope" not in msg


def test_a_password_in_the_recipients_file_is_not_echoed(sealed):
    rfile = recipients_file(sealed["keys"] / "pw.txt", sealed["me"], "hunter2-CANARY-pw")
    msg = fails(crypt.CryptError, crypt.encrypt_file, sealed["work"], sealed["src"],
                sealed["work"] / "new.age", rfile)
    assert "line 2: not an age recipient" in msg and "its 17 characters" in msg
    assert "CANARY" not in msg and not (sealed["work"] / "new.age").exists()


@pytest.mark.parametrize("shape", ["\ufeff{key}", "{lower}", "key={key}", "{key}\r"])
def test_a_disguised_private_key_in_the_recipients_file_is_named_not_shown(sealed, shape):
    key = [ln for ln in sealed["id"].read_text().splitlines()
           if ln.startswith("AGE-SECRET-KEY-")][0]
    rfile = sealed["keys"] / "oops2.txt"
    rfile.write_bytes(shape.format(key=key, lower=key.lower()).encode() + b"\n")
    msg = fails(crypt.CryptError, crypt.encrypt_file, sealed["work"], sealed["src"],
                sealed["work"] / "new.age", rfile)
    assert "line 1: this is a private key" in msg
    assert key[15:40] not in msg.upper() and not (sealed["work"] / "new.age").exists()


def test_recipients_line_with_spaces(sealed):
    rfile = recipients_file(sealed["keys"] / "sp.txt", sealed["me"], "  # indented")
    msg = fails(crypt.CryptError, crypt.encrypt_file, sealed["work"], sealed["src"],
                sealed["work"] / "new.age", rfile)
    assert msg.startswith(f"recipients file {rfile}, line 2: spaces")
    # age reads the file the same way
    r = subprocess.run(["age", "-e", "-R", str(rfile), "-o", "/dev/null", str(sealed["src"])],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "line 2" in r.stderr


def test_private_key_in_recipients_file(sealed):
    rfile = sealed["keys"] / "oops.txt"
    rfile.write_text(sealed["id"].read_text())
    msg = fails(crypt.CryptError, crypt.encrypt_file, sealed["work"], sealed["src"],
                sealed["work"] / "new.age", rfile)
    assert "line 3: this is a private key" in msg and "AGE-SECRET-KEY" not in msg


@pytest.mark.parametrize("text", ["", "# only a comment\n\n"])
def test_empty_recipients_file(sealed, text):
    rfile = sealed["keys"] / "empty.txt"
    rfile.write_text(text)
    msg = fails(crypt.CryptError, crypt.encrypt_file, sealed["work"], sealed["src"],
                sealed["work"] / "new.age", rfile)
    assert "holds no recipients" in msg


def test_missing_recipients_file(sealed):
    msg = fails(crypt.CryptError, crypt.encrypt_file, sealed["work"], sealed["src"],
                sealed["work"] / "new.age", sealed["keys"] / "absent.txt")
    assert "does not exist" in msg


def test_age_not_installed(sealed, tmp_path, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    msg = fails(crypt.CryptError, crypt.encrypt_file, sealed["work"], sealed["src"],
                sealed["work"] / "new.age", sealed["rfile"])
    assert msg == ("age is not installed: apt install age (Debian/Ubuntu) or brew install age "
                   "(macOS)")


def test_sidecar_round_trip_and_hostile_sidecars(sealed, tmp_path):
    body = crypt.sidecar(sealed["info"], "archive.tar", [sealed["me"]])
    side = json.loads(body)
    assert side == {"format": 1, "name": "archive.tar", "recipients": [sealed["me"]],
                    **sealed["info"]}
    assert crypt.read_sidecar(body, "archive.tar") == side
    path = tmp_path / "archive.tar.age.json"
    path.write_bytes(body)
    assert crypt.read_sidecar(path, "archive.tar") == side
    bad = [b"{not json", b"[]", json.dumps({**side, "format": 2}).encode(),
           json.dumps({**side, "name": "../etc/passwd"}).encode(),
           json.dumps({**side, "plain_sha256": "xyz"}).encode(),
           json.dumps({**side, "age_size": True}).encode(),
           json.dumps({**side, "recipients": "age1"}).encode(),
           b" " * (70 << 10)]
    for data in bad:
        with pytest.raises(crypt.Damaged):
            crypt.read_sidecar(data, "archive.tar")
    with pytest.raises(crypt.Damaged, match="is missing"):
        crypt.read_sidecar(tmp_path / "absent.json", "archive.tar")



@pytest.mark.parametrize("way", ["encrypt", "decrypt"])
def test_interrupted_midway_leaves_nothing(sealed, tmp_path, way):
    """A KeyboardInterrupt (or a job's Terminated) in the middle of a stream: age is
    stopped and the temp file removed, as for any other failure."""
    import signal

    big = tmp_path / "big"
    with open(big, "wb") as fh:  # sparse: far more than can be streamed before the alarm
        fh.truncate((4 << 30) if way == "encrypt" else (256 << 20))
    out = tmp_path / "out"
    out.mkdir()
    if way == "encrypt":
        call, args = crypt.encrypt_file, (big, out / "big.age", sealed["rfile"])
    else:
        subprocess.run(["age", "-e", "-R", str(sealed["rfile"]), "-o", str(tmp_path / "b.age"),
                        str(big)], check=True)
        call, args = crypt.decrypt_file, (tmp_path / "b.age", out / "big", sealed["id"])
    size = os.path.getsize(args[0])

    seen = []

    def stop(*_):  # only once the temp file is being written: mid-stream
        seen.extend(os.listdir(out))
        if not seen:
            signal.setitimer(signal.ITIMER_REAL, 0.01)
            return
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, stop)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.01)
        with pytest.raises(KeyboardInterrupt):
            call(*args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert seen and seen[0].startswith(".tmp-")
    assert os.listdir(out) == []  # neither the file nor its temp
    assert os.path.getsize(args[0]) == size
