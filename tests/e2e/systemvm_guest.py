"""What CloudStack 4.22's system VM template, booted on Hyper-V, makes of its host-to-guest
KVP items: the guest half of protocol §9.2, written down from its scripts so tests can
check the agent's items end to end.

- The Linux KVP daemon (``hv_kvp_daemon``) keeps pool 0, the items the host pushes, in
  ``/var/opt/hyperv/.kvp_pool_0``: one record per key, in the order the items reached it
  (Hyper-V promises no order), each a 512-byte key then a 2048-byte value, UTF-8 (the
  kernel converts Hyper-V's UTF-16 and keeps at most 511 and 2047 bytes), NUL-padded.
- ``setup/init.sh`` (``virtualpc|hyperv``) copies that file byte for byte to
  ``/var/cache/cloud/cmdline``.
- ``setup/common.sh``'s ``parse_cmd_line``: ``CMDLINE=$(cat /var/cache/cloud/cmdline)``
  (bash drops the NUL bytes), ``for i in $CMDLINE`` (words split at space, tab and
  newline), ``KEY=$(echo $i | cut -d= -f1)``, ``VALUE=$(echo $i | cut -d= -f2)`` (a word
  without ``=`` is its own key and value), each exported, so a later word wins;
  ``type=`` sets ``TYPE``, which picks the VM's role.
- ``dnsmasq.sh`` finds ``dns1`` with ``grep -o " dns1=[[:digit:]].* "`` and ``awk '{print
  $1}'`` over the file's text with newlines as spaces: the word needs whitespace on both
  sides.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

KEY_BYTES, VALUE_BYTES = 512, 2048  # one record of .kvp_pool_0
_IFS = re.compile(r"[ \t\n]+")


def _field(text: str, size: int) -> bytes:
    """``text`` as the kernel puts it in a record: UTF-8, whole characters up to ``size`` - 1
    bytes, NUL-padded to ``size``."""
    out = b""
    for char in text:
        encoded = char.encode()
        if len(out) + len(encoded) > size - 1:
            break
        out += encoded
    return out.ljust(size, b"\0")


def pool_file(items: Iterable[tuple[str, str]]) -> bytes:
    """``.kvp_pool_0`` holding ``items`` (key, value) in the order given."""
    return b"".join(_field(key, KEY_BYTES) + _field(value, VALUE_BYTES)
                    for key, value in items)


def cmdline_text(pool: bytes) -> str:
    """``$(cat /var/cache/cloud/cmdline)`` once init.sh copied ``pool`` there."""
    return pool.replace(b"\0", b"").decode()


def words(text: str) -> list[str]:
    """``for i in $CMDLINE``: the words, split where bash's default IFS splits."""
    return [word for word in _IFS.split(text) if word]


def parse_cmd_line(text: str) -> dict[str, str]:
    """The settings ``parse_cmd_line`` exports from ``text``: ``cut -d= -f1`` and ``-f2`` of
    every word, a later word winning."""
    settings: dict[str, str] = {}
    for word in words(text):
        fields = word.split("=")
        settings[fields[0]] = fields[1] if len(fields) > 1 else word
    return settings


def dnsmasq_dns1(text: str) -> str | None:
    """What ``dnsmasq.sh`` takes as ``dns1`` from the command line ``text``."""
    found = re.search(r" dns1=[0-9].* ", text.replace("\n", " "))
    return found.group(0).removeprefix(" dns1=").split()[0] if found else None


def orders(items: Sequence[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """Orders the daemon may record ``items`` in: as pushed, reversed, and every rotation."""
    listed = list(items)
    rotations = [listed[n:] + listed[:n] for n in range(len(listed))]
    return [*rotations, listed[::-1]]
