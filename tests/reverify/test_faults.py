"""Re-verification of remote copies against real damage: a byte flipped in place, a deleted
object, a remote that is gone, a run killed mid-way, a hostile ledger. Each asserts the
message and that nothing was lost."""

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from strongroom import reverify
from strongroom.core.errors import ERROR, OK, WARNING
from strongroom.core.remote import Rclone, RemoteError
from strongroom.upload import Upload
from tests.helpers import strongroom
from tests.reverify.helpers import Bed, flip, tree


def sha(data):
    return hashlib.sha256(data).hexdigest()


def the_snapshot(bed):
    (snap,) = [p for p in bed.remote_dir.iterdir() if p.is_dir()]
    return snap.name


def reverify_cli(bed, *args, check=None, env=None):
    proc = strongroom(*bed.cli("reverify", *args, "--json"), check=check, env=env)
    return proc, json.loads(proc.stdout) if proc.stdout.strip() else None


def test_a_same_size_byte_flip_fails_every_run_until_repaired(tmp_path):
    bed = Bed(tmp_path)
    bed.snapshot_job()
    code, st, _ = bed.run("snap")
    assert code == OK and st["verify"]["objects"] == 5 and st["verify"]["damaged"] == []
    assert st["verify"]["coverage_ratio"] == 1.0 and st["verify"]["method"] == "hash"
    snap = the_snapshot(bed)
    name = f"{snap}/full.tar.zst"
    local = (tmp_path / "dest" / name).read_bytes()
    damaged = flip(bed.remote_dir / name)
    assert len(damaged) == len(local)

    proc, out = reverify_cli(bed, "snap", "--all", check=2)
    assert out["verify"]["damaged"] == [name] and out["verify"]["checked_this_run"] == 5
    assert name in out["message"] and f"local:{bed.remote_dir}" in out["message"]
    assert "SHA-256 differs" in out["reasons"][name]
    # every later run of the job fails naming it; the local snapshot is untouched
    for _ in range(2):
        code, st, output = bed.run("snap")
        assert code == ERROR and st["result"] == "error"
        assert st["verify"]["damaged"] == [name] and name in st["message"]
        assert f"local:{bed.remote_dir}" in st["message"]
        assert "--repair" in output
    assert (tmp_path / "dest" / name).read_bytes() == local
    assert bed.ledger("snap")["objects"][name]["sha256"] == sha(local)

    # the next upload of the same files replaces nothing, evidence stays: rclone takes the
    # same size and time for the same file and skips it, and the check that follows fails
    up = Upload(Rclone(str(bed.conf / "rclone.conf")))
    with pytest.raises(RemoteError, match="full.tar.zst: differs on the remote"):
        up.run(tmp_path / "dest" / snap, f"local:{bed.remote_dir}/{snap}", immutable=True)
    assert (bed.remote_dir / name).read_bytes() == damaged

    proc, out = reverify_cli(bed, "snap", "--repair", check=0)
    (repair,) = out["repairs"]
    assert repair["result"] == "repaired" and repair["object"] == name
    assert repair["steps"][0].startswith(f"moved the damaged {name} aside as {name}.damaged-")
    assert repair["steps"][1].startswith("uploaded ") and "matches" in repair["steps"][2]
    (aside,) = (bed.remote_dir / snap).glob("full.tar.zst.damaged-*")
    assert aside.read_bytes() == damaged  # the evidence, never deleted
    assert (bed.remote_dir / name).read_bytes() == local
    assert out["verify"]["damaged"] == []
    code, st, _ = bed.run("snap")
    assert code == OK and st["verify"]["damaged"] == []
    # the aside copy is no object of the job
    assert not any(".damaged-" in n for n in bed.ledger("snap")["objects"])


def test_a_deleted_remote_object_is_damage_named_by_the_next_run(tmp_path):
    bed = Bed(tmp_path)
    bed.snapshot_job()
    assert bed.run("snap")[0] == OK
    name = f"{the_snapshot(bed)}/REPORT.json"
    (bed.remote_dir / name).unlink()
    code, st, _ = bed.run("snap")  # the listing finds it, whatever the rotation chose
    assert code == ERROR and st["verify"]["damaged"] == [name]
    assert f"{name} (missing on the remote)" in st["message"]
    assert f"local:{bed.remote_dir}" in st["message"]
    assert (tmp_path / "dest" / name).exists()  # the local copy is untouched
    proc, out = reverify_cli(bed, "snap", "--repair", check=0)
    (repair,) = out["repairs"]
    assert repair["steps"][0].startswith("uploaded ")  # nothing there to move aside
    assert (bed.remote_dir / name).read_bytes() == (tmp_path / "dest" / name).read_bytes()
    assert bed.run("snap")[0] == OK


def test_damage_without_a_good_local_copy_is_unrepairable_and_says_what_to_do(tmp_path):
    bed = Bed(tmp_path)
    bed.snapshot_job()
    assert bed.run("snap")[0] == OK
    snap = the_snapshot(bed)
    name = f"{snap}/MANIFEST.txt"
    damaged = flip(bed.remote_dir / name)
    shutil.rmtree(tmp_path / "dest" / snap)  # pruned here: the remote was the only copy
    proc, out = reverify_cli(bed, "snap", "--all", "--repair", check=2)
    (repair,) = out["repairs"]
    assert repair["result"] == "unrepairable"
    assert "no local copy with the recorded SHA-256" in repair["message"]
    assert f"--forget {name}" in repair["message"]
    assert (bed.remote_dir / name).read_bytes() == damaged  # nothing moved or replaced
    proc, out = reverify_cli(bed, "snap", "--forget", name, check=0)
    assert any(s.startswith(f"moved the damaged {name} aside") for s in out["forgotten"])
    assert list((bed.remote_dir / snap).glob("MANIFEST.txt.damaged-*"))[0].read_bytes() \
        == damaged
    assert name not in bed.ledger("snap")["objects"]
    assert bed.run("snap")[0] == OK


def test_an_unreachable_remote_names_it_and_marks_nothing_verified(tmp_path):
    bed = Bed(tmp_path)
    bed.snapshot_job()
    assert bed.run("snap")[0] == OK
    before = bed.ledger_file("snap").read_bytes()
    kept = tmp_path / "remote-away"
    bed.remote_dir.rename(kept)  # an unmounted disk, a folder gone
    proc, out = reverify_cli(bed, "snap", "--all", check=2)
    assert out["verify"]["error"].startswith(f"cannot list local:{bed.remote_dir}")
    assert f"local:{bed.remote_dir}" in out["message"]
    assert out["verify"]["checked_this_run"] == 0
    assert bed.ledger_file("snap").read_bytes() == before  # nothing marked verified
    # through the runner's hook: the job's good outcome becomes an error naming the remote
    from strongroom.jobs import config

    job = config.load_job(bed.conf, "snap")
    outcome = reverify.after_run(job, bed.paths, {"exit_code": OK, "message": "done"})
    assert outcome["exit_code"] == ERROR
    assert outcome["message"].startswith(f"re-verification of local:{bed.remote_dir} failed")
    assert outcome["extra"]["verify"]["error"] and bed.ledger_file("snap").read_bytes() == before
    assert not bed.remote_dir.exists()  # nothing was created in its place
    kept.rename(bed.remote_dir)
    proc, out = reverify_cli(bed, "snap", "--all", check=0)
    assert out["verify"]["checked_this_run"] == 5 and out["verify"]["damaged"] == []


def test_a_killed_verification_leaves_a_valid_ledger_and_the_next_run_goes_on(tmp_path):
    bed = Bed(tmp_path)
    src = tmp_path / "sources" / "app"
    src.mkdir(parents=True)
    for i in range(150):
        (src / f"item-{i:03d}.txt").write_text(f"item {i}\n")
    bed.job("days", "daily", {"sources": [str(src)], "dest": str(tmp_path / "daily"),
                              "remote": f"local:{bed.remote_dir}"})
    code, st, _ = bed.run("days")
    assert code == OK, st["message"]
    total = st["verify"]["objects"]
    assert total > 2 * reverify.BATCH
    # every entry verified long ago, so that --all's reads show in the ledger
    doc = bed.ledger("days")
    for entry in doc["objects"].values():
        entry["verified"] = "2020-01-01T00:00:00Z"
    bed.ledger_file("days").write_text(json.dumps(doc))
    # an rclone that kills the run as its second batch of hashes starts (SIGKILL: no
    # handler runs, nothing is cleaned up)
    wrapper = tmp_path / "bin"
    wrapper.mkdir()
    real = shutil.which("rclone")
    (wrapper / "rclone").write_text(
        "#!/bin/sh\n"
        'case " $* " in *" hashsum "*)\n'
        f'  n=$(cat {tmp_path}/count 2>/dev/null || echo 0); n=$((n+1)); '
        f'echo $n > {tmp_path}/count\n'
        '  if [ "$n" -ge 2 ]; then kill -9 $PPID; exit 1; fi;;\n'
        "esac\n"
        f'exec {real} "$@"\n')
    (wrapper / "rclone").chmod(0o755)
    env = dict(os.environ, PATH=f"{wrapper}:{os.environ['PATH']}")
    proc, _ = reverify_cli(bed, "days", "--all", env=env)
    assert proc.returncode == -9
    doc = bed.ledger("days")  # valid JSON, every entry still there
    assert len(doc["objects"]) == total
    fresh = [n for n, e in doc["objects"].items() if e["verified"] != "2020-01-01T00:00:00Z"]
    assert len(fresh) == reverify.BATCH  # the first batch was saved as it finished
    assert not any(e.get("damaged") for e in doc["objects"].values())
    # the next run takes over the dead run's lock and goes on
    proc, out = reverify_cli(bed, "days", "--all", check=0)
    assert out["verify"]["checked_this_run"] == total and out["verify"]["verified"] == total
    code, st, _ = bed.run("days")
    assert code == OK and st["verify"]["coverage_ratio"] == 1.0


def test_an_invalid_ledger_is_refused_and_kept_as_it_is(tmp_path):
    bed = Bed(tmp_path)
    bed.snapshot_job()
    assert bed.run("snap")[0] == OK
    remote_before = tree(bed.remote_dir)
    bed.ledger_file("snap").write_text('{"remote": "local:/x", "objects": {')
    code, st, _ = bed.run("snap")
    assert code == ERROR and "is not valid JSON" in st["message"]
    assert str(bed.ledger_file("snap")) in st["message"] and "Move it aside" in st["message"]
    assert bed.ledger_file("snap").read_text() == '{"remote": "local:/x", "objects": {'
    after = tree(bed.remote_dir)
    assert {k: v for k, v in after.items() if k in remote_before} == remote_before
    assert len(after) == 2 * len(remote_before)  # the new snapshot still went off-site


def test_a_changed_remote_starts_a_new_ledger_and_keeps_the_old_one(tmp_path):
    bed = Bed(tmp_path)
    bed.snapshot_job()
    assert bed.run("snap")[0] == OK
    old = bed.ledger("snap")
    bed.snapshot_job(remote=f"local:{tmp_path / 'elsewhere'}")
    code, st, output = bed.run("snap")
    assert code == 1 and "the job's remote changed: the previous ledger is kept as" in output
    (aside,) = bed.ledger_file("snap").parent.glob("snap.previous-*.json")
    assert json.loads(aside.read_text()) == old
    assert bed.ledger("snap")["remote"] == f"local:{tmp_path / 'elsewhere'}"
    assert st["verify"]["objects"] == 5 and "moved_aside" not in bed.ledger("snap")
    assert bed.run("snap")[0] == OK  # said once


def test_hostile_ledger_paths_are_ignored_and_never_read_or_written(tmp_path):
    bed = Bed(tmp_path)
    bed.snapshot_job()
    assert bed.run("snap")[0] == OK
    outside = tmp_path / "outside.txt"
    outside.write_text("not the job's\n")
    doc = bed.ledger("snap")
    bad = {"size": 14, "sha256": "0" * 64, "uploaded": "2026-01-01T00:00:00Z",
           "verified": None, "damaged": {"reason": "x", "found": "2026-01-01T00:00:00Z"}}
    for name in ("../outside.txt", str(outside), "a/../../outside.txt", "a//b", "./x"):
        doc["objects"][name] = bad
    doc["objects"]["ok-looking"] = {"size": "huge", "sha256": "zz"}
    bed.ledger_file("snap").write_text(json.dumps(doc))
    everything = tree(tmp_path / "dest")
    proc, out = reverify_cli(bed, "snap", "--all", "--repair", check=1)
    assert "ignored 6 ledger entry(ies) naming no object under the remote" in out["message"] \
        or any("ignored 6" in n for n in out["notes"])
    assert out["repairs"] == [] and out["verify"]["damaged"] == []
    assert outside.read_text() == "not the job's\n"
    assert sorted(p.name for p in tmp_path.iterdir() if "damaged" in p.name) == []
    assert tree(tmp_path / "dest") == everything
    assert set(bed.ledger("snap")["objects"]) == set(tree(bed.remote_dir))
    code, st, _ = bed.run("snap")  # dropped once: the next run has nothing to say
    assert code == OK


def test_verify_days_0_turns_it_off(tmp_path):
    bed = Bed(tmp_path)
    bed.snapshot_job(verify_days=0)
    code, st, _ = bed.run("snap")
    assert code == OK and "verify" not in st
    assert not bed.ledger_file("snap").exists()
    proc = strongroom(*bed.cli("reverify", "snap"), check=2)
    assert "re-verifies nothing" in proc.stderr


def test_s3_has_no_sha256_so_objects_are_downloaded_and_hashed(tmp_path, remotes):
    bed = Bed(tmp_path, conf_text=Path(remotes["conf"]).read_text())
    bed.snapshot_job(remote=remotes["s3"])
    code, st, _ = bed.run("snap")
    assert code == OK, st["message"]
    assert st["verify"]["method"] == "download" and st["verify"]["objects"] == 5
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    rc = ["rclone", "--config", str(bed.conf / "rclone.conf")]
    listing = subprocess.run([*rc, "lsf", "-R", "--files-only", remotes["s3"]],
                             capture_output=True, text=True, check=True, env=env).stdout
    name = next(n for n in listing.split() if n.endswith("/full.tar.zst"))
    bad = tmp_path / "bad"
    bad.write_bytes((tmp_path / "dest" / name).read_bytes())
    flip(bad)
    subprocess.run([*rc, "copyto", str(bad), f"{remotes['s3']}/{name}"], check=True, env=env)
    proc, out = reverify_cli(bed, "snap", "--all", check=2)
    assert out["verify"]["damaged"] == [name] and out["verify"]["method"] == "download"
    proc, out = reverify_cli(bed, "snap", "--repair", check=0)
    assert out["repairs"][0]["result"] == "repaired"
    listing = subprocess.run([*rc, "lsf", "-R", "--files-only", remotes["s3"]],
                             capture_output=True, text=True, check=True, env=env).stdout
    (aside,) = [n for n in listing.split() if ".damaged-" in n]
    got = subprocess.run([*rc, "cat", f"{remotes['s3']}/{aside}"], capture_output=True,
                         check=True, env=env).stdout
    assert got == bad.read_bytes()
    assert bed.run("snap")[0] == OK


def test_reverify_help_and_a_job_of_another_type(tmp_path):
    proc = strongroom("reverify", "--help", check=0)
    assert "--repair" in proc.stdout and "--all" in proc.stdout and "--json" in proc.stdout
    bed = Bed(tmp_path)
    bed.job("pair", "bisync", {"local": str(tmp_path / "a"), "remote": "local:/tmp/b"})
    proc = strongroom(*bed.cli("reverify", "pair", "--json"), check=2)
    assert json.loads(proc.stdout)["result"] == "error" and "re-verifies nothing" in proc.stderr
    assert WARNING == 1  # the exit code a dropped ledger entry gives (above)


def test_a_truncated_object_is_damage_until_its_bytes_are_back(tmp_path):
    bed = Bed(tmp_path)
    bed.snapshot_job()
    assert bed.run("snap")[0] == OK
    name = f"{the_snapshot(bed)}/SHA256SUMS"
    good = (bed.remote_dir / name).read_bytes()
    with open(bed.remote_dir / name, "r+b") as fh:
        fh.truncate(len(good) // 2)
    code, st, _ = bed.run("snap")
    assert code == ERROR and st["verify"]["damaged"] == [name]
    assert f"size {len(good) // 2} on the remote, {len(good)} uploaded" in st["message"]
    (bed.remote_dir / name).write_bytes(good)  # put back by hand, from elsewhere
    proc, out = reverify_cli(bed, "snap", check=0)
    assert out["cleared"] == [name] and out["verify"]["damaged"] == []
    assert bed.run("snap")[0] == OK
