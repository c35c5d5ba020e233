"""A command's ``wait`` (a Java int: how long the management server waits for the answer)
as the MS could never send it, and as Gson would still read it, over real HTTPS on an
emulated host. One Gson refuses (past an int, fractional, not a number) fails the command
in its own answer class, naming ``wait``; one Gson reads (negative, null, a string or a
float holding a whole number) is the MS's own reading: 0 or less waits the MS default."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hyperv_agent.cloudstack import names
from hyperv_agent.emulator import vhd
from tests.cloudstack.fixtures import ms422_json
from tests.e2e.conftest import Running, samples_host_config, serving

LOCAL_POOL = "C:\\Users\\Public\\Documents\\Hyper-V\\Virtual hard disks"
ROOT_DISK = "03164c49-b0a9-4db9-baf2-20e389d54e6a.vhdx"
HOST_STATS = {"hostGuid": "g", "hostName": "h", "hostId": 5, "contextMap": {}, "wait": 0}
#: Each command with a body as the MS sends it; GetHostStats waits for nothing of Hyper-V.
COMMANDS: list[tuple[str, str, Any]] = [
    (names.START_COMMAND, names.START_ANSWER, "15_StartCommand.json"),
    (names.STOP_COMMAND, names.STOP_ANSWER, "24_StopCommand.json"),
    (names.COPY_COMMAND, names.COPY_CMD_ANSWER, "12_CopyCommand.json"),
    (names.MIGRATE_COMMAND, names.MIGRATE_ANSWER, "41_MigrateCommand.json"),
    (names.GET_HOST_STATS_COMMAND, names.GET_HOST_STATS_ANSWER, HOST_STATS),
]
#: ``wait`` values Gson refuses for an int, and what the answer's ``details`` say of each.
REFUSED: list[tuple[Any, str]] = [
    (2**31, "wait: 2147483648 does not fit a Java int (-2147483648 to 2147483647)"),
    (-(2**31) - 1, "wait: -2147483649 does not fit a Java int"),
    (2**63, "wait: 9223372036854775808 does not fit a Java int"),
    (1e18, "wait: 1000000000000000000 does not fit a Java int"),
    (10**400, "wait: a 1329-bit number does not fit a Java int"),
    (1.5, "wait: Input should be a valid integer, got a number with a fractional part"),
    ("soon", "wait: Input should be a valid integer, unable to parse string as an integer"),
    (True, "wait: expected a number, got a boolean"),
]


@pytest.fixture
async def ms(tmp_path: Path) -> AsyncIterator[Running]:
    async with serving(samples_host_config(tmp_path)) as running:
        yield running


def _body(sample: Any, wait: Any) -> dict[str, Any]:
    body: dict[str, Any] = dict(sample) if isinstance(sample, dict) else ms422_json(sample)
    return body | {"wait": wait}


async def test_a_wait_gson_refuses_fails_the_command_in_its_own_answer_class(
    ms: Running,
) -> None:
    """A ``wait`` of 2**63 or 1e18 was read as a bound of centuries, and a 400-digit one
    failed as an internal error (OverflowError): each now fails as a malformed request,
    at once, naming ``wait``, and the agent keeps serving."""
    for fqcn, answer_class, sample in COMMANDS:
        short = fqcn.rsplit(".", 1)[-1]
        for wait, said in REFUSED:
            key, answer = await asyncio.wait_for(ms.answer(fqcn, _body(sample, wait)), 10)
            assert (key, answer["result"]) == (answer_class, False), (short, wait, answer)
            assert answer["details"].startswith(f"{short}: malformed request: {said}"), \
                (short, wait, answer["details"])
    _, health = await ms.answer(names.CHECK_HEALTH_COMMAND, {})
    assert health["result"] is True


async def test_a_wait_gson_reads_is_taken_as_the_ms_takes_it(ms: Running) -> None:
    """-1 and null are what 0 is (the MS waits its default, 1800 s: no spurious timeout),
    "30" and 30.0 are 30: a VM starts and stops with each, and the host's stats answer."""
    disk = ms.emulator.host.paths.local(f"{LOCAL_POOL}\\{ROOT_DISK}")
    disk.parent.mkdir(parents=True, exist_ok=True)
    vhd.create(disk, vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC, 64 << 20)
    for wait in (-1, None, "30", 30.0, -(2**31), 2**31 - 1):
        for fqcn, answer_class, sample in (COMMANDS[0], COMMANDS[1], COMMANDS[4]):
            key, answer = await asyncio.wait_for(ms.answer(fqcn, _body(sample, wait)), 30)
            assert (key, answer["result"]) == (answer_class, True), (fqcn, wait, answer)
