"""A ping URL is a secret: whoever holds it can report the job as healthy. Messages name
its scheme and host only (scheme://host/…), and any text that may quote it is scrubbed."""

from urllib.parse import parse_qsl, unquote, urlsplit

HIDDEN = "…"
# shorter pieces of a URL ("api", "ping") are words, not tokens: scrubbing them would
# mangle the message without hiding anything
MIN_TOKEN = 6


def url(text):
    """scheme://host[:port]/… of a URL; a text that is no URL at all is wholly hidden."""
    try:
        parts = urlsplit(str(text).strip())
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a port that is no number
        return HIDDEN
    if not parts.scheme or not host:
        return HIDDEN
    return f"{parts.scheme.lower()}://{host}{port}/{HIDDEN}"


def tokens(text):
    """What of a URL must never be shown: the URL itself, without its query, its user
    information, each path segment and each query value long enough to be a token (a
    check's UUID, a push token, a ping key), raw and unquoted, longest first."""
    text = str(text).strip()
    out = {text}
    try:
        parts = urlsplit(text)
    except ValueError:
        return sorted(out, key=len, reverse=True)
    out.add(text.split("?", 1)[0].split("#", 1)[0])
    if "@" in parts.netloc:
        out.add(parts.netloc.rsplit("@", 1)[0])
    out.update(s for s in parts.path.split("/"))
    out.update(v for _, v in parse_qsl(parts.query, keep_blank_values=True))
    out.update(unquote(s) for s in list(out))
    return sorted((t for t in out if len(t) >= MIN_TOKEN), key=len, reverse=True)


def scrub(message, secret):
    """message with every token of the secret URL replaced by its redacted form."""
    message = str(message)
    if not secret:
        return message
    shown = url(secret)
    for token in tokens(secret):
        message = message.replace(token, shown if "://" in token else HIDDEN)
    return message


def job(job_doc):
    """A copy of a job document with its ping URL redacted (`config show`): the rest of
    `ping` (url_file, style, exit_code) is no secret and stays as it is."""
    spec = job_doc.get("ping")
    if spec is None:
        return job_doc
    out = dict(job_doc)
    if isinstance(spec, dict):
        out["ping"] = {k: (url(v) if k == "url" else v) for k, v in spec.items()}
    else:
        out["ping"] = url(spec)
    return out
