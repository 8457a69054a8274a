"""restic jobs with the real restic: backup -> restore round trip, rotation, the password."""

import base64
import hashlib
import json
import os

from strongroom import restic
from strongroom.core.errors import INCOMPLETE, OK
from strongroom.restic import Restic
from tests.helpers import ENV, strongroom

CANARY = "restic-canary-7d31"


def setup(tmp_path, repository=None, rclone_config=None):
    src = tmp_path / "src"
    (src / "docs").mkdir(parents=True)
    (src / "docs/a.md").write_text("a\n")
    (src / "docs/b.bin").write_bytes(os.urandom(50_000))
    (src / "cache").mkdir()
    (src / "cache/junk.tmp").write_text("junk\n")
    pw = tmp_path / "restic.pw"
    pw.write_text(CANARY + "\n")
    pw.chmod(0o600)
    conf, state = tmp_path / "conf", tmp_path / "state"
    (conf / "jobs").mkdir(parents=True)
    repo = repository or str(tmp_path / "repo")
    (conf / "jobs/weekly-restic.yml").write_text(
        f"name: weekly-restic\ntype: restic\nschedule: weekly sun 04:00\noptions:\n"
        f"  repository: {repo}\n  password_file: {pw}\n  paths: [{src}]\n"
        f"  exclude: ['*.tmp']\n  check_subsets: 3\n"
        + (f"  rclone_config: {rclone_config}\n" if rclone_config else ""))
    return src, pw, ["--config-dir", conf, "--state-dir", state], state


def tree(d):
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in d.rglob("*") if p.is_file()}


def status(state):
    return json.loads((state / "status/weekly-restic.json").read_text())


def test_backup_restore_round_trip_and_the_check_rotates(tmp_path):
    src, _, base, state = setup(tmp_path)
    subsets = []
    for _ in range(4):
        proc = strongroom(*base, "run", "weekly-restic", check=0)
        s = status(state)
        subsets.append(s["restic"]["checked_subset"])
        for text in (proc.stdout, proc.stderr, json.dumps(s)):
            assert CANARY not in text
    assert subsets == ["1/3", "2/3", "3/3", "1/3"]  # all data re-read every 3 runs
    assert status(state)["restic"]["files_new"] == 0  # nothing new after the first
    logs = "".join(p.read_text() for p in (state / "log").glob("*.log"))
    assert CANARY not in logs
    target = tmp_path / "restored"
    proc = strongroom(*base, "restic", "restore", "latest", "--job", "weekly-restic",
                      "--target", target, check=0)
    assert "verified by restic" in proc.stdout
    restored = target / str(src).lstrip("/")
    expected = {k: v for k, v in tree(src).items() if not k.endswith(".tmp")}
    assert tree(restored) == expected
    proc = strongroom(*base, "restic", "restore", "latest", "--job", "weekly-restic",
                      "--target", target, check=2)
    assert "is not empty; restore goes into a new directory" in proc.stderr


def test_through_an_rclone_remote(tmp_path):
    rc = tmp_path / "rclone.conf"
    rc.write_text("[vault]\ntype = local\n")
    src, _, base, state = setup(tmp_path, f"rclone:vault:{tmp_path / 'remote-repo'}", rc)
    strongroom(*base, "run", "weekly-restic", check=0)
    assert (tmp_path / "remote-repo" / "config").is_file()
    target = tmp_path / "restored"
    strongroom(*base, "restic", "restore", "latest", "--job", "weekly-restic", "--target",
               target, check=0)
    assert tree(target / str(src).lstrip("/"))["docs/a.md"] == b"a\n"


def test_a_loose_password_file_or_a_wrong_password_is_refused(tmp_path):
    src, pw, base, state = setup(tmp_path)
    pw.chmod(0o644)
    strongroom(*base, "run", "weekly-restic", check=2)
    assert "is readable by others (mode 0644); chmod 600 it" in status(state)["message"]
    assert not (tmp_path / "repo").exists()
    pw.chmod(0o600)
    strongroom(*base, "run", "weekly-restic", check=0)
    pw.write_text("not the password\n")
    strongroom(*base, "run", "weekly-restic", check=2)
    msg = status(state)["message"]
    assert "wrong password (or no key) for this repository" in msg
    assert CANARY not in msg and "not the password" not in msg
    env = dict(ENV, RESTIC_PASSWORD=CANARY)
    proc = strongroom(*base, "restic", "restore", "latest", "--job", "weekly-restic",
                      "--target", tmp_path / "t", env=env, check=2)
    assert "wrong password" in proc.stderr  # the environment's password is never used


def aes_ctr(key, iv, data):
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    enc = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return enc.update(data) + enc.finalize()


def seal(enc_key, mac_k, mac_r, plain):
    """restic's authenticated encryption: IV, AES-256-CTR, Poly1305-AES over the text."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.poly1305 import Poly1305

    iv = os.urandom(16)
    text = aes_ctr(enc_key, iv, plain)
    ecb = Cipher(algorithms.AES(mac_k), modes.ECB()).encryptor()  # noqa: S305 (one block)
    return iv + text + Poly1305.generate_tag(mac_r + ecb.update(iv) + ecb.finalize(), text)


def quick_repository(path, password):
    """An empty restic repository (format 2), laid out as `restic init` makes it, but with
    a key of cheap scrypt parameters: init calibrates them to half a second for every
    command, which a test that runs a dozen can't afford."""
    master = {"encrypt": os.urandom(32), "k": os.urandom(16), "r": os.urandom(16)}
    salt = os.urandom(64)
    derived = hashlib.scrypt(password.encode(), salt=salt, n=1024, r=1, p=1, dklen=64)
    plain = json.dumps({"mac": {"k": b64(master["k"]), "r": b64(master["r"])},
                        "encrypt": b64(master["encrypt"])}).encode()
    key = json.dumps({"created": "2026-01-01T00:00:00Z", "username": "t", "hostname": "t",
                      "kdf": "scrypt", "N": 1024, "r": 1, "p": 1, "salt": b64(salt),
                      "data": b64(seal(derived[:32], derived[32:48], derived[48:], plain))})
    for sub in ("keys", "snapshots", "index", "locks", *(f"data/{i:02x}" for i in range(256))):
        (path / sub).mkdir(parents=True)
    (path / "keys" / hashlib.sha256(key.encode()).hexdigest()).write_text(key)
    config = json.dumps({"version": 2, "id": os.urandom(32).hex(),
                         "chunker_polynomial": "3da3358b4dc173"}).encode()
    (path / "config").write_bytes(seal(master["encrypt"], master["k"], master["r"], config))
    return path


def b64(data):
    return base64.b64encode(data).decode()


def quick_job(tmp_path, **options):
    src = tmp_path / "src"
    src.mkdir()
    (src / "notes.txt").write_text("the latest notes\n")
    pw = tmp_path / "restic.pw"
    pw.write_text(CANARY + "\n")
    pw.chmod(0o600)
    repo = quick_repository(tmp_path / "repo", CANARY)
    opts = {"repository": str(repo), "password_file": str(pw), "paths": [str(src)],
            "keep_weekly": 1, "check_subsets": 1, **options}
    return src, opts, Restic(str(repo), pw, cache_dir=tmp_path / "cache")


def snapshot_ids(r):
    proc = r.run("snapshots", "--no-lock", "--json")
    return {s["short_id"]: s for s in json.loads(proc.stdout)}  # as backup names them


def test_forget_keeps_the_snapshot_just_made_and_what_others_took(tmp_path):
    src, opts, r = quick_job(tmp_path)
    # taken while the clock ran ahead: the newest week by its date
    r.run("backup", "-q", "--tag", "strongroom", "--time", "2031-01-06 00:00:00", str(src))
    r.run("backup", "-q", "--time", "2020-01-06 00:00:00", str(src))  # by hand, no tag
    (src / "notes.txt").write_text("newer notes\n")
    code, rep = restic.run_job(opts, tmp_path / "state", "weekly-restic")
    held = snapshot_ids(r)
    assert code == OK and rep["snapshot"] in held and len(held) == 3
    assert sorted(s["time"][:4] for s in held.values()) == ["2020", "2026", "2031"]
    restic.restore(opts, tmp_path / "state", rep["snapshot"], tmp_path / "out")
    assert (tmp_path / "out" / str(src).lstrip("/") / "notes.txt").read_text() == \
        "newer notes\n"
    assert rep["incomplete"] is False and rep["forgotten"] == 0


def too_deep(folder):
    """A file restic cannot read: its path is longer than the system takes (made through
    directory descriptors, as a deep node_modules tree gets made)."""
    fd = os.open(folder, os.O_RDONLY)
    for _ in range(22):
        os.mkdir("d" * 200, dir_fd=fd)
        inner = os.open("d" * 200, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = inner
    os.close(os.open("far.txt", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd))
    os.close(fd)


def test_an_incomplete_run_keeps_the_last_complete_snapshot(tmp_path):
    src, opts, r = quick_job(tmp_path)
    code, good = restic.run_job(opts, tmp_path / "state", "weekly-restic")
    assert code == OK
    # the same week, a file it cannot read: restic's newest of the week is incomplete
    too_deep(src)
    code, rep = restic.run_job(opts, tmp_path / "state", "weekly-restic")
    assert code == INCOMPLETE and rep["incomplete"] is True
    assert set(snapshot_ids(r)) == {good["snapshot"], rep["snapshot"]}
    assert rep["forgotten"] == 0
    restic.restore(opts, tmp_path / "state", good["snapshot"], tmp_path / "out")
    assert (tmp_path / "out" / str(src).lstrip("/") / "notes.txt").read_text() == \
        "the latest notes\n"
