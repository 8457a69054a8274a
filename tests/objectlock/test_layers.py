"""The protection layers of each job in `strongroom status --json` and on the report page:
the local copy's chattr +i, the remote copy's S3 Object Lock (real, on the S3 API server;
an expired one says so, never "locked") and sealing (encrypt_to)."""

import json
import re
from datetime import UTC, datetime, timedelta

from strongroom import jobs, status
from strongroom.status import report
from tests.helpers import strongroom
from tests.objectlock.helpers import bed, bucket, source_tree, write_job


def _bed(tmp_path, s3):
    conf, state, paths = bed(tmp_path, s3)
    b = bucket(s3)
    write_job(conf, "snap", "snapshot", {"source": str(source_tree(tmp_path / "src")),
                                         "dest": str(tmp_path / "snaps"), "immutable": "off",
                                         "remote": f"s3:{b}/snaps", "object_lock_days": 2,
                                         "object_lock_mode": "GOVERNANCE"})
    (tmp_path / "recipients.txt").write_text("# no run of this job in these tests\n")
    write_job(conf, "sealed", "daily", {"sources": [str(tmp_path / "src")],
                                        "dest": str(tmp_path / "days"),
                                        "remote": f"s3:{b}/days",
                                        "encrypt_to": str(tmp_path / "recipients.txt")})
    write_job(conf, "work", "checkpoint", {"source": str(tmp_path / "src"),
                                           "dest": str(tmp_path / "cps")})
    code, st, output = jobs.run(paths, "snap")
    assert code == 0, output
    return conf, state, paths, st


def test_status_json_says_which_layers_protect_each_job(tmp_path, s3):
    conf, state, _, st = _bed(tmp_path, s3)
    proc = strongroom("--config-dir", conf, "--state-dir", state, "status", "--json", check=0)
    rows = {r["job"]: r for r in json.loads(proc.stdout)["jobs"]}
    assert rows["snap"]["protection"] == {
        "local_immutable": False,  # immutable: off, as the snapshot recorded
        "remote_lock": {"mode": "GOVERNANCE", "retain_until": st["object_lock"]["retain_until"],
                        "locked": True},
        "encrypted": False}
    assert rows["sealed"]["protection"] == {"local_immutable": None, "remote_lock": None,
                                            "encrypted": True}
    assert rows["work"]["protection"] == {"local_immutable": None, "remote_lock": None,
                                          "encrypted": False}


def test_an_expired_lock_is_reported_expired_not_locked(tmp_path, s3):
    _, _, paths, st = _bed(tmp_path, s3)
    until = datetime.strptime(st["object_lock"]["retain_until"], "%Y-%m-%dT%H:%M:%SZ")
    later = until.replace(tzinfo=UTC) + timedelta(seconds=1)
    rows = {r["job"]: r for r in status.rows(paths, now=later)}
    assert rows["snap"]["protection"]["remote_lock"] == {
        "mode": "GOVERNANCE", "retain_until": st["object_lock"]["retain_until"],
        "locked": False}
    page = report.render(status.rows(paths, now=later), paths.config_dir)
    shown = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))
    stamp = st["object_lock"]["retain_until"].replace("T", " ")[:16]
    assert f"remote lock EXPIRED {stamp}" in shown
    assert "remote locked (GOVERNANCE)" not in shown


def test_the_report_page_shows_the_layers(tmp_path, s3):
    conf, state, _, st = _bed(tmp_path, s3)
    html = tmp_path / "report.html"
    strongroom("--config-dir", conf, "--state-dir", state, "status", "--html", html, check=0)
    shown = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html.read_text()))
    stamp = st["object_lock"]["retain_until"].replace("T", " ")[:16]
    assert f"local copy not +i remote locked (GOVERNANCE) until {stamp} not sealed" in shown
    assert "remote not locked sealed (age) ✓" in shown
    assert "EXPIRED" not in shown
