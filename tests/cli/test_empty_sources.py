"""A job whose source holds nothing yet ends with a warning (exit 1) that says what to put
where, writes no backup, and records `warning` in its status: a fresh machine's first run."""

import json

import pytest

from tests.helpers import commit, init, strongroom

OFFSITE = "[offsite]\ntype = local\n"


@pytest.fixture
def host(tmp_path):
    """Config and state directories, an rclone.conf with a local folder, and an empty
    projects folder."""
    conf, state = tmp_path / "conf", tmp_path / "state"
    (conf / "jobs").mkdir(parents=True)
    (conf / "rclone.conf").write_text(OFFSITE)
    (conf / "rclone.conf").chmod(0o600)
    projects = tmp_path / "projects"
    projects.mkdir()
    return tmp_path, conf, state, projects


def job(conf, name, type_, options=None):
    text = f"name: {name}\ntype: {type_}\n"
    if options is not None:
        text += "options: " + json.dumps(options) + "\n"
    (conf / "jobs" / f"{name}.yml").write_text(text)


def run(conf, state, name):
    """`strongroom run NAME`: exit 1, and the status says warning with the same message."""
    proc = strongroom("--config-dir", conf, "--state-dir", state, "run", name, check=1)
    st = json.loads((state / "status" / f"{name}.json").read_text())
    assert (st["result"], st["exit_code"], st["changed"]) == ("warning", 1, False)
    assert st["message"] in proc.stdout
    assert st["last_success"]  # a warning is a finished run: the job is not due again
    return st["message"]


def test_bundles_with_no_repositories_say_where_to_put_them(host):
    tmp, conf, state, projects = host
    (projects / "notes").mkdir()  # a folder that is no repository
    job(conf, "bundles", "bundle_sync", {"root": str(projects), "store": str(tmp / "store")})
    msg = run(conf, state, "bundles")
    assert msg == (f"No git repositories found under {projects}: nothing to back up. Put (or "
                   f"clone) your repositories in {projects}, or set the job's options.root to "
                   "the folder that holds them.")
    proc = strongroom("bundle", "sync", "--root", projects, "--store", tmp / "store2", check=1)
    assert msg in proc.stdout


def test_an_empty_snapshot_source_makes_no_snapshot(host):
    tmp, conf, state, projects = host
    (projects / "empty" / ".git").mkdir(parents=True)  # left out of snapshots: no files
    dest = tmp / "snaps"
    job(conf, "snap", "snapshot", {"source": str(projects), "dest": str(dest),
                                   "immutable": "off", "keep_last": 2, "keep_days": 1})
    msg = run(conf, state, "snap")
    assert msg == (f"nothing to back up: {projects} holds no files; put the files to snapshot "
                   f"in {projects}, or set the job's options.source to the folder that holds "
                   "them")
    assert [p.name for p in dest.iterdir() if not p.name.startswith(".")] == []
    proc = strongroom("backup", "now", "--source", projects, "--dest", dest, "--immutable",
                      "off", check=1)
    assert f"strongroom: warning: {msg}" in proc.stderr  # a warning, labelled as one


def test_an_empty_checkpoint_source_says_to_clone_a_repository_there(host):
    tmp, conf, state, projects = host
    init(projects)  # even inside another work tree, an empty folder is not that tree
    notes = projects / "notes"
    notes.mkdir()
    job(conf, "wip", "checkpoint", {"source": str(notes), "dest": str(tmp / "ckpt")})
    msg = run(conf, state, "wip")
    assert msg == (f"nothing to checkpoint: {notes} is empty; clone (or git init) the "
                   "repository whose uncommitted work to checkpoint there, or set the job's "
                   "options.source to its work tree")
    assert not (tmp / "ckpt" / "progress").exists()


def test_empty_daily_sources_make_no_day_folder_and_the_rollup_says_why(host):
    tmp, conf, state, projects = host
    (projects / "notes").mkdir()
    dest, remote = tmp / "daily", f"offsite:{tmp / 'offsite'}"
    job(conf, "daily", "daily", {"sources": [str(projects)], "dest": str(dest),
                                 "remote": remote})
    job(conf, "weekly", "rollup", {"dest": str(dest), "remote": remote})
    msg = run(conf, state, "daily")
    assert msg == (f"nothing to back up: {projects} holds no files; put the files to keep a "
                   f"copy of each day in {projects}, or set the job's options.sources to the "
                   "folders that hold them")
    assert [p.name for p in dest.iterdir() if not p.name.startswith(".")] == []
    assert not (tmp / "offsite").exists()
    msg = run(conf, state, "weekly")
    assert msg == (f"nothing to roll up: {dest} holds no day folders yet; the daily job "
                   f"writing to {dest} makes one a day from its sources (put files in them), "
                   "or set the job's options.dest to that job's dest")
    # once there is a day folder (today's, not packed yet), there is merely nothing to do
    (projects / "notes" / "todo.md").write_text("x\n")
    strongroom("--config-dir", conf, "--state-dir", state, "run", "daily", check=0)
    proc = strongroom("--config-dir", conf, "--state-dir", state, "run", "weekly", check=0)
    assert "nothing to roll up" in proc.stdout


def test_a_missing_database_never_backed_up_says_where_to_put_it(host):
    tmp, conf, state, projects = host
    db = projects / "app.db"
    job(conf, "app-db", "db_backup", {"db": str(db), "remote": f"offsite:{tmp / 'offsite'}"})
    msg = run(conf, state, "app-db")
    assert msg == (f"nothing to back up: {db} does not exist; put the SQLite database to keep "
                   f"versions of at {db} (or a link to it), or set the job's options.db to its "
                   "path")
    assert not (tmp / "offsite").exists()


def test_an_empty_sync_repository_says_how_to_make_it(host):
    tmp, conf, state, projects = host
    notes, bare = projects / "notes", tmp / "offsite" / "notes.git"
    notes.mkdir()
    job(conf, "notes", "git_sync", {"repo": str(notes), "remote": str(bare),
                                    "direction": "push", "role": "primary"})
    msg = run(conf, state, "notes")
    assert msg == (f"nothing to sync: {notes} is empty; clone the repository to keep in step "
                   f"there (git init --bare {bare}; git clone {bare} {notes}), or set the "
                   "job's options.repo to its work tree")
    assert list(notes.iterdir()) == [] and not bare.exists()
    # with the bare repository made, the hint is the clone alone
    init(bare, bare=True)
    assert f"(git clone {bare} {notes})" in run(conf, state, "notes")


def test_a_bisync_folder_not_made_yet_says_to_make_it(host):
    tmp, conf, state, projects = host
    shared, remote = projects / "shared", f"offsite:{tmp / 'offsite' / 'shared'}"
    job(conf, "shared", "bisync", {"local": str(shared), "remote": remote})
    msg = run(conf, state, "shared")
    assert msg == (f"nothing to sync yet: {shared} does not exist; create it and put in it the "
                   f"files to keep in two-way sync with {remote} (the first run copies what "
                   "either side holds to the other), or set the job's options.local to the "
                   "folder to sync")
    assert not shared.exists() and not (tmp / "offsite").exists()
    # once it has been synced, a missing folder is an error (an unmounted disk?)
    shared.mkdir()
    (tmp / "offsite" / "shared").mkdir(parents=True)
    (shared / "a.txt").write_text("a\n")
    strongroom("--config-dir", conf, "--state-dir", state, "run", "shared", check=0)
    (shared / "a.txt").unlink()
    (shared / "RCLONE_TEST").unlink()
    shared.rmdir()
    proc = strongroom("--config-dir", conf, "--state-dir", state, "run", "shared", check=2)
    assert f"local folder {shared} does not exist" in proc.stdout


def test_empty_restic_paths_make_no_repository(host):
    tmp, conf, state, projects = host
    (projects / "notes").mkdir()
    pw = conf / "restic.pw"
    pw.write_text("not a secret\n")
    pw.chmod(0o600)
    repo = tmp / "restic"
    job(conf, "weekly", "restic", {"repository": str(repo), "password_file": str(pw),
                                   "paths": [str(projects)]})
    msg = run(conf, state, "weekly")
    assert msg == (f"nothing to back up: {projects} holds no files; put the files to back up "
                   f"in {projects}, or set the job's options.paths to the folders that hold "
                   "them")
    assert not repo.exists()


def test_a_drill_with_no_chains_says_which_job_fills_them(host):
    tmp, conf, state, projects = host
    store = tmp / "store"
    job(conf, "bundles", "bundle_sync", {"root": str(projects), "store": str(store)})
    job(conf, "drill", "restore_drill", {"source": "local"})
    strongroom("--config-dir", conf, "--state-dir", state, "run", "bundles", check=1)
    msg = run(conf, state, "drill")
    assert msg == (f"nothing to test: no bundle chains found to restore in {store} (job "
                   f"bundles, which bundles the repositories under {projects}: put (or clone) "
                   "repositories there and run it)")
    # and with a repository there, the drill has its chain
    commit(init(projects / "app"), {"a.txt": "a\n"})
    strongroom("--config-dir", conf, "--state-dir", state, "run", "bundles", check=0)
    proc = strongroom("--config-dir", conf, "--state-dir", state, "run", "drill", check=0)
    assert "1 of 1 restores passed" in proc.stdout


def test_a_drill_with_no_bundle_job_says_to_add_one(host):
    tmp, conf, state, projects = host
    job(conf, "drill", "restore_drill")
    msg = run(conf, state, "drill")
    assert msg.startswith("nothing to test: no job to drill; add one of type bundle, ")
    assert "snapshot" in msg and "checkpoint" in msg
    assert msg.endswith("(what it backs up is what a drill restores), or name such jobs in "
                        "options.jobs")


def test_an_empty_day_still_sends_the_days_an_earlier_run_could_not(host):
    """Sources emptied after a day whose upload failed: the next run says there is nothing
    to back up today and still sends (and verifies) the day that waited."""
    tmp, conf, state, projects = host
    (projects / "notes").mkdir()
    (projects / "notes" / "todo.md").write_text("x\n")
    dest, offsite = tmp / "daily", tmp / "offsite"
    offsite.write_text("a file where the remote folder should be\n")  # the upload fails
    job(conf, "daily", "daily", {"sources": [str(projects)], "dest": str(dest),
                                 "remote": f"offsite:{offsite}"})
    strongroom("--config-dir", conf, "--state-dir", state, "run", "daily", "--date",
               "2026-11-30", check=2)
    (day,) = [p.name for p in dest.iterdir() if not p.name.startswith(".")]
    offsite.unlink()
    (projects / "notes" / "todo.md").unlink()
    proc = strongroom("--config-dir", conf, "--state-dir", state, "run", "daily", check=1)
    assert "nothing to back up: " in proc.stdout
    assert f"uploaded and verified: {day}" in proc.stdout
    assert (offsite / day / "projects/notes/todo.md").read_text() == "x\n"
    assert (dest / day / "projects/notes/todo.md").read_text() == "x\n"  # kept locally
