"""Hashing in batches, the streamed manifest file and the stat walk of verify --fast."""

import errno
import hashlib
import json
import os
import random
from pathlib import Path

import pytest

from strongroom import manifest
from strongroom.core import fsutil
from strongroom.core.errors import StrongroomError


def files(root, n, size=300):
    for i in range(n):
        p = root / f"d{i // 10}" / f"f{i:04d}"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(bytes([i % 251]) * (size + i))
    return root


def sha(data):
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("size", [0, 1, fsutil.ONE_READ - 1, fsutil.ONE_READ,
                                  fsutil.ONE_READ + 1, 3 * fsutil.CHUNK + 7])
def test_sha256_stat_matches_hashlib_on_both_sides_of_the_one_read_size(tmp_path, size):
    p = tmp_path / "f"
    data = random.Random(size).randbytes(size)  # noqa: S311 -- test data, not a secret
    p.write_bytes(data)
    digest, st, st2 = fsutil.sha256_stat(p)
    assert digest == sha(data) == fsutil.sha256_file(p)
    assert st.st_size == st2.st_size == size


def test_sha256_stat_refuses_a_symlink_and_a_fifo_without_blocking(tmp_path):
    (tmp_path / "real").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(OSError) as exc:
        fsutil.sha256_stat(tmp_path / "link")
    assert exc.value.errno == errno.ELOOP
    with pytest.raises(OSError, match="not a regular file") as exc:
        fsutil.sha256_stat(tmp_path / "fifo")
    assert exc.value.errno == errno.EINVAL


@pytest.mark.parametrize("n,jobs", [(0, 2), (1, 2), (15, 1), (17, 2), (5000, 2), (333, 7)])
def test_batches_cover_every_file_once_in_order(n, jobs):
    rels = [f"r{i}" for i in range(n)]
    batches = manifest._batches(rels, jobs)
    assert [r for b in batches for r in b] == rels
    assert all(batches)  # no empty batch is handed to a worker


@pytest.mark.parametrize("n", [0, 1, 16, 17, 1000])
def test_iter_hashed_keeps_the_order_and_the_hashes_of_every_batch(tmp_path, n):
    root = files(tmp_path / "t", n)
    rels = manifest.walk(root, manifest.Selection())
    got = list(manifest.iter_hashed(root, rels, jobs=2))
    assert [r for r, _, _ in got] == rels
    for rel, e, err in got:
        assert err is None
        assert e["sha256"] == sha((root / rel).read_bytes())
        assert e["size"] == (root / rel).stat().st_size


def test_a_file_that_vanished_or_changed_kind_costs_only_itself(tmp_path):
    root = files(tmp_path / "t", 40)
    rels = manifest.walk(root, manifest.Selection())
    (root / rels[3]).unlink()  # walked, then gone before its batch ran
    (root / rels[5]).unlink()
    (root / rels[5]).symlink_to(root / rels[6])  # replaced by a symlink
    (root / rels[7]).unlink()
    os.mkfifo(root / rels[7])  # replaced by a FIFO: refused, not read (it would block)
    entries, errors = manifest.hash_files(root, rels, jobs=2)
    assert errors == {rels[3]: "No such file or directory",
                      rels[5]: "Too many levels of symbolic links",
                      rels[7]: "not a regular file"}
    assert sorted(entries) == sorted(set(rels) - set(errors))


def test_build_names_every_file_it_could_not_hash(tmp_path, monkeypatch):
    root = files(tmp_path / "t", 3)
    walked = manifest.walk(root, manifest.Selection()) + ["gone/file"]
    monkeypatch.setattr(manifest, "walk", lambda *a, **k: walked)
    with pytest.raises(StrongroomError, match=r"cannot hash: gone/file: No such file"):
        manifest.build(root, manifest.Selection())


def test_build_of_an_empty_tree_and_a_symlink_is_left_out(tmp_path):
    root = tmp_path / "t"
    root.mkdir()
    data = manifest.build(root, manifest.Selection())
    assert data["checksums"] == {} and data["metadata"]["files"] == 0
    (root / "a").write_bytes(b"a")
    (root / "l").symlink_to(root / "a")
    data = manifest.build(root, manifest.Selection())
    assert list(data["checksums"]) == ["a"]


def test_build_reuse_keeps_old_entries_and_the_sorted_order(tmp_path):
    root = files(tmp_path / "t", 30)
    old = manifest.build(root, manifest.Selection())["checksums"]
    rels = sorted(old)
    (root / rels[10]).write_bytes(b"changed")
    old[rels[0]] = dict(old[rels[0]], note="kept as recorded")
    new = manifest.build(root, manifest.Selection(), reuse=old)["checksums"]
    assert list(new) == rels
    assert new[rels[0]]["note"] == "kept as recorded"
    assert new[rels[10]]["sha256"] == sha(b"changed")
    assert all(new[r] == old[r] for r in rels if r != rels[10])


def test_the_fast_time_format_is_iso_z_to_the_microsecond():
    rng = random.Random(7)  # noqa: S311 -- test data, not a secret
    stamps = [0.0, 0.5, 1.0, -1.5, 1e9 + 0.9999995, 1e9 + 0.0000005, 1764815595.9999999,
              253402300799.0, 86399.9999996]
    stamps += [rng.uniform(-1e9, 4e9) for _ in range(20000)]
    stamps += [rng.randrange(0, 4 * 10**18) / 1e9 for _ in range(20000)]
    for ts in stamps:
        assert manifest._iso_z_fast(ts) == manifest.iso_z(ts), ts


@pytest.mark.parametrize("checksums", [
    {},
    {"a": {"sha256": "0" * 64, "size": 1, "modified": "m", "mtime_ns": 2, "inode": 3}},
    {"é/ü \\ \"q\"\n\t": {"sha256": "1" * 64, "size": 0, "modified": "x", "mtime_ns": -1,
                          "inode": 0},
     "bad-\udcff-name": {"sha256": "2" * 64, "size": 5},
     "extra": {"sha256": "3" * 64, "size": True, "modified": "m", "mtime_ns": 1.5,
               "inode": None, "more": [1, {"x": []}]},
     "order": {"size": 1, "sha256": "4" * 64, "modified": "m", "mtime_ns": 2, "inode": 3}},
])
def test_the_streamed_file_is_json_dumps_byte_for_byte(tmp_path, checksums):
    data = {"version": "2.0", "timestamp": "t", "hostname": "h",
            "metadata": {"phase": "p", "include": [], "exclude": ["x/"], "files": 1,
                         "nested": {"a": {}}},
            "checksums": checksums}
    out = tmp_path / "m.json"
    manifest.write(out, data)
    assert out.read_bytes() == (json.dumps(data, indent=2) + "\n").encode()
    assert json.loads(out.read_text()) == data


def test_the_streamed_file_of_a_real_tree_and_its_prev(tmp_path):
    root = files(tmp_path / "t", 5000)
    data = manifest.build(root, manifest.Selection())
    out = tmp_path / "m.json"
    manifest.write(out, data)
    first = out.read_bytes()
    assert first == (json.dumps(data, indent=2) + "\n").encode()
    manifest.write(out, {"version": "2.0", "checksums": {}})
    assert Path(str(out) + ".prev").read_bytes() == first
    assert manifest.load(out)["checksums"] == {}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_verify_fast_by_stat_hashes_only_what_changed(tmp_path):
    root = files(tmp_path / "t", 200)
    data = manifest.build(root, manifest.Selection(exclude=["d1*/"]))
    rels = sorted(data["checksums"])
    v = manifest.verify(root, data, fast=True)
    assert v.passed and v.hashed == 0 and v.trusted_by_stat == len(rels) == len(v.ok)
    st = os.stat(root / rels[0])
    os.utime(root / rels[0], ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # same bytes
    (root / rels[1]).write_bytes(b"other")
    (root / rels[2]).unlink()
    (root / rels[3]).unlink()
    (root / rels[3]).symlink_to(root / rels[4])
    (root / "d0" / "new").write_bytes(b"n")
    (root / "d10" / "excluded-new").write_bytes(b"n")
    v = manifest.verify(root, data, fast=True)
    assert v.hashed == 2 and v.trusted_by_stat == len(rels) - 4
    assert v.mismatched == [rels[1]] and v.missing == sorted([rels[2], rels[3]])
    assert v.new == ["d0/new"] and rels[0] in v.ok and v.ok == sorted(v.ok)
    deep = manifest.verify(root, data)
    assert deep.hashed == len(rels) - 2 and deep.mismatched == [rels[1]]
    assert deep.missing == v.missing and deep.trusted_by_stat == 0


def test_verify_fast_still_checks_a_listed_file_the_selection_now_leaves_out(tmp_path):
    root = files(tmp_path / "t", 30)
    data = manifest.build(root, manifest.Selection())
    data["metadata"]["exclude"] = ["d1/"]  # d1/ is listed but no longer walked
    listed = sorted(r for r in data["checksums"] if r.startswith("d1/"))
    (root / listed[0]).write_bytes(b"changed")
    v = manifest.verify(root, data, fast=True)
    assert v.mismatched == [listed[0]] and v.hashed == 1
    assert set(listed[1:]) <= set(v.ok) and not v.missing


@pytest.mark.parametrize("piece", [1, 7, 64, 1 << 20])
@pytest.mark.parametrize("indent", [None, 2, "\t"])
def test_load_in_pieces_reads_what_json_reads(tmp_path, monkeypatch, piece, indent):
    monkeypatch.setattr(manifest, "_PIECE", piece)
    root = files(tmp_path / "t", 30)
    data = manifest.build(root, manifest.Selection())
    data["checksums"]["é \\ \"odd\"\n"] = {"sha256": "5" * 64, "size": 12345678901234567890}
    data["checksums"]["x"] = {"sha256": "6" * 64, "size": 1, "extra": [1.5, None, {"a": 1}]}
    data["after"] = {"checksums": "not this one"}
    out = tmp_path / "m.json"
    out.write_text(json.dumps(data, indent=indent, ensure_ascii=False), encoding="utf-8")
    got = manifest.load(out)
    assert got == data and list(got["checksums"]) == list(data["checksums"])


@pytest.mark.parametrize("text,said", [
    ('{"checksums": {"a": {"sha256": "' + "0" * 64 + '", "size": 1}} extra', "not valid JSON"),
    ('{"checksums": {"a": {"sha256": "' + "0" * 64 + '", "size": 1},}}', "not valid JSON"),
    ('{"checksums": {"a" {}}}', "not valid JSON"),
    ('{"checksums": {"a": 1', "not valid JSON"),
    ('\ufeff{"checksums": {}}', "not valid JSON"),
    ('{"checksums": {}, "checksums": []}', "has no 'checksums' mapping"),
    ('[1, 2]', "has no 'checksums' mapping"),
])
def test_load_in_pieces_refuses_what_json_refuses_in_its_words(tmp_path, monkeypatch, text,
                                                               said):
    monkeypatch.setattr(manifest, "_PIECE", 5)
    out = tmp_path / "m.json"
    out.write_text(text, encoding="utf-8")
    with pytest.raises(manifest.ManifestError, match=said):
        manifest.load(out)
