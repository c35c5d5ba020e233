"""How to reach one host's WinRM service: URL, account, authentication, TLS, limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from hyperv_agent.errors import ConfigError

AUTH_METHODS = ("negotiate", "ntlm", "kerberos", "basic", "certificate")
DEFAULT_MAX_ENVELOPE_BYTES = 512000  # WinRM's MaxEnvelopeSizekb default, 500 KiB


@dataclass(frozen=True)
class WsmanSettings:
    """A WinRM endpoint. ``password`` never appears in repr or str.

    Over ``http`` every message is encrypted with the Negotiate/Kerberos session (WinRM's
    message encryption); over ``https`` TLS protects it, and the server certificate is
    verified unless ``verify_tls`` is false (against ``ca_file`` when given).
    """

    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    auth: str = "negotiate"
    verify_tls: bool = True
    ca_file: Path | None = None
    operation_timeout_s: int = 60
    connect_timeout_s: float = 10.0
    max_envelope_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES
    max_concurrent_requests: int = 4
    certificate_pem: Path | None = None
    certificate_key_pem: Path | None = None

    def __post_init__(self) -> None:
        if "@" in self.url:
            # user:password@host: WinRM takes its account from username and password, and
            # an error or a log line that shows the URL must not show a password
            raise ConfigError("WinRM URL carries a user name or password before '@': give "
                              "them as [wsman] username and password (--wsman-user, "
                              "--wsman-password), the URL as http(s)://host[:port]/wsman")
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"WinRM URL {self.url!r} ([wsman] url, --wsman-url) is not "
                              "http(s)://host[:port]/wsman")
        if self.auth not in AUTH_METHODS:
            raise ConfigError(f"WinRM auth {self.auth!r} is not one of {', '.join(AUTH_METHODS)}")
        if self.auth == "basic" and parts.scheme == "http":
            raise ConfigError("basic authentication over http would send the password in "
                              "clear; use https, or negotiate/ntlm/kerberos over http")
        if self.auth == "certificate" and (self.certificate_pem is None
                                           or self.certificate_key_pem is None):
            raise ConfigError("certificate authentication needs a certificate and its key: "
                              "set [wsman] certificate_pem and certificate_key_pem")
        if self.auth == "certificate" and parts.scheme == "http":
            # WinRM takes client certificates only in the TLS handshake, and over http a
            # message is sealed with the Negotiate/Kerberos session, which it has none of
            raise ConfigError("certificate authentication needs https (WinRM's HTTPS "
                              "listener, port 5986)")

    @property
    def ssl(self) -> bool:
        return urlsplit(self.url).scheme == "https"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (5986 if self.ssl else 5985)

    @property
    def path(self) -> str:
        return urlsplit(self.url).path.strip("/") or "wsman"

    @property
    def where(self) -> str:
        """``host:port``, for messages."""
        return f"{self.host}:{self.port}"
