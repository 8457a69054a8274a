"""A status job with `html`: every run rewrites the report page, so the page on a host is
never older than its status job's period; a page that cannot be written fails the run."""

import json

from tests.helpers import strongroom
from tests.status import reportbed
from tests.status.reportbed import HOSTILE


def run(conf, state, tmp_path, name, check):
    return strongroom("--config-dir", conf, "--state-dir", state, "--log-dir",
                      tmp_path / "log", "run", name, "--json", check=check)


def test_each_status_run_writes_the_page_of_every_job(tmp_path):
    conf, state = reportbed.write(tmp_path)
    page = tmp_path / "www" / "index.html"
    prom = tmp_path / "prom" / "strongroom.prom"
    (conf / "jobs" / "watch.yml").write_text(
        f"name: watch\ntype: status\nschedule: every 1h\noptions:\n  html: {page}\n"
        f"  prometheus: {prom}\n")
    out = json.loads(run(conf, state, tmp_path, "watch", check=None).stdout)
    assert out["status"]["result"] in ("ok", "warning"), out
    text = page.read_text(encoding="utf-8")
    for job in ("bundles", "restore-drill", "notes", "snap", "fresh", "watch"):
        assert f">{job}<" in text, job
    assert "<script>alert" not in text and "&lt;script&gt;" in text  # HOSTILE, escaped
    assert HOSTILE not in text
    assert "1m 01s" in text and "4.2s" in text  # the chains' RTOs (61.5 s, 4.25 s)
    assert 'strongroom_drill_rto_seconds{' in prom.read_text()
    first = page.stat().st_mtime_ns
    run(conf, state, tmp_path, "watch", check=None)
    assert page.stat().st_mtime_ns >= first and page.read_text(encoding="utf-8")


def test_a_page_that_cannot_be_written_fails_the_run_and_says_where(tmp_path):
    conf, state = reportbed.write(tmp_path)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the page's folder should be\n")
    (conf / "jobs" / "watch.yml").write_text(
        f"name: watch\ntype: status\noptions:\n  html: {blocker / 'index.html'}\n")
    out = json.loads(run(conf, state, tmp_path, "watch", check=2).stdout)
    assert out["status"]["result"] == "error"
    assert f"cannot write the report page {blocker / 'index.html'}" in out["status"]["message"]
    assert blocker.read_text() == "a file where the page's folder should be\n"
    # the other jobs' status files are untouched by the failed page
    assert json.loads((state / "status" / "notes.json").read_text())["message"] == HOSTILE
