"""Which objects a run re-reads: deterministic, so the same ledger and time choose the same
objects, and spread, so a window's reads arrive a share per run instead of all at once.

Chosen, in this order: every damaged object (it fails until it reads back good), every
object never verified (adopted from the listing), every object whose last good
verification would be older than the window before the next run, and then, oldest first,
the rest up to a proportional share: objects x period / window, rounded up.
"""

import math

from .ledger import parse


def last_good(entry):
    """The last good verification of an entry, else when it was uploaded (or first seen)."""
    return parse(entry.get("verified")) or parse(entry.get("uploaded"))


def share(count, window, period):
    if window.total_seconds() <= 0:
        return count
    return min(count, math.ceil(count * period.total_seconds() / window.total_seconds()))


def choose(objects, now, window, period, everything=False):
    """The names to re-read now, from {name: entry}."""
    names = sorted(objects)
    if everything:
        return names
    must, rest = [], []
    for name in names:
        entry = objects[name]
        verified = parse(entry.get("verified"))
        if entry.get("damaged") or verified is None or verified + window <= now + period:
            must.append(name)
        else:
            rest.append(name)
    rest.sort(key=lambda n: (last_good(objects[n]), n))
    return must + rest[:max(0, share(len(names), window, period) - len(must))]


def coverage(objects, now, window):
    """(verified within the window, oldest age in seconds or None), damaged ones excluded
    from the first and counted in the second."""
    fresh = 0
    oldest = None
    for entry in objects.values():
        verified = parse(entry.get("verified"))
        if verified is not None and not entry.get("damaged") and now - verified <= window:
            fresh += 1
        base = last_good(entry)
        if base is not None:
            age = max(0.0, (now - base).total_seconds())
            oldest = age if oldest is None else max(oldest, age)
    return fresh, None if oldest is None else round(oldest, 3)
