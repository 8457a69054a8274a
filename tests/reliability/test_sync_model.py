"""Two-machine sync, explored like a model checker would.

hypothesis drives a desktop and a laptop clone of one bare remote through random
sequences of what users do (edit, create, delete, rename, stage, append a possibly
repeated line to an append file, edit a block file on both sides, push, pull, resolve)
and of faults (the remote offline, a connection dropped mid-fetch, a damaged JSON file
before a push, a run killed between its steps). After every step:
- a step that failed left its side exactly as it was (HEAD, branch, index, status, every
  file with its mode), a block only adding the other side's copies (*.theirs);
- every change either user made is present on one side, or named in a block, or was
  replaced by a later change made by someone who had it in front of them;
- every line a side appended to the append file is still there, as often as appended.
The examples are derandomized (a failure replays) and bounded (the suite stays fast):
STRONGROOM_SYNC_MODEL_EXAMPLES sets how many.
"""

import hashlib
import os
import shutil
import stat
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from strongroom import sync
from tests.helpers import VENV_BIN, g

SIDES = ("desk", "lap")
PATHS = ("a.txt", "b.txt", "notes/c.md", "deep/d/e.txt")
LINES = ("- weekly report sent", "- call the bank", "- fixed it")
POLICIES = {"log.md": "append", "tasks.json": "block"}
EXAMPLES = int(os.environ.get("STRONGROOM_SYNC_MODEL_EXAMPLES", "12"))


@dataclass
class Change:
    side: str
    path: str
    content: str | None  # None: deleted
    superseded: bool = False


def fingerprint(repo):
    files = {}
    for dirpath, dirs, names in os.walk(repo):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in names:
            p = Path(dirpath) / name
            files[str(p.relative_to(repo))] = (stat.S_IMODE(p.lstat().st_mode),
                                               hashlib.sha256(p.read_bytes()).hexdigest())
    return (g(repo, "rev-parse", "HEAD").strip(), g(repo, "symbolic-ref", "-q", "HEAD").strip(),
            g(repo, "ls-files", "-s"), g(repo, "status", "--porcelain", "-uall"), files)


def without_theirs(fp):
    head, branch, index, status, files = fp
    status = "".join(ln + "\n" for ln in status.splitlines() if not ln.endswith(".theirs"))
    return head, branch, index, status, {k: v for k, v in files.items()
                                         if not k.endswith(".theirs")}


class TwoMachines(RuleBasedStateMachine):
    @initialize()
    def setup(self):
        os.environ.update(GIT_AUTHOR_NAME="T", GIT_AUTHOR_EMAIL="t@example.org",
                          GIT_COMMITTER_NAME="T", GIT_COMMITTER_EMAIL="t@example.org")
        self.tmp = Path(tempfile.mkdtemp(prefix="sync-model-"))
        self.remote = self.tmp / "remote.git"
        g(self.tmp, "init", "-q", "--bare", "-b", "main", str(self.remote))
        self.repo = {s: self.tmp / s for s in SIDES}
        g(self.tmp, "clone", "-q", str(self.remote), str(self.repo["desk"]))
        desk = self.repo["desk"]
        for rel, text in {"log.md": "# log\n", "tasks.json": "[]\n", "data.json": "{}\n",
                          "a.txt": "a0\n"}.items():
            (desk / rel).write_text(text)
        g(desk, "add", "-A")
        g(desk, "commit", "-q", "-m", "start")
        g(desk, "push", "-q", "origin", "main")
        self.settings = {s: sync.Settings(repo=self.repo[s], policies=dict(POLICIES),
                                             role="primary" if s == "desk" else "secondary",
                                             timeout=20)
                         for s in SIDES}
        self.changes = [Change("desk", "a.txt", "a0\n")]
        self.appended = {s: Counter() for s in SIDES}
        self.blocked = {s: set() for s in SIDES}
        self.n = 0
        self.ready = False
        self._op("desk", sync.push)
        g(self.tmp, "clone", "-q", str(self.remote), str(self.repo["lap"]))
        self._op("lap", sync.pull)
        self.ready = True

    def teardown(self):
        shutil.rmtree(getattr(self, "tmp", "/nonexistent"), ignore_errors=True)

    # --- helpers ------------------------------------------------------------------------

    def _op(self, side, fn, *args):
        s = self.settings[side]
        sync.install_policies(s, str(VENV_BIN / "strongroom"))
        before = fingerprint(self.repo[side])
        result = fn(s, *args)
        if result["result"] == "error":
            after = fingerprint(self.repo[side])
            if result.get("blocked"):
                assert without_theirs(after) == without_theirs(before), result
                self.blocked[side] = set(result["conflicts"])
            else:
                assert after == before, result  # a failed step changed nothing
        elif result["operation"] in ("pull", "resolve"):
            self.blocked[side] = set()
        return result

    def _read(self, side, rel):
        p = self.repo[side] / rel
        return p.read_text() if p.is_file() else None

    def _change(self, side, rel, content):
        current = self._read(side, rel)
        for c in self.changes:  # what this user had in front of them is replaced
            if c.path == rel and not c.superseded and c.content == current:
                c.superseded = True
        self.changes.append(Change(side, rel, content))
        p = self.repo[side] / rel
        if content is None:
            p.unlink(missing_ok=True)
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(content)

    def _unique(self, side):
        self.n += 1
        return f"{side} wrote this, #{self.n}\n"

    # --- what users do ---------------------------------------------------------------------

    @rule(side=st.sampled_from(SIDES), rel=st.sampled_from(PATHS))
    def edit(self, side, rel):
        self._change(side, rel, self._unique(side))

    @rule(side=st.sampled_from(SIDES), rel=st.sampled_from(PATHS))
    def delete(self, side, rel):
        if self._read(side, rel) is not None:
            self._change(side, rel, None)

    @rule(side=st.sampled_from(SIDES), src=st.sampled_from(PATHS), dst=st.sampled_from(PATHS))
    def rename(self, side, src, dst):
        content = self._read(side, src)
        if content is not None and src != dst and self._read(side, dst) is None:
            self._change(side, src, None)
            self._change(side, dst, content)

    @rule(side=st.sampled_from(SIDES))
    def stage(self, side):
        g(self.repo[side], "add", "-A")

    @rule(side=st.sampled_from(SIDES), line=st.sampled_from(LINES))
    def append(self, side, line):
        with open(self.repo[side] / "log.md", "a") as fh:
            fh.write(line + "\n")
        self.appended[side][line] += 1

    @rule(desk=st.lists(st.sampled_from(LINES), min_size=1, max_size=3),
          lap=st.lists(st.sampled_from(LINES), min_size=1, max_size=3))
    def both_append(self, desk, lap):
        """A day on both machines: each adds lines, often the same words as before."""
        for side, lines in (("desk", desk), ("lap", lap)):
            for line in lines:
                self.append(side, line)

    @rule(first=st.sampled_from(SIDES))
    def sync_round(self, first):
        """What the schedules do between two days: one side pushes, the other pulls and
        pushes, the first pulls."""
        second = "lap" if first == "desk" else "desk"
        results = [self._op(side, op) for side, op in (
            (first, sync.push), (second, sync.pull), (second, sync.push),
            (first, sync.pull))]
        if all(r["result"] == "ok" for r in results):
            # met: both machines hold every line either one appended, as often as in all
            total = self.appended["desk"] + self.appended["lap"]
            for side in SIDES:
                lines = Counter((self.repo[side] / "log.md").read_text().splitlines()[1:])
                assert lines == total, f"{side}: {dict(lines)} != appended {dict(total)}"

    @rule(side=st.sampled_from(SIDES))
    def edit_block_file(self, side):
        self._change(side, "tasks.json", f'["{self._unique(side).strip()}"]\n')

    @rule(side=st.sampled_from(SIDES))
    def push(self, side):
        self._op(side, sync.push)

    @rule(side=st.sampled_from(SIDES))
    def pull(self, side):
        self._op(side, sync.pull)

    @rule(side=st.sampled_from(SIDES), how=st.sampled_from(["hand", "ours", "theirs"]))
    def resolve(self, side, how):
        if not self.blocked[side]:
            return
        paths = sorted(self.blocked[side])
        for rel in paths:  # the user read both versions: they are replaced by the outcome
            for version in (self._read(side, rel), self._read(side, rel + ".theirs")):
                for c in self.changes:
                    if c.path == rel and c.content == version:
                        c.superseded = True
            if how == "hand":
                self._change(side, rel, f"merged by hand on {side} #{self.n}\n")
        result = self._op(side, sync.resolve, paths if how == "hand" else [],
                          None if how == "hand" else how)
        assert result["result"] == "ok", result
        if how != "hand":
            for rel in paths:
                self.changes.append(Change(side, rel, self._read(side, rel)))

    # --- faults ----------------------------------------------------------------------------

    @rule(side=st.sampled_from(SIDES), op=st.sampled_from(["push", "pull"]))
    def remote_offline(self, side, op):
        away = self.tmp / "remote-away"
        os.rename(self.remote, away)
        try:
            result = self._op(side, getattr(sync, op))
        finally:
            os.rename(away, self.remote)
        assert result["result"] == "error"

    @rule(side=st.sampled_from(SIDES), cut=st.sampled_from([1, 200, 5000]))
    def connection_dropped_mid_fetch(self, side, cut):
        script = self.tmp / f"drop-{cut}.sh"
        script.write_text(f'#!/bin/sh\ngit-upload-pack "$@" | head -c {cut}\n')
        script.chmod(0o755)
        g(self.repo[side], "config", "remote.origin.uploadpack", str(script))
        try:
            self._op(side, sync.pull)  # fails, or gets all it needed: both are fine
        finally:
            g(self.repo[side], "config", "--unset", "remote.origin.uploadpack")

    @rule(side=st.sampled_from(SIDES))
    def damaged_json_before_push(self, side):
        path = self.repo[side] / "data.json"
        good = path.read_text()
        path.write_text('{"broken": ')
        result = self._op(side, sync.push)
        # refused before anything moves: for the damage, or first for a block that waits
        assert result["result"] == "error" and ("not valid JSON" in result["message"] or
                                                "a blocked merge is unresolved" in
                                                result["message"]), result
        path.write_text(good)

    @rule(side=st.sampled_from(SIDES), point=st.sampled_from(
        ["pull-after-fetch", "pull-after-commit", "pull-after-merge", "push-after-commit"]))
    def killed_between_steps(self, side, point):
        s = self.settings[side]
        sync.install_policies(s, str(VENV_BIN / "strongroom"))
        before = fingerprint(self.repo[side])
        os.environ["STRONGROOM_TEST_CRASH"] = point
        try:
            (sync.pull if point.startswith("pull") else sync.push)(s)
        except sync._Crash:
            # no handler ran; what the next run does first is this rollback
            sync.rollback(s)
            assert fingerprint(self.repo[side]) == before
        finally:
            del os.environ["STRONGROOM_TEST_CRASH"]

    @rule(side=st.sampled_from(SIDES), point=st.sampled_from(
        ["pull-after-fetch", "pull-after-commit", "pull-after-merge", "push-after-commit"]),
        rel=st.sampled_from(PATHS))
    def killed_then_kept_working(self, side, point, rel):
        """The machine dies mid-sync, the user works on before the next run: that run's
        recovery undoes the killed step, never the work done since."""
        s = self.settings[side]
        sync.install_policies(s, str(VENV_BIN / "strongroom"))
        os.environ["STRONGROOM_TEST_CRASH"] = point
        try:
            (sync.pull if point.startswith("pull") else sync.push)(s)
        except sync._Crash:
            pass
        finally:
            del os.environ["STRONGROOM_TEST_CRASH"]
        self._change(side, rel, self._unique(side))
        result = sync.pull(s)
        if result.get("blocked"):
            self.blocked[side] = set(result["conflicts"])
        elif result["result"] != "error":
            self.blocked[side] = set()
        self.check_nothing_lost()

    # --- invariants --------------------------------------------------------------------------

    def check_nothing_lost(self):
        for c in self.changes:
            if c.superseded:
                continue
            here = [self._read(side, c.path) for side in SIDES]
            theirs = [self._read(side, c.path + ".theirs") for side in SIDES]
            named = any(c.path in self.blocked[side] for side in SIDES)
            assert c.content in here or (c.content is not None and c.content in theirs) \
                or named, f"lost: {c} (desk {here[0]!r}, lap {here[1]!r})"
        for side in SIDES:
            lines = Counter((self.repo[side] / "log.md").read_text().splitlines())
            for line, count in self.appended[side].items():
                assert lines[line] >= count, f"{side} lost appended {line!r}"


class Model(TwoMachines):
    def _op(self, side, fn, *args):
        result = super()._op(side, fn, *args)
        if self.ready:
            self.check_nothing_lost()
        return result


@pytest.mark.slow
def test_no_change_is_ever_lost():
    run = Model.TestCase
    run.settings = settings(max_examples=EXAMPLES, stateful_step_count=14, deadline=None,
                            derandomize=True, database=None, print_blob=True,
                            suppress_health_check=list(HealthCheck))
    run("runTest").runTest()
