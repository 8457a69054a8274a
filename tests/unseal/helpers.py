"""What the tests of restores from sealed remotes share: each kind of backup made by its
real job with encrypt_to (so the remote is sealed as a job seals it), the real CLI, and
what "nothing written" and "exact" mean for each."""

import hashlib
import os
import shutil
import sqlite3
import stat
import subprocess
from datetime import date
from pathlib import Path

from strongroom import rollups
from strongroom.cli import app
from tests.helpers import commit, g, init
from tests.seal.helpers import bed, canary, files_of, make_keys, write_job
from tests.seal.test_seal_jobs import app_tree, run

DAYS = (date(2020, 3, 2), date(2020, 3, 3))


def other_identity(tmp):
    """An identity that is none of the recipients (0600, as check_identity wants)."""
    path = Path(tmp) / "keys" / "other.txt"
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    path.chmod(0o600)
    return path


def public_of(identity):
    return subprocess.run(["age-keygen", "-y", str(identity)], check=True,
                          capture_output=True, text=True).stdout.strip()


def secret_of(identity):
    """The identity's private key line: it must never be said anywhere."""
    return next(line for line in Path(identity).read_text().splitlines()
                if line.startswith("AGE-SECRET-KEY-"))


def cli(capsys, place, *args):
    """The real CLI in-process with the place's config and state dirs: (code, out, err)."""
    capsys.readouterr()
    code = app.main([str(a) for a in ("--config-dir", place["conf"], "--state-dir",
                                      place["state"], *args)])
    out, err = capsys.readouterr()
    assert secret_of(place["identity"]) not in out + err
    return code, out, err


def tree(root):
    """{relative path: (sha256, mode)} of every regular file under root; links as links."""
    root = Path(root)
    out = {}
    for rel in files_of(root):
        p = root / rel
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            out[rel] = ("link", os.readlink(p))
        else:
            out[rel] = (hashlib.sha256(p.read_bytes()).hexdigest(), stat.S_IMODE(st.st_mode))
    return out


def remote_tree(root):
    """{relative path: (sha256, mtime_ns)} of the remote folder: what a restore leaves."""
    root = Path(root)
    return {rel: (hashlib.sha256((root / rel).read_bytes()).hexdigest(),
                  (root / rel).stat().st_mtime_ns) for rel in files_of(root)}


def make_place(tmp, capsys):
    """Every kind of backup, sealed on one local-folder remote per job."""
    tmp = Path(tmp)
    identity, recipients = make_keys(tmp)
    conf, state, paths = bed(tmp)
    secret = canary()
    place = {"tmp": tmp, "conf": conf, "state": state, "paths": paths, "secret": secret,
             "identity": identity, "recipients": recipients, "other": other_identity(tmp),
             "public": public_of(identity)}
    # a bundle job: a repository with a critical .env
    root, store = tmp / "root", tmp / "store"
    repo = init(root / "r")
    commit(repo, {".gitignore": ".env\n", "README.md": "hello\n", "run.sh": "#!/bin/sh\n"})
    os.chmod(repo / "run.sh", 0o755)  # noqa: S103 - a script: its mode must come back
    g(repo, "add", "--chmod=+x", "run.sh")
    commit(repo, {"more.txt": "more\n"})
    (repo / ".env").write_text(f"SECRET={secret}\n")
    os.chmod(repo / ".env", 0o600)
    write_job(conf, "bundles", "bundle", {
        "root": str(root), "store": str(store), "remote": f"offsite:{tmp / 'r-bundles'}",
        "encrypt_to": str(recipients), "identity": str(identity)})
    # a snapshot job: .env critical, a database
    src = app_tree(tmp / "app", secret)
    os.chmod(src / "notes.txt", 0o640)
    write_job(conf, "snap", "snapshot", {
        "source": str(src), "dest": str(tmp / "snaps"), "critical": [".env"],
        "db": ["app.db"], "immutable": "off", "remote": f"offsite:{tmp / 'r-snaps'}",
        "encrypt_to": str(recipients), "identity": str(identity)})
    # daily and rollup jobs of one dest
    common = {"dest": str(tmp / "days"), "remote": f"offsite:{tmp / 'r-days'}",
              "encrypt_to": str(recipients), "identity": str(identity)}
    write_job(conf, "daily", "daily", {"sources": [str(src)], **common})
    write_job(conf, "weekly", "rollup", dict(common))
    # a db job
    db = tmp / "data" / "live.db"
    db.parent.mkdir()
    con = sqlite3.connect(db)
    con.execute("create table secrets (id integer primary key, token text)")
    con.execute("insert into secrets (token) values (?)", (secret,))
    con.commit()
    con.close()
    write_job(conf, "db", "db", {"db": str(db), "remote": f"offsite:{tmp / 'r-db'}",
                                 "encrypt_to": str(recipients), "identity": str(identity)})
    for name in ("bundles", "snap"):
        code, status, output, _said = run(paths, name, capsys)
        assert code == 0, output
        place[name] = status
    for d in DAYS:
        with rollups.dated(d):
            code, _status, output, _said = run(paths, "daily", capsys)
        assert code == 0, output
    # the rollup retires the day folders here once they are on the remote: kept to compare
    shutil.copytree(tmp / "days", tmp / "days-made", symlinks=True)
    code, status, output, _said = run(paths, "weekly", capsys)
    assert code == 0, output
    place["rollup"] = status["rollup"]["name"]
    code, status, output, _said = run(paths, "db", capsys)
    assert code == 0, output
    place["db_key"] = status["db"]["key"]
    place.update(repo=repo, store=store, src=src, db=db)
    return place


def db_rows(path):
    con = sqlite3.connect(path)
    try:
        return con.execute("select id, token from secrets order by id").fetchall()
    finally:
        con.close()
