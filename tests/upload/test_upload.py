"""strongroom upload against a local folder, a real S3 API server, a crypt remote (no
common hash) and a closed port: nothing local is deleted before the remote copy is proven."""

import hashlib
import json
import os
import signal
import subprocess
import threading
import time

import pytest

from strongroom.core.remote import Rclone, RemoteError
from strongroom.upload import Upload
from tests.helpers import ENV, VENV_BIN, strongroom

ENV_NO_CA = {k: v for k, v in ENV.items() if k != "AWS_CA_BUNDLE"}


def tree(base):
    files = {"a.txt": b"alpha\n", "sub/b.bin": os.urandom(70_000),
             "sub/deeper/c d é.txt": b"spaces and accents\n", "empty.txt": b""}
    for rel, data in files.items():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_bytes(data)
    return files


def upload(remotes, tmp_path, *args, check=0):
    return strongroom("--state-dir", tmp_path / "state", "upload", *map(str, args),
                      "--rclone-config", remotes["conf"], "--json", check=check)


def remote_files(remotes, dest, tmp_path):
    """{relative path: bytes} read back from the remote with rclone itself."""
    out = tmp_path / f"readback-{time.monotonic_ns()}"
    subprocess.run(["rclone", "--config", str(remotes["conf"]), "copy", dest, str(out)],
                   check=True, env=ENV_NO_CA, capture_output=True)
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*")
            if p.is_file()}


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_upload_verifies_then_deletes_and_a_rerun_moves_nothing(tmp_path, remotes, kind):
    src = tmp_path / "day"
    files = tree(src)
    dest = remotes[kind]
    out = json.loads(upload(remotes, tmp_path, src, dest, "--immutable").stdout)
    assert out["changed"] is True and out["verified_by"] == "hash"
    assert sorted(out["transferred"]) == sorted(files)
    assert out["bytes_moved"] == sum(len(v) for v in files.values())
    out = json.loads(upload(remotes, tmp_path, src, dest, "--immutable",
                            "--delete-local-after-verify").stdout)
    assert out["changed"] is False and out["transferred"] == []  # nothing moved
    assert sorted(out["deleted"]) == sorted(files) and not src.exists()
    assert remote_files(remotes, dest, tmp_path) == files


def test_a_remote_without_a_common_hash_is_read_back(tmp_path, remotes):
    src = tmp_path / "day"
    files = tree(src)
    out = json.loads(upload(remotes, tmp_path, src, remotes["crypt"],
                            "--delete-local-after-verify").stdout)
    assert out["verified_by"] == "download" and not src.exists()
    assert remote_files(remotes, remotes["crypt"], tmp_path) == files


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_an_altered_or_missing_remote_file_is_caught_and_nothing_is_deleted(tmp_path,
                                                                           remotes, kind):
    src = tmp_path / "day"
    files = tree(src)
    dest = remotes[kind]
    upload(remotes, tmp_path, src, dest)
    rc = ["rclone", "--config", str(remotes["conf"])]
    other = tmp_path / "other.txt"
    other.write_bytes(b"ALPHA\n")  # same size, other content
    subprocess.run([*rc, "copyto", str(other), f"{dest}/a.txt"], check=True, env=ENV_NO_CA)
    subprocess.run([*rc, "deletefile", f"{dest}/sub/b.bin"], check=True, env=ENV_NO_CA)
    problems, how = Upload(Rclone(remotes["conf"])).check(src, dest, sorted(files))
    assert sorted(problems) == ["a.txt: differs on the remote",
                                "sub/b.bin: missing on the remote"] and how == "hash"
    # --immutable: the altered file is an error, never overwritten; nothing local deleted
    proc = upload(remotes, tmp_path, src, dest, "--immutable", "--delete-local-after-verify",
                  check=2)
    assert f"1 file(s) already on {dest} with other content; --immutable never overwrites " \
           "them: a.txt" in proc.stderr
    assert {p.relative_to(src).as_posix(): p.read_bytes() for p in src.rglob("*")
            if p.is_file()} == files
    assert remote_files(remotes, dest, tmp_path)["a.txt"] == b"ALPHA\n"


def test_a_remote_that_damages_what_it_stores_fails_the_check(tmp_path, remotes):
    src = tmp_path / "day"
    files = tree(src)
    store = tmp_path / "remote"
    stop = threading.Event()

    def corrupt():  # flips the first byte of every file that lands on the remote
        seen = set()
        while not stop.is_set():
            for p in store.rglob("*.bin") if store.exists() else []:
                try:
                    data = p.read_bytes()
                    if len(data) == 70_000 and (p, data[0]) not in seen:
                        p.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])
                        seen.add((p, data[0] ^ 0xFF))
                except OSError:
                    pass
            time.sleep(0.002)

    t = threading.Thread(target=corrupt)
    t.start()
    try:
        proc = strongroom("--state-dir", tmp_path / "state", "upload", src, remotes["local"],
                          "--delete-local-after-verify", "--retries", "1",
                          "--rclone-config", remotes["conf"], check=2)
    finally:
        stop.set()
        t.join()
    assert "nothing local deleted" in proc.stderr or "rclone copy to" in proc.stderr
    assert "sub/b.bin" in proc.stderr
    assert {p.relative_to(src).as_posix(): p.read_bytes() for p in src.rglob("*")
            if p.is_file()} == files


def test_a_closed_port_fails_after_bounded_retries_and_deletes_nothing(tmp_path, remotes):
    src = tmp_path / "day"
    files = tree(src)
    started = time.monotonic()
    proc = strongroom("--state-dir", tmp_path / "state", "upload", src, remotes["dead"],
                      "--delete-local-after-verify", "--retries", "2",
                      "--low-level-retries", "1", "--rclone-config", remotes["conf"], check=2)
    assert time.monotonic() - started < 60
    assert f"rclone copy to {remotes['dead']} failed" in proc.stderr
    assert "connection refused" in proc.stderr and "Attempt 2/2" in proc.stderr
    assert len([p for p in src.rglob("*") if p.is_file()]) == len(files)


def test_a_killed_upload_is_completed_by_the_next_run(tmp_path, remotes):
    src = tmp_path / "day"
    src.mkdir()
    big = os.urandom(48 << 20)
    (src / "archive.tar.zst").write_bytes(big)
    (src / "small.txt").write_text("small\n")
    store = tmp_path / "remote"
    argv = [str(VENV_BIN / "strongroom"), "--state-dir", str(tmp_path / "state"), "upload",
            str(src), remotes["local"], "--immutable", "--bwlimit", "8M",
            "--rclone-config", str(remotes["conf"])]
    proc = subprocess.Popen(argv, env=ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = store / "archive.tar.zst"
    deadline = time.time() + 60
    while time.time() < deadline and not (target.exists() and target.stat().st_size > 0):
        time.sleep(0.02)
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert target.exists() and target.read_bytes() != big  # a truncated leftover
    # a run without the journal treats it as someone else's file: never overwritten
    proc = strongroom("--state-dir", tmp_path / "other-state", "upload", src,
                      remotes["local"], "--immutable", "--rclone-config", remotes["conf"],
                      check=2)
    assert "--immutable never overwrites them: archive.tar.zst" in proc.stderr
    # the run with the journal knows it was its own and completes it
    out = json.loads(upload(remotes, tmp_path, src, remotes["local"], "--immutable",
                            "--delete-local-after-verify").stdout)
    assert "archive.tar.zst" in out["transferred"] and out["verified_by"] == "hash"
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(big).digest()
    assert not src.exists()
    assert not list((tmp_path / "state" / "uploads").glob("*.json"))


def test_dry_run_and_bad_input(tmp_path, remotes):
    src = tmp_path / "day"
    tree(src)
    out = json.loads(upload(remotes, tmp_path, src, remotes["local"], "--dry-run",
                            "--delete-local-after-verify").stdout)
    assert out["changed"] is True and len(out["transferred"]) == 4
    assert not (tmp_path / "remote").exists() and len(list(src.rglob("*.txt"))) == 3
    proc = strongroom("upload", tmp_path / "nope", remotes["local"], check=2)
    assert f"{tmp_path / 'nope'} does not exist" in proc.stderr
    proc = strongroom("upload", src, "nosuchremote:x", "--rclone-config", remotes["conf"],
                      check=2)
    assert "rclone copy to nosuchremote:x failed" in proc.stderr
    assert "didn't find section in config file" in proc.stderr


def test_the_snapshot_job_copies_each_snapshot_off_site(tmp_path, remotes):
    src = tmp_path / "project"
    tree(src)
    conf, state = tmp_path / "conf", tmp_path / "state"
    (conf / "jobs").mkdir(parents=True)
    (conf / "jobs/snap.yml").write_text(
        f"name: snap\ntype: snapshot\noptions:\n  source: {src}\n  dest: {tmp_path / 'snaps'}\n"
        f"  immutable: 'off'\n  remote: {remotes['s3']}\n  rclone_config: {remotes['conf']}\n")
    strongroom("--config-dir", conf, "--state-dir", state, "run", "snap", check=0)
    status = json.loads((state / "status/snap.json").read_text())
    snap_id = status["snapshot"]["id"]
    assert status["offsite"]["dest"] == f"{remotes['s3']}/{snap_id}"
    assert status["offsite"]["verified_by"] == "hash"
    copy = remote_files(remotes, f"{remotes['s3']}/{snap_id}", tmp_path)
    folder = tmp_path / "snaps" / snap_id
    assert copy == {p.relative_to(folder).as_posix(): p.read_bytes()
                    for p in folder.rglob("*") if p.is_file()}


def test_a_shorter_foreign_file_is_never_taken_for_our_leftover(tmp_path, remotes):
    src = tmp_path / "day"
    tree(src)
    foreign = tmp_path / "remote" / "a.txt"
    foreign.parent.mkdir()
    foreign.write_bytes(b"x\n")  # shorter than ours, and not written by us
    for _ in range(2):  # the failed run must not leave a journal claiming it
        proc = upload(remotes, tmp_path, src, remotes["local"], "--immutable", check=2)
        assert "--immutable never overwrites them: a.txt" in proc.stderr
    assert foreign.read_bytes() == b"x\n"
    assert not list((tmp_path / "state" / "uploads").glob("*.json"))


def remote_times(remotes, dest):
    """{relative path: ModTime} as rclone lists the remote (its own view, not ours)."""
    proc = subprocess.run(["rclone", "--config", str(remotes["conf"]), "lsjson", "-R",
                           "--files-only", dest], check=True, env=ENV_NO_CA,
                          capture_output=True, text=True)
    return {e["Path"]: e["ModTime"] for e in json.loads(proc.stdout)}


def place_old_copy(remotes, tmp_path, dest, files):
    """{name: bytes} put on the remote dated 2001, as a run killed after the copy and
    before the time was set leaves them (rclone carries the local time over)."""
    old = tmp_path / f"old-{time.monotonic_ns()}"
    for rel, data in files.items():
        (old / rel).parent.mkdir(parents=True, exist_ok=True)
        (old / rel).write_bytes(data)
        os.utime(old / rel, (978307200, 978307200))
    subprocess.run(["rclone", "--config", str(remotes["conf"]), "copy", str(old), dest],
                   check=True, env=ENV_NO_CA, capture_output=True)
    return remote_times(remotes, dest)


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_our_content_under_another_time_is_already_there_not_a_conflict(tmp_path, remotes,
                                                                        kind):
    src = tmp_path / "day"
    files = tree(src)
    dest = remotes[kind]
    before = place_old_copy(remotes, tmp_path, dest, {"a.txt": files["a.txt"]})
    out = json.loads(upload(remotes, tmp_path, src, dest, "--immutable",
                            "--delete-local-after-verify").stdout)
    assert out["verified_by"] == "hash" and "a.txt" not in out["transferred"]
    assert sorted(out["transferred"]) == sorted(set(files) - {"a.txt"})
    assert sorted(out["deleted"]) == sorted(files) and not src.exists()
    assert remote_files(remotes, dest, tmp_path) == files
    assert remote_times(remotes, dest)["a.txt"] == before["a.txt"]  # left as it was
    assert not list((tmp_path / "state" / "uploads").glob("*.json"))


def test_other_content_beside_our_own_under_another_time_is_still_refused(tmp_path, remotes):
    src = tmp_path / "day"
    files = tree(src)
    dest = remotes["local"]
    other = bytes([files["sub/b.bin"][0] ^ 1]) + files["sub/b.bin"][1:]  # same size
    before = place_old_copy(remotes, tmp_path, dest, {"a.txt": files["a.txt"],
                                                       "sub/b.bin": other})
    proc = upload(remotes, tmp_path, src, dest, "--immutable", "--delete-local-after-verify",
                  check=2)
    assert f"1 file(s) already on {dest} with other content; --immutable never overwrites " \
           "them: sub/b.bin\n" in proc.stderr
    assert {p.relative_to(src).as_posix(): p.read_bytes() for p in src.rglob("*")
            if p.is_file()} == files  # nothing local deleted
    held = remote_files(remotes, dest, tmp_path)
    assert held["sub/b.bin"] == other and held["a.txt"] == files["a.txt"]
    times = remote_times(remotes, dest)
    assert {n: times[n] for n in before} == before


def test_copy_new_takes_our_content_under_another_time_and_refuses_other(tmp_path, remotes):
    src = tmp_path / "day"
    files = tree(src)
    dest, rc = remotes["local"], Rclone(remotes["conf"])
    before = place_old_copy(remotes, tmp_path, dest, {"a.txt": files["a.txt"]})
    rc.copy_new(src, dest, sorted(files))
    assert remote_files(remotes, dest, tmp_path) == files
    assert remote_times(remotes, dest)["a.txt"] == before["a.txt"]
    (tmp_path / "remote" / "a.txt").write_bytes(b"ALPHA\n")  # other content, same size
    with pytest.raises(RemoteError, match="immutable file modified"):
        rc.copy_new(src, dest, sorted(files))
    assert (tmp_path / "remote" / "a.txt").read_bytes() == b"ALPHA\n"
    assert (src / "a.txt").read_bytes() == files["a.txt"]
