"""The models speak Gson's names and types: every JSON name is the Java field's, and a
field that arrives with another type than its Java type is a malformed request."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from hyperv_agent.cloudstack import codec, names
from hyperv_agent.cloudstack.answers import CheckVirtualMachineAnswer, GetStorageStatsAnswer
from hyperv_agent.cloudstack.commands import COMMAND_TYPES
from hyperv_agent.cloudstack.enums import PowerState
from hyperv_agent.cloudstack.objects import HostStatsEntry
from tests.cloudstack.fixtures import BASE_BODIES
from tests.cloudstack.java_fields import (
    MODELS,
    TRANSFER_OBJECTS,
    java_fields,
    java_types,
    model_names,
)

# Names on one side only, each with its reason. Nothing else may differ.
MODEL_ONLY: dict[type[BaseModel], set[str]] = {
    # The C# agent's names, written next to the Java ones for older management servers
    # (protocol §5.3, §12); Gson ignores members a class does not have.
    GetStorageStatsAnswer: {"capacity", "used"},
    CheckVirtualMachineAnswer: {"powerstate"},
}
JAVA_ONLY: dict[type[BaseModel], set[str]] = {
    # The management server's own database row of the host, set on the MS; an agent never
    # writes it.
    HostStatsEntry: {"hostVo"},
}

# The least each transfer object needs to validate.
BASE_OBJECTS: dict[str, dict[str, Any]] = {
    "com.cloud.agent.api.to.VirtualMachineTO": {"name": "i-2-5-VM"},
    "com.cloud.agent.api.to.DiskTO": {"type": "ROOT"},
    "com.cloud.agent.api.GetVmConfigAnswer$NicDetails": {"macAddress": "02004C5F0001"},
    "com.cloud.utils.Pair": {"t": {}, "u": {}},
}
# Values of another JSON type than each kind (Gson refuses every one of them).
WRONG: dict[str, tuple[Any, ...]] = {
    "integer": ({"a": 1}, [1], True, "many"),
    "number": ({"a": 1}, [1], True, "many"),
    "boolean": ({"a": 1}, [1], 1),
    "string": ({"a": 1}, [1]),
    "enum": ({"a": 1}, [1], 3),
    "object": ("x", [1], 3),
    "array": ("x", {"a": 1}, 3),
    "wrapped": ("x", [1], 3),
}
ROUTED = sorted(fqcn for fqcn in COMMAND_TYPES if codec.is_known(fqcn)
                and fqcn != names.HOST_VM_STATE_REPORT_COMMAND)


@pytest.mark.parametrize("fqcn", sorted(MODELS))
def test_model_names_are_the_java_fields_when_the_class_is_modelled(fqcn: str) -> None:
    model = MODELS[fqcn]
    java, ours = set(java_fields(fqcn)), model_names(model)
    assert java, f"{fqcn} is not in java_fields.json"
    assert ours - java == MODEL_ONLY.get(model, set()), f"{model.__name__} names no Java field"
    assert java - ours == JAVA_ONLY.get(model, set()), f"{model.__name__} misses Java fields"


def test_extra_names_are_written_when_a_class_writes_the_csharp_names_too() -> None:
    stats = GetStorageStatsAnswer(result=True, capacity_bytes=10, used_bytes=4)
    check = CheckVirtualMachineAnswer(result=True, state=PowerState.POWER_ON)
    for answer in (stats, check):
        sent = json.loads(codec.encode_answers([answer]))[0][type(answer).FQCN]
        assert MODEL_ONLY[type(answer)] <= set(sent)


@pytest.mark.parametrize("fqcn", ROUTED)
def test_field_of_another_type_is_malformed_when_the_handler_does_not_read_it(
    fqcn: str,
) -> None:
    base = BASE_BODIES.get(fqcn, {})
    codec.decode_command(fqcn, _body(fqcn, base))  # the base itself decodes
    java = "com.cloud.agent.api.StartupRoutingCommand" \
        if fqcn == names.STARTUP_COMMAND else fqcn
    wrong = [(field, value) for field, kind in java_fields(java).items()
             for value in WRONG.get(kind, ())]
    assert wrong
    for field, value in wrong:
        with pytest.raises(codec.CodecError) as caught:
            codec.decode_command(fqcn, _body(fqcn, base | {field: value}))
        assert caught.value.field_path.endswith(_path(field)), (field, value, caught.value)


@pytest.mark.parametrize("fqcn", sorted(TRANSFER_OBJECTS.values()))
def test_object_field_of_another_type_is_refused_when_nobody_reads_it(fqcn: str) -> None:
    model, base = MODELS[fqcn], BASE_OBJECTS.get(fqcn, {})
    model.model_validate(base)
    for field, kind in java_fields(fqcn).items():
        if field in JAVA_ONLY.get(model, set()):
            continue
        for value in WRONG.get(kind, ()):
            with pytest.raises(ValidationError) as caught:
                model.model_validate(base | {field: value})
            assert caught.value.errors()[0]["loc"][0] == field, (field, value)


def _body(fqcn: str, fields: dict[str, Any]) -> bytes:
    if fqcn == names.STARTUP_COMMAND:
        return json.dumps([{names.STARTUP_ROUTING_COMMAND: fields}]).encode()
    return json.dumps(fields).encode()


def _path(field: str) -> str:
    return codec.format_path((field,)) if field.isidentifier() else f'["{field}"]'


#: The range Gson reads into each Java integer type; anything past it fails the body.
_RANGES = {"int": 32, "Integer": 32, "long": 64, "Long": 64}


def _range_errors(model: type[BaseModel], base: dict[str, Any], field: str,
                  value: int) -> list[str]:
    try:
        model.model_validate(base | {field: value})
    except ValidationError as error:
        return [e["msg"] for e in error.errors() if e["loc"][:1] == (field,)]
    return []


@pytest.mark.parametrize("fqcn", sorted(MODELS))
def test_an_integer_past_its_java_type_is_refused_and_one_within_it_is_not_for_its_range(
    fqcn: str,
) -> None:
    """As Gson: 2**31 in an ``int`` field (a ``wait``, a port, an S3 timeout) fails the
    request, in a ``long`` one (a size in bytes) it is read; nothing past a long is."""
    model = MODELS[fqcn]
    base = BASE_OBJECTS.get(fqcn, BASE_BODIES.get(fqcn, {}))
    for field, java in java_types(fqcn).items():
        if java not in _RANGES or field in JAVA_ONLY.get(model, set()):
            continue
        bits = _RANGES[java]
        high, low = (1 << (bits - 1)) - 1, -(1 << (bits - 1))
        for value in (high + 1, low - 1, 10**400):
            assert any(f"does not fit a Java {java.lower().replace('integer', 'int')}" in m
                       for m in _range_errors(model, base, field, value)), (field, value)
        for value in (high, low):
            assert not any("does not fit" in m
                           for m in _range_errors(model, base, field, value)), (field, value)
