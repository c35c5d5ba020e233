"""Every route, malformed and mutated bodies, access control, TLS and secrets, over HTTPS."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyperv_agent import logs
from hyperv_agent.cloudstack import codec
from hyperv_agent.cloudstack.answers import ANSWER_TYPES
from hyperv_agent.cloudstack.commands import COMMAND_TYPES
from hyperv_agent.config import AgentConfig
from hyperv_agent.service import build_agent
from tests.cloudstack.fixtures import REQUESTS, sample
from tests.e2e.conftest import API, Running, client_context, start

ROUTES = sorted(fqcn for fqcn in COMMAND_TYPES if codec.is_known(fqcn))
STATE_REPORT = "org.apache.cloudstack.HostVmStateReportCommand"
STARTUP = "com.cloud.agent.api.StartupCommand"
CIFS_PASSWORD = "1pass%40word1"


def _check_envelope(fqcn: str, status: int, data: Any) -> None:
    assert status == 200, (fqcn, status, data)
    assert "Traceback" not in json.dumps(data)
    assert isinstance(data, list), (fqcn, data)
    if fqcn == STATE_REPORT:
        return
    assert data and all(isinstance(e, dict) and len(e) == 1 for e in data), (fqcn, data)
    key = next(iter(data[0]))
    known = set(ANSWER_TYPES) | {"com.cloud.agent.api.StartupRoutingCommand"}
    assert key in known, (fqcn, key)


@pytest.mark.parametrize("fqcn", ROUTES)
async def test_every_route_answers_200_when_body_is_valid_or_malformed(
    running: Running, fqcn: str
) -> None:
    bodies: list[object | bytes] = [{}, b"not json", b"[1,", {"contextMap": 5, "wait": "x"},
                                    [1, 2, 3], b"\xff\xfe\x00"]
    for name, action in REQUESTS.items():
        if action == fqcn:
            bodies.append(sample(name))
    for body in bodies:
        status, data = await running.post(fqcn, body)
        _check_envelope(fqcn, status, data)


async def test_malformed_body_names_the_field_path(running: Running) -> None:
    key, value = await running.answer("com.cloud.agent.api.GetHostStatsCommand",
                                      {"hostId": "five", "contextMap": {}})
    assert key == "com.cloud.agent.api.GetHostStatsAnswer" and value["result"] is False
    assert "hostId" in value["details"]


async def test_oversized_body_is_refused_without_a_server_error(
    agent_config: Callable[..., AgentConfig],
) -> None:
    agent = build_agent(agent_config(max_request_bytes=4096))
    runner, url = await start(agent)
    try:
        connector = aiohttp.TCPConnector(ssl=client_context(), force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            body = json.dumps({"vmName": "x" * 10_000}).encode()
            async with session.post(url + API + "com.cloud.agent.api.StopCommand",
                                    data=body) as reply:
                assert reply.status == 413
            async with session.post(url + API + "com.cloud.agent.api.ReadyCommand",
                                    data=b"{}") as reply:
                assert reply.status == 200
    finally:
        await runner.cleanup()
        await agent.close()


@pytest.mark.parametrize(("networks", "expected"), [(("10.9.0.0/16",), 403),
                                                    (("10.9.0.0/16", "127.0.0.0/8"), 200)])
async def test_allow_from_refuses_other_networks_and_serves_listed_ones(
    agent_config: Callable[..., AgentConfig], networks: tuple[str, ...], expected: int
) -> None:
    agent = build_agent(agent_config(allow_from=networks))
    runner, url = await start(agent)
    try:
        connector = aiohttp.TCPConnector(ssl=client_context(), force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session, session.post(
            url + API + "com.cloud.agent.api.ReadyCommand", data=b"{}"
        ) as reply:
            assert reply.status == expected
    finally:
        await runner.cleanup()
        await agent.close()


async def test_mutual_tls_refuses_clients_without_a_certificate_from_the_ca(
    agent_config: Callable[..., AgentConfig], tmp_path: Path
) -> None:
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1")
    server_cert.private_key_pem.write_to_path(str(tmp_path / "agent.key"))
    server_cert.cert_chain_pems[0].write_to_path(str(tmp_path / "agent.crt"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    agent = build_agent(agent_config(tls_cert=tmp_path / "agent.crt",
                                     tls_key=tmp_path / "agent.key",
                                     tls_client_ca=tmp_path / "ca.pem"))
    runner, url = await start(agent)
    try:
        anonymous = client_context()
        with pytest.raises(aiohttp.ClientError):
            await _post_ready(url, anonymous)
        trusted = client_context()
        ca.issue_cert("management-server").configure_cert(trusted)
        assert await _post_ready(url, trusted) == 200
    finally:
        await runner.cleanup()
        await agent.close()


async def _post_ready(url: str, context: ssl.SSLContext) -> int:
    connector = aiohttp.TCPConnector(ssl=context, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session, session.post(
        url + API + "com.cloud.agent.api.ReadyCommand", data=b"{}"
    ) as reply:
        return reply.status


async def test_cifs_password_never_reaches_log_or_answer(
    running: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.setup("DEBUG")
    body = json.loads(sample("0016_CopyCommand_template_cifs_to_primary.json"))
    assert CIFS_PASSWORD in json.dumps(body)
    status, data = await running.post("org.apache.cloudstack.storage.command.CopyCommand", body)
    broken = json.dumps(body).replace('"wait": 0', '"wait": "' + CIFS_PASSWORD + '"')
    status2, data2 = await running.post("org.apache.cloudstack.storage.command.CopyCommand",
                                        broken.encode())
    assert (status, status2) == (200, 200)
    captured = capsys.readouterr().err
    assert "CopyCommand" in captured
    assert CIFS_PASSWORD not in captured
    assert CIFS_PASSWORD not in json.dumps(data) + json.dumps(data2)


# --- mutation: a real server in a thread, hit with mutated sample bodies -----------------


@pytest.fixture(scope="module")
def threaded_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from hyperv_agent.config import load_config

    config = load_config(None, state_dir=tmp_path_factory.mktemp("fuzz"), backend="emulator")
    loop = asyncio.new_event_loop()
    agent = build_agent(config)
    runner, url = loop.run_until_complete(start(agent))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield url
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.run_until_complete(runner.cleanup())
    loop.run_until_complete(agent.close())
    loop.close()


_SAMPLES = [json.loads(sample(name)) for name in REQUESTS]
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                               max_size=4),
    max_leaves=10,
)


def _mutate(document: Any, draw: st.DrawFn) -> Any:
    if isinstance(document, dict) and document and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(document)))
        action = draw(st.sampled_from(["drop", "replace", "recurse"]))
        changed = dict(document)
        if action == "drop":
            changed.pop(key)
        elif action == "replace":
            changed[key] = draw(_JSON)
        else:
            changed[key] = _mutate(document[key], draw)
        return changed
    if isinstance(document, list) and document and draw(st.booleans()):
        index = draw(st.integers(0, len(document) - 1))
        return [*document[:index], _mutate(document[index], draw), *document[index + 1:]]
    return draw(_JSON) if draw(st.integers(0, 4)) == 0 else document


@st.composite
def _requests(draw: st.DrawFn) -> tuple[str, bytes]:
    fqcn = draw(st.sampled_from(ROUTES))
    document = _mutate(draw(st.sampled_from(_SAMPLES)), draw)
    return fqcn, json.dumps(document).encode()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(request=_requests())
def test_mutated_bodies_never_get_a_server_error_or_a_traceback(
    threaded_agent: str, request: tuple[str, bytes]
) -> None:
    fqcn, body = request
    context = client_context()
    call = urllib.request.Request(threaded_agent + API + fqcn, data=body, method="POST",
                                  headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(call, context=context, timeout=30) as reply:
            status, text = reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode()
    assert status == 200, (fqcn, status, text)
    _check_envelope(fqcn, status, json.loads(text))


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
async def test_tls_below_1_2_is_refused(running: Running) -> None:
    old = client_context()
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((aiohttp.ClientError, ssl.SSLError)):
        await _post_ready(running.url, old)
    modern = client_context()
    modern.minimum_version = ssl.TLSVersion.TLSv1_2
    assert await _post_ready(running.url, modern) == 200
