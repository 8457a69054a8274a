"""strongroom manifest create | verify | update | export, on real trees and sha256sum."""

import json
import os
import subprocess

import pytest

from tests.helpers import strongroom


def tree(root):
    files = {"clients/acme/tasks.json": '{"t": 1}\n', "clients/beta/tasks.json": "[]\n",
             "data/state/s.json": "{}\n", "notes/a.md": "# a\n", "build/out.bin": "x" * 100,
             "node_modules/m/index.js": "js\n", "odd name\\with\nnewline": "odd\n",
             ".git/HEAD": "ref: refs/heads/main\n"}
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def create(root, out, *args, check=0):
    return strongroom("manifest", "create", root, "--out", out, *args, check=check)


def test_create_then_verify_and_export_pass_sha256sum_strict(tmp_path):
    root = tree(tmp_path / "t")
    out = root / ".sync-checksums.json"
    create(root, out, "--exclude", "node_modules/", "--phase", "pre-sync")
    data = json.loads(out.read_text())
    assert data["version"] == "2.0" and data["timestamp"].endswith("Z")
    assert data["metadata"]["phase"] == "pre-sync" and data["metadata"]["operation"] == "create"
    assert sorted(data["checksums"]) == ["build/out.bin", "clients/acme/tasks.json",
                                         "clients/beta/tasks.json", "data/state/s.json",
                                         "notes/a.md", "odd name\\with\nnewline"]
    e = data["checksums"]["build/out.bin"]
    assert e["size"] == 100 and e["modified"].endswith("Z") and len(e["sha256"]) == 64
    proc = strongroom("manifest", "verify", root, "--manifest", out, check=0)
    assert "OK: 6 files" in proc.stdout and "0 new" in proc.stdout
    sums = tmp_path / "SHA256SUMS"
    strongroom("manifest", "export", "--manifest", out, "--out", sums, check=0)
    check = subprocess.run(["sha256sum", "-c", "--strict", str(sums)], cwd=root,
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count(": OK") == 6


def test_mismatch_and_missing_exit_2_naming_each_new_files_do_not_fail(tmp_path):
    root = tree(tmp_path / "t")
    out = tmp_path / "m.json"
    create(root, out, "--include", "clients/*/tasks.json", "--include", "data/state/*.json")
    (root / "clients/acme/tasks.json").write_text('{"t": 2}\n')  # same size, new content
    (root / "data/state/s.json").unlink()
    (root / "clients/new/tasks.json").parent.mkdir()
    (root / "clients/new/tasks.json").write_text("[]\n")
    (root / "notes/a.md").write_text("not covered\n")
    proc = strongroom("manifest", "verify", root, "--manifest", out, check=2)
    assert "MISMATCH  clients/acme/tasks.json" in proc.stdout
    assert "MISSING   data/state/s.json" in proc.stdout
    assert "new       clients/new/tasks.json" in proc.stdout
    assert "notes/a.md" not in proc.stdout
    assert "FAILED: 3 files" in proc.stdout
    out_json = json.loads(strongroom("manifest", "verify", root, "--manifest", out, "--json",
                                     check=2).stdout)
    assert out_json["mismatched"] == ["clients/acme/tasks.json"]
    assert out_json["missing"] == ["data/state/s.json"] and out_json["passed"] is False
    # restore the files: new files alone never fail
    (root / "clients/acme/tasks.json").write_text('{"t": 1}\n')
    (root / "data/state/s.json").write_text("{}\n")
    assert "1 new" in strongroom("manifest", "verify", root, "--manifest", out, check=0).stdout


@pytest.mark.parametrize(("text", "message"), [
    ("", "is not valid JSON"),
    ("{not json", "is not valid JSON"),
    ('{"version": "2.0"}', "has no 'checksums' mapping"),
    ('{"checksums": {"a": {"sha256": "abc", "size": 1}}}', "entry 'a' is malformed"),
    ('{"checksums": {"../etc/passwd": {"sha256": "' + "0" * 64 + '", "size": 1}}}',
     "entry '../etc/passwd' is malformed"),
    ('{"checksums": []}', "has no 'checksums' mapping"),
])
def test_a_malformed_manifest_is_an_error_never_a_pass(tmp_path, text, message):
    root = tree(tmp_path / "t")
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    proc = strongroom("manifest", "verify", root, "--manifest", bad, check=2)
    assert message in proc.stderr and "OK" not in proc.stdout
    proc = strongroom("manifest", "verify", root, "--manifest", tmp_path / "none.json", check=2)
    assert "does not exist" in proc.stderr


def test_fast_rehashes_only_what_changed_and_deep_catches_what_fast_trusts(tmp_path):
    root = tree(tmp_path / "t")
    out = tmp_path / "m.json"
    create(root, out)
    fast = json.loads(strongroom("manifest", "verify", root, "--manifest", out, "--fast",
                                 "--json", check=0).stdout)
    assert fast["hashed"] == 0 and fast["trusted_by_stat"] == 7
    # an edit changes mtime: fast re-hashes it and fails
    (root / "notes/a.md").write_text("# b\n")
    fast = json.loads(strongroom("manifest", "verify", root, "--manifest", out, "--fast",
                                 "--json", check=2).stdout)
    assert fast["hashed"] == 1 and fast["mismatched"] == ["notes/a.md"]
    # a file replaced by rename (new inode) with the old size and mtime is re-hashed too
    strongroom("manifest", "update", root, "--manifest", out, check=0)
    p = root / "clients/beta/tasks.json"
    st = p.stat()
    tmp = root / "clients/beta/new"
    tmp.write_text("{}\n")
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, p)
    fast = json.loads(strongroom("manifest", "verify", root, "--manifest", out, "--fast",
                                 "--json", check=2).stdout)
    assert fast["mismatched"] == ["clients/beta/tasks.json"] and fast["hashed"] == 1
    # silent damage in place (same size, mtime, inode) is what --deep is for
    strongroom("manifest", "update", root, "--manifest", out, check=0)
    q = root / "data/state/s.json"
    st = q.stat()
    with open(q, "r+b") as fh:
        fh.write(b"[")
    os.utime(q, ns=(st.st_atime_ns, st.st_mtime_ns))
    strongroom("manifest", "verify", root, "--manifest", out, "--fast", check=0)
    deep = strongroom("manifest", "verify", root, "--manifest", out, "--deep", check=2)
    assert "MISMATCH  data/state/s.json" in deep.stdout


def test_update_reports_changes_keeps_prev_and_never_covers_itself(tmp_path):
    root = tree(tmp_path / "t")
    out = root / ".sync-checksums.json"
    create(root, out, "--exclude", "build/", "--exclude", "node_modules/")
    first = out.read_text()
    (root / "notes/a.md").write_text("# changed\n")
    (root / "notes/b.md").write_text("new\n")
    (root / "clients/beta/tasks.json").unlink()
    proc = strongroom("manifest", "update", root, "--manifest", out, check=0)
    assert proc.stdout.splitlines()[:3] == ["+ notes/b.md", "- clients/beta/tasks.json",
                                            "~ notes/a.md"]
    assert (root / ".sync-checksums.json.prev").read_text() == first
    data = json.loads(out.read_text())
    assert ".sync-checksums.json" not in data["checksums"]
    assert ".sync-checksums.json.prev" not in data["checksums"]
    assert data["metadata"]["exclude"] == ["build/", "node_modules/"]  # kept by update
    assert "build/out.bin" not in data["checksums"]
    dry = strongroom("manifest", "update", root, "--manifest", out, "--dry-run", check=0)
    assert dry.stdout.startswith("would write") and json.loads(out.read_text()) == data


def test_gitignore_style_patterns(tmp_path):
    root = tree(tmp_path / "t")
    out = tmp_path / "m.json"
    create(root, out, "--include", "*.json", "--exclude", "clients/beta/",
           "--exclude", "/data/")
    data = json.loads(out.read_text())
    assert sorted(data["checksums"]) == ["clients/acme/tasks.json"]
    create(root, out, "--include", "clients/**", "--include", "!clients/acme/*.json")
    assert sorted(json.loads(out.read_text())["checksums"]) == ["clients/beta/tasks.json"]


def test_the_default_selection_agrees_with_the_gitignore_patterns():
    """With no patterns of the user's a name check stands in for the pattern match."""
    from strongroom.manifest import Selection

    default = Selection()
    patterned = Selection(exclude=["/no-such-path-anywhere"])  # forces the pattern path
    assert default._default and not patterned._default
    paths = ["a.txt", ".git", ".gitignore", ".git/config", "sub/.git/HEAD", "x.git/y",
             ".strongroom/state", "a/.strongroom/b", "a/b/.strongroomx/c", "git/.git2/f",
             "deep/er/.git/objects/ab"]
    for rel in paths:
        assert default.covers(rel) == patterned.covers(rel), rel
    for rel_dir, name in [("", ".git"), ("a/", ".git"), ("", ".strongroom"), ("", "git"),
                          ("a/", ".gitx"), ("", "node_modules")]:
        assert default.prunes(rel_dir, name) == patterned.prunes(rel_dir, name), name
