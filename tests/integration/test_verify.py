"""scripts/verify against real hosts, both ways.

Two hosts of the fleet bed (tests/fleet/bed.py: one unix user per host behind a real sshd
on loopback), web1 on cron + anacron and web2 on systemd user units, each with rclone
remotes, a notification target and a secret file, are provisioned once with site.yml.
Verify passes on them; then one thing at a time is broken (a secret file's mode, a
crontab line, a timer, a job file, a job's status times), verify must fail naming that
host and that check and nothing else, and the thing is put back. Needs root (users, sshd).
"""

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from tests.fleet.bed import ROOT, Bed

pytestmark = pytest.mark.slow
VENV_BIN = str(Path(sys.executable).parent)
HOSTS = {"web1": ("vf-web1", "cron"), "web2": ("vf-web2", "systemd")}


def jobs(home):
    return [
        {"name": "nightly", "type": "bundle_sync", "schedule": "daily 03:00", "jitter": 30,
         "options": {"root": f"{home}/projects",
                     "store": f"{home}/.local/state/strongroom/bundles",
                     "remote": f"offsite:{home}/offsite"}},
        {"name": "hourly", "type": "status_check", "schedule": "every 1h"},
        {"name": "by-hand", "type": "status_check", "schedule": "manual"},
    ]


def dirs(bed, host):
    home = bed.home(host)
    state = home / ".local/state/strongroom"
    return home / ".config/strongroom", state, state / "log"


@pytest.fixture(scope="module")
def bed():
    if os.geteuid() != 0:
        pytest.skip("the fleet bed needs root (it creates users and starts sshd); "
                    "this machine's test run is not root")
    os.environ["PATH"] = f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    b = Bed(hosts=HOSTS)
    b.jobs = {h: jobs(b.home(h)) for h in HOSTS}
    try:
        b.start()
        # every kind of secret file the role writes: rclone.conf (the bed's remotes),
        # notify.yml and secrets/NAME
        inventory = yaml.safe_load(b.inventory.read_text())
        for hostvars in inventory["all"]["hosts"].values():
            hostvars["strongroom_notify_targets"] = [
                {"name": "ops", "url": "json://127.0.0.1:9/hook?token=t0k3n"}]
            hostvars["strongroom_secret_files"] = {"restic.pw": "not-a-real-password"}
        b.inventory.write_text(yaml.safe_dump(inventory, sort_keys=True))
        r = b.playbook("site.yml")
        assert r.rc == 0, f"site.yml failed (rc {r.rc}):\n{r.stdout.read()[-5000:]}"
        # a status file to age later: nightly runs once on web1
        config, state, log = dirs(b, "web1")
        proc = b.strongroom("web1", "--config-dir", config, "--state-dir", state,
                            "--log-dir", log, "run", "nightly")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        yield b
    finally:
        b.stop()


def verify(bed, *args):
    """scripts/verify on the bed's inventory: (exit code, whole output, its summary's
    FAILED lines)."""
    proc = subprocess.run([str(ROOT / "scripts/verify"), str(bed.inventory), *args],
                          capture_output=True, text=True, check=False, cwd=bed.base,
                          timeout=300)
    out = proc.stdout + proc.stderr
    return proc.returncode, out, [ln for ln in out.splitlines()
                                  if ln.startswith("FAILED host ")]


def assert_fails_only(bed, host, check, *phrases, args=()):
    rc, out, failed = verify(bed, *args)
    assert rc != 0, out
    assert len(failed) == 1, out
    assert failed[0].startswith(f"FAILED host {host} [{check}]: "), out
    for phrase in phrases:
        assert phrase in failed[0], out
    assert f"verify: 1 check(s) failed on 1 of 2 host(s): {host}" in out, out
    return out


def test_a_provisioned_fleet_passes(bed):
    rc, out, failed = verify(bed)
    assert rc == 0, out
    assert failed == []
    assert "verify: every check passed on 2 host(s): web1, web2" in out, out
    assert "10 passed" in out, out


def test_a_secret_file_readable_by_others_fails_its_host(bed):
    conf = dirs(bed, "web1")[0] / "rclone.conf"
    conf.chmod(0o644)
    try:
        # with pytest's own report the failed test's message names the host too
        out = assert_fails_only(bed, "web1", "secrets",
                                f"{conf} has mode 0644; a secret file must be 0600",
                                args=["--tb=short"])
        assert "test_secret_files_are_private[ansible://web1]" in out, out
        assert f"\nhost web1: {conf} has mode 0644; a secret file must be 0600\n" in out, out
    finally:
        conf.chmod(0o600)


def crontab(user, text=None):
    if text is None:
        return subprocess.run(["crontab", "-l", "-u", user], capture_output=True, text=True,
                              check=True).stdout
    subprocess.run(["crontab", "-u", user, "-"], input=text, text=True, check=True)
    return text


def test_a_missing_crontab_line_fails_its_host(bed):
    user = HOSTS["web1"][0]
    before = crontab(user)
    lines = before.splitlines(keepends=True)
    (at,) = [i for i, ln in enumerate(lines) if ln.rstrip().endswith("] job nightly")]
    crontab(user, "".join(lines[:at] + lines[at + 2:]))
    try:
        assert_fails_only(bed, "web1", "schedules",
                          "job nightly has no crontab line (no '#Ansible: strongroom[")
    finally:
        crontab(user, before)
    assert crontab(user) == before


def test_a_missing_timer_fails_its_host(bed):
    timer = bed.home("web2") / ".config/systemd/user/strongroom-nightly.timer"
    aside = bed.base / "strongroom-nightly.timer"
    shutil.move(timer, aside)
    try:
        assert_fails_only(bed, "web2", "schedules",
                          f"job nightly has no systemd timer ({timer} is missing)")
    finally:
        shutil.move(aside, timer)


def test_a_corrupt_job_file_fails_its_host(bed):
    path = dirs(bed, "web2")[0] / "jobs/hourly.yml"
    good, st = path.read_bytes(), path.stat()
    path.write_text("name: hourly\ntype: [status_check\n")
    try:
        assert_fails_only(bed, "web2", "job-files",
                          f"job file {path} is invalid: not valid YAML")
    finally:
        path.write_bytes(good)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_stale_job_fails_its_host(bed):
    path = dirs(bed, "web1")[1] / "status/nightly.json"
    good = path.read_text()
    st = json.loads(good)
    assert st["last_success"], st
    old = (datetime.now(UTC) - timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    aged = {**st, **{k: old for k in ("started", "finished", "last_success",
                                      "last_success_started")}}
    path.write_text(json.dumps(aged))  # the file stays the host user's
    try:
        assert_fails_only(bed, "web1", "staleness",
                          f"job nightly is stale: last success {old} (10d ago)")
    finally:
        path.write_text(good)


def test_put_back_it_passes_again(bed):
    rc, out, failed = verify(bed)
    assert rc == 0 and failed == [], out
