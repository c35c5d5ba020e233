"""The agent's TLS identity: its fingerprint, read without the certificate library."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from hyperv_agent import tls
from hyperv_agent.errors import ConfigError


def _expected(cert_path: Path) -> str:
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return ":".join(f"{byte:02X}" for byte in certificate.fingerprint(hashes.SHA256()))


def test_fingerprint_is_the_certificates_sha256_when_it_is_generated(tmp_path: Path) -> None:
    identity = tls.ensure_identity(tmp_path)
    assert identity.generated
    assert identity.sha256_fingerprint == _expected(identity.cert_path)
    again = tls.ensure_identity(tmp_path)
    assert (again.generated, again.sha256_fingerprint) == (False, identity.sha256_fingerprint)


def test_fingerprint_is_the_first_certificates_when_the_file_holds_a_chain(
    tmp_path: Path,
) -> None:
    first, second = (tls.ensure_identity(tmp_path / name) for name in ("a", "b"))
    chain = tmp_path / "chain.pem"
    chain.write_text("Bag Attributes\n    friendlyName: agent\n"
                     + first.cert_path.read_text() + second.cert_path.read_text())
    assert tls.fingerprint(chain) == first.sha256_fingerprint


def test_fingerprint_fails_with_a_config_error_when_the_file_holds_no_certificate(
    tmp_path: Path,
) -> None:
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n")
    for path in (bogus, tmp_path / "missing.pem"):
        with pytest.raises(ConfigError, match="cannot read certificate"):
            tls.fingerprint(path)
