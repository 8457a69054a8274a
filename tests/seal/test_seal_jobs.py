"""encrypt_to on every job type that sends data off-site: a canary secret written into a
`.env` and a database row is in no byte the remote holds (compressed, archived or as it
is), nor in the job's log, status or output; every sealed object opens with the identity
to exactly the local file, its sidecar's hashes agree, and a rerun sends nothing again."""

import sqlite3
from datetime import date
from pathlib import Path

import pytest

from strongroom import jobs, rollups
from strongroom.upload import Upload
from strongroom.upload.seal import Seal
from tests.helpers import commit, init
from tests.seal.helpers import (
    assert_not_told,
    assert_nowhere,
    bed,
    canary,
    check_sealed,
    fetch_remote,
    files_of,
    make_keys,
    remote_state,
    staging_left,
    write_job,
)


def make_db(path, secret):
    con = sqlite3.connect(path)
    con.execute("create table secrets (id integer primary key, token text)")
    con.execute("insert into secrets (token) values (?)", (secret,))
    con.commit()
    con.close()


def db_token(path):
    con = sqlite3.connect(path)
    try:
        return con.execute("select token from secrets").fetchone()[0]
    finally:
        con.close()


def app_tree(root, secret):
    """A project folder whose .env and database hold the secret."""
    root.mkdir(parents=True)
    (root / ".env").write_text(f"API_TOKEN={secret}\n")
    (root / "notes.txt").write_text(f"nothing secret here, but {secret} in a plain file\n")
    make_db(root / "app.db", secret)
    return root


def run(paths, name, capsys):
    code, status, output = jobs.run(paths, name)
    out = capsys.readouterr()
    return code, status, output, out.out + out.err


@pytest.fixture
def keys(tmp_path):
    return make_keys(tmp_path)


def _bed_on(tmp_path, where, request):
    """(conf, state, paths, remote): the job bed on the S3 server or on a local folder."""
    if where == "s3":
        remotes = request.getfixturevalue("remotes")
        return (*bed(tmp_path, remotes["conf"]), remotes["s3"])
    return (*bed(tmp_path), f"offsite:{tmp_path / 'remote'}")


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_snapshot_goes_off_site_sealed(tmp_path, keys, capsys, where, request):
    identity, recipients = keys
    secret = canary()
    conf, state, paths, remote = _bed_on(tmp_path, where, request)
    src, dest = app_tree(tmp_path / "app", secret), tmp_path / "snaps"
    write_job(conf, "snap", "snapshot", {
        "source": str(src), "dest": str(dest), "critical": [".env"], "db": ["app.db"],
        "immutable": "off", "remote": remote, "encrypt_to": str(recipients)})
    code, status, output, said = run(paths, "snap", capsys)
    assert code == 0, output
    snap = status["snapshot"]["id"]
    got = fetch_remote(conf, remote, tmp_path / "fetched")
    names = files_of(got)
    assert f"{snap}/full.tar.zst.age" in names and f"{snap}/critical/.env.age" in names
    assert f"{snap}/db/app.db.age" in names and f"{snap}/SHA256SUMS" in names
    assert_nowhere(secret, got)
    opened = check_sealed(got, identity, lambda rel: dest / rel, tmp_path)
    assert secret.encode() in opened[f"{snap}/critical/.env"]
    assert_not_told(secret, paths, "snap", output, said)
    assert not staging_left(state)

    # the same snapshot sent again (by the job's own upload path): sealed before, so
    # nothing is encrypted or sent again, and the immutable remote has no conflict
    before = remote_state(fetch_remote(conf, remote, tmp_path / "before"))
    up = jobs.offsite(paths, {"encrypt_to": str(recipients)}).run(
        dest / snap, f"{remote}/{snap}", immutable=True)
    assert up["transferred"] == [] and up["verified_by"] == "hash"
    after = remote_state(fetch_remote(conf, remote, tmp_path / "after"))
    assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in before.items()}

    # and with the job's state gone: the remote's own sidecars say it is there
    fresh = Upload(jobs.offsite(paths, {}).rclone, journal_dir=tmp_path / "other-state",
                   seal=Seal(recipients))
    again = fresh.run(dest / snap, f"{remote}/{snap}", immutable=True)
    assert again["transferred"] == []
    last = remote_state(fetch_remote(conf, remote, tmp_path / "last"))
    assert {k: v[0] for k, v in last.items()} == {k: v[0] for k, v in before.items()}


def test_a_rerun_on_a_local_remote_touches_nothing(tmp_path, keys, capsys):
    _identity, recipients = keys
    conf, state, paths = bed(tmp_path)
    src, dest = app_tree(tmp_path / "app", canary()), tmp_path / "snaps"
    remote_dir = tmp_path / "remote"
    write_job(conf, "snap", "snapshot", {
        "source": str(src), "dest": str(dest), "critical": [".env"], "immutable": "off",
        "remote": f"offsite:{remote_dir}", "encrypt_to": str(recipients)})
    code, status, output, _ = run(paths, "snap", capsys)
    assert code == 0, output
    snap = status["snapshot"]["id"]
    before = remote_state(remote_dir)
    up = jobs.offsite(paths, {"encrypt_to": str(recipients)}).run(
        dest / snap, f"offsite:{remote_dir}/{snap}", immutable=True)
    assert up["transferred"] == []
    assert remote_state(remote_dir) == before  # same bytes, times and inodes
    recorded = (state / "verify" / "snap.json").read_text()  # the re-verification ledger
    assert f"{snap}/full.tar.zst.age" in recorded and f"{snap}/full.tar.zst\"" not in recorded


def test_a_changed_file_under_the_same_name_is_the_immutable_conflict(tmp_path, keys):
    _identity, recipients = keys
    conf, state, paths = bed(tmp_path)
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "data.bin").write_bytes(b"first version")
    dest = f"offsite:{tmp_path / 'remote'}"
    jobs.offsite(paths, {"encrypt_to": str(recipients)}).run(folder, dest, immutable=True)
    before = remote_state(tmp_path / "remote")
    (folder / "data.bin").write_bytes(b"other version")
    with pytest.raises(Exception) as exc:
        jobs.offsite(paths, {"encrypt_to": str(recipients)}).run(folder, dest, immutable=True)
    assert "already on" in str(exc.value) and "data.bin.age" in str(exc.value)
    assert "--immutable never overwrites them" in str(exc.value)
    assert remote_state(tmp_path / "remote") == before
    assert (folder / "data.bin").read_bytes() == b"other version"
    assert not staging_left(state)


def test_a_bundle_job_seals_bundles_and_critical_packs(tmp_path, keys, capsys):
    identity, recipients = keys
    secret = canary()
    conf, state, paths = bed(tmp_path)
    root, store, remote_dir = tmp_path / "root", tmp_path / "store", tmp_path / "remote"
    repo = init(root / "r")
    commit(repo, {".gitignore": ".env\n", "README.md": "hello\n"})
    (repo / ".env").write_text(f"SECRET={secret}\n")
    write_job(conf, "bundles", "bundle", {
        "root": str(root), "store": str(store), "remote": f"offsite:{remote_dir}",
        "encrypt_to": str(recipients)})
    code, _status, output, said = run(paths, "bundles", capsys)
    assert code == 0, output
    names = files_of(remote_dir)
    assert "r/bundle-manifest.json" in names
    assert any(n.endswith(".bundle.age") for n in names)
    assert any(n.startswith("r/critical-") and n.endswith(".tar.zst.age") for n in names)
    assert any(n.endswith(".refs.json") for n in names)
    assert_nowhere(secret, remote_dir)
    opened = check_sealed(remote_dir, identity, lambda rel: store / rel, tmp_path)
    assert any(rel.startswith("r/critical-") for rel in opened)
    assert_not_told(secret, paths, "bundles", output, said)
    assert "1 critical ignored file(s) stored unencrypted in the store (0600), sealed with " \
        "age off-site" in output + said
    # what the remote holds says the pack is sealed, to a new machine with no store
    import json

    from tests.helpers import strongroom
    listed = strongroom("--config-dir", conf, "bundle", "list", "--remote",
                        f"offsite:{remote_dir}", "--json", check=0)
    (row,) = json.loads(listed.stdout)["repositories"]
    assert (row["critical_files"], row["critical_encrypted"]) == (1, True)
    listed = strongroom("--config-dir", conf, "bundle", "list", "--remote",
                        f"offsite:{remote_dir}", check=0)
    assert "1 (sealed)" in listed.stdout and "unencrypted" not in listed.stdout
    before = remote_state(remote_dir)
    code, _status, output, _ = run(paths, "bundles", capsys)  # nothing new: nothing sent
    assert code == 0, output
    assert remote_state(remote_dir) == before
    commit(repo, {"more.txt": "more\n"})  # a new incremental: sealed, the rest as it was
    code, _status, output, _ = run(paths, "bundles", capsys)
    assert code == 0, output
    after = remote_state(remote_dir)
    assert {k: v for k, v in after.items() if k in before and k != "r/bundle-manifest.json"} \
        == {k: v for k, v in before.items() if k != "r/bundle-manifest.json"}
    assert len([n for n in after if n.endswith(".bundle.age")]) == 2
    check_sealed(remote_dir, identity, lambda rel: store / rel, tmp_path / "2")


def test_daily_and_rollup_jobs_seal_day_folders_and_rollups(tmp_path, keys, capsys):
    identity, recipients = keys
    secret = canary()
    conf, state, paths = bed(tmp_path)
    src, dest, remote_dir = app_tree(tmp_path / "app", secret), tmp_path / "days", \
        tmp_path / "remote"
    common = {"dest": str(dest), "remote": f"offsite:{remote_dir}",
              "encrypt_to": str(recipients)}
    write_job(conf, "daily", "daily", {"sources": [str(src)], **common})
    write_job(conf, "weekly", "rollup", dict(common))
    for d in (date(2020, 3, 2), date(2020, 3, 3)):
        with rollups.dated(d):
            code, _status, output, said = run(paths, "daily", capsys)
        assert code == 0, output
        assert_not_told(secret, paths, "daily", output, said)
    names = files_of(remote_dir)
    assert "2020-03-02/manifest.json" in names and "2020-03-02/app/.env.age" in names
    assert "2020-03-02/app/app.db.age" in names
    assert_nowhere(secret, remote_dir)
    opened = check_sealed(remote_dir, identity, lambda rel: dest / rel, tmp_path / "days")
    assert db_token_of(opened["2020-03-02/app/app.db"], tmp_path) == secret
    before = remote_state(remote_dir)  # a day sent again: sealed before, nothing sent
    up = jobs.offsite(paths, common).run(dest / "2020-03-02",
                                         f"{common['remote']}/2020-03-02", immutable=True)
    assert up["transferred"] == [] and remote_state(remote_dir) == before
    code, status, output, said = run(paths, "weekly", capsys)
    assert code == 0, output
    name = status["rollup"]["name"]
    assert f"rollups/{name}.age" in files_of(remote_dir)
    assert f"rollups/{name}" not in files_of(remote_dir)
    assert_nowhere(secret, remote_dir)
    local = dest / "rollups" / name
    opened = check_sealed(remote_dir, identity,
                          lambda rel: local if rel == f"rollups/{name}" else None,
                          tmp_path / "rolled")
    assert local.exists() and opened[f"rollups/{name}"] == local.read_bytes()
    assert_not_told(secret, paths, "weekly", output, said)
    before = remote_state(remote_dir)
    sent = rollups.upload_pending(dest, jobs.offsite(paths, common), common["remote"])
    assert sent == [] and remote_state(remote_dir) == before
    assert not staging_left(state)


def db_token_of(data, tmp):
    path = Path(tmp) / "opened.db"
    path.write_bytes(data)
    return db_token(path)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_db_job_seals_each_version(tmp_path, keys, capsys, where, request):
    identity, recipients = keys
    secret = canary()
    conf, state, paths, remote = _bed_on(tmp_path, where, request)
    db = tmp_path / "data" / "app.db"
    db.parent.mkdir()
    make_db(db, secret)
    write_job(conf, "db", "db", {"db": str(db), "remote": remote, "keep": 1,
                                 "encrypt_to": str(recipients)})
    code, status, output, said = run(paths, "db", capsys)
    assert code == 0, output
    key = status["db"]["key"]
    got = fetch_remote(conf, remote, tmp_path / "fetched")
    names = files_of(got)
    assert f"backups/app.db/{key}.age" in names
    assert f"backups/app.db/{key}.metadata.json" in names
    assert f"backups/app.db/{key}" not in names
    assert_nowhere(secret, got)
    opened = check_sealed(got, identity, lambda rel: None, tmp_path)
    assert db_token_of(opened[f"backups/app.db/{key}"], tmp_path) == secret
    assert_not_told(secret, paths, "db", output, said)
    # unchanged content: the sealed newest version holds it, nothing is sent
    code, status, output, _ = run(paths, "db", capsys)
    assert code == 0 and not status["changed"], output
    assert files_of(fetch_remote(conf, remote, tmp_path / "again")) == names
    # a new version: keep 1 prunes the sealed one, its .age and sidecar included
    con = sqlite3.connect(db)
    con.execute("insert into secrets (token) values ('second')")
    con.commit()
    con.close()
    from strongroom.dbversions.settings import settings

    d = settings({"db": str(db), "remote": remote, "keep": 1,
                  "encrypt_to": str(recipients)}, conf, state)
    out = d.backup()
    assert out["pruned"] == [key]
    left = files_of(fetch_remote(conf, remote, tmp_path / "pruned"))
    assert not [n for n in left if key in n]
    assert f"backups/app.db/{out['key']}.age" in left
