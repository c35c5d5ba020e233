"""A single oversized value is refused in the codec, before any model or Hyper-V sees it."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from hyperv_agent.cloudstack import bounds, codec, names
from hyperv_agent.cloudstack.bounds import MAX_MEMBERS, MAX_NAME_CHARS, MAX_STRING_CHARS
from hyperv_agent.cloudstack.commands_vm import StopCommand
from tests.cloudstack.fixtures import body, sample_json

TEN_MB = 10 * 1024 * 1024


def _error(fqcn: str, document: Any) -> codec.CodecError:
    with pytest.raises(codec.CodecError) as caught:
        codec.decode_command(fqcn, json.dumps(document).encode())
    return caught.value


def test_10_mb_vm_name_is_refused_at_once_naming_the_field() -> None:
    started = time.perf_counter()
    error = _error(names.STOP_COMMAND, {"vmName": "x" * TEN_MB, "contextMap": {}})
    assert time.perf_counter() - started < 1.0
    assert error.field_path == "vmName"
    assert error.message == f"a name of {TEN_MB} characters; at most 1024 are accepted"
    assert "xxxx" not in str(error)


def test_oversized_value_deep_in_a_command_is_refused_with_its_path() -> None:
    document = sample_json("0005_StartCommand.json")
    document["vm"]["nics"][0]["mac"] = "0" * (MAX_STRING_CHARS + 1)
    error = _error(names.START_COMMAND, document)
    assert error.field_path == "vm.nics[0].mac"
    assert error.message.startswith(f"a string of {MAX_STRING_CHARS + 1} characters")


@pytest.mark.parametrize(("member", "path"), [("vmName", "vmName"), ("vmNames", "vmNames[1]")])
def test_names_longer_than_1024_characters_are_refused(member: str, path: str) -> None:
    value: object = "n" * (MAX_NAME_CHARS + 1)
    if member.endswith("s"):
        value = ["i-2-3-VM", value]
    error = _error(names.GET_VM_STATS_COMMAND if member == "vmNames" else names.STOP_COMMAND,
                   {member: value, "contextMap": {}})
    assert error.field_path == path and error.message.startswith("a name of 1025 characters")


def test_oversized_member_name_is_refused() -> None:
    error = _error(names.STOP_COMMAND, {"vmName": "i-2-3-VM", "k" * (MAX_STRING_CHARS + 1): 1})
    assert error.field_path.startswith('["kkk') and "characters" in error.message


def test_values_at_the_bounds_are_accepted() -> None:
    document = {"vmName": "v" * MAX_NAME_CHARS, "note": "n" * MAX_STRING_CHARS,
                "contextMap": {}}
    command = codec.decode_command(names.STOP_COMMAND, body(document))
    assert isinstance(command, StopCommand) and len(command.vm_name) == MAX_NAME_CHARS


def test_escaped_characters_count_as_characters_not_bytes() -> None:
    raw = json.dumps({"vmName": "\u00e9" * MAX_NAME_CHARS}, ensure_ascii=True).encode()
    assert len(raw) > MAX_NAME_CHARS  # six bytes a character on the wire
    command = codec.decode_command(names.STOP_COMMAND, raw)
    assert isinstance(command, StopCommand) and command.vm_name == "\u00e9" * MAX_NAME_CHARS


# --- how many members a body holds --------------------------------------------------------

SIXTEEN_MB_OF_MEMBERS = [
    b'{"vmName": "i-2-3-VM", "type": [' + b"{}, " * 4_000_000 + b"{}]}",
    b'{"vmName": "i-2-3-VM", "type": [' + b"0," * 8_000_000 + b"0]}",
    b'{"vmName": "i-2-3-VM", "type": [' + b'"a",' * 4_000_000 + b'"a"]}',
    b'{"vmName": "i-2-3-VM", "contextMap": {' + b'"k": 1, ' * 2_000_000 + b'"z": 1}}',
]


@pytest.mark.parametrize("raw", SIXTEEN_MB_OF_MEMBERS,
                         ids=["empty-objects", "numbers", "strings", "object-members"])
def test_body_of_millions_of_members_is_refused_before_it_is_parsed(raw: bytes) -> None:
    started = time.perf_counter()
    with pytest.raises(codec.CodecError) as caught:
        codec.decode_command(names.STOP_COMMAND, raw)
    assert codec.raw_command(names.STOP_COMMAND, raw) is None  # nothing echoed, not parsed
    assert time.perf_counter() - started < 4.0  # parsing it took a minute
    assert caught.value.field_path == ""
    assert caught.value.message.startswith(f"more than {MAX_MEMBERS} array elements")


def test_body_of_exactly_the_most_members_is_accepted() -> None:
    items = b"{}," * (MAX_MEMBERS - 3) + b"{}"  # with vmName and type: MAX_MEMBERS
    raw = b'{"vmName": "i-2-3-VM", "type": [' + items + b"]}"
    assert bounds.members(raw) == MAX_MEMBERS
    assert isinstance(codec.decode_command(names.STOP_COMMAND, raw), StopCommand)
    with pytest.raises(codec.CodecError, match="more than"):
        codec.decode_command(names.STOP_COMMAND, raw.replace(b"[{}", b"[{},{}"))


@pytest.mark.parametrize(("raw", "count"), [
    (b"{}", 0), (b"[]", 0), (b"[ ]", 0), (b"[1]", 1), (b'{"a": [1, {}], "b": {"c": ""}}', 5),
    (b'{"a": "x,[{y", "b\\",[": "\\\\"}', 2), (b'["unterminated, [{', 0),
])
def test_members_are_counted_outside_strings(raw: bytes, count: int) -> None:
    assert bounds.members(raw) == count


def test_commas_and_brackets_inside_strings_do_not_count() -> None:
    text = ",[{" * (MAX_STRING_CHARS // 3)
    raw = body({"vmName": "i-2-3-VM", "a": text, "b": text, "c": text, "contextMap": {}})
    assert isinstance(codec.decode_command(names.STOP_COMMAND, raw), StopCommand)
