"""decode -> encode -> decode loses nothing, for commands and for answers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hyperv_agent.cloudstack import codec, names
from hyperv_agent.cloudstack.answers import (
    Answer,
    CheckVirtualMachineAnswer,
    CopyCmdAnswer,
    GetStorageStatsAnswer,
    GetVmStatsAnswer,
    GetVncPortAnswer,
    SetupAnswer,
    StartAnswer,
)
from hyperv_agent.cloudstack.commands import Command, CopyCommand, StartCommand
from hyperv_agent.cloudstack.commands_host import StartupRoutingCommand
from hyperv_agent.cloudstack.enums import PowerState
from hyperv_agent.cloudstack.objects import VmStatsEntry
from tests.cloudstack.fixtures import REQUESTS, sample, sample_json


def _encode(command: Command) -> bytes:
    if isinstance(command, StartupRoutingCommand):
        return codec.encode_startup_reply(command)
    return codec.encode_command(command)


def _contains(sent: Any, received: Any) -> bool:
    """Every member of ``received`` (nulls aside) is in ``sent``, with the same value."""
    if isinstance(received, dict):
        return isinstance(sent, dict) and all(
            key in sent and _contains(sent[key], value)
            for key, value in received.items() if value is not None)
    if isinstance(received, list):
        return (isinstance(sent, list) and len(sent) == len(received)
                and all(_contains(a, b) for a, b in zip(sent, received, strict=True)))
    return bool(sent == received)


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_command_survives_a_round_trip_when_decoded_from_a_sample(name: str) -> None:
    action = REQUESTS[name]
    command = codec.decode_command(action, sample(name))
    again = codec.decode_command(action, _encode(command))
    assert again == command


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_encoding_keeps_every_member_when_a_sample_is_echoed(name: str) -> None:
    command = codec.decode_command(REQUESTS[name], sample(name))
    sent = json.loads(_encode(command))
    received = sample_json(name)
    if isinstance(command, StartupRoutingCommand):
        received = received[0][names.STARTUP_ROUTING_COMMAND]
        sent = sent[0][names.STARTUP_ROUTING_COMMAND]
    assert _contains(sent, received)


def _answers() -> list[Answer]:
    start = codec.decode_command(names.START_COMMAND, sample("0005_StartCommand.json"))
    copy = codec.decode_command(names.COPY_COMMAND,
                                sample("0017_CopyCommand_template_to_volume.json"))
    assert isinstance(start, StartCommand) and isinstance(copy, CopyCommand)
    return [
        Answer(result=True, details="success - NOP for PingCommand"),
        SetupAnswer(result=True, details="success - NOP"),
        StartAnswer(result=False, details="no", vm=start.vm),
        CopyCmdAnswer(result=True, new_data=copy.dest_to),
        GetStorageStatsAnswer(result=True, capacity_bytes=10, used_bytes=4),
        CheckVirtualMachineAnswer(result=True, state=PowerState.POWER_OFF),
        GetVncPortAnswer(result=True, address="instanceId=X"),
        GetVmStatsAnswer(result=True, vm_stats_map={"v": VmStatsEntry(num_cpus=2)}),
    ]


def test_answers_survive_a_round_trip_when_encoded_and_read_back() -> None:
    answers = _answers()
    assert codec.decode_answers(codec.encode_answers(answers)) == answers


def test_legacy_answer_names_are_read_when_the_csharp_agent_wrote_them() -> None:
    raw = json.dumps([
        {names.GET_STORAGE_STATS_ANSWER: {"result": True, "capacity": 10, "used": 4}},
        {names.CHECK_VIRTUAL_MACHINE_ANSWER: {"result": True, "powerstate": "PowerOn"}},
    ]).encode()
    stats, check = codec.decode_answers(raw)
    assert stats == GetStorageStatsAnswer(result=True, capacity_bytes=10, used_bytes=4)
    assert check == CheckVirtualMachineAnswer(result=True, state=PowerState.POWER_ON)
