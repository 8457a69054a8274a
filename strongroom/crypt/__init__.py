"""Sealing files with age before they leave the machine, and opening them again.

Everything goes through the `age` and `age-keygen` binaries (age.py), streaming: a
multi-GB archive never sits in memory, and what we write is exactly what a user restores
by hand with `age -d -i IDENTITY FILE`. Identities and recipients files are only ever
given to age as paths, never as contents in argv or the environment.

Every output is written to a temp file beside its destination and renamed into place
only when whole (and, for a decryption, only when its SHA-256 is the one expected):
whatever fails, nothing is left at the destination and the source is never touched.

A sealed file X.age has a plain sidecar X.age.json (`sidecar`, `read_sidecar`) holding
its name, its recipients and the hashes and sizes of both sides, so that a copy on a
remote can be checked without the key and a decryption checked against what was sealed.
"""

import errno
import json
import os
import re
import stat
from pathlib import Path

from ..core import fsutil, safeio
from ..core.errors import StrongroomError

SUFFIX = ".age"  # X is sent as X.age
SIDECAR = ".json"  # X.age has a plain sidecar X.age.json
HEADER = b"age-encryption.org/v1"
SIDECAR_MAX = 64 << 10  # a sidecar is a few hundred bytes
KEYFILE_MAX = 1 << 20  # recipients and identity files are lines of text
MAX_RECIPIENTS = 1000


class CryptError(StrongroomError):
    """Sealing or opening failed; the message says what and what to do."""


class MissingIdentity(CryptError):
    """No identity was given, or its file is not there."""


class WrongIdentity(CryptError):
    """The identity is not one of the file's recipients."""


class Damaged(CryptError):
    """Truncated, bit-flipped, not an age file, or not the plaintext that was sealed."""


from . import age as _age  # noqa: E402  (needs the error classes above)

# age1 + 58 bech32 characters: an X25519 recipient, what age-keygen prints
_AGE_RE = re.compile(r"^age1[02-9ac-hj-np-z]{58}$")
_SSH_RE = re.compile(r"^(ssh-ed25519|ssh-rsa) ([A-Za-z0-9+/]+={0,2})(?: .*)?$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _read_text(path, what):
    try:
        data = safeio.read_regular(path, limit=KEYFILE_MAX, follow=True)
    except safeio.UnsafePath as exc:
        raise CryptError(f"{what} {path}: {exc}") from None
    except OSError as exc:
        raise CryptError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise CryptError(f"{what} {path} is not UTF-8 text") from None


def _ssh_ok(kind, b64):
    """The base64 key blob names its own type first, as every OpenSSH public key does."""
    import base64
    import binascii

    try:
        blob = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    n = int.from_bytes(blob[:4], "big")
    return len(blob) > 4 + n and blob[4:4 + n] == kind.encode()


def parse_recipient(line):
    """The recipient on one line of a recipients file (an SSH key without its comment),
    or None when the line is not one age takes."""
    if _AGE_RE.match(line):
        return line
    m = _SSH_RE.match(line)
    if m and _ssh_ok(m.group(1), m.group(2)):
        return f"{m.group(1)} {m.group(2)}"
    return None


def check_recipients(path):
    """The recipients in an age recipients file (as `age -R` takes it): age1... keys,
    ssh-ed25519 and ssh-rsa public keys, '#' comments and blank lines."""
    path = Path(path)
    if not os.path.lexists(path):
        raise CryptError(f"recipients file {path} does not exist; create it with one public "
                         "key a line (strongroom key generate --recipients FILE prints one)")
    text = _read_text(path, "recipients file")
    found = []
    # the rules age itself applies (so `age -R FILE` by hand reads the same file): a
    # comment starts with '#' in the first column, a blank line is empty
    for n, line in enumerate(text.splitlines(), 1):
        if not line or line.startswith("#"):
            continue
        if not line.strip() or line != line.strip():
            raise CryptError(f"recipients file {path}, line {n}: spaces around the key or a "
                             "line of spaces only, which age refuses; remove them")
        # anywhere and in any case: a BOM, "key=" or a lowercased key is still a private
        # key, and must not be echoed by the error below
        if "SECRET-KEY" in line.upper() or "-----BEGIN" in line:
            raise CryptError(f"recipients file {path}, line {n}: this is a private key, not a "
                             "recipient; remove it from the file now and put its public key "
                             "there instead (strongroom key recipient IDENTITY prints it)")
        recipient = parse_recipient(line)
        if recipient is None:
            # the line is not echoed: whatever it holds (a password pasted in the wrong
            # file) would reach the status, the log and the notification
            raise CryptError(f"recipients file {path}, line {n}: not an age recipient "
                             "(age1..., ssh-ed25519 AAAA... or ssh-rsa AAAA...); its "
                             f"{len(line)} characters are not shown, in case they are a "
                             "secret")
        if recipient not in found:
            found.append(recipient)
        if len(found) > MAX_RECIPIENTS:
            raise CryptError(f"recipients file {path} has more than {MAX_RECIPIENTS} recipients")
    if not found:
        raise CryptError(f"recipients file {path} holds no recipients; add the public key "
                         "(age1...) of every identity that may open the backups, one a line")
    return found


def check_identity(path):
    """The public recipients of an identity file (age-keygen -y for age keys, ssh-keygen
    -y for an OpenSSH private key). Its permissions must keep it private."""
    if path is None:
        raise MissingIdentity("no identity given; give --identity FILE (an age identity "
                              "file, as strongroom key generate writes)")
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MissingIdentity(f"identity file {path} does not exist; give the identity "
                              "(age-identity.txt) of one of the recipients") from None
    except OSError as exc:
        raise CryptError(f"identity file {path} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise CryptError(f"identity file {path} is not a regular file")
    if st.st_mode & 0o077:
        # a readable file that holds no private key at all (a recipients file given by
        # mistake) is named for what it is, not sent to chmod
        try:
            upper = _read_text(path, "identity file").upper()
        except CryptError:
            upper = "SECRET-KEY"
        if "SECRET-KEY" not in upper and "PRIVATE KEY" not in upper:
            raise CryptError(f"identity file {path} holds no private key (a recipients file "
                             "of public keys?); give the identity (AGE-SECRET-KEY-1..., as "
                             "age-keygen writes it), not the recipients file")
        raise CryptError(f"identity file {path} is readable by others (mode "
                         f"{stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path} (and ask "
                         "whether someone else has read it)")
    return _age.recipients_of(path, _read_text(path, "identity file"))


def encrypt_file(src, dst, recipients_file):
    """Seal `src` to every recipient in `recipients_file` as `dst` (mode 0600, atomic).
    Returns {plain_sha256, plain_size, age_sha256, age_size}."""
    check_recipients(recipients_file)
    src, dst = Path(src), Path(dst)
    tmp = fsutil.temp_path(dst)
    try:
        plain_sha, plain_size = _age.encrypt(src, tmp, Path(recipients_file))
        info = {"plain_sha256": plain_sha, "plain_size": plain_size,
                "age_sha256": fsutil.sha256_file(tmp), "age_size": os.path.getsize(tmp)}
        os.chmod(tmp, 0o600)
        fsutil.commit(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return info


def decrypt_file(src, dst, identity_file, expect_plain_sha256=None, expect_age_sha256=None,
                 recipients=None):
    """Open the age file `src` with `identity_file` as `dst` (mode 0600, atomic). The
    ciphertext is checked against `expect_age_sha256` before the key is used, and the
    plaintext against `expect_plain_sha256` before it is renamed into place; on any
    failure nothing is left at `dst`. `recipients` (from the sidecar) names the keys the
    file was sealed to in a WrongIdentity message."""
    src, dst = Path(src), Path(dst)
    try:
        mine = check_identity(identity_file)
    except MissingIdentity as exc:
        if not recipients:
            raise
        raise MissingIdentity(f"{src} is sealed to {_names(recipients)}: {exc}") from None
    try:
        age_sha = fsutil.sha256_file(src)
        age_size = os.path.getsize(src)
    except FileNotFoundError:
        raise Damaged(f"{src} does not exist; nothing was decrypted") from None
    except OSError as exc:
        raise Damaged(f"{src} cannot be read ({exc.strerror or exc}); nothing was "
                      "decrypted") from None
    if expect_age_sha256 is not None and age_sha != expect_age_sha256:
        raise Damaged(f"{src} is damaged: its SHA-256 is not the one recorded when it was "
                      "sealed (a bit flip or a truncated copy); restore from another copy, "
                      "nothing was decrypted")
    if not is_age_file(src):
        # said here, not by age: its own error quotes the file's first bytes, which may be
        # a plaintext stored under an .age name
        raise Damaged(f"{src} is damaged or not an age file (it does not start with the age "
                      "header); restore from another copy, nothing was decrypted")
    tmp = fsutil.temp_path(dst)
    try:
        plain_sha, plain_size = _age.decrypt(src, tmp, Path(identity_file), mine, recipients)
        if expect_plain_sha256 is not None and plain_sha != expect_plain_sha256:
            raise Damaged(f"{src} decrypted, but not to the plaintext that was sealed (its "
                          "SHA-256 differs from the sidecar's); nothing was restored from it")
        os.chmod(tmp, 0o600)
        fsutil.commit(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"plain_sha256": plain_sha, "plain_size": plain_size,
            "age_sha256": age_sha, "age_size": age_size}


def _names(recipients, most=5):
    names = [str(r) for r in recipients]
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def is_age_file(path):
    """True when `path` starts with the age header line (binary, not armored)."""
    try:
        with safeio.open_regular(path, follow=True) as fh:
            head = fh.read(len(HEADER) + 1)
    except (OSError, safeio.UnsafePath):
        return False
    return head == HEADER + b"\n"


# --- sidecars ------------------------------------------------------------------------------

def sidecar(info, name, recipients):
    """The bytes of X.age.json for the sealed file X (`name`, a base name)."""
    body = {"format": 1, "name": name, "recipients": list(recipients),
            "plain_sha256": info["plain_sha256"], "plain_size": info["plain_size"],
            "age_sha256": info["age_sha256"], "age_size": info["age_size"]}
    return (json.dumps(body, indent=2, sort_keys=True) + "\n").encode("ascii")


def read_sidecar(path_or_bytes, name):
    """The checked sidecar of the sealed file `name`, from its bytes or its path; Damaged
    when it is not one we wrote for that name."""
    if isinstance(path_or_bytes, (bytes, bytearray)):
        where, data = f"the sidecar of {name}", bytes(path_or_bytes)
        if len(data) > SIDECAR_MAX:
            raise Damaged(f"{where} is {len(data)} bytes, larger than any sidecar we write")
    else:
        where = str(path_or_bytes)
        try:
            data = safeio.read_regular(path_or_bytes, limit=SIDECAR_MAX, follow=True)
        except safeio.UnsafePath as exc:
            raise Damaged(f"{where}: {exc}") from None
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise Damaged(f"{where} is missing: the sealed file {name} has no "
                              "sidecar") from None
            raise Damaged(f"{where} cannot be read: {exc.strerror or exc}") from None
    try:
        body = safeio.load_json(data, where)
    except ValueError as exc:
        raise Damaged(str(exc)) from None
    if not isinstance(body, dict) or body.get("format") != 1:
        raise Damaged(f"{where} is not a sidecar we write (format 1)")
    if body.get("name") != name:
        raise Damaged(f"{where} describes {str(body.get('name'))[:100]!r}, not {name!r}")
    for key in ("plain_sha256", "age_sha256"):
        if not (isinstance(body.get(key), str) and _HEX64.match(body[key])):
            raise Damaged(f"{where}: its {key} is not a SHA-256")
    for key in ("plain_size", "age_size"):
        v = body.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise Damaged(f"{where}: its {key} is not a size")
    rec = body.get("recipients")
    if not (isinstance(rec, list) and 0 < len(rec) <= MAX_RECIPIENTS
            and all(isinstance(r, str) and 0 < len(r) < 2048 for r in rec)):
        raise Damaged(f"{where}: its recipients are not a list of public keys")
    return {k: body[k] for k in ("format", "name", "recipients", "plain_sha256",
                                 "plain_size", "age_sha256", "age_size")}
