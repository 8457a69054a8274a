"""What the sealing tests share: age keys made with age-keygen, job files, and a reader
of every byte a remote holds (decompressed, tar members opened; nothing decrypted)."""

import gzip
import hashlib
import io
import json
import os
import secrets
import subprocess
import tarfile
from pathlib import Path

from strongroom import crypt, jobs
from strongroom.crypt import policy

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"


def make_keys(tmp):
    """(identity file 0600, recipients file with a comment and a blank line)."""
    keys = Path(tmp) / "keys"
    keys.mkdir(mode=0o700, parents=True, exist_ok=True)
    identity = keys / "identity.txt"
    subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
    identity.chmod(0o600)
    public = subprocess.run(["age-keygen", "-y", str(identity)], check=True,
                            capture_output=True, text=True).stdout.strip()
    recipients = keys / "recipients.txt"
    recipients.write_text(f"# the backup key\n\n{public}\n")
    return identity, recipients


def canary():
    return "CANARY-" + secrets.token_hex(16)


def bed(tmp, remote_conf=None):
    """(conf dir, state dir, Paths): conf holds an rclone.conf with [offsite] (a local
    folder remote) unless another one is given."""
    conf, state = Path(tmp) / "conf", Path(tmp) / "state"
    (conf / "jobs").mkdir(parents=True)
    if remote_conf:
        (conf / "rclone.conf").write_text(Path(remote_conf).read_text())
    else:
        (conf / "rclone.conf").write_text("[offsite]\ntype = local\n")
    (conf / "rclone.conf").chmod(0o600)
    return conf, state, jobs.Paths(conf, state, state / "log")


def write_job(conf, name, type_, options):
    lines = [f"name: {name}", f"type: {type_}", "options:"]
    for key, value in options.items():
        lines.append(f"  {key}: {json.dumps(value)}")
    (Path(conf) / "jobs" / f"{name}.yml").write_text("\n".join(lines) + "\n")


def fetch_remote(conf, remote_path, into):
    """A copy of everything under REMOTE:PATH (an empty folder when there is none)."""
    into = Path(into)
    into.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    subprocess.run(["rclone", "--config", str(Path(conf) / "rclone.conf"), "copy",
                    remote_path, str(into)], capture_output=True, env=env, check=False)
    return into


def files_of(root):
    root = Path(root)
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _expand(data, depth=0):
    """The bytes, and every decompressed form and tar member inside them."""
    yield data
    if depth > 3:
        return
    inner = None
    if data.startswith(ZSTD_MAGIC):
        proc = subprocess.run(["zstd", "-q", "-d", "-c"], input=data, capture_output=True,
                              check=False)
        inner = proc.stdout if proc.returncode == 0 else None
    elif data.startswith(GZIP_MAGIC):
        try:
            inner = gzip.decompress(data)
        except (OSError, EOFError):
            inner = None
    if inner:
        yield from _expand(inner, depth + 1)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar:
                if member.isfile():
                    yield from _expand(tar.extractfile(member).read(), depth + 1)
                yield member.name.encode()
    except (tarfile.TarError, EOFError, OSError):
        pass


def assert_nowhere(secret, root):
    """The secret is in no byte under root, compressed, archived or as it is."""
    needle = secret.encode()
    for rel in files_of(root):
        for blob in _expand((Path(root) / rel).read_bytes()):
            assert needle not in blob, f"the canary is readable in {rel}"


def assert_sealed_layout(root):
    """Every file on the remote is a plain one (policy), an X.age or its X.age.json; and
    each X.age has its sidecar, and no X beside it."""
    names = set(files_of(root))
    ages = {n for n in names if n.endswith(".age")}
    for n in names:
        if n.endswith(".age.json"):
            assert n[: -len(".json")] in ages, f"{n} without its .age"
        elif not n.endswith(".age"):
            assert not policy.sealed(Path(n).name), f"{n} reached the remote in plain"
    for n in ages:
        assert n + ".json" in names, f"{n} without a sidecar"
        assert n[: -len(".age")] not in names, f"{n[:-4]} is on the remote in plain too"
    return sorted(ages)


def check_sealed(root, identity, local_of, tmp):
    """Each X.age under root decrypts to exactly the local file `local_of(X)` (None: not
    compared) and its sidecar's hashes and sizes match. Returns {X: plaintext bytes}."""
    out = {}
    for rel in assert_sealed_layout(root):
        age_path = Path(root) / rel
        plain_rel = rel[: -len(".age")]
        body = (Path(root) / (rel + ".json")).read_bytes()
        info = crypt.read_sidecar(body, Path(plain_rel).name)
        data = age_path.read_bytes()
        assert crypt.is_age_file(age_path)
        assert info["age_sha256"] == hashlib.sha256(data).hexdigest()
        assert info["age_size"] == len(data)
        dst = Path(tmp) / "opened" / plain_rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        crypt.decrypt_file(age_path, dst, identity, expect_plain_sha256=info["plain_sha256"],
                           expect_age_sha256=info["age_sha256"])
        plain = dst.read_bytes()
        assert info["plain_sha256"] == hashlib.sha256(plain).hexdigest()
        assert info["plain_size"] == len(plain)
        local = local_of(plain_rel)
        if local is not None:
            assert plain == Path(local).read_bytes(), f"{rel} does not open to {local}"
        out[plain_rel] = plain
    return out


def assert_not_told(secret, paths, name, *texts):
    """Neither the job's log, its status, nor the given outputs hold the secret."""
    for path in (paths.log(name), paths.status(name)):
        if path.exists():
            assert secret not in path.read_text(), f"the canary is in {path}"
    for text in texts:
        assert secret not in (text or "")


def remote_state(root):
    """{relative path: (sha256, mtime_ns, inode)}: what a rerun must leave as it is."""
    root = Path(root)
    return {rel: (hashlib.sha256((root / rel).read_bytes()).hexdigest(),
                  (root / rel).stat().st_mtime_ns, (root / rel).stat().st_ino)
            for rel in files_of(root)}


def staging_left(state):
    """The staging folders under a state dir (none once every run ended)."""
    return [p for p in Path(state).rglob("seal-staging/*")]
