"""One spec, three renderings that agree: croniter, systemd-analyze and launchd's rule."""

import json
import os
import plistlib
import subprocess
from datetime import datetime, timedelta

import pytest
from croniter import croniter

from strongroom import schedule
from strongroom.core.errors import ConfigError
from tests.helpers import strongroom

BASE = datetime(2026, 1, 30, 12, 34)
CALENDAR_SPECS = [
    "daily 01:00",
    "daily 23:59",
    "weekly mon 03:15",
    "weekly sun 00:00",
    "monthly 1 02:30",
    "monthly 28 23:00",
    "*/15 * * * *",
    "0 9-17 * * 1-5",
    "30 4 1,15 * *",
    "0 0 1 * 5",  # day of month OR day of week, as cron reads it
    "5 */4 * * *",
    "0 12 * jan,jul *",
    "0 6 * * 7",
    "10,40 2-3 * * sat,sun",
]


def systemd_times(calendars, base, count):
    times = set()
    for cal in calendars:
        out = subprocess.run(
            ["systemd-analyze", "calendar", f"--iterations={count}",
             f"--base-time={base:%Y-%m-%d %H:%M:%S} UTC", cal],
            capture_output=True, text=True, env=dict(os.environ, TZ="UTC", LC_ALL="C"),
            check=True).stdout
        for line in out.splitlines():
            line = line.strip()
            if line.startswith(("Next elapse:", "Iter. #")):
                stamp = line.split(": ", 1)[1].rsplit(" ", 1)[0]  # "Sat 2026-02-01 01:30:00"
                times.add(datetime.strptime(stamp.split(" ", 1)[1], "%Y-%m-%d %H:%M:%S"))
    return sorted(times)[:count]


def launchd_times(entries, base, count):
    """Walk time forward applying launchd's StartCalendarInterval rule, minute by minute."""
    out = []
    day = base.replace(hour=0, minute=0)
    while len(out) < count:
        for minute in range(1440):
            t = day + timedelta(minutes=minute)
            if t > base and schedule.launchd_matches(entries, t):
                out.append(t)
                if len(out) == count:
                    break
        day += timedelta(days=1)
    return out


def plist_roundtrip(keys):
    data = {"Label": "org.strongroom.test", "ProgramArguments": ["/bin/true"], **keys}
    return plistlib.loads(plistlib.dumps(data))


@pytest.mark.parametrize("spec", CALENDAR_SPECS)
def test_cron_systemd_and_launchd_fire_at_the_same_20_times(spec):
    s = schedule.parse(spec)
    ours = s.next_times(BASE, 20)
    assert len(ours) == 20
    it = croniter(s.cron_fields(), BASE)
    assert [it.get_next(datetime) for _ in range(20)] == ours, "cron line"
    sd = s.systemd()
    assert sd["Persistent"] == "true"
    assert systemd_times(sd["OnCalendar"], BASE, 20) == ours, "systemd OnCalendar"
    keys = plist_roundtrip(s.launchd())
    assert launchd_times(keys["StartCalendarInterval"], BASE, 20) == ours, "launchd"


@pytest.mark.parametrize(("spec", "cron", "minutes"), [
    ("every 15m", "*/15 * * * *", 15),
    ("every 1m", "* * * * *", 1),
    ("every 2h", "0 */2 * * *", 120),
    ("every 24h", "0 0 * * *", 1440),
])
def test_intervals_render_the_same_spacing_everywhere(spec, cron, minutes):
    s = schedule.parse(spec)
    assert s.cron_fields() == cron
    it = croniter(cron, BASE)
    a, b = it.get_next(datetime), it.get_next(datetime)
    assert (b - a) == timedelta(minutes=minutes)
    assert s.systemd() == {"OnBootSec": "5min", "OnUnitActiveSec": f"{minutes}min"}
    assert plist_roundtrip(s.launchd())["StartInterval"] == minutes * 60


def test_what_a_backend_cannot_express_is_refused_with_a_reason():
    with pytest.raises(schedule.Unrenderable, match="must divide an hour"):
        schedule.parse("every 7m").cron_fields()
    with pytest.raises(schedule.Unrenderable, match="anacron counts whole days"):
        schedule.parse("every 15m").anacron()
    with pytest.raises(schedule.Unrenderable, match="one run a day, a week or a month"):
        schedule.parse("0 9-17 * * 1-5").anacron()
    with pytest.raises(schedule.Unrenderable, match="StartCalendarInterval entries"):
        schedule.parse("*/2 */2 1-20 * *").launchd()
    assert schedule.parse("daily 01:00").anacron() == (1, 5)
    assert schedule.parse("weekly fri 01:00").anacron() == (7, 5)
    assert schedule.parse("monthly 3 01:00").anacron() == ("@monthly", 5)


@pytest.mark.parametrize(("spec", "message"), [
    ("daily 25:00", "'25:00' is not a time HH:MM"),
    ("daily", "expected 'daily HH:MM'"),
    ("weekly funday 01:00", "'funday' is not a day"),
    ("monthly 31 01:00", "day '31' must be 1-28"),
    ("every 0m", "expected 'every Nm' or 'every Nh'"),
    ("every 20000m", "intervals over a week"),
    ("* * * *", "expected 'daily HH:MM'"),
    ("61 * * * *", "'61' is not a minute (0-59)"),
    ("0 0 */2 * *", "'*/N' in the day of month field"),
    ("0 5-1 * * *", "range 5-1 runs backwards"),
    ("", "expected 'daily HH:MM'"),
])
def test_bad_specs_say_what_is_wrong(spec, message):
    with pytest.raises(ConfigError) as exc:
        schedule.parse(spec)
    assert message in str(exc.value)


def test_jitter_past_midnight_moves_to_the_next_day_never_earlier():
    assert schedule.jitter_minutes("desktop", 60) == 39
    assert schedule.with_jitter("weekly sun 23:50", "desktop", 60) == "weekly mon 00:29"
    assert schedule.with_jitter("weekly sat 23:59", "desktop", 60) == "weekly sun 00:38"
    assert schedule.with_jitter("monthly 3 23:50", "desktop", 60) == "monthly 4 00:29"
    # every month has a 28th: the latest minute of it, still later than asked
    assert schedule.with_jitter("monthly 28 23:50", "desktop", 60) == "monthly 28 23:59"
    assert schedule.with_jitter("daily 23:50", "desktop", 60) == "daily 00:29"
    for spec in ("weekly sun 23:50", "monthly 3 23:50", "monthly 28 23:50"):
        start = datetime(2026, 11, 1, 12, 0)  # a Sunday
        asked = schedule.parse(spec).next_times(start, 1)[0]
        got = schedule.parse(schedule.with_jitter(spec, "desktop", 60)).next_times(start, 1)[0]
        assert timedelta(0) < got - asked <= timedelta(minutes=60), spec


def test_jitter_is_stable_per_host_and_stays_within_its_limit():
    a = schedule.with_jitter("daily 01:00", "desktop", 60)
    assert a == schedule.with_jitter("daily 01:00", "desktop", 60)
    offsets = {schedule.jitter_minutes(h, 60) for h in ("desktop", "laptop", "server", "nas")}
    assert len(offsets) > 1 and all(0 <= o < 60 for o in offsets)
    assert schedule.with_jitter("daily 23:50", "desktop", 1440).startswith("daily ")
    assert schedule.with_jitter("weekly mon 01:00", "x", 0) == "weekly mon 01:00"
    with pytest.raises(ConfigError, match="jitter applies to daily, weekly and monthly"):
        schedule.with_jitter("*/5 * * * *", "desktop", 30)


def test_previous_time_and_period():
    s = schedule.parse("daily 01:00")
    assert s.previous_time(datetime(2026, 3, 2, 0, 59)) == datetime(2026, 3, 1, 1, 0)
    assert s.previous_time(datetime(2026, 3, 2, 1, 0)) == datetime(2026, 3, 2, 1, 0)
    assert s.period() == timedelta(days=1)
    assert schedule.parse("weekly tue 05:00").period() == timedelta(days=7)
    assert schedule.parse("0 9-17 * * 1-5").period() == timedelta(hours=64)


def test_explain_verb_prints_every_rendering():
    out = json.loads(strongroom("schedule", "explain", "weekly mon 03:15", "--count", "3",
                                "--json", check=0).stdout)
    assert out["cron"] == "15 3 * * 1"
    assert out["anacron"] == {"period": 7, "delay": 5}
    assert out["systemd"]["OnCalendar"] == ["Mon *-*-* 03:15:00"]
    assert out["launchd"]["StartCalendarInterval"] == [{"Minute": 15, "Hour": 3, "Weekday": 1}]
    assert len(out["next"]) == 3
    text = strongroom("schedule", "explain", "every 7m", check=0).stdout
    assert "cron: refused: cron cannot run 'every 7m' at even spacing" in text
    proc = strongroom("schedule", "explain", "daily 24:00", check=2)
    assert "'24:00' is not a time HH:MM" in proc.stderr
    out = json.loads(strongroom("schedule", "explain", "daily 01:00", "--jitter", "60",
                                "--seed", "desktop", "--json", check=0).stdout)
    assert out["spec"] == schedule.with_jitter("daily 01:00", "desktop", 60)
