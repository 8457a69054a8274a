"""Store permissions, consolidate, list, remote hash fallback, and the config schema."""

import json
import subprocess

import pytest

from strongroom.bundles import chain
from strongroom.core.errors import ConfigError
from strongroom.jobs import config
from tests.helpers import by_name, commit, init, refs, rich_repo, strongroom, sync_json


def test_store_is_private_and_critical_packs_are_owner_only(tmp_path):
    root, store = tmp_path / "root", tmp_path / "store"
    src = init(root / "r")
    commit(src, {".gitignore": ".env\n"})
    (src / ".env").write_text("SECRET=canary-perm\n")
    sync_json(root, store)
    assert oct((store / "r").stat().st_mode & 0o777) == "0o700"
    pack = next((store / "r").glob("critical-*.tar.zst"))
    assert oct(pack.stat().st_mode & 0o777) == "0o600"


def test_consolidate_starts_a_new_verified_chain_and_keeps_the_old_aside(tmp_path):
    root, store = tmp_path / "root", tmp_path / "store"
    src = rich_repo(root / "r")
    sync_json(root, store)
    for i in range(3):
        commit(src, {"f": f"{i}\n"})
        sync_json(root, store)
    old = json.loads((store / "r" / chain.MANIFEST).read_text())
    assert len(old["bundles"]) == 4
    proc = strongroom("bundle", "consolidate", "--store", store, "r", "--json", check=2)
    assert "consolidate needs --root (or --job NAME)" in proc.stderr
    proc = strongroom("bundle", "consolidate", "--store", store, "--root", root, "r",
                      "--json", check=0)
    res = json.loads(proc.stdout)
    assert res["action"] == "full" and res["message"] == "consolidation requested"
    new = json.loads((store / "r" / chain.MANIFEST).read_text())
    assert [e["type"] for e in new["bundles"]] == ["full"]
    assert new["chain_id"] != old["chain_id"]
    assert new["retired"][-1]["chain_id"] == old["chain_id"]
    retired_dir = store / "r" / new["retired"][-1]["path"]
    assert len(list(retired_dir.glob("*.bundle"))) == 4
    strongroom("bundle", "restore", "--store", store, "r", tmp_path / "out", check=0)
    assert refs(tmp_path / "out") == refs(src)


def test_consolidate_without_its_source_leaves_the_chain_untouched(tmp_path):
    root, store = tmp_path / "root", tmp_path / "store"
    src = rich_repo(root / "r")
    sync_json(root, store)
    before = (store / "r" / chain.MANIFEST).read_bytes()
    src.rename(tmp_path / "moved")
    proc = strongroom("bundle", "consolidate", "--store", store, "--root", root, "r",
                      check=2)
    assert f"no repository named r under {root} (the chain is untouched)" in proc.stderr
    assert (store / "r" / chain.MANIFEST).read_bytes() == before


def test_list_json_and_table(tmp_path):
    root, store = tmp_path / "root", tmp_path / "store"
    rich_repo(root / "a")
    rich_repo(root / "sub" / "b")
    sync_json(root, store)
    rows = json.loads(strongroom("bundle", "list", "--store", store, "--json",
                                 check=0).stdout)["repositories"]
    assert [r["name"] for r in rows] == ["a", "sub/b"]
    assert rows[0]["bundles"] == 1 and rows[0]["refs"] == 6 and rows[0]["bytes"] > 0
    assert rows[0]["critical_encrypted"] is False
    table = strongroom("bundle", "list", "--store", store, check=0).stdout
    assert table.splitlines()[0].split()[:3] == ["REPOSITORY", "BUNDLES", "LAST"]


def test_remote_without_sha256_is_checked_by_download(tmp_path):
    """rclone's crypt backend has no hashes: verification must download, not give up."""
    root, store = tmp_path / "root", tmp_path / "store"
    src = rich_repo(root / "r")
    obscured = subprocess.run(["rclone", "obscure", "not-a-real-secret"], capture_output=True,
                              text=True, check=True).stdout.strip()
    conf = tmp_path / "rclone.conf"
    conf.write_text(f"[vault]\ntype = crypt\nremote = {tmp_path / 'cipher'}\n"
                    f"password = {obscured}\n")
    conf.chmod(0o600)
    row = by_name(sync_json(root, store, "--remote", "vault:", "--rclone-config", conf))["r"]
    assert row["remote"] == "verified", row
    assert any((tmp_path / "cipher").rglob("*"))  # encrypted names on disk
    proc = strongroom("bundle", "restore", "--store", tmp_path / "fresh", "--remote", "vault:",
                      "--rclone-config", conf, "r", tmp_path / "out", check=0)
    assert "Restored r" in proc.stdout and refs(tmp_path / "out") == refs(src)


BASE = {"name": "j", "type": "bundle_sync", "options": {"root": "/srv", "store": "/var/s"}}


@pytest.mark.parametrize(("patch", "message"), [
    ({"name": None}, "key 'name' has value None; expected a name of letters, digits"),
    ({"name": "../etc"}, "key 'name' has value '../etc'; expected a name of letters"),
    ({"type": "snapshot!"}, "key 'type' has value 'snapshot!'; expected one of: bundle_sync"),
    ({"options": None}, "options must be a mapping, got None"),
    ({"options": ["root"]}, "options must be a mapping, got ['root']"),
    ({"options": {"root": "/srv", "store": 5}}, "'options.store' has value 5; expected an "
                                                "absolute path"),
    ({"options": {"root": "/srv", "store": "/s", "full_every": True}},
     "'options.full_every' has value True; expected an integer >= 1"),
    ({"options": {"root": "/srv", "store": "/s", "full_every": 10 ** 30}}, None),
    ({"options": {"root": "/srv", "store": "/s", "critical_patterns": [".env", 3]}},
     "'options.critical_patterns' has value ['.env', 3]; expected a list of non-empty strings"),
    ({"options": {"root": "/srv", "store": "/s", "ünïcödé": 1}},
     "unknown key 'options.ünïcödé'"),
    ({"extra": 1}, "unknown key 'extra'"),
    ({"options": {"root": "x" * 5000, "store": "/s"}}, "expected an absolute path"),
])
def test_schema_refuses_bad_values_naming_the_key(patch, message):
    data = {**BASE, **patch}
    if message is None:
        assert config.validate_job(data, "jobs/j.yml") is data
        return
    with pytest.raises(ConfigError) as exc:
        config.validate_job(data, "jobs/j.yml")
    assert str(exc.value).startswith("jobs/j.yml: ") and message in str(exc.value)
    assert len(str(exc.value)) < 400  # huge values are shortened in messages


def test_missing_required_key_and_non_mapping_file():
    with pytest.raises(ConfigError, match="jobs/j.yml: missing required key 'options'"):
        config.validate_job({"name": "j", "type": "bundle_sync"}, "jobs/j.yml")
    with pytest.raises(ConfigError, match="the file must be a mapping, got 'just text'"):
        config.validate_job("just text", "jobs/j.yml")


def test_config_check_verb(tmp_path):
    good = tmp_path / "j.yml"  # a job in NAME.yml is named NAME, as `run` requires
    good.write_text("name: j\ntype: bundle_sync\noptions: {root: /srv, store: /var/s}\n")
    assert "valid bundle_sync job 'j'" in strongroom("config", "check", good, check=0).stdout
    bad = tmp_path / "bad.yml"
    bad.write_text("name: j\ntype: bundle_sync\noptions: {root: /srv}\n")
    proc = strongroom("config", "check", bad, "--name-as", "j.yml", check=2)
    assert "j.yml: missing required key 'options.store'" in proc.stderr
