"""Who may talk to the WinRM face: Negotiate (NTLM) as acceptor, and Basic over HTTPS.

As WinRM does, an unauthenticated request gets 401 with ``WWW-Authenticate: Negotiate``
(and ``Basic realm="WSMAN"`` where Basic is allowed). Negotiate is connection-oriented:
the security context built over the 401 exchange belongs to the TCP connection and
authenticates, and over HTTP encrypts, every later message on it (MS-WSMV §2.2.9.1.1).
pyspnego's NTLM acceptor reads accounts from the file ``NTLM_USER_FILE`` names; the face
writes the account there as its NT hash (never the password), readable by its owner only.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import spnego
from spnego.exceptions import SpnegoError

from hyperv_agent.errors import ConfigError

PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"
BOUNDARY = b"--Encrypted Boundary"
ENCRYPTED_TYPE = f'multipart/encrypted;protocol="{PROTOCOL}";boundary="Encrypted Boundary"'
_LENGTH = re.compile(rb"Length=(\d+)")
_store_lock = threading.Lock()
_store: dict[str, tuple[str, str]] = {}  # upper-case user -> (user, NT hash hex)
_store_file: list[Path] = []  # the one file of this process, once chosen


class AuthFailed(Exception):
    """Authentication failed; answer 401 (the message is for the log, never the client)."""


@dataclass(frozen=True)
class Account:
    user: str
    password: str = field(repr=False)


def nt_hash(password: str) -> str:
    from spnego._ntlm_raw.crypto import ntowfv1  # the hash NTLM itself uses

    return ntowfv1(password).hex().upper()


def register_account(account: Account, folder: Path, domain: str) -> Path:
    """Make ``account`` known to the NTLM acceptor of this process; the store file path.
    ConfigError when another face of this process serves the user with another password."""
    digest = nt_hash(account.password)
    with _store_lock:
        known = _store.get(account.user.upper())
        if known is not None and known[1] != digest:
            raise ConfigError(f"another WinRM face in this process serves user "
                              f"{account.user!r} with another password")
        _store[account.user.upper()] = (account.user, digest)
        if not _store_file:
            _store_file.append(folder / "ntlm-accounts")
        path = _store_file[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = []
        for user, hashed in _store.values():
            for name in (user, f"{domain}\\{user}"):
                lines.append(f"{name}:0:{'0' * 32}:{hashed}:[U]:LCT-00000000\n")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.writelines(lines)
        os.environ["NTLM_USER_FILE"] = str(path)
    return path


def check_basic(header: str, account: Account) -> None:
    """Accept ``Basic base64(user:password)`` for ``account``; AuthFailed otherwise."""
    try:
        decoded = base64.b64decode(header.split(None, 1)[1], validate=True).decode()
    except (IndexError, binascii.Error, UnicodeDecodeError):
        raise AuthFailed("malformed Basic credentials") from None
    user, _, password = decoded.partition(":")
    user = user.rpartition("\\")[2]
    same_user = hmac.compare_digest(user.upper().encode(), account.user.upper().encode())
    same_password = hmac.compare_digest(password.encode(), account.password.encode())
    if not (same_user and same_password):
        raise AuthFailed("wrong user name or password (Basic)")


class Negotiation:
    """The Negotiate security context of one connection."""

    def __init__(self, channel_bindings: bytes | None) -> None:
        bindings = (spnego.channel_bindings.GssChannelBindings(application_data=channel_bindings)
                    if channel_bindings else None)
        self._context: Any = spnego.server(protocol="negotiate", channel_bindings=bindings)

    @property
    def complete(self) -> bool:
        return bool(self._context.complete)

    def step(self, header: str) -> bytes | None:
        """Process the client's token; the token to send back (None when there is none)."""
        try:
            token = base64.b64decode(header.split(None, 1)[1])
            return self._context.step(token)  # type: ignore[no-any-return]
        except (IndexError, binascii.Error, SpnegoError, ValueError) as error:
            raise AuthFailed(f"Negotiate authentication failed: {type(error).__name__}") from None

    def unwrap(self, payload: bytes) -> bytes:
        """The SOAP message inside a ``multipart/encrypted`` body."""
        parts = payload.split(BOUNDARY + b"\r\n")
        if len(parts) < 3:
            raise AuthFailed("malformed encrypted message")
        length = _LENGTH.search(parts[1])
        data = parts[2].split(b"\r\n", 1)[1] if b"\r\n" in parts[2] else b""
        if length is None or len(data) < 4:
            raise AuthFailed("malformed encrypted message")
        header_length = struct.unpack("<I", data[:4])[0]
        header = data[4:4 + header_length]
        encrypted = data[4 + header_length:4 + header_length + int(length.group(1))]
        try:
            return self._context.unwrap_winrm(header, encrypted)  # type: ignore[no-any-return]
        except SpnegoError as error:
            raise AuthFailed(f"cannot decrypt the message: {type(error).__name__}") from None

    def wrap(self, message: bytes) -> bytes:
        """``message`` as a ``multipart/encrypted`` body (content type ENCRYPTED_TYPE)."""
        result = self._context.wrap_winrm(message)
        original = len(message) + result.padding_length
        return b"".join([
            BOUNDARY, b"\r\n\tContent-Type: ", PROTOCOL.encode(),
            b"\r\n\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=",
            str(original).encode(), b"\r\n", BOUNDARY,
            b"\r\n\tContent-Type: application/octet-stream\r\n",
            struct.pack("<I", len(result.header)), result.header, result.data,
            BOUNDARY, b"--\r\n"])
