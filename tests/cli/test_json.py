"""--json on every verb, with a tiny real setup per group: the output parses, and result,
exit_code and message say what the exit code says. Each test runs every verb of its group
(checked against the parser, so a new verb without a test here fails)."""

import sqlite3

from tests.cli.support import Runner, group_leaves
from tests.helpers import commit, g, init, rich_repo


def local_remote(tmp_path):
    conf = tmp_path / "rclone.conf"
    conf.write_text("[local]\ntype = local\n")
    return conf


def test_bundle(tmp_path):
    sr = Runner(tmp_path)
    rich_repo(tmp_path / "root" / "r")
    store, rc = tmp_path / "store", local_remote(tmp_path)
    where = ["--store", store, "--rclone-config", rc]
    out = sr.json("bundle", "sync", "--root", tmp_path / "root", *where, "--remote",
                  f"local:{tmp_path / 'off'}", expect=0)
    assert [r["name"] for r in out["repositories"]] == ["r"] and out["changed"] is True
    out = sr.json("bundle", "list", *where, expect=0)
    assert [r["name"] for r in out["repositories"]] == ["r"]
    out = sr.json("bundle", "verify", *where, expect=0)
    assert out["repositories"][0]["status"] == "ok"
    out = sr.json("bundle", "restore", *where, "r", "--to", tmp_path / "back", expect=0)
    assert out["name"] == "r" and (tmp_path / "back" / ".git").is_dir()
    sr.json("bundle", "consolidate", *where, "--root", tmp_path / "root", "r", expect=0)
    assert sr.ran == group_leaves("bundle")


def test_sync(tmp_path):
    sr = Runner(tmp_path)
    remote = tmp_path / "remote.git"
    g(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    desk = tmp_path / "desk"
    g(tmp_path, "clone", "-q", str(remote), str(desk))
    commit(desk, {"log.md": "first\n"}, "start")
    g(desk, "push", "-q", "origin", "main")
    repo = ["--repo", desk, "--role", "primary"]
    (desk / "log.md").write_text("first\nsecond\n")
    out = sr.json("sync", "push", *repo, expect=0)
    assert out["operation"] == "push"
    assert sr.json("sync", "pull", *repo, expect=0)["operation"] == "pull"
    out = sr.json("sync", "status", *repo, expect=0)
    assert out["dirty"] == []
    out = sr.json("sync", "rollback", *repo, "--status", expect=0)
    assert out["snapshot"]["files"] >= 1
    sr.json("sync", "rollback", *repo, "--force", expect=0)
    sr.json("sync", "resolve", *repo)  # nothing is blocked: whatever it says, it says it
    files = {}
    for name, text in (("base", "a\n"), ("ours", "a\nb\n"), ("theirs", "a\nc\n")):
        files[name] = tmp_path / name
        files[name].write_text(text)
    out = sr.json("sync", "merge-driver", "append", files["base"], files["ours"],
                  files["theirs"], "log.md", expect=0)
    assert out["path"] == "log.md"
    assert sr.ran == group_leaves("sync")


def test_manifest(tmp_path):
    sr = Runner(tmp_path)
    root = tmp_path / "tree"
    (root / "d").mkdir(parents=True)
    (root / "a.txt").write_text("a\n")
    (root / "d/b.txt").write_text("b\n")
    m = tmp_path / "m.json"
    out = sr.json("manifest", "create", root, "--out", m, expect=0)
    assert out["files"] == 2 and out["written"] is True
    out = sr.json("manifest", "verify", root, "--manifest", m, expect=0)
    assert out["passed"] is True and out["ok"] == 2
    (root / "a.txt").write_text("changed\n")
    out = sr.json("manifest", "verify", root, "--manifest", m, expect=2)
    assert out["mismatched"] == ["a.txt"] and out["message"].startswith("FAILED")
    out = sr.json("manifest", "update", root, "--manifest", m, expect=0)
    assert out["changed"] == ["a.txt"]
    out = sr.json("manifest", "export", "--manifest", m, expect=0)
    assert out["files"] == 2 and out["sha256sum"].count("\n") == 2
    sr.json("manifest", "export", "--manifest", m, "--out", tmp_path / "SUMS", expect=0)
    assert (tmp_path / "SUMS").read_text() == out["sha256sum"]
    assert sr.ran == group_leaves("manifest")


def test_snapshot(tmp_path):
    import subprocess

    sr = Runner(tmp_path)
    src, dest = tmp_path / "src", tmp_path / "snaps"
    (src / "docs").mkdir(parents=True)
    (src / "docs/plan.md").write_text("the plan\n")
    out = sr.json("snapshot", "now", "--source", src, "--dest", dest, "--immutable", "off",
                  "--critical", "*.md", expect=0)
    snap_id = out["id"]
    assert (dest / snap_id).is_dir() and out["message"] == f"snapshot {snap_id} taken"
    out = sr.json("snapshot", "list", "--dest", dest, expect=0)
    assert [s["id"] for s in out["snapshots"]] == [snap_id]
    out = sr.json("snapshot", "verify", "--dest", dest, expect=0)
    assert [(s["id"], s["passed"]) for s in out["snapshots"]] == [(snap_id, True)]
    out = sr.json("snapshot", "restore", "--dest", dest, snap_id, "--full", "--to",
                  tmp_path / "back", expect=0)
    assert (tmp_path / "back/docs/plan.md").read_text() == "the plan\n"
    out = sr.json("snapshot", "prune", "--dest", dest, "--keep-last", "1", "--keep-days",
                  "1", "--dry-run", expect=0)
    assert out["deleted"] == [] and out["kept"] == [snap_id]
    guarded = tmp_path / "guarded.log"
    guarded.write_text("log\n")
    try:  # +a where chattr works; an error envelope where it does not
        out = sr.json("snapshot", "protect", "--append-only", guarded)
        assert out["flag"] == "+a" if out["exit_code"] == 0 else out["result"] == "error"
    finally:
        subprocess.run(["chattr", "-a", "-i", str(guarded)], capture_output=True, check=False)
    assert sr.ran == group_leaves("snapshot")


def test_checkpoint_and_hook(tmp_path):
    sr = Runner(tmp_path)
    repo = init(tmp_path / "repo")
    commit(repo, {"a.txt": "a\n"})
    (repo / "a.txt").write_text("edited\n")
    dest = tmp_path / "ckpts"
    out = sr.json("checkpoint", "save", "--source", repo, "--dest", dest, expect=0)
    assert out["saved"] is True
    out = sr.json("checkpoint", "list", "--dest", dest, expect=0)
    assert len(out["checkpoints"]) == 1
    out = sr.json("checkpoint", "verify", "--dest", dest, expect=0)
    assert [c["problems"] for c in out["checkpoints"]] == [[]]
    assert sr.ran == group_leaves("checkpoint")
    out = sr.json("hook", "install", "--repo", repo, "--dest", tmp_path / "pp", expect=0)
    assert out["changed"] is True
    out = sr.json_in(repo, "", "hook", "pre-push", "origin", "url", "--max-size", "1000000",
                     "--dest", tmp_path / "pp", expect=0)
    assert out["oversized"] == []
    out = sr.json("hook", "uninstall", "--repo", repo, expect=0)
    assert out["changed"] is True
    assert sr.ran == group_leaves("checkpoint") | group_leaves("hook")


def test_db(tmp_path):
    sr = Runner(tmp_path)
    db = tmp_path / "app.db"
    con = sqlite3.connect(db)
    con.execute("create table t (x)")
    con.execute("insert into t values (1)")
    con.commit()
    con.close()
    args = ["--db", db, "--remote", f"local:{tmp_path / 'objects'}", "--host", "alpha",
            "--rclone-config", local_remote(tmp_path)]
    out = sr.json("db", "backup", *args, expect=0)
    key = out["key"]
    out = sr.json("db", "list", *args, expect=0)
    assert [v["key"] for v in out["versions"]] == [key]
    assert sr.json("db", "status", *args, expect=0)["in_sync"] is True
    assert sr.json("db", "tick", *args, expect=0)["ops"] == 1
    sr.json("db", "sync", *args, expect=0)
    out = sr.json("db", "restore", *args, key, expect=0)
    assert out["restored"] == key
    assert sr.ran == group_leaves("db")


def test_upload_and_rollup(tmp_path):
    sr = Runner(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out/a.bin").write_bytes(b"x" * 1000)
    out = sr.json("upload", tmp_path / "out", f"local:{tmp_path / 'up'}", "--rclone-config",
                  local_remote(tmp_path), expect=0)
    assert (tmp_path / "up/a.bin").read_bytes() == b"x" * 1000 and out["kept"] == []
    days = tmp_path / "days"
    days.mkdir()
    out = sr.json("rollup", "list", "--dest", days, expect=0)
    assert out["entries"] == []
    out = sr.json("rollup", "restore", "--dest", days, "--day", "2020-03-01", "--to",
                  tmp_path / "r", expect=2)  # no such day, and no remote to fetch it from
    assert out["result"] == "error" and not (tmp_path / "r").exists()
    assert sr.ran == {"upload"} | group_leaves("rollup")


def test_jobs_run_status_notify_schedule_drill(tmp_path):
    sr = Runner(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a\n")
    (sr.conf / "jobs/snap.yml").write_text(
        f"name: snap\ntype: snapshot\nschedule: daily 03:00\noptions:\n  source: {src}\n"
        f"  dest: {tmp_path / 'snaps'}\n  immutable: 'off'\n")
    out = sr.json("run", "snap", expect=0)
    assert out["status"]["job"] == "snap" and out["status"]["result"] == "ok"
    out = sr.json("run", "--all", expect=0)
    assert [(j["job"], j["result"]) for j in out["jobs"]] == [("snap", "ok")]
    out = sr.json("jobs", "list", expect=0)
    assert [j["job"] for j in out["jobs"]] == ["snap"]
    out = sr.json("status", expect=0)
    assert [j["job"] for j in out["jobs"]] == ["snap"] and out["stale"] == []
    out = sr.json("notify", "test", expect=1)  # no notify.yml: nothing to send to
    assert out["targets"] == 0
    out = sr.json("schedule", "explain", "daily 03:00", expect=0)
    assert out["cron"] == "0 3 * * *"
    out = sr.json("drill", expect=0)  # the snapshot job's two snapshots, restored
    assert [(a["kind"], a["job"], a["result"]) for a in out["artifacts"]] == [
        ("snapshot", "snap", "ok"), ("snapshot", "snap", "ok")]
    out = sr.json("drill", "--kind", "bundle_chain", expect=1)  # none: nothing to verify
    assert out["artifacts"] == [] and out["message"].startswith("nothing to verify")
    assert sr.ran == {"run", "jobs list", "status", "notify test", "schedule explain",
                      "drill"}


def test_bisync_and_restic(tmp_path):
    sr = Runner(tmp_path)
    local, other = tmp_path / "local", tmp_path / "other"
    local.mkdir()
    other.mkdir()
    (local / "a.md").write_text("a\n")
    (sr.conf / "jobs/docs.yml").write_text(
        f"name: docs\ntype: bisync\noptions:\n  local: {local}\n"
        f"  remote: local:{other}\n  rclone_config: {local_remote(tmp_path)}\n")
    out = sr.json("bisync", "--job", "docs", "--resync", expect=0)
    assert out["resync"] is True and (other / "a.md").read_text() == "a\n"
    pw = tmp_path / "restic.pw"
    pw.write_text("secret\n")
    pw.chmod(0o600)
    (sr.conf / "jobs/weekly.yml").write_text(
        f"name: weekly\ntype: restic\noptions:\n  repository: {tmp_path / 'repo'}\n"
        f"  password_file: {pw}\n  paths: [{local}]\n")
    sr.run("run", "weekly", check=0)
    out = sr.json("restic", "restore", "latest", "--job", "weekly", "--to",
                  tmp_path / "back", expect=0)
    assert any(p.name == "a.md" for p in (tmp_path / "back").rglob("*"))
    assert sr.ran == {"bisync"} | group_leaves("restic")


def test_config(tmp_path):
    sr = Runner(tmp_path)
    job = sr.conf / "jobs" / "snap.yml"
    job.write_text(f"name: snap\ntype: snapshot\noptions:\n  source: {tmp_path / 'src'}\n"
                   f"  dest: {tmp_path / 'snaps'}\n")
    out = sr.json("config", "check", job, expect=0)
    assert out["name"] == "snap"
    bad = tmp_path / "bad.yml"
    bad.write_text("name: bad\ntype: snapshot\noptions: {}\n")
    out = sr.json("config", "check", bad, expect=2)
    assert out["result"] == "error"
    out = sr.json("config", "show", "snap", expect=0)
    assert out["job"]["options"]["dest"] == str(tmp_path / "snaps")
    out = sr.json("config", "generate", "snapshot", expect=0)
    assert "type: snapshot" in out["text"]
    assert sr.json("config", "schema", expect=0)["schema"]
    assert sr.ran == group_leaves("config")
