"""`ping` in the one schema: the engine and the exported JSON Schema agree on every form,
`config show`'s effective job fills its defaults in, and the redaction and the log tail
keep what they promise."""

import jsonschema
import pytest

from strongroom.jobs import config, schema
from strongroom.ping import log_tail, redact
from strongroom.ping.target import resolve

VALIDATOR = jsonschema.Draft202012Validator(schema.json_schema())
BASE = {"name": "j", "type": "status"}
URL = "https://hc-ping.com/0f5c1e42-7d1b-4c2a-9e0e-5b3f6a1d2c3b"


@pytest.mark.parametrize("ping, valid", [
    (URL, True), ("HTTP://127.0.0.1:8000/ping/x?create=1", True),
    ({"url": URL}, True), ({"url_file": "/etc/strongroom/secrets/ping.url"}, True),
    ({"url": URL, "exit_code": True, "style": "healthchecks"}, True),
    ({"url": URL, "style": "uptime_kuma"}, True),
    ("ftp://x/y", False), ("https://", False), ("https://h/x y", False), (URL + "\n", False),
    ("", False), (5, False), (None, False), ([URL], False), ({}, False),
    ({"url": URL, "url_file": "/x"}, False), ({"url_file": "relative"}, False),
    ({"url": URL, "exit_code": "yes"}, False), ({"url": URL, "style": "kuma"}, False),
    ({"url": URL, "extra": 1}, False), ({"url": 5}, False),
])
def test_the_engine_and_the_json_schema_agree_on_ping(ping, valid):
    doc = {**BASE, "ping": ping}
    engine = config.job_errors(doc, "j.yml")
    exported = list(VALIDATOR.iter_errors(doc))
    assert (not engine) == valid and (not exported) == valid, (engine, exported)
    assert all(URL not in e and "0f5c1e42" not in e for e in engine)


def test_the_effective_job_fills_in_ping_only_when_there_is_one():
    assert "ping" not in config.effective(BASE)  # no ping is no heartbeat, not a default
    assert config.effective({**BASE, "ping": URL})["ping"] == {
        "url": URL, "exit_code": False, "style": "healthchecks"}


def test_redaction_keeps_scheme_and_host_only():
    assert redact.url(URL) == "https://hc-ping.com/…"
    assert redact.url("http://user:pw@Kuma.lan:3001/api/push/tok?x=1") == \
        "http://kuma.lan:3001/…"
    assert redact.url("not a url") == "…"
    said = redact.scrub(f"failed at {URL}/start?rid=1 and 0f5c1e42-7d1b-4c2a-9e0e-5b3f6a1d2c3b",
                        URL)
    assert "0f5c1e42" not in said and "hc-ping.com/…" in said
    job = redact.job({**BASE, "ping": {"url": URL, "style": "healthchecks"}})
    assert job["ping"] == {"url": "https://hc-ping.com/…", "style": "healthchecks"}


def test_signal_urls_keep_the_url_and_set_the_run_id():
    t = resolve({"url": URL + "?create=1", "exit_code": True})
    assert t.start("r1").url == URL + "/start?create=1&rid=r1"
    assert t.end(t.signal_for(0), "r1").url == URL + "?create=1&rid=r1"
    assert t.end(t.signal_for(1), "r1").url == URL + "?create=1&rid=r1"  # a warning is ok
    assert t.end(t.signal_for(3), "r1").url == URL + "/3?create=1&rid=r1"
    assert resolve(URL).end(resolve(URL).signal_for(143), "r").url == URL + "/fail?rid=r"
    assert "0f5c1e42" not in repr(t) + repr(t.start("r1"))  # printed, an object hides it


def test_the_log_tail_is_cut_to_the_limit_newest_first():
    lines = [f"line {i:04d} " + "x" * 90 for i in range(100)]
    whole = log_tail(lines)
    assert whole == ("\n".join(lines) + "\n").encode()
    cut = log_tail(lines, limit=1000)
    assert len(cut) <= 1000 and cut.endswith(b"line 0099 " + b"x" * 90 + b"\n")
    assert cut.startswith(b"[left out: 91 earlier line(s) of this run, and the start of the "
                          b"line below]\n")
    one = log_tail(["\u00e9" * 1000], limit=200)  # a cut inside a character is dropped
    assert len(one) <= 200 and one.decode("utf-8").endswith("\u00e9\n")
