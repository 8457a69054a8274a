"""Bundle chains on real repositories: what is bundled, what restores, what is refused."""

import json
from datetime import timedelta

from strongroom import bundles
from strongroom.bundles import chain
from tests.helpers import (
    by_name,
    commit,
    g,
    head,
    init,
    refs,
    rich_repo,
    store_snapshot,
    strongroom,
    sync_json,
)


def restore(store, name, target, *extra, check=0):
    return strongroom("bundle", "restore", "--store", store, name, target, *extra, check=check)


def assert_restores_exactly(store, name, source, target):
    restore(store, name, target)
    assert refs(target) == refs(source)
    assert head(target) == head(source)
    assert g(target, "status", "--porcelain") == ""
    return target


def test_first_sync_is_full_and_restores_every_ref_exactly(tmp_path):
    root, store = tmp_path / "root", tmp_path / "store"
    src = rich_repo(root / "work" / "rich")
    report = sync_json(root, store)
    row = by_name(report)["work/rich"]
    assert (row["action"], row["status"], row["chain_length"]) == ("full", "ok", 1)
    assert "refs/notes/commits" in row["refs_after"]
    out = assert_restores_exactly(store, "work/rich", src, tmp_path / "out")
    assert (out / "src" / "ünïcode 文件.txt").read_text() == "unicode path\n"
    assert (out / "data.bin").read_bytes() == bytes(range(256)) * 64
    assert g(out, "cat-file", "-t", "v0.1-annotated").strip() == "tag"
    # the user's repository got no tag or ref of ours
    assert "strongroom" not in refs(src) and "bundle" not in refs(src)


def test_unchanged_repository_writes_nothing_and_says_so(tmp_path):
    root, store = tmp_path / "root", tmp_path / "store"
    rich_repo(root / "a")
    sync_json(root, store)
    before = store_snapshot(store)
    proc = strongroom("bundle", "sync", "--root", root, "--store", store, check=0)
    assert "Nothing changed: every repository is as last bundled." in proc.stdout
    assert store_snapshot(store) == before
    assert by_name(sync_json(root, store))["a"]["action"] == "unchanged"


def test_incremental_covers_all_refs_not_only_head(tmp_path):
    root, store = tmp_path / "root", tmp_path / "store"
    src = rich_repo(root / "r")
    sync_json(root, store)
    g(src, "checkout", "-q", "feature")
    commit(src, {"feature-only.txt": "x\n"}, "on a branch HEAD is not on")
    g(src, "checkout", "-q", "main")
    g(src, "tag", "-a", "v2", "-m", "tag on feature", "feature")
    row = by_name(sync_json(root, store))["r"]
    assert row["action"] == "incremental" and row["chain_length"] == 2
    out = assert_restores_exactly(store, "r", src, tmp_path / "out")
    assert g(out, "show", "feature:feature-only.txt") == "x\n"


def test_deleted_and_rewound_refs_are_recorded_and_restored(tmp_path):
    root, store = tmp_path / "root", tmp_path / "store"
    src = rich_repo(root / "r")
    commit(src, {"later.txt": "later\n"}, "to be rewound")
    sync_json(root, store)
    g(src, "branch", "-D", "old-topic")
    g(src, "tag", "-d", "v0.1")
    g(src, "reset", "-q", "--hard", "HEAD~1")  # force-push style rewind: no new objects
    row = by_name(sync_json(root, store))["r"]
    assert row["action"] == "refs", row
    assert "deleted refs/heads/old-topic" in row["message"]
    assert "moved refs/heads/main" in row["message"]
    out = assert_restores_exactly(store, "r", src, tmp_path / "out")
    assert "old-topic" not in refs(out) and "refs/tags/v0.1\n" not in refs(out)
    assert not (out / "later.txt").exists()


def test_thirty_incrementals_consolidate_and_retire_old_chains(tmp_path):
    root, store = tmp_path / "root", tmp_path / "store"
    src = init(root / "r")
    commit(src, {"f": "0\n"}, "c0")
    sync_json(root, store, "--full-every", "10")
    actions = []
    for i in range(1, 31):
        commit(src, {"f": f"{i}\n", f"b{i % 3}": f"{i}\n"}, f"c{i}")
        if i % 7 == 0:
            g(src, "tag", f"t{i}")
        actions.append(by_name(sync_json(root, store, "--full-every", "10"))["r"]["action"])
    # full, then 10 incrementals, then a fresh full, ...
    assert actions.count("full") == 2, actions
    assert actions[10] == "full" and actions[21] == "full"
    manifest = json.loads((store / "r" / chain.MANIFEST).read_text())
    assert [e["type"] for e in manifest["bundles"]] == ["full"] + ["incremental"] * 8
    # keep_retired=1: one older chain kept aside, the oldest pruned
    assert len(manifest["retired"]) == 1
    assert len(list((store / "r" / chain.RETIRED_DIR).iterdir())) == 1
    assert_restores_exactly(store, "r", src, tmp_path / "out")
    assert strongroom("bundle", "verify", "--store", store, check=0)


def test_old_full_bundle_starts_a_new_chain_after_the_day_limit(tmp_path):
    root, store = tmp_path / "root", tmp_path / "store"
    src = init(root / "r")
    commit(src, {"f": "1\n"})
    opts = bundles.Options(full_after_days=30, critical_patterns=[])
    t0 = chain.utcnow()
    bundles.sync(root, store, opts, now=t0)
    commit(src, {"f": "2\n"})
    (res,), _ = bundles.sync(root, store, opts, now=t0 + timedelta(days=10))
    assert res.action == "incremental"
    commit(src, {"f": "3\n"})
    (res,), code = bundles.sync(root, store, opts, now=t0 + timedelta(days=31))
    assert (res.action, res.message, code) == ("full", "full bundle older than 30 days", 0)


def test_lost_store_state_falls_back_to_a_full_bundle(tmp_path):
    root, store = tmp_path / "root", tmp_path / "store"
    src = rich_repo(root / "r")
    sync_json(root, store)
    commit(src, {"x": "1\n"})
    sync_json(root, store)
    (store / "r" / chain.MANIFEST).write_text("{ not json")
    row = by_name(sync_json(root, store, check=1))["r"]
    assert (row["action"], row["status"]) == ("full", "warning")
    assert "store state inconsistent" in row["notes"][0]
    # nothing of the old chain was deleted: it was moved aside
    aside = list((store / "r" / chain.RETIRED_DIR).rglob("*.bundle"))
    assert len(aside) == 2
    # and the next run is an ordinary one, not the same error again
    assert by_name(sync_json(root, store))["r"]["action"] == "unchanged"
    (store / "r" / chain.MANIFEST).unlink()
    assert by_name(sync_json(root, store))["r"]["action"] == "full"
    assert_restores_exactly(store, "r", src, tmp_path / "out")


def test_unreadable_ref_manifest_starts_a_new_chain_and_is_reported(tmp_path):
    root, store = tmp_path / "root", tmp_path / "store"
    src = rich_repo(root / "r")
    sync_json(root, store)
    refs_file = next((store / "r").glob("full-*.refs.json"))
    size = refs_file.stat().st_size
    refs_file.write_text("x" * size)  # same size: only reading it can tell
    listing = json.loads(strongroom("bundle", "list", "--store", store, "--json",
                                    check=1).stdout)["repositories"]
    assert listing[0]["status"] == "error" and refs_file.name in listing[0]["message"]
    proc = strongroom("bundle", "restore", "--store", store, "r", tmp_path / "out", check=2)
    assert f"{refs_file.name} in the store does not match its recorded SHA-256" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()
    row = by_name(sync_json(root, store, check=1))["r"]
    assert (row["action"], row["status"]) == ("full", "warning")
    assert f"ref manifest {refs_file.name} unreadable" in row["notes"][0]
    assert_restores_exactly(store, "r", src, tmp_path / "out")


def test_a_damaged_older_ref_manifest_starts_a_new_chain_on_the_next_change(tmp_path):
    root, store = tmp_path / "root", tmp_path / "store"
    src = rich_repo(root / "r")
    sync_json(root, store)
    commit(src, {"x": "1\n"})
    sync_json(root, store)
    older = next((store / "r").glob("full-*.refs.json"))
    older.write_text("y" * older.stat().st_size)
    assert by_name(sync_json(root, store))["r"]["action"] == "unchanged"
    commit(src, {"x": "2\n"})
    row = by_name(sync_json(root, store, check=1))["r"]
    assert (row["action"], row["status"]) == ("full", "warning")
    assert f"ref manifest {older.name} unreadable" in row["notes"][0]
    assert (store / "r" / ".retired").is_dir()  # the old files were moved aside, not lost
    assert_restores_exactly(store, "r", src, tmp_path / "out")


def test_missing_bundle_file_falls_back_to_full(tmp_path):
    root, store = tmp_path / "root", tmp_path / "store"
    src = init(root / "r")
    commit(src, {"f": "1\n"})
    sync_json(root, store)
    next((store / "r").glob("full-*.bundle")).unlink()
    commit(src, {"f": "2\n"})
    row = by_name(sync_json(root, store, check=1))["r"]
    assert row["action"] == "full" and "missing from the store" in row["notes"][0]


def test_shallow_repository_is_refused_and_others_still_done(tmp_path):
    root, store = tmp_path / "root", tmp_path / "store"
    full = init(tmp_path / "origin")
    for i in range(3):
        commit(full, {"f": f"{i}\n"})
    g(tmp_path, "clone", "-q", "--depth", "1", f"file://{full}", str(root / "shallow"))
    good = init(root / "good")
    commit(good, {"f": "ok\n"})
    report = sync_json(root, store, check=3)
    rows = by_name(report)
    assert rows["shallow"]["status"] == "error"
    assert "is a shallow clone" in rows["shallow"]["message"]
    assert "git fetch --unshallow" in rows["shallow"]["message"]
    assert rows["good"]["action"] == "full"
    assert not (store / "shallow").exists()


def test_bare_repository_restores_bare(tmp_path):
    root, store = tmp_path / "root", tmp_path / "store"
    work = rich_repo(tmp_path / "work")
    g(tmp_path, "clone", "-q", "--mirror", str(work), str(root / "mirror.git"))
    assert by_name(sync_json(root, store))["mirror.git"]["action"] == "full"
    out = tmp_path / "out.git"
    restore(store, "mirror.git", out)
    assert g(out, "rev-parse", "--is-bare-repository").strip() == "true"
    assert refs(out) == refs(root / "mirror.git")


def test_discovery_names_by_relative_path_and_skips_dependency_trees(tmp_path):
    root = tmp_path / "root"
    commit(init(root / "a"), {"f": "1"})
    commit(init(root / "group" / "b"), {"f": "1"})
    commit(init(root / "a" / "node_modules" / "dep"), {"f": "1"})
    commit(init(root / "a" / "venv" / "lib" / "pkg"), {"f": "1"})
    (root / "env").mkdir()
    (root / "env" / "pyvenv.cfg").write_text("home = /usr\n")
    commit(init(root / "env" / "src" / "pkg"), {"f": "1"})
    g(root / "a", "worktree", "add", "-q", str(root / "a-worktree"))
    init(root / "bare.git", bare=True)
    names = [n for n, _ in bundles.find_repositories(root)]
    assert names == ["a", "bare.git", "group/b"]


def test_critical_ignored_files_selected_packed_and_restored(tmp_path):
    root, store = tmp_path / "root", tmp_path / "store"
    src = init(root / "r")
    commit(src, {".gitignore": ".env\n*.key\nconf/\nbuild/\n", "app.py": "print()\n"})
    (src / ".env").write_text("TOKEN=canary-critical\n")
    (src / "conf").mkdir()
    (src / "conf" / "server.key").write_text("KEY\n")
    (src / "conf" / "public.key").write_text("PUBLIC\n")
    (src / "build").mkdir()
    (src / "build" / "out.key").write_text("generated\n")
    (src / "notignored.key").write_text("tracked soon\n")
    g(src, "add", "notignored.key", "-f")
    g(src, "commit", "-q", "-m", "tracked key")
    (src / ".strongroom-critical").write_text("!public.key\n/build/*.key\n!/build/out.key\n")
    row = by_name(sync_json(root, store, "--no-default-critical", "--critical", "*.key",
                           "--critical", ".env"))["r"]
    assert row["critical_files"] == 2
    assert "stored UNENCRYPTED" in " ".join(row["notes"])
    out = tmp_path / "out"
    restore(store, "r", out)
    assert (out / ".env").read_text() == "TOKEN=canary-critical\n"
    assert (out / "conf" / "server.key").read_text() == "KEY\n"
    assert not (out / "conf" / "public.key").exists()
    assert not (out / "build" / "out.key").exists()
    listing = strongroom("bundle", "list", "--store", store, check=0).stdout
    assert "stored unencrypted" in listing
    # a changed critical file is re-packed although no ref moved
    (src / ".env").write_text("TOKEN=rotated\n")
    row = by_name(sync_json(root, store, "--no-default-critical", "--critical", "*.key",
                           "--critical", ".env"))["r"]
    assert row["action"] == "critical" and row["critical_packed"]
    restore(store, "r", tmp_path / "out2")
    assert (tmp_path / "out2" / ".env").read_text() == "TOKEN=rotated\n"


def test_restore_refuses_non_empty_target_unless_forced(tmp_path):
    root, store = tmp_path / "root", tmp_path / "store"
    src = rich_repo(root / "r")
    sync_json(root, store)
    target = tmp_path / "busy"
    target.mkdir()
    (target / "precious.txt").write_text("mine\n")
    proc = restore(store, "r", target, check=2)
    assert "exists and is not empty" in proc.stderr and "--force" in proc.stderr
    assert (target / "precious.txt").read_text() == "mine\n"
    proc = restore(store, "r", target, "--force", check=0)
    assert "moved to" in proc.stdout
    assert refs(target) == refs(src)
    aside = next(tmp_path.glob("busy.before-restore-*"))
    assert (aside / "precious.txt").read_text() == "mine\n"


def test_dry_run_writes_nothing(tmp_path):
    root, store = tmp_path / "root", tmp_path / "store"
    rich_repo(root / "r")
    report = sync_json(root, store, "--dry-run")
    assert by_name(report)["r"]["action"] == "full" and report["dry_run"]
    assert not store.exists()


def test_unknown_repository_and_missing_store_are_clear_errors(tmp_path):
    proc = restore(tmp_path / "store", "nope", tmp_path / "out", check=2)
    assert f"bundle store {tmp_path / 'store'} does not exist (give --remote" in proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "store").exists()
    (tmp_path / "store").mkdir()
    proc = restore(tmp_path / "store", "nope", tmp_path / "out", check=2)
    assert "nope: no usable chain" in proc.stderr
    proc = strongroom("bundle", "sync", "--root", tmp_path / "missing", "--store",
                      tmp_path / "s", check=2)
    assert "repositories root" in proc.stderr and "does not exist" in proc.stderr


def test_name_filter_and_unknown_names(tmp_path):
    root, store = tmp_path / "root", tmp_path / "store"
    rich_repo(root / "a")
    rich_repo(root / "b")
    report = sync_json(root, store, "--name", "b")
    assert list(by_name(report)) == ["b"] and not (store / "a").exists()
    proc = strongroom("bundle", "sync", "--root", root, "--store", store, "--name", "zz",
                      check=2)
    assert f"no repository named zz under {root}" in proc.stderr


def test_empty_root_is_a_warning_that_says_where_it_looked(tmp_path):
    (tmp_path / "root").mkdir()
    proc = strongroom("bundle", "sync", "--root", tmp_path / "root", "--store",
                      tmp_path / "s", check=1)
    assert f"No git repositories found under {tmp_path / 'root'}" in proc.stdout


def test_job_file_is_validated_before_anything_happens(tmp_path):
    conf = tmp_path / "conf"
    (conf / "jobs").mkdir(parents=True)
    job = conf / "jobs" / "bundles.yml"
    store = tmp_path / "never-created"
    job.write_text(f"name: bundles\ntype: bundle_sync\noptions:\n  root: {tmp_path}\n"
                   f"  store: {store}\n  full_evry: 3\n")
    proc = strongroom("--config-dir", conf, "bundle", "sync", "--job", "bundles", check=2)
    assert f"{job}: unknown key 'options.full_evry'" in proc.stderr
    job.write_text("name: bundles\ntype: bundle_sync\noptions:\n  root: relative/path\n"
                   f"  store: {store}\n")
    proc = strongroom("--config-dir", conf, "bundle", "sync", "--job", "bundles", check=2)
    assert "key 'options.root' has value 'relative/path'; expected an absolute path" in \
        proc.stderr
    job.write_text(f"name: bundles\ntype: bundle_sync\noptions:\n  root: {tmp_path}\n"
                   f"  store: {store}\n  full_every: 0\n")
    proc = strongroom("--config-dir", conf, "bundle", "sync", "--job", "bundles", check=2)
    assert "'options.full_every' has value 0; expected an integer >= 1" in proc.stderr
    job.write_text("name: [unclosed\n")
    proc = strongroom("--config-dir", conf, "bundle", "sync", "--job", "bundles", check=2)
    assert "not valid YAML" in proc.stderr
    proc = strongroom("--config-dir", conf, "bundle", "sync", "--job", "nojob", check=2)
    assert "no job named 'nojob'" in proc.stderr
    assert not store.exists()


def test_job_file_drives_a_sync(tmp_path):
    root, store = tmp_path / "root", tmp_path / "store"
    rich_repo(root / "r")
    conf = tmp_path / "conf"
    (conf / "jobs").mkdir(parents=True)
    (conf / "jobs" / "bundles.yml").write_text(
        f"name: bundles\ntype: bundle_sync\nschedule: daily 01:00\noptions:\n"
        f"  root: {root}\n  store: {store}\n  full_every: 5\n")
    proc = strongroom("--config-dir", conf, "bundle", "sync", "--job", "bundles", "--json",
                      check=0)
    assert by_name(json.loads(proc.stdout))["r"]["action"] == "full"
