"""restic jobs with the real restic: backup -> restore round trip, rotation, the password."""

import json
import os

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
