"""Sizes as people write them: 50M, 2G, 1048576."""

from .errors import StrongroomError

UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text):
    """50M, 2G, 1.5g, 1048576 -> bytes."""
    t = str(text).strip().lower().removesuffix("b").removesuffix("i")
    try:
        return int(float(t[:-1]) * UNITS[t[-1]]) if t and t[-1] in UNITS else int(t)
    except (ValueError, IndexError):
        raise StrongroomError(f"not a size: {text!r} (say 50M, 2G or a byte count)") from None
