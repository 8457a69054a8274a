"""Reading sealed copies back: what restores and drills fetch from a remote.

A remote file X is either there as itself (a job without `encrypt_to`, or a file that
stays plain) or as X.age with its plain sidecar X.age.json. `fetch` takes whichever is
there. For a sealed one, every byte from the remote is input: the sidecar is checked
(size, JSON, types, its name), X.age's size and SHA-256 are checked against it before
the key is used, and what age decrypts is checked against the sidecar's plaintext
SHA-256 before it is renamed into place. Whatever fails, nothing is left at the
destination, and the remote is only ever read.

`open_tree` does the same for a folder already copied from the remote (a snapshot
folder): each X.age beside its sidecar becomes X. Without an identity it checks the
ciphertexts against their sidecars only, and says the plaintext was not checked.
"""

import hashlib
import json
import os
from pathlib import Path

from ..core import fsutil, remote, safeio
from . import (
    SIDECAR,
    SIDECAR_MAX,
    SUFFIX,
    Damaged,
    MissingIdentity,
    WrongIdentity,
    check_identity,
    decrypt_file,
    read_sidecar,
)

AGE_NAME = SUFFIX  # X -> X.age
SIDE_NAME = SUFFIX + SIDECAR  # X -> X.age.json


def _sidecar(body, name, where):
    """The checked sidecar of `name` (bytes from `where`; read_sidecar checks its format,
    name, hashes, sizes and recipients), or Damaged naming it."""
    try:
        return read_sidecar(body, name)
    except Damaged as exc:
        raise Damaged(f"{where}: {exc}; nothing was restored from it") from None


def _recipients_text(info):
    names = info["recipients"]
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def missing_identity(what, info):
    return MissingIdentity(f"{what} is sealed to {_recipients_text(info)}; give --identity "
                           "FILE or the job's identity option (nothing was restored)")


def opener(identity, info, what):
    """The recipient of `info` the identity file answers to (for "decrypted with ..."):
    MissingIdentity without one, WrongIdentity when it is none of the file's recipients
    (told before anything is downloaded, when both sides are plain age keys)."""
    if not identity:
        raise missing_identity(what, info)
    mine = check_identity(Path(identity).expanduser())
    shared = [r for r in info["recipients"] if r in mine]
    if shared:
        return shared[0]
    if all(r.startswith("age1") for r in list(mine) + info["recipients"]):
        raise WrongIdentity(f"{what} is sealed to {_recipients_text(info)}; the identity "
                            f"{Path(identity).name} is {', '.join(mine[:3])}: give the "
                            "identity of one of those recipients (nothing was restored)")
    return (mine or ["the identity"])[0]  # an ssh key: age itself tells


def _listing(rclone, remote_dir, names):
    """{name: size} of those of `names` the remote folder holds (one listing)."""
    listfile = rclone._listfile(names)
    try:
        proc = rclone.run("lsjson", "--files-only", "--max-depth", "1", "--no-modtime",
                          "--no-mimetype", remote_dir, "--files-from-raw", listfile,
                          check=False)
    finally:
        os.unlink(listfile)
    if proc.returncode == 3:  # no such folder: nothing of ours there
        return {}
    if proc.returncode != 0:
        meaning = remote.RCLONE_EXIT.get(proc.returncode, "unknown error")
        raise remote.RemoteError(f"cannot list {remote_dir} (rclone exit {proc.returncode}: "
                                 f"{meaning}): {remote._tail(proc.stderr)}")
    try:
        rows = json.loads(proc.stdout or "[]")
    except ValueError:
        raise remote.RemoteError(f"cannot list {remote_dir}: rclone printed no JSON") from None
    found = {}
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, dict) and row.get("Name") in names \
                and isinstance(row.get("Size"), int):
            found[row["Name"]] = row["Size"]
    return found


def _split(remote_file):
    head, sep, tail = remote_file.rstrip("/").rpartition("/")
    if not sep:  # REMOTE:name
        name_, colon, tail = remote_file.partition(":")
        return (name_ + colon if colon else "."), tail
    return head, tail


def fetch(rclone, remote_file, dest, identity=None, what=None):
    """Fetch `remote_file` (REMOTE:PATH/X) into the local path `dest`: X itself when the
    remote holds it, else X.age, checked and decrypted with `identity`. Returns
    {"sealed": False} or {"sealed": True, "recipient": ..., "plain_sha256": ...}."""
    remote_dir, name = _split(remote_file)
    what = what or remote_file
    held = _listing(rclone, remote_dir, [name, name + AGE_NAME, name + SIDE_NAME])
    if name in held or name + AGE_NAME not in held:
        rclone.fetch(remote_file, dest)  # plain, or missing: rclone says which
        return {"sealed": False}
    dest = Path(dest)
    info = _remote_sidecar(rclone, remote_dir, name, held, what, dest.parent)
    recipient = opener(identity, info, what)
    tmp = dest.with_name(f"{fsutil.TEMP_PREFIX}{dest.name}{AGE_NAME}.{os.getpid()}")
    try:
        rclone.fetch(remote.join(remote_dir, name + AGE_NAME), tmp)
        _check_age(tmp, info, f"{what}{AGE_NAME}")
        _decrypt(tmp, dest, identity, info, f"{what}{AGE_NAME}")
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return {"sealed": True, "recipient": recipient, "plain_sha256": info["plain_sha256"]}


def _decrypt(src, dst, identity, info, what):
    """decrypt_file, its errors naming the remote object rather than our scratch copy."""
    try:
        decrypt_file(src, dst, Path(identity).expanduser(),
                     expect_plain_sha256=info["plain_sha256"],
                     expect_age_sha256=info["age_sha256"], recipients=info["recipients"])
    except (Damaged, WrongIdentity) as exc:
        raise type(exc)(str(exc).replace(str(src), what)) from None


def _remote_sidecar(rclone, remote_dir, name, held, what, tmp_dir):
    side = name + SIDE_NAME
    where = f"{what}{SIDE_NAME}"
    if side not in held:
        raise Damaged(f"{what}{AGE_NAME} has no sidecar {side} on the remote (an upload "
                      "stopped before it, or it was deleted); nothing was restored from it")
    if held[side] > SIDECAR_MAX:
        raise Damaged(f"{where} is {held[side]} bytes, larger than any sidecar we write; "
                      "nothing was restored from it")
    tmp = Path(tmp_dir) / f"{fsutil.TEMP_PREFIX}{side}.{os.getpid()}"
    try:
        rclone.fetch(remote.join(remote_dir, side), tmp)
        body = safeio.read_regular(tmp, SIDECAR_MAX)
    except (OSError, safeio.UnsafePath) as exc:
        raise Damaged(f"{where}: cannot be read as a sidecar ({exc}); nothing was restored "
                      "from it") from None
    finally:
        tmp.unlink(missing_ok=True)
    info = _sidecar(body, name, where)
    if held[name + AGE_NAME] != info["age_size"]:
        raise Damaged(f"{what}{AGE_NAME} is {held[name + AGE_NAME]} bytes on the remote, its "
                      f"sidecar says {info['age_size']} (truncated or replaced); nothing was "
                      "restored from it")
    return info


def _check_age(path, info, what):
    """X.age as fetched against its sidecar, before any key touches it."""
    size = os.stat(path).st_size
    if size != info["age_size"]:
        raise Damaged(f"{what} is {size} bytes, its sidecar says {info['age_size']} "
                      "(truncated or replaced); nothing was restored from it")
    if fsutil.sha256_file(path, follow=False) != info["age_sha256"]:
        raise Damaged(f"{what} does not match the SHA-256 its sidecar records (damaged on "
                      "the remote); nothing was restored from it")


# --- a folder copied from the remote ------------------------------------------------------


def sealed_in(root, what=None):
    """{relative name X: (path of X.age, path of its sidecar)} of the sealed files a copied
    folder holds; an X.age without its sidecar or a sidecar without its X.age is Damaged,
    named as `what`/X (the remote object), else by its path in the copy."""
    root = Path(root)

    def named(rel, suffix):
        return f"{what}/{rel}{suffix}" if what else str(root / f"{rel}{suffix}")
    ages, sides = {}, {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            rel = os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/")
            if rel.endswith(SIDE_NAME):
                sides[rel[:-len(SIDE_NAME)]] = root / rel
            elif rel.endswith(AGE_NAME):
                ages[rel[:-len(AGE_NAME)]] = root / rel
    if not sides:  # nothing sealed here: a file called X.age is content like any other
        return {}
    out = {}
    for rel in sorted(set(ages) | set(sides)):
        if rel not in ages:
            raise Damaged(f"{named(rel, SIDE_NAME)} describes {Path(rel).name}{AGE_NAME}, "
                          "which the remote does not hold; nothing was restored from it")
        if rel not in sides:
            raise Damaged(f"{named(rel, AGE_NAME)} has no sidecar "
                          f"{Path(rel).name}{SIDE_NAME} (an upload stopped before it, or it "
                          "was deleted); nothing was restored from it")
        out[rel] = (ages[rel], sides[rel])
    return out


def _tree_infos(root, what):
    found = {}
    for rel, (age, side) in sealed_in(root, what).items():
        try:
            body = safeio.read_regular(side, SIDECAR_MAX)
        except (OSError, safeio.UnsafePath) as exc:
            raise Damaged(f"{what}/{rel}{SIDE_NAME}: cannot be read as a sidecar ({exc}); "
                          "nothing was restored from it") from None
        info = _sidecar(body, Path(rel).name, f"{what}/{rel}{SIDE_NAME}")
        _check_age(age, info, f"{what}/{rel}{AGE_NAME}")
        found[rel] = (age, side, info)
    return found


def open_tree(root, identity, what):
    """Turn every X.age (with its sidecar) under `root`, a folder copied from the remote,
    into X. Returns {"sealed": n, "recipients": [...], "checked": "plaintext" | "ciphertext"}.
    Without an identity (None), every ciphertext is checked against its sidecar and left
    as it is ("ciphertext": the plaintext was not checked). Every ciphertext is checked
    before any is decrypted; a failure leaves none of the decrypted files behind."""
    root = Path(root)
    found = _tree_infos(root, what)
    recipients = sorted({r for _a, _s, info in found.values() for r in info["recipients"]})
    if not found:
        return {"sealed": 0, "recipients": [], "checked": "plaintext", "opened_with": None}
    if identity is None:
        return {"sealed": len(found), "recipients": recipients, "checked": "ciphertext",
                "opened_with": None}
    used = set()
    for rel, (_age, _side, info) in found.items():
        used.add(opener(identity, info, f"{what}/{rel}"))
    made = []
    try:
        for rel, (age, _side, info) in found.items():
            plain = root / rel
            if os.path.lexists(plain):
                # sent plain before encrypt_to was set, and sealed since: the same content
                # twice is no doubt (the plain copy stands), other content is
                if _plain_sha256(plain) != info["plain_sha256"]:
                    raise Damaged(f"{what}/{rel} is on the remote both plain and sealed, "
                                  "with other content in each; nothing was restored from it")
                continue
            _decrypt(age, plain, identity, info, f"{what}/{rel}{AGE_NAME}")
            made.append(plain)
    except BaseException:
        for p in made:
            p.unlink(missing_ok=True)
        raise
    for _rel, (age, side, _info) in found.items():
        age.unlink()
        side.unlink()
    return {"sealed": len(found), "recipients": recipients, "checked": "plaintext",
            "opened_with": sorted(used)}


def _plain_sha256(path):
    """SHA-256 of a regular file copied from the remote (a link or anything else: None)."""
    digest = hashlib.sha256()
    try:
        with safeio.open_regular(path) as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except (OSError, safeio.UnsafePath):
        return None
    return digest.hexdigest()


def said(result):
    """What a drill's artifact message says of the sealed files it read."""
    if not result or not result.get("sealed"):
        return None
    if result["checked"] == "ciphertext":
        return (f"{result['sealed']} sealed file(s) match their sidecars' SHA-256; the "
                "plaintext was not checked (no key: give the job an identity or --identity "
                "FILE)")
    return f"decrypted with {', '.join(result['opened_with'])}"


IDENTITY_HELP = ("an age identity file (0600) that opens what the remote holds sealed "
                 "(default: the job's identity option)")


def add_identity(parser):
    """--identity FILE on a restore or drill verb (the job's `identity` when not given)."""
    parser.add_argument("--identity", metavar="FILE", help=IDENTITY_HELP)


def fetch_tree(rclone, remote_dir, local_dir, identity, what, need_key=True, leave=()):
    """Copy the folder `remote_dir` into the new folder `local_dir` and open what it holds
    sealed (open_tree). need_key: without an identity a sealed file is MissingIdentity
    (a restore); else only the ciphertexts are checked (a drill with no key). leave: rclone
    filter patterns of what is not copied at all (what the restore does not read)."""
    rclone.run("copy", remote_dir, str(local_dir),
               *[arg for pattern in leave for arg in ("--exclude", pattern)])
    if identity is None and need_key:
        found = _tree_infos(Path(local_dir), what)
        if found:
            raise missing_identity(what, {"recipients": sorted(
                {r for _a, _s, info in found.values() for r in info["recipients"]})})
    return open_tree(local_dir, identity, what)


def check_remote(rclone, remote_file, what=None, scratch=None):
    """Without the key: X.age on the remote against its sidecar (size, then SHA-256 as the
    remote reports it). Returns None when the remote holds X plain, or neither (the caller
    reads it as before, and says what is missing as before), else the sidecar; Damaged
    naming the object otherwise."""
    remote_dir, name = _split(remote_file)
    what = what or remote_file
    held = _listing(rclone, remote_dir, [name, name + AGE_NAME, name + SIDE_NAME])
    if name in held or name + AGE_NAME not in held:
        return None
    import tempfile

    with tempfile.TemporaryDirectory(prefix="strongroom-sidecar-", dir=scratch) as tmp:
        info = _remote_sidecar(rclone, remote_dir, name, held, what, tmp)
    got = rclone.sha256s(remote_dir, [name + AGE_NAME]).get(name + AGE_NAME)
    if got != info["age_sha256"]:
        raise Damaged(f"{what}{AGE_NAME} does not match the SHA-256 its sidecar records "
                      "(damaged on the remote)")
    return info


def plain_names(names):
    """A remote folder's listing as its files are named once opened: X.age is X, and the
    sidecars are no files of the backup's."""
    for n in names:
        if n.endswith(SIDE_NAME):
            continue
        yield n.removesuffix(AGE_NAME)


def sidecar_says(rclone, remote_root, name):
    """For re-verification without the key: the SHA-256 the sidecar of the sealed object
    `name` (a path ending .age under `remote_root`) records for it. (sha, None), or
    (None, what is wrong with the sidecar); (None, None) when `name` is not sealed."""
    if not name.endswith(AGE_NAME):
        return None, None
    import tempfile

    plain = name[: -len(AGE_NAME)]
    base = plain.rsplit("/", 1)[-1]
    folder = remote.join(remote_root, plain.rsplit("/", 1)[0]) if "/" in plain else remote_root
    held = _listing(rclone, folder, [base + SIDE_NAME])
    if base + SIDE_NAME not in held:
        return None, None  # no sidecar (a file called X.age, or a job without one)
    if held[base + SIDE_NAME] > SIDECAR_MAX:
        return None, (f"{plain}{SIDE_NAME} is {held[base + SIDE_NAME]} bytes, larger than any "
                      "sidecar we write")
    with tempfile.TemporaryDirectory(prefix="strongroom-sidecar-") as tmp:
        local = Path(tmp) / "sidecar.json"
        proc = rclone.run("copyto", remote.join(remote_root, plain + SIDE_NAME), str(local),
                          check=False)
        if proc.returncode != 0:
            return None, f"{plain}{SIDE_NAME} cannot be read from the remote"
        try:
            info = _sidecar(safeio.read_regular(local, SIDECAR_MAX), base,
                            f"{plain}{SIDE_NAME}")
        except (Damaged, OSError, safeio.UnsafePath) as exc:
            return None, str(exc)
    return info["age_sha256"], None
