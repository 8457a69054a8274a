"""A git pre-push hook: snapshot the work tree, then refuse pushes that carry oversized files.

The hook file is a two-line shell script that hands over to the engine, so upgrading the
engine upgrades the hook. A hook we did not write is never overwritten without --force,
and then it is kept beside ours.
"""

import os
import shlex
import subprocess
import sys
from pathlib import Path

from ..core import fsutil
from ..core.errors import StrongroomError
from ..core.formats import human_bytes
from ..core.gitcmd import git, git_env
from ..jobs import config

MARK = "# strongroom pre-push hook"
ZERO = "0" * 40


class HookError(StrongroomError):
    pass


def _top(repo):
    proc = git(repo, "rev-parse", "--show-toplevel", check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise HookError(f"{repo} is not a git work tree")
    return Path(proc.stdout.strip())


def hook_path(repo):
    """Where git looks for pre-push in this repository, core.hooksPath included."""
    top = _top(repo)
    # not gitcmd.git: its safety settings point core.hooksPath at /dev/null
    proc = subprocess.run(["git", "-C", str(top), "rev-parse", "--git-path", "hooks"],
                          capture_output=True, text=True, env=git_env(), check=False)
    hooks = Path(proc.stdout.strip())
    return top, (hooks if hooks.is_absolute() else top / hooks) / "pre-push"


def snapshot_options(top, config_dir, state_dir, job=None, dest=None, dry_run=False):
    """What the hook snapshots into: --job, --dest, the snapshot job of this repository,
    or <state-dir>/pre-push/<repository name>."""
    if job:
        if dry_run and not (Path(config_dir) / "jobs" / f"{job}.yml").exists():
            return {"job": job}  # a check-mode run, before the job file is written
        config.load_job_of_type(config_dir, job, "snapshot")
        return {"job": job}
    if dest:
        return {"dest": str(Path(dest).absolute())}
    for name in config.job_names(config_dir):
        try:
            loaded = config.load_job(config_dir, name)
        except StrongroomError:
            continue
        src = loaded.get("options", {}).get("source")
        if loaded["type"] == "snapshot" and src and Path(src).expanduser().resolve() == top:
            return {"job": name}
    return {"dest": str(Path(state_dir) / "pre-push" / top.name)}


def script(max_size, snap, config_dir, state_dir):
    # the engine's own interpreter: the hook runs in whatever shell git was started from
    argv = [sys.executable, "-m", "strongroom", "--config-dir", str(config_dir),
            "--state-dir", str(state_dir), "hook", "pre-push", "--max-size", str(max_size)]
    argv += ["--job", snap["job"]] if "job" in snap else ["--dest", snap["dest"]]
    return ("#!/bin/sh\n"
            f"{MARK}: `strongroom hook uninstall` removes it; "
            "`git push --no-verify` skips it once.\n"
            f'exec {shlex.join(argv)} "$@"\n')


def install(repo, max_size, config_dir, state_dir, job=None, dest=None, force=False,
            dry_run=False):
    top, path = hook_path(repo)
    snap = snapshot_options(top, config_dir, state_dir, job, dest, dry_run)
    text = script(max_size, snap, config_dir, state_dir)
    out = {"repo": str(top), "hook": str(path), "max_size": max_size, "snapshot": snap,
           "changed": False, "replaced": None}
    current = path.read_text(encoding="utf-8", errors="replace") if path.exists() else None
    if current == text and os.access(path, os.X_OK):
        return out
    if current is not None and MARK not in current:
        if not force:
            raise HookError(f"{path} is another pre-push hook; Strongroom leaves it alone. "
                            "Merge the two by hand, or use --force (the old hook is kept "
                            "beside it as pre-push.before-strongroom)")
        out["replaced"] = str(path.with_name("pre-push.before-strongroom"))
    out["changed"] = True
    if dry_run:
        return out
    path.parent.mkdir(parents=True, exist_ok=True)
    if out["replaced"]:
        os.replace(path, out["replaced"])
    fsutil.atomic_write_bytes(path, text.encode(), mode=0o755)
    os.chmod(path, 0o755)  # noqa: S103 -- git runs a hook only when it is executable
    return out


def uninstall(repo, dry_run=False):
    top, path = hook_path(repo)
    out = {"repo": str(top), "hook": str(path), "changed": False}
    if not path.exists():
        return out
    if MARK not in path.read_text(encoding="utf-8", errors="replace"):
        raise HookError(f"{path} was not installed by Strongroom; left alone")
    out["changed"] = True
    if not dry_run:
        path.unlink()
        kept = path.with_name("pre-push.before-strongroom")
        if kept.exists():
            os.replace(kept, path)
            out["restored"] = str(path)
    return out


def _pushed_objects(top, remote, lines):
    """`rev-list --objects` of what the push sends: new commits and everything they hold."""
    revs = []
    for line in lines:
        parts = line.split()
        if len(parts) != 4 or parts[1] == ZERO:
            continue  # a malformed line, or a branch being deleted: nothing sent
        local, remote_sha = parts[1], parts[3]
        if remote_sha != ZERO and git(top, "cat-file", "-e", f"{remote_sha}^{{commit}}",
                                      check=False).returncode == 0:
            revs += [local, f"^{remote_sha}"]
        else:  # a new branch, or a remote we have not fetched: what no remote ref has
            revs += [local, "--not", f"--remotes={remote}", "--not"]
    if not revs:
        return ""
    return git(top, "rev-list", "--objects", *revs).stdout


def oversized(top, remote, lines, max_size):
    """[(bytes, path, blob)] of blobs above max_size that the push would send, biggest first."""
    objects = _pushed_objects(top, remote, lines)
    if not objects.strip():
        return []
    checked = git(top, "cat-file", "--batch-check=%(objecttype) %(objectname) %(objectsize) "
                  "%(rest)", input=objects).stdout
    found = {}
    for row in checked.splitlines():
        kind, sha, size, *rest = row.split(" ", 3)
        if kind == "blob" and int(size) > max_size:
            found.setdefault(sha, (int(size), rest[0] if rest else sha, sha))
    return sorted(found.values(), reverse=True)


def refusal(big, max_size, snapshot_id):
    lines = [f"strongroom: push refused: {len(big)} file(s) above "
             f"{human_bytes(max_size)} would be pushed:"]
    lines += [f"  {human_bytes(size):>10}  {path}" for size, path, _ in big]
    lines += ["Take them out of the commits (git rm --cached FILE, list it in .gitignore, "
              "then git commit --amend or an interactive rebase), or push with --no-verify.",
              f"A snapshot of the work tree was taken first: {snapshot_id}." if snapshot_id
              else "The work tree holds no files, so no snapshot was taken."]
    return "\n".join(lines)
