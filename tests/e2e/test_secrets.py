"""Secrets stay where they belong, over real HTTPS, through successes and failures alike.

A realistic run: an SMB pool registered with its credentials (and with a wrong password,
on a server that does not answer, in a malformed path), templates copied from a CIFS image
store into that pool (one of them failing mid-way), from S3 (and with a wrong secret key,
and for an object that is not there), a user VM started with its password, SSH key and
user data, a system VM with the secrets CloudStack writes in its boot arguments. Every
secret is a distinctive string; none may appear in the agent's log (DEBUG, as written),
in any answer, in any file of its state directory but the credential store, in the
metrics, or in ``doctor``'s report. What an operator needs (the server, the share) stays
in the failed answers."""

from __future__ import annotations

import base64
import bz2
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from hyperv_agent import logs
from hyperv_agent.cloudstack import names
from hyperv_agent.config import AgentConfig
from hyperv_agent.doctor.checks import Options
from hyperv_agent.doctor.run import diagnose
from hyperv_agent.emulator import vhd
from tests.cloudstack.fixtures import ms422_json
from tests.e2e.conftest import (
    STARTUP_REQUEST,
    WSMAN_PASSWORD,
    Running,
    config_with_shares,
    serving,
)
from tests.s3server import S3Server
from tests.samba import Samba, running_samba

SMB_PASSWORD = "Vault;Pw,7@smb-x91"
WRONG_PASSWORD = "Wr0ngHorse;Battery-x92"
MALFORMED_PASSWORD = "M4lf0rmed-x93"
UNREACHABLE_PASSWORD = "N0b0dyHome-x94"
WRONG_SECRET_KEY = "WrongS3cretKey/x95+abc"
GUEST_PASSWORD = "Gu3stPw-x96"
USER_DATA = "I2Nsb3VkLWNvbmZpZyB4OTc="  # base64 of "#cloud-config x97"
SYSTEM_VM_PASSWORD = "SysVmPw-x98"
KEYSTORE_PASSWORD = "S2V5c3RvcmUteDk5"
PRIVATE_KEY = "LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0teDEwMA"
ROUTER_PASSWORD = "R0uterPw-x101"

COPY = names.COPY_COMMAND
MODIFY = names.MODIFY_STORAGE_POOL_COMMAND
TEMPLATE_TO, PRIMARY_TO = names.TEMPLATE_OBJECT_TO, names.PRIMARY_DATA_STORE_TO
NFS_TO, S3_TO = "com.cloud.agent.api.to.NfsTO", "com.cloud.agent.api.to.S3TO"
POOL_UUID = "5fe2bad3-d785-394e-9949-89786b8a63d2"
LOCAL_POOL = "C:\\Users\\Public\\Documents\\Hyper-V\\Virtual hard disks"
ROOT_VOLUME = "03164c49-b0a9-4db9-baf2-20e389d54e6a"  # the 4.22 StartCommand sample's
KEPT = "pool-credentials.json"  # the agent's credential store (0600)
MIB = 1 << 20
NOBODY = "127.0.0.2"  # an SMB server that does not answer (smbd listens on 127.0.0.1 only)


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[Samba]:
    """A real smbd whose account has a password full of punctuation."""
    with running_samba(tmp_path / "vault", password=SMB_PASSWORD) as server:
        yield server


def _spellings(secret: str) -> set[str]:
    """How a secret may be written: as is, URL-quoted, JSON-escaped, and inside HTTP Basic
    credentials (base64 of ``user:password``, whatever the user: the password's part of
    it is the same from an offset of 0, 1 or 2 bytes)."""
    forms = {secret, quote(secret, safe=""), quote(secret), json.dumps(secret)[1:-1]}
    for pad in ("", "a", "ab"):
        encoded = base64.b64encode(f":{pad}{secret}".encode()).decode()
        forms.add(encoded[4 * ((len(pad) + 1) // 3 + 1): -4])
    return forms


def _leaks(text: str, secrets: list[str]) -> list[str]:
    return [secret for secret in secrets if any(form in text for form in _spellings(secret))]


def _pool(samba: Samba, password: str, folder: str = "primary",
          server: str | None = None) -> dict[str, Any]:
    path = f"/{samba.share}/{folder}?user={samba.user}&password={quote(password, safe='')}"
    return {"uuid": POOL_UUID, "host": server or samba.server, "type": "SMB",
            "port": samba.port, "path": path}


def _template(store: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {TEMPLATE_TO: {"uuid": "7e4ca941-cb1b-4113-ab9e-043960d0fb10", "id": 206,
                          "format": "VHD", "hvm": True, "imageDataStore": store,
                          "hypervisorType": "Hyperv", "name": "206-2-73592258", **fields}}


def _primary(pool: dict[str, Any]) -> dict[str, Any]:
    return {PRIMARY_TO: {**pool, "id": 201, "poolType": "SMB"}}


def _copy(src: dict[str, Any], dest: dict[str, Any]) -> dict[str, Any]:
    return {"srcTO": src, "destTO": dest, "executeInSequence": False, "wait": 10800}


def _key_body(state: Path) -> str:
    """A line from the middle of the agent's TLS private key (made on first start)."""
    lines = (state / "tls" / "agent.key").read_text().splitlines()
    assert "PRIVATE KEY" in lines[0]
    return lines[len(lines) // 2]


def _config(tmp_path: Path, samba: Samba) -> AgentConfig:
    toml = (f'smb_servers = ["{samba.server}", "{NOBODY}"]\nsmb_port = {samba.port}\n'
            '[emulator]\nswitches = ["vSwitch0"]')
    return config_with_shares(tmp_path, {}, toml, local_storage_path=LOCAL_POOL)


async def _run(running: Running, samba: Samba, s3: S3Server) -> list[Any]:
    """The run: every answer, as the management server reads it."""
    replies: list[Any] = []

    async def send(fqcn: str, body: object) -> dict[str, Any]:
        status, reply = await running.post(fqcn, body)
        assert status == 200, reply
        replies.append(reply)
        ((_, value),) = reply[0].items()
        assert isinstance(value, dict)
        return value

    status, _ = await running.post("com.cloud.agent.api.StartupCommand", STARTUP_REQUEST)
    assert status == 200
    (samba.share_dir / "primary").mkdir()
    wrong = await send(MODIFY, {"add": True, "pool": _pool(samba, WRONG_PASSWORD)})
    assert wrong["result"] is False and samba.server in wrong["details"], wrong
    added = await send(MODIFY, {"add": True, "pool": _pool(samba, SMB_PASSWORD)})
    assert added["result"] is True, added
    unreachable = _pool(samba, UNREACHABLE_PASSWORD, server=NOBODY) | {
        "uuid": "0a0a0a0a-0000-4000-8000-000000000001"}
    refused = await send(MODIFY, {"add": True, "pool": unreachable})
    assert refused["result"] is False and NOBODY in refused["details"], refused
    malformed = _pool(samba, MALFORMED_PASSWORD) | {
        "path": f"/{samba.share}/pri%ZZmary?user={samba.user}&password={MALFORMED_PASSWORD}%",
        "uuid": "0a0a0a0a-0000-4000-8000-000000000002"}
    bad = await send(MODIFY, {"add": True, "pool": malformed})
    assert bad["result"] is False, bad

    # Templates from the CIFS image store on the same server, into the SMB pool.
    store_url = (f"cifs://{samba.server}/{samba.share}?user={samba.user}"
                 f"&password={quote(SMB_PASSWORD, safe='')}")
    store = {NFS_TO: {"_url": store_url, "_role": "Image"}}
    (samba.share_dir / "t").mkdir()
    vhd.create(samba.share_dir / "t" / "good.vhd", vhd.DiskFormat.VHD, vhd.DiskType.DYNAMIC,
               16 * MIB)
    copied = await send(COPY, _copy(_template(store, path="t/good.vhd"),
                                    _template(_primary(_pool(samba, SMB_PASSWORD)))))
    assert copied["result"] is True, copied
    whole = bz2.compress((samba.share_dir / "t" / "good.vhd").read_bytes())
    (samba.share_dir / "t" / "cut.vhd.bz2").write_bytes(whole[: len(whole) // 2])
    cut = await send(COPY, _copy(_template(store, path="t/cut.vhd.bz2"),
                                 _template(_primary(_pool(samba, SMB_PASSWORD)), path="cut")))
    assert cut["result"] is False, cut
    missing = await send(COPY, _copy(_template(store, path="t/absent.vhd"),
                                     _template(_primary(_pool(samba, SMB_PASSWORD)))))
    assert missing["result"] is False and samba.share in missing["details"], missing

    download = await send(names.PRIMARY_STORAGE_DOWNLOAD_COMMAND, {
        "url": f"{store_url}/t/absent.vhd", "secUrl": store_url, "format": "VHD",
        "localPath": "\\\\127.0.0.1\\cstest\\primary", "poolUuid": POOL_UUID})
    assert download["result"] is False, download
    iso = await send(names.ATTACH_ISO_COMMAND, {
        "vmName": "i-2-5-VM", "attach": True, "isoPath": "iso/absent.iso",
        "storeUrl": store_url})
    assert iso["result"] is False, iso
    stats = await send(names.GET_STORAGE_STATS_COMMAND, {"id": POOL_UUID, "pooltype": "SMB"})
    assert stats["result"] is True, stats

    # Templates from S3: one copied, one with a wrong secret key, one that is not there.
    packed = bz2.compress((samba.share_dir / "t" / "good.vhd").read_bytes())
    s3.put("templates/x.vhd.bz2", packed)
    bucket = {S3_TO: {"id": 1, "accessKey": s3.access_key, "secretKey": s3.secret_key,
                      "endPoint": s3.endpoint, "bucketName": s3.bucket, "httpsFlag": False}}
    source = _template(bucket, path="templates/x.vhd.bz2",
                       checksum=hashlib.sha256(packed).hexdigest())
    primary = _template(_primary(_pool(samba, SMB_PASSWORD)))
    from_s3 = await send(COPY, _copy(source, primary))
    assert from_s3["result"] is True, from_s3
    denied_bucket = {S3_TO: {**bucket[S3_TO], "secretKey": WRONG_SECRET_KEY}}
    denied = await send(COPY, _copy(_template(denied_bucket, path="templates/x.vhd.bz2"),
                                    primary))
    assert denied["result"] is False, denied
    absent = await send(COPY, _copy(_template(bucket, path="templates/none.vhd"), primary))
    assert absent["result"] is False and s3.bucket in absent["details"], absent

    # A user VM with its password, user data and SSH key; a router with boot-arg secrets.
    pool = running.emulator.host.paths.local(LOCAL_POOL)
    pool.mkdir(parents=True, exist_ok=True)
    vhd.create(pool / f"{ROOT_VOLUME}.vhdx", vhd.DiskFormat.VHDX, vhd.DiskType.DYNAMIC,
               64 * MIB)
    user_vm = ms422_json("15_StartCommand.json")
    user_vm["vm"]["vmData"] = [["userdata", "user_data", USER_DATA],
                               ["password", "vm_password", GUEST_PASSWORD]]
    user_vm["vm"]["details"] |= {"password": GUEST_PASSWORD}
    started = await send(names.START_COMMAND, user_vm)
    assert started["result"] is True, started
    router = ms422_json("15_StartCommand.json")
    router["vm"] |= {"name": "r-6-VM", "type": "DomainRouter", "bootArgs": (
        f" template=domP name=r-6-VM vmpassword={SYSTEM_VM_PASSWORD}"
        f" privatekey={PRIVATE_KEY} keystore_password={KEYSTORE_PASSWORD}"
        f" router_password={ROUTER_PASSWORD} authorized_key=c3NoLXJzYQ")}
    router["vm"]["disks"] = []
    await send(names.START_COMMAND, router)
    lost = ms422_json("15_StartCommand.json")
    lost["vm"] |= {"name": "i-2-7-VM", "bootArgs": f"vmpassword={SYSTEM_VM_PASSWORD}",
                   "vmData": [["password", "vm_password", GUEST_PASSWORD]]}
    lost["vm"]["disks"][0]["data"][names.VOLUME_OBJECT_TO]["path"] = "absent"
    failed = await send(names.START_COMMAND, lost)  # its root volume is not there
    assert failed["result"] is False, failed
    return replies


@pytest.mark.parametrize("backend_kind", ["emulator", "wsman-https-basic"])
async def test_no_secret_leaves_the_credential_store_in_a_run_with_failures(
    tmp_path: Path, vault: Samba, s3_server: S3Server,
) -> None:
    s3 = s3_server
    config = _config(tmp_path, vault)
    log_file = tmp_path / "agent.log"
    with logs.to_file(log_file, "DEBUG"):
        async with serving(config) as running:
            replies = await _run(running, vault, s3)
            metrics = running.agent.metrics.exposition().decode()
            tls_key = _key_body(running.agent.config.agent.state_dir)
        report = (await diagnose(config, Options(min_free_bytes=MIB))).text()
    secrets = [SMB_PASSWORD, WRONG_PASSWORD, MALFORMED_PASSWORD, UNREACHABLE_PASSWORD,
               s3.secret_key, WRONG_SECRET_KEY, GUEST_PASSWORD, SYSTEM_VM_PASSWORD,
               KEYSTORE_PASSWORD, PRIVATE_KEY, ROUTER_PASSWORD, WSMAN_PASSWORD]
    written = log_file.read_text()
    assert "DEBUG" in written or "INFO" in written
    assert _leaks(written, secrets) == [], written
    answers = json.dumps(replies)
    assert _leaks(answers, [*secrets, USER_DATA]) == [], answers
    assert _leaks(metrics, secrets) == []
    assert _leaks(report, secrets) == [], report
    state = config.agent.state_dir
    # The emulated host keeps what Hyper-V keeps: the host-to-guest KVP items of a VM (its
    # boot arguments) are the VM's own, as in a real VM's configuration; credentials of
    # storage and of WinRM never are.
    guest_bound = {SYSTEM_VM_PASSWORD, KEYSTORE_PASSWORD, PRIVATE_KEY, ROUTER_PASSWORD,
                   GUEST_PASSWORD}
    for path in sorted(state.rglob("*")):
        if path.is_file() and path.name != KEPT and path.suffix not in (".vhd", ".vhdx"):
            hyperv_own = path.is_relative_to(state / "emulator")
            text = path.read_bytes().decode("utf-8", "replace")
            looked_for = [s for s in secrets if not (hyperv_own and s in guest_bound)]
            assert _leaks(text, looked_for) == [], path
    assert SMB_PASSWORD in (state / KEPT).read_text()  # kept there, and only there
    assert tls_key not in written and tls_key not in report
