"""The `append` conflict policy: a three-way merge that keeps every line either side added.

Notes, logs and journals grow at the end or under a heading. When both machines wrote
to the same file since they last met, each side's changes are found against the merge
base, line by line. Changes in different places apply as in any merge. Where both sides
changed the same place (typically: both appended at the end, or under the same date
heading), the result holds this side's lines and then the other side's, each block kept
together, every added line kept as often as it was added (a second `- weekly report
sent` is a line of its own, not a duplicate), and a base line that both sides kept kept
once. Nothing either side added is ever dropped.
"""

import difflib


def _lines(data):
    return data.splitlines(keepends=True)


def _hunks(base, side):
    """Where `side` differs from `base`: [(i1, i2, new lines)], base[i1:i2] replaced."""
    sm = difflib.SequenceMatcher(None, base, side, autojunk=False)
    return [(i1, i2, side[j1:j2]) for tag, i1, i2, j1, j2 in sm.get_opcodes()
            if tag != "equal"]


def _version(base, start, end, hunks):
    """A side's text of base[start:end] with its hunks applied, each line tagged with the
    base index it came from (None for a line this side added)."""
    out, pos = [], start
    for i1, i2, new in hunks:
        out += [(base[k], k) for k in range(pos, i1)]
        out += [(line, None) for line in new]
        pos = i2
    out += [(base[k], k) for k in range(pos, end)]
    return out


def _groups(ours, theirs):
    """Hunks of both sides, grouped where they touch or overlap, in base order:
    [(start, end, our hunks, their hunks)]."""
    tagged = sorted([(h[0], h[1], 0, h) for h in ours] + [(h[0], h[1], 1, h) for h in theirs],
                    key=lambda t: (t[0], t[1]))
    groups = []
    for i1, i2, who, hunk in tagged:
        if groups and i1 <= groups[-1][1]:
            g = groups[-1]
            g[1] = max(g[1], i2)
            g[2 + who].append(hunk)
        else:
            groups.append([i1, i2, [hunk] if who == 0 else [], [hunk] if who == 1 else []])
    return groups


def merge_additions(base_data, ours_data, theirs_data):
    """The merged bytes; see the module docstring."""
    base, ours, theirs = _lines(base_data), _lines(ours_data), _lines(theirs_data)
    out, pos = [], 0
    for start, end, mine, other in _groups(_hunks(base, ours), _hunks(base, theirs)):
        out += base[pos:start]
        if not other:
            out += [line for line, _ in _version(base, start, end, mine)]
        elif not mine:
            out += [line for line, _ in _version(base, start, end, other)]
        else:  # both sides changed this place: ours, then theirs, base lines once
            ours_v = _version(base, start, end, mine)
            kept = {k for _, k in ours_v if k is not None}
            out += [line for line, _ in ours_v]
            out += [line for line, k in _version(base, start, end, other)
                    if k is None or k not in kept]
        pos = end
    out += base[pos:]
    # a last line without its newline must not run into the lines placed after it
    return b"".join(line if i == len(out) - 1 or line.endswith(b"\n") else line + b"\n"
                    for i, line in enumerate(out))
