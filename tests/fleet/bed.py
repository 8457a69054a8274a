"""A three-host fleet on one machine: one unix user per host behind a real sshd on loopback.

Ansible really connects over SSH, and each host has its own home, crontab, anacrontab,
systemd user units and launchd agents directory. Needs root (users, sshd). Everything
started or created here is stopped or removed by `Bed.stop()`.
"""

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
HOSTS = {
    # host: (unix user, scheduler)
    "desktop": ("sr-desktop", "cron"),
    "laptop": ("sr-laptop", "launchd"),
    "server": ("sr-server", "systemd"),
}
GIT_ENV = {"GIT_AUTHOR_NAME": "Bed", "GIT_AUTHOR_EMAIL": "bed@example.org",
           "GIT_COMMITTER_NAME": "Bed", "GIT_COMMITTER_EMAIL": "bed@example.org"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(argv, **kw):
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def as_user(user, argv, env=None):
    """Run argv as `user` with a login environment (HOME, USER, PATH of that user)."""
    pw = pwd.getpwnam(user)
    base = {"HOME": pw.pw_dir, "USER": user, "LOGNAME": user, "LC_ALL": "C.UTF-8",
            "PATH": "/usr/local/bin:/usr/bin:/bin"}
    return subprocess.run(argv, capture_output=True, text=True, check=False,
                          env={**base, **(env or {})}, cwd=pw.pw_dir,
                          user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])


class Bed:
    def __init__(self, jobs=None, hosts=None, extra_users=()):
        # hosts: name -> (unix user, scheduler), all in the inventory; extra_users only
        # log in over ssh (a git server, say). Two beds must not share user names.
        self.hosts = hosts or HOSTS
        self.extra_users = list(extra_users)
        self.base = Path(tempfile.mkdtemp(prefix="strongroom-fleet-", dir="/tmp"))
        self.base.chmod(0o755)  # the users must reach their homes below it
        self.port = free_port()
        self.sshd = None
        self.users = []
        self.jobs = jobs or {}
        self.key = self.base / "id_ed25519"
        self.inventory = self.base / "inventory.yml"

    # --- set-up ---------------------------------------------------------------------------

    def start(self):
        if os.geteuid() != 0:
            raise PermissionError("the fleet bed needs root: it creates users and runs sshd")
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)])
        for host, (user, _) in self.hosts.items():
            self._user(user, self.home(host))
        for user in self.extra_users:
            self._user(user, self.base / "home" / user)
        self._sshd()
        self._write_inventory()
        return self

    def home(self, host):
        return self.base / "home" / host

    def _user(self, user, home):
        home.parent.mkdir(parents=True, exist_ok=True)
        home.parent.chmod(0o755)
        try:
            pwd.getpwnam(user)
            self.remove_user(user)  # left over from an interrupted run: start clean
        except KeyError:
            pass
        run(["useradd", "-m", "-d", str(home), "-s", "/bin/bash", user])
        run(["usermod", "-p", "*", user])  # no password, but not locked: key login works
        self.users.append(user)
        pw = pwd.getpwnam(user)
        ssh = home / ".ssh"
        ssh.mkdir(mode=0o700, exist_ok=True)
        (ssh / "authorized_keys").write_text(Path(f"{self.key}.pub").read_text())
        (ssh / "authorized_keys").chmod(0o600)
        projects = home / "projects"
        for name in ("notes", "work/api"):
            repo = projects / name
            repo.mkdir(parents=True)
            run(["git", "init", "-q", "-b", "main", str(repo)])
            (repo / "README.md").write_text(f"{user} {name}\n")
            run(["git", "-C", str(repo), "add", "-A"])
            run(["git", "-C", str(repo), "commit", "-q", "-m", "start"],
                env={**os.environ, **GIT_ENV})
        for path in [home, *home.rglob("*")]:
            os.lchown(path, pw.pw_uid, pw.pw_gid)

    def _sshd(self):
        hostkey = self.base / "ssh_host_ed25519_key"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostkey)])
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
        conf = self.base / "sshd_config"
        conf.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {hostkey}\n"
            f"PidFile {self.base / 'sshd.pid'}\nAuthorizedKeysFile .ssh/authorized_keys\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            "PermitRootLogin no\nStrictModes yes\nMaxStartups 30\nMaxSessions 30\n"
            f"AllowUsers {' '.join(self.users)}\n"
            "Subsystem sftp /usr/lib/openssh/sftp-server\n")
        run(["/usr/sbin/sshd", "-t", "-f", str(conf)])
        self.sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", str(conf), "-E",
                                      str(self.base / "sshd.log")])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"sshd did not start: {(self.base / 'sshd.log').read_text()}")

    def _write_inventory(self):
        hosts = {}
        for host, (user, scheduler) in self.hosts.items():
            home = str(self.home(host))
            hosts[host] = {
                "ansible_host": "127.0.0.1",
                "ansible_port": self.port,
                "ansible_user": user,
                "ansible_ssh_private_key_file": str(self.key),
                "ansible_ssh_common_args": "-o StrictHostKeyChecking=no "
                                           "-o UserKnownHostsFile=/dev/null",
                "ansible_python_interpreter": "/usr/bin/python3",
                "strongroom_scheduler": scheduler,
                "strongroom_rclone_remotes": {"offsite": {"type": "local"}},
                "strongroom_directories": [f"{home}/offsite"],
                "strongroom_jobs_list": self.jobs.get(host) or [{
                    "name": "bundles",
                    "type": "bundle_sync",
                    "schedule": "daily 02:30",
                    "jitter": 30,
                    "options": {"root": f"{home}/projects",
                                "store": f"{home}/.local/state/strongroom/bundles",
                                "remote": f"offsite:{home}/offsite"},
                }],
            }
        self.inventory.write_text(yaml.safe_dump({"all": {"hosts": hosts}}, sort_keys=True))

    # --- use --------------------------------------------------------------------------------

    def playbook(self, name, extravars=None, check=False):
        """Run a playbook across the bed with ansible-runner; returns the Runner."""
        import ansible_runner

        venv_bin = Path(shutil.which("ansible-playbook") or "").parent
        private = Path(tempfile.mkdtemp(prefix="runner-", dir=self.base))
        env = {
            "PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin",
            "HOME": os.environ.get("HOME", "/root"),
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "ANSIBLE_LIBRARY": str(ROOT / "library"),
            "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORKS": "3",
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "LC_ALL": "C.UTF-8",
            "LANG": "C.UTF-8",
        }
        return ansible_runner.run(
            private_data_dir=str(private), project_dir=str(ROOT),
            playbook=str(ROOT / "playbooks" / name), inventory=str(self.inventory),
            extravars=extravars or {}, envvars=env, quiet=True,
            cmdline="--check" if check else None)

    def engine(self, host):
        return self.home(host) / ".local/share/strongroom/venv/bin/strongroom"

    def strongroom(self, host, *args):
        user = self.hosts[host][0]
        return as_user(user, [str(self.engine(host)), *map(str, args)])

    # --- tear-down ----------------------------------------------------------------------------

    @staticmethod
    def remove_user(user):
        subprocess.run(["crontab", "-r", "-u", user], capture_output=True, check=False)
        subprocess.run(["pkill", "-KILL", "-u", user], capture_output=True, check=False)
        time.sleep(0.1)
        run(["userdel", user])

    def stop(self):
        if self.sshd:
            self.sshd.terminate()
            try:
                self.sshd.wait(5)
            except subprocess.TimeoutExpired:
                self.sshd.kill()
                self.sshd.wait()
        for user in self.users:
            self.remove_user(user)
        shutil.rmtree(self.base, ignore_errors=True)
