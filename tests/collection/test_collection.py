"""The collection strongroom.backup as a user gets it: scripts/collection builds the tarball,
`ansible-galaxy collection install` puts it in a collections path of its own, and from a
folder outside the checkout (no ansible.cfg of ours) its modules, fragments and roles are
there by their full names; a module runs from it on a Python without the engine."""

import json
import os
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml

import strongroom
from tests.helpers import ROOT, VENV_BIN
from tests.modules.adhoc import VENV, adhoc, base_python, imports_engine

MODULES = sorted(p.stem for p in (ROOT / "library").glob("*.py"))
NAME = f"strongroom-backup-{strongroom.__version__}.tar.gz"
WHEEL = f"strongroom-{strongroom.__version__}-py3-none-any.whl"


def run(argv, cwd, env, check=True):
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True,
                          text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(tarball, a folder outside the checkout, the environment that finds the collection)."""
    base = tmp_path_factory.mktemp("collection")
    build = base / "build"
    proc = run([ROOT / "scripts/collection", build], ROOT, dict(os.environ))
    tarball = Path(proc.stdout.strip().splitlines()[-1])
    assert tarball == build / NAME and tarball.exists()
    paths = base / "collections"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(PATH=f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
               ANSIBLE_COLLECTIONS_PATH=str(paths), ANSIBLE_NOCOLOR="1", LC_ALL="C.UTF-8",
               HOME=str(base / "home"))
    (base / "home").mkdir()
    elsewhere = base / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "ansible.cfg").write_text("[defaults]\n")  # none of the checkout's
    run([VENV_BIN / "ansible-galaxy", "collection", "install", "-p", paths, tarball],
        elsewhere, env)
    return tarball, elsewhere, env, paths


def test_the_tarball_holds_the_source_tree_and_the_engine_wheel(installed):
    tarball, *_ = installed
    with tarfile.open(tarball) as t:
        names = set(t.getnames())
        manifest = json.load(t.extractfile("MANIFEST.json"))
    info = manifest["collection_info"]
    assert (info["namespace"], info["name"]) == ("strongroom", "backup")
    assert info["version"] == strongroom.__version__  # the engine's version
    assert info["license"] == ["MIT"] and info["dependencies"] == {}
    for m in MODULES:
        assert f"plugins/modules/{m}.py" in names
    assert "plugins/module_utils/strongroom_engine.py" in names
    assert "plugins/doc_fragments/engine.py" in names
    assert "meta/runtime.yml" in names and "README.md" in names
    assert {"playbooks/site.yml", "roles/strongroom/tasks/engine.yml",
            "roles/strongroom_jobs/meta/argument_specs.yml",
            f"roles/strongroom/files/{WHEEL}"} <= names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    # the modules are library/'s, byte for byte
    with tarfile.open(tarball) as t:
        for m in MODULES:
            shipped = t.extractfile(f"plugins/modules/{m}.py").read()
            assert shipped == (ROOT / "library" / f"{m}.py").read_bytes()
    runtime = yaml.safe_load((ROOT / "meta/runtime.yml").read_text())
    assert sorted(runtime["action_groups"]["engine"]) == MODULES


def test_every_module_is_documented_with_the_shared_fragments(installed):
    _, elsewhere, env, _ = installed
    proc = run([VENV_BIN / "ansible-doc", "--json",
                *[f"strongroom.backup.{m}" for m in MODULES]], elsewhere, env)
    docs = json.loads(proc.stdout)
    assert sorted(docs) == [f"strongroom.backup.{m}" for m in MODULES]
    for name, entry in docs.items():
        doc = entry["doc"]
        assert "engine_venv" in doc["options"], name  # strongroom.backup.engine
        assert doc["attributes"]["platform"]["platforms"] == "posix", name
        assert {"check_mode", "diff_mode"} <= set(doc["attributes"]), name
        assert "description" in doc["attributes"]["check_mode"], name  # the builtin one
        assert entry["return"], name
    for m in ("db_backup", "git_bundle", "rclone_transfer"):  # .rclone
        assert "rclone_config" in docs[f"strongroom.backup.{m}"]["doc"]["options"]
    for m in ("db_backup", "rclone_transfer"):  # .transfer
        assert {"bwlimit", "retries", "low_level_retries"} <= set(
            docs[f"strongroom.backup.{m}"]["doc"]["options"])
    # and as a person reads it
    text = run([VENV_BIN / "ansible-doc", "strongroom.backup.git_bundle"], elsewhere,
               env).stdout
    assert "engine_venv" in text and "platforms: posix" in text


def test_the_checkout_is_the_collection_too(tmp_path):
    """From the source tree (its ansible.cfg), the same full names resolve: to library/,
    through collections/'s links; and the legacy names of library/ still do."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               PATH=f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    proc = run([VENV_BIN / "ansible-doc", "--json",
                *[f"strongroom.backup.{m}" for m in MODULES]], tmp_path, env)
    docs = json.loads(proc.stdout)
    for m in MODULES:
        doc = docs[f"strongroom.backup.{m}"]["doc"]
        assert Path(doc["filename"]).resolve() == ROOT / "library" / f"{m}.py"
        assert "engine_venv" in doc["options"]
    link = ROOT / "collections/ansible_collections/strongroom/backup/plugins/modules"
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))
    proc = run([VENV_BIN / "ansible-doc", "-M", ROOT / "library", "git_bundle"], tmp_path,
               env)
    assert "engine_venv" in proc.stdout


def test_the_roles_are_listed_by_their_full_names(installed):
    _, elsewhere, env, paths = installed
    text = run([VENV_BIN / "ansible-doc", "-t", "role", "-l", "strongroom.backup"],
               elsewhere, env).stdout
    assert "strongroom.backup.strongroom" in text and "strongroom.backup.strongroom_jobs" in text
    text = run([VENV_BIN / "ansible-galaxy", "collection", "list", "strongroom.backup"],
               elsewhere, env).stdout
    assert f"strongroom.backup {strongroom.__version__}" in " ".join(text.split())
    assert str(paths) in text
    # the jobs role depends on the strongroom role, by the name that works in both layouts
    meta = yaml.safe_load((paths / "ansible_collections/strongroom/backup/roles/"
                           "strongroom_jobs/meta/main.yml").read_text())
    assert [d["role"] for d in meta["dependencies"]] == ["strongroom"]


def test_a_module_runs_from_the_installed_collection(installed, tmp_path):
    _, elsewhere, env, _ = installed
    python = base_python()
    if imports_engine(python):
        pytest.skip(f"{python} imports the engine by itself")
    root = tmp_path / "tree"
    (root / "notes").mkdir(parents=True)
    (root / "notes/a.md").write_text("a\n")
    args = {"root": str(root), "path": str(tmp_path / "m.json"), "engine_venv": str(VENV)}
    rc, res = adhoc("strongroom.backup.checksum_manifest", args, elsewhere, env, python)
    assert rc == 0 and res["changed"] is True and res["files"] == 1
    (root / "notes/a.md").write_text("changed\n")
    rc, res = adhoc("strongroom.backup.checksum_manifest", args, elsewhere, env, python,
                    check=True)
    assert rc == 0 and res["changed"] is True and res["changed_paths"] == ["notes/a.md"]
    # module_defaults for the whole collection through its action group
    book = elsewhere / "verify.yml"
    book.write_text(yaml.safe_dump([{
        "name": "verify", "hosts": "localhost", "gather_facts": False,
        "module_defaults": {"group/strongroom.backup.engine": {"engine_venv": str(VENV)}},
        "tasks": [{"name": "check", "strongroom.backup.checksum_manifest": {
            "root": str(root), "path": str(tmp_path / "m.json"), "state": "verified"},
            "register": "verdict", "failed_when": False},
            {"name": "show", "ansible.builtin.assert": {
                "that": ["verdict.verdict.mismatched == ['notes/a.md']"]}}]}]))
    run([VENV_BIN / "ansible-playbook", "-i", "localhost,", "-c", "local", "-e",
         f"ansible_python_interpreter={python}", book], elsewhere, env)


def test_the_engine_wheel_is_byte_reproducible_and_carries_the_templates(installed, tmp_path):
    tarball, *_ = installed
    one = run([VENV_BIN / "python", ROOT / "scripts/engine-wheel", tmp_path / "one"], ROOT,
              dict(os.environ)).stdout.strip()
    two = run([VENV_BIN / "python", ROOT / "scripts/engine-wheel", tmp_path / "two"], ROOT,
              dict(os.environ)).stdout.strip()
    assert Path(one).name == Path(two).name == WHEEL
    assert Path(one).read_bytes() == Path(two).read_bytes()
    # an unchanged checkout is not even rebuilt
    mtime = Path(one).stat().st_mtime_ns
    run([VENV_BIN / "python", ROOT / "scripts/engine-wheel", tmp_path / "one"], ROOT,
        dict(os.environ))
    assert Path(one).stat().st_mtime_ns == mtime
    with zipfile.ZipFile(one) as z:
        names = set(z.namelist())
        entry_points = z.read(f"strongroom-{strongroom.__version__}.dist-info/"
                              "entry_points.txt").decode()
    for template in (ROOT / "templates").glob("*.j2"):
        assert f"strongroom/templates/{template.name}" in names
    assert "strongroom/cli/__init__.py" in names and "strongroom = strongroom.cli:main" in \
        entry_points
    assert {n.split("/")[0] for n in names} == {
        "strongroom", f"strongroom-{strongroom.__version__}.dist-info"}
    # the collection carries the same bytes
    with tarfile.open(tarball) as t:
        shipped = t.extractfile(f"roles/strongroom/files/{WHEEL}").read()
    assert shipped == Path(one).read_bytes()
