"""Restore drills of checkpoint jobs: the patch applied to a scratch clone of its base
commit, the untracked files put back, everything checked against the manifest; the work
tree itself never touched."""

import hashlib
import json

from strongroom import checkpoints
from tests.checkpoints.test_checkpoints import state_of, work_tree
from tests.drill.test_drill import sr, status_of
from tests.drill.test_drill_snapshot import drill_job, files_of
from tests.helpers import g


def checkpoint_job(tmp, conf):
    repo = work_tree(tmp)
    (repo / "link").symlink_to("keep.txt")  # an untracked symlink: recorded only
    (conf / "jobs" / "wip.yml").write_text(
        f"name: wip\ntype: checkpoint\noptions:\n  source: {repo}\n  dest: {tmp / 'ckpts'}\n")
    return repo


def test_the_newest_and_an_older_checkpoint_apply_and_match_their_manifests(bed):
    tmp, _, conf, state = bed
    repo = checkpoint_job(tmp, conf)
    sr(conf, state, "run", "wip", check=0)
    (repo / "notes/plan.md").write_text("plan v3\n")
    sr(conf, state, "run", "wip", check=0)
    (repo / "later.txt").write_text("a commit after both\n")  # the base moves on
    g(repo, "add", "later.txt")
    g(repo, "commit", "-q", "-m", "later", "--", "later.txt")  # only it: the rest stays
    (repo / "bin.dat").write_bytes(bytes(range(256)) * 4)  # untracked, binary
    sr(conf, state, "run", "wip", check=0)
    names = [f.name for _, f in checkpoints.checkpoints(tmp / "ckpts")]
    assert len(names) == 3
    drill_job(conf, "  source: both\n")
    before_tree, before_ckpts = state_of(repo), files_of(tmp / "ckpts")
    proc = sr(conf, state, "run", "drill", check=0)
    assert "wip: no remote configured; its off-site copy cannot be drilled" in proc.stdout
    st = status_of(state, "drill")
    assert [(a["kind"], a["name"], a["source"], a["result"]) for a in st["artifacts"]] == [
        ("checkpoint", names[2], "local", "ok"), ("checkpoint", names[0], "local", "ok")]
    newest, older = st["artifacts"]
    assert newest["message"] == (f"patch applies to {g(repo, 'rev-parse', 'HEAD')[:12]}, 4 "
                                 "file(s) match the manifest, 1 deletion(s) in place")
    assert newest["files"] == 2 and newest["duration_seconds"] > 0  # the untracked ones
    assert older["message"].startswith(f"patch applies to {g(repo, 'rev-parse', 'HEAD~1')[:12]}")
    sr(conf, state, "run", "drill", check=0)  # the other older one, next time
    assert [a["name"] for a in status_of(state, "drill")["artifacts"]] == [names[2], names[1]]
    assert state_of(repo) == before_tree  # the work tree: untouched
    assert files_of(tmp / "ckpts") == before_ckpts
    assert list((state / "drill").iterdir()) == []


def test_a_patch_that_no_longer_applies_fails_the_drill_and_is_kept(bed):
    """The manifest and its checksum rewritten together (a bug, or an attacker who knows
    the format): the patch is checked by applying it, not by trusting its hash."""
    tmp, _, conf, state = bed
    checkpoint_job(tmp, conf)
    sr(conf, state, "run", "wip", check=0)
    ((_, folder),) = checkpoints.checkpoints(tmp / "ckpts")
    patch = (folder / "changes.patch").read_bytes().replace(b"-plan v1", b"-plan v0")
    (folder / "changes.patch").write_bytes(patch)
    rewrite(folder, "changes.patch")
    drill_job(conf, "  source: local\n")
    before = files_of(tmp / "ckpts")
    proc = sr(conf, state, "run", "drill", check=2)
    assert f"wip/{folder.name} (local): changes.patch of checkpoint " \
           f"{folder.name} does not apply to " in proc.stdout
    assert "patch failed: notes/plan.md:1" in proc.stdout
    assert files_of(tmp / "ckpts") == before
    assert list((state / "drill").iterdir()) == []


def test_a_damaged_checkpoint_file_and_a_hostile_manifest_path_are_named(bed):
    tmp, _, conf, state = bed
    repo = checkpoint_job(tmp, conf)
    sr(conf, state, "run", "wip", check=0)
    ((_, folder),) = checkpoints.checkpoints(tmp / "ckpts")
    copy = folder / "files/notes/plan.md"
    copy.write_bytes(copy.read_bytes().replace(b"v2", b"v9"))  # same size
    drill_job(conf, "  source: local\n")
    proc = sr(conf, state, "run", "drill", check=2)
    assert f"files/notes/plan.md of checkpoint {folder.name} does not match its checksum " \
           "(damaged or altered)" in proc.stdout
    copy.write_bytes(copy.read_bytes().replace(b"v9", b"v2"))
    meta = json.loads((folder / "CHECKPOINT.json").read_text())
    meta["deleted"].append("../../outside.txt")
    (folder / "CHECKPOINT.json").write_text(json.dumps(meta))
    rewrite(folder, "CHECKPOINT.json")
    (tmp / "outside.txt").write_text("mine\n")
    proc = sr(conf, state, "run", "drill", check=2)
    assert "CHECKPOINT.json: checkpoint path leaving its directory: '../../outside.txt'" \
        in proc.stdout
    assert (tmp / "outside.txt").read_text() == "mine\n"
    assert (repo / "notes/plan.md").read_text() == "plan v2\n"
    assert list((state / "drill").iterdir()) == []


def test_a_base_commit_gone_from_the_work_tree_is_the_error(bed):
    tmp, _, conf, state = bed
    repo = checkpoint_job(tmp, conf)
    sr(conf, state, "run", "wip", check=0)
    head = g(repo, "rev-parse", "HEAD")
    # the history rewritten and collected: the checkpoint's base exists nowhere now
    g(repo, "checkout", "-q", "--orphan", "fresh")
    g(repo, "commit", "-q", "-m", "fresh start")
    g(repo, "branch", "-D", "-q", "main") if "main" in g(repo, "branch") else \
        g(repo, "branch", "-D", "-q", "master")
    g(repo, "reflog", "expire", "--expire=now", "--all")
    g(repo, "gc", "-q", "--prune=now")
    drill_job(conf, "  source: local\n")
    proc = sr(conf, state, "run", "drill", check=2)
    assert f"the base commit {head[:12]} of checkpoint" in proc.stdout
    assert f"is no longer in {repo} (rewritten or collected)" in proc.stdout


def rewrite(folder, rel):
    digest = hashlib.sha256((folder / rel).read_bytes()).hexdigest()
    lines = (folder / "SHA256SUMS").read_text().splitlines()
    out = [f"{digest}  {rel}" if line.endswith(f"  {rel}") else line for line in lines]
    (folder / "SHA256SUMS").write_text("\n".join(out) + "\n")
