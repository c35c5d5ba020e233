"""The WinRM service's configuration resource (MS-WSMV §2.2.4.10 ConfigType): its limits.

A Get on ``http://schemas.microsoft.com/wbem/wsman/1/config`` answers ``<cfg:Config>`` with
``MaxEnvelopeSizekb``, ``MaxTimeoutms``, ``MaxBatchItems`` and ``MaxProviderRequests``,
and a ``cfg:Service`` element with the service's quotas and ``AllowUnencrypted``. WinRM
serves it to administrators of the host; other accounts get ``w:AccessDenied``. The same
shape is written by the emulator's WinRM face.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree.ElementTree import Element

from hyperv_agent.cim.wsman.names import CONFIG, q
from hyperv_agent.errors import CimError

#: MS-WSMV §2.2.4.10 defaults, for settings a host leaves out.
DEFAULT_MAX_ENVELOPE_KB = 500
DEFAULT_MAX_TIMEOUT_MS = 60000
DEFAULT_MAX_BATCH_ITEMS = 32000


@dataclass(frozen=True)
class WinrmLimits:
    """The limits of one WinRM service that bound what a client may send and wait for."""

    max_envelope_kb: int = DEFAULT_MAX_ENVELOPE_KB
    max_timeout_ms: int = DEFAULT_MAX_TIMEOUT_MS
    max_batch_items: int = DEFAULT_MAX_BATCH_ITEMS
    max_provider_requests: int | None = None
    max_concurrent_operations_per_user: int | None = None
    allow_unencrypted: bool | None = None


def read_config(body: Element) -> WinrmLimits:
    """The limits in the ``s:Body`` of a config Get; CimError when it holds no Config."""
    config = body.find(q(CONFIG, "Config"))
    if config is None:
        raise CimError("the WinRM configuration answer holds no cfg:Config")
    service = config.find(q(CONFIG, "Service"))
    return WinrmLimits(
        max_envelope_kb=_number(config, "MaxEnvelopeSizekb") or DEFAULT_MAX_ENVELOPE_KB,
        max_timeout_ms=_number(config, "MaxTimeoutms") or DEFAULT_MAX_TIMEOUT_MS,
        max_batch_items=_number(config, "MaxBatchItems") or DEFAULT_MAX_BATCH_ITEMS,
        max_provider_requests=_number(config, "MaxProviderRequests"),
        max_concurrent_operations_per_user=(
            _number(service, "MaxConcurrentOperationsPerUser") if service is not None
            else None),
        allow_unencrypted=_flag(service, "AllowUnencrypted") if service is not None else None,
    )


def _number(parent: Element, name: str) -> int | None:
    text = (parent.findtext(q(CONFIG, name)) or "").strip()
    return int(text) if text.isdigit() else None


def _flag(parent: Element, name: str) -> bool | None:
    text = (parent.findtext(q(CONFIG, name)) or "").strip().lower()
    return {"true": True, "false": False}.get(text)


def write_config(limits: WinrmLimits) -> str:
    """``<cfg:Config>`` as WinRM answers a Get of its configuration (the body's content)."""
    service = "".join(
        f"<cfg:{name}>{value}</cfg:{name}>" for name, value in (
            ("MaxConcurrentOperationsPerUser", limits.max_concurrent_operations_per_user),
            ("AllowUnencrypted", _bool(limits.allow_unencrypted))) if value is not None)
    top = "".join(
        f"<cfg:{name}>{value}</cfg:{name}>" for name, value in (
            ("MaxEnvelopeSizekb", limits.max_envelope_kb),
            ("MaxTimeoutms", limits.max_timeout_ms),
            ("MaxBatchItems", limits.max_batch_items),
            ("MaxProviderRequests", limits.max_provider_requests)) if value is not None)
    return f'<cfg:Config xmlns:cfg="{CONFIG}">{top}<cfg:Service>{service}</cfg:Service>' \
           "</cfg:Config>"


def _bool(value: bool | None) -> str | None:
    return None if value is None else ("true" if value else "false")
