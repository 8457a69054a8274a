"""`strongroom status --html`: the report page, its rows in --json, and --from-json."""

import json
import re
import subprocess
from html.parser import HTMLParser

from tests.helpers import ENV, VENV_BIN, strongroom
from tests.status import reportbed
from tests.status.reportbed import BUNDLES_DAYS, HOSTILE, PING, VERIFY

OLD_KEYS = {"job", "host", "valid", "type", "schedule", "result", "finished", "age_seconds",
            "duration_seconds", "exit_code", "bytes", "changed", "last_success", "next_due",
            "due", "stale", "stale_after_seconds"}


def sr(conf, state, *args, check=None, **kw):
    return strongroom("--config-dir", conf, "--state-dir", state, "status", *args,
                      check=check, **kw)


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text, as a browser's parser sees them."""

    def __init__(self, text):
        super().__init__()
        self.tags, self.text = [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def test_json_rows_carry_history_drills_verify_and_ping_beside_the_old_keys(tmp_path):
    conf, state = reportbed.write(tmp_path)
    rows = {r["job"]: r for r in json.loads(sr(conf, state, "--json", check=0).stdout)["jobs"]}
    for r in rows.values():
        assert set(r) >= OLD_KEYS, r
        assert len(r["history"]) == 30
    assert [d["result"] for d in rows["bundles"]["history"]] == BUNDLES_DAYS
    two = rows["bundles"]["history"][-3]  # a good run and a failed one that day
    assert (two["runs"], two["ok"], two["error"], two["result"]) == (2, 1, 1, "error")
    assert rows["bundles"]["verify"] == VERIFY and rows["bundles"]["ping"] == PING
    assert rows["bundles"]["artifacts"] is None  # no drill
    assert [(a["job"], a["source"], a["duration_seconds"])
            for a in rows["restore-drill"]["artifacts"]] == [
        ("bundles", "local", 4.25), ("bundles", "remote", 61.5), ("snap", "remote", 2.0)]
    assert rows["notes"]["message"] == HOSTILE
    assert rows["fresh"]["verify"] is None and rows["fresh"]["ping"] is None
    assert {d["result"] for d in rows["fresh"]["history"]} == {"none"}


def test_the_page_escapes_every_hostile_text_and_loads_nothing(tmp_path):
    conf, state = reportbed.write(tmp_path)
    page = tmp_path / "out" / "report.html"
    proc = sr(conf, state, "--html", page, check=0)
    assert f"report written to {page}" in proc.stdout
    html = page.read_text()
    assert "<script" not in html.lower()  # the message's tag is text, not a tag
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &#34;quoted&#34; " \
           "&#39;single&#39;" in html
    parsed = Tags(html)
    assert HOSTILE in "".join(parsed.text)  # people read it as it was written
    assert not [t for t, a in parsed.tags if t in ("script", "link", "img", "iframe", "object")]
    assert not [a for _, a in parsed.tags if {"src", "href"} & set(a)]
    assert not re.search(r"url\(|@import|https?://", html)
    csp = [a["content"] for t, a in parsed.tags if a.get("http-equiv") ==
           "Content-Security-Policy"]
    assert csp == ["default-src 'none'; style-src 'unsafe-inline'"]
    assert [p.name for p in page.parent.iterdir()] == ["report.html"]  # no temp left
    rows = [a for t, a in parsed.tags if t == "tr" and a.get("class") == "job"]
    assert [r["data-job"] for r in rows] == ["bundles", "fresh", "notes", "restore-drill",
                                             "snap"]
    assert {r["data-job"]: r["data-result"] for r in rows} == {
        "bundles": "ok", "fresh": "none", "notes": "error", "restore-drill": "error",
        "snap": "ok"}
    out = json.loads(sr(conf, state, "--html", page, "--json", check=0).stdout)
    assert out["html"] == str(page) and len(out["jobs"]) == 5


def test_rows_from_elsewhere_render_one_page_of_every_host(tmp_path):
    conf, state = reportbed.write(tmp_path)
    one = json.loads(sr(conf, state, "--json", check=0).stdout)
    fleet = [{**r, "host": "desktop"} for r in one["jobs"]] + [
        {**one["jobs"][0], "host": '"><b onmouseover=x>laptop', "job": "<i>evil</i>"},
        {"host": "server", "job": "-", "result": "UNREACHABLE", "stale": True,
         "error": "status could not be read"}]
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps(fleet))
    page = tmp_path / "fleet.html"
    empty = tmp_path / "empty-conf"
    proc = strongroom("--config-dir", empty, "--state-dir", tmp_path / "no-state", "status",
                      "--from-json", rows, "--html", page, "--json")
    assert proc.returncode == 0, proc.stderr
    assert not empty.exists() and not (tmp_path / "no-state").exists()  # only read rows
    out = json.loads(proc.stdout)
    assert [r["job"] for r in out["jobs"]] == [r["job"] for r in fleet]
    html = page.read_text()
    parsed = Tags(html)
    hosts = [a["data-host"] for t, a in parsed.tags if t == "section"]
    assert hosts == ['"><b onmouseover=x>laptop', "desktop", "server"]
    assert not [t for t, a in parsed.tags if t == "i" or "onmouseover" in a]
    assert "&lt;i&gt;evil&lt;/i&gt;" in html and "<i>" not in html
    assert "status could not be read" in html and "UNREACHABLE" in html
    # a `status --json` envelope is read as its rows; stdin as '-'
    proc = subprocess.run([str(VENV_BIN / "strongroom"), "--config-dir", str(empty),
                           "status", "--from-json", "-", "--html", str(page), "--json"],
                          input=json.dumps(one), capture_output=True, text=True, env=ENV,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert [r["job"] for r in json.loads(proc.stdout)["jobs"]] == [
        r["job"] for r in one["jobs"]]


def test_junk_in_a_rows_fields_shows_as_missing_and_the_page_is_still_written(tmp_path):
    junk = [{"job": "a", "host": 7, "history": 5, "artifacts": "x", "verify": [1],
             "ping": {"start": "no", "end": [None]}, "age_seconds": "old", "result": ["?"],
             "duration_seconds": True, "next_due": {"a": 1}, "stale_after_seconds": "x"},
            {"job": "b", "history": [1, {"day": "d", "result": "<blink>", "runs": "many"}],
             "artifacts": [3, {"kind": {}, "duration_seconds": "slow", "files": None}],
             "verify": {"coverage_ratio": "all", "damaged": "everything", "objects": None}}]
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps(junk))
    page = tmp_path / "page.html"
    proc = strongroom("--config-dir", tmp_path / "conf", "status", "--from-json", rows,
                      "--html", page)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    html = page.read_text()
    parsed = Tags(html)
    hosts = [a["data-host"] for t, a in parsed.tags if t == "section"]
    assert hosts == ["-", "7"]  # b names no host; a's 7 is text like any name
    cells = [a["class"] for t, a in parsed.tags if t == "li" and "day" in a.get("class", "")]
    assert cells == ["day none"]  # b's one day that is a mapping; "<blink>" is no result
    assert "blink" not in html
    assert "no history" in html  # a: no list of days at all


def test_rows_that_are_not_rows_are_refused_and_no_page_is_written(tmp_path):
    page = tmp_path / "out" / "page.html"
    cases = {"missing.json": None, "junk.json": "{not json", "dict.json": '{"a": 1}',
             "rows.json": '[{"job": "a"}, "b"]', "nojob.json": '[{"host": "h"}]'}
    said = {}
    for name, text in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        proc = strongroom("--config-dir", tmp_path / "conf", "status", "--from-json",
                          tmp_path / name, "--html", page, check=2)
        said[name] = proc.stderr.strip()
    where = str(tmp_path)
    assert said == {
        "missing.json": f"strongroom: error: cannot read the rows in {where}/missing.json: "
                        "No such file or directory",
        "junk.json": f"strongroom: error: {where}/junk.json is not JSON: Expecting property "
                     "name enclosed in double quotes: line 1 column 2 (char 1)",
        "dict.json": f"strongroom: error: {where}/dict.json holds no rows: expected a list "
                     "of status rows or the output of `strongroom status --json`",
        "rows.json": f"strongroom: error: {where}/rows.json: row 2 is not a status row (a "
                     "mapping with a job name)",
        "nojob.json": f"strongroom: error: {where}/nojob.json: row 1 is not a status row (a "
                      "mapping with a job name)"}
    assert not page.parent.exists()
    proc = strongroom("status", "--from-json", tmp_path / "rows.json", "--prometheus",
                      tmp_path / "x.prom", check=64)
    assert "--from-json takes no --prometheus or --notify" in proc.stderr
    assert not (tmp_path / "x.prom").exists()


def test_a_hosts_own_template_is_used_and_a_broken_one_is_named(tmp_path):
    conf, state = reportbed.write(tmp_path)
    (conf / "templates").mkdir()
    own = conf / "templates" / "report.html.j2"
    own.write_text("<p>{{ summary.jobs }} jobs on {{ hosts | length }} host: "
                   "{{ hosts[0].rows[2].message }}</p>\n")
    page = tmp_path / "page.html"
    sr(conf, state, "--html", page, check=0)
    assert page.read_text() == (
        "<p>5 jobs on 1 host: &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; "
        "&#34;quoted&#34; &#39;single&#39;</p>")  # a host's own template is escaped too
    before = page.read_bytes()
    own.write_text("{% for x in %}\n")
    proc = sr(conf, state, "--html", page, check=2)
    assert (f"strongroom: error: the report template {own} line 1 failed: "
            "Expected an expression, got 'end of statement block'") in proc.stderr
    assert page.read_bytes() == before  # the last good page stays
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("page")] == ["page.html"]


def test_a_page_that_cannot_be_written_is_an_error_and_leaves_nothing(tmp_path):
    conf, state = reportbed.write(tmp_path)
    (tmp_path / "a-file").write_text("x\n")
    proc = sr(conf, state, "--html", tmp_path / "a-file" / "page.html", "--json", check=2)
    out = json.loads(proc.stdout)
    page = tmp_path / "a-file" / "page.html"
    assert out["result"] == "error" and "html" not in out
    assert out["message"] == (f"cannot write the report page {page}: {tmp_path / 'a-file'}: "
                              "File exists")
    assert proc.stderr == f"strongroom: error: {out['message']}\n"
    assert (tmp_path / "a-file").read_text() == "x\n"
