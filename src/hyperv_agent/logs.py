"""Logging: one line per command with a request id, and secrets that never reach a line.

Secrets appear in command bodies as ``password=`` in cifs:// URLs (plain, or escaped as
``\\u003d``), and as JSON fields such as ``password``, ``secretKey``, ``accessKey`` and
``vncPassword``. The redaction filter rewrites every record, whoever logs it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import sys
import uuid
from collections.abc import Iterator
from logging.handlers import RotatingFileHandler
from pathlib import Path

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


def redact(text: str) -> str:
    """``text`` with every secret replaced by ``*****``."""
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
    _use(logging.StreamHandler(sys.stderr), level)


LOG_FILE_BYTES = 10 * 1024 * 1024
LOG_FILE_BACKUPS = 5


@contextlib.contextmanager
def to_file(path: Path, level: str = "INFO", max_bytes: int = LOG_FILE_BYTES,
            backups: int = LOG_FILE_BACKUPS) -> Iterator[None]:
    """Log as :func:`setup` does, to ``path`` instead of stderr, rotated at ``max_bytes``
    into ``path.1`` .. ``path.<backups>``; the previous handlers come back afterwards."""
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    handler = RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups,
                                  encoding="utf-8")
    _use(handler, level)
    try:
        yield
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        handler.close()


def _use(handler: logging.Handler, level: str) -> None:
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
