"""The `append` conflict policy: a three-way merge that keeps every line either side added.

Notes, logs and journals grow at the end or under a heading. When both machines wrote
to the same file since they last met, `merge_additions(base, ours, theirs)` does this:

- If one side is byte for byte the base, the result is the other side, as it is.
- Otherwise the three texts are split into lines at b"\\n" and nowhere else, and lines
  are compared by their bytes without that b"\\n": a CR (alone or before the b"\\n"), a
  form feed or any other byte stays in its line as it was, and a base whose last line has
  no newline matches a side that added lines after it.
- Each side's changes are found against the base: the lines all three share at the start
  and at the end are kept as they are (so appending at the end, or adding at the top, is
  linear however much the file repeats itself), and what lies between is diffed side by
  side with a minimal diff (Myers' algorithm) while that stays within a fixed amount of
  work. Past it, lines found once in both are paired first (the longest run of them in
  the same order) and the gaps between them diffed the same way; a gap still too costly,
  or with no such line, is paired by walking both and resynchronising on the nearest
  equal lines a few lines ahead. Every line of a side the diff does not pair with a base
  line is an added line, however many copies of it the file already holds.
- A place only one side changed takes that side's version: its additions, its edits and
  its deletions, as in any merge.
- Where both sides changed the same place (their changes overlap or touch: typically both
  appended at the end, or under the same date heading), the result holds our version of
  that place, keeping of the base lines only those both sides kept, and then every line
  their side added there, in their order. So each side's added block stays together,
  ours first; a line added on both sides is there twice (a second `- weekly report sent`
  is a line of its own, not a duplicate); a base line is there once at most, and not at
  all if either side deleted or edited it.
- The result ends with a newline if either side's text does, or if its last line is
  empty (without one it would not be there); an empty result is empty.

Nothing either side added is ever dropped, and a base line is written once at most. (A
diff past its budget is not minimal: a line it fails to pair counts as added, so if both
sides' diffs miss the same base line it is there twice. It takes a side with hundreds of
changes, typically, to get there.)
"""

import bisect

_SMALL = 64  # a diff of at most this many lines in all is run to the end, whatever it costs
_BUDGET = 1_000_000  # steps the minimal diff may take for one side before it is given up
_ANCHOR_DEPTH = 4  # how many times unique-line matching is applied within its own gaps
_WINDOW = 8  # how far past a difference the last-resort diff looks for lines that agree


class _Budget:
    def __init__(self, steps):
        self.left = steps


def _split(data):
    """The lines of `data` without their b"\\n", and whether the last one had it."""
    if not data:
        return [], False
    lines = data.split(b"\n")  # not splitlines(): it also splits at CR, FF, \x85, ...
    if lines[-1] == b"":
        lines.pop()
        return lines, True
    return lines, False


def _myers(a, b, budget):
    """Blocks (i, j, size) of a longest common subsequence of a and b (Myers' O(ND)
    greedy algorithm), or None once it has cost more than the budget holds."""
    n, m = len(a), len(b)
    bounded = n + m > _SMALL
    off = n + m + 1
    v = [0] * (2 * off + 1)
    trace = []
    steps = 0
    for d in range(n + m + 1):
        trace.append(v[off - d - 1:off + d + 2])  # v as it was before round d, k -> k+d+1
        for k in range(-d, d + 1, 2):
            if k == -d or (k != d and v[off + k - 1] < v[off + k + 1]):
                x = v[off + k + 1]
            else:
                x = v[off + k - 1] + 1
            y = x - k
            x0 = x
            while x < n and y < m and a[x] == b[y]:
                x += 1
                y += 1
            steps += x - x0
            v[off + k] = x
            if x >= n and y >= m:
                budget.left -= steps
                return _backtrack(trace, n, m)
        steps += 3 * d + 1
        if bounded and steps > budget.left:
            budget.left = 0
            return None
    raise AssertionError("unreachable: n + m edits always suffice")


def _backtrack(trace, x, y):
    blocks = []
    for d in range(len(trace) - 1, -1, -1):
        v = trace[d]
        k = x - y
        down = k == -d or (k != d and v[k + d] < v[k + d + 2])
        pk = k + 1 if down else k - 1
        px = v[pk + d + 1]
        py = px - pk
        sx = px if down else px + 1  # where the snake of this round starts
        if x > sx:
            blocks.append((sx, sx - k, x - sx))
        x, y = px, py
    blocks.reverse()
    return blocks


def _anchors(a, alo, ahi, b, blo, bhi):
    """Pairs (i, j) of lines found once in a[alo:ahi] and once in b[blo:bhi]: the
    longest chain of them in the same order in both (patience sorting)."""
    seen_a, seen_b = {}, {}
    for i in range(alo, ahi):
        seen_a[a[i]] = -1 if a[i] in seen_a else i
    for j in range(blo, bhi):
        seen_b[b[j]] = -1 if b[j] in seen_b else j
    pairs = [(i, seen_b.get(line, -1)) for line, i in seen_a.items() if i >= 0]
    pairs = sorted(p for p in pairs if p[1] >= 0)
    tops, top_js, back = [], [], []  # piles by their top's j; back: the pile to the left
    for n, (_, j) in enumerate(pairs):
        pile = bisect.bisect_left(top_js, j)
        back.append(tops[pile - 1] if pile else -1)
        if pile == len(tops):
            tops.append(n)
            top_js.append(j)
        else:
            tops[pile] = n
            top_js[pile] = j
    chain, n = [], tops[-1] if tops else -1
    while n >= 0:
        chain.append(pairs[n])
        n = back[n]
    chain.reverse()
    return chain


def _diff(a, alo, ahi, b, blo, bhi, budget, depth, out):
    """Append to `out` the blocks (i, j, size) in which a[alo:ahi] and b[blo:bhi] agree."""
    p = 0
    while alo + p < ahi and blo + p < bhi and a[alo + p] == b[blo + p]:
        p += 1
    if p:
        out.append((alo, blo, p))
        alo, blo = alo + p, blo + p
    s = 0
    while alo < ahi - s and blo < bhi - s and a[ahi - 1 - s] == b[bhi - 1 - s]:
        s += 1
    ahi, bhi = ahi - s, bhi - s
    if alo < ahi and blo < bhi:
        blocks = _myers(a[alo:ahi], b[blo:bhi], budget)
        if blocks is not None:
            out.extend((alo + i, blo + j, size) for i, j, size in blocks)
        elif depth < _ANCHOR_DEPTH:
            # too costly to do exactly: lines that occur once on each side cut it into
            # smaller diffs, each bounded the same way, so the total work stays near-linear
            i0, j0 = alo, blo
            for i, j in _anchors(a, alo, ahi, b, blo, bhi):
                _diff(a, i0, i, b, j0, j, budget, depth + 1, out)
                out.append((i, j, 1))
                i0, j0 = i + 1, j + 1
            if (i0, j0) != (alo, blo):
                _diff(a, i0, ahi, b, j0, bhi, budget, depth + 1, out)
            else:
                _greedy(a, alo, ahi, b, blo, bhi, out)
        else:
            _greedy(a, alo, ahi, b, blo, bhi, out)
    if s:
        out.append((ahi, bhi, s))


def _greedy(a, alo, ahi, b, blo, bhi, out):
    """Append to `out` blocks in which a[alo:ahi] and b[blo:bhi] agree, found by walking
    both and, at a difference, taking the nearest line pair within a few lines that agrees
    (linear; not minimal, but it keeps a text that repeats itself, where no line is unique,
    from counting as replaced as a whole, which would write its lines twice)."""
    i, j = alo, blo
    while i < ahi and j < bhi:
        if a[i] == b[j]:
            i0 = i
            while i < ahi and j < bhi and a[i] == b[j]:
                i += 1
                j += 1
            out.append((i0, j - (i - i0), i - i0))
            continue
        for skip in range(1, 2 * _WINDOW - 1):
            pair = next(((i + k, j + skip - k) for k in range(max(0, skip - _WINDOW + 1),
                                                             min(skip, _WINDOW - 1) + 1)
                         if i + k < ahi and j + skip - k < bhi
                         and a[i + k] == b[j + skip - k]), None)
            if pair:
                i, j = pair
                break
        else:  # nothing agrees nearby: this stretch of both counts as replaced
            i, j = i + _WINDOW, j + _WINDOW


def _hunks(base, side_ids, side):
    """Where the side differs from the base: [(i1, i2, new lines)], base[i1:i2] replaced."""
    blocks = []
    _diff(base, 0, len(base), side_ids, 0, len(side_ids), _Budget(_BUDGET), 0, blocks)
    hunks, i, j = [], 0, 0
    for bi, bj, size in [*blocks, (len(base), len(side_ids), 0)]:
        if bi > i or bj > j:
            hunks.append((i, bi, side[j:bj]))
        i, j = bi + size, bj + size
    return hunks


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


def _merge(base, ours, theirs, ids):
    """The merged lines of base, ours and theirs (lists of lines)."""
    ids_of = [ids.setdefault(line, len(ids)) for line in base]
    hunks_ours = _hunks(ids_of, [ids.setdefault(line, len(ids)) for line in ours], ours)
    hunks_theirs = _hunks(ids_of, [ids.setdefault(line, len(ids)) for line in theirs], theirs)
    out, pos = [], 0
    for start, end, mine, other in _groups(hunks_ours, hunks_theirs):
        out += base[pos:start]
        if not other:
            out += [line for line, _ in _version(base, start, end, mine)]
        elif not mine:
            out += [line for line, _ in _version(base, start, end, other)]
        else:  # both sides changed this place
            ours_v = _version(base, start, end, mine)
            theirs_v = _version(base, start, end, other)
            # a base line one side deleted or edited must not come back from the other
            kept = ({k for _, k in ours_v if k is not None}
                    & {k for _, k in theirs_v if k is not None})
            out += [line for line, k in ours_v if k is None or k in kept]
            out += [line for line, k in theirs_v if k is None]
        pos = end
    out += base[pos:]
    return out


def merge_additions(base_data, ours_data, theirs_data):
    """The merged bytes; see the module docstring."""
    if ours_data == base_data:
        return theirs_data
    if theirs_data == base_data:
        return ours_data
    (base, _), (ours, ours_nl), (theirs, theirs_nl) = (
        _split(base_data), _split(ours_data), _split(theirs_data))
    # What all three share at the start and at the end is kept by both sides; taking it
    # off first makes the usual case (both appended at the end, or both at the top)
    # linear, whatever the file repeats.
    p = 0
    limit = min(len(base), len(ours), len(theirs))
    while p < limit and base[p] == ours[p] == theirs[p]:
        p += 1
    s = 0
    limit -= p
    while s < limit and base[-1 - s] == ours[-1 - s] == theirs[-1 - s]:
        s += 1
    middle = _merge(base[p:len(base) - s], ours[p:len(ours) - s], theirs[p:len(theirs) - s],
                    {})
    lines = base[:p] + middle + base[len(base) - s:]
    if not lines:
        return b""
    # an empty last line is only there with its newline
    newline = ours_nl or theirs_nl or lines[-1] == b""
    return b"\n".join(lines) + (b"\n" if newline else b"")
