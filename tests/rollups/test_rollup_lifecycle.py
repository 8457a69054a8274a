"""Rollups over their life: retention by when each was made, names that say what a rollup
holds, zstd's own reason for a damaged one, restores that say where they came from, and
`strongroom run JOB --date` for a given day. Real day folders, zstd and tar, rclone
against a local folder; the CLI is called in-process to keep each test cheap."""

import hashlib
import json
import os
import shutil
from datetime import date, timedelta

import pytest

from strongroom import rollups
from strongroom.cli import app as cli


def main(capsys, *args):
    """The real CLI entry point; returns (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        code = cli.main([str(a) for a in args])
    except SystemExit as exc:  # --help, and argparse's own errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def setup(tmp_path, remote=True, keep_rollups=12, per_rollup=7):
    notes, dest, cfg = tmp_path / "notes", tmp_path / "days", tmp_path / "conf"
    notes.mkdir()
    (cfg / "jobs").mkdir(parents=True)
    conf = cfg / "rclone.conf"
    conf.write_text("[local]\ntype = local\n")
    offsite = f"  remote: local:{tmp_path / 'remote'}\n  rclone_config: {conf}\n" if remote else ""
    (cfg / "jobs/daily.yml").write_text(
        f"name: daily\ntype: daily\noptions:\n  sources: [{notes}]\n  dest: {dest}\n{offsite}"
    )
    (cfg / "jobs/weekly.yml").write_text(
        f"name: weekly\ntype: rollup\noptions:\n  dest: {dest}\n  days: {per_rollup}\n"
        f"  keep_rollups: {keep_rollups}\n{offsite}"
    )
    return notes, dest, ["--config-dir", cfg, "--state-dir", tmp_path / "state"]


def span(first, n):
    start = date.fromisoformat(first)
    return [(start + timedelta(days=i)).isoformat() for i in range(n)]


def make(notes, dest, day):
    """The day folder of `day`, its notes saying which day they are."""
    (notes / "plan.md").write_text(f"plan of {day}\n")
    assert rollups.make_day([notes], dest, today=date.fromisoformat(day))["day"] == day


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def status(tmp_path, job):
    return json.loads((tmp_path / "state/status" / f"{job}.json").read_text())


def test_retention_goes_by_when_a_rollup_was_made_and_names_say_what_it_holds(tmp_path, capsys):
    # rollups of 3 days (the job's `days`); no remote, so each is tested locally only
    notes, dest, base = setup(tmp_path, remote=False, keep_rollups=2, per_rollup=3)
    for d in span("2020-03-01", 3):
        make(notes, dest, d)
    assert main(capsys, *base, "run", "weekly")[0] == 0
    first = "weekly_20200301_20200303.tar.zst"
    assert rollups.rollups(dest) == [first] and rollups.days(dest) == []
    # a day left over from before those, found after they were rolled up, and new days
    make(notes, dest, "2020-02-20")
    for d in span("2020-03-04", 2):
        make(notes, dest, d)
    assert main(capsys, *base, "run", "weekly")[0] == 0
    leftover, newest = "weekly_20200220_20200220.tar.zst", "weekly_20200304_20200305.tar.zst"
    state = rollups.read_state(dest)
    assert {r: e["days"] for r, e in state["rollups"].items()} == {
        first: span("2020-03-01", 3),
        leftover: ["2020-02-20"],
        newest: span("2020-03-04", 2),
    }
    # every name tells the truth: no day of another rollup between its first and last day
    for r, e in state["rollups"].items():
        lo, hi = (f"{x[:4]}-{x[4:6]}-{x[6:]}" for x in rollups.ROLLUP_RE.match(r).groups())
        inside = {d for o in state["rollups"].values() for d in o["days"] if lo <= d <= hi}
        assert inside == set(e["days"]), r
    s = status(tmp_path, "weekly")
    assert s["rollups"] == [
        {"name": leftover, "days": ["2020-02-20"]},
        {"name": newest, "days": span("2020-03-04", 2)},
    ]
    assert s["rollup"] == {"name": newest, "days": span("2020-03-04", 2)}
    # keep_rollups 2: the two made last stay, though the leftover's name sorts first
    assert [r for r in s["deleted"] if r.startswith("weekly_")] == [first]
    assert rollups.rollups(dest) == [leftover, newest]
    made = {r: e["created"] for r, e in state["rollups"].items()}
    assert made[first] < made[leftover] < made[newest]
    # nothing lost beyond the oldest: each kept rollup holds its days whole, as tested
    for r, held in ((leftover, ["2020-02-20"]), (newest, span("2020-03-04", 2))):
        assert sha256(dest / "rollups" / r) == state["rollups"][r]["sha256"]
        out = rollups.restore(dest, tmp_path / r, rollup=r)
        assert out["days"] == held and out["fetched"] is False
        for d in held:
            assert (tmp_path / r / d / "notes/plan.md").read_text() == f"plan of {d}\n"


def test_old_state_without_the_made_time_falls_back_to_the_archive_mtime(tmp_path):
    notes, dest, _ = setup(tmp_path, remote=False)
    for d in span("2020-03-01", 7):
        make(notes, dest, d)
    rollups.make_rollup(dest, 7)
    make(notes, dest, "2020-02-20")
    rollups.make_rollup(dest, 7)
    week, leftover = "weekly_20200301_20200307.tar.zst", "weekly_20200220_20200220.tar.zst"
    # state as written before rollups recorded when they were made (one entry garbled)
    state = rollups.read_state(dest)
    state["rollups"][week].pop("created", None)
    state["rollups"][leftover]["created"] = "last tuesday"
    rollups.write_state(dest, state)
    t0 = 1_600_000_000
    os.utime(dest / "rollups" / week, (t0, t0))
    os.utime(dest / "rollups" / leftover, (t0 + 3600, t0 + 3600))
    gone = rollups.retire(dest, "never", False, keep_rollups=1)
    assert gone == [week]
    assert rollups.rollups(dest) == [leftover]
    assert rollups.days(dest) == ["2020-02-20", *span("2020-03-01", 7)]  # policy: never
    assert rollups.restore(dest, tmp_path / "r", rollup=leftover)["days"] == ["2020-02-20"]
    assert (tmp_path / "r/2020-02-20/notes/plan.md").read_text() == "plan of 2020-02-20\n"


def test_a_damaged_rollup_is_refused_with_zstds_reason_and_its_whole_name(tmp_path, capsys):
    notes, dest, base = setup(tmp_path, remote=False)
    for d in span("2020-03-01", 2):
        (notes / "media.bin").write_bytes(os.urandom(300_000))
        make(notes, dest, d)
    rollups.make_rollup(dest, 7)
    name = "weekly_20200301_20200302.tar.zst"
    arch = dest / "rollups" / name
    data = bytearray(arch.read_bytes())
    data[len(data) // 2] ^= 0xFF
    arch.write_bytes(bytes(data))
    code, _, err = main(
        capsys,
        *base,
        "rollup",
        "restore",
        "--job",
        "weekly",
        "--rollup",
        name,
        "--target",
        tmp_path / "r",
    )
    assert code == 2
    assert f"strongroom: error: {name} cannot be decompressed: " in err, err
    reason = err.split(" cannot be decompressed: ", 1)[1].strip()
    # zstd's own reason, without its shortened name for the input
    assert reason and "stdin" not in reason and "tar.zst" not in reason, reason
    with pytest.raises(rollups.RollupError) as exc:
        rollups._check_archive(arch, {})
    text = str(exc.value)
    assert text.startswith(f"{name}: zstd -t failed: ")
    assert "tar.zst" not in text.removeprefix(name) and "stdin" not in text, text
    # nothing lost or left: the archive as it was, its days and the state untouched
    assert arch.read_bytes() == bytes(data)
    assert rollups.read_state(dest)["rollups"][name]["days"] == span("2020-03-01", 2)
    assert rollups.days(dest) == span("2020-03-01", 2)
    assert not (tmp_path / "r").exists() and not list(tmp_path.glob(".tmp-r*"))


def test_a_restore_says_whether_it_fetched_from_the_remote(tmp_path, capsys):
    notes, dest, base = setup(tmp_path)
    for d in span("2020-03-01", 2):
        make(notes, dest, d)
    rollups.make_rollup(dest, 7)
    name = "weekly_20200301_20200302.tar.zst"
    # on the remote (a local folder) as an upload leaves it; the days packed, then retired
    (tmp_path / "remote/rollups").mkdir(parents=True)
    shutil.copy2(dest / "rollups" / name, tmp_path / "remote/rollups" / name)
    assert rollups.retire(dest, "after_rollup", False) == span("2020-03-01", 2)
    restore = [*base, "rollup", "restore", "--job", "weekly", "--day"]
    code, out, _ = main(capsys, *restore, "2020-03-01", "--to", tmp_path / "r1", "--json")
    assert code == 0
    env = json.loads(out)
    assert env.pop("message").startswith(f"restored 2020-03-01 from {name}, found locally")
    assert env == {
        "result": "ok",
        "exit_code": 0,
        "days": ["2020-03-01"],
        "fetched": False,
        "target": str(tmp_path / "r1"),
        "from": str(dest / "rollups" / name),
    }
    code, out, _ = main(capsys, *restore, "2020-03-02", "--to", tmp_path / "r2")
    assert code == 0 and f"from {name}, found locally, into {tmp_path / 'r2'}" in out
    (dest / "rollups" / name).unlink()
    code, out, _ = main(capsys, *restore, "2020-03-01", "--to", tmp_path / "r3", "--json")
    assert code == 0
    fetched = f"local:{tmp_path / 'remote'}/rollups/{name}"
    env = json.loads(out)
    assert env.pop("message").startswith(f"restored 2020-03-01 from {name}, fetched from")
    assert env == {
        "result": "ok",
        "exit_code": 0,
        "days": ["2020-03-01"],
        "fetched": True,
        "target": str(tmp_path / "r3"),
        "from": fetched,
    }
    code, out, err = main(capsys, *restore, "2020-03-02", "--target", tmp_path / "r2b")
    assert '"--target" is now "--to"' in err  # the old spelling still works, and warns
    assert code == 0 and f"from {name}, fetched from the remote ({fetched}), into" in out
    for d, t in (
        ("2020-03-01", "r1"),
        ("2020-03-02", "r2"),
        ("2020-03-01", "r3"),
        ("2020-03-02", "r2b"),
    ):
        assert (tmp_path / t / d / "notes/plan.md").read_text() == f"plan of {d}\n"
    assert not list(dest.glob(".fetch-*"))


def test_rollup_list_help_speaks_of_no_target(tmp_path, capsys):
    code, out, _ = main(capsys, "rollup", "list", "--help")
    assert code == 0 and "exit codes: 0 ok, 1 warning" in " ".join(out.split())
    assert "target" not in out and "written" not in out
    code, out, _ = main(capsys, "rollup", "restore", "--help")
    assert code == 0 and "nothing was written under the target" in " ".join(out.split())


def test_run_date_makes_and_rolls_up_a_given_day_and_refuses_bad_ones(tmp_path, capsys):
    notes, dest, base = setup(tmp_path, remote=False)
    for d in span("2020-03-01", 2):
        (notes / "plan.md").write_text(f"plan of {d}\n")
        code, out, _ = main(capsys, *base, "run", "daily", "--date", d)
        assert code == 0 and f"run as on {d} (--date)" in out and f"day folder {d}" in out
        assert json.loads((dest / d / "manifest.json").read_text())["day"] == d
        assert status(tmp_path, "daily")["date"] == d
        # a catch-up is not today's scheduled run: --if-due still waits for that one
        assert status(tmp_path, "daily")["last_success"] is None
    assert rollups.dated_day() is None  # the day held for that run only
    code, out, _ = main(capsys, *base, "run", "weekly", "--date", "2020-03-03", "--json")
    assert code == 0
    s = json.loads(out)["status"]
    assert s["rollup"] == {
        "name": "weekly_20200301_20200302.tar.zst",
        "days": span("2020-03-01", 2),
    }
    assert s["deleted"] == span("2020-03-01", 2)  # no remote: tested locally, so they go
    # a day already rolled up gets no second, different copy
    (notes / "plan.md").write_text("changed since\n")
    code, out, _ = main(capsys, *base, "run", "daily", "--date", "2020-03-02")
    assert code == 0 and "2020-03-02 has its folder already" in out
    assert rollups.days(dest) == []
    restored = rollups.restore(dest, tmp_path / "r", day="2020-03-02")
    assert restored["days"] == ["2020-03-02"]
    assert (tmp_path / "r/2020-03-02/notes/plan.md").read_text() == "plan of 2020-03-02\n"
    # refused before the job starts: exit 2, no status, nothing made
    (tmp_path / "conf/jobs/snap.yml").write_text(
        f"name: snap\ntype: snapshot\noptions:\n  source: {notes}\n  dest: {tmp_path / 's'}\n"
    )
    tomorrow = (date.today() + timedelta(days=1)).isoformat()
    for args, message in (
        (["daily", "--date", "2020-02-30"], "--date wants a day as YYYY-MM-DD, got '2020-02-30'"),
        (["daily", "--date", "20200304"], "--date wants a day as YYYY-MM-DD, got '20200304'"),
        (["daily", "--date", tomorrow], f"--date {tomorrow} is in the future"),
        (
            ["daily", "--date", "2020-03-04", "--if-due"],
            "--date runs the job now as on that day; it does not go with --if-due",
        ),
        (
            ["snap", "--date", "2020-03-04"],
            "--date is for daily and rollup jobs; snap is a snapshot job",
        ),
    ):
        before = (tmp_path / "state/status/daily.json").read_bytes()
        code, out, err = main(capsys, *base, "run", *args)
        assert code == 2 and f"strongroom: error: {message}" in err, (args, err)
        assert (tmp_path / "state/status/daily.json").read_bytes() == before
    assert rollups.days(dest) == [] and not (tmp_path / "s").exists()
    assert not (tmp_path / "state/status/snap.json").exists()
    code, out, _ = main(capsys, *base, "run", "daily", "--if-due")
    assert code == 0 and f"day folder {date.today().isoformat()}" in out
    assert status(tmp_path, "daily")["last_success"] is not None


def restorable(dest, tmp_path, made):
    """Every day made so far comes back whole, from its folder or from a rollup."""
    for d in made:
        target = tmp_path / f"back-{len(list(tmp_path.glob('back-*')))}"
        assert rollups.restore(dest, target, day=d)["days"] == [d]
        assert (target / d / "notes/plan.md").read_text() == f"plan of {d}\n"


def run_and_check(capsys, base, notes, dest, tmp_path, made, job, day=None):
    """Run a job (as on `day`, with a note of that day); then every day made so far must
    still be restorable."""
    if day:
        (notes / "plan.md").write_text(f"plan of {day}\n")
        made.append(day)
    code, out, _ = main(capsys, *base, "run", job, *(["--date", day] if day else []))
    assert code == 0, out
    restorable(dest, tmp_path, made)
    return out


def test_a_rollup_made_while_the_clock_is_behind_keeps_it_and_its_days(tmp_path, capsys,
                                                                       monkeypatch):
    # no remote, one rollup kept: only the rollups here hold the days packed into them
    notes, dest, base = setup(tmp_path, remote=False, keep_rollups=1)
    today, made = date.today(), []

    def run(job, day=None):
        return run_and_check(capsys, base, notes, dest, tmp_path, made, job, day)

    for n in (12, 11, 10):
        run("daily", (today - timedelta(days=n)).isoformat())
    run("weekly")
    first = rollups.rollups(dest)
    assert len(first) == 1 and rollups.days(dest) == []
    # the clock put back 30 days (as a wrong system clock would): the rollup just made
    # reads as older than the first, and the first as made in the future
    real = rollups._clock()
    monkeypatch.setattr(rollups, "_clock", lambda: real - 30 * 86400)
    behind = today - timedelta(days=30)
    for n in (2, 1):
        run("daily", (behind - timedelta(days=n)).isoformat())
    out = run("weekly")
    packed = span((behind - timedelta(days=2)).isoformat(), 2)
    second = rollups.rollup_name(packed)
    assert f"packed 2 day(s) into {second}" in out
    assert sorted(rollups.rollups(dest)) == sorted([*first, second])
    # its day folders go, safe in the rollup that stays; no rollup goes
    assert (f"deleted day folder(s) {', '.join(packed)}: no remote; their days are held "
            f"by the rollup(s) kept here: {second}\n") in out + "\n"
    assert "safe elsewhere" not in out
    assert status(tmp_path, "weekly")["deleted"] == packed
    run("weekly")  # and again: the one from the future takes no place of the kept one
    assert sorted(rollups.rollups(dest)) == sorted([*first, second])


def test_rollups_made_in_a_run_are_not_retired_by_it(tmp_path, capsys):
    notes, dest, base = setup(tmp_path, remote=False, keep_rollups=1, per_rollup=3)
    for d in span("2020-03-01", 3):
        make(notes, dest, d)
    assert main(capsys, *base, "run", "weekly")[0] == 0
    # a leftover older day, and new days: two rollups in one run, one place kept
    make(notes, dest, "2020-02-20")
    for d in span("2020-03-04", 2):
        make(notes, dest, d)
    code, out, _ = main(capsys, *base, "run", "weekly")
    assert code == 0
    leftover, newest = "weekly_20200220_20200220.tar.zst", "weekly_20200304_20200305.tar.zst"
    assert rollups.rollups(dest) == [leftover, newest]
    assert status(tmp_path, "weekly")["deleted"] == [
        "2020-02-20", *span("2020-03-04", 2), "weekly_20200301_20200303.tar.zst"]
    for d in ["2020-02-20", *span("2020-03-04", 2)]:
        assert rollups.restore(dest, tmp_path / d, day=d)["days"] == [d]
        assert (tmp_path / d / d / "notes/plan.md").read_text() == f"plan of {d}\n"


@pytest.mark.parametrize("strict", ["daily", "weekly"])
def test_delete_days_never_on_either_job_keeps_the_days(tmp_path, capsys, strict):
    notes, dest, base = setup(tmp_path, remote=False)
    other = {"daily": "weekly", "weekly": "daily"}[strict]
    with open(tmp_path / "conf/jobs" / f"{strict}.yml", "a") as fh:
        fh.write("  delete_days: never\n")
    days_ = span("2020-03-01", 3)
    for d in days_[:2]:
        (notes / "plan.md").write_text(f"plan of {d}\n")
        assert main(capsys, *base, "run", "daily", "--date", d)[0] == 0
    code, out, _ = main(capsys, *base, "run", "weekly")
    assert code == 0 and "packed 2 day(s)" in out
    (notes / "plan.md").write_text(f"plan of {days_[2]}\n")
    code, out2, _ = main(capsys, *base, "run", "daily", "--date", days_[2])
    assert code == 0
    # neither job deleted a day: the rollup job's run, nor the daily job's after it
    assert rollups.days(dest) == days_
    assert status(tmp_path, "weekly")["deleted"] == status(tmp_path, "daily")["deleted"] == []
    # the job without a setting says whose policy it went by
    said = {"weekly": out, "daily": out2}[other]
    assert (f"delete_days: never, as job {strict} has it for {dest} "
            "(this job: after_rollup, by default)") in said
    assert status(tmp_path, other)["delete_days"] == {"policy": "never", "from": strict}
    assert status(tmp_path, strict)["delete_days"] == {"policy": "never", "from": strict}
    assert "delete_days:" not in {"weekly": out, "daily": out2}[strict]
    recorded = rollups.read_state(dest)["delete_days"]
    assert {j: (e["policy"], e["explicit"]) for j, e in recorded.items()} == {
        strict: ("never", True), other: ("after_rollup", False)}


def test_state_without_policy_records_retires_as_before(tmp_path, capsys):
    notes, dest, base = setup(tmp_path, remote=False)
    for d in span("2020-03-01", 2):
        make(notes, dest, d)
    rollups.make_rollup(dest, 7)
    state = rollups.read_state(dest)
    assert "delete_days" not in state  # as a dest from before the records
    code, out, _ = main(capsys, *base, "run", "weekly")
    assert code == 0 and "delete_days:" not in out
    assert status(tmp_path, "weekly")["deleted"] == span("2020-03-01", 2)
    assert rollups.read_state(dest)["delete_days"]["weekly"]["policy"] == "after_rollup"


def test_keep_rollups_of_the_rollup_job_holds_for_the_daily_job_without_a_remote(tmp_path,
                                                                                  capsys):
    # the daily job sets no keep_rollups (default 12), the rollup job 20, one day each;
    # without a remote the rollups are the only copies of their days
    notes, dest, base = setup(tmp_path, remote=False, keep_rollups=20, per_rollup=1)
    today, made = date.today(), []
    outs = []

    def run(job, day=None):
        out = run_and_check(capsys, base, notes, dest, tmp_path, made, job, day)
        outs.append(out)
        assert "safe elsewhere" not in out  # nothing here is elsewhere
        return out

    past = [(today - timedelta(days=n)).isoformat() for n in range(16, 1, -1)]
    for d in past:
        run("daily", d)
    out = run("weekly")
    assert len(rollups.rollups(dest)) == 15 and rollups.days(dest) == []
    assert (f"deleted day folder(s) {', '.join(past)}: no remote; their days are held by "
            f"the rollup(s) kept here: {', '.join(map(rollups.rollup_name, ([d] for d in past)))}"
            ) in out
    (notes / "plan.md").write_text(f"plan of {today.isoformat()}\n")
    made.append(today.isoformat())
    out = run("daily")
    # the daily job's default 12 would delete three of the fifteen: those days then lost
    assert len(rollups.rollups(dest)) == 15
    assert status(tmp_path, "daily")["deleted"] == []
    assert (f"keep_rollups: 20, as job weekly has it for {dest} (this job: 12, by default)"
            in out)
    assert status(tmp_path, "daily")["keep_rollups"] == {"count": 20, "from": "weekly"}
    assert status(tmp_path, "weekly")["keep_rollups"] == {"count": 20, "from": "weekly"}
    assert "keep_rollups:" not in outs[len(past)]  # the rollup job went by its own
    recorded = rollups.read_state(dest)["keep_rollups"]
    assert {j: (e["count"], e["explicit"]) for j, e in recorded.items()} == {
        "weekly": (20, True), "daily": (12, False)}


def test_the_largest_keep_rollups_set_applies_and_a_lost_day_is_said(tmp_path, capsys):
    notes, dest, base = setup(tmp_path, remote=False, keep_rollups=1, per_rollup=1)
    with open(tmp_path / "conf/jobs/daily.yml", "a") as fh:
        fh.write("  keep_rollups: 2\n")
    days_ = span("2020-03-01", 4)
    for d in days_:
        (notes / "plan.md").write_text(f"plan of {d}\n")
        assert main(capsys, *base, "run", "daily", "--date", d)[0] == 0
    code, out, _ = main(capsys, *base, "run", "weekly")
    assert code == 0 and len(rollups.rollups(dest)) == 4  # made in this run: all stay
    assert "keep_rollups: 2, as job daily has it" in out  # the rollup job's 1 is smaller
    code, out, _ = main(capsys, *base, "run", "daily", "--date", "2020-03-05")
    assert code == 0 and "keep_rollups:" not in out  # its own, the largest
    names = [rollups.rollup_name([d]) for d in days_]
    assert rollups.rollups(dest) == names[2:]
    assert (f"deleted rollup(s) beyond keep_rollups 2: {', '.join(names[:2])}: no remote; "
            f"2 day(s) no longer kept anywhere: {', '.join(days_[:2])}") in out
    assert "safe elsewhere" not in out
    for d in days_[2:]:
        assert rollups.restore(dest, tmp_path / d, day=d)["days"] == [d]
    code, out, _ = main(capsys, *base, "run", "weekly")
    # it packs 2020-03-05 and keeps two, as the daily job has it: not one, its own
    assert code == 0 and rollups.rollups(dest) == [names[3], rollups.rollup_name(["2020-03-05"])]
    assert f"keep_rollups: 2, as job daily has it for {dest} (this job: 1)" in out
