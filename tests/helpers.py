"""Real git repositories for tests, built with the git CLI (no mocks)."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
ENV = dict(os.environ, GIT_AUTHOR_NAME="T", GIT_AUTHOR_EMAIL="t@example.org",
           GIT_COMMITTER_NAME="T", GIT_COMMITTER_EMAIL="t@example.org", LC_ALL="C")


def g(repo, *args, check=True):
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          env=ENV, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {args} failed: {proc.stderr}")
    return proc.stdout


def init(path, bare=False):
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    g(path, "init", "-q", "-b", "main", *(["--bare"] if bare else []))
    return path


def commit(repo, files, message="change"):
    """Write {relative path: str|bytes} and commit them."""
    for rel, content in files.items():
        p = Path(repo) / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content, encoding="utf-8")
    g(repo, "add", "-A")
    g(repo, "commit", "-q", "-m", message)
    return g(repo, "rev-parse", "HEAD").strip()


def rich_repo(path):
    """Branches, annotated and lightweight tags, a merge, binary, rename, unicode, notes."""
    repo = init(path)
    commit(repo, {"README.md": "hello\n", "data.bin": bytes(range(256)) * 64}, "initial")
    g(repo, "tag", "v0.1")
    g(repo, "tag", "-a", "v0.1-annotated", "-m", "annotated tag")
    g(repo, "checkout", "-q", "-b", "feature")
    commit(repo, {"src/ünïcode 文件.txt": "unicode path\n"}, "unicode")
    g(repo, "mv", "README.md", "README.txt")
    g(repo, "commit", "-q", "-m", "rename")
    g(repo, "checkout", "-q", "main")
    commit(repo, {"main.txt": "main side\n"}, "main work")
    g(repo, "merge", "-q", "--no-edit", "feature")
    g(repo, "branch", "old-topic", "HEAD~1")
    g(repo, "notes", "add", "-m", "a note", "HEAD")
    return repo


def big_repo(path, megabytes=24):
    """Incompressible content, so bundling takes long enough to be interrupted."""
    repo = init(path)
    for i in range(4):
        commit(repo, {f"blob{i}.bin": os.urandom(megabytes * 1024 * 1024 // 4)}, f"big {i}")
    return repo


def refs(repo):
    return g(repo, "for-each-ref", "--format=%(objectname) %(refname)")


def head(repo):
    return g(repo, "symbolic-ref", "-q", "HEAD", check=False).strip() or g(
        repo, "rev-parse", "HEAD").strip()


def strongroom(*args, check=None, env=None, timeout=120):
    """Run the real CLI in a subprocess; returns the CompletedProcess."""
    proc = subprocess.run([str(VENV_BIN / "strongroom"), *map(str, args)], capture_output=True,
                          text=True, env=env or ENV, timeout=timeout, check=False)
    if check is not None and proc.returncode != check:
        raise AssertionError(f"strongroom {args} exited {proc.returncode}, expected {check}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def sync_json(root, store, *extra, check=0):
    proc = strongroom("bundle", "sync", "--root", root, "--store", store, "--json", *extra,
                      check=check)
    return json.loads(proc.stdout)


def by_name(report):
    return {r["name"]: r for r in report["repositories"]}


def store_snapshot(store):
    """{relative path: (size, mtime_ns)} of every file in the store, for 'nothing written'."""
    out = {}
    for p in Path(store).rglob("*"):
        if p.is_file() and p.name != ".strongroom.lock":  # the lock is runtime state
            st = p.stat()
            out[p.relative_to(store).as_posix()] = (st.st_size, st.st_mtime_ns)
    return out
