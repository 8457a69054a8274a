"""Bundle chains against the raw git commands, in one run, as ratios.

    .venv/bin/python bench/bundles.py [--repos 50] [--json]

1. full sync of every repository vs `git bundle create --all` per repository (goal <= 1.3)
2. unchanged sync vs one `git for-each-ref` per repository (goal <= 4)
3. restore of a full + 10 incremental chain vs `git clone --mirror --no-local` of the
   source (goal <= 1.5). --no-local makes git really transfer objects; a plain local
   clone only hard-links the object files and would measure nothing comparable.

Timings are the best of a few rounds (less noise from the other core's load).
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from timing import best  # bench/ is on sys.path when a bench script runs

ENV = dict(os.environ, LC_ALL="C", GIT_AUTHOR_NAME="B", GIT_AUTHOR_EMAIL="b@example.org",
           GIT_COMMITTER_NAME="B", GIT_COMMITTER_EMAIL="b@example.org")
STRONGROOM = str(Path(sys.executable).parent / "strongroom")


def run(argv, cwd=None, input=None):
    subprocess.run(argv, cwd=cwd, input=input, env=ENV, check=True, capture_output=True)


def fast_import_repo(path, commits, files, blob_size, rng, branches=3, tags=4):
    """A repository with `commits` commits over `files` paths, through git fast-import."""
    run(["git", "init", "-q", "-b", "main", str(path)])
    out = []
    started = {"main"}
    for c in range(commits):
        mark = c + 1
        branch = "main" if c == 0 or c % 5 else f"topic{c % branches}"
        msg = f"commit {c}\n".encode()
        out.append(f"commit refs/heads/{branch}\nmark :{mark}\n"
                   f"committer B <b@example.org> {1700000000 + c} +0000\n".encode())
        out.append(f"data {len(msg)}\n".encode() + msg)
        if branch not in started:
            out.append(b"from refs/heads/main\n")
            started.add(branch)
        for _ in range(min(files, 3) if c else files):
            name = f"dir{rng.randrange(8)}/file{rng.randrange(files)}.dat"
            size = max(16, int(rng.expovariate(1 / blob_size)))
            blob = rng.randbytes(size // 2) + b"x" * (size // 2)
            out.append(f"M 644 inline {name}\ndata {len(blob)}\n".encode() + blob + b"\n")
        if c and c % max(1, commits // tags) == 0:
            out.append(f"tag v{c}\nfrom :{mark}\ntagger B <b@example.org> {1700000000 + c} "
                       f"+0000\ndata 4\ntag\n".encode())
    run(["git", "fast-import", "--quiet"], cwd=path, input=b"".join(out))
    run(["git", "checkout", "-q", "-f", "main"], cwd=path)
    run(["git", "gc", "-q"], cwd=path)


def generate(root, count, seed=50):
    rng = random.Random(seed)
    sizes = []
    for i in range(count):
        kind = "large" if i % 25 == 0 else ("medium" if i % 5 == 0 else "small")
        commits, files, blob = {"small": (12, 10, 2_000), "medium": (120, 60, 20_000),
                                "large": (300, 150, 120_000)}[kind]
        fast_import_repo(root / f"group{i % 4}" / f"repo{i:02d}-{kind}", commits, files, blob,
                         rng)
        sizes.append(kind)
    return sizes


def repos_under(root):
    return sorted(p.parent for p in root.rglob(".git") if p.is_dir())


def bench(count, rounds):
    work = Path(tempfile.mkdtemp(prefix="strongroom-bench-"))
    try:
        root = work / "root"
        kinds = generate(root, count)
        repos = repos_under(root)
        total = sum(f.stat().st_size for r in repos for f in (r / ".git").rglob("*")
                    if f.is_file())

        def raw_full():
            out = work / "raw"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            return lambda: [run(["git", "-C", str(r), "bundle", "create", "-q",
                                 str(out / f"{i}.bundle"), "--all"]) for i, r in enumerate(repos)]

        def our_full():
            shutil.rmtree(work / "store", ignore_errors=True)
            return lambda: run([STRONGROOM, "bundle", "sync", "--root", str(root), "--store",
                                str(work / "store")])

        raw_full_t = best(raw_full, rounds)
        our_full_t = best(our_full, rounds)

        def raw_refs():
            return lambda: [run(["git", "-C", str(r), "for-each-ref"]) for r in repos]

        def our_unchanged():
            return lambda: run([STRONGROOM, "bundle", "sync", "--root", str(root), "--store",
                                str(work / "store")])

        raw_refs_t = best(raw_refs, rounds)
        our_unchanged_t = best(our_unchanged, rounds)

        # a chain of 1 full + 10 incrementals on the largest repository
        big = next(r for r in repos if r.name.endswith("large"))
        broot, bstore = work / "chain-root", work / "chain-store"
        shutil.copytree(big, broot / "big", symlinks=True)
        run([STRONGROOM, "bundle", "sync", "--root", str(broot), "--store", str(bstore)])
        rng = random.Random(7)
        for i in range(10):
            f = broot / "big" / f"inc{i}.dat"
            f.write_bytes(rng.randbytes(200_000))
            run(["git", "add", "-A"], cwd=broot / "big")
            run(["git", "commit", "-q", "-m", f"inc {i}"], cwd=broot / "big")
            run([STRONGROOM, "bundle", "sync", "--root", str(broot), "--store", str(bstore)])

        def raw_clone():
            shutil.rmtree(work / "mirror", ignore_errors=True)
            return lambda: run(["git", "clone", "-q", "--mirror", "--no-local",
                                str(broot / "big"), str(work / "mirror")])

        def our_restore():
            shutil.rmtree(work / "restored", ignore_errors=True)
            return lambda: run([STRONGROOM, "bundle", "restore", "--store", str(bstore), "big",
                                str(work / "restored")])

        raw_clone_t = best(raw_clone, rounds)
        our_restore_t = best(our_restore, rounds)
        return {
            "repositories": len(repos),
            "mix": {k: kinds.count(k) for k in sorted(set(kinds))},
            "git_bytes": total,
            "full_sync_s": round(our_full_t, 3),
            "git_bundle_all_s": round(raw_full_t, 3),
            "full_ratio": round(our_full_t / raw_full_t, 2),
            "unchanged_sync_s": round(our_unchanged_t, 3),
            "for_each_ref_s": round(raw_refs_t, 3),
            "unchanged_ratio": round(our_unchanged_t / raw_refs_t, 2),
            "restore_chain_s": round(our_restore_t, 3),
            "clone_mirror_s": round(raw_clone_t, 3),
            "restore_ratio": round(our_restore_t / raw_clone_t, 2),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repos", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    r = bench(args.repos, args.rounds)
    if args.json:
        print(json.dumps(r, indent=2))
        return
    print(f"{r['repositories']} repositories {r['mix']}, {r['git_bytes'] / 1e6:.1f} MB of git "
          f"data; {os.cpu_count()} cores; best of {args.rounds}")
    rows = [
        ("full sync vs git bundle create --all", r["full_sync_s"], r["git_bundle_all_s"],
         r["full_ratio"], 1.3),
        ("unchanged sync vs git for-each-ref", r["unchanged_sync_s"], r["for_each_ref_s"],
         r["unchanged_ratio"], 4),
        ("restore full+10 vs clone --mirror --no-local", r["restore_chain_s"],
         r["clone_mirror_s"], r["restore_ratio"], 1.5),
    ]
    print(f"{'measure':46} {'strongroom':>11} {'raw git':>9} {'ratio':>6} {'goal':>6}")
    for name, ours, raw, ratio, goal in rows:
        mark = "ok" if ratio <= goal else "MISSED"
        print(f"{name:46} {ours:>10.3f}s {raw:>8.3f}s {ratio:>6.2f} {'<=' + str(goal):>6} {mark}")


if __name__ == "__main__":
    main()
