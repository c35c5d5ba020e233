"""The HTTPS endpoint the management server talks to.

``POST /api/HypervResource/<Java class name>`` carries a command; the answer is always
HTTP 200 with a JSON body for a known command (failures are ``result:false`` answers), and
HTTP 404 for a class the agent does not know. ``GET /api/HypervResource`` answers the
liveness string the C# agent answered. Requests are served concurrently.

Only clients in ``allow_from`` are served (this host alone when it is empty); others get
HTTP 403 naming the setting, and a log line at most once a minute per address, whichever
listener they reached when the listeners share their ``refusals``. Compressed bodies are
refused (415), never inflated, and so are transfer codings other than chunked (501). A
client that sends ``Expect: 100-continue`` is invited to send its body only once the
request is known to be served; a refusal comes at once, and closes the connection
(:func:`close_unasked`). The connections themselves (idle
deadlines, the cap) are kept by :mod:`hyperv_agent.connections`.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from aiohttp import HttpVersion11, hdrs, web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CONTENT_TYPE_LATEST

from hyperv_agent import connections, logs
from hyperv_agent.connections import Limits
from hyperv_agent.metrics import Metrics

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

LIVENESS = "HypervResource controller running, use POST to send JSON encoded RPCs"
MAX_BODY_BYTES = 16 * 1024 * 1024
#: The most of a 404 naming an unknown class: the name is the client's, up to 8 KB of it.
UNKNOWN_CLASS_BYTES = 256
#: How long a stopping listener waits for a request still being handled, twice over
#: (aiohttp waits, cancels, waits again), before it closes the connection.
CUT_SHORT_S = 0.5
#: Who is served when ``allow_from`` is empty: this host only.
LOOPBACK: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"),
                                 ipaddress.ip_network("::1/128"))
log = logging.getLogger("hyperv_agent.server")


class Dispatcher(Protocol):
    def knows(self, fqcn: str) -> bool:
        """Whether ``fqcn`` names a command class of the protocol."""

    def __call__(self, fqcn: str, body: bytes) -> Awaitable[bytes]:
        """The encoded answer to a command; never raises."""


@dataclass(frozen=True)
class Listener:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Listener:
        host, _, port = text.rpartition(":")
        return cls(host.strip("[]"), int(port))


def make_app(
    dispatcher: Dispatcher,
    *,
    allow_from: Sequence[Network] = (),
    max_body_bytes: int = MAX_BODY_BYTES,
    refusals: logs.Throttle | None = None,
) -> web.Application:
    """The command endpoint; clients outside ``allow_from`` (loopback when it is empty) get
    HTTP 403 (logged as ``refusals`` admits, :func:`allow_only`), compressed bodies HTTP
    415."""
    # allow_from first: a client it refuses learns nothing else of how its request is
    # judged, and its refusal is logged whatever the request holds
    app = web.Application(client_max_size=max_body_bytes,
                          middlewares=[close_unasked, allow_only(tuple(allow_from), refusals),
                                       refuse_chunked_http10])

    async def liveness(_: web.Request) -> web.Response:
        return web.Response(text=LIVENESS)

    async def command(request: web.Request) -> web.Response:
        fqcn = request.match_info["fqcn"]
        if not dispatcher.knows(fqcn):
            return web.Response(status=404, text=logs.cut(f"unknown command {logs.escape(fqcn)}",
                                                          UNKNOWN_CLASS_BYTES))
        refusal = _compressed(request) or _transfer_coded(request)
        if refusal is not None:
            return refusal
        try:
            body = await _read_body(request, max_body_bytes)
        except ConnectionError:
            log.warning("%s (%s)", connections.lost_because(request), fqcn)
            return web.Response(status=400)  # nobody is left to read it
        with connections.answering(request):
            answer = await dispatcher(fqcn, body)
        if request.transport is None or request.transport.is_closing():
            log.warning("%s dropped the connection before the answer to %s was sent",
                        request.remote, fqcn)
        return web.Response(body=answer, content_type="application/json")

    # every path and method is routed here, refusals included, so that aiohttp's own
    # handler never sends 100 Continue ahead of a 404 or a 405
    app.router.add_get("/api/HypervResource", liveness, expect_handler=_continue_later)
    app.router.add_route("*", "/api/HypervResource", _method_not_allowed,
                         expect_handler=_continue_later)
    app.router.add_post("/api/HypervResource/{fqcn}", command, expect_handler=_continue_later)
    app.router.add_route("*", "/api/HypervResource/{fqcn}", _method_not_allowed,
                         expect_handler=_continue_later)
    app.router.add_route("*", "/{path:.*}", _not_found, expect_handler=_continue_later)
    return app


async def _method_not_allowed(request: web.Request) -> web.StreamResponse:
    """HTTP 405 naming the methods the path is served for, as aiohttp's router answers."""
    resource = request.match_info.route.resource
    allowed = {route.method for route in resource or ()} - {hdrs.METH_ANY}
    raise web.HTTPMethodNotAllowed(request.method, allowed)


async def _not_found(_: web.Request) -> web.StreamResponse:
    raise web.HTTPNotFound()


#: The request key saying ``100 Continue`` was sent: the client was asked for its body.
CONTINUED = web.RequestKey("continued", bool)


async def _continue_later(_: web.Request) -> None:
    """Nothing before the handlers: the refusals (403, 404, 405, 415, 413) are told from the
    headers and answered without inviting the body; :func:`_read_body` sends
    ``100 Continue`` when it is about to read it. aiohttp's own handler sent it at once,
    before even the client's address was checked."""


async def _continue(request: web.Request) -> None:
    """``100 Continue`` for an HTTP/1.1 request that expects it, as aiohttp's default
    handler sends it; HTTP 417 for an expectation other than ``100-continue``."""
    expect = request.headers.get(hdrs.EXPECT, "")
    if not expect or request.version != HttpVersion11:
        return
    if expect.strip().lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"unknown Expect: {expect[:40]}")
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the answer itself has not begun
    request[CONTINUED] = True


@web.middleware
async def close_unasked(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Closes the connection after answering a request that expected ``100-continue`` and
    was never asked for its body (RFC 9110, section 10.1.1 lets the client send it or not):
    on a connection kept open, a next request sent in its place would be read as the
    body, after aiohttp's ten seconds of waiting for one."""
    if not request.headers.get(hdrs.EXPECT) or request.version != HttpVersion11:
        return await handler(request)
    try:
        response = await handler(request)
    except web.HTTPException as refusal:
        if not request.get(CONTINUED):
            refusal.force_close()
            connections.close_unread(request)
        raise
    if not request.get(CONTINUED):
        response.force_close()
        connections.close_unread(request)
    return response


@web.middleware
async def refuse_chunked_http10(request: web.Request, handler: Handler) -> web.StreamResponse:
    """HTTP 400, closing the connection without reading on, for an HTTP/1.0 request with
    ``Transfer-Encoding``: RFC 9112, section 6.1 has a server treat its framing as faulty,
    even with a Content-Length, and close the connection. HTTP/1.0 has no transfer
    codings, so a client or a proxy in between may end the body elsewhere than the
    agent would, and what the agent would read next on the connection as a request
    could be part of the body."""
    if request.version >= HttpVersion11 or hdrs.TRANSFER_ENCODING not in request.headers:
        return await handler(request)
    refusal = web.Response(status=400, text="Transfer-Encoding is not HTTP/1.0: send the "
                                            "body with a Content-Length, or as HTTP/1.1")
    refusal.force_close()
    connections.close_unread(request)
    return refusal


async def _read_body(request: web.Request, max_bytes: int) -> bytes:
    """The whole body, copied once (HTTP 413 past ``max_bytes``, before the client is
    asked for the body when it expects ``100-continue``): a body of megabytes costs the
    event loop one join, not a growing buffer and a copy of it."""
    if (request.content_length or 0) > max_bytes:
        raise web.HTTPRequestEntityTooLarge(max_size=max_bytes,
                                            actual_size=request.content_length or 0)
    await _continue(request)
    chunks, size = [], 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > max_bytes:
            raise web.HTTPRequestEntityTooLarge(max_size=max_bytes, actual_size=size)
        chunks.append(chunk)
    return b"".join(chunks)


def _compressed(request: web.Request) -> web.Response | None:
    """HTTP 415 for a compressed body: never inflated, so a small body cannot become a
    huge one (the management server never compresses). The codings are read from every
    ``Content-Encoding`` line: HTTP lets a list come one item a line, and a coding on the
    second line makes the body as compressed as one on the first."""
    codings = [coding.strip().lower() for line in request.headers.getall(hdrs.CONTENT_ENCODING, [])
               for coding in line.split(",")]
    if all(coding in ("", "identity") for coding in codings):
        return None
    encoding = ", ".join(coding for coding in codings if coding)
    return web.Response(status=415, text=f"compressed request bodies (Content-Encoding: "
                                         f"{encoding[:40]}) are not accepted; send plain JSON")


def _transfer_coded(request: web.Request) -> web.Response | None:
    """HTTP 501 for a body sent with a transfer coding other than ``chunked`` (``gzip,
    chunked``): the HTTP parser takes the chunks off and would hand the coded bytes on as
    if they were the JSON. RFC 9112, section 6.1 says a server answers 501 (Not
    Implemented) to a transfer coding it does not understand; 501 rather than the 415 of
    a Content-Encoding, since the coding is of the message, not of the media. The
    connection closes after the answer: a coding this server does not take says the
    client and the agent do not agree on how the message is framed."""
    codings = [coding.strip().lower()
               for line in request.headers.getall(hdrs.TRANSFER_ENCODING, [])
               for coding in line.split(",")]
    if all(coding in ("", "chunked") for coding in codings):
        return None
    encoding = ", ".join(coding for coding in codings if coding)
    refusal = web.Response(status=501, text=f"transfer codings other than chunked "
                                            f"(Transfer-Encoding: {encoding[:40]}) are not "
                                            "implemented; send plain JSON")
    refusal.force_close()
    return refusal


def allowed(peer: str, networks: Sequence[Network]) -> bool:
    """Whether the client at ``peer`` is served: in ``networks``, or on loopback when
    ``networks`` is empty. IPv4-mapped IPv6 addresses count as their IPv4 address."""
    try:
        address = ipaddress.ip_address(peer.partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in (networks or LOOPBACK))


def allow_only(networks: tuple[Network, ...],
               refusals: logs.Throttle | None = None) -> Middleware:
    """HTTP 403, naming ``allow_from``, for clients :func:`allowed` refuses; refusals are
    logged at most once a minute per address (and ten lines a minute in all), as
    ``refusals`` admits them. The listeners of one agent share theirs: a client refused on
    the command and the admin listener is one fact (its address is not in allow_from), one
    line, not one per listener."""
    throttle = refusals if refusals is not None else logs.Throttle()
    setting = ("allow_from is empty, so only loopback clients are served" if not networks
               else "it is not in allow_from")

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        peer = request.remote or "unknown"
        if allowed(peer, networks):
            return await handler(request)
        note = throttle.admit(peer)
        if note is not None:
            log.warning("refused a request from %s: %s%s", peer, setting, note)
        return web.Response(status=403, text=f"forbidden: {peer} is not allowed: {setting}; "
                                             "set [agent] allow_from to the management "
                                             "servers' networks")

    return check


def make_admin_app(metrics: Metrics, problem: Callable[[], Awaitable[str | None]],
                   allow_from: Sequence[Network] = (),
                   refusals: logs.Throttle | None = None) -> web.Application:
    """``/healthz`` (200 "ok" when ``problem`` finds none, 503 with the problem otherwise)
    and Prometheus ``/metrics``, for the clients ``allow_from`` admits (loopback when it
    is empty; the others logged as ``refusals`` admits, :func:`allow_only`)."""
    app = web.Application(middlewares=[allow_only(tuple(allow_from), refusals)])

    async def healthz(_: web.Request) -> web.Response:
        found = await problem()
        return web.Response(status=200 if found is None else 503, text=found or "ok")

    async def exposition(_: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", exposition)
    return app


async def start(app: web.Application, listener: Listener, context: ssl.SSLContext | None,
                limits: Limits | None = None, name: str = "CloudStack") -> web.AppRunner:
    """Start serving, within ``limits``; the caller keeps the runner and calls ``cleanup()``
    to stop."""
    runner = await bind(app, listener, context, limits, name)
    await serve(runner)
    return runner


async def bind(app: web.Application, listener: Listener, context: ssl.SSLContext | None,
               limits: Limits | None = None, name: str = "CloudStack") -> web.AppRunner:
    """A listener of ``app`` at ``listener``'s address, bound but taking no connection
    until ``serve``: an address that cannot be listened on (a name that does not resolve,
    an address not of this machine, one in use) raises OSError here, nothing left open.
    The caller keeps the runner and calls ``cleanup()`` to stop."""
    # the agent waits for commands in flight itself (service.STOP_GRACE_S) before cleaning
    # up: what is still running then is cut short at once
    runner = web.AppRunner(app, access_log=None, handler_cancellation=False,
                           shutdown_timeout=CUT_SHORT_S)
    await runner.setup()
    site = connections.GuardedSite(runner, listener.host, listener.port, ssl_context=context,
                                   limits=limits or Limits(), name=name)
    try:
        await site.bind()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


async def serve(runner: web.AppRunner) -> None:
    """Take connections at the addresses ``bind`` bound for ``runner``."""
    for site in runner.sites:
        await site.start()
