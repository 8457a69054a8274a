"""Notifications through Apprise, configured in Apprise's own YAML format.

<config-dir>/notify.yml is an Apprise YAML configuration (a file holding only `urls:` is
valid), so any Apprise URL works as Apprise documents it. Strongroom reads three extra
keys per URL entry and removes them before Apprise sees the entry:

    urls:
      - ntfys://ntfy.sh/my-backups:
          - name: phone                # shown in status and errors instead of the URL
            min_severity: warning      # info < success < warning < error (default warning)
            events: [job_failed, job_recovered]   # default: every event

URLs hold tokens and passwords: they never appear in messages, logs or status files;
a target is always named by `name`, or by its scheme and position ("ntfys #1").
"""

import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

SEVERITIES = ("info", "success", "warning", "error")
EVENTS = ("job_failed", "job_recovered", "job_succeeded", "rollback_done", "backup_stale",
          "drill_passed", "drill_failed", "test")
EXTRA_KEYS = ("name", "min_severity", "events")
NTFY_PRIORITY = {"info": "low", "success": "default", "warning": "high", "error": "max"}
TEMPLATES = Path(__file__).parent / "templates"

# Apprise logs failures with URLs in them; none of that may reach a terminal or a log.
_apprise_log = logging.getLogger("apprise")
_apprise_log.addHandler(logging.NullHandler())
_apprise_log.propagate = False


@dataclass
class Target:
    name: str
    scheme: str
    url: str = field(repr=False)
    args: dict = field(default_factory=dict, repr=False)
    min_severity: str = "warning"
    events: tuple = EVENTS

    def wants(self, event, severity):
        if event == "test":
            return True
        # event None: a message from a playbook (library/notify.py), filtered by severity only
        return (event is None or event in self.events) and (
            SEVERITIES.index(severity) >= SEVERITIES.index(self.min_severity))


def _entries(urls, where):
    """(url, instance args) for every entry, in Apprise's YAML shapes."""
    if not isinstance(urls, list):
        raise ConfigError(f"{where}: 'urls' must be a list")
    for i, item in enumerate(urls, 1):
        if isinstance(item, str):
            yield i, item, {}
        elif isinstance(item, dict) and len(item) == 1:
            url, value = next(iter(item.items()))
            instances = value if isinstance(value, list) else [value or {}]
            for inst in instances:
                if not isinstance(inst, dict):
                    raise ConfigError(f"{where}: entry #{i} has arguments that are not a "
                                      "mapping")
                yield i, str(url), dict(inst)
        else:
            raise ConfigError(f"{where}: entry #{i} is neither a URL nor a URL with "
                              "arguments")


def load(config_dir):
    """The targets of <config-dir>/notify.yml ([] when there is no file)."""
    import yaml

    path = Path(config_dir) / "notify.yml"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return [], []
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    notes = []
    if path.stat().st_mode & 0o077:
        notes.append(f"{path} is readable by others; it holds secrets and should be 0600")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None  # no text: secrets
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with 'urls'")
    targets = []
    for i, url, args in _entries(data.get("urls", []), str(path)):
        scheme = url.split("://", 1)[0] if "://" in url else "entry"
        name = str(args.pop("name", f"{scheme} #{i}"))
        sev = args.pop("min_severity", "warning")
        events = args.pop("events", list(EVENTS))
        if sev not in SEVERITIES:
            raise ConfigError(f"{path}: target '{name}': min_severity {sev!r}; expected one "
                              f"of {', '.join(SEVERITIES)}")
        if not isinstance(events, list) or any(e not in EVENTS for e in events):
            raise ConfigError(f"{path}: target '{name}': events must be a list of: "
                              f"{', '.join(EVENTS[:-1])}")
        target = Target(name, scheme, url, args, sev, tuple(events))
        if _apprise_for(target, "info") is None:
            raise ConfigError(f"{path}: target '{name}' is not a URL Apprise understands")
        targets.append(target)
    return targets, notes


def _apprise_for(target, severity):
    import apprise
    import yaml

    args = dict(target.args)
    if target.scheme in ("ntfy", "ntfys"):
        args.setdefault("priority", NTFY_PRIORITY[severity])
    conf = apprise.AppriseConfig()
    entry = {target.url: [args]} if args else target.url
    if not conf.add_config(yaml.safe_dump({"urls": [entry]}), format="yaml"):
        return None
    a = apprise.Apprise()
    a.add(conf)
    return a if len(a) else None


def render(event, context):
    """(title, body) from the Jinja2 templates for this event."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             autoescape=False,  # noqa: S701 -- plain-text messages, not HTML
                             trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=False)
    ctx = {"host": socket.gethostname(), "event": event, **context}
    title = env.get_template("notify_title.j2").render(ctx).strip()
    body = env.get_template("notify_body.j2").render(ctx).strip()
    return title, body


def send(targets, event, severity, title, body):
    """Deliver to every target that wants it. Returns [{target, event, delivered}]."""
    import apprise

    kind = {"info": apprise.NotifyType.INFO, "success": apprise.NotifyType.SUCCESS,
            "warning": apprise.NotifyType.WARNING, "error": apprise.NotifyType.FAILURE}
    results = []
    for t in targets:
        if not t.wants(event, severity):
            continue
        a = _apprise_for(t, severity)
        delivered = bool(a and a.notify(title=title, body=body, notify_type=kind[severity]))
        results.append({"target": t.name, "event": event or "message", "severity": severity,
                        "delivered": delivered})
    return results


def log_tail(path, lines=15):
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return [ln.rstrip("\n") for ln in fh.readlines()[-lines:]]
    except OSError:
        return []


def job_event(code, prev_result, job_type="bundle_sync"):
    """(event, severity) for a finished run, from its exit code and the previous result."""
    if job_type == "status_check":
        # its findings go out as backup_stale alerts; only its own failure is news here
        return ("job_failed", "error") if code not in (0, 1) else (None, None)
    if job_type == "restore_drill":
        # "nothing to test" (1) is not a pass: it is reported as a failed drill, a warning
        return ("drill_passed", "success") if code == 0 else (
            "drill_failed", "warning" if code == 1 else "error")
    if code not in (0, 1):
        return "job_failed", "error"
    if prev_result in ("error", "incomplete"):
        return "job_recovered", "success"
    return "job_succeeded", "success" if code == 0 else "warning"


def notify_job(config_dir, job, status, prev_result, log_path):
    """Send a finished run's notification; never raises (a failed delivery is a result)."""
    try:
        targets, notes = load(config_dir)
    except ConfigError as exc:
        return [{"target": "notify.yml", "event": "-", "delivered": False,
                 "error": str(exc)}]
    if not targets:
        return []
    event, severity = job_event(status["exit_code"], prev_result, job["type"])
    if status.get("rollback") and event == "job_failed":
        event = "rollback_done"  # a failed sync that was undone: say what happened
    if event is None:
        return []
    rules = job.get("notify") or {}
    if event not in rules.get("events", EVENTS):
        return []
    if SEVERITIES.index(severity) < SEVERITIES.index(rules.get("min_severity", "info")):
        return []
    ctx = {"job": job["name"], "status": status, "severity": severity,
           "log_tail": log_tail(log_path) if event in ("job_failed", "drill_failed",
                                                       "rollback_done") else []}
    title, body = render(event, ctx)
    results = send(targets, event, severity, title, body)
    for note in notes:
        results.append({"target": "notify.yml", "event": event, "delivered": True,
                        "note": note})
    return results


def test_all(config_dir, severity="info"):
    targets, notes = load(config_dir)
    title, body = render("test", {"severity": severity, "job": None, "status": {},
                                  "log_tail": [], "pid": os.getpid()})
    return targets, send(targets, "test", severity, title, body), notes
