"""The drill of a checkpoint job: the newest checkpoint, and one older one in turn.

A checkpoint is put back the way its own hint says (checkpoints.apply_hint): its
changes.patch applied with `git apply` to its base commit, then the untracked files from
files/. Here that happens in a scratch clone of the job's work tree at that commit (the
work tree itself is never touched), and the result is checked against the checkpoint's
manifest: every file it lists has the SHA-256 SHA256SUMS records, every deletion is in
place, every tracked symlink points where it did.

Every file of the checkpoint is read through safeio (no link is followed) and checked
against SHA256SUMS before it is used; a path from CHECKPOINT.json is input as well, and
is refused unless it is a clean relative path outside .git/.

Checkpoint jobs keep no off-site copy: there is only the local source. The checkpoints
being drilled are marked in use (lock.reading): a prune meanwhile keeps them.
"""

import hashlib
import re
import stat
from pathlib import Path

from .. import checkpoints
from ..core import safeio
from ..core.errors import StrongroomError
from ..core.gitcmd import GitError, git
from ..core.lock import reading
from ..snapshots import read_sums
from .base import Artifact, FolderPlan

META = "CHECKPOINT.json"
PATCH = "changes.patch"
META_MAX = 64 << 20
_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


class CheckpointPlan(FolderPlan):
    kind = "checkpoint"
    what_store = "checkpoint folder"

    def __init__(self, job, dest, source_dir, sources, ctx):
        super().__init__(job, sources, stores=[dest])
        self.dest = Path(dest)
        self.source_dir = Path(source_dir)
        self.ctx = ctx
        self._folders = {}


    def targets(self, source):
        found = [folder for _, folder in checkpoints.checkpoints(self.dest)]
        if not found:
            return []
        older = self.ctx.rotate(f"{self.job}:checkpoint:{source}",
                                [f.name for f in found[:-1]])
        by_name = {f.name: f for f in found}
        chosen = []
        for name in [found[-1].name] + ([older] if older else []):
            folder = by_name[name]
            # held until the drill is done: a prune keeps it meanwhile
            self.held.enter_context(reading(self.dest / checkpoints.PROGRESS, folder.name,
                                             by="drill"))
            if folder.is_dir():
                self._folders[name] = folder
                chosen.append(name)
        return chosen

    def drill(self, name, source, work):
        folder = self._folders[name]
        art = Artifact(self.kind, name, self.job, source)
        sums = read_sums(folder)
        with safeio.Root(folder) as ck:
            _all_intact(ck, sums, folder, name)
            meta = _trusted_meta(ck, sums, name)
            head = meta.get("head")
            if head is not None and not (isinstance(head, str) and _SHA.match(head)):
                raise StrongroomError(f"{META} of checkpoint {name} names no commit as its "
                                      f"base ({str(head)[:80]!r})")
            repo = work / "repo"
            _base(self.source_dir, head, repo, name)
            patch = work / PATCH
            patch.write_bytes(_checked_bytes(ck, PATCH, sums, name))
            if patch.stat().st_size:
                try:
                    git(repo, "apply", "--check", str(patch))
                    git(repo, "apply", str(patch))
                except GitError as exc:
                    raise StrongroomError(f"{PATCH} of checkpoint {name} does not apply to "
                                          f"{(head or 'an empty repository')[:12]}: {exc}") \
                        from None
            files, size = _put_untracked(ck, repo, meta, sums, name)
        checked, problems = _compare(repo, meta, sums)
        if problems:
            raise StrongroomError(f"checkpoint {name}: " + "; ".join(problems[:10]))
        art.files, art.bytes = files, size
        skipped = meta.get("skipped") if isinstance(meta.get("skipped"), list) else []
        deleted = meta.get("deleted") if isinstance(meta.get("deleted"), list) else []
        art.message = (f"patch applies to {(head or 'an empty repository')[:12]}, {checked} "
                       f"file(s) match the manifest, {len(deleted)} deletion(s) in place")
        if skipped:
            art.result = "warning"
            art.message += (f"; {len(skipped)} file(s) above the size limit are not in it "
                            "(max_file_size)")
        return art

    def nothing(self):
        return (f"no checkpoints found to restore in {self.dest / checkpoints.PROGRESS} "
                f"(job {self.job}, which saves the uncommitted work of {self.source_dir}: "
                "a work tree with changes gets one at the job's next run)")


def _checked_bytes(ck, rel, sums, name, limit=None):
    """The bytes of rel, read once without following links, matching SHA256SUMS."""
    if rel not in sums:
        raise StrongroomError(f"{rel} of checkpoint {name} is not listed in its SHA256SUMS")
    try:
        with ck.open_read(rel) as fh:
            data = fh.read() if limit is None else fh.read(limit + 1)
    except FileNotFoundError:
        raise StrongroomError(f"{rel} of checkpoint {name} is missing") from None
    except (OSError, safeio.UnsafePath) as exc:
        raise StrongroomError(f"cannot read {rel} of checkpoint {name}: {exc}") from None
    if hashlib.sha256(data).hexdigest() != sums[rel]:
        raise StrongroomError(f"{rel} of checkpoint {name} does not match its checksum "
                              "(damaged or altered)")
    return data


def _all_intact(ck, sums, folder, name):
    """Every file SHA256SUMS lists is there with its hash; nothing else is."""
    for rel, digest in sorted(sums.items()):
        h = hashlib.sha256()
        try:
            with ck.open_read(rel) as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
        except FileNotFoundError:
            raise StrongroomError(f"{rel} of checkpoint {name} is missing") from None
        except (OSError, safeio.UnsafePath) as exc:
            raise StrongroomError(f"cannot read {rel} of checkpoint {name}: {exc}") from None
        if h.hexdigest() != digest:
            raise StrongroomError(f"{rel} of checkpoint {name} does not match its checksum "
                                  "(damaged or altered)")
    from ..core import fsutil

    extra = sorted(rel for rel, is_dir in fsutil.walk(folder)
                   if not is_dir and rel != checkpoints.SUMS and rel not in sums)
    if extra:
        raise StrongroomError(f"{extra[0]} in checkpoint {name} is not listed in its "
                              "SHA256SUMS")


def _trusted_meta(ck, sums, name):
    data = _checked_bytes(ck, META, sums, name, limit=META_MAX)
    try:
        meta = safeio.load_json(data, f"{META} of checkpoint {name}")
    except ValueError as exc:
        raise StrongroomError(str(exc)) from None
    if not isinstance(meta, dict):
        raise StrongroomError(f"{META} of checkpoint {name} is not a JSON object")
    return meta


def _base(source_dir, head, repo, name):
    """A scratch clone of the work tree's repository at HEAD (an empty repository when the
    checkpoint was of one with no commit yet). --shared reads the source's objects in
    place and writes nothing there."""
    if head is None:
        repo.mkdir()
        git(repo, "init", "-q")
        return
    try:
        top = git(source_dir, "rev-parse", "--show-toplevel").stdout.strip()
    except GitError as exc:
        raise StrongroomError(f"the work tree {source_dir} the checkpoint's base commit "
                              f"comes from is not a git repository: {exc}") from None
    git(repo.parent, "clone", "-q", "--no-checkout", "--shared", top, str(repo))
    proc = git(repo, "cat-file", "-e", f"{head}^{{commit}}", check=False)
    if proc.returncode != 0:
        raise StrongroomError(f"the base commit {head[:12]} of checkpoint {name} is no longer "
                              f"in {top} (rewritten or collected): its patch has nothing to "
                              "apply to")
    git(repo, "checkout", "-q", "--detach", head)


def _entries(meta):
    """The files CHECKPOINT.json lists, as clean paths outside .git/ (else refused)."""
    out = []
    for f in meta.get("files") if isinstance(meta.get("files"), list) else ():
        if not isinstance(f, dict):
            raise StrongroomError(f"{META} lists a file that is not an object")
        out.append((_clean(f.get("path")), f.get("status")))
    return out


def _clean(path):
    try:
        rel = safeio.clean_relpath(path, "checkpoint path")
    except safeio.UnsafePath as exc:
        raise StrongroomError(f"{META}: {exc}") from None
    if any(safeio.is_dotgit(p) for p in rel.split("/")):
        raise StrongroomError(f"{META} names {rel!r}, inside .git/; refusing it")
    return rel


def _put_untracked(ck, repo, meta, sums, name):
    """The untracked files from files/ into the clone, each hashed as it is copied."""
    n = size = 0
    with safeio.Root(repo) as tree:
        for rel, status in _entries(meta):
            key = f"files/{rel}"
            if key not in sums:
                raise StrongroomError(f"{META} of checkpoint {name} lists {rel}, which its "
                                      "SHA256SUMS does not")
            if status != "untracked":
                continue
            try:
                digest = safeio.copy_in(ck, key, tree, rel, mode=0o600)
            except FileExistsError:
                raise StrongroomError(f"untracked {rel} of checkpoint {name} is already in "
                                      "its base commit") from None
            except safeio.UnsafePath as exc:
                raise StrongroomError(f"refusing to restore {rel}: {exc}") from None
            if digest != sums[key]:
                raise StrongroomError(f"{key} of checkpoint {name} does not match its "
                                      "checksum (damaged or altered)")
            n += 1
            size += tree.lstat(rel).st_size
    return n, size


def _compare(repo, meta, sums):
    """The restored work tree against the manifest. Returns (files matched, problems)."""
    problems, checked = [], 0
    with safeio.Root(repo) as tree:
        for rel, _ in _entries(meta):
            h = hashlib.sha256()
            try:
                with tree.open_read(rel) as fh:
                    while chunk := fh.read(1 << 20):
                        h.update(chunk)
            except FileNotFoundError:
                problems.append(f"{rel} is missing after the restore")
                continue
            except (OSError, safeio.UnsafePath) as exc:
                problems.append(f"{rel} cannot be read after the restore: {exc}")
                continue
            if h.hexdigest() != sums.get(f"files/{rel}"):
                problems.append(f"{rel} after the patch differs from the checkpoint's copy")
                continue
            checked += 1
        for path in meta.get("deleted") if isinstance(meta.get("deleted"), list) else ():
            rel = _clean(path)
            if tree.exists(rel):
                problems.append(f"{rel} was deleted in the checkpoint, yet is there after "
                                "the restore")
        links = meta.get("symlinks") if isinstance(meta.get("symlinks"), dict) else {}
        for path, target in sorted(links.items()):
            rel = _clean(path)
            try:
                st = tree.lstat(rel)
            except FileNotFoundError:
                continue  # an untracked symlink: recorded, not in the patch
            if not stat.S_ISLNK(st.st_mode) or tree.readlink(rel) != target:
                problems.append(f"symlink {rel} does not point to {str(target)[:80]!r} "
                                "after the restore")
    return checked, problems


def plan(name, job, ctx):
    """The Plan of one checkpoint job (None when only the remote was asked: it has none)."""
    o = job["options"]
    wanted = ctx.sources(name, False)
    if not wanted:
        return None
    return CheckpointPlan(name, Path(o["dest"]).expanduser(),
                          Path(o["source"]).expanduser(), wanted, ctx)

