"""Logging: one line per record with a request id; secrets, forged lines and floods kept out.

Secrets appear in command bodies as ``password=`` in cifs:// URLs (plain, or escaped as
``\\u003d``), and as JSON fields such as ``password``, ``secretKey``, ``accessKey`` and
``vncPassword``. The filter rewrites every record, whoever logs it:

- secrets are replaced by ``*****``;
- control characters (a newline or an ANSI escape from a request value, bidirectional
  overrides) are written escaped (``\\n``, ``\\x1b``, ``\\u202e``), so a value cannot forge
  a line; the lines of a traceback follow their record, each prefixed ``  | ``;
- no line is longer than :data:`MAX_LINE_BYTES`; a longer one is cut and says so.

:class:`Throttle` keeps a flood (refused clients, malformed requests) to a few lines a minute.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from logging.handlers import RotatingFileHandler
from pathlib import Path

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

_SECRET_FIELDS = r"(?:password|passwd|secretKey|secret_key|accessKey|access_key|vncPassword)"  # noqa: S105 - names, not values
_PATTERNS = (
    # password=... in URLs and query strings (also Gson's \u003d for '='). The management
    # server writes an SMB password into a pool path as typed, so the value runs to the
    # next '&' (or Gson's \u0026), blank or unescaped quote: ',', ';', "'" and escaped
    # characters are part of it.
    re.compile(r"(?i)((?:password|passwd|secret)(?:=|\\u003d|%3D))"
               r"(?:(?!\\u0026)\\.|[^&\s\"\\])*"),
    # "password": "..." in JSON
    re.compile(rf'(?i)("{_SECRET_FIELDS}"\s*:\s*")((?:[^"\\]|\\.)*)(")'),
    # user:password@host in URLs (up to the authority's last '@': urlsplit, and so the
    # agent, takes a password holding '@' whole)
    re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^\s/\"]+(@)"),
)
REDACTED = "*****"
#: The longest line written, in UTF-8 bytes.
MAX_LINE_BYTES = 8192
#: What starts each line of a traceback, so none can pass for a record of its own.
CONTINUATION = "  | "
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


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


def escape(text: str) -> str:
    """``text`` with every control character written as an escape (``\\n``, ``\\x1b``)."""
    return _CONTROL.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def cut(line: str, limit_bytes: int = MAX_LINE_BYTES) -> str:
    """``line``, cut to at most ``limit_bytes`` of UTF-8, saying how long it was."""
    data = line.encode("utf-8", "backslashreplace")
    if len(data) <= limit_bytes:
        return line
    marker = f" ...[cut: the line had {len(data)} bytes]"
    keep = max(0, limit_bytes - len(marker))
    return data[:keep].decode("utf-8", "ignore") + marker


class RedactingFilter(logging.Filter):
    """Formats the message once, redacts and escapes it, and adds the request id."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = escape(redact(record.getMessage()))
        record.args = None
        record.request_id = request_id.get()
        return True


class LineFormatter(logging.Formatter):
    """One line per record, none over :data:`MAX_LINE_BYTES`; a traceback's lines (redacted,
    escaped) follow it, each prefixed with :data:`CONTINUATION`."""

    def format(self, record: logging.LogRecord) -> str:
        first, *rest = super().format(record).split("\n")
        lines = [cut(first)]
        lines += [cut(CONTINUATION + escape(redact(line))) for line in rest]
        return "\n".join(lines)


class Throttle:
    """At most one line per key every ``interval_s``, and ``burst`` lines per interval in all.

    :meth:`admit` says whether to write a line now and, when it does, what to append: how
    many lines of the same key, and of other keys, were held back. At most ``4 * burst`` keys
    are remembered (the oldest are forgotten, their counts kept as "other"), so memory stays
    bounded whoever floods.
    """

    def __init__(self, interval_s: float = 60.0, burst: int = 10,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._interval_s = interval_s
        self._burst = burst
        self._clock = clock
        self._last: dict[str, tuple[float, int]] = {}  # key -> (last line written, held since)
        self._window_start = float("-inf")
        self._written = 0
        self._held_others = 0  # held back by the burst limit, whatever their key

    @property
    def remembered(self) -> int:
        """How many keys are remembered."""
        return len(self._last)

    def admit(self, key: str) -> str | None:
        """None: hold this line back. Otherwise write it, followed by the returned note."""
        now = self._clock()
        if now - self._window_start >= self._interval_s:
            self._window_start, self._written = now, 0
        last, held = self._last.get(key, (float("-inf"), 0))
        if now - last < self._interval_s:
            self._last[key] = (last, held + 1)
            return None
        if self._written >= self._burst:
            self._held_others += 1
            return None
        self._last[key] = (now, 0)
        self._written += 1
        self._forget_oldest()
        others, self._held_others = self._held_others, 0
        return _held_note(held, others)

    def _forget_oldest(self) -> None:
        while len(self._last) > 4 * self._burst:
            oldest = min(self._last, key=lambda k: self._last[k][0])
            self._held_others += self._last.pop(oldest)[1]


def _held_note(same: int, others: int) -> str:
    parts = [f"{same} similar" if same else "", f"{others} other" if others else ""]
    listed = " and ".join(part for part in parts if part)
    return f" ({listed} line{'s' if same + others != 1 else ''} held back)" if listed else ""


def new_request_id() -> str:
    value = uuid.uuid4().hex[:12]
    request_id.set(value)
    return value


def setup(level: str = "INFO") -> None:
    """Log to stderr as ``time level [request] logger: message``, secrets redacted, control
    characters escaped, lines cut at :data:`MAX_LINE_BYTES`."""
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
    handler.setFormatter(LineFormatter(
        "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
