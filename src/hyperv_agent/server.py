"""The HTTPS endpoint the management server talks to.

``POST /api/HypervResource/<Java class name>`` carries a command; the answer is always
HTTP 200 with a JSON body for a known command (failures are ``result:false`` answers), and
HTTP 404 for a class the agent does not know. ``GET /api/HypervResource`` answers the
liveness string the C# agent answered. Requests are served concurrently.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CONTENT_TYPE_LATEST

from hyperv_agent.metrics import Metrics

LIVENESS = "HypervResource controller running, use POST to send JSON encoded RPCs"
MAX_BODY_BYTES = 16 * 1024 * 1024
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


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def make_app(
    dispatcher: Dispatcher,
    *,
    allow_from: Sequence[Network] = (),
    max_body_bytes: int = MAX_BODY_BYTES,
) -> web.Application:
    """The command endpoint; clients outside ``allow_from`` (when given) get HTTP 403."""
    app = web.Application(client_max_size=max_body_bytes,
                          middlewares=[_allow_only(tuple(allow_from))] if allow_from else [])

    async def liveness(_: web.Request) -> web.Response:
        return web.Response(text=LIVENESS)

    async def command(request: web.Request) -> web.Response:
        fqcn = request.match_info["fqcn"]
        if not dispatcher.knows(fqcn):
            return web.Response(status=404, text=f"unknown command {fqcn}")
        body = await request.read()
        answer = await dispatcher(fqcn, body)
        return web.Response(body=answer, content_type="application/json")

    app.router.add_get("/api/HypervResource", liveness)
    app.router.add_post("/api/HypervResource/{fqcn}", command)
    return app


def _allow_only(networks: tuple[Network, ...]) -> Middleware:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        peer = request.remote or ""
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            address = None
        if address is None or not any(address in network for network in networks):
            log.warning("refused a request from %s: not in allow_from", peer or "unknown")
            return web.Response(status=403, text="forbidden: address not allowed")
        return await handler(request)

    return check


def make_admin_app(metrics: Metrics, healthy: Callable[[], Awaitable[bool]]) -> web.Application:
    """``/healthz`` (200 when the backend answers, 503 otherwise) and Prometheus ``/metrics``."""
    app = web.Application()

    async def healthz(_: web.Request) -> web.Response:
        ok = await healthy()
        return web.Response(status=200 if ok else 503, text="ok" if ok else "backend unavailable")

    async def exposition(_: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", exposition)
    return app


async def start(app: web.Application, listener: Listener,
                context: ssl.SSLContext | None) -> web.AppRunner:
    """Start serving; the caller keeps the runner and calls ``cleanup()`` to stop."""
    runner = web.AppRunner(app, access_log=None, handler_cancellation=False)
    await runner.setup()
    site = web.TCPSite(runner, listener.host, listener.port, ssl_context=context,
                       reuse_address=True)
    await site.start()
    return runner
