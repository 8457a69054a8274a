"""Snapshots of many small files against the raw tools, in one run.

    .venv/bin/python bench/snapshot_small.py [--files 200000] [--rounds 3] [--json]

1. `strongroom backup now` over the tree vs `tar -cf - ROOT | zstd -T0 > a.tar.zst`
   followed by `sha256sum a.tar.zst` (goal: within 1.5x)
2. `backup restore --critical` of 10,000 files vs `cp -a` of the same files, both into
   an empty target (goal: within 1.0x)

Both sides run on the same tree, interleaved round by round, so they see the same machine
state; each reports its best round, and the spread is the lowest and highest ratio of one
round's pair. The tree is read once before timing, so every side reads the page cache.
"""

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from manifest import ENV, STRONGROOM  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from strongroom import snapshots  # noqa: E402

CRITICAL_PATTERN = "*.key"  # the files `--critical` takes in the generated tree

from smallfiles import generate_small  # noqa: E402 -- the shared small-file generator


def _timed(argv, ok=(0,)):
    """(seconds, peak RSS in MB, stdout) of one command. The RSS is wait4's for that child,
    which takes in the children it waited for (tar and zstd under `backup now`)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=ENV)
        _, status, usage = os.wait4(proc.pid, 0)
        t = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode not in ok:
            raise SystemExit(f"{argv[:3]} failed ({proc.returncode}): {err.read().decode()}")
        return t, round(usage.ru_maxrss / 1024, 1), out.read().decode()


def clear(dest):
    for snap_id in snapshots.snapshot_ids(dest):
        snapshots.unprotect(Path(dest) / snap_id)
    shutil.rmtree(dest, ignore_errors=True)


def _warm(root):
    for dirpath, _, names in os.walk(root):
        for n in names:
            with open(os.path.join(dirpath, n), "rb") as fh:
                fh.read()


def _summary(ours, raw, peak):
    ratios = [o / r for o, r in zip(ours, raw, strict=True)]
    return {"strongroom_s": round(min(ours), 3), "raw_s": round(min(raw), 3),
            "ratio": round(min(ours) / min(raw), 3),
            "spread": [round(min(ratios), 3), round(max(ratios), 3)],
            "peak_rss_mb": peak}


def measure_backup(root: Path, work: Path, rounds: int, critical: str | None = None) -> dict:
    """`backup now` of root vs tar -cf - ROOT | zstd -T0 > a.tar.zst && sha256sum a.tar.zst;
    with `critical`, the snapshot also copies the files that pattern names into critical/
    (work the raw side does not do)."""
    root, work = Path(root), Path(work)
    dest, raw_out = work / "snaps-small", work / "a.tar.zst"
    _warm(root)
    argv = [STRONGROOM, "backup", "now", "--source", str(root), "--dest", str(dest)]
    if critical:
        argv += ["--critical", critical]
    raw_cmd = (f"tar -cf - -C {shlex.quote(str(root.parent))} {shlex.quote(root.name)} "
               f"| zstd -q -T0 > {shlex.quote(str(raw_out))} && sha256sum "
               f"{shlex.quote(str(raw_out))}")
    ours, raw, peak = [], [], 0.0
    try:
        for _ in range(rounds):
            clear(dest)
            t, rss, _ = _timed(argv, ok=(0, 1))
            ours.append(t)
            peak = max(peak, rss)
            raw_out.unlink(missing_ok=True)
            raw.append(_timed(["sh", "-c", raw_cmd])[0])
    finally:
        clear(dest)
        raw_out.unlink(missing_ok=True)
    return _summary(ours, raw, peak)


def measure_restore_critical(root: Path, work: Path, rounds: int) -> dict:
    """`backup restore --critical` of root's critical files (CRITICAL_PATTERN) vs `cp -a`
    of the snapshot's critical/ folder, both into an empty target."""
    root, work = Path(root), Path(work)
    dest, target = work / "snaps-crit", work / "crit-target"
    clear(dest)
    _, _, out = _timed([STRONGROOM, "backup", "now", "--source", str(root), "--dest",
                        str(dest), "--critical", CRITICAL_PATTERN], ok=(0, 1))
    snap_id = out.strip().splitlines()[0]
    crit = dest / snap_id / "critical"
    _warm(crit)
    argv = [STRONGROOM, "backup", "restore", "--dest", str(dest), snap_id, "--critical",
            "--to", str(target)]
    ours, raw, peak, restored = [], [], 0.0, 0
    try:
        for _ in range(rounds):
            shutil.rmtree(target, ignore_errors=True)
            t, rss, _ = _timed(argv)
            ours.append(t)
            peak = max(peak, rss)
            restored = sum(1 for p in target.rglob("*") if p.is_file())
            shutil.rmtree(target, ignore_errors=True)
            raw.append(_timed(["cp", "-a", str(crit), str(target)])[0])
    finally:
        shutil.rmtree(target, ignore_errors=True)
        clear(dest)
    out = _summary(ours, raw, peak)
    out["files"] = restored
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default="/var/tmp",
                    help="where to build the trees (default /var/tmp: files created under "
                         "/tmp may be watched on some machines, which slows every tool)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="strongroom-bench-small-", dir=args.dir))
    try:
        root = work / "tree"
        paths = generate_small(root, args.files, 200)
        total = sum(p.stat().st_size for p in paths)
        load = os.getloadavg()[0]
        backup = measure_backup(root, work, args.rounds)
        with_critical = measure_backup(root, work, args.rounds, CRITICAL_PATTERN)
        restore = measure_restore_critical(root, work, args.rounds)
        r = {"files": len(paths), "bytes": total, "cores": os.cpu_count(),
             "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2),
             "rounds": args.rounds, "backup": backup, "backup_with_critical": with_critical,
             "restore_critical": restore}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(r, indent=2))
        return
    print(f"{r['files']} files, {r['bytes'] / 1e6:.0f} MB; {r['cores']} cores, load "
          f"{r['load_before']} -> {r['load_after']}; best of {args.rounds}, interleaved")
    b, k, c = r["backup"], r["backup_with_critical"], r["restore_critical"]
    print(f"backup now {b['strongroom_s']:.2f}s vs tar | zstd -T0 + sha256sum "
          f"{b['raw_s']:.2f}s: {b['ratio']:.2f}x (spread {b['spread'][0]:.2f}-"
          f"{b['spread'][1]:.2f}; goal <= 1.5) {'ok' if b['ratio'] <= 1.5 else 'MISSED'}; "
          f"peak RSS {b['peak_rss_mb']} MB")
    print(f"backup now --critical '{CRITICAL_PATTERN}' ({c['files']} copies into critical/ too) "
          f"{k['strongroom_s']:.2f}s vs the same raw {k['raw_s']:.2f}s: {k['ratio']:.2f}x "
          f"(spread {k['spread'][0]:.2f}-{k['spread'][1]:.2f}); peak RSS {k['peak_rss_mb']} MB")
    print(f"restore --critical of {c['files']} files {c['strongroom_s']:.3f}s vs cp -a "
          f"{c['raw_s']:.3f}s: {c['ratio']:.2f}x (spread {c['spread'][0]:.2f}-"
          f"{c['spread'][1]:.2f}; goal <= 1.0) {'ok' if c['ratio'] <= 1.0 else 'MISSED'}; "
          f"peak RSS {c['peak_rss_mb']} MB")
    print(f"(whole benchmark {time.monotonic() - started:.0f}s)")


if __name__ == "__main__":
    main()
