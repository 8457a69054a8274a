"""strongroom save: checkpoints of uncommitted work, with real git, sha256sum and flock."""

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from strongroom import checkpoints
from strongroom.cli import jobfile
from strongroom.core.lock import Lock
from tests.helpers import ENV, VENV_BIN, commit, g, init, strongroom


def work_tree(base):
    repo = init(base / "work")
    commit(repo, {"notes/plan.md": "plan v1\n", "src/app.py": "print(1)\n",
                  "old.txt": "going away\n", "keep.txt": "unchanged\n",
                  ".gitignore": "*.log\n"}, "start")
    (repo / "notes/plan.md").write_text("plan v2\n")  # modified, not staged
    (repo / "src/app.py").write_text("print(2)\n")
    g(repo, "add", "src/app.py")  # modified and staged
    g(repo, "rm", "-q", "old.txt")  # deleted
    (repo / "drafts").mkdir()
    (repo / "drafts/idée 1.md").write_text("untracked\n")  # untracked, unicode name
    (repo / "debug.log").write_text("ignored\n")
    return repo


def save(*args, check=0):
    return strongroom("checkpoint", "save", *map(str, args), check=check)


def folders(dest):
    return [f for _, f in checkpoints.checkpoints(dest)]


def state_of(repo):
    return (g(repo, "status", "--porcelain=v2", "-uall"), (repo / ".git/index").read_bytes(),
            g(repo, "stash", "list"))


def test_save_keeps_changed_and_untracked_files_and_a_patch_that_applies(tmp_path):
    repo, dest = work_tree(tmp_path), tmp_path / "ckpts"
    before = state_of(repo)
    proc = save("--source", repo, "--dest", dest)
    folder = Path(proc.stdout.strip())
    today = datetime.now(UTC).strftime("%Y/%m/%d")
    assert folder.parent == dest / "progress" / today and folder.name.startswith("ckpt-")
    assert "saved 3 file(s)" in proc.stderr and "1 deletion(s)" in proc.stderr
    files = sorted(str(p.relative_to(folder / "files")) for p in (folder / "files").rglob("*")
                   if p.is_file())
    assert files == ["drafts/idée 1.md", "notes/plan.md", "src/app.py"]
    sums = subprocess.run(["sha256sum", "-c", "--strict", "SHA256SUMS"], cwd=folder,
                          capture_output=True, text=True, check=False)
    assert sums.returncode == 0, sums.stdout + sums.stderr
    assert sums.stdout.count(": OK") == 5  # three files, the patch, CHECKPOINT.json
    meta = json.loads((folder / "CHECKPOINT.json").read_text())
    assert meta["deleted"] == ["old.txt"] and meta["branch"] == "main"
    assert meta["head"] == g(repo, "rev-parse", "HEAD").strip()
    assert {f["path"]: f["status"] for f in meta["files"]} == {
        "drafts/idée 1.md": "untracked", "notes/plan.md": "modified", "src/app.py": "modified"}
    assert state_of(repo) == before  # the work tree, index and stash are left as they were
    # HEAD + the patch + the untracked files is the work tree again
    clone = tmp_path / "clone"
    g(tmp_path, "clone", "-q", str(repo), str(clone))
    g(clone, "apply", str(folder / "changes.patch"))
    shutil.copytree(folder / "files" / "drafts", clone / "drafts")
    for rel in ("notes/plan.md", "src/app.py", "drafts/idée 1.md", "keep.txt"):
        assert (clone / rel).read_bytes() == (repo / rel).read_bytes(), rel
    assert not (clone / "old.txt").exists()


def test_nothing_new_makes_no_checkpoint(tmp_path):
    repo = init(tmp_path / "work")
    commit(repo, {"a.txt": "a\n"}, "start")
    dest = repo / ".checkpoints"  # inside the work tree: never its own input
    (repo / ".git/info/exclude").write_text("")
    proc = save("--source", repo, "--dest", dest)
    assert proc.stdout.startswith("nothing to save: the work tree matches ")
    assert not folders(dest)
    (repo / "a.txt").write_text("b\n")
    first = Path(save("--source", repo, "--dest", dest).stdout.strip())
    proc = save("--source", repo, "--dest", dest)
    assert proc.stdout.strip() == f"nothing new since {first.name}"
    assert folders(dest) == [first]
    (repo / "a.txt").write_text("c\n")
    second = Path(json.loads(save("--source", repo, "--dest", dest, "--json").stdout)["path"])
    assert folders(dest) == [first, second]
    files = [p.name for p in (folders(dest)[-1] / "files").rglob("*") if p.is_file()]
    assert files == ["a.txt"]  # the earlier checkpoints under .checkpoints/ were not copied


def test_one_save_at_a_time(tmp_path):
    repo, dest = work_tree(tmp_path), tmp_path / "ckpts"
    dest.mkdir()
    lock = Lock(dest / ".checkpoint.lock", "test").acquire()
    try:
        proc = save("--source", repo, "--dest", dest, check=11)
        assert f"checkpoints in {dest} is locked by PID {os.getpid()}" in proc.stderr
        assert not (dest / "progress").exists()
        threading.Timer(0.5, lock.release).start()
        proc = save("--source", repo, "--dest", dest, "--wait", "10")
    finally:
        lock.release()
    assert len(folders(dest)) == 1


def test_files_above_the_limit_are_left_out_with_a_warning(tmp_path):
    repo, dest = work_tree(tmp_path), tmp_path / "ckpts"
    (repo / "dump.bin").write_bytes(os.urandom(8192))
    proc = save("--source", repo, "--dest", dest, "--max-file-size", "4K", check=1)
    assert "warning: 1 file(s) above the size limit were left out: dump.bin" in proc.stderr
    meta = json.loads((folders(dest)[0] / "CHECKPOINT.json").read_text())
    assert meta["skipped"] == [{"bytes": 8192, "path": "dump.bin"}]
    assert not (folders(dest)[0] / "files/dump.bin").exists()
    assert (folders(dest)[0] / "files/notes/plan.md").read_text() == "plan v2\n"


def test_a_killed_save_leaves_no_checkpoint_and_the_next_one_cleans_up(tmp_path):
    repo = init(tmp_path / "work")
    commit(repo, {"a.txt": "a\n"}, "start")
    block = os.urandom(1 << 20)
    for i in range(150):
        (repo / f"u{i:03d}.bin").write_bytes(block[i:] + block[:i])
    dest = tmp_path / "ckpts"
    proc = subprocess.Popen([str(VENV_BIN / "strongroom"), "checkpoint", "save", "--source",
                             str(repo), "--dest", str(dest)], env=ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    def copying():
        progress = dest / "progress"
        return progress.is_dir() and any(p.name.startswith(".tmp-ckpt") and
                                         (p / "files").is_dir() for p in progress.iterdir())

    deadline = time.time() + 30
    while time.time() < deadline and not copying():
        time.sleep(0.01)
    assert proc.poll() is None, "the save finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert folders(dest) == []
    assert [p for p in (dest / "progress").iterdir() if p.name.startswith(".tmp-")]
    folder = Path(save("--source", repo, "--dest", dest).stdout.strip())
    assert folders(dest) == [folder]
    assert not [p for p in (dest / "progress").iterdir() if p.name.startswith(".tmp-")]
    assert len(list((folder / "files").iterdir())) == 150


def test_bad_input_is_refused_with_nothing_written(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "f.txt").write_text("x\n")
    dest = tmp_path / "ckpts"
    proc = save("--source", plain, "--dest", dest, check=2)
    assert f"{plain} is not inside a git work tree" in proc.stderr
    assert "strongroom backup now" in proc.stderr and not (dest / "progress").exists()
    proc = save("--dest", dest, check=2)
    assert "--source DIR is required" in proc.stderr
    proc = save("--source", plain, "--dest", dest, "--max-file-size", "huge", check=2)
    assert "not a size: 'huge'" in proc.stderr
    proc = strongroom("--config-dir", tmp_path, "checkpoint", "save", "--job", "nope", check=2)
    assert "no job named 'nope'" in proc.stderr


def test_prune_drops_old_checkpoints_but_never_the_newest(tmp_path):
    repo = init(tmp_path / "work")
    commit(repo, {"a.txt": "a\n"}, "start")
    dest = tmp_path / "ckpts"
    now = datetime.now(UTC)
    for days in (30, 20, 10):
        (repo / "a.txt").write_text(f"{days}\n")
        checkpoints.save(repo, dest, now=now - timedelta(days=days))
    out = checkpoints.prune(dest, 15, now=now)
    assert len(out["deleted"]) == 2 and out["kept"] == 1
    left = folders(dest)
    assert [f.name for f in left] == [(now - timedelta(days=10)).strftime("ckpt-%Y%m%dT%H%M%SZ")]
    old_month = dest / "progress" / (now - timedelta(days=30)).strftime("%Y/%m/%d")
    assert not old_month.exists()  # empty day folders go too
    assert checkpoints.prune(dest, 1, now=now)["deleted"] == []  # the newest always stays
    assert folders(dest) == left


def test_verify_finds_damage(tmp_path):
    repo, dest = work_tree(tmp_path), tmp_path / "ckpts"
    folder = Path(save("--source", repo, "--dest", dest).stdout.strip())
    proc = strongroom("checkpoint", "verify", "--dest", dest, check=0)
    assert proc.stdout.strip() == f"{folder.name}: ok"
    target = folder / "files/notes/plan.md"
    data = bytearray(target.read_bytes())
    data[0] ^= 1
    target.write_bytes(bytes(data))
    (folder / "files/extra.txt").write_text("slipped in\n")
    proc = strongroom("checkpoint", "verify", "--dest", dest, check=2)
    assert "files/notes/plan.md: checksum differs" in proc.stdout
    assert "files/extra.txt: not listed in SHA256SUMS" in proc.stdout
    listed = json.loads(strongroom("checkpoint", "list", "--dest", dest, "--json").stdout)
    assert listed["result"] == "ok" and listed["exit_code"] == 0
    rows = listed["checkpoints"]
    assert [(r["name"], r["files"], r["deleted"]) for r in rows] == [(folder.name, 3, 1)]


def test_the_checkpoint_job_saves_then_reports_nothing_new(tmp_path):
    repo = work_tree(tmp_path)
    conf, state, dest = tmp_path / "conf", tmp_path / "state", tmp_path / "ckpts"
    (conf / "jobs").mkdir(parents=True)
    (conf / "jobs/wip.yml").write_text(
        f"name: wip\ntype: checkpoint\nschedule: every 15m\noptions:\n  source: {repo}\n"
        f"  dest: {dest}\n  keep_days: 14\n")
    base = ["--config-dir", conf, "--state-dir", state]
    strongroom(*base, "run", "wip", check=0)
    status = json.loads((state / "status" / "wip.json").read_text())
    assert status["changed"] is True and status["checkpoint"]["saved"] is True
    assert Path(status["checkpoint"]["path"]).parents[3] == dest / "progress"
    strongroom(*base, "run", "wip", check=0)
    status = json.loads((state / "status" / "wip.json").read_text())
    assert status["changed"] is False and status["message"].startswith("nothing new since")
    assert len(folders(dest)) == 1
    proc = strongroom(*base, "checkpoint", "save", "--job", "wip", check=0)
    assert proc.stdout.startswith("nothing new since")
    proc = strongroom(*base, "snapshot", "now", "--job", "wip", check=2)
    assert "job wip is a checkpoint job; `strongroom snapshot` takes snapshot jobs" \
        in proc.stderr
    # every command that takes --job refuses a job of another type, by name, writing nothing
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for argv, command in (
            (["rollup", "list", "--job", "wip"], "rollup"),
            (["bisync", "--job", "wip"], "bisync"),
            (["restic", "restore", "latest", "--job", "wip", "--to", tmp_path / "r"],
             "restic"),
            (["db", "status", "--job", "wip"], "db"),
            (["hook", "install", "--repo", repo, "--job", "wip"], "hook")):
        proc = strongroom(*base, *argv, check=2)
        wanted = " or ".join(jobfile.takes(command))  # daily or rollup, db, snapshot, ...
        assert (f"job wip is a checkpoint job; `strongroom {command}` takes {wanted} jobs"
                in proc.stderr), argv
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
