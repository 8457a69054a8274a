"""One schedule spec, rendered for cron, anacron, systemd timers and launchd agents.

Specs: `daily HH:MM`, `weekly DAY HH:MM`, `monthly D HH:MM`, `every Nm`, `every Nh`, or a
5-field cron expression. A rendering a backend cannot express exactly is refused with a
reason (Unrenderable), never approximated. Times are the host's local time, as all three
schedulers read them.

Calendar specs become sets of allowed minutes, hours, days of month, months and days of
week with cron's rule: when both day fields are restricted, a day matches if EITHER does.
"""

import hashlib
import itertools
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..core.errors import ConfigError

DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
SYSTEMD_DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
          ("day of week", 0, 7))
MAX_LAUNCHD_ENTRIES = 500


class Unrenderable(Exception):
    """A backend cannot express this schedule exactly; the message says why."""


@dataclass(frozen=True)
class Schedule:
    spec: str
    minutes: frozenset = frozenset()
    hours: frozenset = frozenset()
    doms: frozenset | None = None  # None: any day of month ('*')
    months: frozenset | None = None
    dows: frozenset | None = None  # 0 = Sunday
    interval: int = 0  # seconds, for `every N`

    @property
    def is_interval(self):
        return self.interval > 0

    # --- evaluation (cron semantics) ----------------------------------------------------

    def day_matches(self, d):
        if self.months is not None and d.month not in self.months:
            return False
        dow = (d.weekday() + 1) % 7
        if self.doms is None and self.dows is None:
            return True
        if self.doms is None:
            return dow in self.dows
        if self.dows is None:
            return d.day in self.doms
        return d.day in self.doms or dow in self.dows

    def next_times(self, start, count):
        """The next `count` firing times strictly after `start` (naive local datetimes)."""
        if self.is_interval:
            return [start + timedelta(seconds=self.interval * (i + 1)) for i in range(count)]
        out = []
        day = start.date()
        for _ in range(366 * 8):  # a Feb 29 schedule can wait years
            if self.day_matches(day):
                for h in sorted(self.hours):
                    for m in sorted(self.minutes):
                        t = datetime(day.year, day.month, day.day, h, m)
                        if t > start:
                            out.append(t)
                            if len(out) == count:
                                return out
            day += timedelta(days=1)
        return out

    def previous_time(self, now):
        """The latest firing time at or before `now` (None when there is none in 8 years)."""
        if self.is_interval:
            return now - timedelta(seconds=self.interval)
        day = now.date()
        for _ in range(366 * 8):
            if self.day_matches(day):
                for h in sorted(self.hours, reverse=True):
                    for m in sorted(self.minutes, reverse=True):
                        t = datetime(day.year, day.month, day.day, h, m)
                        if t <= now:
                            return t
            day -= timedelta(days=1)
        return None

    def period(self):
        """The nominal time between runs, for staleness: the widest gap seen in a year."""
        if self.is_interval:
            return timedelta(seconds=self.interval)
        times = self.next_times(datetime(2025, 1, 1), 400)
        if len(times) < 2:
            return timedelta(days=366)
        return max(b - a for a, b in itertools.pairwise(times))

    # --- renderings ---------------------------------------------------------------------

    def cron_fields(self):
        if self.is_interval:
            n = self.interval // 60
            if n < 60 and 60 % n == 0:
                return f"*/{n} * * * *" if n > 1 else "* * * * *"
            if n % 60 == 0 and 24 % (n // 60) == 0:
                h = n // 60
                return {1: "0 * * * *", 24: "0 0 * * *"}.get(h, f"0 */{h} * * *")
            raise Unrenderable(f"cron cannot run '{self.spec}' at even spacing: the interval "
                               "must divide an hour (minutes) or a day (hours)")
        return " ".join([_cron_list(self.minutes, 0, 59), _cron_list(self.hours, 0, 23),
                         _cron_list(self.doms, 1, 31), _cron_list(self.months, 1, 12),
                         _cron_list(self.dows, 0, 6)])

    def cron_line(self, command):
        return f"{self.cron_fields()} {command}"

    def anacron(self):
        """(period, delay_minutes): anacron counts whole days, so only day-sized specs."""
        if self.is_interval:
            if self.interval % 86400 == 0:
                return self.interval // 86400, 5
            raise Unrenderable(f"anacron counts whole days; '{self.spec}' runs more often "
                               "(cron alone runs it, and catches up within the interval)")
        if len(self.minutes) != 1 or len(self.hours) != 1 or self.months is not None:
            raise Unrenderable(f"anacron cannot express '{self.spec}': it needs one run a "
                               "day, a week or a month")
        if self.doms is None and self.dows is None:
            return 1, 5
        if self.doms is None and len(self.dows) == 1:
            return 7, 5
        if self.dows is None and len(self.doms) == 1:
            return "@monthly", 5
        raise Unrenderable(f"anacron cannot express '{self.spec}': it needs one run a day, "
                           "a week or a month")

    def systemd(self):
        """Timer [Timer] settings: OnCalendar (one line per cron day rule) or intervals."""
        if self.is_interval:
            n = self.interval // 60
            return {"OnBootSec": "5min", "OnUnitActiveSec": f"{n}min"}
        time = f"{_sd_list(self.hours, 0, 23)}:{_sd_list(self.minutes, 0, 59)}:00"
        month = _sd_list(self.months, 1, 12)

        def cal(doms, dows):
            day = _sd_list(doms, 1, 31)
            prefix = ",".join(SYSTEMD_DAYS[d] for d in sorted(dows)) + " " if dows else ""
            return f"{prefix}*-{month}-{day} {time}"

        if self.doms is not None and self.dows is not None:
            cals = [cal(self.doms, None), cal(None, self.dows)]  # cron's OR, as two lines
        else:
            cals = [cal(self.doms, self.dows)]
        return {"OnCalendar": cals, "Persistent": "true"}

    def launchd(self):
        """The plist keys: StartCalendarInterval (a list of dicts, ORed) or StartInterval."""
        if self.is_interval:
            return {"StartInterval": self.interval}
        parts = [("Minute", self.minutes, 0, 59), ("Hour", self.hours, 0, 23),
                 ("Month", self.months, 1, 12)]
        day_rules = []
        if self.doms is not None and self.dows is not None:
            day_rules = [("Day", self.doms, 1, 31), ("Weekday", self.dows, 0, 6)]
        elif self.doms is not None:
            parts.append(("Day", self.doms, 1, 31))
        elif self.dows is not None:
            parts.append(("Weekday", self.dows, 0, 6))

        def product(parts):
            keys = [(k, sorted(v)) for k, v, lo, hi in parts
                    if v is not None and len(v) < hi - lo + 1]
            combos = itertools.product(*[[(k, x) for x in vals] for k, vals in keys])
            return [dict(c) for c in combos]

        entries = []
        for rule in day_rules or [None]:
            entries += product(parts + ([rule] if rule else []))
        if len(entries) > MAX_LAUNCHD_ENTRIES:
            raise Unrenderable(f"launchd would need {len(entries)} StartCalendarInterval "
                               f"entries for '{self.spec}' (limit {MAX_LAUNCHD_ENTRIES})")
        return {"StartCalendarInterval": entries}


def launchd_matches(entries, t):
    """launchd's rule: a time fires when every key of any one entry matches it."""
    dow = (t.weekday() + 1) % 7
    values = {"Minute": t.minute, "Hour": t.hour, "Day": t.day, "Month": t.month,
              "Weekday": dow}
    for e in entries:
        if all((values[k] == v or (k == "Weekday" and v == 7 and dow == 0))
               for k, v in e.items()):
            return True
    return False


def _cron_list(values, lo, hi):
    if values is None or len(values) == hi - lo + 1:
        return "*"
    return ",".join(str(v) for v in sorted(values))


def _sd_list(values, lo, hi):
    if values is None or len(values) == hi - lo + 1:
        return "*"
    return ",".join(f"{v:02d}" if hi in (23, 59) else str(v) for v in sorted(values))


# --- parsing ------------------------------------------------------------------------------

_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


def _time(text, spec):
    m = _HHMM.match(text)
    if not m:
        raise ConfigError(f"schedule '{spec}': '{text}' is not a time HH:MM (00:00-23:59)")
    return int(m.group(1)), int(m.group(2))


def _field(text, idx, spec):
    name, lo, hi = FIELDS[idx]
    names = {3: MONTHS, 4: DAYS}.get(idx)
    out = set()
    for part in text.split(","):
        body, _, step = part.partition("/")
        if step and not step.isdigit():
            raise ConfigError(f"schedule '{spec}': bad step '{step}' in the {name} field")
        if body == "*":
            if idx in (2, 4) and step:
                raise ConfigError(f"schedule '{spec}': '*/N' in the {name} field means "
                                  "different things to different crons; list the days")
            a, b = lo, (6 if idx == 4 else hi)
        else:
            a_text, dash, b_text = body.partition("-")
            a = _value(a_text, names, lo, hi, name, spec)
            b = _value(b_text, names, lo, hi, name, spec) if dash else (hi if step else a)
            if b < a:
                raise ConfigError(f"schedule '{spec}': range {body} runs backwards in the "
                                  f"{name} field")
        n = int(step) if step else 1
        if n < 1:
            raise ConfigError(f"schedule '{spec}': step 0 in the {name} field")
        out.update(range(a, b + 1, n))
    if idx == 4 and 7 in out:
        out = (out - {7}) | {0}
    full = set(range(lo, (6 if idx == 4 else hi) + 1))
    return frozenset(out), out == full


def _value(text, names, lo, hi, name, spec):
    t = text.strip().lower()
    if names and t[:3] in names and not t.isdigit():
        return names.index(t[:3]) + (1 if names is MONTHS else 0)
    if not t.isdigit() or not lo <= int(t) <= hi:
        raise ConfigError(f"schedule '{spec}': '{text}' is not a {name} ({lo}-{hi})")
    return int(t)


def parse(spec):
    """A Schedule, or ConfigError naming what is wrong and what was expected."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"schedule {spec!r}: expected 'daily HH:MM', 'weekly DAY HH:MM', "
                          "'monthly D HH:MM', 'every Nm', 'every Nh' or a 5-field cron "
                          "expression")
    words = spec.split()
    head = words[0].lower()
    if head == "daily" and len(words) == 2:
        h, m = _time(words[1], spec)
        return Schedule(spec, frozenset({m}), frozenset({h}))
    if head == "weekly" and len(words) == 3:
        day = words[1].lower()[:3]
        if day not in DAYS:
            raise ConfigError(f"schedule '{spec}': '{words[1]}' is not a day (mon..sun)")
        h, m = _time(words[2], spec)
        return Schedule(spec, frozenset({m}), frozenset({h}), dows=frozenset({DAYS.index(day)}))
    if head == "monthly" and len(words) == 3:
        if not words[1].isdigit() or not 1 <= int(words[1]) <= 28:
            raise ConfigError(f"schedule '{spec}': day '{words[1]}' must be 1-28 (every month "
                              "has it)")
        h, m = _time(words[2], spec)
        return Schedule(spec, frozenset({m}), frozenset({h}), doms=frozenset({int(words[1])}))
    if head == "every" and len(words) == 2:
        mt = re.fullmatch(r"(\d+)([mh])", words[1].lower())
        if not mt or int(mt.group(1)) < 1:
            raise ConfigError(f"schedule '{spec}': expected 'every Nm' or 'every Nh' with N "
                              ">= 1")
        n = int(mt.group(1)) * (60 if mt.group(2) == "h" else 1)
        if n > 7 * 1440:
            raise ConfigError(f"schedule '{spec}': intervals over a week belong in "
                              "'weekly' or 'monthly'")
        return Schedule(spec, interval=n * 60)
    if len(words) == 5:
        parsed = [_field(w, i, spec) for i, w in enumerate(words)]
        (mins, _), (hrs, _), (doms, dom_all), (mons, mon_all), (dows, dow_all) = parsed
        return Schedule(spec, mins, hrs, None if words[2] == "*" else doms,
                        None if mon_all else mons, None if words[4] == "*" else dows)
    raise ConfigError(f"schedule '{spec}': expected 'daily HH:MM', 'weekly DAY HH:MM', "
                      "'monthly D HH:MM', 'every Nm', 'every Nh' or a 5-field cron expression")


def jitter_minutes(seed, limit):
    """A stable offset in [0, limit) for this seed (the inventory host name)."""
    if limit <= 0:
        return 0
    return int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big") % limit


def with_jitter(spec, seed, limit):
    """The spec moved later by this host's stable offset. Past midnight it moves to the
    next day (a weekly job to the next weekday, a monthly one to the next day of the
    month, at most the 28th at 23:59): wrapping within the day would run a late job
    almost a day *earlier*, before the backups a drill at 23:50 is meant to follow."""
    sched = parse(spec)
    offset = jitter_minutes(seed, limit)
    if offset == 0:
        return spec
    words = spec.split()
    if words[0].lower() not in ("daily", "weekly", "monthly"):
        raise ConfigError(f"schedule '{spec}': jitter applies to daily, weekly and monthly "
                          "specs only")
    h, m = next(iter(sched.hours)), next(iter(sched.minutes))
    over, total = divmod(h * 60 + m + offset, 1440)
    if over and words[0].lower() == "weekly":
        words[1] = DAYS[(next(iter(sched.dows)) + over) % 7]
    elif over and words[0].lower() == "monthly":
        day = int(words[1]) + over
        if day > 28:  # every month has a 28th, not every one a 29th
            day, total = 28, 1439
        words[1] = str(day)
    words[-1] = f"{total // 60:02d}:{total % 60:02d}"
    return " ".join(words)


def explain(spec, start, count=5):
    """Every rendering (or why not) and the next firing times, as plain data."""
    sched = parse(spec)
    out = {"spec": spec, "period_seconds": int(sched.period().total_seconds()),
           "next": [t.strftime("%Y-%m-%d %H:%M") for t in sched.next_times(start, count)]}
    for key, fn in (("cron", sched.cron_fields), ("anacron", sched.anacron),
                    ("systemd", sched.systemd), ("launchd", sched.launchd)):
        try:
            value = fn()
            if key == "anacron":
                value = {"period": value[0], "delay": value[1]}
            out[key] = value
        except Unrenderable as exc:
            out[key] = None
            out[f"{key}_refused"] = str(exc)
    return out
