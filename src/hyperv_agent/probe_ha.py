"""``hyperv-agent probe --ha-pool URL --check-on-host IP``: play the management server's
part in HA against one agent of a cluster.

After the registration checks, the shared primary pool is registered as the management
server registers it on every host of the cluster (ModifyStoragePoolCommand, SMB, the
credentials in the path's query), which makes the agent stamp its heartbeat there; then
the agent is asked about each neighbour what the HypervInvestigator asks it when that
neighbour stops answering (CheckOnHostCommand), and its answer is read as the
investigator reads it: ``result`` true is Down (a 4.22 management server marks the
neighbour Down and alerts, and restarts none of its VMs), false is Up.
"""

from __future__ import annotations

import functools
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Any

from hyperv_agent import logs
from hyperv_agent.probe import MODIFY_POOL, JsonObject, ProbeError, Prober, ProbeReport, require

CHECK_ON_HOST = "com.cloud.agent.api.CheckOnHostCommand"
CHECK_ON_HOST_ANSWER = "com.cloud.agent.api.CheckOnHostAnswer"


@dataclass(frozen=True)
class HaPlan:
    pool_url: str | None = None  # cifs://server/share[/folder]?user=..&password=..
    suspects: tuple[str, ...] = ()  # neighbours' private addresses


def pool_command(url: str) -> JsonObject:
    """The ModifyStoragePoolCommand the management server sends for a cifs:// primary pool;
    ValueError when ``url`` is not one (quoting it without its password)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "cifs" or not parts.hostname or not parts.path.strip("/"):
        raise ValueError(f"{logs.redact(url)!r} is not cifs://server/share"
                         "[?user=..&password=..]")
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    pool_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"cifs://{parts.hostname}{parts.path}"))
    return {"add": True, "localPath": f"/mnt//{pool_uuid}", "details": {},
            "pool": {"id": 1, "uuid": pool_uuid, "host": parts.hostname, "path": path,
                     "port": parts.port or 445, "type": "SMB"},
            "contextMap": {}, "wait": 0}


def check_on_host_command(ip: str) -> JsonObject:
    """CheckOnHostCommand about the host at ``ip``, as HypervInvestigator builds it."""
    return {"host": {"guid": f"{uuid.uuid3(uuid.NAMESPACE_DNS, ip)}-HypervResource",
                     "privateNetwork": {"ip": ip}, "publicNetwork": {"ip": ip},
                     "storageNetwork1": {"ip": ip}},
            "reportCheckFailureIfOneStorageIsDown": False, "contextMap": {}, "wait": 0}


class HaProber(Prober):
    def __init__(self, *args: Any, plan: HaPlan, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plan = plan

    async def register_pool(self) -> str:
        assert self.plan.pool_url is not None
        try:
            body = pool_command(self.plan.pool_url)
        except ValueError as error:
            raise ProbeError("a cifs:// pool URL", str(error)) from None
        answer = await self.answer(MODIFY_POOL, body,
                                   "com.cloud.agent.api.ModifyStoragePoolAnswer")
        require(answer.get("result") is True, "the shared pool registers",
                 str(answer.get("details")))
        info = answer.get("poolInfo") or {}
        self.report.facts["shared pool"] = str(info.get("localPath"))
        return f"registered at {info.get('localPath')}"

    async def check_on_host(self, ip: str) -> str:
        answer = await self.answer(CHECK_ON_HOST, check_on_host_command(ip),
                                   CHECK_ON_HOST_ANSWER)
        result = answer.get("result")
        require(isinstance(result, bool), "CheckOnHostAnswer.result is a boolean",
                 f"result is {result!r}")
        verdict = "Down" if result else "Up"
        self.report.facts[f"HA verdict on {ip}"] = verdict
        return f"{verdict}: {answer.get('details')}"

    async def run(self) -> ProbeReport:
        await super().run()
        if self.plan.pool_url is not None:
            await self.step("ModifyStoragePool", self.register_pool)
        for ip in self.plan.suspects:
            await self.step(f"CheckOnHost {ip}", functools.partial(self.check_on_host, ip))
        return self.report
