"""The status report people look at: one self-contained HTML file, from status rows.

The rows are those of `strongroom status --json` (status.rows()), of one host or of a
whole fleet (playbooks/status.yml hands every host's rows to this one renderer). The page
is templates/report.html.j2, found through core/templates.py, so a host's
<config-dir>/templates/report.html.j2 replaces it. Every text in a row (job names,
messages, paths, host names) is hostile: autoescape is on, and the page allows no script.
"""

import json
from datetime import UTC, datetime
from pathlib import Path

from ..core import fsutil
from ..core.errors import StrongroomError
from ..core.formats import human_bytes
from ..core.templates import environment

TEMPLATE = "report.html.j2"
OK_RESULTS = ("ok",)
NONE_RESULTS = ("never run", "no jobs", "none")


def result_class(result):
    """The CSS class of a result: ok, warning, none (nothing ran yet) or error (the rest:
    error, incomplete, locked, a signal, INVALID, UNREACHABLE)."""
    if result in OK_RESULTS or result == "warning":
        return result
    return "none" if result in NONE_RESULTS or result is None else "error"


def age(seconds):
    from . import human_age

    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        return "-"
    return human_age(max(seconds, 0))


def duration(seconds):
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    return f"{minutes // 60}h {minutes % 60:02d}m"


def percent(ratio):
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool):
        return "-"
    return f"{ratio * 100:.1f}%".replace(".0%", "%")


def size(n):
    return human_bytes(n) if isinstance(n, (int, float)) and not isinstance(n, bool) else "-"


def when(text):
    """An ISO UTC time as people read it, to the minute (the page says times are UTC)."""
    if not isinstance(text, str):
        return "-"
    return text.replace("T", " ")[:16] if len(text) == 20 and text.endswith("Z") else text


def _mapping(v):
    return v if isinstance(v, dict) else {}


def _names(v):
    return [str(x) for x in v] if isinstance(v, list) else []


def _dicts(v):
    return [x for x in v if isinstance(x, dict)] if isinstance(v, list) else None


def clean(row):
    """A row whose parts have the types the page expects: rows read from other hosts are
    input, and a junk field is shown as missing rather than stopping the whole page."""
    return {**row, "history": _dicts(row.get("history")),
            "artifacts": _dicts(row.get("artifacts")),
            "verify": row.get("verify") if isinstance(row.get("verify"), dict) else None,
            "ping": row.get("ping") if isinstance(row.get("ping"), dict) else None,
            "protection": _mapping(row.get("protection"))}


def hosts(rows):
    """[{name, rows, drills, verify, failing, stale}] by host name: what the page shows."""
    by_host = {}
    for r in map(clean, rows):
        by_host.setdefault(str(r.get("host") or "-"), []).append(r)
    out = []
    for name in sorted(by_host):
        rs = sorted(by_host[name], key=lambda r: str(r.get("job")))
        drills = [(r, a) for r in rs for a in (r["artifacts"] or [])]
        verify = [(r, r["verify"], _names(r["verify"].get("damaged"))) for r in rs
                  if isinstance(r.get("verify"), dict)]
        out.append({"name": name, "rows": rs, "drills": drills, "verify": verify,
                    "failing": sum(result_class(r.get("result")) == "error" for r in rs),
                    "stale": sum(bool(r.get("stale")) for r in rs)})
    return out


def summary(rows):
    rows = [clean(r) for r in rows]
    drills = [a for r in rows for a in (r["artifacts"] or [])]
    damaged = sum(len(_names(r["verify"].get("damaged"))) for r in rows
                  if isinstance(r.get("verify"), dict))
    return {"hosts": len({r.get("host") for r in rows}), "jobs": len(rows),
            "failing": sum(result_class(r.get("result")) == "error" for r in rows),
            "stale": sum(bool(r.get("stale")) for r in rows),
            "drills": len(drills),
            "drills_failed": sum(a.get("result") == "error" for a in drills),
            "damaged": damaged}


def render(rows, config_dir=None, now=None, title="Strongroom status"):
    env = environment(config_dir, autoescape=True)
    env.filters.update(age=age, duration=duration, percent=percent, size=size, when=when,
                       result_class=result_class, mapping=_mapping)
    now = now or datetime.now(UTC)
    import jinja2

    try:
        return env.get_template(TEMPLATE).render(
            title=title, generated=now.strftime("%Y-%m-%d %H:%M UTC"), hosts=hosts(rows),
            summary=summary(rows))
    except jinja2.TemplateError as exc:  # most likely a host's own override
        where = getattr(exc, "filename", None) or TEMPLATE
        line = f" line {exc.lineno}" if getattr(exc, "lineno", None) else ""
        raise StrongroomError(f"the report template {where}{line} failed: {exc}") from None


def write(path, rows, config_dir=None, now=None):
    path = Path(path)
    text = render(rows, config_dir, now)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fsutil.atomic_write_bytes(path, text.encode("utf-8"), mode=0o644)
    except OSError as exc:
        what = f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)
        raise StrongroomError(f"cannot write the report page {path}: {what}") from None
    return path


def load_rows(source, stdin=None):
    """Rows from a file (or '-': stdin): a list of rows, or a `status --json` envelope
    (its "jobs"). Each row must be a mapping with a job name; hosts' rows are input."""
    where = "stdin" if source == "-" else str(source)
    try:
        text = stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
        data = json.loads(text)
    except OSError as exc:
        raise StrongroomError(f"cannot read the rows in {where}: {exc.strerror or exc}") \
            from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise StrongroomError(f"{where} is not JSON: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("jobs"), list):
        data = data["jobs"]
    if not isinstance(data, list):
        raise StrongroomError(f"{where} holds no rows: expected a list of status rows or "
                              "the output of `strongroom status --json`")
    for i, r in enumerate(data):
        if not isinstance(r, dict) or not isinstance(r.get("job"), str):
            raise StrongroomError(f"{where}: row {i + 1} is not a status row (a mapping "
                                  "with a job name)")
    return data
