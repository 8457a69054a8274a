"""The stat index beside a manifest (MANIFEST.stat): verify --fast from it gives exactly the
verdict the manifest gives, over random changes to the tree; a stale, damaged or hostile
index is ignored (the manifest decides), never trusted."""

import json
import os
import shutil

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strongroom import manifest
from strongroom.manifest import statindex
from tests.helpers import strongroom

NAMES = [f"d{i % 3}/f{i}.txt" for i in range(12)] + ["top.bin", "a b/ü.md"]
ACTIONS = st.lists(st.tuples(st.sampled_from(["edit", "same-size", "touch", "delete", "add",
                                              "to-dir", "to-link", "chmod"]),
                             st.sampled_from(NAMES)), max_size=8)


def tree(root):
    for i, rel in enumerate(NAMES):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(f"content {i}\n".encode() * (i + 1))


def create(root, man):
    strongroom("manifest", "create", root, "--out", man, check=0)


def verdict(v):
    return {k: v.as_dict()[k] for k in ("passed", "ok", "mismatched", "missing", "new",
                                        "unreadable")}


def apply(root, actions):
    for what, rel in actions:
        p = root / rel
        if what == "add":
            (root / (rel + ".new")).write_text("new\n")
        elif not p.is_file() or p.is_symlink():
            continue
        elif what == "edit":
            p.write_bytes(p.read_bytes() + b"more\n")
        elif what == "same-size":  # the same size and mtime: only a hash sees it
            st_ = p.stat()
            data = bytearray(p.read_bytes())
            data[0] ^= 0x01
            p.write_bytes(bytes(data))
            os.utime(p, ns=(st_.st_atime_ns, st_.st_mtime_ns))
        elif what == "touch":
            os.utime(p, ns=(1, 1_000_000_000))
        elif what == "delete":
            p.unlink()
        elif what == "to-dir":
            p.unlink()
            p.mkdir()
        elif what == "to-link":
            p.unlink()
            p.symlink_to("/etc/hostname")
        elif what == "chmod":
            p.chmod(0o600)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=ACTIONS)
def test_the_index_gives_the_manifests_verdict_whatever_the_tree_went_through(tmp_path,
                                                                              actions):
    work = tmp_path / "w"
    shutil.rmtree(work, ignore_errors=True)
    root, man = work / "tree", work / "MANIFEST.json"
    root.mkdir(parents=True)
    tree(root)
    create(root, man)
    apply(root, actions)
    indexed = manifest.verify_indexed(root, man, skip=manifest.own_files(man))
    assert indexed is not None
    plain = manifest.verify(root, manifest.load(man), fast=True, skip=manifest.own_files(man))
    assert verdict(indexed) == verdict(plain)
    assert indexed.hashed == plain.hashed and indexed.trusted_by_stat == plain.trusted_by_stat


def test_verify_fast_uses_the_index_and_says_the_same(tmp_path):
    root, man = tmp_path / "tree", tmp_path / "tree" / "MANIFEST.json"  # inside the tree
    root.mkdir()
    tree(root)
    create(root, man)
    assert statindex.path_for(man).exists()
    (root / "d0/f0.txt").write_text("changed\n")
    proc = strongroom("manifest", "verify", root, "--manifest", man, "--fast", "--json",
                      check=2)
    out = json.loads(proc.stdout)
    assert out["mismatched"] == ["d0/f0.txt"] and out["new"] == []  # its own files: not new
    assert out["ok"] == len(NAMES) - 1 and out["hashed"] == 1


def test_a_stale_index_is_ignored_and_the_manifest_decides(tmp_path):
    root, man = tmp_path / "tree", tmp_path / "MANIFEST.json"
    root.mkdir()
    tree(root)
    create(root, man)
    stale = statindex.path_for(man).read_bytes()
    (root / "top.bin").write_text("a new version, recorded\n")
    strongroom("manifest", "update", root, "--manifest", man, check=0)
    statindex.path_for(man).write_bytes(stale)  # as a restore of the old index would
    assert manifest.verify_indexed(root, man) is None
    proc = strongroom("manifest", "verify", root, "--manifest", man, "--fast", check=0)
    assert "OK: 14 files" in proc.stdout


def test_a_damaged_or_hostile_index_is_never_trusted(tmp_path):
    root, man = tmp_path / "tree", tmp_path / "MANIFEST.json"
    root.mkdir()
    tree(root)
    create(root, man)
    idx = statindex.path_for(man)
    good = idx.read_bytes()
    (root / "d1/f1.txt").write_text("damage\n")
    head_end = good.index(b"\n", len(statindex.MAGIC)) + 1
    header = json.loads(good[len(statindex.MAGIC):head_end])
    forged = dict(header, count=header["count"] + 1)
    for bad in (good[:-7],  # truncated names
                good[:head_end + 40],  # truncated arrays
                b"junk" + good,
                statindex.MAGIC + json.dumps(forged).encode() + b"\n" + good[head_end:],
                good.replace(b"d0/f0.txt", b"../etc/pw"),
                good.replace(b"top.bin", b"/etc/pwd")):
        idx.write_bytes(bad)
        assert manifest.verify_indexed(root, man) is None, bad[:60]
        proc = strongroom("manifest", "verify", root, "--manifest", man, "--fast", check=2)
        assert "MISMATCH  d1/f1.txt" in proc.stdout  # the manifest decided, as before
    idx.write_bytes(good)
    assert manifest.verify_indexed(root, man).mismatched == ["d1/f1.txt"]


def test_an_unwritable_index_leaves_the_manifest_whole(tmp_path):
    root, man = tmp_path / "tree", tmp_path / "MANIFEST.json"
    root.mkdir()
    tree(root)
    statindex.path_for(man).mkdir()  # where the index goes, something it cannot replace
    proc = strongroom("manifest", "create", root, "--out", man, check=0)
    assert "stat index not written" in proc.stderr
    assert len(manifest.load(man)["checksums"]) == len(NAMES)
    assert "OK: 14 files" in strongroom("manifest", "verify", root, "--manifest", man,
                                        "--fast", check=0).stdout
