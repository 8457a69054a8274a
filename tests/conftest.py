import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The Ansible modules live in library/ (not a package) and are imported by file name.
sys.path.insert(0, str(ROOT / "library"))


@pytest.fixture
def bed(tmp_path):
    """A repository under root/ and empty config and state dirs for the job runner.

    (The fleet and integration modules define their own, larger `bed`.)
    """
    from tests.helpers import rich_repo

    root = tmp_path / "root"
    rich_repo(root / "r")
    conf, state = tmp_path / "conf", tmp_path / "state"
    (conf / "jobs").mkdir(parents=True)
    return tmp_path, root, conf, state


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """A real S3 API server (moto) on 127.0.0.1 for the whole session."""
    from tests.servers import S3Server

    server = S3Server(tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()


@pytest.fixture
def remotes(tmp_path, s3):
    """An rclone.conf with a local folder, the S3 server (a fresh bucket), a crypt remote
    (which shares no hash with anything) and an S3 endpoint on a closed port."""
    import subprocess
    import uuid

    obscured = subprocess.run(["rclone", "obscure", "crypt-pass"], capture_output=True,
                              text=True, check=True).stdout.strip()
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    conf = tmp_path / "rclone.conf"
    conf.write_text(
        "[local]\ntype = local\n\n" + s3.rclone_section("s3") +
        f"\n[crypt]\ntype = crypt\nremote = local:{tmp_path / 'crypt-store'}\n"
        f"password = {obscured}\n\n" +
        s3.rclone_section("dead").replace(s3.endpoint, "http://127.0.0.1:9"))
    conf.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    subprocess.run(["rclone", "--config", str(conf), "mkdir", f"s3:{bucket}"], check=True,
                   env=env)
    return {"conf": conf, "local": f"local:{tmp_path / 'remote'}", "s3": f"s3:{bucket}/up",
            "crypt": "crypt:up", "dead": "dead:nowhere/up", "bucket": bucket}
