"""Snapshots against the method they replace, in one run.

    .venv/bin/python bench/snapshot.py [--gb 2] [--files 4000] [--json]

1. `strongroom backup now` (critical files, full tar.zst, SHA256SUMS, chattr +i when run
   as root) vs `tar czf` of the tree followed by `sha256sum` of its files, the original
   script's method (goal: at least 4 times faster)
2. `backup restore --critical` of 10,000 files (goal <= 2 s)

The tree is generated once and read from the page cache by every measured command.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from manifest import STRONGROOM, generate, run  # noqa: E402 -- shared tree generator
from timing import best  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from strongroom import snapshots  # noqa: E402


def clear(dest):
    for snap_id in snapshots.snapshot_ids(dest):
        snapshots.unprotect(dest / snap_id)
    shutil.rmtree(dest, ignore_errors=True)


def bench(gb, files, rounds, base):
    work = Path(tempfile.mkdtemp(prefix="strongroom-bench-snapshot-", dir=base))
    try:
        root = work / "tree"
        paths = generate(root, int(gb * 1e9), files)
        total = sum(p.stat().st_size for p in paths)
        rels = [str(p.relative_to(root)) for p in paths]
        run(["cat", *map(str, paths)])  # warm the page cache once for everyone
        dest = work / "snaps"

        def ours():
            clear(dest)
            return lambda: run([STRONGROOM, "backup", "now", "--source", str(root), "--dest",
                                str(dest), "--critical", "d00/", "--large", "50M"], ok=(0, 1))

        def raw():
            (work / "raw.tar.gz").unlink(missing_ok=True)

            def go():
                subprocess.run(["tar", "czf", str(work / "raw.tar.gz"), "-C", str(root), "."],
                               check=True)
                subprocess.run(["sha256sum", "--", *rels], cwd=root, check=True,
                               stdout=subprocess.DEVNULL)
            return go

        ours_t = best(ours, rounds)
        immutable = snapshots.immutability_of(dest / snapshots.snapshot_ids(dest)[-1])
        raw_t = best(raw, 1)  # minutes of gzip: once is enough to compare
        clear(dest)
        shutil.rmtree(root)
        (work / "raw.tar.gz").unlink(missing_ok=True)
        restore_t, cp_t = bench_critical_restore(work)
        return {"files": len(paths), "bytes": total, "cores": os.cpu_count(),
                "snapshot_s": round(ours_t, 3), "tar_czf_sha256sum_s": round(raw_t, 3),
                "speedup": round(raw_t / ours_t, 2), "immutable": immutable,
                "critical_restore_10000_s": round(restore_t, 3),
                "cp_a_10000_s": round(cp_t, 3), "dir": str(base)}
    finally:
        clear(work / "snaps")
        clear(work / "crit-snaps")
        shutil.rmtree(work, ignore_errors=True)


def bench_critical_restore(work, n=10_000):
    src, dest, target = work / "crit", work / "crit-snaps", work / "crit-target"
    for i in range(n):
        p = src / f"notes{i % 100:02d}" / f"n{i:05d}.md"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"note {i}\n" * 20)
    out = run([STRONGROOM, "backup", "now", "--source", str(src), "--dest", str(dest),
               "--critical", "*.md"], ok=(0, 1))
    snap_id = out.stdout.decode().strip()

    def restore():
        shutil.rmtree(target, ignore_errors=True)
        return lambda: run([STRONGROOM, "backup", "restore", "--dest", str(dest), snap_id,
                            "--critical", "--target", str(target)])

    t = best(restore, 3)
    if sum(1 for _ in target.rglob("*.md")) != n:
        raise SystemExit("critical restore did not restore every file")

    def copy():  # the floor: the same files copied by cp, no checks, no atomic replace
        shutil.rmtree(target, ignore_errors=True)
        return lambda: run(["cp", "-a", str(dest / snap_id / "critical"), str(target)])

    return t, best(copy, 3)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=2.0)
    ap.add_argument("--files", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default="/var/tmp",
                    help="where to build the trees (default /var/tmp: on some machines "
                         "files created under /tmp are watched, which makes every create "
                         "cost far more, for any tool)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    started = time.monotonic()
    r = bench(args.gb, args.files, args.rounds, args.dir)
    if args.json:
        print(json.dumps(r, indent=2))
        return
    print(f"{r['files']} files, {r['bytes'] / 1e9:.2f} GB; {r['cores']} cores; "
          f"best of {args.rounds} (the tar czf method once)")
    ok = "ok" if r["speedup"] >= 4 else "MISSED"
    print(f"backup now {r['snapshot_s']:.3f}s (immutable: {r['immutable']}) vs tar czf + "
          f"sha256sum {r['tar_czf_sha256sum_s']:.3f}s: {r['speedup']:.2f}x faster "
          f"(goal >= 4) {ok}")
    ok = "ok" if r["critical_restore_10000_s"] <= 2 else "MISSED"
    print(f"critical restore of 10,000 files {r['critical_restore_10000_s']:.3f}s "
          f"(goal <= 2 s) {ok}; cp -a of the same files {r['cp_a_10000_s']:.3f}s; in {r['dir']}")
    print(f"(whole benchmark {time.monotonic() - started:.0f}s)")


if __name__ == "__main__":
    main()
