"""A growing fleet: site.yml, status.yml and verify-restore.yml across 3, 10 and 20 hosts.

    sudo .venv/bin/python bench/fleet.py [--sizes 3,10,20] [--rounds 2] [--json]

Each size gets its own bed (tests/fleet/bed.py: one unix user per host behind a real sshd
on loopback, each host a user-mode install of the engine over SSH). Per size:

1. site.yml's first run (forks 5, ansible.cfg as it is), with the share of its wall time
   spent building the engine virtualenvs (venv, dependencies, engine wheel)
2. site.yml's second run, which must change nothing on any host
3. status.yml and verify-restore.yml (after one `bundles` run per host, so there is
   something to restore)
4. round by round, interleaved, each setting against the same hosts: forks 5 (Ansible's
   default) vs forks N, SSH pipelining on vs off, and facts gathered (gather_subset min)
   vs read from a jsonfile fact cache, on status.yml; at --site-sizes also on site.yml's
   idempotent run (all but the fact cache: site.yml gathers facts once)

Needs root (the bed creates users and starts sshd). Every user, home and process a bed
made is removed when its size is done, also when the run fails or is interrupted.
"""

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fleet.bed import Bed  # noqa: E402

SCHEDULERS = ("cron", "launchd", "systemd")
# the tasks of roles/strongroom/tasks/engine.yml that build the engine's virtualenv
ENGINE_TASKS = ("Create the engine virtualenv", "Install the engine's dependencies",
                "Install the engine itself")
PLAYBOOKS = ("site.yml", "status.yml", "verify-restore.yml")


def fleet_hosts(n):
    """n hosts, user names apart from the test bed's, the three schedulers in turn."""
    return {f"h{i:02d}": (f"srbench-h{i:02d}", SCHEDULERS[i % 3]) for i in range(n)}


def settings(n, bed):
    """name -> environment for ansible-playbook (on top of ansible.cfg)."""
    cache = {"ANSIBLE_GATHERING": "smart", "ANSIBLE_CACHE_PLUGIN": "jsonfile",
             "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(bed.base / "facts"),
             "ANSIBLE_CACHE_PLUGIN_TIMEOUT": "3600"}
    return {
        "forks 5": {"ANSIBLE_FORKS": "5"},
        f"forks {n}": {"ANSIBLE_FORKS": str(n)},
        "pipelining off": {"ANSIBLE_FORKS": "5", "ANSIBLE_PIPELINING": "False"},
        "fact cache": {"ANSIBLE_FORKS": "5", **cache},
    }


def pinned_source(bed):
    """A copy of what the engine wheel is built from, for strongroom_source.

    Others may edit the checkout while the bench runs; a new wheel between two runs would
    be a real change, not a lack of idempotence.
    """
    src = bed.base / "source"
    for rel in ("pyproject.toml", "README.md", "scripts/engine-wheel"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    for rel in ("strongroom", "templates"):
        shutil.copytree(ROOT / rel, src / rel, ignore=shutil.ignore_patterns("__pycache__"))
    (src / "build").mkdir()
    (src / "build" / "engine-build-env").symlink_to(ROOT / "build" / "engine-build-env")
    return str(src)


def playbook(bed, name, env):
    """One ansible-playbook run across the bed; returns (wall seconds, runner)."""
    import ansible_runner

    venv_bin = Path(shutil.which("ansible-playbook") or sys.executable).parent
    private = Path(tempfile.mkdtemp(prefix="runner-", dir=bed.base))
    envvars = {
        "PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "LC_ALL": "C.UTF-8",
        "LANG": "C.UTF-8",
        **env,
    }
    t0 = time.perf_counter()
    r = ansible_runner.run(private_data_dir=str(private), project_dir=str(ROOT),
                           playbook=str(ROOT / "playbooks" / name),
                           inventory=str(bed.inventory), envvars=envvars, quiet=True,
                           extravars={"strongroom_source": bed.source})
    wall = time.perf_counter() - t0
    if r.rc != 0:
        raise SystemExit(f"{name} failed ({env}):\n{r.stdout.read()[-4000:]}")
    return wall, r


def per_host(bed, r):
    stats = r.stats or {}
    return {h: {"tasks": sum(stats.get(k, {}).get(h, 0) for k in ("ok", "changed", "failures")),
                "changed": stats.get("changed", {}).get(h, 0)}
            for h in bed.hosts}


def engine_share(r):
    """Wall seconds the engine-building tasks took: per task, first start to last end."""
    spans = {}
    for ev in r.events:
        data = ev.get("event_data", {})
        task = data.get("task", "")
        if ev.get("event") not in ("runner_on_ok", "runner_on_failed") or not data.get("start"):
            continue
        if not any(task.startswith(t) for t in ENGINE_TASKS):
            continue
        start = datetime.fromisoformat(data["start"]).timestamp()
        end = datetime.fromisoformat(data["end"]).timestamp()
        lo, hi = spans.get(task, (start, end))
        spans[task] = (min(lo, start), max(hi, end))
    return sum(hi - lo for lo, hi in spans.values())


def idempotent(bed, r):
    hosts = per_host(bed, r)
    moved = {h: v["changed"] for h, v in hosts.items() if v["changed"]}
    if moved:
        tasks = sorted({f"{ev['event_data'].get('host')}: {ev['event_data'].get('task')}"
                        for ev in r.events if ev.get("event") == "runner_on_ok"
                        and ev.get("event_data", {}).get("res", {}).get("changed")})
        raise SystemExit(f"site.yml's second run changed something: {moved}: {tasks}")
    return hosts


def run_size(n, rounds, site_sizes, site_rounds):
    bed = Bed(hosts=fleet_hosts(n))
    try:
        t0 = time.perf_counter()
        bed.start()
        bed.source = pinned_source(bed)
        out = {"hosts": n, "bed_s": round(time.perf_counter() - t0, 1)}
        wall, r = playbook(bed, "site.yml", {"ANSIBLE_FORKS": "5"})
        engine = engine_share(r)
        out["first"] = {"wall_s": round(wall, 1), "per_host_s": round(wall / n, 2),
                        "engine_s": round(engine, 1), "engine_pct": round(100 * engine / wall),
                        "hosts": per_host(bed, r)}
        wall, r = playbook(bed, "site.yml", {"ANSIBLE_FORKS": "5"})
        hosts = idempotent(bed, r)
        out["second"] = {"wall_s": round(wall, 1), "per_host_s": round(wall / n, 2),
                         "changed": sum(v["changed"] for v in hosts.values()),
                         "hosts": hosts}
        for host in bed.hosts:
            proc = bed.strongroom(host, "run", "bundles")
            if proc.returncode != 0:
                raise SystemExit(f"{host}: bundles failed: {proc.stdout}{proc.stderr}")
        for book in PLAYBOOKS[1:]:
            wall, r = playbook(bed, book, {"ANSIBLE_FORKS": "5"})
            out[book] = {"wall_s": round(wall, 1), "per_host_s": round(wall / n, 2)}
        variants = settings(n, bed)
        if n <= 5:
            del variants[f"forks {n}"]  # the same as forks 5
        playbook(bed, "status.yml", variants["fact cache"])  # fills the fact cache
        books = ("status.yml", "site.yml") if n in site_sizes else ("status.yml",)
        times = {v: {b: [] for b in books} for v in variants}
        for i in range(rounds):
            for book in books:
                if book == "site.yml" and i >= site_rounds:
                    continue
                for name, env in variants.items():
                    if book == "site.yml" and name == "fact cache":
                        continue  # site.yml gathers once, in its first play
                    wall, r = playbook(bed, book, env)
                    if book == "site.yml":
                        idempotent(bed, r)
                    times[name][book].append(wall)
        out["settings"] = {
            name: {book: {"best_s": round(min(t), 2), "spread_s": round(max(t) - min(t), 2)}
                   for book, t in books.items() if t}
            for name, books in times.items()}
        return out
    finally:
        bed.stop()


def load():
    """The machine's load while measuring: 1-minute average and other processes' CPU."""
    return round(os.getloadavg()[0], 2)


def report(results):
    print("A growing fleet over ssh on loopback (user-mode installs, 2 cores, forks 5)")
    print(f"{'hosts':>5} {'site 1st':>9} {'/host':>6} {'engine venvs':>15} {'site 2nd':>9} "
          f"{'/host':>6} {'changed':>7} {'status':>7} {'verify':>7}")
    for r in results:
        f, s = r["first"], r["second"]
        print(f"{r['hosts']:>5} {f['wall_s']:>8.1f}s {f['per_host_s']:>5.2f}s "
              f"{f['engine_s']:>6.1f}s ({f['engine_pct']:>3}%) {s['wall_s']:>8.1f}s "
              f"{s['per_host_s']:>5.2f}s {s['changed']:>7} {r['status.yml']['wall_s']:>6.1f}s "
              f"{r['verify-restore.yml']['wall_s']:>6.1f}s")
    print("\nsettings, best of rounds (spread), wall seconds")
    for r in results:
        for name, books in r["settings"].items():
            cells = "  ".join(f"{b} {v['best_s']:.2f} ({v['spread_s']:.2f})"
                              for b, v in books.items())
            print(f"  {r['hosts']:>2} hosts  {name:15} {cells}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="3,10,20", help="fleet sizes, comma-separated")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--site-sizes", default="10",
                    help="sizes at which the settings are also compared on site.yml")
    ap.add_argument("--site-rounds", type=int, default=1,
                    help="rounds of the settings on site.yml (its runs are the long ones)")
    ap.add_argument("--out", help="also write the results so far to this JSON file")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    # a terminated run still leaves through the beds' finally blocks
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if os.geteuid() != 0:
        raise SystemExit("bench/fleet.py needs root: the bed creates users and starts sshd")
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        before = load()
        r = run_size(n, args.rounds, {int(s) for s in args.site_sizes.split(",") if s},
                     args.site_rounds)
        r["load"] = {"before": before, "after": load()}
        results.append(r)
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=2))
        if not args.json:
            print(f"{n} hosts done: load {r['load']}", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        report(results)


if __name__ == "__main__":
    main()
