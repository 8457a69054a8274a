"""`strongroom key generate|recipient|check-recipients`: the age keys a job's `encrypt_to`
seals to and a restore's `--identity` opens with.

An identity (the private key) never goes to stdout, stderr, a log or the --json object:
only its public recipient (age1...) is printed.
"""

import contextlib
import os
from pathlib import Path

from ..core import fsutil
from ..core.errors import OK, WARNING
from . import output

KEEP = ("Keep a copy of the identity somewhere other than this machine and its backups "
        "(a password manager, or printed and locked away): without it, nothing sealed to "
        "this recipient can be opened, and a copy inside the backups is sealed too.")


def _default_out(config_dir):
    return Path(config_dir) / "secrets" / "age-identity.txt"


def _old_recipient(path):
    """The recipient of the identity about to be replaced, to name it (best effort)."""
    from .. import crypt

    with contextlib.suppress(crypt.CryptError, OSError):
        return ", ".join(crypt.check_identity(path))
    return None


def _recipients_lines(path):
    """The recipients already in FILE (it must parse when it holds any), or [] when it
    does not exist or holds only comments."""
    from .. import crypt

    if not os.path.lexists(path):
        return []
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    if not any(ln.strip() and not ln.strip().startswith("#") for ln in text.splitlines()):
        return []
    return crypt.check_recipients(path)


def _append_recipient(path, recipient):
    """Add `recipient` as a line of the recipients file (created 0644)."""
    path = Path(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "r+b") as fh:
        size = os.fstat(fd).st_size
        prefix = b""
        if size:
            fh.seek(size - 1)
            prefix = b"" if fh.read(1) == b"\n" else b"\n"
        fh.write(prefix + recipient.encode("ascii") + b"\n")
        fh.flush()
        os.fsync(fd)
    return True


def cmd_generate(args):
    from .. import crypt
    from ..crypt import age

    default = args.out is None
    out = Path(args.out).expanduser() if args.out else _default_out(args.config_dir)
    rfile = Path(args.recipients).expanduser() if args.recipients else None
    existing = _recipients_lines(rfile) if rfile else []  # a broken file: refuse first
    if os.path.lexists(out) and not args.force:
        raise crypt.CryptError(
            f"{out} already exists; not overwriting an identity (it may be the only key that "
            "opens your backups). `strongroom key recipient` prints its recipient; to "
            "replace it, keep a copy of it first, then give --force")
    if default:
        fsutil.make_parents(out.parent.parent)
        with contextlib.suppress(FileExistsError):
            out.parent.mkdir(0o700)
        os.chmod(out.parent, 0o700)  # secrets/: no one else lists what it holds
    elif not out.parent.is_dir():
        raise crypt.CryptError(f"folder {out.parent} does not exist; create it (mode 0700) "
                               "or give another --out")
    replaced = _old_recipient(out) if os.path.lexists(out) else None
    was_there = os.path.lexists(out)
    tmp = fsutil.temp_path(out)
    tmp.unlink(missing_ok=True)  # a killed earlier run of ours (the PID is in the name)
    try:
        recipient = age.generate(tmp)
        if args.force:
            fsutil.commit(tmp, out)
        else:
            fsutil.fsync_file(tmp)
            try:
                os.link(tmp, out)  # never over a file that appeared meanwhile
            except FileExistsError:
                raise crypt.CryptError(f"{out} appeared while the identity was being "
                                       "written; nothing was changed") from None
            tmp.unlink()
            fsutil.fsync_dir(out.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    added = False
    if rfile and recipient not in existing:
        added = _append_recipient(rfile, recipient)
    code = OK
    notes = []
    if was_there:
        code = WARNING
        notes.append(f"replaced the identity at {out}" + (
            f" (it was {replaced}; files sealed to it open only with a copy of it)"
            if replaced else ""))
    output.say(args, recipient)
    output.tell(args, f"Wrote a new age identity to {out} (mode 0600).",
                f"Its public recipient: {recipient}")
    if rfile:
        output.tell(args, f"{'Added it to' if added else 'Already in'} the recipients file "
                          f"{rfile}.")
    for note in notes:
        output.warn(note)
    output.tell(args, KEEP)
    message = f"new identity {out}, recipient {recipient}" + (f"; {notes[0]}" if notes else "")
    return output.emit(args, code, message, {
        "identity": str(out), "recipient": recipient, "replaced": was_there,
        "recipients_file": str(rfile) if rfile else None, "added": added, "keep": KEEP})


def cmd_recipient(args):
    from .. import crypt

    path = Path(args.identity).expanduser()
    found = crypt.check_identity(path)
    output.say(args, *found)
    return output.emit(args, OK, f"{path}: {len(found)} recipient(s)",
                       {"identity": str(path), "recipients": found})


def cmd_check_recipients(args):
    from .. import crypt

    path = Path(args.file).expanduser()
    found = crypt.check_recipients(path)
    output.say(args, *found)
    output.tell(args, f"{path}: {len(found)} recipient(s), all valid")
    return output.emit(args, OK, f"{path}: {len(found)} recipient(s), all valid",
                       {"recipients_file": str(path), "recipients": found,
                        "count": len(found)})


def add_parser(sub):
    _, ksub = output.group(sub, "key", help="age keys: the identity restores open with and "
                                           "the recipients jobs seal to (encrypt_to)")
    g = output.verb(ksub, "generate", help="write a new age identity and print its recipient",
                    description="Write a new age identity (age-keygen), mode 0600, and print "
                                "its public recipient (age1...). It never overwrites an "
                                "existing file without --force. Keep a copy of the identity "
                                "somewhere other than this machine and its backups.",
                    epilog=output.epilog("1 when --force replaced an identity; 2 when the "
                                         "file exists (without --force), age is not "
                                         "installed or the recipients file does not parse"))
    g.add_argument("--out", metavar="FILE", default=None,
                   help="where to write the identity (default "
                        "<config-dir>/secrets/age-identity.txt, in a 0700 folder)")
    g.add_argument("--recipients", metavar="FILE", default=None,
                   help="also add the recipient to this recipients file (created 0644 when "
                        "missing): the file a job's encrypt_to names")
    g.add_argument("--force", action="store_true",
                   help="replace an existing identity (files sealed to it then open only "
                        "with a copy of it)")
    g.set_defaults(func=cmd_generate)
    r = output.verb(ksub, "recipient", help="print the public recipient(s) of an identity",
                    epilog=output.epilog("2 when the file is missing, unreadable, readable "
                                         "by others or not an identity"))
    r.add_argument("identity", metavar="FILE", help="an age identity file (or an unprotected "
                                                   "OpenSSH ed25519/rsa private key)")
    r.set_defaults(func=cmd_recipient)
    c = output.verb(ksub, "check-recipients", help="check a recipients file (encrypt_to)",
                    description="Parse an age recipients file as a job's encrypt_to uses it: "
                                "age1..., ssh-ed25519 and ssh-rsa public keys, one a line, "
                                "with '#' comments and blank lines. Prints the recipients.",
                    epilog=output.epilog("2 when the file is missing, empty or a line is not "
                                         "a recipient (the line number is named)"))
    c.add_argument("file", metavar="FILE", help="the recipients file")
    c.set_defaults(func=cmd_check_recipients)
