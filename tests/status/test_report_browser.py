"""The report page in a real browser: Debian's headless Chromium lays it out, its DOM holds
every job row, drill, coverage figure and day cell, and its screenshot is a real picture."""

import shutil
import subprocess
from collections import Counter
from html.parser import HTMLParser

import pytest

from tests.helpers import strongroom
from tests.status import png, reportbed
from tests.status.reportbed import BUNDLES_DAYS

CHROMIUM = "/usr/bin/chromium"
OK, WARNING, ERROR = (0x1A, 0x7F, 0x37), (0xD4, 0xA7, 0x2C), (0xC2, 0x1D, 0x2B)  # the CSS's


def chromium(tmp_path, *args):
    if not shutil.which(CHROMIUM):
        pytest.fail("Chromium is not installed, and this test needs a real browser: run "
                    "scripts/deps as root (make test does), or "
                    "`apt-get install -y --no-install-recommends chromium`")
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                           f"--user-data-dir={tmp_path / 'profile'}", *map(str, args)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


class Dom(HTMLParser):
    """From the browser's DOM: each job row's day-cell classes, and each element's text by
    its class."""

    def __init__(self, text):
        super().__init__()
        self.cells, self.text, self._row, self._open = {}, {}, None, []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "tr" and "job" in classes:
            self._row = (a.get("data-host"), a["data-job"])
            self.cells[a["data-job"]] = []
        if tag == "li" and "day" in classes and self._row:
            self.cells[self._row[1]].append([c for c in classes if c != "day"])
        if tag not in ("meta", "br", "link", "input", "img"):
            self._open.append((tag, classes))

    def handle_endtag(self, tag):
        if tag == "tr":
            self._row = None
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data):
        for _, classes in self._open:
            for c in classes:
                self.text.setdefault(c, []).append(data.strip())


def test_the_page_in_a_real_browser(tmp_path):
    conf, state = reportbed.write(tmp_path)
    page = tmp_path / "report.html"
    strongroom("--config-dir", conf, "--state-dir", state, "status", "--html", page, check=0)
    dom = Dom(chromium(tmp_path, "--dump-dom", page.as_uri()))
    assert list(dom.cells) == ["bundles", "fresh", "notes", "restore-drill", "snap"]
    for job, cells in dom.cells.items():
        assert len(cells) == 30, job
    assert [c for (c,) in dom.cells["bundles"]] == BUNDLES_DAYS
    assert {c for (c,) in dom.cells["fresh"]} == {"none"}
    rto = [t for t in dom.text["rto"] if t]
    assert rto == ["4.2s", "1m 01s", "2.0s"]
    assert [t for t in dom.text["coverage-ratio"] if t] == ["92.5%", "100%"]
    assert "2: app/full-2026.bundle, web/incr-7.bundle" in "".join(dom.text["damaged"])
    assert "end ✗ FAILED" in [t for t in dom.text["ping"] if t]
    assert reportbed.HOSTILE in dom.text["message"]  # text in the page, not a script

    shot = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,1000", page.as_uri())
    width, height, rows = png.decode(shot.read_bytes())
    assert (width, height) == (1400, 1000)
    colours = Counter(p for row in rows for p in row)
    assert len(colours) > 100  # text, badges and strips: no blank or single-colour page
    assert colours.most_common(1)[0][1] < 0.95 * width * height
    # the strips' and badges' colours were painted (each also says its result in text)
    assert colours[OK] > 500 and colours[ERROR] > 500 and colours[WARNING] > 100, \
        (colours[OK], colours[ERROR], colours[WARNING])


def test_a_damaged_screenshot_is_no_picture(tmp_path):
    """The PNG reader the test above relies on refuses what is not a whole PNG."""
    good = png.SIGNATURE + b"\0\0\0\0IEND\xaeB`\x82"
    assert list(png.chunks(good)) == [(b"IEND", b"")]
    with pytest.raises(ValueError, match="the signature is missing"):
        list(png.chunks(b"GIF89a" + good))
    with pytest.raises(ValueError, match="fails its CRC"):
        list(png.chunks(good[:-1] + b"\0"))
