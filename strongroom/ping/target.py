"""Where a job's heartbeat goes and what each signal looks like there.

healthchecks (healthchecks.io and its self-hosted servers): POST URL/start when the run
starts; POST URL on success (ok or warning), URL/fail on failure, or URL/<exit code> with
exit_code: true; every one with ?rid=<run id> so start and end pair up, the end's body the
run's log tail. uptime_kuma (a push monitor): GET URL?status=up|down&msg=...&ping=<ms>
at the end only (a push monitor has no start signal).
"""

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..jobs import schema
from . import redact

STYLES = schema.PING_STYLES
# Uptime Kuma shows msg in its list of heartbeats: one line, kept short
KUMA_MSG_MAX = 200
# The query keys a pasted push URL carries already (Uptime Kuma shows it with them):
# ours replace them
KUMA_KEYS = ("status", "msg", "ping")


class PingConfigError(Exception):
    """The heartbeat cannot be sent as configured; the message never holds the URL."""


def is_url(value):
    """The schema's one rule, for a job file's url and a url_file's content alike."""
    return schema.PING_URL.problem(value) is None


# repr=False: a Request or Target printed anywhere (a debugger, a log of an object) shows
# no URL
@dataclass(frozen=True)
class Request:
    method: str
    url: str = field(repr=False)
    body: bytes = field(default=b"", repr=False)


@dataclass(frozen=True)
class Target:
    url: str = field(repr=False)
    style: str = "healthchecks"
    exit_code: bool = False

    @property
    def shown(self):
        return redact.url(self.url)

    @property
    def has_start(self):
        return self.style == "healthchecks"

    def start(self, rid, body=b""):
        return Request("POST", _with(self.url, "start", {"rid": rid}), body)

    def end(self, signal, rid, body=b"", message="", duration_ms=0):
        """signal: "success", "fail" or an exit code (1-255)."""
        if self.style == "uptime_kuma":
            msg = " ".join(str(message).split())[:KUMA_MSG_MAX]
            query = {"status": "up" if signal == "success" else "down", "msg": msg,
                     "ping": str(max(0, int(duration_ms)))}
            return Request("GET", _with(self.url, None, query, drop=KUMA_KEYS))
        suffix = None if signal == "success" else str(signal)
        return Request("POST", _with(self.url, suffix, {"rid": rid}), body)

    def signal_for(self, exit_code):
        """The end signal of a run that exited so: success for ok and warning."""
        if exit_code in (0, 1):
            return "success"
        if self.exit_code and self.style == "healthchecks" and 1 <= exit_code <= 255:
            return exit_code
        return "fail"


def _with(url, suffix, query, drop=("rid",)):
    """url with /suffix appended to its path and query's keys set (each key in drop, and
    each of query's, replaced)."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/") + f"/{suffix}" if suffix else parts.path
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
            if k not in drop and k not in query]
    return urlunsplit((parts.scheme, parts.netloc, path or "/",
                       urlencode(kept + list(query.items())), ""))


def resolve(spec):
    """The Target of a job's `ping` (a URL, or {url|url_file, style, exit_code}); a
    url_file is read now, and refused when others may read it."""
    if isinstance(spec, str):
        spec = {"url": spec}
    style = spec.get("style", "healthchecks")
    if style not in STYLES:
        raise PingConfigError(f"ping style {style!r} is not one of: {', '.join(STYLES)}")
    url = spec["url"] if "url" in spec else read_url_file(spec["url_file"])
    if not is_url(url):
        raise PingConfigError("ping url is not an http:// or https:// URL (not shown)")
    return Target(url=url.strip(), style=style, exit_code=bool(spec.get("exit_code")))


def read_url_file(path):
    """The URL in a url_file: a regular file only its owner may read (0600 or 0400)."""
    path = Path(path).expanduser()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise PingConfigError(f"ping url_file {path} does not exist") from None
    except OSError as exc:
        raise PingConfigError(f"cannot read ping url_file {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PingConfigError(f"ping url_file {path} is not a regular file")
        if st.st_mode & 0o077:
            raise PingConfigError(
                f"ping url_file {path} is readable by others (mode "
                f"{stat.S_IMODE(st.st_mode):04o}); the URL in it is a secret: "
                f"chmod 600 {path}")
        data = os.read(fd, 8192)
    except OSError as exc:
        raise PingConfigError(f"cannot read ping url_file {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise PingConfigError(f"ping url_file {path} is not UTF-8 text") from None
    if not is_url(text):
        raise PingConfigError(f"ping url_file {path} does not hold one http:// or https:// "
                              "URL (its content is not shown)")
    return text
