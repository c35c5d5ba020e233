"""Mutated sample bodies: the codec answers with a command or a CodecError, nothing else."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyperv_agent.cloudstack import codec, names
from hyperv_agent.cloudstack.commands import Command, StartupRoutingCommand
from tests.cloudstack.fixtures import REQUESTS, sample

Path = tuple[str | int, ...]

_KEYS = st.sampled_from([
    "vm", "vmName", "vm_name", "name", "cpus", "maxRam", "disks", "nics", "data", "type",
    "size", "dataStore", "imageDataStore", "srcTO", "destTO", "wait", "wait_s", "contextMap",
    "_url", "pool", "FQCN", "model_config", "__class__",
]) | st.text(max_size=8)
_CLASSES = st.sampled_from([
    names.VOLUME_OBJECT_TO, names.TEMPLATE_OBJECT_TO, names.PRIMARY_DATA_STORE_TO,
    names.NFS_TO, names.S3_TO, "org.apache.cloudstack.storage.to.SnapshotObjectTO",
])
_SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
            | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
            | st.sampled_from(["ROOT", "ISO", "VHDX", "Filesystem", "PowerOn", "Image", ""]))
JSON_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (st.lists(inner, max_size=3)
                   | st.dictionaries(_KEYS, inner, max_size=3)
                   | st.dictionaries(_CLASSES, inner, min_size=1, max_size=1)),
    max_leaves=10,
)


def _paths(value: Any, here: Path = ()) -> list[Path]:
    found = [here]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*here, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*here, index))
    return found


def _replace(document: Any, path: Path, new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    copy = dict(document) if isinstance(document, dict) else list(document)
    copy[head] = _replace(document[head], rest, new)  # type: ignore[index]
    return copy


def _mutate(data: st.DataObject, document: Any) -> Any:
    path = data.draw(st.sampled_from(_paths(document)))
    target: Any = document
    for step in path:
        target = target[step]
    kind = data.draw(st.sampled_from(["replace", "wrap", "drop", "add"]))
    if kind == "replace":
        return _replace(document, path, data.draw(JSON_VALUES))
    if kind == "wrap":
        return _replace(document, path, [target])
    if kind == "drop" and isinstance(target, dict) and target:
        key = data.draw(st.sampled_from(sorted(target)))
        return _replace(document, path, {k: v for k, v in target.items() if k != key})
    if isinstance(target, dict):
        return _replace(document, path, {**target, data.draw(_KEYS): data.draw(JSON_VALUES)})
    return document


def _check(action: str, raw: bytes) -> None:
    try:
        command = codec.decode_command(action, raw)
    except codec.CodecError:
        return
    _assert_round_trip(action, command)


def _assert_round_trip(action: str, command: Command) -> None:
    if isinstance(command, StartupRoutingCommand):
        encoded = codec.encode_startup_reply(command)
    else:
        encoded = codec.encode_command(command)
    assert codec.decode_command(action, encoded) == command


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(REQUESTS)), data=st.data())
def test_decode_raises_only_codec_errors_when_sample_json_is_mutated(
    name: str, data: st.DataObject
) -> None:
    document = json.loads(sample(name))
    for _ in range(data.draw(st.integers(1, 4))):
        document = _mutate(data, document)
    _check(REQUESTS[name], json.dumps(document).encode())


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(sorted(REQUESTS)), cut=st.integers(0, 2000),
       junk=st.binary(max_size=8), position=st.integers(0, 2000))
def test_decode_raises_only_codec_errors_when_sample_bytes_are_damaged(
    name: str, cut: int, junk: bytes, position: int
) -> None:
    raw = sample(name)
    damaged = raw[:position] + junk + raw[position:cut] if cut > position else raw[:cut] + junk
    _check(REQUESTS[name], damaged)
