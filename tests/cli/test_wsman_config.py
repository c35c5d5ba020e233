"""The ``[wsman]`` configuration: file, password file, environment and flags; the password
is never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from hyperv_agent.backends import open_backend, wsman_settings
from hyperv_agent.cim.wsman.backend import WsmanCim
from hyperv_agent.config import load_config
from hyperv_agent.errors import ConfigError


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
    ('url = "ftp://hv01/wsman"', "is not http"),
    ('url = "http://hv01/wsman"\nauth = "basic"', "password in clear"),
    ('url = "https://hv01/wsman"\nauth = "certificate"', "certificate and its key"),
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
