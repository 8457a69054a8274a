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


# The modules that take longest, longest first (measured with --durations: each provisions
# hosts with site.yml several times). With `--dist loadfile` a worker takes a whole module,
# so a long one started last keeps the other core idle until it ends; started first, the
# short modules fill the other core around it. scripts/test-all passes
# --no-loadscope-reorder, as xdist otherwise reorders modules by their test count.
LONGEST_FIRST = ("tests/integration/test_playbooks.py", "tests/fleet/test_fleet.py",
                 "tests/integration/test_local_inventory.py", "tests/integration/test_verify.py",
                 "tests/fleet/test_sync_fleet.py")


def pytest_collection_modifyitems(config, items):
    """Long modules first: the listed ones, then any other marked slow, then the rest, each
    module's tests kept together and in their own order."""
    def rank(item):
        module = item.path.relative_to(ROOT).as_posix() if item.path.is_relative_to(ROOT) \
            else str(item.path)
        if module in LONGEST_FIRST:
            return LONGEST_FIRST.index(module)
        return len(LONGEST_FIRST) if item.get_closest_marker("slow") else len(LONGEST_FIRST) + 1

    order = {}  # module: (its rank, where it was collected)
    for item in items:
        rank_, place = order.get(item.path, (rank(item), len(order)))
        order[item.path] = (min(rank_, rank(item)), place)
    items.sort(key=lambda item: order[item.path])
