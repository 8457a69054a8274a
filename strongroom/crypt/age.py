"""The age, age-keygen and ssh-keygen processes, and what their errors mean.

Keys reach these processes as file paths, or for `age-keygen -y` one identity line on
stdin: never in argv or the environment, where other users of the machine could read
them. Their stderr is kept in an unnamed temp file (a pipe could fill up and stall the
stream) and never carries a secret key into one of our messages."""

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import tempfile

from ..core import safeio
from . import CryptError, Damaged, WrongIdentity

CHUNK = 1 << 20
INSTALL = "apt install age (Debian/Ubuntu) or brew install age (macOS)"
_SECRET_RE = re.compile(r"AGE-SECRET-KEY-[0-9A-Z]+", re.IGNORECASE)


def binary(name):
    path = shutil.which(name)
    if path is None:
        raise CryptError(f"{name.split('-')[0]} is not installed: {INSTALL}")
    return path


def _clean(text):
    """age's own message, without its 'report at' line and without any secret key."""
    lines = [ln.removeprefix("age: error: ").removeprefix("age: ").strip()
             for ln in text.splitlines()
             if ln.strip() and "report unexpected" not in ln]
    return _SECRET_RE.sub("AGE-SECRET-KEY-(hidden)", "; ".join(lines))[:400]


def _stderr(fh):
    fh.seek(0)
    return _clean(fh.read().decode("utf-8", "replace"))


def _kill(proc):
    with contextlib.suppress(OSError):
        proc.kill()
    with contextlib.suppress(Exception):
        proc.wait()


def recipients_of(path, text):
    """The public recipients of the identities in the identity file `path` (its `text`):
    every AGE-SECRET-KEY line, one at a time through age-keygen -y on stdin (given the
    file, it only names the first), or an OpenSSH private key through ssh-keygen -y."""
    if "-----BEGIN OPENSSH PRIVATE KEY-----" in text:
        return [_ssh_public(path)]
    keygen = binary("age-keygen")
    keys = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("AGE-SECRET-KEY-")]
    bad = [ln for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")
           and not ln.strip().startswith("AGE-SECRET-KEY-")]
    if not keys or bad:
        raise CryptError(f"identity file {path} is not an age identity file (lines "
                         "AGE-SECRET-KEY-1..., as age-keygen writes) nor an OpenSSH "
                         "private key; give the identity, not the recipients file")
    found = []
    for key in keys:
        r = subprocess.run([keygen, "-y"], input=(key + "\n").encode(), capture_output=True,
                           check=False)
        out = r.stdout.decode("ascii", "replace").strip()
        if r.returncode != 0 or not out.startswith("age1"):
            raise CryptError(f"identity file {path} holds a key age-keygen cannot read "
                             f"({_clean(r.stderr.decode('utf-8', 'replace'))}); give a "
                             "valid identity")
        if out not in found:
            found.append(out)
    return found


def _ssh_public(path):
    ssh_keygen = shutil.which("ssh-keygen")
    if ssh_keygen is None:
        raise CryptError(f"identity file {path} is an OpenSSH key and ssh-keygen is not "
                         "installed: apt install openssh-client")
    # -P '': a passphrase-protected key fails here instead of prompting (age would
    # prompt when decrypting, which a job cannot answer)
    r = subprocess.run([ssh_keygen, "-y", "-P", "", "-f", str(path)],
                       stdin=subprocess.DEVNULL, capture_output=True, check=False)
    parts = r.stdout.decode("ascii", "replace").split()
    if r.returncode != 0 or len(parts) < 2 or parts[0] not in ("ssh-ed25519", "ssh-rsa"):
        raise CryptError(f"identity file {path} is an OpenSSH key that cannot be used "
                         "without a prompt (passphrase-protected, or not ed25519/rsa); give "
                         "an age identity or an unprotected ed25519 key")
    return f"{parts[0]} {parts[1]}"


def _open_src(src, what):
    try:
        return safeio.open_regular(src, follow=True)
    except safeio.UnsafePath as exc:
        raise CryptError(f"{what}: {exc}") from None
    except FileNotFoundError:
        raise CryptError(f"{src} does not exist; nothing was {what}") from None
    except OSError as exc:
        raise CryptError(f"{src} cannot be read ({exc.strerror}); nothing was {what}") from None


def _create(tmp):
    return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)


def encrypt(src, tmp, recipients_file):
    """Seal src into the new file tmp; (plain_sha256, plain_size) of what age was fed."""
    age = binary("age")
    with _open_src(src, "encrypted") as fi, tempfile.TemporaryFile() as err:
        fd = _create(tmp)
        try:
            proc = subprocess.Popen([age, "-e", "-R", str(recipients_file)],
                                    stdin=subprocess.PIPE, stdout=fd, stderr=err)
        finally:
            os.close(fd)
        h, size = hashlib.sha256(), 0
        try:
            try:
                while chunk := fi.read(CHUNK):
                    h.update(chunk)
                    size += len(chunk)
                    proc.stdin.write(chunk)
                proc.stdin.close()
            except BrokenPipeError:
                pass  # age stopped early: its exit code and stderr say why
            rc = proc.wait()
        except BaseException:
            _kill(proc)
            raise
        if rc != 0:
            raise CryptError(f"age could not encrypt {src} ({_stderr(err)}); check the "
                             f"recipients file {recipients_file}")
    return h.hexdigest(), size


def decrypt(src, tmp, identity_file, mine, recipients):
    """Open src into the new file tmp; (plain_sha256, plain_size) of what age wrote."""
    age = binary("age")
    with _open_src(src, "decrypted") as fi, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([age, "-d", "-i", str(identity_file)], stdin=fi,
                                stdout=subprocess.PIPE, stderr=err)
        h, size = hashlib.sha256(), 0
        try:
            with os.fdopen(_create(tmp), "wb") as fo:
                while chunk := proc.stdout.read(CHUNK):
                    h.update(chunk)
                    size += len(chunk)
                    fo.write(chunk)
            rc = proc.wait()
        except BaseException:
            _kill(proc)
            raise
        finally:
            proc.stdout.close()
        if rc != 0:
            raise _decrypt_error(src, identity_file, _stderr(err), mine, recipients)
    return h.hexdigest(), size


def _decrypt_error(src, identity_file, said, mine, recipients):
    if "no identity matched" in said:
        from . import _names

        sealed = f" ({_names(recipients)})" if recipients else ""
        return WrongIdentity(
            f"{src} was sealed to other keys{sealed}, not to the identity {identity_file} "
            f"(recipient {', '.join(mine)}); give the identity of one of the file's "
            "recipients (or, if it should be this one, the file's header is damaged: check "
            "it against its sidecar's age_sha256)")
    damaged = ("header", "payload", "unexpected EOF", "intro", "EOF", "stream", "chunk")
    if any(word in said for word in damaged):
        return Damaged(f"{src} is damaged or not an age file ({said}); restore from "
                       "another copy, nothing was decrypted")
    return CryptError(f"age could not decrypt {src} ({said})")


def generate(tmp):
    """A new identity in the new file tmp (0600, via age-keygen -o); its recipient.
    age-keygen prints the public key on stderr, the identity only into the file."""
    keygen = binary("age-keygen")
    r = subprocess.run([keygen, "-o", str(tmp)], stdin=subprocess.DEVNULL,
                       capture_output=True, check=False)
    if r.returncode != 0:
        raise CryptError(f"age-keygen failed: {_clean(r.stderr.decode('utf-8', 'replace'))}")
    os.chmod(tmp, 0o600)
    with open(tmp, encoding="ascii") as fh:
        text = fh.read()
    return recipients_of(tmp, text)[0]
