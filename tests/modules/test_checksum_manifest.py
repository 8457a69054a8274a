"""library/checksum_manifest.py through main(): changed, check mode, diff, failures."""

import hashlib
import json

import checksum_manifest

from tests.manifest.test_manifest import tree
from tests.modules import harness


def ok(args, **kw):
    return harness.ok(checksum_manifest.main, args, **kw)


def failed(args, **kw):
    return harness.failed(checksum_manifest.main, args, **kw)


def test_present_is_honest_about_changed_and_check_mode_writes_nothing(tmp_path):
    root = tree(tmp_path / "t")
    path = tmp_path / "m.json"
    args = {"root": str(root), "path": str(path), "exclude": ["node_modules/"]}
    res = ok(args, check_mode=True)
    assert res["changed"] is True and not path.exists()
    res = ok(args)
    assert res["changed"] is True and res["files"] == 6 and path.exists()
    before = path.read_text()
    res = ok(args)  # a new timestamp alone is no change
    assert res["changed"] is False and path.read_text() == before
    (root / "notes/a.md").write_text("edited\n")
    (root / "notes/new.md").write_text("new\n")
    res = ok(args, check_mode=True, diff=True)
    assert res["changed"] is True and res["changed_paths"] == ["notes/a.md"]
    assert res["added"] == ["notes/new.md"] and "notes/new.md\n" in res["diff"]["after"]
    assert path.read_text() == before  # check mode
    ok(dict(args, mode="fast"))
    assert "notes/new.md" in json.loads(path.read_text())["checksums"]


def test_verified_fails_naming_each_file_and_never_passes_a_bad_manifest(tmp_path):
    root = tree(tmp_path / "t")
    path = tmp_path / "m.json"
    ok({"root": str(root), "path": str(path)})
    res = ok({"root": str(root), "path": str(path), "state": "verified"})
    assert res["changed"] is False and res["verdict"]["passed"] is True
    (root / "notes/a.md").write_text("edited\n")
    (root / "data/state/s.json").unlink()
    res = failed({"root": str(root), "path": str(path), "state": "verified"})
    assert res["msg"].endswith("hash differs: notes/a.md; missing: data/state/s.json")
    path.write_text("{broken")
    res = failed({"root": str(root), "path": str(path), "state": "verified"})
    assert "is not valid JSON" in res["msg"]
    res = failed({"root": str(root), "path": str(path)})  # present never overwrites it
    assert "is not valid JSON" in res["msg"] and path.read_text() == "{broken"


def sha(text):
    return hashlib.sha256(text.encode()).hexdigest()


def test_diff_names_each_changed_added_and_removed_file_with_its_hashes(tmp_path):
    root = tree(tmp_path / "t")
    path = tmp_path / "m.json"
    args = {"root": str(root), "path": str(path)}
    ok(args)
    recorded = json.loads(path.read_text())["checksums"]["notes/a.md"]["sha256"]
    assert recorded == sha("# a\n")
    # the same path with other bytes: the diff shows the old hash, then the new one
    (root / "notes/a.md").write_text("edited\n")
    before = harness.tree_state(tmp_path)
    res = ok(args, check_mode=True, diff=True)
    assert harness.tree_state(tmp_path) == before  # check mode writes nothing
    assert res["changed"] is True and res["changed_paths"] == ["notes/a.md"]
    assert res["diff"]["before"] == f"{recorded}  notes/a.md\n"
    assert res["diff"]["after"] == f"{sha('edited' + chr(10))}  notes/a.md\n"
    assert res["diff"]["before_header"] == f"{path} (recorded)"
    res = ok(args, diff=True)
    assert res["diff"]["after"] == f"{sha('edited' + chr(10))}  notes/a.md\n"
    # removed and added files: each on its side, with its hash
    (root / "notes/a.md").unlink()
    (root / "notes/b.md").write_text("b\n")
    res = ok(args, diff=True)
    assert res["removed"] == ["notes/a.md"] and res["added"] == ["notes/b.md"]
    assert res["diff"]["before"] == f"{sha('edited' + chr(10))}  notes/a.md\n"
    assert res["diff"]["after"] == f"{sha('b' + chr(10))}  notes/b.md\n"
    # nothing changed: nothing to show
    res = ok(args, diff=True)
    assert res["changed"] is False and res["diff"]["before"] == res["diff"]["after"] == ""
    # new patterns are a change, and the diff says which
    res = ok(dict(args, exclude=["build/"]), check_mode=True, diff=True)
    assert res["changed"] is True and res["removed"] == ["build/out.bin"]
    assert res["diff"]["before"].startswith("# include: (every file)\n# exclude: (none)\n")
    assert res["diff"]["after"] == "# include: (every file)\n# exclude: build/\n"
