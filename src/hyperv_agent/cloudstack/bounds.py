"""Bounds on a command body's values, checked before any model (or Hyper-V) sees them.

No string of a command, value or member name, is longer than :data:`MAX_STRING_CHARS`: room
for the longest value CloudStack sends, a system VM's boot arguments (at most 128 KVP items
of 1023 characters). A name (the value of a member whose name ends in ``name`` or ``names``:
``vmName``, ``vmNames``, ``name``) is at most :data:`MAX_NAME_CHARS`; CloudStack keeps names
in columns of 255 characters. A 10 MB VM name is refused at once instead of travelling down
to a WQL query that takes seconds to parse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

MAX_STRING_CHARS: Final = 256 * 1024
MAX_NAME_CHARS: Final = 1024
_KEY_SHOWN: Final = 40  # characters of an oversized member name shown in its path

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Oversized:
    """Where the first string over its bound is (JSON path items), how long, and the bound."""

    loc: Loc
    length: int
    limit: int

    @property
    def message(self) -> str:
        kind = "a name" if self.limit == MAX_NAME_CHARS else "a string"
        return f"{kind} of {self.length} characters; at most {self.limit} are accepted"


def first_oversized(document: object, body_bytes: int) -> Oversized | None:
    """The first string in ``document`` longer than its bound, if any.

    A body of ``body_bytes`` no longer than :data:`MAX_NAME_CHARS` cannot hold one (a
    character takes at least one byte), so it is not walked."""
    if body_bytes <= MAX_NAME_CHARS:
        return None
    pending: list[tuple[object, Loc, int]] = [(document, (), MAX_STRING_CHARS)]
    while pending:
        value, loc, limit = pending.pop()
        if isinstance(value, str):
            if len(value) > limit:
                return Oversized(loc, len(value), limit)
        elif isinstance(value, list):
            items = reversed(list(enumerate(value)))  # popped in document order
            pending.extend((item, (*loc, index), limit) for index, item in items)
        elif isinstance(value, dict):
            for key in value:
                if len(key) > MAX_STRING_CHARS:
                    return Oversized((*loc, key[:_KEY_SHOWN] + "..."), len(key),
                                     MAX_STRING_CHARS)
            pending.extend((item, (*loc, key), _limit_of(key))
                           for key, item in reversed(list(value.items())))
    return None


def _limit_of(member: str) -> int:
    lowered = member.lower()
    return MAX_NAME_CHARS if lowered.endswith(("name", "names")) else MAX_STRING_CHARS
