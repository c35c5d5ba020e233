"""The agent's TLS identity: its fingerprint, read without the certificate library."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import socket
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hyperv_agent import state, tls
from hyperv_agent.errors import ConfigError
from tests import pywin32_fake


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


def test_the_generated_key_on_windows_is_kept_from_other_local_users(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    security = pywin32_fake.Security()
    pywin32_fake.install(monkeypatch, security)
    monkeypatch.setattr(tls, "_WINDOWS", True)
    identity = tls.ensure_identity(tmp_path)
    owners = [pywin32_fake.SYSTEM, pywin32_fake.ADMINISTRATORS, security.account]
    protected = (pywin32_fake.DACL_SECURITY_INFORMATION
                 | pywin32_fake.PROTECTED_DACL_SECURITY_INFORMATION)
    inherited = pywin32_fake.OBJECT_INHERIT_ACE | pywin32_fake.CONTAINER_INHERIT_ACE
    folder, key = str(identity.key_path.parent), str(identity.key_path)
    assert security.dacls[folder] == (protected, pywin32_fake.Acl(
        [(inherited, pywin32_fake.FILE_ALL_ACCESS, sid) for sid in owners]))
    assert security.dacls[key] == (protected, pywin32_fake.Acl(
        [(0, pywin32_fake.FILE_ALL_ACCESS, sid) for sid in owners]))
    assert identity.key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    security.dacls.clear()  # a key made before its access list was set gets it at start
    assert not tls.ensure_identity(tmp_path).generated
    assert set(security.dacls) == {folder, key}


def test_a_key_windows_would_not_protect_is_not_left_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    security = pywin32_fake.Security()
    pywin32_fake.install(monkeypatch, security)
    monkeypatch.setattr(tls, "_WINDOWS", True)
    security.refuse = ("agent.key", pywin32_fake.Error(5, "SetNamedSecurityInfo",
                                                       "Access is denied.  "))
    with pytest.raises(ConfigError, match=r"cannot restrict access to .*agent\.key: Access is "
                       r"denied\. \(SetNamedSecurityInfo, 5\)$"):
        tls.ensure_identity(tmp_path)
    assert not (tmp_path / "tls" / "agent.key").exists()


@pytest.mark.parametrize("damage", ["empty key", "empty pair", "garbage certificate",
                                    "another key"])
def test_a_generated_pair_a_power_loss_cut_short_is_set_aside_and_made_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str,
) -> None:
    """Key and certificate written when a host lost power are at the next start empty or
    half there: the agent makes a new pair, says so, and serves; it refused to start."""
    first = tls.ensure_identity(tmp_path)
    cert, key = first.cert_path, first.key_path
    if damage == "empty key":
        key.write_bytes(b"")
    elif damage == "empty pair":
        key.write_bytes(b"")
        cert.write_bytes(b"")
    elif damage == "garbage certificate":
        cert.write_bytes(b"\0" * 512)
    else:
        key.write_bytes(tls.ensure_identity(tmp_path / "other").key_path.read_bytes())
    damaged = cert.read_bytes(), key.read_bytes()
    with caplog.at_level(logging.WARNING, logger="hyperv_agent.tls"):
        again = tls.ensure_identity(tmp_path)
    assert again.generated and again.sha256_fingerprint != first.sha256_fingerprint
    tls.server_context(again)  # it serves
    assert f"generated TLS certificate {cert} and key {key} cannot be used (" in caplog.text
    (kept_cert,) = cert.parent.glob("agent.crt.unusable-*")
    (kept_key,) = cert.parent.glob("agent.key.unusable-*")
    assert (kept_cert.read_bytes(), kept_key.read_bytes()) == damaged
    if damage.startswith("empty"):
        assert "agent.key" in caplog.text and " empty)" in caplog.text


def test_a_generated_key_encrypted_since_is_set_aside_without_asking_a_passphrase(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str],
) -> None:
    """The generated key, replaced by the same key encrypted with a passphrase (a hand
    edit): OpenSSL asked for the passphrase on the terminal, where a start waited for an
    answer (or, without a terminal, the pair was set aside as "Invalid argument"). It is
    set aside saying the key is encrypted, without asking, and a new pair is made."""
    first = tls.ensure_identity(tmp_path)
    plain = serialization.load_pem_private_key(first.key_path.read_bytes(), None)
    first.key_path.write_bytes(plain.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"Not-given-1")))
    capfd.readouterr()
    with caplog.at_level(logging.WARNING, logger="hyperv_agent.tls"):
        again = tls.ensure_identity(tmp_path)
    assert "pass phrase" not in capfd.readouterr().err.lower()
    assert again.generated and again.sha256_fingerprint != first.sha256_fingerprint
    tls.server_context(again)  # it serves
    assert (f"generated TLS certificate {first.cert_path} and key {first.key_path} cannot "
            "be used (the key is encrypted with a passphrase)") in caplog.text


def test_only_the_newest_generated_pairs_set_aside_are_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """A host whose generated pair is damaged at start after start keeps the newest
    KEPT_ASIDE pairs set aside, not one more pair at every start."""
    folder = tls.ensure_identity(tmp_path).cert_path.parent
    for n in range(state.KEPT_ASIDE):
        for name in ("agent.crt", "agent.key"):
            (folder / f"{name}.unusable-20240101-00000{n}").write_text("old")
    (folder / "agent.key").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="hyperv_agent.tls"):
        tls.ensure_identity(tmp_path)
    for name in ("agent.crt", "agent.key"):
        kept = sorted(folder.glob(f"{name}.unusable-*"))
        assert len(kept) == state.KEPT_ASIDE
        assert kept[0].name == f"{name}.unusable-20240101-000001"
    assert ("older pairs removed: agent.crt.unusable-20240101-000000, "
            "agent.key.unusable-20240101-000000") in caplog.text
    assert len(state.set_aside_copies(tmp_path)) == 2 * state.KEPT_ASIDE


def test_an_operators_pair_that_does_not_load_is_refused_never_replaced(
    tmp_path: Path,
) -> None:
    made = tls.ensure_identity(tmp_path / "made")
    made.key_path.write_bytes(b"")
    with pytest.raises(ConfigError, match="cannot load TLS material"):
        tls.server_context(tls.ensure_identity(tmp_path, made.cert_path, made.key_path))
    assert made.key_path.read_bytes() == b""
    assert sorted(path.name for path in made.cert_path.parent.iterdir()) == ["agent.crt",
                                                                             "agent.key"]


def test_the_generated_certificate_is_p256_sha256_ten_years_named_for_this_host(
    tmp_path: Path,
) -> None:
    """What a strict client would check (the management server checks none of it: it trusts
    any certificate and any name)."""
    certificate = x509.load_pem_x509_certificate(
        tls.ensure_identity(tmp_path).cert_path.read_bytes())
    key = certificate.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    assert isinstance(certificate.signature_hash_algorithm, hashes.SHA256)
    now = datetime.datetime.now(datetime.UTC)
    assert certificate.not_valid_before_utc <= now
    lifetime = certificate.not_valid_after_utc - now
    assert datetime.timedelta(days=tls.VALID_DAYS - 1) < lifetime <= datetime.timedelta(
        days=tls.VALID_DAYS)
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {socket.gethostname(), "localhost"}
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
