"""--quiet, progress and errors: progress on stderr only for a terminal and without
--quiet; --quiet silences summaries, never errors, warnings or --json; an error under
--json is still one object on stdout, with the message on stderr too."""

import os
import pty
import subprocess

from tests.cli.support import Runner, envelope
from tests.helpers import ENV, VENV_BIN, rich_repo


def on_a_terminal(*argv):
    """Run with stderr on a pseudo-terminal; (exit code, stdout, what the terminal saw)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([str(VENV_BIN / "strongroom"), *map(str, argv)],
                            stdout=subprocess.PIPE, stderr=follower, text=True, env=ENV)
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the other end is closed: the command is done
            break
        if not chunk:
            break
        seen += chunk
    out, _ = proc.communicate(timeout=120)
    os.close(leader)
    return proc.returncode, out, seen.decode()


def tree(tmp_path):
    root = tmp_path / "tree"
    root.mkdir()
    (root / "a.txt").write_text("a\n")
    return root


def test_progress_goes_to_a_terminal_only_and_not_with_quiet(tmp_path):
    root = tree(tmp_path)
    code, out, seen = on_a_terminal("manifest", "create", root, "--out", tmp_path / "1.json")
    assert code == 0 and f"strongroom: hashing {root}" in seen
    assert "wrote" in out and "hashing" not in out  # progress never on stdout
    code, out, seen = on_a_terminal("manifest", "create", root, "--out", tmp_path / "2.json",
                                    "--quiet")
    assert code == 0 and "hashing" not in seen and out == ""
    proc = subprocess.run([str(VENV_BIN / "strongroom"), "manifest", "create", root, "--out",
                           tmp_path / "3.json"], capture_output=True, text=True, env=ENV,
                          check=False)
    assert proc.returncode == 0 and proc.stderr == ""  # under a scheduler: no progress


def test_bundle_sync_shows_per_repository_progress_on_a_terminal(tmp_path):
    rich_repo(tmp_path / "root" / "r")
    code, out, seen = on_a_terminal("bundle", "sync", "--root", tmp_path / "root", "--store",
                                    tmp_path / "store")
    assert code == 0 and "[1/1] r: " in seen
    code, out, seen = on_a_terminal("bundle", "sync", "--root", tmp_path / "root", "--store",
                                    tmp_path / "store", "--quiet")
    assert code == 0 and "[1/1]" not in seen and out == ""


def test_quiet_silences_summaries_but_not_json_or_warnings(tmp_path):
    sr = Runner(tmp_path)
    src, dest = tmp_path / "src", tmp_path / "snaps"
    src.mkdir()
    (src / "a.txt").write_text("a\n")
    now = ["snapshot", "now", "--source", src, "--dest", dest, "--immutable", "off"]
    loud = sr.run(*now, check=0)
    assert loud.stdout.strip() and "files" in loud.stderr  # the id, and the summary
    quiet = sr.run(*now, "--quiet", check=0)
    assert (quiet.stdout, quiet.stderr) == ("", "")
    both = sr.run(*now, "--quiet", "--json", check=0)
    assert envelope(both)["id"] and both.stderr == ""
    listed = sr.run("snapshot", "list", "--dest", dest, "-q", check=0)
    assert listed.stdout == ""
    proc = sr.run("snapshot", "now", "--dest", dest, "--quiet", check=2)
    assert "strongroom: error: --source DIR is required" in proc.stderr  # errors stay
    proc = sr.run("notify", "test", "--quiet", check=1)
    assert proc.stdout == ""


def test_an_error_under_json_is_the_envelope_with_the_message_on_stderr(tmp_path):
    sr = Runner(tmp_path)
    proc = sr.run("snapshot", "now", "--dest", tmp_path / "snaps", "--json", check=2)
    data = envelope(proc)
    assert data == {"result": "error", "exit_code": 2,
                    "message": "--source DIR is required (or --job NAME with 'source' in "
                               "its options)"}
    assert f"strongroom: error: {data['message']}" in proc.stderr
    proc = sr.run("run", "no-such-job", "--json", check=2)
    assert envelope(proc)["message"].startswith("no job named 'no-such-job'")


def test_a_held_lock_under_json_is_result_locked(tmp_path):
    sr = Runner(tmp_path)
    src, dest = tmp_path / "src", tmp_path / "snaps"
    src.mkdir()
    dest.mkdir()
    holder = subprocess.Popen(
        [str(VENV_BIN / "python"), "-c",
         "import sys; from strongroom.core.lock import Lock; "
         f"lock = Lock({str(dest / '.snapshot.lock')!r}, 'snapshots').acquire(); "
         "print('held', flush=True); sys.stdin.readline()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = sr.run("snapshot", "now", "--source", src, "--dest", dest, "--json")
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    data = envelope(proc)
    assert proc.returncode == 11 and data["result"] == "locked"
    assert f"is locked by PID {holder.pid}" in data["message"] and data["message"] in \
        proc.stderr
