"""Bounds on a command body's values, checked before any model (or Hyper-V) sees them.

No string of a command, value or member name, is longer than :data:`MAX_STRING_CHARS`: room
for the longest value CloudStack sends, a system VM's boot arguments (at most 128 KVP items
of 1023 characters), but for a config drive ISO (``isoData``, :data:`MAX_ISO_DATA_CHARS`).
A name (the value of a member whose name ends in ``name`` or ``names``:
``vmName``, ``vmNames``, ``name``) is at most :data:`MAX_NAME_CHARS`; CloudStack keeps names
in columns of 255 characters. A 10 MB VM name is refused at once instead of travelling down
to a WQL query that takes seconds to parse.

No body holds more than :data:`MAX_MEMBERS` array elements and object members, counted in
its bytes before it is parsed: a 16 MB body of four million empty objects would hold the
event loop (every other command, every ping) for tens of seconds while it is parsed,
walked and validated. The largest body CloudStack sends holds a few hundred.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

MAX_STRING_CHARS: Final = 256 * 1024
#: The largest config drive ISO the management server builds (ConfigDriveBuilder refuses
#: one over 64 MiB) ...
MAX_CONFIG_DRIVE_BYTES: Final = 64 * 1024 * 1024
#: ... and its base64 text, HandleConfigDriveIsoCommand's ``isoData``: the one string of a
#: command longer than MAX_STRING_CHARS (a config drive with the largest user data the MS
#: takes is a few MB). The body's own bound, ``[agent] max_request_bytes``, applies first.
MAX_ISO_DATA_CHARS: Final = 4 * -(-MAX_CONFIG_DRIVE_BYTES // 3)
MAX_NAME_CHARS: Final = 1024
MAX_MEMBERS: Final = 100_000
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


#: A JSON string, its quotes included; an unterminated one runs to the end (possessive: the
#: scan is linear whatever the bytes).
_STRING: Final = re.compile(rb'"(?:[^"\\]++|\\.)*+"?', re.DOTALL)
#: The opening bracket of a non-empty array or object.
_OPENS_NONEMPTY: Final = re.compile(rb"[\[{](?=\s*+[^\s\]}])")


def members(body: bytes) -> int:
    """How many array elements and object members the JSON ``body`` holds (for a body that
    is not JSON, a count of the same kind: its separators and non-empty brackets outside
    strings)."""
    outside = _STRING.sub(b"", body)
    return outside.count(b",") + _OPENS_NONEMPTY.subn(b"", outside)[1]


def too_many_members(body: bytes) -> bool:
    """Whether ``body`` holds more than :data:`MAX_MEMBERS` array elements and object
    members. Counted from the cheapest end: a body with fewer separators and brackets than
    that (strings included) cannot; one with more than twice as many strings (every string
    is a member's key or value, an element, or the whole document) must; only the bodies in
    between have their strings taken out and the rest counted."""
    upper = body.count(b",") + body.count(b"[") + body.count(b"{")
    if upper <= MAX_MEMBERS:
        return False
    strings_at_least = (body.count(b'"') - body.count(b'\\"')) // 2
    if strings_at_least > 2 * MAX_MEMBERS + 1:
        return True
    outside = _STRING.sub(b"", body)
    separators = outside.count(b",")
    if separators > MAX_MEMBERS:
        return True
    return separators + _OPENS_NONEMPTY.subn(b"", outside)[1] > MAX_MEMBERS


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
    if member == "isoData":
        return MAX_ISO_DATA_CHARS
    lowered = member.lower()
    return MAX_NAME_CHARS if lowered.endswith(("name", "names")) else MAX_STRING_CHARS
