"""site.yml, backup-now.yml and restore.yml through ansible-runner against localhost.

Every path is redirected under tmp_path (a user-mode install with its own home), so the
test provisions a real engine virtualenv without touching the machine's /opt or /etc.
"""

import json
import subprocess

import ansible_runner
import pytest

from strongroom import schedule
from tests.helpers import ENV, ROOT, VENV_BIN, commit, refs, rich_repo

pytestmark = pytest.mark.slow
CANARY = "canary-notify-51c0"


def play(tmp_path, playbook, extravars, check=False, expect_rc=0):
    private = tmp_path / "runner"
    private.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in ENV.items() if k.startswith(("PATH", "HOME", "LC_", "GIT_"))}
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    env.update(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_LIBRARY=str(ROOT / "library"),
               ANSIBLE_ROLES_PATH=str(ROOT / "roles"), ANSIBLE_NOCOLOR="1",
               LC_ALL="C.UTF-8", LANG="C.UTF-8")
    r = ansible_runner.run(
        private_data_dir=str(private),
        project_dir=str(ROOT),
        playbook=str(ROOT / "playbooks" / playbook),
        inventory=str(ROOT / "inventory" / "local"),
        extravars=extravars,
        envvars=env,
        cmdline="--check --diff" if check else None,
        quiet=True,
    )
    stats = r.stats or {}
    stdout = r.stdout.read()
    if expect_rc == 0:
        assert r.rc == 0, f"{playbook} failed (rc {r.rc}):\n{stdout[-6000:]}"
    else:
        assert r.rc != 0, f"{playbook} should have failed:\n{stdout[-3000:]}"
    return stats, stdout, r


def changed(stats):
    return sum(stats.get("changed", {}).values())


def task_results(r, task_name):
    return [e["event_data"]["res"] for e in r.events
            if e.get("event") == "runner_on_ok"
            and e["event_data"].get("task") == task_name]


def jobs(home, offsite, src):
    """inventory/local's jobs (with literal paths), plus a snapshot job with the pre-push
    hook and checkpoint jobs, two of them without a schedule (their type's default)."""
    return [
        {"name": "bundles", "type": "bundle_sync", "schedule": "daily 01:00",
         "options": {"root": str(home / "projects"),
                     "store": str(home / ".local/state/strongroom/bundles"),
                     "remote": f"offsite:{offsite}"}},
        {"name": "restore-drill", "type": "restore_drill", "schedule": "weekly sun 04:30",
         "options": {"source": "both"}},
        {"name": "stale-check", "type": "status_check", "schedule": "every 1h"},
        {"name": "app-snapshot", "type": "snapshot",
         "options": {"source": str(src), "dest": str(home / "snapshots"),
                     "critical": ["*.md"], "immutable": "off", "pre_push_max_size": "1M"}},
        {"name": "app-wip", "type": "checkpoint",
         "options": {"source": str(src), "dest": str(home / "checkpoints"), "keep_days": 14}},
        {"name": "app-wip-manual", "type": "checkpoint", "schedule": "manual",
         "options": {"source": str(src), "dest": str(home / "checkpoints")}},
    ]


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    base = tmp_path_factory.mktemp("bed")
    home = base / "home"
    (home / "projects").mkdir(parents=True)
    src = rich_repo(home / "projects" / "app")
    commit(src, {".gitignore": ".env\n"}, "ignore env")
    (src / ".env").write_text("API_TOKEN=canary-4f2a\n")
    extravars = {
        "strongroom_install_mode": "user",
        "strongroom_home": str(home),
        "strongroom_offsite_dir": str(base / "offsite"),
        # systemd units land under this test's home; cron would mean root's real crontab
        "strongroom_scheduler": "systemd",
        # a closed port: rendering is tested here, delivery in tests/notify/test_notify.py
        "strongroom_notify_targets": [{"url": f"json://127.0.0.1:9/hook?token={CANARY}",
                                       "name": "ops", "min_severity": "error"}],
        "strongroom_jobs_list": jobs(home, base / "offsite", src),
    }
    return base, home, src, extravars


CONVERGED = set()  # the beds site.yml has converged, with a second run that changed nothing


@pytest.fixture
def converged(bed):
    """The bed once site.yml has converged it. The converge test's own runs count: their
    second changed nothing, so a third would not either, and is not run (each is ~30 s of
    ansible); a test run alone gets its converge here."""
    base, _, _, extravars = bed
    if base not in CONVERGED:
        play(base, "site.yml", extravars)
        CONVERGED.add(base)
    return bed


def test_check_mode_on_a_fresh_host_changes_nothing(bed):
    base, home, _, extravars = bed
    fresh = base / "fresh-home"
    fresh.mkdir()
    # a default jitter with an `every 1h` job in the list (stale-check): calendar jobs only
    vars_ = dict(extravars, strongroom_home=str(fresh), strongroom_offsite_dir=str(base / "x"),
                 strongroom_jobs_list=jobs(fresh, base / "x", fresh / "projects/app"),
                 strongroom_jobs_jitter=30)
    stats, stdout, r = play(base / "check", "site.yml", vars_, check=True)
    assert changed(stats) > 0  # it reports what it would do
    assert list(fresh.iterdir()) == []
    assert not (base / "x").exists()
    # directories a fresh host lacks are looked for, not warned about
    assert "[WARNING]" not in stdout, stdout
    rendered = {x["item"]["name"]: json.loads(x["stdout"]) for x in
                task_results(r, "Render each schedule for this host")[0]["results"]}
    assert rendered["stale-check"]["spec"] == "every 1h"
    assert rendered["bundles"]["requested"] == "daily 01:00"
    assert rendered["bundles"]["spec"] == schedule.with_jitter("daily 01:00", "localhost", 30)


def test_site_converges_then_reports_no_change(bed):
    base, home, src, extravars = bed
    stats, stdout, r = play(base, "site.yml", extravars)
    assert changed(stats) > 0
    assert CANARY not in stdout and CANARY not in json.dumps(
        [e.get("event_data", {}) for e in r.events])
    engine = home / ".local/share/strongroom/venv/bin/strongroom"
    assert engine.exists()
    job = home / ".config/strongroom/jobs/bundles.yml"
    assert "type: bundle_sync" in job.read_text()
    conf = home / ".config/strongroom/rclone.conf"
    assert oct(conf.stat().st_mode & 0o777) == "0o600"
    # a job without a schedule gets its type's: snapshots nightly, checkpoints every 15m
    units = home / ".config/systemd/user"
    assert "OnCalendar=*-*-* 03:15:00" in (units / "strongroom-app-snapshot.timer").read_text()
    timer = (units / "strongroom-app-wip.timer").read_text()
    assert "OnBootSec=5min\nOnUnitActiveSec=15min\nPersistent=true" in timer
    assert not (units / "strongroom-app-wip-manual.timer").exists()
    manual = home / ".config/strongroom/jobs/app-wip-manual.yml"
    assert "schedule" not in manual.read_text() and "type: checkpoint" in manual.read_text()
    # the snapshot job's repository got the pre-push hook, pointing at that job
    hook = (home / "projects/app/.git/hooks/pre-push").read_text()
    assert "hook pre-push --max-size 1048576 --job app-snapshot" in hook
    # and the installed engine behind it refuses a 2 MB file, after a snapshot by that job
    big = subprocess.run(["git", "-C", str(src), "hash-object", "-w", "--stdin"],
                         input=b"\0" * 2_000_000, capture_output=True, check=True).stdout
    tree = subprocess.run(["git", "-C", str(src), "mktree"], capture_output=True, check=True,
                          input=b"100644 blob " + big.strip() + b"\tbig.bin\n").stdout.strip()
    sha = subprocess.run(["git", "-C", str(src), "commit-tree", tree.decode(), "-m", "big"],
                         capture_output=True, text=True, check=True, env=ENV).stdout.strip()
    bare = base / "pushed.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    proc = subprocess.run(["git", "-C", str(src), "push", str(bare), f"{sha}:refs/heads/big"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "1.9 MiB  big.bin" in proc.stderr, proc.stderr
    assert refs(bare) == "" and len(list((home / "snapshots").glob("2*"))) == 1
    stats, _, _ = play(base, "site.yml", extravars)
    assert changed(stats) == 0, stats
    CONVERGED.add(base)
    notify_yml = home / ".config/strongroom/notify.yml"
    assert oct(notify_yml.stat().st_mode & 0o777) == "0o600"
    assert CANARY in notify_yml.read_text()
    # the installed (not editable) engine reads it with its own templates and Apprise
    proc = subprocess.run([str(engine), "--config-dir", str(home / ".config/strongroom"),
                           "notify", "test"], capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "ops: FAILED" in proc.stdout, proc.stderr
    assert CANARY not in proc.stdout + proc.stderr


def test_backup_now_then_restore(converged):
    """backup-now.yml goes through the runner: the run is recorded as a scheduled one is
    (status, changed), and a second run of the same job changes nothing."""
    base, home, src, extravars = converged
    status = home / ".local/state/strongroom/status/bundles.json"
    stats, stdout, r = play(base, "backup-now.yml", dict(extravars, jobs="bundles"))
    st = json.loads(status.read_text())
    assert st["result"] == "ok" and st["changed"] is True, st
    assert st["counts"]["full"] == 1, st
    assert (base / "offsite" / "app" / "bundle-manifest.json").exists()
    assert "bundles: ok" in stdout, stdout
    stats, _, r = play(base, "backup-now.yml", dict(extravars, jobs="bundles"))
    st = json.loads(status.read_text())
    assert st["result"] == "ok" and st["changed"] is False, st
    target = base / "restored"
    vars_ = dict(extravars, strongroom_restore_name="app", strongroom_restore_target=str(target))
    stats, stdout, _ = play(base, "restore.yml", vars_)
    assert changed(stats) == 1
    assert refs(target) == refs(src)
    assert (target / ".env").read_text() == "API_TOKEN=canary-4f2a\n"
    stats, _, _ = play(base, "restore.yml", vars_)
    assert changed(stats) == 0
    # the secret file's content never reaches Ansible's output
    events = json.dumps([e.get("event_data", {}) for e in r.events])
    assert "canary-4f2a" not in stdout and "canary-4f2a" not in events


BAD = [
    ({"name": "bundles", "type": "bundle_sync", "schedule": "daily 25:00",
      "options": {"root": "/srv", "store": "/srv/s"}},
     "key 'schedule' has value 'daily 25:00'; expected a schedule spec"),
    ({"name": "bundles", "type": "tape_backup", "options": {"root": "/srv", "store": "/srv/s"}},
     "key 'type' has value 'tape_backup'; expected one of: bundle_sync"),
    ({"name": "bundles", "type": "bundle_sync", "options": {"root": "/srv", "store": 7}},
     "key 'options.store' has value 7; expected an absolute path"),
    ({"name": "bundles", "type": "bundle_sync", "schedule": "every 7m",
      "options": {"root": "/srv", "store": "/srv/s"}},
     "cron cannot run 'every 7m'"),
]


@pytest.mark.parametrize(("job", "message"), BAD, ids=["schedule", "type", "store", "cron"])
def test_bad_inventory_fails_before_any_change(tmp_path, job, message):
    home = tmp_path / "home"
    home.mkdir()
    extravars = {"strongroom_install_mode": "user", "strongroom_home": str(home),
                 "strongroom_offsite_dir": str(tmp_path / "offsite"),
                 "strongroom_scheduler": "cron", "strongroom_jobs_list": [job]}
    stats, stdout, _ = play(tmp_path, "site.yml", extravars, expect_rc=2)
    assert message in stdout
    assert changed(stats) == 0 and list(home.iterdir()) == []
    assert not (tmp_path / "offsite").exists()


def test_a_bad_scheduler_is_blamed_on_the_scheduler(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    extravars = {"strongroom_install_mode": "user", "strongroom_home": str(home),
                 "strongroom_scheduler": "crond",
                 "strongroom_jobs_list": [BAD[0][0] | {"schedule": "daily 01:00"}]}
    stats, stdout, _ = play(tmp_path, "site.yml", extravars, expect_rc=2)
    assert ("localhost: strongroom_scheduler has value 'crond'; expected one of auto, cron, "
            "systemd, launchd, none") in stdout
    assert "strongroom_jobs_list must be" not in stdout
    assert changed(stats) == 0 and list(home.iterdir()) == []


def test_verify_restore_and_fleet_status(converged):
    import os
    import time

    base, home, src, extravars = converged
    play(base, "backup-now.yml", dict(extravars, jobs="bundles"))
    stats, stdout, r = play(base, "verify-restore.yml", extravars)
    assert changed(stats) == 0
    # bundles' chain app from the store and from the remote, and app-snapshot's one
    # snapshot from its dest (it has no remote); the checkpoint jobs have made nothing yet
    assert "3 of 3 restores passed" in stdout
    state = home / ".local/state/strongroom"
    drill = json.loads((state / "status" / "restore-drill.json").read_text())
    assert sorted((a["job"], a["kind"], a["source"], a["result"])
                  for a in drill["artifacts"]) == [
        ("app-snapshot", "snapshot", "local", "ok"), ("bundles", "bundle_chain", "local", "ok"),
        ("bundles", "bundle_chain", "remote", "ok")]
    assert all(a["duration_seconds"] > 0 for a in drill["artifacts"])  # each RTO measured
    # a damaged bundle fails the host, by name, and is left exactly as found
    (bundle,) = (state / "bundles" / "app").glob("full-*.bundle")
    good = bundle.read_bytes()
    bundle.write_bytes(good[:-40] + bytes(40))
    try:
        stats, stdout, _ = play(base, "verify-restore.yml", extravars, expect_rc=2)
        assert ("localhost: restore drill did not pass: 1 of 3 restores FAILED: "
                "bundles/app (local): app: full-") in stdout
        assert "does not match its recorded SHA-256 (damaged)" in stdout
        assert bundle.read_bytes() == good[:-40] + bytes(40)
    finally:
        bundle.write_bytes(good)
    report = base / "fleet.json"
    vars_ = dict(extravars, strongroom_status_report=str(report))
    stats, stdout, _ = play(base, "status.yml", vars_)
    assert changed(stats) == 1  # the report on the controller; the hosts are only read
    rows = {row["job"]: row for row in json.loads(report.read_text())}
    assert set(rows) == {"bundles", "restore-drill", "stale-check", "app-snapshot", "app-wip",
                         "app-wip-manual"}
    assert rows["restore-drill"]["result"] == "error" and rows["stale-check"]["stale"] is False
    lines = [ln.strip(' ",') for ln in stdout.splitlines()
             if ln.strip(' "').startswith("localhost")]
    assert any(ln.split()[:3] == ["localhost", "restore-drill", "error"] for ln in lines), lines
    assert any(ln.split()[:2] == ["localhost", "stale-check"] and ln.endswith("no")
               for ln in lines), lines
    # a job whose scheduler never started it makes a strict status run fail, by name
    old = time.time() - 3 * 86400
    os.utime(home / ".config/strongroom/jobs/stale-check.yml", (old, old))
    vars_ = dict(extravars, strongroom_status_fail_on_stale=True)
    stats, stdout, _ = play(base, "status.yml", vars_, expect_rc=2)
    assert "localhost stale-check: never run, stale" in stdout


def test_fleet_report_page(bed):
    """status.yml's page: every host's rows rendered once, on the controller, by its engine
    and the one template `strongroom status --html` uses; a page that cannot be written
    fails the play by name."""
    from tests.status import reportbed
    from tests.status.test_report import Tags

    base, home, src, extravars = bed
    play(base, "site.yml", extravars)
    play(base, "backup-now.yml", dict(extravars, jobs="bundles"))
    # a drill's, a re-verification's and a heartbeat's figures, as their status files have them
    status_dir = home / ".local/state/strongroom/status"
    bundles = json.loads((status_dir / "bundles.json").read_text())
    (status_dir / "bundles.json").write_text(json.dumps(
        {**bundles, "verify": reportbed.VERIFY, "ping": reportbed.PING}))
    reportbed.status_file(status_dir.parent, "restore-drill", artifacts=[
        reportbed.artifact("bundle_chain", "app", "bundles", "local", seconds=4.25),
        reportbed.artifact("bundle_chain", "app", "bundles", "remote", seconds=61.5)])
    page, report = base / "pages" / "fleet.html", base / "fleet-rows.json"
    stats, stdout, r = play(base, "status.yml", dict(
        extravars, strongroom_status_html=str(page), strongroom_status_report=str(report)))
    assert changed(stats) == 2  # the page and the rows; the hosts are only read
    rows = {row["job"]: row for row in json.loads(report.read_text())}
    assert rows["bundles"]["host"] == "localhost" and len(rows["bundles"]["history"]) == 30
    assert rows["bundles"]["verify"] == reportbed.VERIFY  # each host's whole row
    html = page.read_text()
    tags = Tags(html).tags
    assert [a["data-host"] for t, a in tags if t == "section"] == ["localhost"]
    jobs_ = [a["data-job"] for t, a in tags if t == "tr" and a.get("class") == "job"]
    assert jobs_ == sorted(["bundles", "restore-drill", "stale-check", "app-snapshot",
                            "app-wip", "app-wip-manual"])
    cells = [a["class"] for t, a in tags if t == "li" and a.get("class", "").startswith("day")]
    assert len(cells) == 6 * 30
    assert cells[jobs_.index("bundles") * 30 + 29] == "day ok"  # today: backup-now's runs
    assert cells[jobs_.index("app-wip-manual") * 30:][:30] == ["day none"] * 30
    drills = [(a["data-kind"], a["data-source"]) for t, a in tags
              if t == "tr" and a.get("class") == "drill"]
    assert drills == [("bundle_chain", "local"), ("bundle_chain", "remote")]
    assert "1m 01s" in html and '<b class="coverage-ratio">92.5%</b>' in html
    assert "end ✗ FAILED" in html
    assert "<script" not in html and "Content-Security-Policy" in html
    assert [p.name for p in page.parent.iterdir()] == ["fleet.html"]
    blocked = base / "a-file"
    blocked.write_text("x\n")
    stats, stdout, _ = play(base, "status.yml",
                            dict(extravars, strongroom_status_html=str(blocked / "p.html")),
                            expect_rc=2)
    assert f"cannot write the report page {blocked / 'p.html'}: {blocked}: File exists" \
        in stdout, stdout[-3000:]
    assert blocked.read_text() == "x\n"


def test_another_tools_pre_push_hook_stops_the_play_and_is_kept(bed):
    base, home, src, extravars = bed
    hook = src / ".git/hooks/pre-push"
    theirs = "#!/bin/sh\necho another tool's hook\n"
    hook.write_text(theirs)
    stats, stdout, _ = play(base, "site.yml", extravars, expect_rc=2)
    assert f"{hook} is another pre-push hook; Strongroom leaves it alone" in stdout
    assert hook.read_text() == theirs
