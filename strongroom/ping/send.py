"""One heartbeat signal: a few short attempts, the total bounded.

Each attempt gets TIMEOUT seconds in all (connect, send, answer). urllib's own timeout
applies to each socket operation, so an endpoint answering a byte at a time could hold the
job's lock for as long as it liked; the request runs in a daemon thread instead, given up
on after TIMEOUT. A failed attempt is tried again after a short pause only when another
could succeed (no answer, a refused or dropped connection, HTTP 408, 429 or 5xx); any
other answer (a 404: no such check) is the URL's fault and is said at once. One signal
takes at most ATTEMPTS * TIMEOUT + sum(BACKOFF) seconds: 33 by default.
"""

import http.client
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from .. import __version__
from . import redact

ATTEMPTS = 3
TIMEOUT = 10.0
BACKOFF = (1.0, 2.0)  # the pause before the 2nd attempt, before the 3rd (and any later)
ANSWER_MAX = 64 * 1024  # the answer is read (so the server sees a clean close), not kept
RETRIED = (408, 429)  # and every 5xx


@dataclass(frozen=True)
class Delivery:
    delivered: bool
    attempts: int
    error: str | None = None

    def as_dict(self):
        return {"delivered": self.delivered, "attempts": self.attempts, "error": self.error}


class Sender:
    """Sends a target.Request; the defaults are read when the Sender is made."""

    def __init__(self, attempts=None, timeout=None, backoff=None):
        self.attempts = max(1, ATTEMPTS if attempts is None else attempts)
        self.timeout = TIMEOUT if timeout is None else timeout
        self.backoff = tuple(BACKOFF if backoff is None else backoff)

    def send(self, request):
        """A Delivery; never raises for what the network or the endpoint does."""
        n, error = 0, None
        for n in range(1, self.attempts + 1):
            error, again = self._once(request)
            if error is None:
                return Delivery(True, n)
            if not again or n == self.attempts:
                break
            if self.backoff:
                time.sleep(self.backoff[min(n - 1, len(self.backoff) - 1)])
        return Delivery(False, n, redact.scrub(error, request.url))

    def _once(self, request):
        """(None, _) when delivered, else (what went wrong, whether to try again)."""
        box = {}

        # the URL is http(s) only: the schema and a url_file's check refuse any other scheme
        def attempt():
            req = urllib.request.Request(  # noqa: S310
                request.url, data=request.body if request.method == "POST" else None,
                method=request.method,
                headers={"User-Agent": f"strongroom/{__version__}",
                         "Content-Type": "text/plain; charset=utf-8"})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                    resp.read(ANSWER_MAX)
                    box["status"] = resp.status
            except urllib.error.HTTPError as exc:
                exc.close()
                box["status"] = exc.code
            except Exception as exc:  # said by _words, in the caller's thread
                box["error"] = exc

        worker = threading.Thread(target=attempt, name="strongroom-ping", daemon=True)
        worker.start()
        worker.join(self.timeout)
        if worker.is_alive():
            return f"no answer within {self.timeout:g} s", True
        if "error" in box:
            return _words(box["error"], self.timeout)
        status = box.get("status", 0)
        if 200 <= status < 300:
            return None, False
        return f"HTTP {status}", status in RETRIED or status >= 500


def _words(exc, timeout):
    """(a short description of a failed attempt, whether another could succeed)."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, str):  # urllib's own refusal ("unknown url type")
        return reason, False
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused", True
    if isinstance(reason, TimeoutError):
        return f"no answer within {timeout:g} s", True
    if isinstance(reason, http.client.HTTPException):  # before OSError: some are both
        return "the connection closed without an answer", True
    if isinstance(reason, socket.gaierror):
        return f"host not found ({reason.strerror})", True
    if isinstance(reason, OSError):
        text = reason.strerror or str(reason) or type(reason).__name__
        return text[:1].lower() + text[1:], True
    if isinstance(reason, ValueError):
        return f"the URL cannot be sent ({type(reason).__name__})", False
    return f"failed: {type(reason).__name__}", True
