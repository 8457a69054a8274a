"""Manifests of many small files against the raw tools, in one run.

    .venv/bin/python bench/smallfiles.py [--files 200000] [--rounds 3] [--json]

1. `strongroom manifest create` vs `find . -type f -print0 | xargs -0 -P2 -n 2000
   sha256sum > out` (two sha256sum processes, as many as the engine has workers on a
   2-core machine) over the same tree (goal: within 1.5x, under 150 MB peak memory)
2. `manifest verify --fast` of the unchanged tree vs `find ROOT -newer STAMP`, a walk
   that stats every file and compares its mtime (goal: within 1.5x)

Both sides run on the same tree, interleaved round by round (the order swapped every
round), so they see the same machine state; each reports its best round, and the spread
is the lowest and highest ratio of one round's pair. Peak memory is the measured
command's own maximum resident set (/usr/bin/time -f %M). The tree is read once
before timing, so every side reads the page cache.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from manifest import ENV, STRONGROOM  # noqa: E402


def generate_small(root, files, seed=200):
    """files of 200 B - 2 KB, ~100 to a folder, two folder levels, like a project tree;
    1 in 20 is a .key file (so 200,000 files hold 10,000 critical ones). Returns the
    paths."""
    rng = random.Random(seed)
    block = rng.randbytes(1 << 16)
    root = Path(root)
    paths = []
    for i in range(files):
        folder = root / f"p{i // 10_000:03d}" / f"d{i // 100 % 100:02d}"
        if i % 100 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        name = f"k{i:07d}.key" if i % 20 == 0 else f"f{i:07d}.txt"
        size = rng.randint(200, 2048)
        off = rng.randrange(0, len(block) - size)
        p = folder / name
        # a per-file prefix, so no two files share content
        p.write_bytes(i.to_bytes(8, "big") + block[off:off + size - 8])
        paths.append(p)
    return paths


def warm(root):
    """Read every file once, so each measured command reads the page cache."""
    subprocess.run(["sh", "-c", "find . -type f -print0 | xargs -0 cat > /dev/null"],
                   cwd=root, check=True)


def timed(argv, cwd=None, ok=(0,)):
    """(seconds, peak resident MB) of one command, measured on that child alone: through
    /usr/bin/time, because a child started by this process would count this process's
    own peak (Linux keeps the larger maximum across fork and exec)."""
    with tempfile.NamedTemporaryFile() as rss, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss.name, *argv], cwd=cwd,
                              env=ENV, stdout=subprocess.DEVNULL, stderr=err, check=False)
        seconds = time.perf_counter() - t0
        if proc.returncode not in ok:
            err.seek(0)
            raise SystemExit(f"{argv[:4]} failed ({proc.returncode}): "
                             f"{err.read().decode(errors='replace')[-2000:]}")
        peak_kb = int(Path(rss.name).read_text().split()[-1])
    return seconds, peak_kb / 1024


def pair(ours, raw, rounds):
    """Interleave two commands round by round: best of each, the ratio of the bests, the
    lowest and highest ratio of one round, and our peak memory."""
    ours_t, raw_t, ratios, rss = [], [], [], 0.0
    for i in range(rounds):
        if i % 2:
            o, mem = ours()
            r = raw()
        else:
            r = raw()
            o, mem = ours()
        ours_t.append(o)
        raw_t.append(r)
        ratios.append(o / r)
        rss = max(rss, mem)
    best_o, best_r = min(ours_t), min(raw_t)
    return {"strongroom_s": round(best_o, 3), "raw_s": round(best_r, 3),
            "ratio": round(best_o / best_r, 2),
            "spread": [round(min(ratios), 2), round(max(ratios), 2)],
            "peak_rss_mb": round(rss, 1)}


def measure_create(root: Path, work: Path, rounds: int) -> dict:
    out = work / "create.json"
    sums = work / "sha256sum.out"

    def ours():
        return timed([STRONGROOM, "manifest", "create", str(root), "--out", str(out)])

    def raw():
        return timed(["sh", "-c", "find . -type f -print0 | xargs -0 -P2 -n 2000 sha256sum "
                      f"> '{sums}'"], cwd=root)[0]

    r = pair(ours, raw, rounds)
    r["raw"] = "find -print0 | xargs -0 -P2 -n 2000 sha256sum"
    return r


def measure_verify_fast(root: Path, work: Path, rounds: int) -> dict:
    man = work / "verify.json"
    stamp = work / "stamp"
    timed([STRONGROOM, "manifest", "create", str(root), "--out", str(man)])
    stamp.write_bytes(b"")

    def ours():
        return timed([STRONGROOM, "manifest", "verify", str(root), "--manifest", str(man),
                      "--fast"])

    def raw():
        return timed(["find", str(root), "-newer", str(stamp)])[0]

    r = pair(ours, raw, rounds)
    r["raw"] = "find ROOT -newer STAMP"
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="strongroom-bench-smallfiles-"))
    try:
        root = work / "tree"
        paths = generate_small(root, args.files)
        total = sum(p.stat().st_size for p in paths)
        del paths
        warm(root)
        r = {"files": args.files, "bytes": total, "cores": os.cpu_count(),
             "rounds": args.rounds, "create": measure_create(root, work, args.rounds),
             "verify_fast": measure_verify_fast(root, work, args.rounds)}
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)
    if args.json:
        print(json.dumps(r, indent=2))
        return
    print(f"{r['files']} files, {r['bytes'] / 1e9:.2f} GB; {r['cores']} cores; best of "
          f"{args.rounds}, rounds interleaved")
    for key, label, goal_mb in (("create", "manifest create", 150),
                                ("verify_fast", "manifest verify --fast", None)):
        m = r[key]
        ok = m["ratio"] <= 1.5 and (goal_mb is None or m["peak_rss_mb"] < goal_mb)
        mem_goal = f", goal < {goal_mb} MB" if goal_mb else ""
        print(f"{label} {m['strongroom_s']:.3f}s vs {m['raw']} {m['raw_s']:.3f}s: "
              f"{m['ratio']:.2f}x (spread {m['spread'][0]:.2f}-{m['spread'][1]:.2f}x, goal "
              f"<= 1.5x), peak {m['peak_rss_mb']:.0f} MB{mem_goal} "
              f"{'ok' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
