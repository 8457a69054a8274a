"""Many repositories and big histories in bundle chains, against the raw git commands.

    .venv/bin/python bench/repos.py [--repos 500] [--commits 100000] [--refs 10000] [--json]

1. unchanged sync of --repos small repositories vs one `git for-each-ref` per repository
   (goal <= 2)
2. one repository of --commits commits and --refs refs:
   - full sync vs `git bundle create --all` (goal <= 1.3)
   - incremental sync after 100 new commits and 50 new refs vs `git bundle create` of
     every ref `--not` the tips the chain recorded, the basis the engine uses (goal <= 1.3)
   - restore of that chain (full + 1 incremental) vs `git clone --mirror --no-local` of
     the source (goal <= 1.5)

Both sides run in the same rounds, interleaved (raw git, then strongroom), on the same data;
each figure is the best of the rounds, with the spread (slowest / fastest) of both sides.
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

ENV = dict(os.environ, LC_ALL="C", GIT_AUTHOR_NAME="B", GIT_AUTHOR_EMAIL="b@example.org",
           GIT_COMMITTER_NAME="B", GIT_COMMITTER_EMAIL="b@example.org")
STRONGROOM = str(Path(sys.executable).parent / "strongroom")


def run(argv, cwd=None, input=None):
    return subprocess.run(argv, cwd=cwd, input=input, env=ENV, check=True,
                          capture_output=True)


def history(commits, refs, first=0, branch="main", parent=None):
    """A fast-import stream: `commits` commits on `branch` (one small file changed per
    commit), then `refs` branches and tags spread over them."""
    out = []
    for c in range(first, first + commits):
        msg = f"commit {c}\n".encode()
        blob = f"line {c}\n".encode() * 4
        out.append(f"commit refs/heads/{branch}\nmark :{c + 1}\n"
                   f"committer B <b@example.org> {1700000000 + c} +0000\n"
                   f"data {len(msg)}\n".encode() + msg)
        if c == first and parent:
            out.append(f"from {parent}\n".encode())
        out.append(f"M 644 inline d{c % 97}/f{c % 1009}.txt\ndata {len(blob)}\n".encode()
                   + blob + b"\n")
    step = max(1, commits // max(1, refs))
    for r in range(refs):
        mark = first + 1 + (r * step) % commits
        kind = "tags/t" if r % 4 == 0 else "heads/b"
        out.append(f"reset refs/{kind}{first}-{r}\nfrom :{mark}\n\n".encode())
    return b"".join(out)


def big_repo(path, commits, refs):
    run(["git", "init", "-q", "-b", "main", str(path)])
    run(["git", "fast-import", "--quiet"], cwd=path, input=history(commits, refs))
    run(["git", "checkout", "-q", "-f", "main"], cwd=path)
    run(["git", "pack-refs", "--all"], cwd=path)  # fast-import wrote one pack already


def grow(path, commits, refs, first):
    """100 new commits on main and 50 new refs, the incremental step."""
    tip = run(["git", "rev-parse", "main"], cwd=path).stdout.decode().strip()
    run(["git", "fast-import", "--quiet", "--force"], cwd=path,
        input=history(commits, refs, first=first, parent=tip))
    run(["git", "reset", "-q", "--hard", "main"], cwd=path)


def small_repos(root, count):
    """`count` repositories of 3 commits, 3 refs and a few files each (a checkout)."""
    for i in range(count):
        path = root / f"group{i % 10}" / f"repo{i:03d}"
        run(["git", "init", "-q", "-b", "main", str(path)])
        run(["git", "fast-import", "--quiet"], cwd=path, input=history(3, 2))
        run(["git", "checkout", "-q", "-f", "main"], cwd=path)
    return sorted(p.parent for p in root.rglob(".git"))


def tips(path):
    out = run(["git", "for-each-ref", "--format=%(objectname)"], cwd=path).stdout.decode()
    return sorted(set(out.split()))


def interleaved(pairs, rounds):
    """pairs: {label: (prepare, timed)}; every round runs each label once, in order.
    Returns {label: [seconds of each round]}."""
    times = {label: [] for label in pairs}
    for _ in range(rounds):
        for label, (prepare, timed) in pairs.items():
            if prepare:
                prepare()
            t0 = time.perf_counter()
            timed()
            times[label].append(time.perf_counter() - t0)
    return times


def figure(times, ours, raw, goal):
    o, r = min(times[ours]), min(times[raw])
    return {"strongroom_s": round(o, 3), "raw_s": round(r, 3), "ratio": round(o / r, 2),
            "goal": goal, "strongroom_spread": round(max(times[ours]) / o, 2),
            "raw_spread": round(max(times[raw]) / r, 2)}


def sync(root, store):
    run([STRONGROOM, "bundle", "sync", "--root", str(root), "--store", str(store)])


def bench_many(work, count, rounds):
    root, store = work / "many", work / "many-store"
    repos = small_repos(root, count)
    sync(root, store)  # the first, full sync; every timed one finds nothing to do
    times = interleaved({
        "raw": (None, lambda: [run(["git", "-C", str(r), "for-each-ref"]) for r in repos]),
        "ours": (None, lambda: sync(root, store)),
    }, rounds)
    return figure(times, "ours", "raw", 2)


def bench_big(work, commits, refs, rounds):
    root, src = work / "big", work / "big" / "history"
    t0 = time.perf_counter()
    big_repo(src, commits, refs)
    built = time.perf_counter() - t0
    raw_out, store = work / "raw.bundle", work / "big-store"

    def clear_store():
        shutil.rmtree(store, ignore_errors=True)

    full = interleaved({
        "raw": (lambda: raw_out.unlink(missing_ok=True),
                lambda: run(["git", "-C", str(src), "bundle", "create", "-q", str(raw_out),
                             "--all"])),
        "ours": (clear_store, lambda: sync(root, store)),
    }, rounds)
    # the chain's full bundle stays; each incremental round starts from a copy of it
    before = tips(src)
    base = work / "big-store-base"
    shutil.rmtree(base, ignore_errors=True)
    shutil.copytree(store, base, symlinks=True)
    grow(src, 100, 50, commits)
    basis = "".join(f"^{sha}\n" for sha in before).encode()

    def reset_store():
        clear_store()
        shutil.copytree(base, store, symlinks=True)

    inc = interleaved({
        "raw": (lambda: raw_out.unlink(missing_ok=True),
                lambda: run(["git", "-C", str(src), "bundle", "create", "-q", str(raw_out),
                             "--all", "--stdin"], input=basis)),
        "ours": (reset_store, lambda: sync(root, store)),
    }, rounds)
    mirror, restored = work / "mirror", work / "restored"
    back = interleaved({
        "raw": (lambda: shutil.rmtree(mirror, ignore_errors=True),
                lambda: run(["git", "clone", "-q", "--mirror", "--no-local", str(src),
                             str(mirror)])),
        "ours": (lambda: shutil.rmtree(restored, ignore_errors=True),
                 lambda: run([STRONGROOM, "bundle", "restore", "--store", str(store),
                              "history", str(restored)])),
    }, rounds)
    size = sum(f.stat().st_size for f in (src / ".git").rglob("*") if f.is_file())
    nrefs = len(run(["git", "for-each-ref"], cwd=src).stdout.splitlines())
    return {"commits": commits + 100, "refs": nrefs,
            "git_bytes": size, "build_s": round(built, 2),
            "full": figure(full, "ours", "raw", 1.3),
            "incremental": figure(inc, "ours", "raw", 1.3),
            "restore": figure(back, "ours", "raw", 1.5)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repos", type=int, default=500)
    ap.add_argument("--commits", type=int, default=100_000)
    ap.add_argument("--refs", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="strongroom-bench-repos-", dir=os.environ.get(
        "BENCH_TMP")))
    try:
        load = os.getloadavg()[0]
        r = {"cores": os.cpu_count(), "rounds": args.rounds,
             "many": {"repositories": args.repos,
                      "unchanged": bench_many(work, args.repos, args.rounds)},
             "big": bench_big(work, args.commits, args.refs, args.rounds)}
        r["load_average"] = [round(load, 1), round(os.getloadavg()[0], 1)]  # before, after
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(r, indent=2))
        return
    big = r["big"]
    print(f"{args.repos} small repositories; one of {big['commits']:,} commits and "
          f"{big['refs']:,} refs ({big['git_bytes'] / 1e6:.1f} MB of git data, built in "
          f"{big['build_s']} s); {r['cores']} cores, load average {r['load_average'][0]} before "
          f"and {r['load_average'][1]} after; best of {args.rounds}, interleaved")
    rows = [
        (f"unchanged sync of {args.repos} vs for-each-ref each", r["many"]["unchanged"]),
        ("full sync vs git bundle create --all", big["full"]),
        ("incremental sync vs bundle create --all --not", big["incremental"]),
        ("restore full+1 vs clone --mirror --no-local", big["restore"]),
    ]
    print(f"{'measure':48} {'strongroom':>11} {'raw git':>9} {'ratio':>6} {'goal':>6} "
          f"spread (ours/raw)")
    for name, f in rows:
        mark = "ok" if f["ratio"] <= f["goal"] else "MISSED"
        print(f"{name:48} {f['strongroom_s']:>10.3f}s {f['raw_s']:>8.3f}s {f['ratio']:>6.2f} "
              f"{'<=' + str(f['goal']):>6} {mark:6} {f['strongroom_spread']:.2f}/"
              f"{f['raw_spread']:.2f}")


if __name__ == "__main__":
    main()
