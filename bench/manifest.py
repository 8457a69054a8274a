"""Manifests against sha256sum, in one run.

    .venv/bin/python bench/manifest.py [--gb 2] [--files 4000] [--json]

1. `strongroom manifest create` vs `sha256sum` over the same files, one process each
   (goal: at least 4 times sha256sum's throughput)
2. `manifest verify --fast` after touching 1 % of the files vs `verify --deep`
   (goal: <= 5 % of the deep time)
3. `sync rollback` of a 10,000-file snapshot after a bad commit (goal <= 2 s; the
   script it replaces quoted 12-18 s)

The tree is generated once and read from the page cache by every measured command, so
the figures compare hashing and bookkeeping, not the disk. Best of --rounds.
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from timing import best  # bench/ is on sys.path when a bench script runs

STRONGROOM = str(Path(sys.executable).parent / "strongroom")


def generate(root, total_bytes, files, seed=4000):
    """Mixed sizes: 75 % small (1-64 KB), 22.5 % medium, 2.5 % large, ~total_bytes."""
    rng = random.Random(seed)
    small, large = int(files * 0.75), max(1, int(files * 0.025))
    medium = files - small - large
    sizes = [rng.randint(1024, 65536) for _ in range(small)]
    rest = total_bytes - sum(sizes)
    med_each = int(rest * 0.45 / medium)
    sizes += [rng.randint(med_each // 2, med_each * 3 // 2) for _ in range(medium)]
    large_each = (total_bytes - sum(sizes)) // large
    sizes += [large_each] * large
    rng.shuffle(sizes)
    block = rng.randbytes(16 * 1024 * 1024)
    paths = []
    for i, size in enumerate(sizes):
        p = root / f"d{i % 40:02d}" / f"s{i // 40:03d}" / f"f{i:05d}.dat"
        p.parent.mkdir(parents=True, exist_ok=True)
        off = rng.randrange(0, len(block) - 1)
        data = (block[off:] + block)[:size] if size <= len(block) else (
            block * (size // len(block) + 1))[:size]
        # a per-file prefix, so no two files share content
        p.write_bytes(i.to_bytes(8, "big") + data[8:])
        paths.append(p)
    return paths


# An installed engine runs from compiled bytecode (pip writes it); a development shell
# that forbids writing bytecode would make every run compile the engine from source.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run(argv, ok=(0,)):
    proc = subprocess.run(argv, capture_output=True, check=False, env=ENV)
    if proc.returncode not in ok:
        raise SystemExit(f"{argv[:3]} failed ({proc.returncode}): {proc.stderr.decode()}")
    return proc


def bench_rollback(work, n=10_000):
    """Time `strongroom sync rollback` of an n-file snapshot, after a commit that changed
    100 files and deleted 100 (best of 3)."""
    env = dict(os.environ, GIT_AUTHOR_NAME="B", GIT_AUTHOR_EMAIL="b@example.org",
               GIT_COMMITTER_NAME="B", GIT_COMMITTER_EMAIL="b@example.org")
    remote, repo = work / "remote.git", work / "repo"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
    subprocess.run(["git", "clone", "-q", str(remote), str(repo)], check=True,
                   capture_output=True)
    for i in range(n):
        p = repo / f"d{i % 100:02d}" / f"note{i:05d}.md"
        p.parent.mkdir(exist_ok=True)
        p.write_text(f"note {i}\n" * 20)
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "commit", "-q", "-m", "notes"], check=True, env=env)
    run([STRONGROOM, "sync", "push", "--repo", str(repo)])  # takes the snapshot
    times = []
    for _ in range(3):
        for i in range(0, 200, 2):
            (repo / f"d{i % 100:02d}" / f"note{i:05d}.md").write_text("damaged\n")
            (repo / f"d{(i + 1) % 100:02d}" / f"note{i + 1:05d}.md").unlink()
        subprocess.run(["git", "-C", str(repo), "commit", "-q", "-am", "bad"], check=True,
                       env=env)
        t0 = time.perf_counter()
        run([STRONGROOM, "sync", "rollback", "--repo", str(repo)])
        times.append(time.perf_counter() - t0)
    return min(times)


def bench(gb, files, rounds):
    work = Path(tempfile.mkdtemp(prefix="strongroom-bench-manifest-"))
    try:
        root = work / "tree"
        paths = generate(root, int(gb * 1e9), files)
        total = sum(p.stat().st_size for p in paths)
        man = work / "m.json"
        rels = [str(p.relative_to(root)) for p in paths]
        run(["cat", *map(str, paths)])  # warm the page cache once for everyone

        def raw():
            return lambda: subprocess.run(["sha256sum", "--", *rels], cwd=root, check=True,
                                          stdout=subprocess.DEVNULL)

        def ours():
            return lambda: run([STRONGROOM, "manifest", "create", str(root), "--out", str(man)])

        raw_t = best(raw, rounds)
        ours_t = best(ours, rounds)

        def deep():
            return lambda: run([STRONGROOM, "manifest", "verify", str(root), "--manifest",
                                str(man), "--deep"])

        touched = paths[:: 100]  # 1 %

        def fast():
            def touch():
                now = time.time()
                for p in touched:
                    os.utime(p, (now, now + 1))  # a new mtime: must be re-hashed
            touch()
            return lambda: run([STRONGROOM, "manifest", "verify", str(root), "--manifest",
                                str(man), "--fast"])

        deep_t = best(deep, rounds)
        fast_t = best(fast, rounds)
        rollback_t = bench_rollback(work)
        return {
            "rollback_10000_s": round(rollback_t, 3),
            "files": len(paths), "bytes": total, "cores": os.cpu_count(),
            "create_s": round(ours_t, 3), "sha256sum_s": round(raw_t, 3),
            "create_mb_s": round(total / ours_t / 1e6),
            "sha256sum_mb_s": round(total / raw_t / 1e6),
            "throughput_ratio": round(raw_t / ours_t, 2),
            "verify_deep_s": round(deep_t, 3), "verify_fast_s": round(fast_t, 3),
            "touched_files": len(touched),
            "fast_share": round(fast_t / deep_t, 4),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=2.0)
    ap.add_argument("--files", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    r = bench(args.gb, args.files, args.rounds)
    if args.json:
        print(json.dumps(r, indent=2))
        return
    print(f"{r['files']} files, {r['bytes'] / 1e9:.2f} GB; {r['cores']} cores; "
          f"best of {args.rounds}")
    ok = "ok" if r["throughput_ratio"] >= 4 else "MISSED"
    print(f"manifest create {r['create_s']:.3f}s ({r['create_mb_s']} MB/s) vs sha256sum "
          f"{r['sha256sum_s']:.3f}s ({r['sha256sum_mb_s']} MB/s): "
          f"{r['throughput_ratio']:.2f}x throughput (goal >= 4) {ok}")
    ok = "ok" if r["fast_share"] <= 0.05 else "MISSED"
    print(f"verify --fast after touching {r['touched_files']} files {r['verify_fast_s']:.3f}s "
          f"vs --deep {r['verify_deep_s']:.3f}s: {r['fast_share'] * 100:.1f} % (goal <= 5 %) "
          f"{ok}")
    ok = "ok" if r["rollback_10000_s"] <= 2 else "MISSED"
    print(f"sync rollback of a 10,000-file snapshot {r['rollback_10000_s']:.3f}s "
          f"(goal <= 2 s) {ok}")


if __name__ == "__main__":
    main()
