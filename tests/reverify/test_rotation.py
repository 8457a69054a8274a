"""The rotation over simulated weeks (time driven by an injected `now`, real rclone against
a local-folder remote): every object re-read within the window, the load spread over the
runs, the same choice for the same ledger and time, and a property test over random
uploads, runs, damage, deletions and repairs."""

import copy
import hashlib
import math
import os
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strongroom import reverify
from strongroom.core.remote import Rclone
from strongroom.reverify import ledger as ledger_mod
from strongroom.reverify import rotation
from strongroom.reverify.targets import Target
from tests.reverify.helpers import flip

T0 = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)
DAY = timedelta(days=1)


class Place:
    """A local folder as the job's remote, the same files here, and the job's ledger."""

    def __init__(self, base):
        base = Path(base)
        self.local, self.remote = base / "local", base / "remote"
        self.local.mkdir()
        self.remote.mkdir()
        conf = base / "rclone.conf"
        conf.write_text("[local]\ntype = local\n")
        self.root = f"local:{self.remote}"
        self.target = Target("job", "snapshot", self.root, Rclone(str(conf)), local=self.local)
        self.ledger_path = base / "verify" / "job.json"
        self.count = 0

    def ledger(self):
        return reverify.Ledger(self.ledger_path, self.root)

    def upload(self, n, now):
        """n new objects, on both sides, recorded as a verified upload at `now`."""
        files = {}
        for _ in range(n):
            name = f"obj-{self.count:04d}.bin"
            self.count += 1
            data = os.urandom(64) + name.encode()
            (self.local / name).write_bytes(data)
            (self.remote / name).write_bytes(data)
            files[name] = (len(data), hashlib.sha256(data).hexdigest())
        self.ledger().record(self.root, files, now=now)
        return sorted(files)

    def run(self, now, window=30 * DAY, period=DAY, everything=False):
        led = self.ledger()
        return reverify.verify(self.target, led, now, window, period, everything), led


def test_thirty_days_cover_every_object_with_the_load_spread_evenly(tmp_path):
    place = Place(tmp_path)
    place.upload(90, T0)  # all at once: the hardest case to spread
    seen = {}
    loads = []
    for day in range(1, 61):
        now = T0 + day * DAY
        report, led = place.run(now)
        loads.append(report["checked_this_run"])
        assert report["coverage_ratio"] == 1.0 and report["damaged"] == []
        for name, entry in led.objects.items():
            verified = ledger_mod.parse(entry["verified"])
            assert now - verified <= 30 * DAY, (day, name)  # never older than the window
            if verified == now:
                seen.setdefault(name, day)
        if day == 30:
            assert len(seen) == 90  # every object re-read within the first window
    share = math.ceil(90 / 30)
    assert max(loads) <= 2 * share, loads
    assert sum(loads) >= 2 * 90 - share  # two windows, each object read about twice


def test_daily_uploads_keep_each_run_near_its_share(tmp_path):
    place = Place(tmp_path)
    loads = []
    for day in range(0, 75):
        now = T0 + day * DAY + timedelta(minutes=day % 7)  # a run a little late or early
        place.upload(4, now)
        report, led = place.run(now + timedelta(minutes=1))
        assert report["coverage_ratio"] == 1.0
        total = len(led.objects)
        loads.append((report["checked_this_run"], math.ceil(total / 30)))
        assert report["oldest_verified_age_seconds"] <= 30 * 86400
    assert all(load <= 2 * share for load, share in loads), loads


def test_the_same_ledger_and_time_choose_the_same_objects(tmp_path):
    place = Place(tmp_path)
    place.upload(40, T0)
    for day in (3, 9, 17):  # some rotation history
        place.run(T0 + day * DAY)
    objects = place.ledger().objects
    now = T0 + 21 * DAY
    first = rotation.choose(copy.deepcopy(objects), now, 30 * DAY, DAY)
    again = rotation.choose(dict(reversed(list(copy.deepcopy(objects).items()))), now,
                            30 * DAY, DAY)
    assert first == again and len(first) == math.ceil(40 / 30)
    assert rotation.choose(objects, now, 30 * DAY, DAY, everything=True) == sorted(objects)


def test_a_weekly_job_reads_ahead_of_its_next_run(tmp_path):
    place = Place(tmp_path)
    place.upload(10, T0)
    # a week between runs and a 10-day window: each run must leave no object that would
    # pass the window before the next one
    for week in range(1, 9):
        now = T0 + week * 7 * DAY
        report, led = place.run(now, window=10 * DAY, period=7 * DAY)
        for entry in led.objects.values():
            assert ledger_mod.parse(entry["verified"]) + 10 * DAY > now + 7 * DAY - DAY


OPS = st.lists(st.one_of(
    st.tuples(st.just("upload"), st.integers(1, 3)),
    st.tuples(st.just("run"), st.integers(1, 24)),  # hours since the last step
    st.tuples(st.just("damage"), st.integers(0, 50)),
    st.tuples(st.just("delete"), st.integers(0, 50)),
    st.tuples(st.just("repair"), st.just(0)),
), min_size=1, max_size=25)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
def test_no_damaged_object_is_ever_reported_verified(ops):
    window, period = 3 * DAY, DAY
    with tempfile.TemporaryDirectory() as base:
        place = Place(base)
        now = T0
        broken = {}  # name -> when its remote copy was damaged or deleted
        last_run = None
        for op, arg in ops:
            if op == "upload":
                place.upload(arg, now)
            elif op in ("damage", "delete"):
                names = sorted(set(place.ledger().objects) - set(broken))
                if not names:
                    continue
                name = names[arg % len(names)]
                if op == "damage":
                    flip(place.remote / name)
                else:
                    (place.remote / name).unlink()
                broken[name] = now
            elif op == "repair":
                for r in reverify.repair_target(place.target, place.ledger(), now):
                    assert r["result"] == "repaired"
                    broken.pop(r["object"])
            else:
                now += timedelta(hours=arg)
                report, led = place.run(now, window, period)
                for name, when in broken.items():
                    verified = ledger_mod.parse(led.objects[name]["verified"])
                    assert verified is None or verified <= when  # never after the damage
                deleted = {n for n in broken if not (place.remote / n).exists()}
                assert deleted <= set(report["damaged"])  # the listing finds each one
                assert set(report["damaged"]) <= set(broken)
                if last_run is not None and now - last_run <= period:
                    for name, entry in led.objects.items():
                        if name not in broken:
                            age = now - ledger_mod.parse(entry["verified"])
                            assert age <= window + period, (name, age)
                last_run = now
            now += timedelta(minutes=1)
