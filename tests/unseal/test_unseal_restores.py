"""Restores from a sealed remote, for every kind a job seals: with the identity the restore
is exact (bytes and modes as a plain restore promises); without it, with another one, or
with a damaged X.age or a lying sidecar it is refused naming what is needed or what is
damaged, with nothing written, and the local copies and the remote as they were. The
identity's private key is said nowhere."""

import json
import os
from pathlib import Path

import pytest

from tests.helpers import refs
from tests.unseal.helpers import (
    DAYS,
    cli,
    db_rows,
    files_of,
    make_place,
    remote_tree,
    secret_of,
    tree,
)


class Quiet:
    """capsys for a module fixture: the job output is the job's, not under test here."""

    class _Said:
        out = err = ""

    def readouterr(self):
        return self._Said()


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """One set of sealed backups for the module (each test restores into its own place)."""
    return make_place(tmp_path_factory.mktemp("unseal"), Quiet())


def snap_id(place):
    return next(p.name for p in (place["tmp"] / "r-snaps").iterdir() if p.is_dir())


def remote_of(kind):
    return {"bundle": "r-bundles", "pack": "r-bundles", "full": "r-snaps",
            "critical": "r-snaps", "day": "r-days", "rollup": "r-days", "db": "r-db"}[kind]


def victim(place, kind):
    """The sealed object a damage test breaks: one the restore of `kind` must open."""
    names = files_of(place["tmp"] / remote_of(kind))
    sid = snap_id(place) if kind in ("full", "critical") else None
    pick = {
        "bundle": lambda n: n.endswith(".bundle.age"),
        "pack": lambda n: n.startswith("r/critical-") and n.endswith(".age"),
        "full": lambda n: n.startswith(f"{sid}/") and n.count("/") == 1
        and n.endswith(".age"),
        "critical": lambda n: n == f"{sid}/critical/.env.age",
        "day": lambda n: n == f"{DAYS[0]}/app/.env.age",
        "rollup": lambda n: n == f"rollups/{place['rollup']}.age",
        "db": lambda n: n == f"backups/live.db/{place['db_key']}.age",
    }[kind]
    return next(n for n in names if pick(n))


def restore(capsys, place, kind, where, identity):
    """The restore verb of `kind` from the remote alone into `where` (a new machine: no
    job, a fresh store or dest), with --identity when given."""
    remote = f"offsite:{place['tmp'] / remote_of(kind)}"
    key = ["--identity", identity] if identity else []
    where = Path(where)
    target = where / "target"
    if kind in ("bundle", "pack"):
        args = ["bundle", "restore", "r", "--to", target, "--store", where / "store",
                "--remote", remote]
    elif kind in ("full", "critical"):
        args = ["snapshot", "restore", snap_id(place), f"--{kind}", "--to", target,
                "--remote", remote]
    elif kind in ("day", "rollup"):
        (where / "dest").mkdir(parents=True, exist_ok=True)
        which = ["--day", str(DAYS[0])] if kind == "day" else ["--rollup", place["rollup"]]
        args = ["rollup", "restore", "--dest", where / "dest", *which, "--to", target,
                "--remote", remote]
    else:
        target = where / "db" / "live.db"
        target.parent.mkdir(parents=True, exist_ok=True)
        args = ["db", "restore", place["db_key"], "--db", target, "--remote", remote]
    code, out, err = cli(capsys, place, *args, *key)
    return code, out, err, target


def assert_exact(place, kind, target):
    tmp = place["tmp"]
    if kind in ("bundle", "pack"):
        assert refs(target) == refs(place["repo"])
        assert (target / ".env").read_bytes() == (place["repo"] / ".env").read_bytes()
        assert tree(target / ".env") == tree(place["repo"] / ".env") or \
            (os.stat(target / ".env").st_mode & 0o777) == 0o600
        assert os.stat(target / "run.sh").st_mode & 0o777 == 0o755
        want = {k: v for k, v in tree(place["repo"]).items() if not k.startswith(".git/")}
        got = {k: v for k, v in tree(target).items() if not k.startswith(".git/")}
        assert got == want
    elif kind == "full":
        want = {k: v for k, v in tree(place["src"]).items() if not k.startswith("app.db")}
        got = {k: v for k, v in tree(target).items() if not k.startswith("app.db")}
        assert got == want
        assert db_rows(target / "app.db") == db_rows(place["src"] / "app.db")
    elif kind == "critical":
        assert tree(target) == {".env": tree(place["src"])[".env"]}
    elif kind == "day":
        # a day folder fetched off-site comes back 0600, plain (rclone) or sealed alike:
        # its manifest records bytes, not modes
        got, want = tree(target / str(DAYS[0])), tree(tmp / "days-made" / str(DAYS[0]))
        assert {k: v[0] for k, v in got.items()} == {k: v[0] for k, v in want.items()}
        assert {v[1] for v in got.values()} == {0o600}
    elif kind == "rollup":
        for d in DAYS:
            assert tree(target / str(d)) == tree(tmp / "days-made" / str(d))
    else:
        assert db_rows(target) == db_rows(place["db"])


def local_copies(place):
    tmp = place["tmp"]
    return {name: tree(tmp / name) for name in ("store", "snaps", "days", "data")}


KINDS = ["bundle", "pack", "full", "critical", "day", "rollup", "db"]


def nothing_written(kind, where, target):
    """No restored file anywhere, no temp file left beside what was fetched."""
    assert not target.exists()
    left = [n for n in files_of(where) if "/target" in f"/{n}" or ".tmp-" in n
            or ".age" in n or n.startswith("db/")]
    assert left == [], left


@pytest.mark.parametrize("kind", KINDS)
def test_with_the_identity_the_restore_is_exact(made, tmp_path, capsys, kind):
    before = remote_tree(made["tmp"] / remote_of(kind))
    code, out, err, target = restore(capsys, made, kind, tmp_path, made["identity"])
    assert code == 0, out + err
    assert_exact(made, kind, target)
    if kind != "db":  # a db restore makes the restored content the newest version
        assert remote_tree(made["tmp"] / remote_of(kind)) == before
    if kind in ("full", "critical"):
        assert f"decrypted with {made['public']}" in out


@pytest.mark.parametrize("kind", KINDS)
def test_without_an_identity_it_is_refused_naming_the_recipient(made, tmp_path, capsys,
                                                                 kind):
    before, local = remote_tree(made["tmp"] / remote_of(kind)), local_copies(made)
    code, out, err, target = restore(capsys, made, kind, tmp_path, None)
    assert code == 2, out + err
    assert f"sealed to {made['public']}" in err
    assert "--identity FILE" in err
    nothing_written(kind, tmp_path, target)
    assert remote_tree(made["tmp"] / remote_of(kind)) == before
    assert local_copies(made) == local


@pytest.mark.parametrize("kind", KINDS)
def test_another_identity_is_refused(made, tmp_path, capsys, kind):
    before, local = remote_tree(made["tmp"] / remote_of(kind)), local_copies(made)
    code, out, err, target = restore(capsys, made, kind, tmp_path, made["other"])
    assert code == 2, out + err
    assert f"sealed to {made['public']}" in err and "give the identity of one" in err
    assert secret_of(made["other"]) not in out + err
    nothing_written(kind, tmp_path, target)
    assert remote_tree(made["tmp"] / remote_of(kind)) == before
    assert local_copies(made) == local


def _truncate(age, side):
    data = age.read_bytes()
    age.write_bytes(data[: len(data) // 2])


def _flip(age, side):
    data = bytearray(age.read_bytes())
    data[len(data) // 2] ^= 0x01
    age.write_bytes(bytes(data))


def _rewrite(field, value):
    def damage(age, side):
        doc = json.loads(side.read_text())
        doc[field] = value
        side.write_text(json.dumps(doc))
    return damage


def _bad_json(age, side):
    side.write_text('{"format": 1, "name": ')


def _both(age, side):  # a sidecar that lies about both hashes, so the ciphertext "matches"
    import hashlib

    _flip(age, side)
    doc = json.loads(side.read_text())
    doc["age_sha256"] = hashlib.sha256(age.read_bytes()).hexdigest()
    side.write_text(json.dumps(doc))


DAMAGE = {
    "truncated": (_truncate, "bytes"),
    "bit-flipped": (_flip, "SHA-256"),
    "wrong hash": (_rewrite("age_sha256", "0" * 64), "SHA-256"),
    "../ name": (_rewrite("name", "../evil"), "sidecar"),
    "bad JSON": (_bad_json, "sidecar"),
    "plaintext hash": (_both, ""),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_copy_is_refused_naming_it(made, tmp_path, capsys, kind, damage):
    import shutil

    # each test breaks its own copy of the remote: the module's stays whole
    remote = made["tmp"] / remote_of(kind)
    kept = tmp_path / "kept"
    shutil.copytree(remote, kept, symlinks=True)
    rel = victim(made, kind)
    try:
        how, word = DAMAGE[damage]
        how(remote / rel, remote / (rel + ".json"))
        before, local = remote_tree(remote), local_copies(made)
        code, out, err, target = restore(capsys, made, kind, tmp_path / "here",
                                         made["identity"])
        assert code == 2, out + err
        assert Path(rel).name.removesuffix(".age") in err, err
        assert word in err, err
        assert "nothing was restored" in err or "damaged" in err.lower(), err
        nothing_written(kind, tmp_path / "here", target)
        assert remote_tree(remote) == before
        assert local_copies(made) == local
    finally:
        shutil.rmtree(remote)
        shutil.copytree(kept, remote, symlinks=True)


def test_a_plain_remote_snapshot_restores_without_an_identity(made, tmp_path, capsys):
    """A job without encrypt_to leaves the snapshot folder as it is: read as it is."""
    import shutil

    sid = snap_id(made)
    plain = tmp_path / "plain-remote"
    shutil.copytree(made["tmp"] / "snaps" / sid, plain / sid, symlinks=True)
    target = tmp_path / "target"
    code, out, err = cli(capsys, made, "snapshot", "restore", sid, "--full", "--to", target,
                         "--remote", f"offsite:{plain}")
    assert code == 0, out + err
    assert_exact(made, "full", target)
    assert "decrypted" not in out and f"fetched from offsite:{plain}/{sid}" in out


def test_a_damaged_archive_does_not_stop_a_critical_restore(made, tmp_path, capsys):
    """--critical reads critical/ and the checksum lists: the archive is not fetched, so a
    truncated full.tar.zst.age (or one whose sidecar is gone) costs the full restore only,
    which names the remote object, not the scratch copy it fetched."""
    import shutil

    sid = snap_id(made)
    remote = made["tmp"] / "r-snaps"
    kept = tmp_path / "kept"
    shutil.copytree(remote, kept, symlinks=True)
    archive = remote / sid / "full.tar.zst.age"
    try:
        _truncate(archive, None)
        (remote / sid / "full.tar.zst.age.json").unlink()
        code, out, err, target = restore(capsys, made, "critical", tmp_path / "c",
                                         made["identity"])
        assert code == 0, out + err
        assert_exact(made, "critical", target)
        code, out, err, target = restore(capsys, made, "full", tmp_path / "f",
                                         made["identity"])
        assert code == 2, out + err
        assert f"snapshot {sid}/full.tar.zst.age has no sidecar full.tar.zst.age.json" in err
        assert "snapshot-fetch-" not in err
        nothing_written("full", tmp_path / "f", target)
    finally:
        shutil.rmtree(remote)
        shutil.copytree(kept, remote, symlinks=True)
