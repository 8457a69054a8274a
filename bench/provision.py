"""site.yml across the three-host bed: first run and the idempotent second run.

    sudo .venv/bin/python bench/provision.py [--json]

Reports wall time and, per host, tasks run / changed. Needs root (the bed creates
users and starts sshd on loopback); everything is removed afterwards.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fleet.bed import HOSTS, Bed  # noqa: E402


def timed_run(bed):
    t0 = time.perf_counter()
    r = bed.playbook("site.yml")
    wall = time.perf_counter() - t0
    if r.rc != 0:
        raise SystemExit(f"site.yml failed:\n{r.stdout.read()[-4000:]}")
    stats = r.stats or {}
    per_host = {}
    for h in HOSTS:
        tasks = sum(stats.get(k, {}).get(h, 0) for k in ("ok", "changed", "failures"))
        per_host[h] = {"tasks": tasks, "changed": stats.get("changed", {}).get(h, 0),
                       "skipped": stats.get("skipped", {}).get(h, 0)}
    return {"wall_s": round(wall, 1), "hosts": per_host}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    bed = Bed().start()
    try:
        first = timed_run(bed)
        second = timed_run(bed)
    finally:
        bed.stop()
    out = {"first": first, "second": second, "hosts": len(HOSTS)}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"site.yml across {len(HOSTS)} hosts over ssh on loopback (2 cores, forks 3)")
    print(f"{'run':8} {'wall':>7}  " + "  ".join(f"{h + ' tasks/changed':>22}" for h in HOSTS))
    for name, r in (("first", first), ("second", second)):
        cells = "  ".join(f"{r['hosts'][h]['tasks']:>15}/{r['hosts'][h]['changed']:<6}"
                          for h in HOSTS)
        print(f"{name:8} {r['wall_s']:>6.1f}s  {cells}")


if __name__ == "__main__":
    main()
