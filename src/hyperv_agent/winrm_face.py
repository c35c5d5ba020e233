"""``hyperv-agent emulator wsman``: an emulated Hyper-V host that speaks WinRM.

The emulator of ``--state-dir`` (and ``--config``'s ``[emulator]`` section) is served on
``/wsman`` over HTTP (Negotiate/NTLM with message encryption) or, with ``--tls``, HTTPS
(Negotiate and Basic) with the self-signed certificate of the state directory. An agent
started with ``serve --backend wsman`` and the same ``--config`` (its own state directory)
reaches the host's files through the same ``[emulator.drives]``/``[emulator.shares]``.

``serve`` on the emulator also serves its own emulated host this way with ``[emulator]
winrm = true``: at ``[wsman] url`` to ``[wsman] username`` and password, the settings
``--backend wsman`` reads, so ``cim query``/``cim invoke`` with the same configuration
reach the running host.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from hyperv_agent import tls
from hyperv_agent.backends import open_emulated_host, served_emulator_config
from hyperv_agent.cim.wsman.settings import WsmanSettings
from hyperv_agent.config import AgentConfig, WsmanSection
from hyperv_agent.connections import cannot_listen
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.winrm import server
from hyperv_agent.emulator.winrm.auth import Account, register_account
from hyperv_agent.emulator.winrm.service import WinrmService
from hyperv_agent.stopping import stop_on_signals


@dataclass
class RunningFace:
    runner: web.AppRunner
    url: str
    emulator: EmulatorCim
    service: WinrmService
    fingerprint: str | None

    async def close(self) -> None:
        await self.runner.cleanup()
        await self.emulator.close()


async def bind_for(config: AgentConfig, emulator: EmulatorCim) -> RunningFace:
    """The WinRM face of an agent's own emulated host (``[emulator] winrm``; the
    configuration checked that ``[wsman]`` names its URL and account), its address bound
    but taking no connection until ``server.serve(face.runner)``; stop it with
    ``runner.cleanup()``, the agent closes the emulator. An address that cannot be
    listened on raises CannotListen here, nothing left open."""
    section = config.wsman
    assert section.url is not None and section.username is not None
    where = WsmanSettings(url=section.url)
    account = Account(section.username, section.resolved_password() or "")
    return await bind_face(config, where.host, where.port, account, where.ssl, emulator,
                           setting="[wsman] url, which [emulator] winrm serves")


async def start_face(config: AgentConfig, host: str, port: int, account: Account,
                     use_tls: bool, emulator: EmulatorCim | None = None, *,
                     negotiate: bool = True, basic: bool = True,
                     setting: str | None = None) -> RunningFace:
    """Open the emulator ``config`` describes (or use ``emulator``) and serve it;
    ``negotiate``, ``basic``: whether the face offers that authentication; ``setting``:
    the one an address that cannot be listened on is refused naming (``bind_face``)."""
    face = await bind_face(config, host, port, account, use_tls, emulator,
                           negotiate=negotiate, basic=basic, setting=setting)
    await server.serve(face.runner)
    return face


async def bind_face(config: AgentConfig, host: str, port: int, account: Account,
                    use_tls: bool, emulator: EmulatorCim | None = None, *,
                    negotiate: bool = True, basic: bool = True,
                    setting: str | None = None) -> RunningFace:
    """``start_face``, its address bound but taking no connection until
    ``server.serve(face.runner)``. An address that cannot be listened on raises OSError,
    nothing left open; with ``setting``, CannotListen naming the address, that setting
    and why."""
    cim = emulator or open_emulated_host(config)
    register_account(account, config.agent.state_dir / "winrm", config.emulator.host_name)
    context, certificate, fingerprint = _tls(config) if use_tls else (None, None, None)
    service = WinrmService(cim, config.emulator.host_name)
    face = server.WinrmFace(service, account, certificate_der=certificate,
                            negotiate=negotiate, basic=basic)
    try:
        runner, url = await server.bind(face, host, port, context)
    except BaseException as error:
        if emulator is None:  # opened here
            await cim.close()
        if isinstance(error, OSError) and setting is not None:  # named: which listener
            address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            raise cannot_listen(address, setting, error) from None
        raise
    return RunningFace(runner, url, cim, service, fingerprint)


def _tls(config: AgentConfig) -> tuple[ssl.SSLContext, bytes, str]:
    identity = tls.ensure_identity(config.agent.state_dir, config.agent.tls_cert,
                                   config.agent.tls_key)
    certificate = x509.load_pem_x509_certificate(identity.cert_path.read_bytes())
    return (tls.server_context(identity), certificate.public_bytes(Encoding.DER),
            identity.sha256_fingerprint)


def agent_config(config: AgentConfig, url: str, account: Account, auth: str,
                 verify_tls: bool = False) -> AgentConfig:
    """The configuration of an agent driving, over WinRM at ``url``, the emulated host
    ``config`` describes: backend wsman with ``account``, and the host's drive C and
    shares mapped to the folders the emulator keeps them in."""
    served = served_emulator_config(config)
    wsman = WsmanSection.model_validate({"url": url, "username": account.user,
                                         "password": account.password, "auth": auth,
                                         "verify_tls": verify_tls})
    agent = config.agent.model_copy(update={"backend": "wsman"})
    return served.model_copy(update={"agent": agent, "wsman": wsman})


async def serve_until_signalled(face: RunningFace) -> None:
    try:
        await stop_on_signals().wait()
    finally:
        await face.close()
