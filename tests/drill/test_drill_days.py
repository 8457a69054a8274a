"""Drills of day folders and weekly rollups (strongroom/drill/days.py): real day folders,
zstd and tar, rclone against a local folder as the remote; the faults a remote can hold
(a flipped byte, a deleted object, a folder gone, hostile tar members), each refused with
the dest, the remote and scratch left as they were."""

import io
import os
import shutil
import subprocess
import tarfile
import urllib.request
from datetime import date, timedelta

import pytest

from strongroom import drill, rollups
from strongroom.core.remote import Rclone
from strongroom.drill import base, days
from strongroom.upload import Upload


def drive(plan, scratch, wait=5):
    """The driver (drill.run) on one Plan: its artifacts; the scratch data is removed
    after each restore, whatever happened."""
    arts, _code, _summary = drill.run([plan], scratch, wait)
    assert list(scratch.iterdir()) == []
    return arts


def tree(folder, skip=(".rollups.lock",)):
    """Every file below folder, by relative path, with its bytes (a lock file is runtime)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and p.name not in skip} if folder.exists() else {}


def span(first, n):
    start = date.fromisoformat(first)
    return [(start + timedelta(days=i)).isoformat() for i in range(n)]


def vault(tmp_path):
    """An rclone.conf whose remote `vault:` is tmp_path: the same remote name in every
    copy of the bed (the dest's state records it), each copy's own folder behind it."""
    cfg = tmp_path / "conf"
    cfg.mkdir()
    conf = cfg / "rclone.conf"
    conf.write_text(f"[vault]\ntype = alias\nremote = {tmp_path}\n")
    return conf


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Nine days packed into two rollups, two more days after them, all uploaded: made
    once, copied for each test."""
    tmp = tmp_path_factory.mktemp("days-bed")
    notes, dest = tmp / "notes", tmp / "days"
    (notes / "sub").mkdir(parents=True)
    for i, d in enumerate(span("2020-03-01", 11)):
        (notes / "plan.md").write_text(f"plan of {d}\n")
        (notes / "sub/data.bin").write_bytes(os.urandom(2000 + i))
        rollups.make_day([notes], dest, today=date.fromisoformat(d))
        if i == 8:
            assert [n for n, _ in rollups.make_rollup(dest, 7)] == [
                "weekly_20200301_20200302.tar.zst", "weekly_20200303_20200309.tar.zst"]
    sent = rollups.upload_pending(dest, Upload(Rclone(vault(tmp))), "vault:remote")
    assert len(sent) == 13
    return tmp


@pytest.fixture
def bed(tmp_path, made):
    for sub in ("notes", "days", "remote"):
        shutil.copytree(made / sub, tmp_path / sub, symlinks=True)
    conf, dest, where = vault(tmp_path), tmp_path / "days", "vault:remote"
    opts = {"dest": str(dest), "remote": where, "rclone_config": str(conf)}
    return {"tmp": tmp_path, "dest": dest, "remote": tmp_path / "remote", "where": where,
            "cfg": conf.parent, "state": tmp_path / "state", "scratch": tmp_path / "scratch",
            "daily": {"name": "daily", "type": "daily",
                      "options": {**opts, "sources": [str(tmp_path / "notes")]}},
            "weekly": {"name": "weekly", "type": "rollup", "options": opts}}


def plan_of(bed, which, source):
    ctx = base.Context(config_dir=bed["cfg"], state_dir=bed["state"], source=source)
    return days.plan(which, bed[which], ctx), ctx


def flip(path, at=None):
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if at is None else at] ^= 0xFF
    path.write_bytes(bytes(data))


def fail_fast(bed):
    """One attempt at each rclone command (the job option): a missing object fails at once."""
    for key in ("daily", "weekly"):
        bed[key]["options"]["retries"] = 1


def untouched(bed, before):
    assert (tree(bed["dest"]), tree(bed["remote"])) == before
    assert not (bed["dest"] / ".in-use").exists()
    assert list(bed["scratch"].iterdir()) == []


def test_newest_and_a_rotating_older_day_and_rollup_restore_locally_and_from_the_remote(bed):
    before = (tree(bed["dest"]), tree(bed["remote"]))
    plan, _ = plan_of(bed, "daily", "both")
    assert plan.kind == "day" and plan.sources == ("local", "remote")
    arts = drive(plan, bed["scratch"])
    got = {(a.name, a.source): a for a in arts}
    # the newest, and the first older day by the rotation, from each source
    assert set(got) == {(d, s) for d in ("2020-03-11", "2020-03-01")
                        for s in ("local", "remote")}
    for a in arts:
        assert (a.kind, a.job, a.result) == ("day", "daily", "ok"), a.message
        assert a.duration_seconds > 0  # the RTO, timed by the driver
        assert a.files == 2 and a.bytes > 2000
        assert "every one matches its manifest" in a.message
    assert "from its folder in" in got[("2020-03-11", "local")].message
    assert f"from the remote ({bed['where']}/2020-03-11)" in got[("2020-03-11", "remote")].message
    # the next drill takes the next older day: every day is drilled in turn
    again = {a.name for a in drive(plan_of(bed, "daily", "local")[0], bed["scratch"])}
    assert again == {"2020-03-11", "2020-03-02"}

    plan, _ = plan_of(bed, "weekly", "both")
    arts = drive(plan, bed["scratch"])
    got = {(a.name, a.source): a for a in arts}
    week, first = "weekly_20200303_20200309.tar.zst", "weekly_20200301_20200302.tar.zst"
    assert set(got) == {(r, s) for r in (week, first) for s in ("local", "remote")}
    for a in arts:
        assert (a.kind, a.result) == ("rollup", "ok"), a.message
        assert "its SHA-256 as packed" in a.message
    assert got[(week, "remote")].files == 7 * 2
    assert "restored 7 day(s) 2020-03-03 to 2020-03-09 from " + week in \
        got[(week, "remote")].message
    untouched(bed, before)


def test_a_day_kept_only_on_the_remote_is_drilled_from_there(bed):
    gone = rollups.retire(bed["dest"], "after_upload", True, today=date(2020, 4, 1))
    assert "2020-03-11" in gone and rollups.days(bed["dest"]) == []
    before = (tree(bed["dest"]), tree(bed["remote"]))
    plan, _ = plan_of(bed, "daily", "both")
    assert plan.targets("local") == []
    arts = drive(plan, bed["scratch"])
    assert [(a.name, a.source, a.result) for a in arts] == [
        ("2020-03-11", "remote", "ok"), ("2020-03-01", "remote", "ok")]
    untouched(bed, before)


def test_a_flipped_byte_in_a_remote_day_file_fails_that_day(bed):
    flip(bed["remote"] / "2020-03-11/notes/sub/data.bin")
    before = (tree(bed["dest"]), tree(bed["remote"]))
    (art, older) = drive(plan_of(bed, "daily", "remote")[0], bed["scratch"])
    assert (art.name, art.result) == ("2020-03-11", "error")
    assert art.message == ("restored files do not match their manifest: "
                           "2020-03-11/notes/sub/data.bin: differs from the manifest")
    assert older.result == "ok"
    untouched(bed, before)
    # the local copy is good, and says so
    (art,) = [a for a in drive(plan_of(bed, "daily", "local")[0], bed["scratch"])
              if a.name == "2020-03-11"]
    assert art.result == "ok"


def test_a_flipped_byte_in_a_remote_rollup_is_refused_before_it_is_unpacked(bed):
    week = "weekly_20200303_20200309.tar.zst"
    flip(bed["remote"] / "rollups" / week)
    before = (tree(bed["dest"]), tree(bed["remote"]))
    arts = {a.name: a for a in drive(plan_of(bed, "weekly", "remote")[0], bed["scratch"])}
    assert arts[week].result == "error"
    assert arts[week].message.startswith(f"{week} on {bed['where']}/rollups/{week}: SHA-256 ")
    assert "recorded when it was packed; not unpacked" in arts[week].message
    untouched(bed, before)


def test_without_a_recorded_hash_a_damaged_rollup_is_told_by_zstd(bed):
    week = "weekly_20200303_20200309.tar.zst"
    state = rollups.read_state(bed["dest"])
    del state["rollups"][week]["sha256"]
    rollups.write_state(bed["dest"], state)
    flip(bed["remote"] / "rollups" / week, at=200)
    before = (tree(bed["dest"]), tree(bed["remote"]))
    arts = {a.name: a for a in drive(plan_of(bed, "weekly", "remote")[0], bed["scratch"])}
    assert arts[week].result == "error"
    assert arts[week].message.startswith(f"{week} cannot be decompressed: ")
    untouched(bed, before)


def test_a_deleted_remote_object_fails_the_day_or_rollup_it_belonged_to(bed):
    fail_fast(bed)
    week = "weekly_20200303_20200309.tar.zst"
    (bed["remote"] / "2020-03-11/notes/plan.md").unlink()
    (bed["remote"] / "rollups" / week).unlink()
    before = (tree(bed["dest"]), tree(bed["remote"]))
    (day, _) = drive(plan_of(bed, "daily", "remote")[0], bed["scratch"])
    assert (day.name, day.result) == ("2020-03-11", "error")
    assert day.message == ("restored files do not match their manifest: "
                           "2020-03-11/notes/plan.md: missing")
    # gone from the listing, the rollup is still a target: the state says it was there
    arts = {a.name: a for a in drive(plan_of(bed, "weekly", "remote")[0], bed["scratch"])}
    assert arts[week].result == "error"
    assert arts[week].message.startswith(
        f"cannot fetch {week} from {bed['where']}/rollups/{week}: rclone copyto failed "
        "(exit 3: directory not found)")
    untouched(bed, before)


def test_a_remote_whose_folder_is_gone_fails_every_artifact_naming_it(bed):
    fail_fast(bed)
    shutil.rmtree(bed["remote"])
    before = (tree(bed["dest"]), {})
    for which in ("daily", "weekly"):
        arts = drive(plan_of(bed, which, "remote")[0], bed["scratch"])
        assert len(arts) == 2 and {a.result for a in arts} == {"error"}
        for a in arts:
            assert a.message.startswith("cannot fetch ")
            assert f" from {bed['where']}/" in a.message
    untouched(bed, before)
    assert not bed["remote"].exists()


def test_a_remote_that_cannot_be_listed_is_one_error_naming_it(bed):
    for key in ("daily", "weekly"):
        bed[key]["options"]["remote"] = "nosuch:backups"  # no such remote in rclone.conf
    before = (tree(bed["dest"]), tree(bed["remote"]))
    (art,) = drive(plan_of(bed, "daily", "remote")[0], bed["scratch"])
    assert (art.name, art.result) == ("*", "error")
    assert art.message.startswith("cannot list nosuch:backups (rclone exit ")
    untouched(bed, before)


def hostile_rollup(path, member):
    """A rollup of one day (2020-04-01) with one hostile member after its manifest."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        doc = b'{"day": "2020-04-01", "files": {}}\n'
        info = tarfile.TarInfo("2020-04-01/manifest.json")
        info.size = len(doc)
        tar.addfile(info, io.BytesIO(doc))
        payload = b"escaped\n"
        if member.isreg():
            member.size = len(payload)
            tar.addfile(member, io.BytesIO(payload))
        else:
            tar.addfile(member)
    path.write_bytes(subprocess.run(["zstd", "-q", "-c"], input=buf.getvalue(),
                                    capture_output=True, check=True).stdout)


def _member(name, kind=tarfile.REGTYPE, linkname=""):
    m = tarfile.TarInfo(name)
    m.type, m.linkname, m.mode = kind, linkname, 0o644
    return m


@pytest.mark.parametrize("member, said", [
    (_member("../../evil.txt"), "path leaving the target in archive: '../../evil.txt'"),
    (_member("2020-04-01/../../evil.txt"), "path leaving the target in archive"),
    (_member("/tmp/strongroom-evil.txt"), "path leaving the target in archive"),
    (_member("2020-04-01/out", tarfile.SYMTYPE, "/etc"), "link leaving the target"),
    (_member("2020-04-01/up", tarfile.SYMTYPE, "../../.."), "link leaving the target"),
    (_member("2020-04-01/tty", tarfile.CHRTYPE), "device or fifo in archive"),
    (_member("evil.txt"), "a rollup holds day folders (YYYY-MM-DD/) only"),
])
def test_hostile_members_of_a_remote_rollup_are_refused(bed, member, said):
    # a rollup this dest's state does not know (made elsewhere, or the state was lost):
    # no hash to refuse it by, so the unpacking must
    hostile = "weekly_20200401_20200401.tar.zst"
    hostile_rollup(bed["remote"] / "rollups" / hostile, member)
    before = (tree(bed["dest"]), tree(bed["remote"]))
    arts = {a.name: a for a in drive(plan_of(bed, "weekly", "remote")[0], bed["scratch"])}
    assert arts[hostile].result == "error"
    assert arts[hostile].message.startswith(f"refusing to restore from {hostile}: ")
    assert said in arts[hostile].message
    untouched(bed, before)
    assert not (bed["tmp"] / "evil.txt").exists()
    assert not os.path.exists("/tmp/strongroom-evil.txt")


def test_the_dest_lock_is_held_while_drilling(bed):
    from strongroom.core.errors import LockedError
    from strongroom.core.lock import Lock

    plan, _ = plan_of(bed, "daily", "local")
    # what a daily or rollup job of this dest takes before it retires anything
    with plan.lock(0), pytest.raises(LockedError, match="is locked by PID"):
        Lock(bed["dest"] / ".rollups.lock", "daily folders").acquire(0)
    gone = {**bed, "daily": {**bed["daily"], "options": {
        **bed["daily"]["options"], "dest": str(bed["tmp"] / "nowhere")}}}
    assert plan_of(gone, "daily", "local")[0].missing() is None  # never run: nothing yet
    (bed["state"] / "status").mkdir(parents=True)
    (bed["state"] / "status/daily.json").write_text("{}")
    (art,) = drive(plan_of(gone, "daily", "local")[0], bed["scratch"])
    assert (art.name, art.source, art.result) == ("*", "local", "error")
    assert art.message == (f"dest {bed['tmp'] / 'nowhere'} of job daily does not exist, "
                           "though the job has run: what it kept is lost, or the disk is "
                           "not mounted")


def test_hostile_object_names_on_an_s3_remote_never_leave_scratch(bed, remotes, s3):
    # an S3 key is any string: these name paths above the day folder, and above scratch
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    subprocess.run(["rclone", "--config", str(remotes["conf"]), "copy",
                    str(bed["remote"] / "2020-03-11"), f"{remotes['s3']}/2020-03-11"],
                   check=True, env=env, capture_output=True)
    for key in ("../../evil.txt", "%2e%2e/%2e%2e/%2e%2e/evil.txt"):
        url = f"{s3.endpoint}/{remotes['bucket']}/up/2020-03-11/{key}"  # the test's server
        put = urllib.request.Request(url, data=b"evil\n", method="PUT")  # noqa: S310
        urllib.request.urlopen(put).close()  # noqa: S310
    bed["daily"]["options"].update(remote=remotes["s3"], rclone_config=str(remotes["conf"]),
                                   retries=1)
    before = tree(bed["dest"])
    (art,) = drive(plan_of(bed, "daily", "remote")[0], bed["scratch"])
    # rclone lists such keys under names of its own (full-width dots), which stay inside;
    # they are not the day's files, and nothing of them is restored: said, not trusted
    assert (art.name, art.result) == ("2020-03-11", "warning")
    assert art.message.startswith(
        f"restored day 2020-03-11 from the remote ({remotes['s3']}/2020-03-11): 2 file(s), "
        "every one matches its manifest; 2 file(s) on the remote not in the manifest, e.g. ")
    assert tree(bed["dest"]) == before
    assert not any(p.name.startswith("evil") for p in bed["tmp"].rglob("*"))
    assert not any(p.name.startswith("evil") for p in bed["tmp"].parent.iterdir())


def test_a_remote_manifest_other_than_the_local_one_fails_the_day(bed):
    manifest = bed["remote"] / "2020-03-11/manifest.json"
    manifest.write_text(manifest.read_text().replace('"day"', '"created_by": "x", "day"', 1))
    before = (tree(bed["dest"]), tree(bed["remote"]))
    (art, _) = drive(plan_of(bed, "daily", "remote")[0], bed["scratch"])
    assert (art.name, art.result) == ("2020-03-11", "error")
    assert art.message == (f"the remote's manifest of day 2020-03-11 differs from the one "
                           f"in {bed['dest'] / '2020-03-11'}")
    untouched(bed, before)


def test_a_remote_day_folder_holding_another_day_fails(bed):
    rollups.retire(bed["dest"], "after_upload", True, today=date(2020, 4, 1))
    shutil.rmtree(bed["remote"] / "2020-03-11")
    shutil.copytree(bed["remote"] / "2020-03-10", bed["remote"] / "2020-03-11")
    before = (tree(bed["dest"]), tree(bed["remote"]))
    (art, _) = drive(plan_of(bed, "daily", "remote")[0], bed["scratch"])
    assert (art.name, art.result) == ("2020-03-11", "error")
    assert art.message == "day folder 2020-03-11's manifest is of another day ('2020-03-10')"
    untouched(bed, before)


def test_a_rollup_holding_other_days_than_its_name_or_the_state_says_fails(bed):
    # on the remote under another name (no state record): its name is all there is
    renamed = "weekly_20200401_20200402.tar.zst"
    shutil.copy(bed["remote"] / "rollups/weekly_20200301_20200302.tar.zst",
                bed["remote"] / "rollups" / renamed)
    before = (tree(bed["dest"]), tree(bed["remote"]))
    arts = {a.name: a for a in drive(plan_of(bed, "weekly", "remote")[0], bed["scratch"])}
    assert arts[renamed].result == "error"
    assert arts[renamed].message == (f"{renamed} holds the day(s) 2020-03-01, 2020-03-02, "
                                     "not the days 2020-04-01 to 2020-04-02 its name says")
    untouched(bed, before)
    # here, the state recorded other days for it than it holds
    week = "weekly_20200303_20200309.tar.zst"
    state = rollups.read_state(bed["dest"])
    state["rollups"][week]["days"] = ["2020-03-03", "2020-03-09"]
    rollups.write_state(bed["dest"], state)
    before = (tree(bed["dest"]), tree(bed["remote"]))
    arts = {a.name: a for a in drive(plan_of(bed, "weekly", "local")[0], bed["scratch"])}
    assert arts[week].result == "error"
    assert arts[week].message == (f"{week} holds the day(s) "
                                  + ", ".join(span("2020-03-03", 7))
                                  + ", not the 2020-03-03, 2020-03-09 packed into it")
    untouched(bed, before)


def test_daily_and_rollup_jobs_are_drilled_by_this_module():
    from strongroom.jobs import registry

    assert registry.get("daily").drill is days.plan
    assert registry.get("rollup").drill is days.plan
