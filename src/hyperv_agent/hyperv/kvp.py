"""Host-to-guest key/value pairs (KVP; docs/architecture.md, "Hyper-V facts"): how boot
arguments reach a system VM (protocol §9.2).

A value must fit one Msvm_KvpExchangeDataItem (1023 UTF-16 units) and the guest's pool
record (2047 bytes of UTF-8); ``split_words`` turns a longer value into several items the
guest reads in order. Pushing is one AddKvpItems call (ModifyKvpItems when keys exist).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from hyperv_agent.cim import cimxml
from hyperv_agent.cim.api import InValue
from hyperv_agent.errors import InvalidRequest, JobFailed, MethodFailed
from hyperv_agent.hyperv import vms
from hyperv_agent.hyperv.schema import (
    KVP_GUEST_VALUE_MAX_BYTES,
    KVP_ITEMS_PER_CALL,
    KVP_KEY_MAX_CHARS,
    KVP_VALUE_MAX_CHARS,
    Class,
    KvpSource,
)
from hyperv_agent.hyperv.session import HyperV
from hyperv_agent.hyperv.settings import spawned, step
from hyperv_agent.hyperv.vms import VmRef

#: Where a guest reading the pool as a command line splits it into words: bash's default
#: IFS (space, tab, newline). Not Unicode whitespace: a no-break space, U+2028 or a CR
#: stays inside its word there, so the items keep it inside the word too.
WORD_SEPARATORS: Final = " \t\n"
_WORD: Final = re.compile(f"[^{WORD_SEPARATORS}]+")


def fits_kvp_value(value: str) -> bool:
    """Whether ``value`` fits one host-to-guest KVP item: at most 1023 UTF-16 units (what
    Msvm_KvpExchangeDataItem.Data takes) and 2047 bytes of UTF-8 (a guest pool record)."""
    return (len(value.encode("utf-16-le")) // 2 <= KVP_VALUE_MAX_CHARS
            and len(value.encode("utf-8")) <= KVP_GUEST_VALUE_MAX_BYTES)


def named_word(number: int, word: str) -> str:
    """How an answer names word ``number`` (from 1) of a value: its key (the text before
    its first ``=``, at most 40 characters) and its length, never its value. Boot
    arguments carry secrets as words (``vmpassword=``, ``authorized_key=``,
    ``router_password=``, ``keystore_password=``, ``userdata=``), and a word without
    ``=`` may be one too, so none of it is quoted."""
    key, equals, _ = word.partition("=")
    name = f"key {key[:40]!r}{'...' if len(key) > 40 else ''}" if equals else "no key"
    return f"word {number} ({name}, {len(word)} characters)"


def refuse_uncarried(key: str, value: str) -> None:
    """InvalidRequest naming the character, its offset and its word (``named_word``) when
    ``value`` holds one no KVP item carries: a NUL or another C0 control but tab, LF and
    CR, U+FFFE or U+FFFF. Hyper-V takes an item only as CIM-XML text (every backend
    writes it so), which has no such character; and a guest's KVP driver ends a value at
    its first NUL. Pure, no I/O; one pass over ``value`` when it is carried."""
    offset = cimxml.uncarried(value)
    if offset is None:
        return
    before = value[:offset]
    start = max(map(before.rfind, WORD_SEPARATORS)) + 1
    word = _WORD.match(value, start)
    number = len(_WORD.findall(before, 0, start)) + 1
    raise InvalidRequest(  # its place and its word's key, not its neighbours
        f"{key!r} holds the character {value[offset]!r} at offset {offset}, of "
        f"{named_word(number, word.group() if word else '')}, which no KVP item carries: "
        "Hyper-V takes items as CIM-XML text, which has no NUL, no C0 control but tab, LF "
        "and CR, and no U+FFFE or U+FFFF")


def split_words(key: str, value: str) -> tuple[tuple[str, str], ...]:
    """``value`` as KVP items: one item ``key`` when it fits, else several whose values
    hold whole words (split at ``WORD_SEPARATORS``, never inside a word).

    Every item lands in the guest's pool as a record of its own; a guest that reads the
    whole pool as one command line (CloudStack's system VMs, protocol §9.2) sees every
    word. Each part starts and ends with a space, so no word runs into the next record's
    key; the parts are keyed ``key``, ``key-2``, ``key-3``, ... A word that does not fit
    one item, or more than 128 items: InvalidRequest naming the limit and the word
    (``named_word``: its key, never its value). ``value`` must hold only characters an
    item carries: callers check it once with ``refuse_uncarried`` (``push_kvp_items``
    refuses the rest). Pure, no I/O.
    """
    if fits_kvp_value(value):
        return ((key, value),)
    parts: list[str] = []
    for number, found in enumerate(_WORD.finditer(value), 1):
        word = found.group()
        if not fits_kvp_value(f" {word} "):
            raise InvalidRequest(
                f"{named_word(number, word)} of {key!r} does not fit one KVP item: with a "
                f"space on each side a word must fit one KVP value of at most "
                f"{KVP_VALUE_MAX_CHARS} characters ({KVP_GUEST_VALUE_MAX_BYTES} bytes of "
                "UTF-8), and words are not split")
        if parts and fits_kvp_value(f"{parts[-1]}{word} "):
            parts[-1] = f"{parts[-1]}{word} "
        else:
            parts.append(f" {word} ")
    if not parts:
        return ((key, value.strip(WORD_SEPARATORS)),)
    if len(parts) > KVP_ITEMS_PER_CALL:
        raise InvalidRequest(
            f"{key!r} needs {len(parts)} KVP items of at most {KVP_VALUE_MAX_CHARS} "
            f"characters; at most {KVP_ITEMS_PER_CALL} are pushed")
    return tuple((key if n == 1 else f"{key}-{n}", part) for n, part in enumerate(parts, 1))


async def push_kvp(hv: HyperV, vm: VmRef, key: str, value: str) -> None:
    """Set the host-to-guest KVP item ``key`` of the VM to ``value`` (``push_kvp_items``
    with one item)."""
    await push_kvp_items(hv, vm, ((key, value),))


async def push_kvp_items(hv: HyperV, vm: VmRef, items: Sequence[tuple[str, str]]) -> None:
    """Set host-to-guest KVP items (key, value) of the VM, all in one call.

    A value that does not fit one item (``fits_kvp_value``; ``split_words`` splits long
    ones), a key or value holding a character no item carries (``refuse_uncarried``), an
    empty or over-long key, or more than 128 items: InvalidRequest, nothing pushed.
    AddKvpItems first; if it fails (a key exists), ModifyKvpItems. Missing VM:
    HyperVError after both attempts. Safe to repeat: afterwards the VM has each item with
    its value, seen by the guest while it runs with KVP integration services (keys the
    VM already had are left as they were). Hyper-V applies a call wholly or not at all,
    so nothing needs cleaning up on failure. 1 call + 1 W when warm; 2 calls + 2 W when
    the keys exist.
    """
    if not 1 <= len(items) <= KVP_ITEMS_PER_CALL:
        raise InvalidRequest(f"push 1..{KVP_ITEMS_PER_CALL} KVP items, not {len(items)}")
    for key, value in items:
        if not key or len(key) > KVP_KEY_MAX_CHARS:
            raise InvalidRequest(f"KVP key must have 1..{KVP_KEY_MAX_CHARS} characters")
        refuse_uncarried("a KVP key", key)
        refuse_uncarried(key, value)
        if not fits_kvp_value(value):
            raise InvalidRequest(
                f"KVP value of {key!r} has {len(value)} characters, more than one item holds "
                f"({KVP_VALUE_MAX_CHARS} characters, {KVP_GUEST_VALUE_MAX_BYTES} bytes of UTF-8)")
    item = await spawned(hv, Class.KVP_ITEM)
    data = [item.updated(Name=key, Data=value, Source=int(KvpSource.HOST))
            for key, value in items]
    params: dict[str, InValue] = {"TargetSystem": vm.path, "DataItems": list(data)}
    names = ", ".join(repr(key) for key, _ in items)
    try:
        await vms.call_service(hv, "AddKvpItems", params)
    except (MethodFailed, JobFailed) as added:
        await step(f"pushing KVP item {names}: adding it failed ({added}), then replacing it",
                    vms.call_service(hv, "ModifyKvpItems", params))
