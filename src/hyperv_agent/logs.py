"""Logging: one line per command with a request id, and secrets that never reach a line.

Secrets appear in command bodies as ``password=`` in cifs:// URLs (plain, or escaped as
``\\u003d``), and as JSON fields such as ``password``, ``secretKey``, ``accessKey`` and
``vncPassword``. The redaction filter rewrites every record, whoever logs it.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import uuid

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

_SECRET_FIELDS = r"(?:password|passwd|secretKey|secret_key|accessKey|access_key|vncPassword)"  # noqa: S105 - names, not values
_PATTERNS = (
    # password=... in URLs and query strings (also Gson's \u003d for '=')
    re.compile(r"(?i)((?:password|passwd|secret)(?:=|\\u003d|%3D))[^&\s\"',;\\]*"),
    # "password": "..." in JSON
    re.compile(rf'(?i)("{_SECRET_FIELDS}"\s*:\s*")((?:[^"\\]|\\.)*)(")'),
    # user:password@host in URLs
    re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+(@)"),
)
REDACTED = "*****"


#: Every pattern above needs one of these (in a case fold): text without them is left as
#: it is without running the patterns, which is most log lines.
_TRIGGERS = ("pass", "secret", "access", "://")


def redact(text: str) -> str:
    """``text`` with every secret replaced by ``*****``."""
    folded = text.casefold()
    if not any(trigger in folded for trigger in _TRIGGERS):
        return text
    text = _PATTERNS[0].sub(rf"\g<1>{REDACTED}", text)
    text = _PATTERNS[1].sub(rf"\g<1>{REDACTED}\g<3>", text)
    return _PATTERNS[2].sub(rf"\g<1>{REDACTED}\g<2>", text)


class RedactingFilter(logging.Filter):
    """Formats the message once, redacts it, and adds the request id."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        record.request_id = request_id.get()
        return True


def new_request_id() -> str:
    value = uuid.uuid4().hex[:12]
    request_id.set(value)
    return value


def setup(level: str = "INFO") -> None:
    """Log to stderr as ``time level [request] logger: message``, secrets redacted."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
