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

One broken entry (a URL Apprise cannot parse, a bad value or a misspelt extra key) costs
only that target: it is reported by name as a failed delivery of every message, and the
others still get theirs. Only a file that cannot be read as a whole is an error of its own.
"""

import difflib
import logging
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

from ..core import templates
from ..core.errors import ConfigError

SEVERITIES = ("info", "success", "warning", "error")
EVENTS = ("job_failed", "job_recovered", "job_succeeded", "rollback_done", "backup_stale",
          "drill_passed", "drill_failed", "test")
EXTRA_KEYS = ("name", "min_severity", "events")
NTFY_PRIORITY = {"info": "low", "success": "default", "warning": "high", "error": "max"}

# Apprise logs failures with URLs in them; none of that may reach a terminal or a log.
_apprise_log = logging.getLogger("apprise")
_apprise_log.addHandler(logging.NullHandler())
_apprise_log.propagate = False
# disabled, too: a handler someone attaches to it directly (a test runner's log capture)
# would otherwise still be handed those records
_apprise_log.disabled = True


@dataclass
class Target:
    name: str
    scheme: str
    url: str = field(repr=False)
    args: dict = field(default_factory=dict, repr=False)
    min_severity: str = "warning"
    events: tuple = EVENTS
    # why this entry cannot be used, said without its URL; None when it can
    problem: str | None = None

    def wants(self, event, severity):
        # a broken entry may have meant to get this: it is reported, never silently skipped
        if event == "test" or self.problem:
            return True
        # event None: a message from a playbook (library/notify.py), filtered by severity only
        return (event is None or event in self.events) and (
            SEVERITIES.index(severity) >= SEVERITIES.index(self.min_severity))


def _entries(urls, where):
    """(position, url, instance args, problem) for every entry, in Apprise's YAML shapes.

    A malformed entry is yielded with its problem rather than raised, so it costs only
    itself."""
    if not isinstance(urls, list):
        raise ConfigError(f"{where}: 'urls' must be a list")
    for i, item in enumerate(urls, 1):
        if isinstance(item, str):
            yield i, item, {}, None
        elif isinstance(item, dict) and len(item) == 1:
            url, value = next(iter(item.items()))
            instances = value if isinstance(value, list) else [value or {}]
            for inst in instances:
                if not isinstance(inst, dict):
                    yield i, str(url), {}, "has arguments that are not a mapping"
                else:
                    yield i, str(url), dict(inst), None
        else:
            # a mapping of several keys is most often a URL whose settings lost their indent
            hint = " (its settings go indented below the URL)" if isinstance(item, dict) else ""
            yield i, "", {}, f"is neither a URL nor a URL with arguments{hint}"


# A scheme is shown in a default name ("ntfys #1"); anything else before a "://" may be a
# mangled URL holding a password ("https//user:pass@host://"), so it is never shown.
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,31}")


def _scheme(url):
    head = url.split("://", 1)[0] if "://" in url else ""
    return head.lower() if _SCHEME.fullmatch(head) else "entry"


def _misspelt_key(args, service):
    """A key that is not Apprise's for this service but looks like one of ours."""
    cls = type(service) if service is not None else None
    known = {"tag", "tags", "schema"}
    for table in ("template_args", "template_tokens", "template_kwargs"):
        known |= {k.lower() for k in getattr(cls, table, None) or {}}
    for key in args:
        k = str(key)
        if k[:1] in "+-:" or k.lower() in known:  # Apprise's headers, params, payload keys
            continue
        close = difflib.get_close_matches(k.lower().replace("-", "_").strip(), EXTRA_KEYS,
                                          n=1, cutoff=0.75)
        if close:
            return k, close[0]
    return None


def _target(i, url, args, problem):
    scheme = _scheme(url)
    name = str(args.pop("name", f"{scheme} #{i}"))
    sev = args.pop("min_severity", "warning")
    events = args.pop("events", list(EVENTS))
    target = Target(name, scheme, url, args)
    if problem is None and sev not in SEVERITIES:
        problem = f"has min_severity {sev!r}; expected one of {', '.join(SEVERITIES)}"
    if problem is None and (not isinstance(events, list) or
                            any(e not in EVENTS for e in events)):
        problem = f"has events that are not a list of: {', '.join(EVENTS[:-1])}"
    if problem is None:
        a = _apprise_for(target, "info")
        if a is None:
            problem = "is not a URL Apprise understands"
        elif typo := _misspelt_key(args, next(iter(a), None)):
            # passed on, Apprise would ignore it and the target would quietly get what
            # the key meant to keep from it (or miss what it meant to send)
            problem = (f"has an unknown key '{typo[0]}' (did you mean '{typo[1]}'? "
                       f"Strongroom's keys are {', '.join(EXTRA_KEYS)})")
    if problem is None:
        target.min_severity, target.events = sev, tuple(events)
    else:
        target.problem = problem
    return target


def load(config_dir):
    """The targets of <config-dir>/notify.yml ([] when there is no file)."""
    import yaml

    from ..jobs.config import read_job_bytes

    path = Path(config_dir) / "notify.yml"
    try:
        # as a job file is read: never blocking on a FIFO, never reading /dev/zero through
        # a link, at most 1 MiB (every run reads this file after its work is done)
        raw = read_job_bytes(path, what="a notification file")
    except FileNotFoundError:
        return [], []
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:  # the bytes themselves are not shown: secrets
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not UTF-8 text (line {line}); save it as UTF-8") from None
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
    targets = [_target(*entry) for entry in _entries(data.get("urls", []), str(path))]
    return targets, notes


def problems(config_dir, targets):
    """One line per broken target, for a warning (its failed result says only why)."""
    path = Path(config_dir) / "notify.yml"
    return [f"{path}: target '{t.name}' {t.problem}; it gets nothing until that is fixed"
            for t in targets if t.problem]


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


def render(event, context, config_dir=None):
    """(title, body) from the Jinja2 templates for this event: the host's own
    <config-dir>/templates/notify_{title,body}.j2 where it has them, else the shipped ones."""
    env = templates.environment(config_dir)
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
        result = {"target": t.name, "event": event or "message", "severity": severity}
        if t.problem:
            results.append({**result, "delivered": False, "error": t.problem})
            continue
        a = _apprise_for(t, severity)
        # The body is plain text: said so, Apprise keeps its line breaks in every format it
        # converts to (an e-mail's plain and HTML parts), where unsaid it ran them together.
        # It sends nothing without a body, and a playbook's message may be a title only.
        delivered = bool(a and a.notify(title=title, body=body or title,
                                        notify_type=kind[severity],
                                        body_format=apprise.NotifyFormat.TEXT))
        results.append({**result, "delivered": delivered})
    return results


def log_tail(path, lines=15):
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return [ln.rstrip("\n") for ln in fh.readlines()[-lines:]]
    except OSError:
        return []


def job_event(code, prev_result, job_type="bundle"):
    """(event, severity) for a finished run, from its exit code and the previous result
    (job_type: the job's type; an old name is read as the one-word name it now has)."""
    from ..jobs.schema import canonical

    job_type = canonical(job_type) or job_type
    if job_type == "status":
        # its findings go out as backup_stale alerts; only its own failure is news here
        return ("job_failed", "error") if code not in (0, 1) else (None, None)
    if job_type == "drill":
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
    from ..jobs.schema import default

    rules = job.get("notify") or {}
    if event not in rules.get("events", default("notify", "events")):
        return []
    if SEVERITIES.index(severity) < SEVERITIES.index(
            rules.get("min_severity", default("notify", "min_severity"))):
        return []
    ctx = {"job": job["name"], "status": status, "severity": severity,
           "log_tail": log_tail(log_path) if event in ("job_failed", "drill_failed",
                                                       "rollback_done") else []}
    title, body = render(event, ctx, config_dir)
    results = send(targets, event, severity, title, body)
    for note in notes:
        results.append({"target": "notify.yml", "event": event, "delivered": True,
                        "note": note})
    return results


def test_all(config_dir, severity="info"):
    targets, notes = load(config_dir)
    title, body = render("test", {"severity": severity, "job": None, "status": {},
                                  "log_tail": [], "pid": os.getpid()}, config_dir)
    return targets, send(targets, "test", severity, title, body), notes + problems(
        config_dir, targets)
