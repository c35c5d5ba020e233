"""The ``[wsman]`` configuration: file, password file, environment and flags; the password
is never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from hyperv_agent.backends import open_backend, wsman_settings
from hyperv_agent.cim.wsman.backend import WsmanCim
from hyperv_agent.config import load_config
from hyperv_agent.errors import ConfigError
from tests.certs import self_signed_pair


def _file(tmp_path: Path, wsman: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(f'[agent]\nbackend = "wsman"\n[wsman]\n{wsman}\n')
    return path


def test_file_settings_make_the_backend(tmp_path: Path) -> None:
    config = load_config(_file(tmp_path, 'url = "https://hv01:5986/wsman"\n'
                                         'username = "HV01\\\\cloud"\npassword = "S3cret-1"\n'
                                         'auth = "ntlm"\noperation_timeout_s = 30'),
                         state_dir=tmp_path)
    settings = wsman_settings(config)
    assert (settings.host, settings.port, settings.ssl, settings.auth) == (
        "hv01", 5986, True, "ntlm")
    assert (settings.username, settings.password, settings.operation_timeout_s) == (
        "HV01\\cloud", "S3cret-1", 30)
    assert isinstance(open_backend(config), WsmanCim)
    assert "S3cret-1" not in repr(config) and "S3cret-1" not in repr(settings)


def test_password_comes_from_its_file_then_the_environment_then_the_flag(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "wsman.password"
    secret.write_text("From-File-1\n")
    path = _file(tmp_path, f'url = "http://hv01/wsman"\npassword_file = "{secret}"')
    assert wsman_settings(load_config(path)).password == "From-File-1"
    monkeypatch.setenv("HYPERV_AGENT_WSMAN_PASSWORD", "From-Env-2")
    assert wsman_settings(load_config(path)).password == "From-Env-2"
    flagged = load_config(path, wsman={"password": "From-Flag-3", "verify_tls": None})
    assert wsman_settings(flagged).password == "From-Flag-3"
    assert wsman_settings(flagged).port == 5985  # http without a port


def test_unreadable_password_file_names_the_file_not_a_password(tmp_path: Path) -> None:
    path = _file(tmp_path, f'url = "http://hv01/wsman"\npassword_file = "{tmp_path / "no"}"')
    with pytest.raises(ConfigError, match="password_file"):
        wsman_settings(load_config(path))


@pytest.mark.parametrize(("wsman", "message"), [
    ('url = "ftp://hv01/wsman"', r"\(\[wsman\] url, --wsman-url\) is not http"),
    ('url = "http://hv01/wsman"\nauth = "basic"', "password in clear"),
    ('url = "https://hv01/wsman"\nauth = "certificate"', "certificate and its key: set "
     r"\[wsman\] certificate_pem and certificate_key_pem"),
])
def test_bad_settings_are_one_clear_error(tmp_path: Path, wsman: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        wsman_settings(load_config(_file(tmp_path, wsman)))


@pytest.mark.parametrize("url", ["https://cloud:Url-Pa55-8@hv01:5986/wsman",
                                 "cloud:Url-Pa55-8@hv01:5986/wsman"])
def test_credentials_in_the_url_are_refused_without_showing_them(
        tmp_path: Path, url: str) -> None:
    """An operator who writes the account into the URL, as many tools take it, learns
    where it goes instead; the error, printed at start, does not show the password."""
    with pytest.raises(ConfigError, match=r"\[wsman\] username and password") as raised:
        wsman_settings(load_config(_file(tmp_path, f'url = "{url}"')))
    assert "Url-Pa55-8" not in str(raised.value)


def test_unknown_auth_is_refused_when_the_file_is_read(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"wsman\.auth") as raised:
        load_config(_file(tmp_path, 'url = "http://hv01/wsman"\nauth = "digest"\n'
                                    'password = "Never-Shown-7"'))
    assert "Never-Shown-7" not in str(raised.value)


def test_tls_files_that_cannot_be_used_stop_the_start_naming_the_setting(
        tmp_path: Path) -> None:
    """A missing CA file or a client certificate with another's key was first read at the
    first request to the host: the agent started, then every command from the management
    server, and ``cim``, failed with a traceback. Now each is one line at start, from
    ``serve`` as from ``cim`` and ``doctor``, before anything else is done."""
    from tests.cli import lab
    from tests.ports import free_port

    a_cert, a_key = self_signed_pair(tmp_path, "a")
    _, b_key = self_signed_pair(tmp_path, "b")
    cases = [
        ('ca_file = "hv01-ca.pem"', f"[wsman] ca_file {tmp_path / 'hv01-ca.pem'} cannot be "
                                    "used: No such file or directory"),
        (f'ca_file = "{a_key}"', f"[wsman] ca_file {a_key} cannot be used"),
        (f'auth = "certificate"\ncertificate_pem = "{a_cert}"\ncertificate_key_pem = "{b_key}"',
         f"[wsman] certificate_pem {a_cert} and certificate_key_pem {b_key} cannot be used: "
         "key values mismatch"),
    ]
    for extra, message in cases:
        path = _file(tmp_path, f'url = "https://hv01.invalid:5986/wsman"\nusername = "u"\n'
                               f'password = "p"\n{extra}')
        with pytest.raises(ConfigError) as raised:
            wsman_settings(load_config(path))
        assert str(raised.value).startswith(message), str(raised.value)
        for command in (["serve", "--listen", f"127.0.0.1:{free_port()}", "--admin-listen",
                         f"127.0.0.1:{free_port()}"],
                        ["cim", "query", "SELECT Name FROM Msvm_ComputerSystem"]):
            run = lab.command(*command, "--config", str(path), "--state-dir",
                              str(tmp_path / "state"), timeout_s=60)
            assert run.returncode == 2, (command, run.stderr)
            assert run.stderr.startswith(f"error: {message}"), (command, run.stderr)
            assert len(run.stderr.splitlines()) == 1, (command, run.stderr)
    # Over http neither file is used; a usable pair is taken.
    assert wsman_settings(load_config(_file(tmp_path, 'url = "http://hv01/wsman"\n'
                                                      'ca_file = "absent.pem"'))).ca_file
    usable = _file(tmp_path, f'url = "https://hv01/wsman"\nca_file = "{a_cert}"\n'
                             f'auth = "certificate"\ncertificate_pem = "{a_cert}"\n'
                             f'certificate_key_pem = "{a_key}"')
    assert wsman_settings(load_config(usable)).certificate_key_pem == a_key


def test_a_ca_file_is_not_needed_when_verification_is_turned_off(tmp_path: Path) -> None:
    """``verify_tls = false``, or ``--wsman-no-verify``, turns verification off: a
    ``ca_file`` left in the file, which no longer exists, neither stops the start nor is
    used (the transport's side: ``tests/cim/test_wsman_backend.py``)."""
    left = 'url = "https://hv01/wsman"\nusername = "u"\npassword = "p"\nca_file = "gone.pem"\n'
    with pytest.raises(ConfigError, match=r"\[wsman\] ca_file .*gone\.pem cannot be used"):
        wsman_settings(load_config(_file(tmp_path, left)))
    off = wsman_settings(load_config(_file(tmp_path, left + "verify_tls = false")))
    assert off.verify_tls is False
    flagged = wsman_settings(load_config(_file(tmp_path, left), wsman={"verify_tls": False}))
    assert flagged.verify_tls is False
