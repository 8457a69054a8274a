"""site.yml across three hosts over real SSH, then every host checked with testinfra
(by hand here, and by `make verify`'s checks in verify/).

desktop uses cron + anacron (its `bundles` job runs every minute, so the real cron daemon
must run it), laptop launchd agents (rendered and checked with plistlib; launchd itself
cannot run here), server systemd user units (checked with systemd-analyze verify).
"""

import json
import os
import plistlib
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import testinfra

from strongroom import schedule
from tests.fleet.bed import HOSTS, ROOT, Bed, as_user

pytestmark = pytest.mark.slow
VENV_BIN = str(Path(sys.executable).parent)


def desktop_jobs(home):
    return [
        {"name": "bundles", "type": "bundle_sync", "schedule": "every 1m",
         "options": {"root": f"{home}/projects",
                     "store": f"{home}/.local/state/strongroom/bundles",
                     "remote": f"offsite:{home}/offsite"}},
        {"name": "nightly", "type": "bundle_sync", "schedule": "daily 03:00",
         "options": {"root": f"{home}/projects",
                     "store": f"{home}/.local/state/strongroom/nightly"}},
    ]


@pytest.fixture(scope="module")
def bed():
    if os.geteuid() != 0:
        pytest.skip("the fleet bed needs root (it creates users and starts sshd); "
                    "this machine's test run is not root")
    os.environ["PATH"] = f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    b = Bed()
    b.jobs = {"desktop": desktop_jobs(b.home("desktop"))}
    try:
        b.start()
        yield b
    finally:
        b.stop()


@pytest.fixture
def cron_daemon():
    """A real cron daemon for one test (started unless one runs; stopped if we started it).

    Not longer: its @hourly anacron would hold anacron's job locks while it waits out the
    jobs' delay, and the anacron test must see the spool alone.
    """
    running = subprocess.run(["pgrep", "-x", "cron"], capture_output=True).returncode == 0
    if not running:
        subprocess.run(["/usr/sbin/cron"], check=True)
    yield
    if not running:
        subprocess.run(["pkill", "-x", "cron"], check=False)


def changed(r):
    return sum((r.stats or {}).get("changed", {}).values())


def ok(r, what):
    out = r.stdout.read()
    assert r.rc == 0, f"{what} failed (rc {r.rc}):\n{out[-5000:]}"
    return out


def host(bed, name):
    return testinfra.get_host(f"ansible://{name}", ansible_inventory=str(bed.inventory))


def status(bed, host_name, job):
    path = bed.home(host_name) / ".local/state/strongroom/status" / f"{job}.json"
    return json.loads(path.read_text()) if path.exists() else None


def test_check_mode_on_fresh_hosts_changes_nothing(bed):
    r = bed.playbook("site.yml", check=True)
    ok(r, "site.yml --check")
    assert changed(r) > 0
    for h in HOSTS:
        assert not (bed.home(h) / ".local/share/strongroom").exists()
        assert not (bed.home(h) / ".config/strongroom").exists()


def test_site_converges_and_a_second_run_changes_nothing(bed):
    first = bed.playbook("site.yml")
    ok(first, "site.yml")
    assert set((first.stats or {}).get("changed", {})) == set(HOSTS)
    second = bed.playbook("site.yml")
    ok(second, "site.yml (second run)")
    assert changed(second) == 0, second.stats


def test_every_host_is_provisioned_as_its_scheduler_says(bed):
    for name, (user, scheduler) in HOSTS.items():
        h = host(bed, name)
        home = bed.home(name)
        engine = bed.engine(name)
        assert h.run(f"{engine} --version").stdout.startswith("strongroom ")
        job = h.file(f"{home}/.config/strongroom/jobs/bundles.yml")
        assert job.exists and job.user == user and job.mode == 0o644
        conf = h.file(f"{home}/.config/strongroom/rclone.conf")
        assert conf.user == user and conf.mode == 0o600
        spec = schedule.with_jitter("daily 02:30", name, 30)
        crontab = h.run("crontab -l").stdout
        if scheduler == "cron":
            prefix = f"#Ansible: strongroom[{home}/.config/strongroom]"
            assert f"{prefix} job bundles\n* * * * * " in crontab
            assert "run bundles --if-due" in crontab
            assert "@hourly /usr/sbin/anacron -s -t" in crontab
            tab = h.file(f"{home}/.config/strongroom/anacrontab").content_string
            assert "\n1\t5\tstrongroom.nightly\t" in tab and "strongroom.bundles" not in tab
        else:
            assert "strongroom" not in crontab
        agents = Path(home) / "Library/LaunchAgents"
        if scheduler == "launchd":
            plist = plistlib.loads((agents / "org.strongroom.bundles.plist").read_bytes())
            assert plist["Label"] == "org.strongroom.bundles"
            assert plist["ProgramArguments"][0] == str(engine)
            assert plist["ProgramArguments"][-2:] == ["run", "bundles"]
            assert plist["StartCalendarInterval"] == schedule.parse(spec).launchd()[
                "StartCalendarInterval"]
        else:
            assert not agents.exists() or not list(agents.glob("org.strongroom.*"))
        units = Path(home) / ".config/systemd/user"
        if scheduler == "systemd":
            timer = units / "strongroom-bundles.timer"
            service = units / "strongroom-bundles.service"
            cal = schedule.parse(spec).systemd()["OnCalendar"][0]
            assert f"OnCalendar={cal}\n" in timer.read_text()
            assert "Persistent=true" in timer.read_text()
            proc = subprocess.run(["systemd-analyze", "verify", str(service), str(timer)],
                                  capture_output=True, text=True, check=False)
            assert proc.returncode == 0, proc.stderr
        else:
            assert not (units / "strongroom-bundles.timer").exists()


def test_a_forced_run_leaves_a_fresh_successful_status(bed):
    before = datetime.now(UTC).replace(microsecond=0)
    for name in HOSTS:
        h = host(bed, name)
        res = h.run(f"{bed.engine(name)} run bundles")
        assert res.rc == 0, res.stderr
        st = status(bed, name, "bundles")
        assert st["result"] == "ok" and st["exit_code"] == 0
        assert datetime.strptime(st["finished"], "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=UTC) >= before
        assert st["counts"]["repositories"] == 2


def test_every_host_passes_verify(bed):
    """`make verify`'s checks (verify/) across the bed: engine, job files, each host's
    scheduler entries, secret file modes, and no stale job (every host just ran bundles)."""
    proc = subprocess.run([str(ROOT / "scripts/verify"), str(bed.inventory)],
                          capture_output=True, text=True, check=False, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "verify: every check passed on 3 host(s): desktop, laptop, server" in out, out


def test_the_real_cron_daemon_runs_the_installed_job(bed, cron_daemon):
    """desktop's `bundles` runs every minute from the crontab the role installed."""
    log = bed.home("desktop") / ".local/state/strongroom/log/bundles.log"
    start = log.read_text().count("run started") if log.exists() else 0
    deadline = time.monotonic() + 150
    # cron starts it on the next minute; a short poll of a small file notices it at once
    while time.monotonic() < deadline:
        if log.exists() and log.read_text().count("run started") > start:
            break
        time.sleep(0.2)
    text = log.read_text()
    assert text.count("run started") > start, "cron never started the job"
    while "run finished" not in text.rsplit("run started", 1)[1]:
        time.sleep(0.2)
        text = log.read_text()
    assert "run finished: result=ok exit=0" in text.rsplit("run started", 1)[1]
    assert status(bed, "desktop", "bundles")["result"] == "ok"


def anacron(bed, *args):
    home = bed.home("desktop")
    return as_user("sr-desktop", ["/usr/sbin/anacron", "-d", "-n", "-s", "-t",
                                  f"{home}/.config/strongroom/anacrontab", "-S",
                                  f"{home}/.local/state/strongroom/anacron", *args])


def set_last_run(spool, day):
    """anacron's timestamp file, written as the user who owns the spool."""
    proc = as_user("sr-desktop", ["sh", "-c", f"echo {day} > '{spool}'"])
    assert proc.returncode == 0, proc.stderr


def test_anacron_runs_a_missed_job_once_and_a_failed_run_stays_due(bed):
    home = bed.home("desktop")
    spool = home / ".local/state/strongroom/anacron/strongroom.nightly"
    log = home / ".local/state/strongroom/log/nightly.log"
    today = datetime.now().strftime("%Y%m%d")

    def runs():
        return log.read_text().count("run started") if log.exists() else 0

    # an anacron started by cron's @hourly entry may still be waiting out a job's delay,
    # holding that job's lock; this test drives anacron itself
    subprocess.run(["pkill", "-u", "sr-desktop", "-x", "anacron"], check=False)

    # 1. missed while the machine was off, and it fails: anacron marks the day done,
    #    but the job stays due
    (home / "projects").rename(home / "projects.away")
    try:
        set_last_run(spool, "20200101")
        proc = anacron(bed)
        assert proc.returncode == 0, proc.stderr
        failed = status(bed, "desktop", "nightly")
        assert failed and (failed["result"], failed["exit_code"]) == ("error", 2)
        assert runs() == 1 and spool.read_text().strip() == today
        rows = json.loads(bed.strongroom("desktop", "jobs", "list", "--json").stdout)["jobs"]
        assert {r["job"]: r["due"] for r in rows}["nightly"] is True
    finally:
        (home / "projects.away").rename(home / "projects")
    # 2. the same day again: anacron does not start it
    anacron(bed)
    assert runs() == 1
    # 3. the next day's catch-up runs it, because the last run failed
    set_last_run(spool, "20200101")
    anacron(bed)
    good = status(bed, "desktop", "nightly")
    assert runs() == 2 and good["result"] == "ok" and good["consecutive_failures"] == 0
    # 4. anacron starting it again (timestamps lost) does nothing: it is not due
    set_last_run(spool, "20200101")
    anacron(bed)
    assert runs() == 2 and status(bed, "desktop", "nightly") == good


def test_backup_now_runs_the_module_over_ssh(bed):
    r = bed.playbook("backup-now.yml")
    ok(r, "backup-now.yml")
    for name in HOSTS:
        assert (bed.home(name) / "offsite" / "notes" / "bundle-manifest.json").exists()


def test_switching_scheduler_removes_the_old_entries(bed):
    ok(bed.playbook("site.yml", {"strongroom_scheduler": "cron"}), "site.yml (all cron)")
    laptop, server = bed.home("laptop"), bed.home("server")
    assert not (laptop / "Library/LaunchAgents/org.strongroom.bundles.plist").exists()
    assert not (server / ".config/systemd/user/strongroom-bundles.timer").exists()
    assert "] job bundles\n" in as_user("sr-server", ["crontab", "-l"]).stdout
    ok(bed.playbook("site.yml"), "site.yml (back to each host's own)")
    assert (laptop / "Library/LaunchAgents/org.strongroom.bundles.plist").exists()
    assert (server / ".config/systemd/user/strongroom-bundles.timer").exists()
    assert "strongroom" not in as_user("sr-server", ["crontab", "-l"]).stdout
    assert "strongroom" not in as_user("sr-laptop", ["crontab", "-l"]).stdout
