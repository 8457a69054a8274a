"""How the small-file measures grow with the file count: a table and a plot.

    .venv/bin/python bench/growth.py [--sizes 10000,100000,200000,1000000] [--rounds 3]

For each size one tree is generated (bench/smallfiles.py's generate_small: 200 B - 2 KB
files, ~100 to a folder) and read once into the page cache; then, on that same tree:

- `manifest create` vs two sha256sum processes, `manifest verify --fast` vs
  `find ROOT -newer STAMP` (bench/smallfiles.py)
- `backup now` and `backup restore --critical` vs their raw tools
  (bench/snapshot_small.py, when it is present)

Each measure interleaves strongroom and the raw tool round by round and reports the best
of each, the ratio of the bests and the spread of one round's ratio. The table (time and
peak memory per file) is printed and written to bench/results/growth.md with the figures
in growth.json; the plot goes to bench/results/growth.png. Goals: memory grows no faster
than the file count, and a 1,000,000-file manifest fits in 500 MB.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from smallfiles import generate_small, measure_create, measure_verify_fast, warm  # noqa: E402

RESULTS = HERE / "results"
LIMIT_1M_MB = 500


def snapshot_measures():
    """[(name, function)] of bench/snapshot_small.py, or [] and why not."""
    try:
        import snapshot_small
    except ImportError as exc:
        return [], f"bench/snapshot_small.py is not importable ({exc}): snapshot rows left out"
    return [("backup now", snapshot_small.measure_backup),
            ("backup restore --critical", snapshot_small.measure_restore_critical)], None


def rounds_for(files, rounds):
    """The million-file tree takes minutes a round: one round fewer there (two at least)."""
    return rounds if files < 1_000_000 else max(2, rounds - 1)


def remove(path):
    """rm -rf, after lifting the immutable flag a root `backup now` sets on its snapshot."""
    subprocess.run(["chattr", "-R", "-i", str(path)], check=False, capture_output=True)
    subprocess.run(["rm", "-rf", str(path)], check=False)


def run(sizes, rounds, done=lambda rows, note: None):
    ours = [("manifest create", measure_create),
            ("manifest verify --fast", measure_verify_fast)]
    theirs, note = snapshot_measures()
    rows = []
    for files in sizes:
        work = Path(tempfile.mkdtemp(prefix="strongroom-bench-growth-"))
        try:
            root = work / "tree"
            t0 = time.perf_counter()
            generate_small(root, files)
            warm(root)
            print(f"{files} files generated in {time.perf_counter() - t0:.0f}s",
                  file=sys.stderr)
            for name, fn in ours + theirs:
                scratch = work / name.replace(" ", "_").replace("-", "")
                scratch.mkdir()
                try:
                    m = fn(root, scratch, rounds_for(files, rounds))
                except (Exception, SystemExit) as exc:  # one failing measure: the others run
                    print(f"{name} at {files} files failed: {exc}", file=sys.stderr)
                    continue
                remove(scratch)
                m.update(measure=name, files=files, rounds=rounds_for(files, rounds))
                rows.append(m)
                print(f"  {name}: {m['strongroom_s']}s vs {m['raw_s']}s, {m['ratio']}x, "
                      f"{m['peak_rss_mb']} MB", file=sys.stderr)
        finally:
            remove(work)
        done(rows, note)  # the sizes measured so far are kept if a later one is stopped
    return rows, note


def table(rows):
    lines = ["| measure | files | strongroom | raw tool | ratio (spread) | µs / file "
             "| peak MB | KB / file |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        n = r["files"]
        lines.append(f"| {r['measure']} | {n:,} | {r['strongroom_s']:.2f} s | "
                     f"{r['raw_s']:.2f} s | {r['ratio']:.2f}x ({r['spread'][0]:.2f}-"
                     f"{r['spread'][1]:.2f}) | {r['strongroom_s'] / n * 1e6:.1f} | "
                     f"{r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] * 1024 / n:.2f} |")
    return "\n".join(lines)


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=80)
    for name in dict.fromkeys(r["measure"] for r in rows):
        mine = [r for r in rows if r["measure"] == name]
        files = [r["files"] for r in mine]
        ax_t.plot(files, [r["strongroom_s"] / r["files"] * 1e6 for r in mine], "o-",
                  label=name)
        ax_m.plot(files, [r["peak_rss_mb"] for r in mine], "o-", label=name)
    ax_t.set(xscale="log", xlabel="files", ylabel="µs per file (best)",
             title="time per file")
    ax_m.set(xscale="log", yscale="log", xlabel="files", ylabel="peak RSS (MB)",
             title="peak memory")
    ax_m.axhline(LIMIT_1M_MB, color="grey", linestyle=":", linewidth=1)
    ax_t.legend(fontsize=7)
    for ax in (ax_t, ax_m):
        ax.grid(True, which="both", linewidth=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def memory_verdict(rows):
    """Whether memory per file stays flat (within 1.5x of the smallest tree's, ignoring
    the interpreter's fixed ~25 MB) and the largest manifest fits in 500 MB."""
    out = []
    for name in ("manifest create", "manifest verify --fast"):
        mine = sorted((r for r in rows if r["measure"] == name), key=lambda r: r["files"])
        if len(mine) < 2:
            continue
        per = [(r["peak_rss_mb"] - 25) / r["files"] for r in mine]
        flat = per[-1] <= per[1 if len(per) > 2 else 0] * 1.5
        big = mine[-1]
        fits = big["files"] < 1_000_000 or big["peak_rss_mb"] <= LIMIT_1M_MB
        growth = "no faster than the file count" if flat else "GROWS FASTER than the files"
        out.append(f"{name}: {per[-1] * 1024:.2f} KB per file above the interpreter at "
                   f"{big['files']:,} files ({growth}); "
                   f"peak {big['peak_rss_mb']:.0f} MB"
                   + (f" ({'fits' if fits else 'MISSES'} {LIMIT_1M_MB} MB)"
                      if big["files"] >= 1_000_000 else ""))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,200000,1000000")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()

    def write(rows, note):
        load_after = os.getloadavg()
        head = (f"{os.cpu_count()} cores; best of {args.rounds} (of "
                f"{rounds_for(1_000_000, args.rounds)} at 1,000,000 files), rounds "
                f"interleaved; load average {load[0]:.1f} before, {load_after[0]:.1f} after")
        rows = sorted(rows, key=lambda r: r["files"])  # stable: measures keep their order
        text = "\n".join([head, "", table(rows), "", *memory_verdict(rows),
                          *([note] if note else [])]) + "\n"
        (out / "growth.md").write_text(text)
        (out / "growth.json").write_text(json.dumps(
            {"sizes": sizes, "rounds": args.rounds, "load": [load, load_after],
             "note": note, "rows": rows}, indent=2) + "\n")
        plot(rows, out / "growth.png")
        return text

    rows, note = run(sizes, args.rounds, write)
    print(write(rows, note))
    print(f"wrote {out / 'growth.md'}, {out / 'growth.json'}, {out / 'growth.png'}")


if __name__ == "__main__":
    main()
