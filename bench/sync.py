"""Two-machine sync over 10,000 files: what a failure costs, in one run.

    .venv/bin/python bench/sync.py [--files 10000] [--rounds 3] [--dir /var/tmp] [--json]

1. `strongroom sync rollback --force` after a bad commit that changed 100 files and deleted 100
   (goal <= 1 s)
2. a pull that fails (the remote is offline) with work in progress (20 deletions, 20
   edits, a staged file): the whole failing pull, and its exact rollback as the result
   reports it (goal <= 1 s)
3. the same pull failing after the merge (the other side committed behind its manifest):
   its rollback puts HEAD, the index and the files back
Both sides of the comparison run here: `git status --porcelain` over the same tree is the
floor any exact check of a work tree pays. Best of --rounds.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from timing import best  # bench/ is on sys.path when a bench script runs

STRONGROOM = str(Path(sys.executable).parent / "strongroom")
ENV = dict(os.environ, GIT_AUTHOR_NAME="B", GIT_AUTHOR_EMAIL="b@example.org",
           GIT_COMMITTER_NAME="B", GIT_COMMITTER_EMAIL="b@example.org")


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], check=True, env=ENV,
                          capture_output=True, text=True).stdout


def sync(repo, verb, *args, ok=(0,)):
    proc = subprocess.run([STRONGROOM, "sync", verb, "--repo", str(repo), "--role",
                           "primary", "--json", *args], capture_output=True, text=True,
                          env=ENV)
    if proc.returncode not in ok:
        raise SystemExit(f"sync {verb} exited {proc.returncode}: {proc.stdout}{proc.stderr}")
    return json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {}


def make_pair(work, n):
    remote, repo = work / "remote.git", work / "repo"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
    subprocess.run(["git", "clone", "-q", str(remote), str(repo)], check=True,
                   capture_output=True)
    for i in range(n):
        p = repo / f"d{i % 100:02d}" / f"note{i:05d}.md"
        p.parent.mkdir(exist_ok=True)
        p.write_text(f"note {i}\n" * 20)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "notes")
    git(repo, "push", "-q", "origin", "main")
    sync(repo, "push")
    return remote, repo


def work_in_progress(repo, k):
    for i in range(k, k + 20):
        (repo / f"d{i % 100:02d}" / f"note{i:05d}.md").unlink(missing_ok=True)
        (repo / f"d{(i + 50) % 100:02d}" / f"note{i + 50:05d}.md").write_text(f"edit {k}\n")
    (repo / f"staged-{k}.md").write_text("staged\n")
    git(repo, "add", f"staged-{k}.md")


def bench(n, rounds, base):
    work = Path(tempfile.mkdtemp(prefix="strongroom-bench-sync-", dir=base))
    try:
        remote, repo = make_pair(work, n)
        status = best(lambda: lambda: git(repo, "status", "--porcelain"), rounds)

        # 1. sync rollback after a bad commit
        times = []  # the snapshot is the one the push above took
        for r in range(rounds):
            for i in range(0, 200, 2):
                (repo / f"d{i % 100:02d}" / f"note{i:05d}.md").write_text(f"damaged {r}\n")
                (repo / f"d{(i + 1) % 100:02d}" / f"note{i + 1:05d}.md").unlink()
            git(repo, "commit", "-q", "-am", "bad")
            t0 = time.perf_counter()
            sync(repo, "rollback", "--force")  # the bad commit is the user's own
            times.append(time.perf_counter() - t0)
        rollback = min(times)

        # 2. a pull that fails at once: the remote is offline
        work_in_progress(repo, 300)
        away = work / "away.git"
        os.rename(remote, away)
        whole, rolled = [], []
        for _ in range(rounds):
            t0 = time.perf_counter()
            out = sync(repo, "pull", ok=(2,))
            whole.append(time.perf_counter() - t0)
            rolled.append(out["rollback_seconds"])
        os.rename(away, remote)

        # 3. a pull that fails after the merge: HEAD, index and files go back
        other = work / "other"
        subprocess.run(["git", "clone", "-q", str(remote), str(other)], check=True,
                       capture_output=True)
        (other / "d00/note00000.md").write_text("behind the manifest's back\n")
        git(other, "commit", "-q", "-am", "sneaky")
        git(other, "push", "-q", "origin", "main")
        late_whole, late_rolled = [], []
        for _ in range(rounds):
            t0 = time.perf_counter()
            out = sync(repo, "pull", ok=(2,))
            late_whole.append(time.perf_counter() - t0)
            late_rolled.append(out["rollback_seconds"])
        return {"files": n, "rounds": rounds, "dir": base,
                "git_status_s": round(status, 3), "sync_rollback_s": round(rollback, 3),
                "failed_pull_offline_s": round(min(whole), 3),
                "failed_pull_offline_rollback_s": round(min(rolled), 3),
                "failed_pull_after_merge_s": round(min(late_whole), 3),
                "failed_pull_after_merge_rollback_s": round(min(late_rolled), 3)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default="/var/tmp", help="where to build the repositories")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    r = bench(args.files, args.rounds, args.dir)
    if args.json:
        print(json.dumps(r, indent=2))
        return
    ok = lambda t: "ok" if t <= 1 else "MISSED"  # noqa: E731
    print(f"{r['files']} files, best of {r['rounds']}, in {r['dir']}; git status --porcelain "
          f"{r['git_status_s']:.3f}s")
    print(f"sync rollback after a bad commit          {r['sync_rollback_s']:.3f}s "
          f"(goal <= 1 s) {ok(r['sync_rollback_s'])}")
    print(f"failed pull, remote offline: whole pull   {r['failed_pull_offline_s']:.3f}s "
          f"(goal <= 1 s) {ok(r['failed_pull_offline_s'])}; its rollback "
          f"{r['failed_pull_offline_rollback_s']:.3f}s")
    print(f"failed pull after the merge: whole pull   {r['failed_pull_after_merge_s']:.3f}s; "
          f"its rollback {r['failed_pull_after_merge_rollback_s']:.3f}s "
          f"(goal <= 1 s) {ok(r['failed_pull_after_merge_rollback_s'])}")


if __name__ == "__main__":
    main()
