"""Sealing on the way off-site: a job with `encrypt_to` sends each file that can hold user
content (strongroom/crypt/policy.py) only as an age file, X.age, with its plain sidecar
X.age.json beside it; the files that stay plain go as they always did.

Each sealed file is encrypted into a staging folder (0700) under the job's state, which
holds ciphertext and sidecars only and is removed when the run ends, whatever way it ends
(one left by a killed run is removed by the next). The ciphertexts go first, each proven
by hash; their sidecars only after that, so a sidecar on the remote means its X.age is
complete there.

age output is random, so a file is sealed once: a sidecar (kept under the job's state once
it is proven on the remote, else read back from the remote) that names the same plaintext
SHA-256 means X.age is there already, and it is checked by its ciphertext hash, not sent
again. Before anything is sent the sidecar is kept as pending: a rerun after a run killed
between a complete X.age and its sidecar sends just the sidecar (a new ciphertext would
conflict with the immutable copy); after a run killed inside X.age the partial copy is
replaced by the upload journal, as any partial file is.
"""

import contextlib
import hashlib
import os
import secrets
from pathlib import Path

from ..core import fsutil, s3api, safeio
from ..core.errors import StrongroomError
from ..core.remote import RemoteError
from ..crypt import policy

STAGING = "seal-staging"  # <state>/seal-staging/<pid>-<random>/
RECORDS = "sealed"  # <state>/sealed/<dest key>/{pending,done}/X.age.json
SIDECAR_MAX = 64 << 10  # a sidecar is a few hundred bytes; a bigger one is not ours


def _suffix():
    from .. import crypt

    return crypt.SUFFIX, crypt.SUFFIX + crypt.SIDECAR


def age_name(name):
    return name + _suffix()[0]


def sidecar_name(name):
    return name + _suffix()[1]


def remote_hashes(out, expected):
    """{remote name: SHA-256} an upload's result (`out`) proves for `expected` ({local name:
    plaintext SHA-256}): a plain file by its own hash, a sealed one by its X.age's, once its
    sidecar says it sealed exactly that plaintext."""
    sealed = out.get("sealed") or {}
    found = {}
    for name, sha in expected.items():
        info = sealed.get(name)
        if info is None:
            found[name] = sha
        elif info["plain_sha256"] != sha:
            raise RemoteError(f"{age_name(name)} seals other content than {name} holds "
                              f"(sealed {info['plain_sha256'][:12]}, expected {sha[:12]})")
        else:
            found[age_name(name)] = info["age_sha256"]
    return found


class Seal:
    """What a job's `encrypt_to` asks of its uploads. state_dir: where staging and the
    sidecar records go (the job's upload journal folder when not given)."""

    def __init__(self, recipients_file, state_dir=None, everything=False):
        self.recipients_file = Path(recipients_file).expanduser()
        self.state_dir = state_dir
        # `strongroom upload` of a user's own folder: no name there is ours to leave plain
        self.everything = everything

    def _sealed(self, name):
        return self.everything or policy.sealed(name)

    def check(self):
        """The recipients, or a CryptError naming the file and line (before any upload)."""
        from .. import crypt

        return crypt.check_recipients(self.recipients_file)

    def send(self, up, src, dest, base, names, skipped, immutable, delete_local, dry_run):
        """Upload.run for `names` under `base`, sealing what policy.sealed says."""
        recipients = self.check()
        state = self.state_dir or up.journal_dir
        if state is None:
            raise StrongroomError("sealing needs a state folder for its staging (none given)")
        state = Path(state)
        sealed = [n for n in names if self._sealed(n)]
        plain = [n for n in names if not self._sealed(n)]
        out = {"src": str(src), "dest": dest, "files": len(names),
               "bytes": sum((base / n).stat().st_size for n in names), "skipped": skipped,
               "dry_run": dry_run, "transferred": [], "bytes_moved": 0, "verified_by": None,
               "deleted": [], "kept": [], "changed": False, "sealed": {}}
        stamps = {n: (base / n).stat() for n in sealed}
        if plain:
            self._merge(out, self._inner(up, up.journal_dir).run(
                src, dest, immutable=immutable, delete_local=delete_local, dry_run=dry_run,
                only=plain))
        if sealed and dry_run:
            out["transferred"] += [age_name(n) for n in sealed]
            out["changed"] = True
        elif sealed:
            staging = _staging(state)
            try:
                self._send_sealed(up, dest, base, sealed, recipients, immutable, state,
                                  staging, out)
            finally:
                fsutil.rmtree_quiet(staging)
        if delete_local and not dry_run and sealed:
            from . import Upload

            Upload._delete(base, src, sealed, {n: s.st_size for n, s in stamps.items()},
                           {n: s.st_mtime_ns for n, s in stamps.items()}, out)
        out["transferred"] = sorted(set(out["transferred"]))
        out["changed"] = out["changed"] or bool(out["transferred"])
        verb = "would copy" if dry_run else "copied"
        # a dry run seals nothing, so it cannot say the ciphertexts' size
        moved = "" if dry_run else f" ({out['bytes_moved']} bytes)"
        others = len(out.get("other_recipients") or ())
        out["message"] = (f"{len(out['transferred'])} file(s) {verb}{moved}, "
                          f"{len(sealed) - others} of {len(names)} "
                          f"{'would be sealed' if dry_run else 'sealed'} for "
                          f"{self.recipients_file.name}"
                          + ("" if dry_run else f", all verified by {out['verified_by']}")
                          + (f"; {len(out['other_recipients'])} stay sealed to earlier "
                             "recipients (the remote copy is immutable; keep the identity "
                             "that opens them): " + ", ".join(out["other_recipients"][:5])
                             if out.get("other_recipients") else "")
                          + (f", {len(out['deleted'])} deleted locally" if delete_local
                             else ""))
        return out

    @staticmethod
    def _inner(up, journal_dir):
        from . import Upload

        return Upload(up.rclone, journal_dir=journal_dir, progress=up.progress,
                      ledger=up.ledger, lock=up.lock)

    @staticmethod
    def _merge(out, part):
        out["transferred"] += part.get("transferred", [])
        out["bytes_moved"] += part.get("bytes_moved", 0)
        out["deleted"] += part.get("deleted", [])
        out["kept"] += part.get("kept", [])
        out["changed"] = out["changed"] or part.get("changed", False)
        if part.get("verified_by"):  # "download" (the weaker) wins over "hash"
            out["verified_by"] = ("download" if "download" in (out["verified_by"],
                                                               part["verified_by"])
                                  else part["verified_by"])

    def _send_sealed(self, up, dest, base, names, recipients, immutable, state, staging, out):
        from .. import crypt
        from . import _hash_all

        records = _Records(state, dest)
        ours = _hash_all(base, names)
        missing = [n for n in names if not ours.get(n)]
        if missing:
            raise StrongroomError(f"cannot read {', '.join(missing[:5])} in {base} to seal")
        # a copy sealed to other recipients (a key rotated or revoked since) is not one
        # this run may call sealed for the file named now: it is sealed again and replaced,
        # or, on a remote that keeps what it holds, kept and said
        wanted = sorted(recipients)
        done, pending, unknown, others = {}, {}, [], []
        for n in names:
            for kind, into in (("done", done), ("pending", pending)):
                got = records.read(kind, n)
                if got and got[1]["plain_sha256"] == ours[n] and (
                        kind == "pending" or sorted(got[1]["recipients"]) == wanted):
                    into[n] = got
                    break
            else:
                unknown.append(n)
        for n, got in self._remote_sidecars(up, dest, unknown, staging / "remote").items():
            if got[1]["plain_sha256"] != ours[n]:
                continue
            if sorted(got[1]["recipients"]) != wanted:
                if not immutable:
                    continue  # sealed again below, and the remote copy replaced
                others.append(n)
            done[n] = got  # sealed before (by a run whose records are gone): kept
            records.write("done", n, got[0])
        out["other_recipients"] = sorted(others)
        # a pending one whose X.age is complete on the remote needs only its sidecar
        local = up.rclone.local_path(dest)
        there = up._same_content(dest, local, {age_name(n): got[1]["age_sha256"]
                                               for n, got in pending.items()},
                                 [age_name(n) for n in pending]) if pending else set()
        resume = {n: got for n, got in pending.items() if age_name(n) in there}
        fresh = [n for n in names if n not in done and n not in resume]
        ages, sides = staging / "age", staging / "sidecar"
        for d in (ages, sides):
            d.mkdir(parents=True, mode=0o700)
        for i, n in enumerate(fresh, 1):
            up.progress(f"sealing {n} ({i} of {len(fresh)})")
            (ages / n).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            info = crypt.encrypt_file(base / n, ages / age_name(n), self.recipients_file)
            if info["plain_sha256"] != ours[n]:
                raise StrongroomError(f"{base / n} changed while it was sealed; run again")
            body = crypt.sidecar(info, Path(n).name, recipients)
            records.write("pending", n, body)
            resume[n] = (body, info)
        for n, (body, _info) in resume.items():
            (sides / n).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fsutil.atomic_write_bytes(sides / sidecar_name(n), body, mode=0o600)
        if fresh:  # the ciphertexts, each proven by hash ...
            self._merge(out, self._inner(up, state / "journal-age").run(
                ages, dest, immutable=immutable, only=[age_name(n) for n in fresh]))
        if resume:  # ... then what describes them
            self._merge(out, self._inner(up, state / "journal-sidecar").run(
                sides, dest, immutable=immutable, only=[sidecar_name(n) for n in resume]))
            for n, (body, _info) in resume.items():
                records.write("done", n, body)
                records.drop("pending", n)
        if done:
            self._check_done(up, dest, local, done, out)
        # what was on the remote before this run (an X.age a killed or refused run sent, a
        # file sealed by an earlier one) is locked here: the uploads above lock only what
        # they sent, and an X.age left unlocked would be deletable while its status said
        # it was held
        earlier = [age_name(n) for n in resume if n not in fresh]
        earlier += [x for n in done for x in (age_name(n), sidecar_name(n))]
        self._lock(up, dest, earlier, out)
        out["sealed"] = {n: got[1] for n, got in {**done, **resume}.items()}

    @staticmethod
    def _lock(up, dest, names, out):
        """Lock NAMES under DEST where they hold no retention yet (ObjectLock.apply)."""
        lock = up.lock or s3api.active()
        if lock is None or not names:
            return
        try:
            out["lock"] = lock.apply(up.rclone, dest, sorted(names), ())
        except StrongroomError as exc:
            raise RemoteError(f"remote copy on {dest} verified but not locked, nothing "
                              f"local deleted: {exc}") from None

    @staticmethod
    def _check_done(up, dest, local, done, out):
        """What was sealed before: its X.age and sidecar on the remote, by hash."""
        expected = {}
        sizes = {}
        for n, (body, info) in done.items():
            expected[age_name(n)] = info["age_sha256"]
            sizes[age_name(n)] = info["age_size"]
            expected[sidecar_name(n)] = hashlib.sha256(body).hexdigest()
            sizes[sidecar_name(n)] = len(body)
        up.progress(f"checking {len(done)} file(s) sealed before on {dest}")
        good = up._same_content(dest, local, expected, sorted(expected))
        bad = sorted(set(expected) - good)
        if bad:
            raise RemoteError(f"remote copy on {dest} failed verification, nothing local "
                              "deleted: " + "; ".join(f"{n}: missing or differs on the remote"
                                                     for n in bad[:10]))
        if up.ledger is not None:
            up.ledger.record(dest, {n: (sizes[n], expected[n]) for n in expected})
        out["verified_by"] = out["verified_by"] or "hash"

    @staticmethod
    def _remote_sidecars(up, dest, names, into):
        """{name: (bytes, sidecar)} of the sidecars the remote holds for `names`; a missing,
        oversized or malformed one is no sidecar (the file is sealed and sent again, and an
        immutable remote then refuses it as a conflict, as for any other file)."""
        from .. import crypt

        if not names:
            return {}
        sizes = up._remote_sizes(dest, [sidecar_name(n) for n in names])
        wanted = [s for s, size in sizes.items() if isinstance(size, int) and size <= SIDECAR_MAX]
        if not wanted:
            return {}
        into.mkdir(parents=True, mode=0o700)
        listfile = up.rclone._listfile(sorted(wanted))
        try:
            up.rclone.run("copy", dest, str(into), "--files-from-raw", listfile, check=False)
        finally:
            os.unlink(listfile)
        found = {}
        for n in names:
            with contextlib.suppress(OSError, ValueError, safeio.UnsafePath, crypt.CryptError):
                body = safeio.read_regular(into / sidecar_name(n), SIDECAR_MAX)
                found[n] = (body, _valid(crypt.read_sidecar(body, Path(n).name)))
        return found


def _valid(info):
    for key in ("plain_sha256", "age_sha256"):
        if not isinstance(info.get(key), str) or len(info[key]) != 64:
            raise ValueError(f"sidecar without a valid {key}")
    for key in ("plain_size", "age_size"):
        if not isinstance(info.get(key), int) or isinstance(info[key], bool):
            raise ValueError(f"sidecar without a valid {key}")
    return info


class _Records:
    """The sidecars a job sealed for one remote folder, kept under its state: `pending`
    before they are sent, `done` once proven there."""

    def __init__(self, state, dest):
        key = hashlib.sha256(dest.encode()).hexdigest()[:16]
        self.root = Path(state) / RECORDS / key

    def _path(self, kind, name):
        return self.root / kind / sidecar_name(name)

    def read(self, kind, name):
        from .. import crypt

        try:
            body = safeio.read_regular(self._path(kind, name), SIDECAR_MAX)
            return body, _valid(crypt.read_sidecar(body, Path(name).name))
        except (OSError, ValueError, safeio.UnsafePath, crypt.CryptError):
            return None

    def write(self, kind, name, body):
        path = self._path(kind, name)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fsutil.atomic_write_bytes(path, body, mode=0o600)

    def drop(self, kind, name):
        self._path(kind, name).unlink(missing_ok=True)


def _staging(state):
    """A fresh private staging folder; those of runs that are gone are removed first."""
    parent = Path(state) / STAGING
    parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(parent, 0o700)
    for entry in parent.iterdir():
        pid = entry.name.split("-", 1)[0]
        if not pid.isdigit() or not fsutil.pid_alive(int(pid)):
            fsutil.rmtree_quiet(entry)
    path = parent / f"{os.getpid()}-{secrets.token_hex(4)}"
    path.mkdir(mode=0o700)
    return path


def for_options(options, config_dir, state_dir=None):
    """The Seal a job's (or a verb's) `encrypt_to` asks for, or None. A relative path is
    taken from the config dir, where a job's other files are."""
    value = (options or {}).get("encrypt_to")
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_absolute() and config_dir is not None:
        path = Path(config_dir) / path
    return Seal(path, state_dir)
