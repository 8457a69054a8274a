"""The `append` merge (sync_merge.merge_additions): what it keeps, byte for byte, and
that it stays fast on large, repetitive files."""

import time
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom.sync.merge import merge_additions


def lines_of(data):
    """Lines as the merge sees them: split at b"\\n" only, without it."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


# --- a base without a newline at its end --------------------------------------------------


@pytest.mark.parametrize("base,ours,theirs,want", [
    (b"a", b"a\nb\n", b"a\nc\n", b"a\nb\nc\n"),
    (b"a", b"a\nb", b"a\nc", b"a\nb\nc"),  # no side has one either: none
    (b"a", b"a\nb", b"a\nc\n", b"a\nb\nc\n"),  # one side has it: the result has it
    (b"x\na", b"x\na\nb\n", b"y\nx\na", b"y\nx\na\nb\n"),
    (b"a\r", b"a\r\nb\r\n", b"a\r\nc\r\n", b"a\r\nb\r\nc\r\n"),
])
def test_a_last_line_without_newline_is_not_written_twice(base, ours, theirs, want):
    assert merge_additions(base, ours, theirs) == want


# --- bytes other than \n are part of their line -------------------------------------------


def test_lone_cr_and_other_line_breaks_python_knows_are_kept_byte_for_byte():
    base = b"title\rold mac line\n- a\x0bb\n"
    ours = base + b"ours\r\x0c\x1c\x1d\x1e\xc2\x85 end\n"
    theirs = base + b"theirs\rcr\n"
    assert merge_additions(base, ours, theirs) == (
        base + b"ours\r\x0c\x1c\x1d\x1e\xc2\x85 end\ntheirs\rcr\n")
    # the CR is in the line: a line that ends in one is not the same line without it
    assert merge_additions(b"a\n", b"a\nx\r\n", b"a\nx\n") == b"a\nx\r\nx\n"


def test_a_crlf_file_stays_crlf():
    base = b"# log\r\n- one\r\n"
    merged = merge_additions(base, base + b"- desk\r\n", base + b"- lap\r\n- lap 2\r\n")
    assert merged == b"# log\r\n- one\r\n- desk\r\n- lap\r\n- lap 2\r\n"
    assert merged.count(b"\n") == merged.count(b"\r\n")


# --- deletions and edits ------------------------------------------------------------------


@pytest.mark.parametrize("base,ours,theirs,want", [
    # ours deleted x and y and appended A; theirs appended B: x and y stay deleted
    (b"h\nx\ny\n", b"h\nA\n", b"h\nx\ny\nB\n", b"h\nA\nB\n"),
    (b"h\nx\ny\n", b"h\nx\ny\nB\n", b"h\nA\n", b"h\nB\nA\n"),  # the same, sides swapped
    # ours edited the task and added a line under it; theirs added one: the edit holds
    (b"h\n- todo: x\n", b"h\n- done: x\nmine\n", b"h\n- todo: x\ntheirs\n",
     b"h\n- done: x\nmine\ntheirs\n"),
    (b"h\n- todo: x\n", b"h\n- todo: x\nmine\n", b"h\n- done: x\ntheirs\n",
     b"h\nmine\n- done: x\ntheirs\n"),
    # both edited the same line differently: both edits, the old line in neither
    (b"a\nold\nz\n", b"a\nmine\nz\n", b"a\ntheirs\nz\n", b"a\nmine\ntheirs\nz\n"),
    # a base line both kept, inside a place both changed, is written once
    (b"h\nk\nx\n", b"h\nA\nk\n", b"h\nk\nx\nB\n", b"h\nA\nk\nB\n"),
    # a deletion only one side made elsewhere applies
    (b"a\nb\nc\nd\ne\n", b"a\nc\nd\ne\n", b"a\nb\nc\nd\ne\nf\n", b"a\nc\nd\ne\nf\n"),
    # both deleted the same line: gone
    (b"a\nb\nc\n", b"a\nc\nX\n", b"a\nc\nY\n", b"a\nc\nX\nY\n"),
])
def test_what_either_side_deleted_or_edited_does_not_come_back(base, ours, theirs, want):
    assert merge_additions(base, ours, theirs) == want


@pytest.mark.parametrize("base,ours,theirs,want", [
    (b"", b"x\n", b"x\n", b"x\nx\n"),  # each side added it once: twice
    (b"x\n", b"x\nx\n", b"x\nx\n", b"x\nx\nx\n"),  # added next to a copy: still added
    (b"a\nb\n", b"a\nb\n", b"a\nb\nb\n", b"a\nb\nb\n"),  # one side only: that side
    (b"a\nb\n", b"a\nb", b"a\nb\n", b"a\nb"),  # even if the change is the last newline
    (b"a\n", b"a\n", b"a\n", b"a\n"),
    (b"a\nb\n", b"", b"a\nb\nc\n", b"c\n"),  # ours emptied it, theirs appended
    (b"x\ny", b"y", b"\nx", b"\n"),  # all that is left is an added empty line: with its \n
])
def test_every_added_line_is_kept_as_often_as_added(base, ours, theirs, want):
    assert merge_additions(base, ours, theirs) == want


# --- large, repetitive files --------------------------------------------------------------


def shapes(n):
    base = b"- done\n" * n
    half, third = b"- done\n" * (n // 2), b"- done\n" * (n // 3)
    return base, {
        "append": (base + b"a\n", base + b"b\nc\n", base + b"a\nb\nc\n"),
        "top": (b"x\n" + base, b"y\nz\n" + base, b"x\ny\nz\n" + base),
        "top and end": (b"x\n" + base + b"a\n", b"y\n" + base + b"b\n",
                        b"x\ny\n" + base + b"a\nb\n"),
        "inside": (half + b"m\n" + half + b"a\n", b"y\n" + third + b"n\n" + base[len(third):],
                   b"y\n" + third + b"n\n" + half[len(third):] + b"m\n" + half + b"a\n"),
    }


@pytest.mark.parametrize("n", [20_000, 100_000])
@pytest.mark.parametrize("shape", ["append", "top", "top and end", "inside"])
def test_large_repetitive_files_merge_in_linear_time(n, shape):
    base, cases = shapes(n)
    ours, theirs, want = cases[shape]
    started = time.monotonic()
    merged = merge_additions(base, ours, theirs)
    elapsed = time.monotonic() - started
    assert merged == want
    assert elapsed < 5, f"{elapsed:.1f} s"  # a guard: these take well under a second


def test_a_large_file_both_sides_rewrote_throughout_stays_bounded():
    # Far past what a minimal diff does cheaply: the bounded fallback still keeps every
    # added line and finishes quickly.
    n = 50_000
    base = [b"- done" if i % 3 else b"entry %d" % i for i in range(n)]
    ours = [line + b" (desk)" if i % 7 == 0 else line for i, line in enumerate(base)]
    theirs = [b"lap %d" % i if i % 5 == 0 else line for i, line in enumerate(base)][::-1]
    data = [b"\n".join(x) + b"\n" for x in (base, ours, theirs)]
    started = time.monotonic()
    merged = merge_additions(*data)
    assert time.monotonic() - started < 10
    got, b_, o, t = (Counter(lines_of(x)) for x in (merged, *data))
    assert not (o - b_) + (t - b_) - got
    assert not got - (o + t)


# --- properties ---------------------------------------------------------------------------

ALPHABET = [b"", b"- done", b"- a", b"## 2026-12-01", b"x\r", b"\r", b"a\rb", b"\x0b\x0c",
            b"\xc2\x85", b"\x1c"]


@st.composite
def edited(draw, base, tag, deletions):
    """`base` with lines inserted at random places (from ALPHABET, or markers unique to
    this side: tag + a number) and, if `deletions`, some of its lines deleted."""
    out, n = [], 0
    for i in range(len(base) + 1):
        for line in draw(st.lists(st.one_of(st.sampled_from(ALPHABET), st.just(None)),
                                  max_size=3)):
            if line is None:
                line, n = tag + b"%d" % n, n + 1
            out.append(line)
        if i < len(base) and not (deletions and draw(st.booleans())):
            out.append(base[i])
    return out


def text(lines, newline):
    """The file holding `lines`: an empty last line is there only with its newline."""
    newline = newline or bool(lines) and lines[-1] == b""
    return b"\n".join(lines) + (b"\n" if newline and lines else b"")


@st.composite
def three(draw, base_lines, deletions):
    base = draw(base_lines)
    sides = [draw(st.one_of(st.just(base), edited(base, tag, deletions)))
             for tag in (b"ours-", b"theirs-")]
    nl = draw(st.tuples(st.booleans(), st.booleans(), st.booleans()))
    return text(base, nl[0]), text(sides[0], nl[1]), text(sides[1], nl[2])


def markers(lines, tag):
    return [line for line in lines if line.startswith(tag)]


def check_common(base, ours, theirs, merged):
    b, o, t, m = (lines_of(x) for x in (base, ours, theirs, merged))
    cb, co, ct, cm = Counter(b), Counter(o), Counter(t), Counter(m)
    # every line either side added is there, as often as that side added it ...
    assert not ((co - cb) + (ct - cb)) - cm
    # ... and nothing is there that is not a line of one side, byte for byte
    assert not cm - (co + ct)
    # each side's own lines (its markers) in its order, each once
    for side, tag in ((o, b"ours-"), (t, b"theirs-")):
        assert markers(m, tag) == markers(side, tag)
    # one side unchanged: the other side as it is; none changed: the base
    if ours == base:
        assert merged == theirs
    if theirs == base:
        assert merged == ours
    # the newline at the end: kept if both sides have it, not added if neither has (but
    # for an empty last line, which is only there with it)
    if m:
        if ours.endswith(b"\n") and theirs.endswith(b"\n"):
            assert merged.endswith(b"\n")
        if not ours.endswith(b"\n") and not theirs.endswith(b"\n"):
            assert merged.endswith(b"\n") == (m[-1] == b"")
    return cb, co, ct, cm


@settings(max_examples=200, deadline=None, derandomize=True)
@given(three(st.lists(st.sampled_from(ALPHABET), max_size=12), deletions=True))
def test_property_repetitive_text_with_insertions_and_deletions(texts):
    base, ours, theirs = texts
    check_common(base, ours, theirs, merge_additions(base, ours, theirs))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(three(st.lists(st.sampled_from(ALPHABET), max_size=12), deletions=False))
def test_property_insertions_only_keep_the_base_once_and_every_addition(texts):
    base, ours, theirs = texts
    cb, co, ct, cm = check_common(base, ours, theirs, merge_additions(base, ours, theirs))
    # nothing was deleted: the result is the base once plus what each side added
    assert cm == cb + (co - cb) + (ct - cb)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(three(st.integers(0, 12).map(lambda n: [b"base %d" % i for i in range(n)]),
             deletions=True))
def test_property_base_lines_are_kept_only_where_both_sides_kept_them(texts):
    base, ours, theirs = texts
    merged = merge_additions(base, ours, theirs)
    check_common(base, ours, theirs, merged)
    b, o, t, m = (lines_of(x) for x in (base, ours, theirs, merged))
    kept = set(o) & set(t)
    # base lines are unique here: each one both sides kept is there once, in base order,
    # and one that either side deleted is not there at all
    assert [line for line in m if line.startswith(b"base ")] == [x for x in b if x in kept]
    # our lines keep their places among the base lines both kept
    ours_view = set(markers(o, b"ours-")) | (set(b) & kept)
    assert [x for x in m if x in ours_view] == [x for x in o if x in ours_view]
