"""The agent's TLS identity: an operator's PEM pair, or a self-signed one made on first start.

The management server trusts any certificate, so a self-signed certificate is enough for
a drop-in; it replaces the manual HTTP.sys binding the C# agent needed. The generated pair
is flushed to the disk once written; a generated pair that does not load at start (a power
loss cut its writing short, or a hand edit) is moved aside (``state.set_aside``: the
newest few pairs are kept) with a warning and made again, since nobody but the agent chose
it. An operator's pair is never replaced.
"""

from __future__ import annotations

import binascii
import datetime
import hashlib
import ipaddress
import logging
import os
import re
import socket
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path

from hyperv_agent import state
from hyperv_agent.errors import ConfigError

VALID_DAYS = 3650
#: The TLS 1.2 suites served, in order: the ECDHE ones of Mozilla's "intermediate"
#: configuration (its DHE ones need DH parameters the agent does not set), all of which
#: Java 8u161 and later offer, for an EC (the generated) or an RSA key.
TLS12_CIPHERS = ":".join([
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305"])
#: Windows ignores a file's POSIX mode: there the key is kept private by its access list.
_WINDOWS = sys.platform == "win32"

log = logging.getLogger("hyperv_agent.tls")


@dataclass(frozen=True)
class Identity:
    cert_path: Path
    key_path: Path
    sha256_fingerprint: str
    generated: bool


def ensure_identity(state_dir: Path, cert: Path | None = None, key: Path | None = None) -> Identity:
    """The configured pair, or ``<state_dir>/tls/agent.{crt,key}``, generated when absent."""
    if (cert is None) != (key is None):
        raise ConfigError("tls_cert and tls_key must be given together")
    generated = False
    if cert is None or key is None:
        cert, key = state_dir / "tls" / "agent.crt", state_dir / "tls" / "agent.key"
        if cert.is_file() and key.is_file() and (problem := _unusable(cert, key)):
            moved = [state.set_aside(made, state.UNUSABLE) for made in (cert, key)]
            removed = [older.name for done in moved for older in done.removed]
            log.warning("the agent's generated TLS certificate %s and key %s cannot be "
                        "used (%s): kept as %s, and a new pair is made%s", cert, key,
                        problem, " and ".join(done.copy.name if done.copy else
                                              f"{made.name} (it could not be moved)"
                                              for made, done in zip((cert, key), moved,
                                                                    strict=True)),
                        f" (older pairs removed: {', '.join(removed)}; the newest "
                        f"{state.KEPT_ASIDE} are kept)" if removed else "")
        if not cert.is_file() or not key.is_file():
            _generate(cert, key)
            generated = True
        elif _WINDOWS:  # made before its access list was set: set it now
            from hyperv_agent import winacl

            winacl.restrict(key.parent, inherit=True)
            winacl.restrict(key)
    return Identity(cert, key, fingerprint(cert), generated)


def _unusable(cert: Path, key: Path) -> str | None:
    """Why the pair cannot serve TLS (an empty or damaged file, a key encrypted since it
    was made); None when it can."""
    empty = [path.name for path in (cert, key) if path.stat().st_size == 0]
    if empty:
        return " and ".join(empty) + (" is" if len(empty) == 1 else " are") + " empty"
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key,
                                                                password=refuse_passphrase)
        fingerprint(cert)
    except EncryptedKey as error:  # never asked for on the terminal
        return str(error)
    except (OSError, ssl.SSLError, ConfigError) as error:
        return str(error) or type(error).__name__
    return None


_PEM_CERTIFICATE = re.compile(
    r"-----BEGIN CERTIFICATE-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END CERTIFICATE-----")


def fingerprint(cert_path: Path) -> str:
    """SHA-256 of the first certificate in the PEM file, as ``AB:CD:...``."""
    try:
        found = _PEM_CERTIFICATE.search(cert_path.read_text("ascii"))
        if found is None:
            raise ValueError("no PEM certificate in it")
        der = binascii.a2b_base64(found.group(1).encode("ascii"))
    except (OSError, ValueError) as error:  # binascii.Error and UnicodeError are ValueErrors
        raise ConfigError(f"cannot read certificate {cert_path}: {error}") from None
    return ":".join(f"{byte:02X}" for byte in hashlib.sha256(der).digest())


def _generate(cert_path: Path, key_path: Path) -> None:
    # cryptography is needed to make a certificate, not to serve one: imported only here.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    host = socket.gethostname()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = [x509.DNSName(host), x509.DNSName("localhost"),
                                     x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    _write_private(key_path, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    with cert_path.open("wb") as handle:
        handle.write(certificate.public_bytes(serialization.Encoding.PEM))
        handle.flush()
        os.fsync(handle.fileno())


def _write_private(path: Path, data: bytes) -> None:
    """The private key, readable by this account only. On Windows the mode is ignored and
    ``%ProgramData%`` lets every local user read what is made in it, so the key's folder
    and the file itself get access lists of their own (SYSTEM, Administrators, this
    account) before a byte of the key is written; a failure leaves no key behind."""
    if _WINDOWS:
        from hyperv_agent import winacl

        winacl.restrict(path.parent, inherit=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    if _WINDOWS:
        try:
            winacl.restrict(path)
        except ConfigError:
            os.close(descriptor)
            path.unlink(missing_ok=True)
            raise
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def server_context(identity: Identity, client_ca: Path | None = None) -> ssl.SSLContext:
    """TLS 1.2 or later; with ``client_ca``, clients must present a certificate it signed.

    No compression (CRIME) and no renegotiation: a client asking for a new handshake on an
    open connection gets an alert. OpenSSL 3 refuses a client's renegotiation by default;
    OpenSSL 1.1.1, which some Python builds link, carried it out, so one connection could
    have the agent compute handshake after handshake. The option says it whatever the
    library. TLS 1.2 offers
    :data:`TLS12_CIPHERS` (forward secret, AEAD: Python's default added CBC suites); TLS
    1.3 its three suites."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.set_ciphers(TLS12_CIPHERS)
    try:
        context.load_cert_chain(identity.cert_path, identity.key_path,
                                password=refuse_passphrase)
    except EncryptedKey:
        raise ConfigError(f"cannot load TLS material: the key {identity.key_path} is "
                          "encrypted with a passphrase, which the agent is not given; "
                          f"save it without one ({_PAIR})") from None
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(f"cannot load TLS material: the certificate {identity.cert_path} "
                          f"and key {identity.key_path}: {reason(error)} ({_PAIR})") from None
    if client_ca is not None:
        try:
            context.load_verify_locations(client_ca)
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(f"cannot load TLS material: [agent] tls_client_ca {client_ca}: "
                              f"{reason(error)}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


#: Where an operator's certificate and key are set.
_PAIR = "see [agent] tls_cert and tls_key: a PEM certificate and its unencrypted key"


class EncryptedKey(ValueError):
    """The key asks for a passphrase (``refuse_passphrase``)."""

    def __init__(self) -> None:
        super().__init__("the key is encrypted with a passphrase")


def refuse_passphrase() -> str:
    """The ``password`` callback of ``load_cert_chain``, called only for an encrypted key:
    EncryptedKey, where OpenSSL would otherwise prompt on the terminal (a service has
    none) and a start would wait for an answer."""
    raise EncryptedKey


def reason(error: Exception) -> str:
    """An OpenSSL or file error as a phrase (ssl's file errors carry no file name)."""
    if isinstance(error, ssl.SSLError) and error.reason:
        return error.reason.replace("_", " ").lower()
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)
