"""The README's restore from nothing, run as it is written: a new machine (empty config and
state dirs, no store, no snapshot folder) with only the identity file and the remote puts
back a repository from its bundle chain, a snapshot and a day folder, each compared file by
file with what the old machine backed up. The commands are read from the README's block
between `<!-- restore-from-nothing:start -->` and `:end -->`, so the two cannot drift."""

import os
import re
import shutil
import subprocess
from datetime import date

from strongroom import rollups
from tests.helpers import ENV, ROOT, VENV_BIN, commit, init, refs
from tests.seal.helpers import assert_nowhere, bed, canary, make_keys, write_job
from tests.seal.test_seal_jobs import app_tree, run
from tests.unseal.helpers import db_rows, secret_of, tree
from tests.unseal.test_unseal_restores import Quiet

README = ROOT / "README.md"
DAY = "2020-03-02"


def walkthrough():
    """The README's commands, one shell line each, comments and blank lines left out."""
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- restore-from-nothing:start -->\n```sh\n(.*?)```\n"
                      r"<!-- restore-from-nothing:end -->", text, re.S)
    assert block, "README.md lost its restore-from-nothing block"
    lines = [line.split("  #")[0].rstrip() for line in block.group(1).splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def old_machine(tmp, remote_root):
    """Backups made the usual way, by jobs with encrypt_to, onto one remote."""
    (tmp / "old").mkdir()
    identity, recipients = make_keys(tmp / "old")
    conf, _state, paths = bed(tmp / "old")
    secret = canary()
    root = tmp / "old" / "src"
    repo = init(root / "myrepo")
    commit(repo, {".gitignore": ".env\n", "README.md": "hello\n", "lib/a.py": "x = 1\n"})
    commit(repo, {"lib/b.py": "y = 2\n"})
    (repo / ".env").write_text(f"TOKEN={secret}\n")
    app = app_tree(tmp / "old" / "app", secret)
    seal = {"encrypt_to": str(recipients)}
    write_job(conf, "bundles", "bundle", {"root": str(root), "store": str(tmp / "old/store"),
                                          "remote": f"offsite:{remote_root}/bundles", **seal})
    write_job(conf, "snap", "snapshot", {"source": str(app), "dest": str(tmp / "old/snaps"),
                                         "critical": [".env"], "db": ["app.db"],
                                         "immutable": "off",
                                         "remote": f"offsite:{remote_root}/snapshots", **seal})
    write_job(conf, "daily", "daily", {"sources": [str(app)], "dest": str(tmp / "old/days"),
                                       "remote": f"offsite:{remote_root}/days", **seal})
    for name in ("bundles", "snap"):
        code, _status, output, _ = run(paths, name, Quiet())
        assert code == 0, output
    with rollups.dated(date.fromisoformat(DAY)):
        code, _status, output, _ = run(paths, "daily", Quiet())
    assert code == 0, output
    assert any(p.name.endswith(".age") for p in remote_root.rglob("*"))
    assert_nowhere(secret, remote_root)  # sealed: what follows opens it with the key alone
    return identity, repo, app, tmp / "old" / "days" / DAY


def test_the_readme_walkthrough_restores_everything_from_the_remote(tmp_path):
    remote_root = tmp_path / "offsite-folder"
    identity, repo, app, day = old_machine(tmp_path, remote_root)
    # the new machine: a home with the identity and an rclone.conf naming the remote
    home = tmp_path / "new"
    (home / ".config" / "rclone").mkdir(parents=True)
    (home / ".config" / "rclone" / "rclone.conf").write_text("[offsite]\ntype = local\n")
    shutil.copy(identity, home / "age-identity.txt")
    os.chmod(home / "age-identity.txt", 0o600)
    env = {k: v for k, v in ENV.items() if not k.startswith(("STRONGROOM_", "XDG_"))}
    env.update(HOME=str(home), PATH=f"{VENV_BIN}:{env['PATH']}",
               STRONGROOM_CONFIG_DIR=str(home / ".config" / "strongroom"),
               STRONGROOM_STATE_DIR=str(home / ".local" / "state" / "strongroom"))
    # the one change: where the remote is (the README's offsite:backups is this folder)
    script = "\n".join(walkthrough()).replace("offsite:backups", f"offsite:{remote_root}")
    proc = subprocess.run(["bash", "-euxo", "pipefail", "-c", script], cwd=home, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert secret_of(identity) not in proc.stdout + proc.stderr
    restored = home / "restore"
    # the repository: every ref, every tracked file, the critical .env
    assert refs(restored / "myrepo") == refs(repo)
    plain = {k: v for k, v in tree(repo).items() if not k.startswith(".git/")}
    assert {k: v for k, v in tree(restored / "myrepo").items()
            if not k.startswith(".git/")} == plain
    # the snapshot: every file and mode, the database's rows
    got = {k: v for k, v in tree(restored / "app").items() if not k.startswith("app.db")}
    assert got == {k: v for k, v in tree(app).items() if not k.startswith("app.db")}
    assert db_rows(restored / "app" / "app.db") == db_rows(app / "app.db")
    # the day folder: every byte its manifest lists
    assert {k: v[0] for k, v in tree(restored / f"day-{DAY}" / DAY).items()} == \
        {k: v[0] for k, v in tree(day).items()}
    # nothing decrypted was left behind in the new machine's state
    state = home / ".local" / "state" / "strongroom"
    assert not [p for p in state.rglob("*") if p.is_file() and "fetch" in str(p)]
