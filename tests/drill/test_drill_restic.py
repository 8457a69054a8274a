"""Drills of restic repositories (strongroom/drill/restic.py) with the real restic: the
rotating read check, a sample of the latest snapshot restored and compared, a damaged
pack and a refused password, each said without the password and with the repository and
scratch left as they were."""

import json
import os
import subprocess

import pytest

from strongroom import drill, restic
from strongroom.core.errors import LockedError
from strongroom.core.lock import Lock
from strongroom.drill import base
from strongroom.drill import restic as drill_restic
from tests.drill.test_drill_days import drive, tree
from tests.restic.test_restic import CANARY, quick_repository


def new_repository(path, pw):
    """An empty repository: one with cheap key parameters where the cryptography package
    is there to write its key (tests/restic's quick_repository), else `restic init`'s
    own (the same repository, only slower to open)."""
    try:
        import cryptography  # noqa: F401
    except ImportError:
        env = dict(os.environ, RESTIC_REPOSITORY=str(path), RESTIC_PASSWORD_FILE=str(pw))
        subprocess.run(["restic", "init"], env=env, capture_output=True, check=True)
        return path
    return quick_repository(path, CANARY)


@pytest.fixture
def bed(tmp_path):
    """A snapshot of 60 files taken by the restic job's own run."""
    src = tmp_path / "src"
    (src / "docs").mkdir(parents=True)
    for i in range(60):
        (src / "docs" / f"f{i:02}[{i % 3}].txt").write_bytes(os.urandom(300 + i))
    pw = tmp_path / "restic.pw"
    pw.write_text(CANARY + "\n")
    pw.chmod(0o600)
    repo = new_repository(tmp_path / "repo", pw)
    opts = {"repository": str(repo), "password_file": str(pw), "paths": [str(src)],
            "keep_weekly": 2, "check_subsets": 3}
    code, rep = restic.run_job(opts, tmp_path / "state", "weekly-restic")
    assert code == 0
    return {"tmp": tmp_path, "src": src, "repo": repo, "pw": pw, "state": tmp_path / "state",
            "scratch": tmp_path / "scratch", "snapshot": rep["snapshot"],
            "job": {"name": "weekly-restic", "type": "restic", "options": opts}}


def plan_of(bed, source="local"):
    ctx = base.Context(config_dir=bed["tmp"] / "conf", state_dir=bed["state"], source=source)
    return drill_restic.plan("weekly-restic", bed["job"], ctx)


def untouched(bed, before, arts):
    assert tree(bed["repo"]) == before
    assert list((bed["repo"] / "locks").iterdir()) == []  # restic's own locks released
    assert list(bed["scratch"].iterdir()) == []
    for a in arts:
        assert CANARY not in json.dumps(a.as_dict())


def test_a_rotating_subset_is_read_and_a_sample_restored_and_compared(bed):
    before = tree(bed["repo"])
    (art,) = arts = drive(plan_of(bed), bed["scratch"])
    assert (art.kind, art.name, art.source, art.result) == (
        "restic", bed["snapshot"], "local", "ok"), art.message
    assert art.files == 30 and art.bytes > 30 * 300
    assert art.message == (
        f"check --read-data-subset 1/3 passed; restored 30 of 60 files of snapshot "
        f"{bed['snapshot']} (every 2nd file) into scratch: 30 compared by SHA-256 with their "
        f"source files (unchanged since the snapshot); read the repository {bed['repo']}")
    # the next drills read the next subsets, and the other half of the files
    later = [drive(plan_of(bed, "remote"), bed["scratch"])[0] for _ in range(3)]
    assert [a.message.split(" passed")[0] for a in later] == [
        f"check --read-data-subset {n}/3" for n in (2, 3, 1)]
    assert later[0].source == "remote" and later[0].result == "ok"
    untouched(bed, before, arts + later)


def test_a_file_changed_since_the_snapshot_is_left_to_restics_own_check(bed):
    changed = bed["src"] / "docs/f00[0].txt"  # the first file: in the first sample
    changed.write_bytes(b"newer content\n")
    (art,) = drive(plan_of(bed), bed["scratch"])
    assert art.result == "ok", art.message
    assert ": 29 compared by SHA-256 with their source files (unchanged since the snapshot)" \
           "; 1 changed since the snapshot (or not on this host), checked by restic's own " \
           "content check (restore --verify);" in art.message
    assert changed.read_bytes() == b"newer content\n"  # the source is never written


def test_a_damaged_pack_fails_the_check_with_restics_words(bed):
    bed["job"]["options"]["check_subsets"] = 1  # every pack read
    packs = sorted(p for p in (bed["repo"] / "data").rglob("*") if p.is_file())
    pack = max(packs, key=lambda p: p.stat().st_size)
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pack.write_bytes(bytes(data))
    before = tree(bed["repo"])
    (art,) = arts = drive(plan_of(bed), bed["scratch"])
    assert art.result == "error"
    assert art.message.startswith("restic check failed (exit 1): Pack ID does not match, "
                                  f"want {pack.name}, got ")
    assert art.message.endswith("Fatal: repository contains errors")
    untouched(bed, before, arts)


def test_a_wrong_password_or_a_loose_password_file_is_one_error(bed):
    before = tree(bed["repo"])
    bed["pw"].write_text("not the password\n")
    (art,) = arts = drive(plan_of(bed), bed["scratch"])
    assert (art.name, art.result) == ("*", "error")
    assert art.message == (f"repository {bed['repo']}: restic snapshots failed (exit 1): "
                           "wrong password (or no key) for this repository")
    assert "not the password" not in art.message
    bed["pw"].chmod(0o644)
    (art,) = drive(plan_of(bed), bed["scratch"])
    assert art.message == (f"repository {bed['repo']}: password file {bed['pw']} is readable "
                           "by others (mode 0644); chmod 600 it")
    untouched(bed, before, arts)


def test_the_restic_jobs_lock_is_held_while_drilling(bed):
    plan = plan_of(bed)
    # what `strongroom run weekly-restic` takes first
    with plan.lock(0), pytest.raises(LockedError, match="job weekly-restic is locked by PID"):
        Lock(bed["state"] / "locks/weekly-restic.lock", "job weekly-restic").acquire(0)


def test_a_repository_url_is_shown_without_its_credentials():
    p = drill_restic.ResticPlan("r", {"repository": "rest:https://u:secret@host:8000/r"},
                                None, ("local",))
    assert drill_restic._shown(p) == "rest:https://***@host:8000/r"


def test_a_restored_file_differing_from_its_unchanged_looking_source_fails(bed):
    # same size, same mtime, other bytes: the source or the backup went bad silently
    source = bed["src"] / "docs/f00[0].txt"
    st = source.stat()
    source.write_bytes(os.urandom(st.st_size))
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns))
    before = tree(bed["repo"])
    (art,) = arts = drive(plan_of(bed), bed["scratch"])
    assert art.result == "error"
    assert art.message == (f"{source} restored from snapshot {bed['snapshot']} differs from "
                           "the source file, unchanged since")
    untouched(bed, before, arts)


def test_a_snapshot_without_files_is_a_warning(bed):
    empty = bed["tmp"] / "empty"
    empty.mkdir()
    r = restic.Restic(str(bed["repo"]), bed["pw"], cache_dir=bed["tmp"] / "cache")
    r.run("backup", "-q", "--tag", "strongroom", str(empty))  # the newest of the job's
    (art,) = drive(plan_of(bed), bed["scratch"])
    assert art.result == "warning"
    assert art.message.startswith("check --read-data-subset 1/3 passed; snapshot ")
    assert art.message.endswith(f" holds no files to restore; read the repository "
                                f"{bed['repo']}")


def test_restic_jobs_are_drilled_by_this_module():
    from strongroom.jobs import registry

    assert registry.get("restic").drill is drill_restic.plan


def _run_job(tmp_path, opts):
    """The restic job run by the real runner (its status file is what the drill reads)."""
    from strongroom import jobs

    conf = tmp_path / "conf"
    (conf / "jobs").mkdir(parents=True, exist_ok=True)
    (conf / "jobs" / "weekly-restic.yml").write_text(json.dumps(
        {"name": "weekly-restic", "type": "restic", "options": opts}))
    paths = jobs.Paths(conf, tmp_path / "state", tmp_path / "log")
    code, _status, _out = jobs.run(paths, "weekly-restic")
    return code


def test_a_job_that_had_no_files_yet_has_nothing_to_restore_not_a_failure(tmp_path):
    # a fresh machine: the job ran, found its folder empty and made no repository
    (tmp_path / "empty").mkdir()
    pw = tmp_path / "restic.pw"
    pw.write_text(CANARY + "\n")
    pw.chmod(0o600)
    opts = {"repository": str(tmp_path / "repo"), "password_file": str(pw),
            "paths": [str(tmp_path / "empty")]}
    assert _run_job(tmp_path, opts) == 1  # "nothing to back up", a warning
    ctx = base.Context(config_dir=tmp_path / "conf", state_dir=tmp_path / "state")
    plan = drill_restic.plan("weekly-restic", {"name": "weekly-restic", "options": opts}, ctx)
    arts, code, summary = drill.run([plan], tmp_path / "scratch", 5)
    assert (arts, code) == ([], 1), summary
    assert f"no snapshot of job weekly-restic in its repository {tmp_path / 'repo'}" in summary
    assert not (tmp_path / "repo").exists() and list((tmp_path / "scratch").iterdir()) == []


def test_a_repository_gone_after_the_job_made_a_snapshot_is_a_failure_by_name(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("kept\n")
    pw = tmp_path / "restic.pw"
    pw.write_text(CANARY + "\n")
    pw.chmod(0o600)
    repo = new_repository(tmp_path / "repo", pw)
    opts = {"repository": str(repo), "password_file": str(pw), "paths": [str(src)]}
    assert _run_job(tmp_path, opts) == 0
    moved = tmp_path / "repo-unmounted"
    repo.rename(moved)  # the disk it lives on is not mounted
    ctx = base.Context(config_dir=tmp_path / "conf", state_dir=tmp_path / "state")
    plan = drill_restic.plan("weekly-restic", {"name": "weekly-restic", "options": opts}, ctx)
    (art,) = drive(plan, tmp_path / "scratch")
    assert art.result == "error" and f"repository {repo}" in art.message, art.message
    assert CANARY not in art.message
    assert (moved / "config").is_file() and (src / "a.txt").read_text() == "kept\n"
