"""The textfile's metrics of restore drills, re-verification and heartbeats, from status
files in the shapes the drill, the re-verification and the heartbeats write."""

import json

from strongroom import jobs, status
from tests.helpers import strongroom
from tests.status import reportbed
from tests.status.reportbed import artifact, status_file

NEW = ("strongroom_drill_result", "strongroom_drill_rto_seconds",
       "strongroom_drill_last_timestamp_seconds", "strongroom_verify_coverage_ratio",
       "strongroom_verify_oldest_age_seconds", "strongroom_verify_damaged_objects",
       "strongroom_ping_failed")


def textfile(conf, state, tmp_path):
    prom = tmp_path / "textfile" / "strongroom.prom"
    strongroom("--config-dir", conf, "--state-dir", state, "status", "--prometheus", prom,
               check=0)
    return prom.read_text()


def samples(text, metric):
    return sorted(line for line in text.splitlines() if line.startswith(metric + "{"))


def test_drills_verification_and_heartbeats_become_metrics(tmp_path):
    conf, state = reportbed.write(tmp_path)
    text = textfile(conf, state, tmp_path)
    for metric in NEW:
        assert f"# TYPE {metric} gauge\n" in text and f"# HELP {metric} " in text
    chain = 'job="bundles",kind="bundle_chain",artifact="app"'
    snap = 'job="snap",kind="snapshot",artifact="20261201T031500Z",source="remote"'
    assert samples(text, "strongroom_drill_result") == [
        f'strongroom_drill_result{{{chain},source="local"}} 1',
        f'strongroom_drill_result{{{chain},source="remote"}} 1',
        f"strongroom_drill_result{{{snap}}} 0"]
    assert samples(text, "strongroom_drill_rto_seconds") == [
        f'strongroom_drill_rto_seconds{{{chain},source="local"}} 4.25',
        f'strongroom_drill_rto_seconds{{{chain},source="remote"}} 61.5',
        f"strongroom_drill_rto_seconds{{{snap}}} 2"]
    drill = json.loads((state / "status" / "restore-drill.json").read_text())
    when = int(jobs.parse_iso(drill["finished"]).timestamp())
    assert samples(text, "strongroom_drill_last_timestamp_seconds") == [
        f'strongroom_drill_last_timestamp_seconds{{job="bundles"}} {when}',
        f'strongroom_drill_last_timestamp_seconds{{job="snap"}} {when}']
    assert samples(text, "strongroom_verify_coverage_ratio") == [
        'strongroom_verify_coverage_ratio{job="bundles",type="bundle"} 0.925',
        'strongroom_verify_coverage_ratio{job="snap",type="snapshot"} 1']
    assert samples(text, "strongroom_verify_oldest_age_seconds") == [
        f'strongroom_verify_oldest_age_seconds{{job="bundles",type="bundle"}} {3 * 86400 + 7200}',
        # no objects: nothing is waiting to be verified
        'strongroom_verify_oldest_age_seconds{job="snap",type="snapshot"} 0']
    assert samples(text, "strongroom_verify_damaged_objects") == [
        'strongroom_verify_damaged_objects{job="bundles",type="bundle"} 2',
        'strongroom_verify_damaged_objects{job="snap",type="snapshot"} 0']
    # the end ping failed after a good start: the last one was not delivered
    assert samples(text, "strongroom_ping_failed") == ['strongroom_ping_failed{job="bundles"} 1']
    assert "HTTP 500" not in text  # figures only, never a message


def test_a_delivered_ping_and_a_start_only_ping(tmp_path):
    row = {"valid": True, "type": "bundle"}
    ok = {"delivered": True, "attempts": 1, "error": None}
    text = status.prometheus_text([
        {**row, "job": "a", "ping": {"start": ok, "end": {**ok, "signal": "success"}}},
        {**row, "job": "b", "ping": {"start": {**ok, "delivered": False}}},  # still running
        {**row, "job": "c", "ping": None}, {**row, "job": "d", "ping": {"start": "junk"}}])
    assert samples(text, "strongroom_ping_failed") == [
        'strongroom_ping_failed{job="a"} 0', 'strongroom_ping_failed{job="b"} 1']


def test_two_drills_of_one_artifact_give_one_series_from_the_newer(tmp_path):
    conf, state = tmp_path / "conf", tmp_path / "state"
    (conf / "jobs").mkdir(parents=True)
    for name in ("drill-a", "drill-b"):
        (conf / "jobs" / f"{name}.yml").write_text(f"name: {name}\ntype: restore_drill\n")
    status_file(state, "drill-a", finished="2026-12-01T04:00:00Z",
                artifacts=[artifact("bundle_chain", "app", "bundles", "local", "ok", 3.0)])
    status_file(state, "drill-b", finished="2026-12-02T04:00:00Z",
                artifacts=[artifact("bundle_chain", "app", "bundles", "local", "warning", 9.0)])
    text = textfile(conf, state, tmp_path)
    labels = 'job="bundles",kind="bundle_chain",artifact="app",source="local"'
    assert samples(text, "strongroom_drill_result") == [
        f"strongroom_drill_result{{{labels}}} 0.5"]
    assert samples(text, "strongroom_drill_rto_seconds") == [
        f"strongroom_drill_rto_seconds{{{labels}}} 9"]
    newer = int(jobs.parse_iso("2026-12-02T04:00:00Z").timestamp())
    assert samples(text, "strongroom_drill_last_timestamp_seconds") == [
        f'strongroom_drill_last_timestamp_seconds{{job="bundles"}} {newer}']


def test_hostile_names_are_escaped_and_junk_figures_make_no_sample():
    name = 'a"b\\c\nd'
    rows = [{"job": "drill", "type": "drill", "valid": True, "finished": "yesterday",
             "artifacts": [artifact("snapshot", name, "j", "remote", "ok", "slow"),
                           "not an artifact"]},
            {"job": "j", "type": "snapshot", "valid": True,
             "verify": {"coverage_ratio": "all", "oldest_verified_age_seconds": True,
                        "objects": 3, "damaged": "everything"}},
            {"job": "k", "type": "snapshot", "valid": True,
             "verify": {"coverage_ratio": float("nan"), "damaged": [1, 2, 3]}},
            {"job": "broken", "valid": False, "verify": {"coverage_ratio": 0.5}}]
    text = status.prometheus_text(rows)
    assert samples(text, "strongroom_drill_result") == [
        'strongroom_drill_result{job="j",kind="snapshot",artifact="a\\"b\\\\c\\nd",'
        'source="remote"} 1']
    assert samples(text, "strongroom_drill_rto_seconds") == []  # "slow" is no figure
    assert samples(text, "strongroom_drill_last_timestamp_seconds") == []  # nor "yesterday"
    assert samples(text, "strongroom_verify_coverage_ratio") == []
    assert samples(text, "strongroom_verify_oldest_age_seconds") == []
    assert samples(text, "strongroom_verify_damaged_objects") == [
        'strongroom_verify_damaged_objects{job="k",type="snapshot"} 3']
    assert "\nd" not in text.replace("\\nd", "")  # no raw newline broke a sample's line
    for line in text.splitlines():
        assert line.startswith("#") or line.startswith("strongroom_"), line


def test_no_drill_verify_or_ping_still_declares_every_metric():
    text = status.prometheus_text([])
    for metric in NEW:
        assert f"# TYPE {metric} gauge" in text
        assert samples(text, metric) == []
