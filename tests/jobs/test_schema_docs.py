"""The role's argument_specs and the README's option tables are generated from the job
schema, and `scripts/gen-docs --check` fails the suite when either is stale."""

import shutil
import subprocess
import sys

from tests.helpers import ROOT

GEN = ROOT / "scripts" / "gen-docs"
FILES = ("roles/strongroom_jobs/meta/argument_specs.yml", "README.md")


def gen_docs(*args, root=None):
    return subprocess.run([sys.executable, str(GEN if root is None else
                                               root / "scripts" / "gen-docs"), *args],
                          capture_output=True, text=True, check=False, timeout=120)


def test_the_generated_docs_are_current():
    proc = gen_docs("--check")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def copy_tree(tmp_path):
    root = tmp_path / "tree"
    shutil.copytree(ROOT / "strongroom", root / "strongroom",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (root / "scripts").mkdir()
    shutil.copy2(GEN, root / "scripts" / "gen-docs")
    for rel in FILES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, root / rel)
    return root


def test_check_fails_naming_each_stale_file_and_a_run_makes_them_current(tmp_path):
    root = copy_tree(tmp_path)
    assert gen_docs("--check", root=root).returncode == 0
    schema = root / "strongroom" / "jobs" / "schema.py"
    old = '"Incremental bundles before a fresh full "'
    text = schema.read_text()
    assert text.count(old) == 1
    schema.write_text(text.replace(old, '"Incremental bundles (changed) before a fresh full "'))
    before = {rel: (root / rel).read_text() for rel in FILES}
    proc = gen_docs("--check", root=root)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [f"gen-docs: {rel} is stale: run scripts/gen-docs"
                                        for rel in FILES]
    assert {rel: (root / rel).read_text() for rel in FILES} == before  # --check wrote nothing
    proc = gen_docs(root=root)
    assert proc.returncode == 0 and gen_docs("--check", root=root).returncode == 0
    for rel in FILES:
        assert "Incremental bundles (changed) before" in " ".join(
            (root / rel).read_text().split()), rel
    # only between the markers: the rest of each file is as it was
    readme, was = (root / "README.md").read_text(), before["README.md"]
    assert readme.split("<!-- options:begin -->")[0] == was.split("<!-- options:begin -->")[0]
    assert readme.split("<!-- options:end -->")[1] == was.split("<!-- options:end -->")[1]
    specs = (root / FILES[0]).read_text().splitlines()
    assert specs[:15] == before[FILES[0]].splitlines()[:15]


def test_a_missing_marker_is_said(tmp_path):
    root = copy_tree(tmp_path)
    readme = root / "README.md"
    readme.write_text(readme.read_text().replace("<!-- options:end -->", ""))
    proc = gen_docs("--check", root=root)
    assert proc.returncode != 0 and "expected one <!-- options:begin -->" in proc.stderr
