"""inventory/local, as `make run` uses it, provisioned into a temporary home.

Every path is redirected under the test's directory (a user-mode install with its own
home, systemd units written there), as tests/integration/test_playbooks.py does, so the
machine's /opt, /etc and crontab are never touched. The inventory's own job list is used.
"""

import json
import subprocess

import pytest
import yaml

from tests.helpers import ENV, ROOT, commit, g, init, rich_repo
from tests.integration.test_playbooks import changed, play, task_results

pytestmark = pytest.mark.slow

# one job of every type, under the names that work today
TYPES = {"bundle", "drill", "status", "sync", "snapshot", "checkpoint",
         "daily", "rollup", "bisync", "restic", "db"}
ORDER_LAST = ["projects-rollup", "restore-drill", "stale-check"]


def inventory_jobs():
    data = yaml.safe_load((ROOT / "inventory/local/group_vars/all.yml").read_text())
    return {j["name"]: j["type"] for j in data["strongroom_jobs_list"]}


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    base = tmp_path_factory.mktemp("local")
    home = base / "home"
    home.mkdir()
    extravars = {
        "strongroom_install_mode": "user",
        "strongroom_home": str(home),
        "strongroom_offsite_dir": str(base / "offsite"),
        # systemd units land under this test's home; cron would mean root's real crontab
        "strongroom_scheduler": "systemd",
    }
    engine = home / ".local/share/strongroom/venv/bin/strongroom"
    return base, home, engine, extravars


def sr(home, engine, *args, check=None):
    proc = subprocess.run([str(engine), "--config-dir", str(home / ".config/strongroom"),
                           "--state-dir", str(home / ".local/state/strongroom"), *args],
                          capture_output=True, text=True, env=ENV, check=False)
    if check is not None:
        assert proc.returncode == check, f"{args}: exit {proc.returncode}\n{proc.stdout}" \
                                         f"\n{proc.stderr}"
    return proc


def statuses(home, engine):
    """Each job's status file, as its last run wrote it (the jobs `status --json` lists)."""
    listed = json.loads(sr(home, engine, "status", "--json").stdout)["jobs"]
    folder = home / ".local/state/strongroom/status"
    return {r["job"]: json.loads((folder / f"{r['job']}.json").read_text()) for r in listed
            if (folder / f"{r['job']}.json").exists()}


def test_every_type_is_configured():
    jobs = inventory_jobs()
    assert set(jobs.values()) == TYPES and len(jobs) == len(TYPES)


def test_a_fresh_machine_runs_every_job_and_each_says_what_to_put_where(local):
    base, home, engine, extravars = local
    stats, _, _ = play(base, "site.yml", extravars)
    assert changed(stats) > 0
    projects, state = home / "projects", home / ".local/state/strongroom"
    offsite, conf = base / "offsite", home / ".config/strongroom"
    assert {p.stem for p in (conf / "jobs").glob("*.yml")} == set(inventory_jobs())
    assert sorted(p.name for p in projects.iterdir()) == ["notes"]  # created empty
    pw = conf / "secrets" / "restic.pw"
    assert oct(pw.stat().st_mode & 0o777) == "0o600" and len(pw.read_text().strip()) == 32
    # every job once, through the runner: warnings are reported, they fail no host
    stats, stdout, r = play(base, "backup-now.yml", extravars)
    assert changed(stats) == 0
    (report,) = [x["msg"] for x in task_results(r, "Report each job's result")]
    assert [line.split(":")[0] for line in report[-3:]] == ORDER_LAST
    assert len(report) == len(inventory_jobs())
    listed = json.loads(sr(home, engine, "jobs", "list", "--json").stdout)["jobs"]
    assert {row["job"]: row["last_result"] for row in listed} == {
        n: "ok" if n == "stale-check" else "warning" for n in inventory_jobs()}
    rows = statuses(home, engine)
    assert set(rows) == set(inventory_jobs()) and len({r["type"] for r in rows.values()}) == 11
    msg = {n: r["message"] for n, r in rows.items()}
    # the embedded default names every type as it is called today: no run warns of one
    logs = "".join(p.read_text() for p in (state / "log").glob("*.log"))
    assert "run started" in logs and "the old name will be removed" not in logs
    assert all(f"{n}: warning (exit 1): {msg[n]}" in report for n in msg if n != "stale-check")
    assert msg["bundles"] == (
        f"No git repositories found under {projects}: nothing to back up. Put (or clone) your "
        f"repositories in {projects}, or set the job's options.root to the folder that holds "
        "them.")
    for name in ("projects-snapshot", "projects-daily", "projects-restic"):
        assert msg[name].startswith(f"nothing to back up: {projects} holds no files; put "), name
    assert msg["app-db"].startswith(f"nothing to back up: {projects}/app.db does not exist; "
                                    "put the SQLite database")
    assert msg["notes-checkpoint"].startswith(f"nothing to checkpoint: {projects}/notes is "
                                              "empty; clone (or git init) the repository")
    assert (f"nothing to sync: {projects}/notes is empty; clone the repository to keep in step "
            f"there (git init --bare {offsite}/notes.git; git clone {offsite}/notes.git "
            f"{projects}/notes)") in msg["notes-sync"]
    assert msg["shared-bisync"].startswith(f"nothing to sync yet: {projects}/shared does not "
                                           "exist; create it and put in it the files")
    assert msg["projects-rollup"].startswith(f"nothing to roll up: {state}/daily holds no day "
                                             "folders yet")
    assert msg["restore-drill"].startswith("nothing to test: ")
    assert f"no bundle chains found to restore in {state}/bundles (job bundles" in \
        msg["restore-drill"]
    assert f"no snapshots found to restore in {state}/snapshots/projects (job " \
           "projects-snapshot" in msg["restore-drill"]
    assert "put (or clone) repositories there" in msg["restore-drill"]
    # nothing was written off-site, and no backup was made of nothing
    assert sorted(p.name for p in offsite.iterdir()) == ["shared"]
    assert not [p for p in (state / "snapshots/projects").iterdir() if p.name[0] != "."]
    # a second make run: provisioning changes nothing (the restic password is derived, not
    # drawn), and the jobs, run as run-local runs them, change nothing either
    _, _, r = play(base, "site.yml", extravars)
    # (the engine is reinstalled only when the checkout it is built from changed meanwhile;
    # test_playbooks.py proves a second run of an unchanged checkout changes nothing)
    assert [e["event_data"]["task"] for e in r.events
            if e.get("event") in ("runner_on_ok", "runner_item_on_ok")
            and e["event_data"]["res"].get("changed")
            and "engine" not in e["event_data"]["task"]] == []
    for row in listed:
        args = ["run", row["job"], "--json"] + (["--if-due"] if row["last_result"] == "ok"
                                                 else [])
        out = json.loads(sr(home, engine, *args).stdout)
        assert out["status"]["changed"] is False, (row["job"], out)


def fill(base, home):
    """What a user puts there: a repository, a database, the notes pair, a shared folder."""
    projects = home / "projects"
    app = rich_repo(projects / "app")
    commit(app, {".gitignore": ".env\n"}, "ignore env")
    (app / ".env").write_text("API_TOKEN=canary-77d1\n")
    subprocess.run(["sqlite3", str(projects / "app.db"),
                    "create table t (x); insert into t values (1);"], check=True)
    bare = init(base / "offsite" / "notes.git", bare=True)
    g(projects, "clone", "-q", str(bare), "notes")
    (projects / "notes" / "todo.md").write_text("- write the report\n")
    (projects / "shared").mkdir()
    (projects / "shared" / "plan.txt").write_text("the plan\n")


def test_backup_now_runs_every_job_through_the_runner(local):
    base, home, engine, extravars = local
    fill(base, home)
    before = statuses(home, engine)
    stats, stdout, r = play(base, "backup-now.yml", extravars)
    rows = statuses(home, engine)
    assert set(rows) == set(inventory_jobs())
    for name, row in rows.items():
        assert row["result"] == "ok", (name, row["message"])
        assert row["started"] >= before[name]["finished"], name  # this run's, not the last
    (report,) = [x["msg"] for x in task_results(r, "Report each job's result")]
    assert len(report) == len(rows)
    assert [line.split(":")[0] for line in report[-3:]] == ORDER_LAST
    assert all(": ok (exit 0): " in line for line in report), report
    offsite = base / "offsite"
    assert (offsite / "bundles" / "app" / "bundle-manifest.json").exists()
    assert (offsite / "shared" / "plan.txt").read_text() == "the plan\n"
    branch = g(home / "projects/notes", "symbolic-ref", "--short", "HEAD").strip()
    assert g(offsite / "notes.git", "log", "-1", "--format=%s", branch).startswith("sync: ")
    assert list((offsite / "db" / "backups" / "app.db").glob("*_app.db"))
    assert (offsite / "restic" / "config").exists()
    # app, from the store and from the remote (notes had no commit when it was bundled),
    # the snapshot and the checkpoint, and every other job's backups the drill reaches
    drilled = {(a["job"], a["kind"], a["source"]) for a in rows["restore-drill"]["artifacts"]}
    assert {("bundles", "bundle_chain", "local"), ("bundles", "bundle_chain", "remote"),
            ("projects-snapshot", "snapshot", "local"),
            ("notes-checkpoint", "checkpoint", "local")} <= drilled
    n = len(rows["restore-drill"]["artifacts"])
    assert rows["restore-drill"]["message"].startswith(f"{n} of {n} restores passed")
    assert changed(stats) > 0
    # the events never carry the secret file's content
    assert "canary-77d1" not in stdout + json.dumps([e.get("event_data", {})
                                                     for e in r.events])


def test_backup_now_runs_the_named_jobs_and_fails_a_host_whose_job_failed(local):
    base, home, engine, extravars = local
    before = statuses(home, engine)
    play(base, "backup-now.yml", dict(extravars, jobs="bundles, app-db"))
    rows = statuses(home, engine)
    ran = {n for n in rows if rows[n]["started"] != before[n]["started"]}
    assert ran == {"bundles", "app-db"}
    _, stdout, _ = play(base, "backup-now.yml", dict(extravars, jobs="bundles,nope"),
                        expect_rc=2)
    assert "no host in this play has a job named nope" in stdout
    assert statuses(home, engine)["bundles"]["started"] == rows["bundles"]["started"]
    # a job that fails fails the host, after every other job has had its run
    bare = base / "offsite" / "notes.git"
    bare.rename(bare.with_name("away.git"))
    try:
        (home / "projects/notes/todo.md").write_text("- and send it\n")
        _, stdout, r = play(base, "backup-now.yml", extravars, expect_rc=2)
    finally:
        bare.with_name("away.git").rename(bare)
    assert "localhost: notes-sync failed (exit 2)" in stdout
    after = statuses(home, engine)
    assert after["notes-sync"]["result"] == "error"
    assert after["stale-check"]["started"] > rows["stale-check"]["started"]  # it still ran
    (report,) = [x["msg"] for x in task_results(r, "Report each job's result")]
    assert any(line.startswith("notes-sync: error (exit 2): ") for line in report), report


def test_sync_yml_pushes_then_pulls_and_check_mode_touches_nothing(local):
    base, home, engine, extravars = local
    projects, bare = home / "projects", base / "offsite" / "notes.git"
    other = home / "elsewhere" / "notes"
    other.parent.mkdir()
    g(other.parent, "clone", "-q", str(bare), "notes")
    jobs = [{"name": "notes-sync", "type": "git_sync",
             "options": {"repo": str(projects / "notes"), "remote": str(bare),
                         "direction": "push", "role": "primary"}},
            {"name": "notes-pull", "type": "git_sync",
             "options": {"repo": str(other), "remote": str(bare), "direction": "pull",
                         "role": "secondary"}}]
    vars_ = dict(extravars, strongroom_jobs_list=jobs)
    (projects / "notes" / "idea.md").write_text("idea from the playbook\n")
    branch = g(other, "symbolic-ref", "--short", "HEAD").strip()
    before = g(other, "rev-parse", "HEAD"), g(bare, "rev-parse", branch)
    # (a runner directory of its own: ansible-runner keeps the command line of a run there)
    stats, _, r = play(base / "check", "sync.yml", vars_, check=True)
    items = {e["event_data"]["task"]: e["event_data"]["res"] for e in r.events
             if e.get("event") == "runner_item_on_ok"}
    assert items["Push from the primaries"]["message"].startswith("would commit")
    # the pull cannot know before the push (it would set up its merge drivers, though)
    assert items["Pull on the secondaries"]["message"] == "already up to date"
    assert (g(other, "rev-parse", "HEAD"), g(bare, "rev-parse", branch)) == before
    assert not (other / "idea.md").exists()
    stats, _, r = play(base, "sync.yml", vars_)
    assert changed(stats) == 2
    assert [e["event_data"]["task"] for e in r.events if e.get("event") == "runner_item_on_ok"
            and e["event_data"]["res"].get("changed")] == ["Push from the primaries",
                                                            "Pull on the secondaries"]
    assert (other / "idea.md").read_text() == "idea from the playbook\n"
    stats, _, _ = play(base, "sync.yml", vars_)
    assert changed(stats) == 0
