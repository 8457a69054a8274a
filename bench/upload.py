"""Upload with proof against a plain rclone copy, in one run.

    .venv/bin/python bench/upload.py [--gb 2] [--files 4000] [--json]

`strongroom upload` (rclone copy, then the one-way check of every file by hash) vs
`rclone copy` alone, of the same generated tree to a local-folder remote (goal: ratio
<= 1.5). The tree is read from the page cache by both.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from manifest import STRONGROOM, generate, run  # noqa: E402 -- shared tree generator
from timing import best  # noqa: E402


def bench(gb, files, rounds, base):
    work = Path(tempfile.mkdtemp(prefix="strongroom-bench-upload-", dir=base))
    try:
        root = work / "tree"
        paths = generate(root, int(gb * 1e9), files)
        total = sum(p.stat().st_size for p in paths)
        run(["cat", *map(str, paths)])  # warm the page cache once for everyone
        conf = work / "rclone.conf"
        conf.write_text("[bench]\ntype = local\n")
        remote = work / "remote"

        def ours():
            shutil.rmtree(remote, ignore_errors=True)
            return lambda: run([STRONGROOM, "--state-dir", str(work / "state"), "upload",
                                str(root), f"bench:{remote}", "--immutable",
                                "--rclone-config", str(conf)])

        def raw():
            shutil.rmtree(remote, ignore_errors=True)
            return lambda: run(["rclone", "--config", str(conf), "copy", str(root),
                                f"bench:{remote}"])

        raw_t = best(raw, rounds)
        ours_t = best(ours, rounds)
        return {"files": len(paths), "bytes": total, "cores": os.cpu_count(),
                "upload_s": round(ours_t, 3), "rclone_copy_s": round(raw_t, 3),
                "ratio": round(ours_t / raw_t, 2), "rclone": run(
                    ["rclone", "version"]).stdout.decode().split("\n")[0]}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=2.0)
    ap.add_argument("--files", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default="/var/tmp", help="where to build the tree")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    started = time.monotonic()
    r = bench(args.gb, args.files, args.rounds, args.dir)
    if args.json:
        print(json.dumps(r, indent=2))
        return
    ok = "ok" if r["ratio"] <= 1.5 else "MISSED"
    print(f"{r['files']} files, {r['bytes'] / 1e9:.2f} GB; {r['cores']} cores; best of "
          f"{args.rounds}; {r['rclone']}")
    print(f"upload (copy + check by hash) {r['upload_s']:.3f}s vs rclone copy "
          f"{r['rclone_copy_s']:.3f}s: ratio {r['ratio']:.2f} (goal <= 1.5) {ok}")
    print(f"(whole benchmark {time.monotonic() - started:.0f}s)")


if __name__ == "__main__":
    main()
