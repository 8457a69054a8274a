"""Shared by the benchmarks: best-of-N timing of a prepared command."""

import time


def best(fn, rounds):
    """fn() prepares a round (untimed) and returns the callable that is timed."""
    times = []
    for _ in range(rounds):
        prep = fn()
        t0 = time.perf_counter()
        prep()
        times.append(time.perf_counter() - t0)
    return min(times)
