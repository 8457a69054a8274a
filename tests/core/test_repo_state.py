"""RepoState reads a plain checkout's git dir without starting git, and asks git for
everything else: both ways must give what `git rev-parse` says."""

import os

import pytest

from strongroom.core import gitcmd
from strongroom.core.gitcmd import GitError, RepoState, plain_checkout
from tests.helpers import commit, g, init


def asked(path):
    out = g(path, "rev-parse", "--absolute-git-dir", "--is-bare-repository",
            "--is-shallow-repository").split("\n")
    return out[0], out[1] == "true", out[2] == "true"


def state_of(path):
    s = RepoState(path)
    return str(s.git_dir), s.bare, s.shallow


@pytest.fixture
def repo(tmp_path):
    path = init(tmp_path / "r")
    commit(path, {"a.txt": "a"})
    return path


def test_a_plain_checkout_is_read_without_git_and_agrees_with_it(repo, monkeypatch):
    assert plain_checkout(repo) is not None
    calls = []
    real = gitcmd.git
    monkeypatch.setattr(gitcmd, "git", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    assert state_of(repo) == asked(repo)
    assert "rev-parse" not in calls and calls[0] == "for-each-ref"


def test_a_linked_path_gives_the_real_git_dir(repo, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(repo)
    assert state_of(link) == asked(link)


@pytest.mark.parametrize("how", ["core-bare", "worktree", "include", "shallow",
                                 "commondir", "bad-head", "no-refs", "linked-dotgit"])
def test_anything_unusual_is_left_to_git(repo, tmp_path, how):
    dotgit = repo / ".git"
    if how == "core-bare":
        g(repo, "config", "core.bare", "true")
    elif how == "worktree":
        g(repo, "config", "core.worktree", str(repo))
    elif how == "include":
        g(repo, "config", "include.path", str(tmp_path / "nothing"))
    elif how == "shallow":
        (dotgit / "shallow").write_text(g(repo, "rev-parse", "HEAD"))
    elif how == "commondir":
        (dotgit / "commondir").write_text("..\n")
    elif how == "bad-head":
        (dotgit / "HEAD").write_text("garbage\n")
    elif how == "no-refs":
        os.rename(dotgit / "refs", dotgit / "refs.away")
    else:
        os.rename(dotgit, tmp_path / "real.git")
        dotgit.symlink_to(tmp_path / "real.git")
    assert plain_checkout(repo) is None
    if how in ("bad-head", "no-refs", "commondir"):
        with pytest.raises(GitError):  # git refuses it (or finds no repository)
            RepoState(repo)
    else:
        assert state_of(repo) == asked(repo)
    if how == "shallow":
        assert RepoState(repo).shallow
    if how == "core-bare":
        assert RepoState(repo).bare


def test_core_bare_false_is_still_a_plain_checkout(repo):
    g(repo, "config", "core.bare", "false")
    assert plain_checkout(repo) is not None
    assert state_of(repo) == asked(repo)


def test_an_environment_that_moves_git_is_left_to_git(repo, monkeypatch):
    monkeypatch.setenv("GIT_DIR", str(repo / ".git"))
    assert plain_checkout(repo) is None


def test_a_git_file_is_left_to_git(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / ".git").write_text("gitdir: /nonexistent/place\n")
    assert plain_checkout(bad) is None
    with pytest.raises(GitError, match="rev-parse"):
        RepoState(bad)
