"""Bounds on a command body's values, checked before any model (or Hyper-V) sees them.

No string of a command, value or member name, is longer than :data:`MAX_STRING_CHARS`. The
longest values CloudStack sends are URLs and paths of a few hundred characters and a system
VM's boot arguments of a few kilobytes; a 10 MB VM name is refused at once instead of
travelling down to a WQL query that takes seconds to parse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

MAX_STRING_CHARS: Final = 64 * 1024
_KEY_SHOWN: Final = 40  # characters of an oversized member name shown in its path


@dataclass(frozen=True)
class Oversized:
    """Where the first string over the bound is (JSON path items), and how long it is."""

    loc: tuple[str | int, ...]
    length: int


def first_oversized(document: object, body_bytes: int) -> Oversized | None:
    """The first string in ``document`` longer than :data:`MAX_STRING_CHARS`, if any.

    A body of ``body_bytes`` no longer than the bound cannot hold one (a character takes at
    least one byte), so it is not walked."""
    if body_bytes <= MAX_STRING_CHARS:
        return None
    pending: list[tuple[object, tuple[str | int, ...]]] = [(document, ())]
    while pending:
        value, loc = pending.pop()
        if isinstance(value, str):
            if len(value) > MAX_STRING_CHARS:
                return Oversized(loc, len(value))
        elif isinstance(value, list):
            items = reversed(list(enumerate(value)))  # popped in document order
            pending.extend((item, (*loc, index)) for index, item in items)
        elif isinstance(value, dict):
            for key in value:
                if len(key) > MAX_STRING_CHARS:
                    return Oversized((*loc, key[:_KEY_SHOWN] + "..."), len(key))
            pending.extend((item, (*loc, key)) for key, item in reversed(list(value.items())))
    return None
