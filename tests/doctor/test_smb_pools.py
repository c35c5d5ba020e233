"""``doctor``'s ``smb pools`` check against a real Samba server: each shared pool the
registry holds listed at its root, each configured server logged on to, with the account
the agent would use; what cannot be reached named with its reason and fix."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from hyperv_agent.config import AgentConfig, load_config
from hyperv_agent.doctor.checks import Options
from hyperv_agent.doctor.report import Status
from hyperv_agent.doctor.run import diagnose
from tests.ports import free_port
from tests.samba import Samba, samba_with_accounts

ROOMY = Options(min_free_bytes=1024 * 1024)


def _config(tmp_path: Path, **overrides: Any) -> AgentConfig:
    return load_config(None, state_dir=tmp_path / "state", backend="emulator", **overrides)


def _accounts(samba: Samba, monkeypatch: pytest.MonkeyPatch, password: str | None = None
              ) -> dict[str, dict[str, str]]:
    monkeypatch.setenv("HV_TEST_SMB_PASSWORD", samba.password if password is None
                       else password)
    return {samba.server: {"username": samba.user, "password_env": "HV_TEST_SMB_PASSWORD"}}


def _register(tmp_path: Path, *roots: str) -> None:
    """pools.json as the agent stores it: roots, no credentials."""
    state_dir = tmp_path / "state"
    state_dir.mkdir(parents=True, exist_ok=True)
    pools = {str(uuid.uuid4()): {"root": root, "pool_type": "SMB",
                                 "host": root[2:].split("\\")[0],
                                 "path": "/" + "/".join(root[2:].split("\\")[1:])}
             for root in roots}
    (state_dir / "pools.json").write_text(json.dumps(pools))


def _pool(samba: Samba) -> str:
    name = f"pool-{uuid.uuid4().hex[:8]}"
    (samba.share_dir / name).mkdir()
    return f"{samba.unc}\\{name}"


async def _smb_line(config: AgentConfig) -> tuple[Status, str]:
    report = await diagnose(config, ROOMY)
    check = next(c for c in report.checks if c.name == "smb pools")
    return check.status, check.line()


async def test_a_fresh_install_has_none_registered_yet(tmp_path: Path) -> None:
    status, line = await _smb_line(_config(tmp_path))
    assert status is Status.OK
    assert "none registered yet" in line


async def test_each_pool_is_listed_with_the_configured_account_and_a_missing_one_named(
        samba: Samba, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    present, missing = _pool(samba), f"{samba.unc}\\no-such-pool"
    _register(tmp_path, present, missing)
    config = _config(tmp_path, smb_port=samba.port,
                     smb_credentials=_accounts(samba, monkeypatch))
    status, line = await _smb_line(config)
    assert status is Status.FAIL, line
    assert f"reached {present} as " in line and samba.user in line
    assert f"cannot list {missing}: no such file or folder" in line
    assert "fix: create the pool's folder on the share" in line
    assert samba.password not in line


async def test_a_refused_account_is_named_with_its_fix(
        samba: Samba, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _register(tmp_path, _pool(samba))
    config = _config(tmp_path, smb_port=samba.port,
                     smb_credentials=_accounts(samba, monkeypatch, "Wr0ng-password!"))
    status, line = await _smb_line(config)
    assert status is Status.FAIL, line
    assert "refused the logon: wrong user name or password" in line
    assert f'check the account for "{samba.server}" in [agent.smb_credentials]' in line
    assert "Wr0ng-password!" not in line


async def test_a_pool_without_a_configured_account_waits_for_the_management_server(
        samba: Samba, tmp_path: Path) -> None:
    pool = _pool(samba)
    _register(tmp_path, pool)
    status, line = await _smb_line(_config(tmp_path, smb_port=samba.port,
                                           smb_servers=[samba.server]))
    assert status is Status.OK, line
    assert f"not tried {pool}" in line
    assert "credentials arrive when the management server reconnects" in line
    # an MS that encrypts its database sends a password no file server takes
    assert "encrypts its database" in line and "belongs in [agent.smb_credentials]" in line


def _keep(tmp_path: Path, root: str, user: str, password: str) -> None:
    """pool-credentials.json as the agent keeps it for the registered pool at ``root``."""
    state_dir = tmp_path / "state"
    pools = json.loads((state_dir / "pools.json").read_text())
    (key,) = [key for key, pool in pools.items() if pool["root"] == root]
    (state_dir / "pool-credentials.json").write_text(json.dumps(
        {key: {"user": user, "domain": "", "password": password}}))


async def test_a_pool_is_reached_with_the_credentials_the_agent_keeps_for_it(
        samba: Samba, tmp_path: Path) -> None:
    """What an agent restarted between two pings reaches its pool with: doctor tries the
    same, so a password changed on the file server shows before a heartbeat fails."""
    pool, refused = _pool(samba), _pool(samba)
    _register(tmp_path, pool)
    _keep(tmp_path, pool, samba.user, samba.password)
    config = _config(tmp_path, smb_port=samba.port, smb_servers=[samba.server])
    status, line = await _smb_line(config)
    assert status is Status.OK, line
    assert f"reached {pool} as {samba.user}" in line
    assert samba.password not in line
    _register(tmp_path, refused)
    _keep(tmp_path, refused, samba.user, "Wr0ng-kept-pw")
    status, line = await _smb_line(config)
    assert status is Status.FAIL, line
    assert "refused the logon: wrong user name or password" in line
    assert "Wr0ng-kept-pw" not in line


async def test_a_configured_account_wins_over_the_kept_one_as_in_the_agent(
        samba: Samba, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator configured the account after the pool's (now stale) password was kept:
    the agent uses the configured one, and doctor judges that one, not the stale one."""
    pool = _pool(samba)
    _register(tmp_path, pool)
    _keep(tmp_path, pool, samba.user, "Stale-kept-pw")
    config = _config(tmp_path, smb_port=samba.port,
                     smb_credentials=_accounts(samba, monkeypatch))
    status, line = await _smb_line(config)
    assert status is Status.OK, line
    assert f"reached {pool} as {samba.server}\\{samba.user}" in line


async def test_an_unreadable_credentials_file_warns_never_showing_it(tmp_path: Path) -> None:
    _register(tmp_path, "\\\\fs1\\primary")
    kept = tmp_path / "state" / "pool-credentials.json"
    kept.write_text('{"x": {"user": "cloud", "password": "s3cret')
    status, line = await _smb_line(_config(tmp_path))
    assert status is Status.WARN, line
    assert "pool-credentials.json cannot be read: it is not JSON" in line
    assert "s3cret" not in line and "cloud" not in line
    assert kept.exists()  # read only: left as it was


async def test_a_configured_server_without_a_pool_is_logged_on_to(
        samba: Samba, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config(tmp_path, smb_port=samba.port,
                     smb_credentials=_accounts(samba, monkeypatch))
    status, line = await _smb_line(config)
    assert status is Status.OK, line
    assert f"reached SMB server {samba.server} as " in line


async def test_an_unreachable_server_is_named_with_the_port_to_open(
        samba: Samba, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()  # nothing listens there
    config = _config(tmp_path, smb_port=port, smb_credentials=_accounts(samba, monkeypatch))
    status, line = await _smb_line(config)
    assert status is Status.FAIL, line
    assert f"SMB server {samba.server} port {port} cannot be reached" in line
    assert f"allow TCP {port} from this machine to {samba.server}" in line


async def test_an_unreadable_registry_warns_and_is_left_as_it_was(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / "pools.json").write_text("{cut short")
    status, line = await _smb_line(_config(tmp_path))
    assert status is Status.WARN, line
    assert "pools.json cannot be read: it is not JSON" in line
    assert sorted(p.name for p in state_dir.iterdir() if "pools" in p.name) == ["pools.json"]


async def test_two_pools_of_one_server_are_each_named_with_their_own_account(
        tmp_path: Path) -> None:
    """Two pools of one share, each kept with its own account: each is reported reached
    as the account that reached it, so the operator sees which account each pool's
    heartbeats and statistics use (not the one a path below no pool would take, which
    two accounts leave unchosen)."""
    accounts = {"daemon": "Pool-a-acc0unt!", "bin": "Pool-b-acc0unt!"}
    with samba_with_accounts(accounts) as samba:
        roots = {}
        for user, folder in (("daemon", "pool-a"), ("bin", "pool-b")):
            where = samba.share_dir / folder
            where.mkdir()
            shutil.chown(where, user, user)
            where.chmod(0o700)
            roots[user] = f"{samba.unc}\\{folder}"
        _register(tmp_path, *roots.values())
        state_dir = tmp_path / "state"
        pools = json.loads((state_dir / "pools.json").read_text())
        (state_dir / "pool-credentials.json").write_text(json.dumps({
            key: {"user": user, "domain": "", "password": accounts[user]}
            for key, pool in pools.items() for user, root in roots.items()
            if pool["root"] == root}))
        config = _config(tmp_path, smb_port=samba.port, smb_servers=[samba.server])
        status, line = await _smb_line(config)
    assert status is Status.OK, line
    for user, root in roots.items():
        assert f"{root} as {user}" in line, line
    assert all(secret not in line for secret in accounts.values())
