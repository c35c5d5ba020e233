"""Every failure of every routed command answers the command's own answer class, with the
fields the management server reads from it when ``result`` is false.

The MS casts the first answer to the class it expects (a bare Answer where it wants a
ModifyStoragePoolAnswer is a ClassCastException) and some of its code reads fields
without checking ``result`` first: GetVmConfigAnswer.nics is iterated, a
SecurityGroupRuleAnswer's vmId and logSequenceNumber are unboxed. Each failure kind is
driven over the whole route table: a malformed body over real HTTPS on the real agent,
and an AgentError and an unexpected error raised by the handler through the real
dispatcher.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from hyperv_agent.cloudstack import codec, names
from hyperv_agent.cloudstack.answers import Answer
from hyperv_agent.cloudstack.base import Command
from hyperv_agent.cloudstack.commands import COMMAND_TYPES
from hyperv_agent.errors import AgentError
from hyperv_agent.handlers.dispatch import Dispatch, Result, Route
from tests.cloudstack.fixtures import BASE_BODIES, json_contains
from tests.e2e.conftest import API, Running

ROUTES = sorted(fqcn for fqcn in COMMAND_TYPES if codec.is_known(fqcn))
# Replies that are not Answer[]: a failure is a generic Answer, which the MS reads as "no
# reply" (the host is not added; the ping goes out without a report), never as data.
SPECIAL = {names.STARTUP_COMMAND: names.ANSWER, names.HOST_VM_STATE_REPORT_COMMAND: names.ANSWER}
# Fields the MS dereferences on a failed answer, with the value they must have.
READ_ON_FAILURE: dict[str, dict[str, Any]] = {
    names.GET_VM_CONFIG_ANSWER: {"nics": [], "vmName": "i-2-5-VM"},
    names.MODIFY_VM_NIC_CONFIG_ANSWER: {"vmName": "i-2-5-VM"},
    names.MODIFY_STORAGE_POOL_ANSWER: {"datastoreClusterChildren": []},
    names.SECURITY_GROUP_RULE_ANSWER: {"vmId": 8, "logSequenceNumber": 3},
    names.GET_VNC_PORT_ANSWER: {"port": -9},
    names.START_ANSWER: {"vm": {"name": "i-2-5-VM"}},
    names.ATTACH_ANSWER: {"disk": {"type": "ISO"}},
    names.DETTACH_ANSWER: {"disk": {"type": "ISO"}},
    names.MIGRATE_VOLUME_ANSWER: {"volumePath": "p"},
    names.GET_VM_DISK_STATS_ANSWER: {"hostName": "hv-1"},
    names.GET_VM_NETWORK_STATS_ANSWER: {"hostName": "hv-1"},
    names.GET_VOLUME_STATS_ANSWER: {"poolUuid": "p-1", "poolType": "SMB"},
}


def _expected_class(fqcn: str) -> str:
    return SPECIAL.get(fqcn) or names.ANSWER_FOR.get(fqcn, names.ANSWER)


def _body(fqcn: str, extra: dict[str, Any]) -> bytes:
    fields = BASE_BODIES.get(fqcn, {}) | extra
    if fqcn == names.STARTUP_COMMAND:
        return json.dumps([{names.STARTUP_ROUTING_COMMAND: fields}]).encode()
    return json.dumps(fields).encode()


def _check(fqcn: str, reply: Any, details: str) -> None:
    assert isinstance(reply, list) and len(reply) == 1, reply
    ((key, fields),) = reply[0].items()
    assert key == _expected_class(fqcn), (fqcn, reply)
    assert fields["result"] is False and details in fields["details"], fields
    assert json_contains(fields, READ_ON_FAILURE.get(key, {})), (fqcn, fields)
    assert codec.decode_answers(json.dumps(reply).encode())  # Gson-readable, class known


def test_route_table_is_every_command_the_agent_knows(running: Running) -> None:
    assert set(running.agent.dispatch.handlers) <= set(ROUTES)
    assert all(running.agent.dispatch.knows(fqcn) for fqcn in ROUTES)


@pytest.mark.parametrize("fqcn", ROUTES)
async def test_malformed_body_answers_the_commands_own_class_when_any_command_fails(
    running: Running, fqcn: str
) -> None:
    status, reply = await running.post(fqcn, _body(fqcn, {"wait": "soon"}))
    assert status == 200
    _check(fqcn, reply, "malformed request: ")
    assert reply[0][_expected_class(fqcn)]["details"].split("malformed request: ")[1].split(
        ":")[0].endswith("wait")


@pytest.mark.parametrize("raised", [AgentError("the host refused"), KeyError("x")])
async def test_handler_error_answers_the_commands_own_class_on_every_route(
    raised: Exception,
) -> None:
    async def failing(command: Command) -> Result:
        raise raised

    dispatch = Dispatch(dict.fromkeys(ROUTES, failing))
    details = "the host refused" if isinstance(raised, AgentError) else "internal error (KeyError)"
    for fqcn in ROUTES:
        reply = json.loads(await dispatch(fqcn, _body(fqcn, {})))
        _check(fqcn, reply, details)


async def test_every_route_takes_the_class_its_command_decodes_to(running: Running) -> None:
    routes = running.agent.dispatch.routes
    for fqcn, route in routes.items():
        decoded = codec.decode_command(fqcn, _body(fqcn, {}))
        assert isinstance(decoded, route.command), (fqcn, route.command, type(decoded))
        assert route.command is not Command, fqcn  # each handler names the class it takes


@pytest.mark.parametrize("raised", [AgentError("the host refused"), KeyError("x")])
async def test_handler_error_answers_the_commands_own_class_when_routes_are_the_agents(
    running: Running, raised: Exception,
) -> None:
    async def failing(command: Command) -> Result:
        raise raised

    routes = {fqcn: Route(route.command, failing)
              for fqcn, route in running.agent.dispatch.routes.items()}
    dispatch = Dispatch(routes)
    details = "the host refused" if isinstance(raised, AgentError) else "internal error (KeyError)"
    for fqcn in routes:
        _check(fqcn, json.loads(await dispatch(fqcn, _body(fqcn, {}))), details)


class _Elsewhere(Command):
    """A command class no body decodes to."""

    FQCN = "org.example.Elsewhere"


async def test_misrouted_command_answers_its_own_class_and_never_reaches_the_handler() -> None:
    reached: list[Command] = []

    async def handler(command: _Elsewhere) -> Result:
        reached.append(command)
        return Answer(result=True)

    dispatch = Dispatch(dict.fromkeys(ROUTES, Route(_Elsewhere, handler)))
    for fqcn in ROUTES:
        _check(fqcn, json.loads(await dispatch(fqcn, _body(fqcn, {}))),
               "its handler takes a _Elsewhere")
    assert reached == []


async def test_unhandled_command_answers_its_own_class_when_no_handler_serves_it() -> None:
    dispatch = Dispatch({})
    for fqcn in ROUTES:
        _check(fqcn, json.loads(await dispatch(fqcn, _body(fqcn, {}))), "not supported")


def test_failed_answer_has_no_secret_when_the_command_carried_one() -> None:
    body = {"vm": {"name": "i-2-5-VM", "vncPassword": "Xk3p9QvL2mRt",
                   "bootArgs": " template=domP vmpassword=s3cret keystore_password=k3y"}}
    answer = codec.failed_answer(names.START_COMMAND, "failed", body)
    text = codec.encode_answers([answer]).decode()
    assert "Xk3p9QvL2mRt" not in text and "s3cret" not in text and "k3y" not in text
    assert isinstance(answer, Answer) and "template=domP" in text


async def test_snapshots_are_refused_as_the_readme_says(running: Running) -> None:
    """A snapshot as a command's data answers the command's own class, naming the class;
    VM snapshot commands, which CloudStack does not send to Hyper-V, are unknown (404);
    a command decoded but not served says so."""
    snapshot = "org.apache.cloudstack.storage.to.SnapshotObjectTO"
    fqcn = names.CREATE_OBJECT_COMMAND
    status, reply = await running.post(fqcn, _body(fqcn, {"data": {snapshot: {"path": "s"}}}))
    assert status == 200
    _check(fqcn, reply, f"unknown class '{snapshot}'")
    assert "VolumeObjectTO" in reply[0][_expected_class(fqcn)]["details"]
    status, text = await running.post("com.cloud.agent.api.CreateVMSnapshotCommand", {})
    assert status == 404
    assert text == "unknown command com.cloud.agent.api.CreateVMSnapshotCommand"
    ssh = names.CHECK_SSH_COMMAND
    status, reply = await running.post(ssh, _body(ssh, {}))
    assert status == 200
    _check(ssh, reply, "CheckSshCommand is not supported by this agent yet")


# --- failed answers stay small ----------------------------------------------------------------

MIB = 1024 * 1024
SMALL_ANSWER_BYTES = 16 * 1024  # an echoed string is cut to 4096 characters, details to 8192


def _marker(length: int) -> str:
    return f" ...[cut: the value had {length} characters]"


def _at(fields: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = fields
    for key in path:
        value = value[key]
    return value


_DISK = {"type": "DATADISK", "diskSeq": 1, "path": "f" * MIB}
_KEPT_DISK = {"disk": {"type": "DATADISK", "diskSeq": 1}}
# Each command, a body with one oversized field, where its answer echoes that field, and
# what the answer echoes whole beside it.
OVERSIZED: list[tuple[str, dict[str, Any], tuple[str, ...], dict[str, Any]]] = [
    (names.GET_VM_CONFIG_COMMAND, {"vmName": "x" * MIB}, ("vmName",), {"nics": []}),
    (names.START_COMMAND, {"vm": {"name": "i-2-5-VM", "bootArgs": "a " * (15 * MIB // 2)}},
     ("vm", "bootArgs"), {"vm": {"name": "i-2-5-VM"}}),
    (names.ATTACH_COMMAND, {"vmName": "i-2-5-VM", "disk": _DISK}, ("disk", "path"), _KEPT_DISK),
    (names.DETTACH_COMMAND, {"vmName": "i-2-5-VM", "disk": _DISK}, ("disk", "path"),
     _KEPT_DISK),
    (names.MODIFY_VM_NIC_CONFIG_COMMAND, {"vmName": "r" * MIB}, ("vmName",), {}),
    (names.GET_VM_DISK_STATS_COMMAND, {"hostName": "h" * MIB, "vmNames": ["i-2-5-VM"]},
     ("hostName",), {}),
    (names.MIGRATE_VOLUME_COMMAND, {"volumePath": "p" * MIB, "pool": {}}, ("volumePath",), {}),
]


@pytest.mark.parametrize(("fqcn", "body", "echoed", "kept"), OVERSIZED,
                         ids=[case[0].rsplit(".", 1)[1] for case in OVERSIZED])
async def test_failed_answer_stays_small_when_the_command_carried_an_oversized_field(
    running: Running, fqcn: str, body: dict[str, Any], echoed: tuple[str, ...],
    kept: dict[str, Any],
) -> None:
    sent = _at(body, echoed)
    async with running.session.post(running.url + API + fqcn, json=body) as reply:
        assert reply.status == 200
        text = await reply.read()
    assert len(text) < SMALL_ANSWER_BYTES, len(text)
    ((key, fields),) = json.loads(text)[0].items()
    assert key == _expected_class(fqcn) and fields["result"] is False
    assert f"malformed request: {'.'.join(echoed)}: a " in fields["details"], fields["details"]
    assert f" of {len(sent)} characters" in fields["details"]
    assert _at(fields, echoed) == sent[:4096] + _marker(len(sent))
    assert json_contains(fields, kept), fields
    _, ready = await running.answer("com.cloud.agent.api.ReadyCommand", {"hostId": 1})
    assert ready["result"] is True  # the agent keeps serving


async def _failed_small_start(running: Running, body: dict[str, Any]
                              ) -> tuple[bytes, dict[str, Any]]:
    """The raw answer to a StartCommand ``body`` and its fields: a failed StartAnswer that
    stays small."""
    async with running.session.post(running.url + API + names.START_COMMAND,
                                    json=body) as reply:
        text = await reply.read()
    assert len(text) < SMALL_ANSWER_BYTES, len(text)
    ((key, fields),) = json.loads(text)[0].items()
    assert key == names.START_ANSWER and fields["result"] is False
    return text, fields


async def test_failed_answer_cuts_a_long_echoed_field_of_a_command_that_decoded(
    running: Running,
) -> None:
    boot_args = "template=domP name=r-4-VM " + "x" * 200_000 + " vmpassword=s3cret"
    disk = {"type": "ROOT", "diskSeq": 0, "path": "C:\\pool\\absent.vhdx",
            "data": {names.VOLUME_OBJECT_TO: {"uuid": "v1", "path": "absent",
                                              "dataStore": {names.PRIMARY_DATA_STORE_TO: {
                                                  "uuid": "nowhere", "poolType": "Filesystem",
                                                  "path": "C:\\nowhere"}}}}}
    body = {"vm": {"name": "r-4-VM", "type": "DomainRouter", "cpus": 1, "speed": 500,
                   "minRam": 256 * MIB, "maxRam": 256 * MIB, "bootArgs": boot_args,
                   "disks": [disk], "nics": []}}
    text, fields = await _failed_small_start(running, body)
    assert "malformed" not in fields["details"]  # it decoded; the start itself failed
    vm = fields["vm"]
    assert vm["name"] == "r-4-VM" and vm["disks"][0]["path"] == "C:\\pool\\absent.vhdx"
    assert vm["bootArgs"] == boot_args[:4096] + _marker(len(boot_args))
    assert "s3cret" not in text.decode()
    assert await running.emulator.query(
        "SELECT ElementName FROM Msvm_ComputerSystem WHERE Caption = 'Virtual Machine'") == []


async def test_failed_answer_leaves_out_an_echoed_field_of_very_many_short_strings(
    running: Running,
) -> None:
    details = {f"k{i}": "v" for i in range(60_000)}  # 0.8 MB of short strings
    body = {"vm": {"name": "i-2-5-VM", "type": "User", "cpus": 0, "minRam": 256 * MIB,
                   "maxRam": 256 * MIB, "details": details, "disks": [], "nics": []}}
    _, fields = await _failed_small_start(running, body)
    assert "vm" not in fields and "cpus must be at least 1" in fields["details"]
    assert fields["details"].endswith("(the command's vm is not echoed: it holds more than "
                                      "65536 characters and items)"), fields["details"]
    _, ready = await running.answer("com.cloud.agent.api.ReadyCommand", {"hostId": 1})
    assert ready["result"] is True


async def test_failed_answer_cuts_long_details_after_redacting_them() -> None:
    secret_at_the_cut = "x" * 8180 + '{"password": "s3cret-tail"}'

    async def failing(command: Command) -> Result:
        raise AgentError("the host said: " + secret_at_the_cut + "y" * MIB)

    dispatch = Dispatch({names.STOP_COMMAND: failing})
    text = await dispatch(names.STOP_COMMAND, _body(names.STOP_COMMAND, {}))
    assert len(text) < SMALL_ANSWER_BYTES, len(text)
    fields = json.loads(text)[0][names.STOP_ANSWER]
    details = fields["details"]
    assert details.startswith("StopCommand failed: the host said: xxx")
    assert re.fullmatch(r"[^\n]{8192} \.\.\.\[cut: the value had 10[0-9]{5} characters\]",
                        details), details[-100:]
    assert "s3c" not in details


def test_failed_answer_echo_leaves_no_part_of_a_secret_where_a_string_is_cut() -> None:
    for start in range(4080, 4100):  # the cut falls before, inside and after the secret
        text = "d" * start + '{"vncPassword":"Xk3p9QvL2mRt"} password=s3cret9 ' + "e" * 20000
        answer = codec.failed_answer(names.MIGRATE_VOLUME_COMMAND, "failed",
                                     {"volumePath": text, "pool": {}})
        encoded = codec.encode_answers([answer]).decode()
        assert "Xk3p" not in encoded and "s3cr" not in encoded, start
        assert len(encoded) < SMALL_ANSWER_BYTES
