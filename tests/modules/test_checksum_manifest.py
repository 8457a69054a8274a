"""library/checksum_manifest.py through main(): changed, check mode, diff, failures."""

import json

import checksum_manifest

from tests.modules import harness
from tests.unit.test_manifest import tree


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
