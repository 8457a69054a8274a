"""Keys and files for the age tests: real age-keygen and ssh-keygen, in tmp_path."""

import hashlib
import os
import subprocess
from pathlib import Path

from strongroom import crypt


def identity(path):
    """A new age identity at `path` (0600) and its recipient."""
    path = Path(path)
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    return crypt.check_identity(path)[0]


def recipients_file(path, *lines):
    Path(path).write_text("".join(f"{line}\n" for line in lines))
    return Path(path)


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def listing(folder):
    """Every name in `folder` with its content hash: what a failure must leave as it was."""
    return {p.name: sha(p) for p in Path(folder).iterdir() if p.is_file()}


def mode(path):
    return os.stat(path).st_mode & 0o777
