"""Jobs with a local-folder remote for the re-verification tests, run through the real
runner, and ways to damage what is on the remote."""

import json
import os
from pathlib import Path

from strongroom import jobs


class Bed:
    """A config dir with an rclone.conf (a local-folder remote), a state dir, and jobs."""

    def __init__(self, tmp_path, conf_text="[local]\ntype = local\n"):
        self.tmp = Path(tmp_path)
        self.conf, self.state = self.tmp / "conf", self.tmp / "state"
        (self.conf / "jobs").mkdir(parents=True)
        (self.conf / "rclone.conf").write_text(conf_text)
        (self.conf / "rclone.conf").chmod(0o600)
        self.remote_dir = self.tmp / "remote"
        self.paths = jobs.Paths(self.conf, self.state, self.state / "log")

    def job(self, name, kind, options, schedule=None):
        lines = [f"name: {name}", f"type: {kind}"]
        if schedule:
            lines.append(f"schedule: {schedule}")
        lines.append("options:")
        lines += [f"  {k}: {json.dumps(v)}" for k, v in options.items()]
        (self.conf / "jobs" / f"{name}.yml").write_text("\n".join(lines) + "\n")
        return name

    def snapshot_job(self, name="snap", remote=None, **extra):
        src = self.tmp / "src"
        if not src.exists():
            src.mkdir()
            for i in range(3):
                (src / f"f{i}.txt").write_text(f"file {i}\n" * 50)
        return self.job(name, "snapshot", {
            "source": str(src), "dest": str(self.tmp / "dest"), "immutable": "off",
            "remote": remote or f"local:{self.remote_dir}", **extra})

    def run(self, name, now=None):
        """(exit code, status, output) of `strongroom run NAME`, in this process."""
        return jobs.run(self.paths, name, now=now)

    def ledger_file(self, name):
        return self.state / "verify" / f"{name}.json"

    def ledger(self, name):
        return json.loads(self.ledger_file(name).read_text())

    def cli(self, *args):
        return ["--config-dir", str(self.conf), "--state-dir", str(self.state), *args]


def flip(path, offset=None):
    """Flip one byte in place; size and modification time stay what they were."""
    path = Path(path)
    st = path.stat()
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if offset is None else offset
    data[at] ^= 0x01
    with open(path, "r+b") as fh:
        fh.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    return bytes(data)


def tree(base):
    """{relative path: bytes} of every file under base."""
    base = Path(base)
    return {p.relative_to(base).as_posix(): p.read_bytes()
            for p in sorted(base.rglob("*")) if p.is_file()}
