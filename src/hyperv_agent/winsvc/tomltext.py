"""Writing the few TOML values an ``agent.toml`` needs: text, whole numbers, lists of text.

Windows paths are written as literal strings (``'C:\\Secondary'``, no escapes) when they
can be; anything else as a basic string with every character TOML forbids escaped.
"""

from __future__ import annotations

from collections.abc import Sequence

TomlValue = str | int | bool | Sequence[str]

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
            "\r": "\\r"}


def value(item: TomlValue) -> str:
    """``item`` as a TOML value."""
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, int):
        return str(item)
    if isinstance(item, str):
        return string(item)
    return "[" + ", ".join(string(text) for text in item) + "]"


def string(text: str) -> str:
    if _literal_ok(text):
        return f"'{text}'"
    return '"' + "".join(_escape(char) for char in text) + '"'


def line(key: str, item: TomlValue, comment: str | None = None) -> str:
    """``key = value``, with ``# comment`` after it when given."""
    text = f"{key} = {value(item)}"
    return f"{text}  # {_one_line(comment)}" if comment else text


def comment(text: str) -> str:
    return f"# {_one_line(text)}"


def _literal_ok(text: str) -> bool:
    return "\\" in text and "'" not in text and not any(_control(char) for char in text)


def _escape(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    return f"\\u{ord(char):04X}" if _control(char) else char


def _control(char: str) -> bool:
    return ord(char) < 0x20 or ord(char) == 0x7F


def _one_line(text: str) -> str:
    return " ".join(text.split())
