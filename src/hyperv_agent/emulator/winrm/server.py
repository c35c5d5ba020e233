"""The WinRM face's HTTP(S) listener: ``POST /wsman``, authentication, message encryption.

Over HTTP only Negotiate is offered and every message must be encrypted with the
connection's security context (WinRM's default ``AllowUnencrypted=false``); over HTTPS
Negotiate (bound to the certificate, as Extended Protection does) and Basic are offered
and TLS protects the messages. Either can be turned off (``negotiate``, ``basic``), as
WinRM's ``Service/Auth`` settings do (MS-WSMV §3.1.4.1.29.2: a scheme is used if and only
if its property is true). What WinRM answers a request made with a scheme turned off is
not documented; the face answers the 401 an unauthenticated request gets, listing the
schemes still offered (the choice made here). A request larger
than MaxEnvelopeSizekb gets HTTP 413 without being read as SOAP (MS-WSMV §3.1.4.1.20).
Log lines name the peer and the outcome, never a credential or a message body.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import ssl
import weakref
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from hyperv_agent.emulator.winrm.auth import (
    ENCRYPTED_TYPE,
    Account,
    AuthFailed,
    Negotiation,
    check_basic,
)
from hyperv_agent.emulator.winrm.service import WinrmService

log = logging.getLogger("hyperv_agent.emulator.winrm")
SOAP_TYPE = "application/soap+xml;charset=UTF-8"
# http.sys, which serves WinRM's listeners, closes an idle connection after its
# IdleConnectionTimeout of 120 s by default
KEEPALIVE_S = 120.0


@dataclass
class _Identity:
    """Who is on a connection: an established Negotiate context."""

    negotiation: Negotiation


class WinrmFace:
    """The aiohttp application of one face."""

    def __init__(self, service: WinrmService, account: Account, *,
                 certificate_der: bytes | None = None, negotiate: bool = True,
                 basic: bool = True) -> None:
        self.service = service
        self.account = account
        self.negotiate = negotiate
        self.basic = basic
        self.tls = certificate_der is not None
        self._bindings = (b"tls-server-end-point:" + hashlib.sha256(certificate_der).digest()
                          if certificate_der else None)
        self._connections: weakref.WeakKeyDictionary[Any, Negotiation] = (
            weakref.WeakKeyDictionary())
        self.max_request_bytes = service.max_envelope_bytes

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_request_bytes * 2 + 65536)
        app.router.add_post("/wsman", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            negotiation, token = self._authenticate(request)
        except AuthFailed as failure:
            if request.headers.get("Authorization"):
                log.warning("WinRM authentication from %s failed: %s", request.remote, failure)
            self._connections.pop(request.transport, None)
            return self._challenge()
        if negotiation is None and token is not None:
            return self._challenge(token)  # the handshake goes on
        data = await request.read()
        return await self._answer(request, data, negotiation, token)

    def _authenticate(self, request: web.Request
                      ) -> tuple[Negotiation | None, bytes | None]:
        """(context of the connection or None for Basic, token to return). A token with no
        context means the Negotiate handshake is not finished."""
        header = request.headers.get("Authorization", "")
        scheme = header.split(None, 1)[0].lower() if header else ""
        connection = request.transport
        if scheme in ("negotiate", "kerberos") and not self.negotiate:
            raise AuthFailed("Negotiate authentication is turned off")
        if scheme == "basic" and not self.basic:
            raise AuthFailed("Basic authentication is turned off")
        if scheme in ("negotiate", "kerberos"):
            current = self._connections.get(connection)
            if current is None or current.complete:
                current = Negotiation(self._bindings)
                self._connections[connection] = current
            token = current.step(header)
            return (current, token) if current.complete else (None, token or b"")
        if scheme == "basic" and self.tls:
            check_basic(header, self.account)
            return None, None
        established = self._connections.get(connection)
        if established is None or not established.complete or header:
            raise AuthFailed("no credentials")
        return established, None

    def _challenge(self, token: bytes | None = None) -> web.Response:
        offers = ["Negotiate " + base64.b64encode(token).decode() if token else "Negotiate"]
        if not self.negotiate:
            offers = []
        if self.tls and self.basic and token is None:
            offers.append('Basic realm="WSMAN"')
        response = web.Response(status=401)
        for offer in offers:
            response.headers.add("WWW-Authenticate", offer)
        return response

    async def _answer(self, request: web.Request, data: bytes,
                      negotiation: Negotiation | None, token: bytes | None) -> web.Response:
        encrypted = request.content_type == "multipart/encrypted"
        headers = {"WWW-Authenticate": "Negotiate " + base64.b64encode(token).decode()} \
            if token else {}
        if not data:
            return web.Response(status=200, headers=headers)  # an authentication probe
        if encrypted:
            if negotiation is None:
                return self._challenge()
            try:
                data = negotiation.unwrap(data)
            except AuthFailed as failure:
                log.warning("WinRM message from %s refused: %s", request.remote, failure)
                return web.Response(status=400, headers=headers)
        elif negotiation is not None and not self.tls:
            log.warning("unencrypted WinRM message from %s refused over http", request.remote)
            return web.Response(status=401)
        if len(data) > self.max_request_bytes:
            return web.Response(status=413, headers=headers)
        status, answer = await self.service.handle(data)
        return self._reply(status, answer.encode(), negotiation if encrypted else None, headers)

    def _reply(self, status: int, payload: bytes, negotiation: Negotiation | None,
               headers: dict[str, str]) -> web.Response:
        if negotiation is None:
            return web.Response(status=status, body=payload, headers={
                **headers, "Content-Type": SOAP_TYPE})
        return web.Response(status=status, body=negotiation.wrap(payload), headers={
            **headers, "Content-Type": ENCRYPTED_TYPE})


class _Site(web.TCPSite):
    """A TCP listener whose address is bound by ``bind`` and served from ``start``."""

    async def bind(self) -> None:
        if self._server is not None:
            return
        await web.BaseSite.start(self)  # registered with the runner, whose cleanup closes it
        serving = self._runner.server
        assert serving is not None
        self._server = await asyncio.get_running_loop().create_server(
            serving, self._host, self._port, ssl=self._ssl_context,
            backlog=self._backlog, reuse_address=self._reuse_address, start_serving=False)

    async def start(self) -> None:
        await self.bind()
        assert self._server is not None
        await self._server.start_serving()


async def bind(face: WinrmFace, host: str, port: int,
               context: ssl.SSLContext | None) -> tuple[web.AppRunner, str]:
    """A listener of ``face`` on host:port (0 for any free port), bound but taking no
    connection until ``serve``: an address that cannot be listened on raises OSError
    here, nothing left open. The runner (``cleanup()`` stops it) and the URL."""
    runner = web.AppRunner(face.app(), access_log=None, keepalive_timeout=KEEPALIVE_S)
    await runner.setup()
    try:
        await _Site(runner, host, port, ssl_context=context).bind()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1]
    scheme = "https" if context is not None else "http"
    return runner, f"{scheme}://{host}:{bound}/wsman"


async def serve(runner: web.AppRunner) -> None:
    """Take connections at the address ``bind`` bound for ``runner``."""
    for site in runner.sites:
        await site.start()
