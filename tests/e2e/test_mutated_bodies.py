"""The management server's own bodies, mutated, through the agent's real dispatch on the
emulator: every routed command answers with its own answer class, well formed, never an
"internal error", and the agent answers a health check after each.

The bodies are the samples (``samples/`` and ``samples/ms-4.22``) and the least body of
each command (``BASE_BODIES``); a mutation drops a member, nulls it, gives it another JSON
type, or puts in its place a long string, an out-of-range or fractional number, a path
leaving the pools, a UNC path, a NUL character, a list where an object was, an unknown
class wrapper or a deep nesting.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyperv_agent.cloudstack import codec, names
from hyperv_agent.cloudstack.commands import COMMAND_TYPES
from hyperv_agent.service import Agent, build_agent
from tests.cloudstack.fixtures import BASE_BODIES, MS_422, REQUESTS, sample_json
from tests.cloudstack.test_fuzz import _paths
from tests.e2e.conftest import samples_host_config

ROUTES = sorted(fqcn for fqcn in COMMAND_TYPES if codec.is_known(fqcn))
_BY_SHORT = {fqcn.rsplit(".", 1)[-1]: fqcn for fqcn in ROUTES}
# Replies that are not Answer[] when they succeed; a failure is a generic Answer.
_REPLIES = {names.STARTUP_COMMAND: names.STARTUP_ROUTING_COMMAND,
            names.HOST_VM_STATE_REPORT_COMMAND: None}
HEALTH = names.CHECK_HEALTH_COMMAND
Path_ = tuple[str | int, ...]


def _bodies() -> list[tuple[str, Any]]:
    found = [(fqcn, sample_json(name)) for name, fqcn in sorted(REQUESTS.items())]
    for path in sorted(MS_422.glob("*.json")):
        found.append((_BY_SHORT[path.stem.split("_")[1]], json.loads(path.read_bytes())))
    found += sorted((fqcn, body) for fqcn, body in BASE_BODIES.items())
    found += [(fqcn, {"contextMap": {}, "wait": 0}) for fqcn in ROUTES
              if fqcn not in {f for f, _ in found}]
    return found


BODIES = _bodies()
_STRINGS = st.sampled_from([
    "", "x" * 100_000, "..\\..\\..\\Windows\\System32\\config", "../../etc/passwd",
    "\\\\10.9.9.9\\share\\x.vhdx", "\\\\?\\C:\\x.vhdx", "C:\\Windows\\x.vhdx", "a\x00b",
    "i-2-5-VM\x00", "nfs://10.1.1.1/../../x", "' OR Name LIKE '%", "vlan://99999999999",
    "\ud7ff\u2028", "-1", "1e400", "true", "null",
])
_NUMBERS = st.sampled_from([-1, 0, 2**31, 2**63, -(2**63) - 1, 10**30, 0.5, -0.0, 1e308])
_SCALARS = st.none() | st.booleans() | _NUMBERS | _STRINGS | st.integers() | st.text(max_size=8)
_CLASSES = st.sampled_from([names.VOLUME_OBJECT_TO, names.TEMPLATE_OBJECT_TO,
                            names.PRIMARY_DATA_STORE_TO, names.NFS_TO, "com.example.Unknown"])
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                  max_size=3)
                   | st.dictionaries(_CLASSES, inner, min_size=1, max_size=1)),
    max_leaves=6,
)


def _nested(depth: int) -> Any:
    value: Any = {}
    for level in range(depth):
        value = [value] if level % 2 else {"a": value}
    return value


_DROP = object()  # in place of a member's new value: the member is dropped


def _replaced(document: Any, path: Path_, new: Any) -> Any:
    """``document`` with the value at ``path`` replaced by ``new`` (the member dropped when
    ``new`` is :data:`_DROP`)."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(document, dict):
        copy = dict(document)
        if rest or new is not _DROP:
            copy[head] = _replaced(document[head], rest, new)
        else:
            copy.pop(head)
        return copy
    items = list(document)
    items[int(head)] = _replaced(document[int(head)], rest, new) if new is not _DROP or rest \
        else None
    return items


def _retyped(value: Any) -> list[Any]:
    """The same value as other JSON types."""
    text = json.dumps(value)
    return [text, [value], {"value": value}, len(text), not value, None]


@st.composite
def _requests(draw: st.DrawFn) -> tuple[str, bytes]:
    fqcn, document = draw(st.sampled_from(BODIES))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(document)))
        target: Any = document
        for step in path:
            target = target[step]
        new = draw(st.sampled_from([_DROP, *_retyped(target)]) | _VALUES
                   | st.sampled_from([_nested(60), [{}] * 2000, [target] * 3]))
        document = _replaced(document, path, new if path or new is not _DROP else {})
    raw = json.dumps(document).encode()
    if draw(st.integers(0, 9)) == 0:  # not UTF-8 (read as Latin-1), or a key twice
        raw = draw(st.sampled_from([raw.replace(b'"', b'"\xff', 1),
                                    raw[:-1] + b', "contextMap": 7}' if raw.endswith(b"}")
                                    else raw]))
    return fqcn, raw


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Agent,
                                                                        asyncio.AbstractEventLoop]]:
    folder = tmp_path_factory.mktemp("mutated")
    loop = asyncio.new_event_loop()
    built = build_agent(samples_host_config(folder))
    try:
        for fqcn, document in BODIES:  # the real bodies first: pools, volumes, VMs exist
            loop.run_until_complete(built.dispatch(fqcn, json.dumps(document).encode()))
        yield built, loop
    finally:
        loop.run_until_complete(built.close())
        loop.close()


def _check_reply(fqcn: str, raw: bytes) -> None:
    reply = json.loads(raw)
    assert isinstance(reply, list), reply
    if fqcn in _REPLIES and not (reply and names.ANSWER in reply[0]):
        wanted = _REPLIES[fqcn]
        assert all(isinstance(e, dict) and len(e) == 1 for e in reply), reply
        assert wanted is None or next(iter(reply[0])) == wanted, reply
        return
    assert len(reply) == 1 and isinstance(reply[0], dict) and len(reply[0]) == 1, reply
    ((key, fields),) = reply[0].items()
    assert key == codec.answer_class(fqcn).FQCN, (fqcn, key)
    assert isinstance(fields["result"], bool), fields
    assert "internal error" not in str(fields.get("details")), fields
    codec.decode_answers(raw)  # as the management server reads it


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(request=_requests())
def test_mutated_bodies_get_a_well_formed_answer_of_their_commands_own_class(
    agent: tuple[Agent, asyncio.AbstractEventLoop], request: tuple[str, bytes]
) -> None:
    served, loop = agent
    fqcn, raw = request
    reply = loop.run_until_complete(asyncio.wait_for(served.dispatch(fqcn, raw), 5))
    _check_reply(fqcn, reply)
    health = json.loads(loop.run_until_complete(served.dispatch(HEALTH, b"{}")))
    assert health[0][names.CHECK_HEALTH_ANSWER]["result"] is True, health
