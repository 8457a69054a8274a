"""Restore drills of snapshot jobs: a full and a critical restore of real snapshots, from
the local folder and from the off-site copy alone, checked against SHA256SUMS and
REPORT.json, timed, and cleaned up."""

import json
import os
import sqlite3

from strongroom import snapshots
from tests.cli.test_output import on_a_terminal
from tests.drill.test_drill import sr, status_of
from tests.snapshots.test_snapshots import make_source


def snapshot_job(tmp, conf, remote=True, name="snap"):
    """A snapshot job over a real source (files, a symlink, a WAL database, a .env)."""
    src = make_source(tmp)
    (src / ".env").write_text("API_KEY=canary\n")
    os.chmod(src / ".env", 0o600)
    (conf / "jobs" / f"{name}.yml").write_text(
        f"name: {name}\ntype: snapshot\noptions:\n  source: {src}\n  dest: {tmp / 'snaps'}\n"
        "  critical: ['*.md', 'config/*.json', '.env']\n  db: [data/app.db]\n"
        "  immutable: 'off'\n  exclude: [build/]\n"
        + (f"  remote: {tmp / 'offsite'}\n" if remote else ""))
    return src


def drill_job(conf, options="  source: both\n"):
    (conf / "jobs" / "drill.yml").write_text(
        "name: drill\ntype: drill\nschedule: weekly sun 04:30\noptions:\n" + options)


def files_of(path):
    """{relative path: bytes} of every file under path."""
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and not p.is_symlink()}


def add_rows(src, n):
    con = sqlite3.connect(src / "data/app.db")
    con.executemany("INSERT INTO notes (body) VALUES (?)", [(f"x{i}",) for i in range(n)])
    con.commit()
    con.close()


def test_the_newest_and_an_older_snapshot_restore_locally_and_from_the_remote(bed):
    tmp, _, conf, state = bed
    src = snapshot_job(tmp, conf)
    for _ in range(3):  # three snapshots: the newest, and the older two in turn
        add_rows(src, 1)
        sr(conf, state, "run", "snap", check=0)
    ids = snapshots.snapshot_ids(tmp / "snaps")
    assert len(ids) == 3
    drill_job(conf)
    before = files_of(tmp / "snaps"), files_of(tmp / "offsite")
    proc = sr(conf, state, "run", "drill", check=0)
    assert "4 of 4 restores passed" in proc.stdout
    st = status_of(state, "drill")
    got = [(a["kind"], a["name"], a["source"]) for a in st["artifacts"]]
    assert got == [("snapshot", ids[2], "local"), ("snapshot", ids[0], "local"),
                   ("snapshot", ids[2], "remote"), ("snapshot", ids[0], "remote")]
    for a in st["artifacts"]:
        assert a["result"] == "ok" and a["duration_seconds"] > 0 and a["bytes"] > 3 << 20
        # make_source: 5 files in the archive, the database put back, 3 critical files
        assert a["files"] == 9, a
        assert a["message"] == ("full restore: 6 files as REPORT.json counts, 1 database(s) "
                                "pass integrity_check with REPORT.json's row counts, "
                                "critical restore: 3 files match SHA256SUMS")
    assert "KIND" in proc.stdout and "RTO" in proc.stdout
    # the next drill takes the other older one: rotation, not chance
    sr(conf, state, "run", "drill", check=0)
    st = status_of(state, "drill")
    assert [a["name"] for a in st["artifacts"]] == [ids[2], ids[1], ids[2], ids[1]]
    # nothing written to the snapshots or the remote, nothing left in scratch
    assert (files_of(tmp / "snaps"), files_of(tmp / "offsite")) == before
    assert list((state / "drill").iterdir()) == []
    assert not (tmp / "snaps" / ".in-use").exists() or \
        list((tmp / "snaps" / ".in-use").iterdir()) == []


def test_row_counts_that_differ_from_the_report_fail_the_drill(bed):
    """The snapshot's REPORT.json is rewritten (with its SHA256SUMS line, as a careful
    attacker or a bug would) to claim more rows than the database holds."""
    tmp, _, conf, state = bed
    snapshot_job(tmp, conf, remote=False)
    sr(conf, state, "run", "snap", check=0)
    (snap_id,) = snapshots.snapshot_ids(tmp / "snaps")
    folder = tmp / "snaps" / snap_id
    report = json.loads((folder / "REPORT.json").read_text())
    assert report["databases"][0]["tables"] == {"notes": 50}
    report["databases"][0]["tables"] = {"notes": 51}
    (folder / "REPORT.json").write_text(json.dumps(report))
    rewrite_sum(folder, "REPORT.json")
    drill_job(conf, "  source: local\n")
    before = files_of(tmp / "snaps")
    proc = sr(conf, state, "run", "drill", check=2)
    assert (f"snap/{snap_id} (local): snapshot {snap_id}: database data/app.db: "
            "table 'notes' has 50 rows restored, REPORT.json recorded 51") in proc.stdout
    assert files_of(tmp / "snaps") == before
    assert list((state / "drill").iterdir()) == []


def rewrite_sum(folder, rel):
    import hashlib

    digest = hashlib.sha256((folder / rel).read_bytes()).hexdigest()
    lines = (folder / "SHA256SUMS").read_text().splitlines()
    out = [f"{digest}  {rel}" if line.endswith(f"  {rel}") else line for line in lines]
    (folder / "SHA256SUMS").write_text("\n".join(out) + "\n")


def test_a_snapshot_job_without_snapshots_says_what_to_do(bed):
    tmp, _, conf, state = bed
    src = tmp / "empty-project"
    src.mkdir()
    (conf / "jobs" / "snap.yml").write_text(
        f"name: snap\ntype: snapshot\noptions:\n  source: {src}\n  dest: {tmp / 'snaps'}\n"
        "  immutable: 'off'\n")
    sr(conf, state, "run", "snap", check=1)  # nothing to back up: no snapshot
    drill_job(conf, "  source: both\n")
    proc = sr(conf, state, "run", "drill", check=1)
    assert (f"nothing to test: no snapshots found to restore in {tmp / 'snaps'} (job snap, "
            f"which snapshots {src}: run it once its source holds files)") in proc.stdout
    assert "snap: no remote configured; its off-site copy cannot be drilled" in proc.stdout


def test_the_drill_verb_filters_by_kind_and_prints_the_kind(bed):
    tmp, root, conf, state = bed
    snapshot_job(tmp, conf, remote=False)
    sr(conf, state, "run", "snap", check=0)
    (conf / "jobs" / "bundles.yml").write_text(
        f"name: bundles\ntype: bundle\noptions:\n  root: {root}\n  store: {tmp / 'store'}\n")
    sr(conf, state, "run", "bundles", check=0)
    proc = sr(conf, state, "drill", "--kind", "snapshot", "--json", check=0)
    out = json.loads(proc.stdout)
    assert [a["kind"] for a in out["artifacts"]] == ["snapshot"]
    assert out["result"] == "ok" and out["message"].startswith("1 of 1 restores passed")
    proc = sr(conf, state, "drill", check=0)
    rows = [line.split()[:4] for line in proc.stdout.splitlines()[:3]]
    assert rows[0] == ["JOB", "KIND", "NAME", "FROM"]
    assert [r[:2] for r in rows[1:]] == [["bundles", "bundle_chain"], ["snap", "snapshot"]]
    proc = sr(conf, state, "drill", "--job", "bundles", "--kind", "snapshot", check=2)
    assert "--kind snapshot leaves out job bundles (bundle_chain)" in proc.stderr
    code, _, seen = on_a_terminal("--config-dir", conf, "--state-dir", state, "drill")
    assert code == 0
    assert [line.split()[0] for line in seen.splitlines() if "/" in line and ": ok in" in line] \
        == ["bundle_chain", "snapshot"]  # one progress line per restore, with its kind
    help_text = sr(conf, state, "drill", "--help", check=0).stdout
    assert "--kind KIND" in help_text and "RTO" in help_text


def test_a_snapshot_folder_gone_after_the_job_ran_is_an_error_not_nothing(bed):
    tmp, root, conf, state = bed
    snapshot_job(tmp, conf, remote=False)
    sr(conf, state, "run", "snap", check=0)
    (tmp / "snaps").rename(tmp / "unmounted")  # a backup disk that is not there today
    drill_job(conf, "  source: local\n")
    proc = sr(conf, state, "run", "drill", check=2)
    assert (f"snap/* (local): snapshot folder {tmp / 'snaps'} does not exist, yet job snap "
            "has run: is its disk mounted, or was the folder moved or deleted?") in proc.stdout
    assert not (tmp / "snaps").exists()  # the drill made nothing in its place
    assert list((state / "drill").iterdir()) == []
