"""A soak test: random sequences of what a management server sends two hosts of one
cluster (templates copied, and copied again; THIN, SPARSE and FAT volumes made, deleted,
grown and moved between a local pool and the SMB pool; VMs deployed, started, stopped,
rebooted and moved, with or without their storage; data volumes and ISOs attached and
detached; NICs of generation 2 VMs plugged, unplugged and moved to another VLAN;
security-group rules sent, re-sent and sent late; starts that must fail; state reports,
statistics and checks; volumes moved between pools through the image store; a template
made from a stopped VM's root volume and deployed), some sent one at a time and some
together, as the management server's worker threads send them (several deploys, starts,
stops, creates and attaches at once, each on its own VM or volume, with state reports,
statistics, checks and pings among them; two starts of one VM; a template evicted while a
volume is being made from it; and, as no MS sends them but its threads, a retry and a
user's calls may interleave them, 2 to 4 commands on ONE VM and its files at once: its
start, stop or reboot beside attaches and detaches of its volumes, its config drive
written or deleted, its volumes deleted or copied, and reads of it), over real HTTPS to
agents run as ``hyperv-agent serve`` runs them and restarted now and then (once while a
start is in flight), each answer checked against a model of what the management server
then believes. The agents run their emulated hosts in-process, or, agentless (``backend =
"wsman"``), each drives its host through the WinRM face that host serves (which goes on
serving while its agent restarts), as ``SOAK_BACKEND`` says (a kind of the e2e
conftest's ``BACKENDS``); the bounded run runs both on the emulator and over HTTP with
NTLM (about 20 s each). After every step (reading the emulated hosts directly):

- each host's state report lists exactly the VMs the model has running there, PowerOn,
  and the host holds no other VM (a failed start leaves none behind);
- each running VM has the NICs the model plugged, connected and on their VLANs, and one
  with security-group rules lets in exactly what its last rules allow;
- every volume file the model holds is there, and unchanged unless a command changed it
  or a running VM holds it;
- each pool holds only the model's templates and volumes (and, in the shared pool, each
  host's heartbeat stamp): no temporary, aside or marker file is left behind;
- both agents answer a health check and a PingRoutingCommand;
- after commands on one VM sent together: all answered within 20 s (no deadlock), no
  drive names a missing file (unless an answer said it left it so) nor one outside the
  pools, and each host's state report agrees with CheckVirtualMachine on every VM.

A command the model says must succeed succeeds; one it says must fail fails, with the
command's own answer class, ``result`` false and a ``details`` string. Bounded for CI,
from a fixed seed, and failed if that run never sent a batch together, a batch on one VM
or an agent restart (``REACHED``): what it never sends it does not check;
``SOAK_EXAMPLES`` (and ``SOAK_STEPS``) run it longer, from a random seed, printing it and
what was sent under ``-s``; a failure names its seed, which ``SOAK_SEED`` replays;
``SOAK_NO_SHRINK`` reports a failure as found, unshrunk; ``SOAK_CONCURRENT_WEIGHT=N``
makes the commands on one VM sent together come up N times as often as any other step
(default 1). A run longer
than the suite's 120 s per test needs pytest's ``--timeout`` (``--timeout 0``: none), e.g.
``SOAK_EXAMPLES=50 SOAK_STEPS=40 pytest -s --timeout 0 tests/e2e/test_soak.py``, on the
emulator unless ``SOAK_BACKEND=wsman-https-basic`` (or another kind) says otherwise;
``SOAK_CALL_S`` and ``SOAK_JOB_S`` give each host call and job that many seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import random
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, Phase, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from hyperv_agent.cim import wql
from hyperv_agent.cloudstack import codec, names
from hyperv_agent.config import AgentConfig
from hyperv_agent.emulator import traffic, vhd
from hyperv_agent.emulator.config import LatencyModel
from hyperv_agent.emulator.portacl import Packet
from hyperv_agent.service import build_agent, run_agent
from hyperv_agent.winrm_face import RunningFace
from tests.e2e import soak_kit as kit
from tests.e2e.conftest import API, BACKENDS, Running, client_context, winrm_host
from tests.e2e.soak_kit import HOSTS, MIB, RULES, SMB, Nic, Vm, Volume
from tests.ports import free_port

EXAMPLES = int(os.environ.get("SOAK_EXAMPLES", "5"))
#: How each agent reaches its emulated host, one run each: in its own process
#: ("emulator"), or, agentless, over the WinRM face of that host (a wsman kind of the e2e
#: conftest's BACKENDS). SOAK_BACKEND's; else the bounded run runs on the emulator and over
#: HTTP with NTLM, a longer one (SOAK_EXAMPLES) on the emulator.
SOAK_BACKENDS = ((os.environ["SOAK_BACKEND"],) if "SOAK_BACKEND" in os.environ else
                 ("emulator",) if "SOAK_EXAMPLES" in os.environ else
                 ("emulator", "wsman-http-ntlm"))
assert set(SOAK_BACKENDS) <= set(BACKENDS), f"SOAK_BACKEND: one of {BACKENDS}"
#: The seed of the sequences drawn: SOAK_SEED's, else a fixed one in CI and a random one
#: (printed) when SOAK_EXAMPLES asks for a longer run. The fixed one is chosen to reach
#: every kind of step in REACHED (20_422, the seed before, never drew ``contend``).
SEED = int(os.environ["SOAK_SEED"]) if "SOAK_SEED" in os.environ else (
    None if "SOAK_EXAMPLES" in os.environ else 2)
#: The steps of the bounded run (no SOAK_EXAMPLES) that must each have run at least once:
#: a seed that draws none of them checks nothing of what they send, and passes.
REACHED = ("(batch sent together)", "(contended batch)", "(agent restarted)")
STEPS = int(os.environ.get("SOAK_STEPS", "20"))
DATA_SEQS = (1, 2, 4, 5)  # device ids the MS gives data volumes (3 is the CD)
MAX_VMS = 4
MAX_IDLE_VOLUMES = 4
MAX_RESTARTS = 2  # per sequence: each costs a second, and is as likely as any other rule
COMMANDS = [0]  # commands sent over all examples (printed with -s when SOAK_EXAMPLES is set)
WSMAN_REQUESTS = [0]  # WS-Management requests the hosts' WinRM faces answered (likewise)
TALLY: dict[tuple[str, bool], int] = {}  # (command, result) -> how many
PROVISIONING = ("THIN", "SPARSE", "FAT")
PUBLIC_VLANS = (300, 301, 302)
TOO_LARGE_MB = 12 * 1024  # more memory than a host has (soak_kit.host_config)
#: What ``contend`` sends on one VM and its files at once.
CONTENDED = ("start", "stop", "reboot", "attach", "dettach", "drive+", "drive-", "delete",
             "copy", "report", "check", "stats", "volstats")
CONTENDED_WITHIN = 20  # seconds: a batch not answered by then waits for itself
#: How many times as often as any other rule ``contend`` comes up: 1 in CI, more when
#: SOAK_CONCURRENT_WEIGHT asks a run to hunt in the commands sent together on one VM.
CONCURRENT_WEIGHT = max(1, int(os.environ.get("SOAK_CONCURRENT_WEIGHT", "1")))
#: What each host's calls and jobs take: none in CI; SOAK_CALL_S and SOAK_JOB_S (seconds)
#: make a run's hosts as slow as real ones, so commands sent together overlap longer.
LATENCY = LatencyModel(call_s=float(os.environ.get("SOAK_CALL_S", "0")),
                       job_s=float(os.environ.get("SOAK_JOB_S", "0")))


@contextlib.asynccontextmanager
async def served(config: AgentConfig, face: RunningFace | None = None) -> AsyncIterator[Running]:
    """The agent as ``hyperv-agent serve`` runs it (``run_agent``: what an earlier run
    left is cleared first), answering on ``config``'s listen address (driving its host
    through ``face``, when there is one); stopped as SIGTERM stops it, giving the commands
    in flight their answers."""
    agent = build_agent(config)
    assert (agent.emulator is None) is (face is not None), config.agent.backend  # agentless
    stop = asyncio.Event()
    serving = asyncio.create_task(run_agent(agent, stop))
    connector = aiohttp.TCPConnector(ssl=client_context(), force_close=True)
    url = f"https://{config.agent.listen}"
    async with aiohttp.ClientSession(connector=connector) as session:
        try:
            for _ in range(600):
                assert not serving.done(), serving.result()
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(url + API.rstrip("/")) as reply:
                        if reply.status == 200:
                            break
                await asyncio.sleep(0.05)
            yield Running(agent, url, session, face)
        finally:  # the session stays open until the answers in flight are read
            stop.set()
            await serving


class Soak(RuleBasedStateMachine):
    backend = "emulator"  # of SOAK_BACKENDS: how the agents reach their hosts

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="soak-"))
        self.loop = asyncio.new_event_loop()
        self.agents: dict[str, Running] = {}
        self.stacks: dict[str, contextlib.AsyncExitStack] = {}
        self.configs: dict[str, AgentConfig] = {}
        self.faces: dict[str, RunningFace] = {}  # the hosts' WinRM faces (SOAK_BACKEND)
        self.faces_stack = contextlib.AsyncExitStack()  # kept across agent restarts
        self.templates: dict[str, str] = {}  # pool -> the template's file name there
        self.volumes: dict[str, Volume] = {}
        self.vms: dict[str, Vm] = {}
        self.digests: dict[str, str | None] = {}  # volume uuid -> file digest when idle
        self.numbers = iter(range(10, 10_000))
        self.macs = iter(range(1, 10_000))
        self.restarts = 0
        self.made_templates: list[tuple[str, str]] = []  # (pool, file) of templates made

    # --- plumbing ---------------------------------------------------------------------

    def run(self, work: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(work, 60))

    def ask(self, host: str, fqcn: str, body: object) -> dict[str, Any]:
        return dict(self.run(self.call(host, fqcn, body)))

    def succeeds(self, host: str, fqcn: str, body: object) -> dict[str, Any]:
        return dict(self.run(self.ok(host, fqcn, body)))

    def fails(self, host: str, fqcn: str, body: object) -> str:
        return str(self.run(self.refused(host, fqcn, body)))

    async def call(self, host: str, fqcn: str, body: object) -> dict[str, Any]:
        """The answer's fields, checked to be of ``fqcn``'s own class and well formed."""
        COMMANDS[0] += 1
        key, fields = await self.agents[host].answer(fqcn, body)
        assert key == codec.answer_class(fqcn).FQCN, (fqcn, key, fields)
        tally = (fqcn.rsplit(".", 1)[1], bool(fields["result"]))
        TALLY[tally] = TALLY.get(tally, 0) + 1
        assert isinstance(fields["result"], bool), fields
        if not fields["result"]:
            assert isinstance(fields.get("details"), str) and fields["details"], fields
            assert "internal error" not in fields["details"], fields
        return dict(fields)

    async def ok(self, host: str, fqcn: str, body: object) -> dict[str, Any]:
        fields = await self.call(host, fqcn, body)
        assert fields["result"] is True, (host, fqcn, fields.get("details"))
        return fields

    async def refused(self, host: str, fqcn: str, body: object) -> str:
        fields = await self.call(host, fqcn, body)
        assert fields["result"] is False, (host, fqcn, fields)
        return str(fields["details"])

    def pool_folder(self, pool: str) -> Path:
        if pool == SMB:
            return self.folder / "primary"
        folder: Path = self.agents[pool].emulator.host.paths.local(kit.LOCAL_PATH)
        return folder

    def file_of(self, volume: Volume) -> Path:
        name = volume.path if volume.path.endswith((".vhdx", ".vhd")) else f"{volume.path}.vhdx"
        return self.pool_folder(volume.pool) / name

    def reaches(self, host: str, volume: Volume) -> bool:
        return volume.pool in (SMB, host)

    def running(self, host: str | None = None) -> list[Vm]:
        return [vm for vm in self.vms.values()
                if vm.host is not None and (host is None or vm.host == host)]

    def idle_data(self) -> list[Volume]:
        return [v for v in self.volumes.values() if not v.root and v.vm is None]

    def new_volume(self, pool: str, size: int, root: bool) -> Volume:
        number = next(self.numbers)  # deterministic: a draw never depends on chance
        return Volume(f"{number:08x}-5eed-4c0a-8d15-{number:012x}", pool, size, root)

    # --- set-up and tear-down -----------------------------------------------------------

    def serve(self, host: str) -> None:
        stack = self.stacks[host] = contextlib.AsyncExitStack()
        self.agents[host] = self.run(stack.enter_async_context(
            served(self.configs[host], self.faces.get(host))))

    @initialize(again=st.tuples(st.booleans(), st.booleans(), st.booleans()))
    def hosts(self, again: tuple[bool, bool, bool]) -> None:
        """Both hosts, each connected as the MS connects it (its StartupCommand names its
        local pool's uuid, which later commands name the pool by) and with the SMB pool,
        and the template copied into the three
        pools (``again``: and the copy sent again, the MS's retry after a lost answer)."""
        kit.image_store(self.folder)
        for name in HOSTS:
            self.configs[name] = kit.host_config(
                self.folder, name, f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}")
            if self.backend != "emulator":  # the host served over WinRM, the agent
                self.faces[name], self.configs[name] = self.run(  # driving it
                    self.faces_stack.enter_async_context(
                        winrm_host(self.configs[name], self.backend)))
            self.serve(name)
            if LATENCY.enabled:
                emulated = self.agents[name].emulator.host
                emulated.config = dataclasses.replace(emulated.config, latency=LATENCY)
            status, reply = self.run(self.agents[name].post(names.STARTUP_COMMAND,
                                                            kit.startup_body(name)))
            assert status == 200 and any(  # the local pool, by store()'s uuid
                names.STARTUP_STORAGE_COMMAND in entry for entry in reply), reply
            self.pool_folder(name).mkdir(parents=True, exist_ok=True)
            self.succeeds(name, names.MODIFY_STORAGE_POOL_COMMAND, kit.smb_pool_body())
        pools = (("HV-A", "HV-A"), ("HV-B", "HV-B"), (SMB, "HV-A"))
        for (pool, host), twice in zip(pools, again, strict=True):
            for _ in range(2 if twice else 1):
                answer = self.succeeds(host, names.COPY_COMMAND, kit.template_copy_body(pool))
                self.templates[pool] = answer["newData"][kit.TEMPLATE_TO]["path"]
                assert self.templates[pool] == kit.TEMPLATE_UUID, answer

    def teardown(self) -> None:
        try:
            try:
                for stack in self.stacks.values():
                    self.run(stack.aclose())
            finally:  # the hosts after their agents
                WSMAN_REQUESTS[0] += sum(f.service.requests for f in self.faces.values())
                self.run(self.faces_stack.aclose())
        finally:
            self.loop.close()
            shutil.rmtree(self.folder, ignore_errors=True)

    # --- volumes ------------------------------------------------------------------------

    @precondition(lambda self: len(self.idle_data()) < MAX_IDLE_VOLUMES)
    @rule(pool=st.sampled_from([*HOSTS, SMB]), size_mib=st.sampled_from([32, 64, 100]),
          to=st.sampled_from(list(HOSTS)), provisioning=st.sampled_from(PROVISIONING),
          again=st.booleans())
    def create_volume(self, pool: str, size_mib: int, to: str, provisioning: str,
                      again: bool) -> None:
        """A data volume; ``again``: the MS's retry after a lost answer, too."""
        host = pool if pool != SMB else to
        volume = self.new_volume(pool, size_mib * MIB, root=False)
        volume.provisioning = provisioning
        self.run(self._create(host, volume, 2 if again else 1))

    async def _create(self, host: str, volume: Volume, times: int) -> None:
        for _ in range(times):
            answer = await self.ok(host, names.CREATE_OBJECT_COMMAND, kit.create_body(volume))
            volume.path = answer["data"][kit.VOLUME_TO]["path"]
            assert answer["data"][kit.VOLUME_TO]["size"] == volume.size, answer
        self.volumes[volume.uuid] = volume

    @precondition(lambda self: bool(self.idle_data()))
    @rule(data=st.data())
    def delete_idle_volume(self, data: st.DataObject) -> None:
        volume = data.draw(st.sampled_from(self.idle_data()))
        host = volume.pool if volume.pool != SMB else data.draw(st.sampled_from(list(HOSTS)))
        for _ in range(data.draw(st.integers(1, 2))):  # and the MS's retry
            self.succeeds(host, names.DELETE_COMMAND, kit.delete_body(volume))
        assert not self.file_of(volume).exists()
        del self.volumes[volume.uuid]
        self.digests.pop(volume.uuid, None)

    @precondition(lambda self: bool(self.running()))
    @rule(data=st.data())
    def delete_volume_of_running_vm(self, data: st.DataObject) -> None:
        vm = data.draw(st.sampled_from(sorted(self.running(), key=lambda v: v.name)))
        volume = data.draw(st.sampled_from([vm.root, *vm.data]))
        assert vm.host is not None
        self.fails(vm.host, names.DELETE_COMMAND, kit.delete_body(volume))
        assert self.file_of(volume).exists()

    @precondition(lambda self: bool(self.volumes))
    @rule(data=st.data(), grow=st.booleans())
    def resize(self, data: st.DataObject, grow: bool) -> None:
        volume = data.draw(st.sampled_from(sorted(self.volumes.values(), key=lambda v: v.uuid)))
        vm = self.vms[volume.vm] if volume.vm else None
        host = vm.host if vm is not None and vm.host else (
            volume.pool if volume.pool != SMB else data.draw(st.sampled_from(list(HOSTS))))
        new_size = volume.size + 32 * MIB if grow else volume.size - 16 * MIB
        body = kit.resize_body(volume, new_size, vm.name if vm else None)
        # A running generation 1 VM's root is on IDE, which Hyper-V does not resize while
        # it runs (a generation 2 VM's is on SCSI).
        if not grow or (volume.root and vm is not None and vm.host is not None
                        and not vm.router):
            self.fails(host, names.RESIZE_VOLUME_COMMAND, body)
            return
        answer = self.succeeds(host, names.RESIZE_VOLUME_COMMAND, body)
        assert answer["newSize"] == new_size, answer
        volume.size = new_size
        self.digests[volume.uuid] = None

    # --- VMs ----------------------------------------------------------------------------

    @precondition(lambda self: len(self.vms) < MAX_VMS)
    @rule(host=st.sampled_from(list(HOSTS)), on_smb=st.booleans(), iso=st.booleans(),
          kind=st.sampled_from(["user", "router", "security groups"]),
          provisioning=st.sampled_from(PROVISIONING), data=st.data())
    def deploy(self, host: str, on_smb: bool, iso: bool, kind: str, provisioning: str,
               data: st.DataObject) -> None:
        """A VM deployed: its root volume copied from the template, then started. A
        ``router`` is of generation 2 (NICs plugged while it runs); a VM on a
        ``security groups`` network gets rules."""
        vm = self.new_vm(SMB if on_smb else host, iso, kind, provisioning)
        spare = [v for v in self.idle_data() if self.reaches(host, v)]
        if data.draw(st.booleans()) and spare:
            self._hold(vm, data.draw(st.sampled_from(sorted(spare, key=lambda v: v.uuid))))
        self.run(self._deploy(host, vm))

    def new_vm(self, pool: str, iso: bool, kind: str, provisioning: str) -> Vm:
        """A VM the MS has made, not yet deployed: its root volume to be copied into
        ``pool``."""
        number = next(self.numbers)
        name = f"i-2-{number}-VM"
        root = self.new_volume(pool, 64 * MIB, root=True)
        root.provisioning = provisioning
        root.vm = name
        vm = Vm(name, number, root, iso=iso, router=kind == "router",
                security_groups=kind == "security groups")
        self.vms[name] = vm
        return vm

    async def _deploy(self, host: str, vm: Vm, template: str | None = None,
                      cloned: asyncio.Event | None = None) -> None:
        """``vm``'s root volume copied from ``template`` (by default the template of its
        pool), ``cloned`` set, then ``vm`` started on ``host``."""
        root = vm.root
        answer = await self.ok(host, names.COPY_COMMAND, kit.root_copy_body(
            template or self.templates[root.pool], root, vm.name))
        root.path = answer["newData"][kit.VOLUME_TO]["path"]
        root.clone = root.provisioning == "THIN"  # SPARSE and FAT roots stand alone
        self.volumes[root.uuid] = root
        if cloned is not None:
            cloned.set()
        await self.ok(host, names.START_COMMAND, kit.start_body(vm))
        vm.host = host

    def _hold(self, vm: Vm, volume: Volume) -> None:
        used = {v.device_id for v in vm.data}
        volume.device_id = next(seq for seq in DATA_SEQS if seq not in used)
        volume.vm = vm.name
        vm.data.append(volume)

    @precondition(lambda self: any(vm.host is None for vm in self.vms.values()))
    @rule(data=st.data(), host=st.sampled_from(list(HOSTS)))
    def start_stopped(self, data: st.DataObject, host: str) -> None:
        vm = data.draw(st.sampled_from(sorted(
            (v for v in self.vms.values() if v.host is None), key=lambda v: v.name)))
        self.run(self._start(vm, host))

    async def _start(self, vm: Vm, host: str) -> None:
        """StartCommand of stopped ``vm`` on ``host``: refused when a volume is in the
        other host's local pool."""
        if all(self.reaches(host, v) for v in (vm.root, *vm.data)):
            await self.ok(host, names.START_COMMAND, kit.start_body(vm))
            vm.host = host
        else:
            await self.refused(host, names.START_COMMAND, kit.start_body(vm))

    @precondition(lambda self: bool(self.running()))
    @rule(data=st.data(), again=st.booleans(), check_first=st.booleans())
    def stop(self, data: st.DataObject, again: bool, check_first: bool) -> None:
        """StopCommand (``again``: and its retry); ``check_first``: after one with
        checkBeforeCleanup, which leaves the running VM alone."""
        vm = data.draw(st.sampled_from(sorted(self.running(), key=lambda v: v.name)))
        self.run(self._stop(vm, again, check_first))

    async def _stop(self, vm: Vm, again: bool, check_first: bool) -> None:
        assert vm.host is not None
        if check_first:
            await self.refused(vm.host, names.STOP_COMMAND,
                               kit.stop_body(vm.name) | {"checkBeforeCleanup": True})
        for _ in range(2 if again else 1):
            await self.ok(vm.host, names.STOP_COMMAND, kit.stop_body(vm.name))
        vm.host = None
        vm.seq, vm.rules = 0, frozenset()  # the MS sends a started VM its rules anew

    @precondition(lambda self: bool(self.vms))
    @rule(data=st.data(), host=st.sampled_from(list(HOSTS)))
    def stop_where_it_is_not(self, data: st.DataObject, host: str) -> None:
        """The MS's clean-up StopCommand to a host the VM does not run on: nothing done."""
        vm = data.draw(st.sampled_from(sorted(self.vms.values(), key=lambda v: v.name)))
        if vm.host == host:
            return
        self.succeeds(host, names.STOP_COMMAND, kit.stop_body(vm.name))

    @precondition(lambda self: any(vm.host is None for vm in self.vms.values()))
    @rule(data=st.data())
    def expunge(self, data: st.DataObject) -> None:
        """A stopped VM destroyed: its root volume deleted, its data volumes detached."""
        vm = data.draw(st.sampled_from(sorted(
            (v for v in self.vms.values() if v.host is None), key=lambda v: v.name)))
        host = vm.root.pool if vm.root.pool != SMB else data.draw(st.sampled_from(list(HOSTS)))
        self.succeeds(host, names.DELETE_COMMAND, kit.delete_body(vm.root))
        assert not self.file_of(vm.root).exists()
        del self.volumes[vm.root.uuid]
        self.digests.pop(vm.root.uuid, None)
        for volume in vm.data:
            volume.vm = None
        del self.vms[vm.name]

    @precondition(lambda self: bool(self.vms))
    @rule(data=st.data(), host=st.sampled_from(list(HOSTS)))
    def reboot(self, data: st.DataObject, host: str) -> None:
        vm = data.draw(st.sampled_from(sorted(self.vms.values(), key=lambda v: v.name)))
        if vm.host == host:
            self.succeeds(host, names.REBOOT_COMMAND, kit.vm_body(vm.name))
        else:
            self.fails(host, names.REBOOT_COMMAND, kit.vm_body(vm.name))

    @precondition(lambda self: bool(self.vms))
    @rule(data=st.data(), host=st.sampled_from(list(HOSTS)))
    def check(self, data: st.DataObject, host: str) -> None:
        vm = data.draw(st.sampled_from(sorted(self.vms.values(), key=lambda v: v.name)))
        if vm.host == host:
            answer = self.succeeds(host, names.CHECK_VIRTUAL_MACHINE_COMMAND,
                                   kit.vm_body(vm.name))
            assert answer["state"] == "PowerOn", answer
        else:
            self.fails(host, names.CHECK_VIRTUAL_MACHINE_COMMAND, kit.vm_body(vm.name))

    @precondition(lambda self: bool(self.vms))
    @rule(host=st.sampled_from(list(HOSTS)))
    def stats(self, host: str) -> None:
        asked = sorted(self.vms)
        answer = self.succeeds(host, names.GET_VM_STATS_COMMAND, kit.stats_body(asked, host))
        assert set(answer["vmStatsMap"] or {}) == {vm.name for vm in self.running(host)}, answer

    # --- attach and detach --------------------------------------------------------------

    @precondition(lambda self: bool(self.running()) and bool(self.idle_data()))
    @rule(data=st.data())
    def attach(self, data: st.DataObject) -> None:
        vm = data.draw(st.sampled_from(sorted(self.running(), key=lambda v: v.name)))
        volume = data.draw(st.sampled_from(sorted(self.idle_data(), key=lambda v: v.uuid)))
        assert vm.host is not None
        if len(vm.data) == len(DATA_SEQS):
            return
        self.run(self._attach(vm, volume, data.draw(st.integers(1, 2))))  # and the retry

    async def _attach(self, vm: Vm, volume: Volume, times: int) -> None:
        """AttachCommand of idle ``volume`` to running ``vm`` (``times``: and the MS's
        retry): refused when the volume is in the other host's local pool. The model
        holds it from the start, so no other command of a batch picks it."""
        assert vm.host is not None
        used = {v.device_id for v in vm.data}
        volume.device_id = next(seq for seq in DATA_SEQS if seq not in used)
        body = kit.attach_body(vm.name, kit.volume_disk(volume, vm.name))
        if not self.reaches(vm.host, volume):
            await self.refused(vm.host, names.ATTACH_COMMAND, body)
            return
        self._hold(vm, volume)
        self.digests[volume.uuid] = None
        for _ in range(times):
            await self.ok(vm.host, names.ATTACH_COMMAND, body)

    @precondition(lambda self: any(vm.data for vm in self.running()))
    @rule(data=st.data())
    def dettach(self, data: st.DataObject) -> None:
        vm = data.draw(st.sampled_from(sorted((v for v in self.running() if v.data),
                                              key=lambda v: v.name)))
        volume = data.draw(st.sampled_from(vm.data))
        assert vm.host is not None
        self.succeeds(vm.host, names.DETTACH_COMMAND,
                      kit.dettach_body(vm.name, kit.volume_disk(volume, vm.name)))
        vm.data.remove(volume)
        volume.vm = None
        self.digests[volume.uuid] = None

    @precondition(lambda self: bool(self.running()))
    @rule(data=st.data(), attach=st.booleans())
    def iso(self, data: st.DataObject, attach: bool) -> None:
        vm = data.draw(st.sampled_from(sorted(self.running(), key=lambda v: v.name)))
        assert vm.host is not None
        fqcn = names.ATTACH_COMMAND if attach else names.DETTACH_COMMAND
        body = (kit.attach_body if attach else kit.dettach_body)(vm.name, kit.iso_disk(True))
        for _ in range(data.draw(st.integers(1, 2))):  # and the MS's retry
            self.succeeds(vm.host, fqcn, body)
        vm.iso = attach

    # --- migration ----------------------------------------------------------------------

    @precondition(lambda self: bool(self.running()))
    @rule(data=st.data())
    def migrate(self, data: st.DataObject) -> None:
        vm = data.draw(st.sampled_from(sorted(self.running(), key=lambda v: v.name)))
        source = vm.host
        assert source is not None
        destination = next(name for name in HOSTS if name != source)
        shared = all(v.pool == SMB for v in (vm.root, *vm.data))
        prepared = self.ask(destination, names.PREPARE_FOR_MIGRATION_COMMAND,
                            kit.prepare_body(vm))
        assert prepared["result"] is shared, prepared
        if not shared:
            assert prepared["details"], prepared
            self.fails(source, names.MIGRATE_COMMAND, kit.migrate_body(vm, destination))
            return
        self.succeeds(source, names.MIGRATE_COMMAND, kit.migrate_body(vm, destination))
        vm.host = destination

    # --- the agent restarted ------------------------------------------------------------

    @precondition(lambda self: self.restarts < MAX_RESTARTS and bool(self.running()))
    @rule(host=st.sampled_from(list(HOSTS)))
    def restart(self, host: str) -> None:
        """The agent stopped and started again on its state directory, as an upgrade or a
        service restart between two pings does: its VMs go on running, the MS sends no
        StartupCommand, and every later answer is as before."""
        self.restarts += 1
        self.run(self.stacks[host].aclose())
        self.serve(host)
        TALLY[("(agent restarted)", True)] = TALLY.get(("(agent restarted)", True), 0) + 1

    @precondition(lambda self: self.restarts < MAX_RESTARTS and any(
        vm.host is None and all(v.pool in (SMB, "HV-A") for v in (vm.root, *vm.data))
        for vm in self.vms.values()))
    @rule(data=st.data())
    def restart_while_starting(self, data: st.DataObject) -> None:
        """The agent stopped (SIGTERM) while it starts a VM on a slow host: the StartCommand
        in flight is answered before it stops, and the VM runs."""
        host = "HV-A"
        vm = data.draw(st.sampled_from(sorted(
            (v for v in self.vms.values() if v.host is None
             and all(self.reaches(host, d) for d in (v.root, *v.data))),
            key=lambda v: v.name)))
        self.restarts += 1
        agent = self.agents[host]
        emulated = agent.emulator.host
        quick = emulated.config
        emulated.config = dataclasses.replace(quick, latency=LatencyModel(job_s=0.05))

        async def stopped_mid_start() -> tuple[str, dict[str, Any]]:
            start = asyncio.create_task(agent.answer(names.START_COMMAND, kit.start_body(vm)))
            while not agent.agent.dispatch.in_flight and not start.done():
                await asyncio.sleep(0.005)
            await self.stacks[host].aclose()
            return await start

        try:
            key, fields = self.run(stopped_mid_start())
        finally:
            emulated.config = quick
        COMMANDS[0] += 1
        tally = ("StartCommand (agent stopped meanwhile)", bool(fields["result"]))
        TALLY[tally] = TALLY.get(tally, 0) + 1
        assert (key, fields["result"]) == (names.START_ANSWER, True), fields
        vm.host = host
        self.serve(host)

    # --- security groups ------------------------------------------------------------------

    @precondition(lambda self: any(vm.security_groups for vm in self.running()))
    @rule(data=st.data(), allowed=st.frozensets(st.sampled_from(sorted(RULES))),
          how=st.sampled_from(["new", "new", "again", "older"]))
    def security_group_rules(self, data: st.DataObject, allowed: frozenset[str],
                             how: str) -> None:
        """SecurityGroupRulesCmd: a new ruleset; ``again``: the last one re-sent (the MS
        re-sends a VM's rules after it moved); ``older``: one of an older seqNum arriving
        late, answered with success and ignored, also by an agent restarted since the newer
        one or on the host the VM moved to (the port records the seqNum it holds)."""
        vm = data.draw(st.sampled_from(sorted(
            (v for v in self.running() if v.security_groups), key=lambda v: v.name)))
        assert vm.host is not None
        if how == "again" and vm.seq:
            self.succeeds(vm.host, names.SECURITY_GROUP_RULES_CMD,
                          kit.rules_body(vm, vm.seq, vm.rules))
            return
        if how == "older" and vm.seq > 1:
            self.succeeds(vm.host, names.SECURITY_GROUP_RULES_CMD,
                          kit.rules_body(vm, vm.seq - 1, allowed))
            return
        vm.seq += 1
        self.succeeds(vm.host, names.SECURITY_GROUP_RULES_CMD,
                      kit.rules_body(vm, vm.seq, allowed))
        vm.rules = allowed

    # --- NICs -----------------------------------------------------------------------------

    @precondition(lambda self: bool(self.running()))
    @rule(data=st.data(), vlan=st.sampled_from(PUBLIC_VLANS), again=st.booleans())
    def plug_nic(self, data: st.DataObject, vlan: int, again: bool) -> None:
        """PlugNicCommand of a new public NIC (``again``: and its retry): a generation 2
        VM takes it while it runs, a generation 1 one is refused, nothing changed."""
        vm = data.draw(st.sampled_from(sorted(self.running(), key=lambda v: v.name)))
        assert vm.host is not None
        if len(vm.nics) >= 4:
            return
        number = next(self.macs)
        nic = Nic(f"06:00:4c:00:{number >> 8:02x}:{number & 0xff:02x}", vlan)
        body = kit.plug_body(vm, nic, len(vm.nics))
        if not vm.router:
            self.fails(vm.host, names.PLUG_NIC_COMMAND, body)
            return
        for _ in range(2 if again else 1):
            self.succeeds(vm.host, names.PLUG_NIC_COMMAND, body)
        vm.nics.append(nic)

    @precondition(lambda self: any(len(vm.nics) > 1 for vm in self.running()))
    @rule(data=st.data())
    def unplug_nic(self, data: st.DataObject) -> None:
        vm = data.draw(st.sampled_from(sorted(
            (v for v in self.running() if len(v.nics) > 1), key=lambda v: v.name)))
        assert vm.host is not None
        index = data.draw(st.integers(1, len(vm.nics) - 1))
        self.succeeds(vm.host, names.UNPLUG_NIC_COMMAND,
                      kit.unplug_body(vm, vm.nics[index], index))
        del vm.nics[index]

    @precondition(lambda self: any(len(vm.nics) > 1 for vm in self.running()))
    @rule(data=st.data(), vlan=st.sampled_from(PUBLIC_VLANS))
    def modify_nic(self, data: st.DataObject, vlan: int) -> None:
        """ModifyVmNicConfigCommand by MAC: a router's public NIC moved to another VLAN."""
        vm = data.draw(st.sampled_from(sorted(
            (v for v in self.running() if len(v.nics) > 1), key=lambda v: v.name)))
        assert vm.host is not None
        nic = data.draw(st.sampled_from(vm.nics[1:]))
        nic.vlan = vlan
        self.succeeds(vm.host, names.MODIFY_VM_NIC_CONFIG_COMMAND, kit.modify_nic_body(vm, nic))

    # --- storage migration ----------------------------------------------------------------

    @precondition(lambda self: bool(self.volumes))
    @rule(data=st.data())
    def migrate_volume(self, data: st.DataObject) -> None:
        """MigrateVolumeCommand between a host's local pool and the SMB pool: a running
        VM's disk by Hyper-V's storage migration, another volume copied (a linked clone
        merged with its template, standing alone). A running VM's linked clone is refused:
        moved as it is, it would still stand on the template in its old pool."""
        volume = data.draw(st.sampled_from(sorted(self.volumes.values(), key=lambda v: v.uuid)))
        vm = self.vms.get(volume.vm or "")
        running = vm is not None and vm.host is not None
        if vm is not None and vm.host is not None:
            host = vm.host
        else:
            host = volume.pool if volume.pool != SMB else data.draw(st.sampled_from(list(HOSTS)))
        if not self.reaches(host, volume):
            return
        target = SMB if volume.pool != SMB else host
        body = kit.migrate_volume_body(volume, target, vm.name if vm is not None else None)
        if running and volume.clone:
            details = self.fails(host, names.MIGRATE_VOLUME_COMMAND, body)
            assert "is a linked clone of" in details and "stop the VM" in details, details
            assert self.file_of(volume).exists()
            return
        answer = self.succeeds(host, names.MIGRATE_VOLUME_COMMAND, body)
        assert answer["volumePath"] == volume.path, answer
        assert not self.file_of(volume).exists()
        volume.pool = target
        self.digests[volume.uuid] = None
        if not running:
            volume.clone = False
        assert (vhd.read_info(self.file_of(volume)).parent_path is not None) == volume.clone, \
            volume

    @precondition(lambda self: any(
        any(v.pool != SMB for v in (vm.root, *vm.data)) for vm in self.running()))
    @rule(data=st.data())
    def migrate_with_storage(self, data: st.DataObject) -> None:
        """MigrateWithStorageCommand: a VM with disks on its host's local pool moved with
        them to the other host's local pool. A VM with a linked clone among them is
        refused, nothing moved: moved as it is, the clone would name a template in the
        destination's local pool, which the source cannot see."""
        vm = data.draw(st.sampled_from(sorted(
            (v for v in self.running() if any(d.pool != SMB for d in (v.root, *v.data))),
            key=lambda v: v.name)))
        source = vm.host
        assert source is not None
        destination = next(name for name in HOSTS if name != source)
        body = kit.with_storage_body(vm, destination)
        moved = [v for v in (vm.root, *vm.data) if v.pool != SMB]
        if any(v.clone for v in moved):
            details = self.fails(source, names.MIGRATE_WITH_STORAGE_COMMAND, body)
            assert "is a linked clone of" in details and "stop the VM" in details, details
            assert all(self.file_of(v).exists() for v in moved)
            return
        answer = self.succeeds(source, names.MIGRATE_WITH_STORAGE_COMMAND, body)
        assert sorted(t["path"] for t in answer["volumeTos"]) == sorted(v.path for v in moved)
        for volume in moved:
            volume.pool = destination
        vm.host = destination

    # --- starts that must fail --------------------------------------------------------------

    @precondition(lambda self: any(vm.host is None for vm in self.vms.values()))
    @rule(data=st.data(), host=st.sampled_from(list(HOSTS)))
    def start_too_large(self, data: st.DataObject, host: str) -> None:
        """A VM with more memory than the host has: the StartCommand fails and leaves no
        VM behind."""
        vm = data.draw(st.sampled_from(sorted(
            (v for v in self.vms.values() if v.host is None), key=lambda v: v.name)))
        vm.memory_mb = TOO_LARGE_MB
        try:
            self.fails(host, names.START_COMMAND, kit.start_body(vm))
        finally:
            vm.memory_mb = 512
        self.fails(host, names.CHECK_VIRTUAL_MACHINE_COMMAND, kit.vm_body(vm.name))

    # --- commands sent together ---------------------------------------------------------

    @rule(data=st.data(), size=st.integers(2, 4))
    def together(self, data: st.DataObject, size: int) -> None:
        """``size`` commands sent at once, as the MS's worker threads send them: VMs
        deployed (two from one template), started and stopped, data volumes made and
        attached to two VMs, each on a VM or volume no other command of the batch
        touches, mixed with read-only commands (state reports, statistics, checks, pings,
        a ScaleVmCommand the host must refuse). Each answer is what it would be alone,
        and the model takes each as the rule sending it alone does."""
        busy: set[str] = set()  # VMs and volumes a command of this batch changes
        sends = [send for _ in range(size) if (send := self._one(data, busy)) is not None]
        TALLY[("(batch sent together)", True)] = TALLY.get(("(batch sent together)", True), 0) + 1
        self.run(self._together(sends))

    def _one(self, data: st.DataObject, busy: set[str]) -> Any:
        """One command (or a deploy's two) of a batch, on what ``busy`` does not hold;
        what it changes is added to ``busy``."""
        free_running = [v for v in self.running() if v.name not in busy]
        free_stopped = [v for v in self.vms.values() if v.host is None
                        and v.name not in busy]
        idle = [v for v in self.idle_data() if v.uuid not in busy]
        kinds = ["read", "read", "create"]
        if len(self.vms) < MAX_VMS:
            kinds.append("deploy")
        if free_stopped:
            kinds.append("start")
        if free_running:
            kinds.append("stop")
        if free_running and idle:
            kinds.append("attach")
        kind = data.draw(st.sampled_from(kinds))
        host = data.draw(st.sampled_from(list(HOSTS)))
        if kind == "read":
            return self._read(data, host, busy)
        if kind == "create":
            pool = data.draw(st.sampled_from([host, SMB]))
            volume = self.new_volume(pool, 32 * MIB, root=False)
            volume.provisioning = data.draw(st.sampled_from(PROVISIONING))
            busy.add(volume.uuid)
            return self._create(host, volume, 1)
        elif kind == "deploy":
            vm = self.new_vm(data.draw(st.sampled_from([host, SMB])), False,
                             data.draw(st.sampled_from(["user", "router"])),
                             data.draw(st.sampled_from(PROVISIONING)))
            busy.add(vm.name)
            return self._deploy(host, vm)
        elif kind == "start":
            vm = data.draw(st.sampled_from(sorted(free_stopped, key=lambda v: v.name)))
            busy.add(vm.name)
            return self._start(vm, host)
        elif kind == "stop":
            vm = data.draw(st.sampled_from(sorted(free_running, key=lambda v: v.name)))
            busy.add(vm.name)
            return self._stop(vm, False, False)
        else:
            vm = data.draw(st.sampled_from(sorted(free_running, key=lambda v: v.name)))
            volume = data.draw(st.sampled_from(sorted(idle, key=lambda v: v.uuid)))
            busy |= {vm.name, volume.uuid}
            return self._attach(vm, volume, 1) if len(vm.data) < len(DATA_SEQS) else None

    @staticmethod
    async def _together(sends: list[Any]) -> None:
        """Every send run to its end, the first failure raised (none left running)."""
        results = await asyncio.gather(*sends, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def _read(self, data: st.DataObject, host: str, busy: set[str]) -> Any:
        """A read-only command to ``host``, its answer checked for the VMs no command of
        the batch changes (``busy``: those that may be in either state)."""
        what = data.draw(st.sampled_from(
            ["report", "stats", "check", "storage", "ping", "scale"]))
        settled = {vm.name for vm in self.running(host) if vm.name not in busy}
        maybe = settled | busy
        vm = data.draw(st.sampled_from(sorted(self.vms.values(), key=lambda v: v.name))
                       ) if self.vms else None
        pool = data.draw(st.sampled_from([host, SMB]))

        async def read() -> None:
            if what == "report":
                status, report = await self.agents[host].post(
                    names.HOST_VM_STATE_REPORT_COMMAND, {})
                assert status == 200, report
                shown = {name: power for entry in report for name, power in entry.items()}
                assert settled <= set(shown) <= maybe, (host, report, settled, busy)
                assert all(shown[name] == "PowerOn" for name in settled), report
            elif what == "stats":
                answer = await self.ok(host, names.GET_VM_STATS_COMMAND,
                                       kit.stats_body(sorted(self.vms), host))
                assert settled <= set(answer["vmStatsMap"] or {}) <= maybe, answer
            elif what == "storage":
                await self.ok(host, names.GET_STORAGE_STATS_COMMAND, kit.storage_stats_body(pool))
            elif what == "ping":
                await self.ok(host, names.PING_ROUTING_COMMAND, kit.ping_body(host))
            elif vm is None:
                return
            elif what == "check":
                fields = await self.call(host, names.CHECK_VIRTUAL_MACHINE_COMMAND,
                                         kit.vm_body(vm.name))
                if vm.name not in busy:
                    assert fields["result"] is (vm.name in settled), fields
            else:  # Hyper-V does not scale a running VM; a stopped one is not on the host
                await self.refused(host, names.SCALE_VM_COMMAND, kit.scale_body(vm, 2, 1024))

        return read()

    @precondition(lambda self: any(vm.host is None for vm in self.vms.values()))
    @rule(data=st.data(), host=st.sampled_from(list(HOSTS)))
    def start_twice(self, data: st.DataObject, host: str) -> None:
        """Two StartCommands of one stopped VM at once (the MS's retry of a start whose
        answer is late): the agent queues commands of one VM (``handlers.locks``) and
        answers a start of a VM that runs with success, so both succeed and the VM runs
        once."""
        vm = data.draw(st.sampled_from(sorted(
            (v for v in self.vms.values() if v.host is None), key=lambda v: v.name)))
        if not all(self.reaches(host, v) for v in (vm.root, *vm.data)):
            return
        body = kit.start_body(vm)
        self.run(self._together([self.ok(host, names.START_COMMAND, body),
                                 self.ok(host, names.START_COMMAND, body)]))
        vm.host = host

    @precondition(lambda self: len(self.vms) < MAX_VMS)
    @rule(host=st.sampled_from(list(HOSTS)), on_smb=st.booleans(),
          provisioning=st.sampled_from(PROVISIONING))
    def evict_while_cloning(self, host: str, on_smb: bool, provisioning: str) -> None:
        """A VM deployed from a pool's template while the MS evicts that template from
        the pool (its storage clean-up racing the deploy). The agent promises
        (``handlers.locks``, ``VolumeHandlers.destroy_legacy``) that an eviction waits for
        the volumes being made from the template and then refuses while a linked clone
        names it: so the deploy always succeeds, and the eviction is either refused, the
        template kept, or done, and then no volume in the pool is a clone of it (the MS
        copies the template again for its next deploy there). The eviction is sent once
        the volume's copy holds the template (on a host slowed so that it is under way)."""
        pool = SMB if on_smb else host
        vm = self.new_vm(pool, False, "user", provisioning)
        template = self.templates[pool]
        running = self.agents[host]
        locks = running.agent.leftovers.start.file_locks
        folder = kit.LOCAL_PATH if pool != SMB else "\\\\10.1.1.1\\primary"
        emulated = running.emulator.host
        quick = emulated.config
        emulated.config = dataclasses.replace(quick, latency=LatencyModel(job_s=0.02))

        async def race() -> dict[str, Any]:
            cloned = asyncio.Event()
            deploy = asyncio.ensure_future(self._deploy(host, vm, cloned=cloned))
            while not locks.busy(f"{folder}\\{template}.vhdx") and not cloned.is_set():
                await asyncio.sleep(0.001)
            evicted = await self.call(host, names.DESTROY_COMMAND,
                                      kit.evict_body(pool, template))
            await deploy
            return evicted

        try:
            evicted = self.run(race())
        finally:
            emulated.config = quick
        kept = (self.pool_folder(pool) / f"{template}.vhdx").is_file()
        assert kept is not evicted["result"], (evicted, kept)
        if not evicted["result"]:
            return
        for volume in self.volumes.values():  # a clone of a template made since may stay
            if volume.pool == pool:
                parent = vhd.read_info(self.file_of(volume)).parent_path
                assert parent is None or template not in parent, (volume, parent)
        answer = self.succeeds(host, names.COPY_COMMAND, kit.template_copy_body(pool))
        assert answer["newData"][kit.TEMPLATE_TO]["path"] == template, answer

    # --- through the image store ----------------------------------------------------------

    @precondition(lambda self: bool(self.idle_data()) or any(
        vm.host is None for vm in self.vms.values()))
    @rule(data=st.data())
    def cold_migrate_volume(self, data: st.DataObject) -> None:
        """A volume no running VM uses moved to another pool through the image store, as
        the MS migrates a volume between pools no one host reaches both of: copied to the
        image store by a host that reaches its pool, copied from there into the other pool
        by a host that reaches that one, and the source deleted."""
        candidates = [*self.idle_data(), *(vm.root for vm in self.vms.values()
                                           if vm.host is None)]
        volume = data.draw(st.sampled_from(sorted(candidates, key=lambda v: v.uuid)))
        target = data.draw(st.sampled_from([p for p in (*HOSTS, SMB) if p != volume.pool]))
        source_host = volume.pool if volume.pool != SMB else data.draw(
            st.sampled_from(list(HOSTS)))
        target_host = target if target != SMB else data.draw(st.sampled_from(list(HOSTS)))
        folder = f"volumes/2/{int(volume.uuid[:8], 16)}"
        out = self.succeeds(source_host, names.COPY_COMMAND,
                            kit.volume_to_image_body(volume, folder))
        staged = out["newData"][kit.VOLUME_TO]["path"]
        assert staged.startswith(folder + "/"), out
        back = self.succeeds(target_host, names.COPY_COMMAND,
                             kit.volume_from_image_body(volume, staged, target))
        self.succeeds(source_host, names.DELETE_COMMAND, kit.delete_body(volume))
        assert not self.file_of(volume).exists()
        (self.folder / "secondary" / staged).unlink()  # the image store's copy, which
        # the MS has the secondary storage VM delete
        volume.pool, volume.path = target, back["newData"][kit.VOLUME_TO]["path"]
        volume.clone = False
        assert vhd.read_info(self.file_of(volume)).parent_path is None, volume
        self.digests[volume.uuid] = None

    @precondition(lambda self: not self.made_templates and len(self.vms) < MAX_VMS and any(
        vm.host is None for vm in self.vms.values()))
    @rule(data=st.data(), host=st.sampled_from(list(HOSTS)), on_smb=st.booleans())
    def template_from_stopped_root(self, data: st.DataObject, host: str, on_smb: bool) -> None:
        """A template made from a stopped VM's root volume on the image store, copied into
        a pool and deployed: a VM started from a root volume cloned from it."""
        vm = data.draw(st.sampled_from(sorted(
            (v for v in self.vms.values() if v.host is None), key=lambda v: v.name)))
        source = vm.root.pool if vm.root.pool != SMB else host
        number = next(self.numbers)
        uuid = f"{number:08x}-7e3a-4c0a-8d15-{number:012x}"
        made = self.succeeds(source, names.COPY_COMMAND,
                             kit.template_from_volume_body(vm.root, number, uuid))
        path = made["newData"][kit.TEMPLATE_TO]["path"]
        assert path == f"template/tmpl/2/{number}/{uuid}.vhdx", made
        pool = SMB if on_smb else host
        copied = self.succeeds(host, names.COPY_COMMAND,
                               kit.template_copy_body(pool, path, uuid))
        name = copied["newData"][kit.TEMPLATE_TO]["path"]
        self.made_templates.append((pool, name))
        new = self.new_vm(pool, False, "user", "THIN")
        self.run(self._deploy(host, new, template=name))

    # --- commands on one VM and its files sent together ---------------------------------

    @precondition(lambda self: bool(self.vms))
    @rule(data=st.data(), kinds=st.lists(st.sampled_from(CONTENDED), min_size=2, max_size=4))
    def contend(self, data: st.DataObject, kinds: list[str]) -> None:
        """Commands on ONE VM and its files at once, as no MS sends them but as its
        worker threads, a retry and a user's API calls may interleave them: a start, stop
        or reboot of the VM beside an attach or detach of its volumes, its config drive
        written or deleted, its volumes deleted or copied to the image store, and the
        reads (state reports, checks, statistics). The order they run in is the agent's
        (its VM and file locks), so the model is not asked for each answer; what must
        hold whatever the order, once all have answered within CONTENDED_WITHIN: no
        answer is an internal error; the VM's and its volumes' statistics are answered
        (what is gone meanwhile left out); no drive names a missing file (unless a failed
        answer said it left it so) nor one outside the pools and the image store; the
        state report and CheckVirtualMachine agree on every VM; and the pools hold no
        aside or temporary file (the invariants). The model then takes what the hosts
        hold: where the VM runs, the volumes its drives hold, what the deletes removed."""
        vm = data.draw(st.sampled_from(sorted(self.vms.values(), key=lambda v: v.name)))
        reaching = [h for h in HOSTS if all(self.reaches(h, v) for v in (vm.root, *vm.data))]
        if vm.host is None and not reaching:
            return
        host = vm.host or data.draw(st.sampled_from(reaching))
        idle = sorted((v for v in self.idle_data() if self.reaches(host, v)),
                      key=lambda v: v.uuid)
        free = [seq for seq in DATA_SEQS if seq not in {v.device_id for v in vm.data}]
        if {"drive+", "drive-"} & set(kinds):  # written first, as the MS writes it
            self.succeeds(host, names.HANDLE_CONFIG_DRIVE_ISO_COMMAND,
                          kit.config_drive_body(vm, True))
            vm.config_drive = True  # a start names it
        attached: dict[str, Volume] = {}  # uuid -> volume an attach of the batch names
        sends: list[Any] = []
        for kind in kinds:
            chosen = None
            if kind == "attach" and idle and (free or attached):
                chosen = data.draw(st.sampled_from(idle))
                if chosen.uuid not in attached:
                    if not free:
                        chosen = next(iter(attached.values()))
                    else:
                        chosen.device_id = free.pop(0)
                attached[chosen.uuid] = chosen
            sends.append(self._contended(kind, vm, host, data, idle, chosen))
        TALLY[("(contended batch)", True)] = TALLY.get(("(contended batch)", True), 0) + 1

        async def together() -> list[tuple[str, Volume | None, dict[str, Any]]]:
            try:
                return list(await asyncio.wait_for(asyncio.gather(*sends), CONTENDED_WITHIN))
            except TimeoutError:
                raise AssertionError(f"{kinds} on {vm.name} did not all answer within "
                                     f"{CONTENDED_WITHIN} s: a deadlock") from None

        answers = self.run(together())
        self._settle(vm, host, answers)

    def _contended(self, kind: str, vm: Vm, host: str, data: st.DataObject,
                   idle: list[Volume], chosen: Volume | None) -> Any:
        """A send of the ``contend`` batch: it returns its kind, the volume it names (if
        any: ``chosen`` for an attach) and its answer's fields (a report's are none)."""
        volume: Volume | None = chosen if kind == "attach" else None
        if kind == "dettach" and vm.data:
            volume = data.draw(st.sampled_from(vm.data))
        elif kind in ("delete", "copy"):
            volume = data.draw(st.sampled_from([vm.root, *vm.data, *idle]))
        elif kind in ("attach", "dettach"):  # none to attach or detach: a check instead
            kind = "check"
        if kind == "report":
            async def report() -> tuple[str, Volume | None, dict[str, Any]]:
                status, shown = await self.agents[host].post(
                    names.HOST_VM_STATE_REPORT_COMMAND, {})
                assert status == 200, shown
                return kind, None, {}
            return report()
        fqcn, body = self._contended_body(kind, vm, host, volume)
        sender = volume.pool if volume is not None and volume.pool != SMB else host

        async def send() -> tuple[str, Volume | None, dict[str, Any]]:
            return kind, volume, await self.call(sender, fqcn, body)
        return send()

    def _contended_body(self, kind: str, vm: Vm, host: str,
                        volume: Volume | None) -> tuple[str, dict[str, Any]]:
        """The command ``kind`` of the ``contend`` batch and its body."""
        if volume is not None:
            if kind == "attach":
                return names.ATTACH_COMMAND, kit.attach_body(
                    vm.name, kit.volume_disk(volume, vm.name))
            if kind == "dettach":
                return names.DETTACH_COMMAND, kit.dettach_body(
                    vm.name, kit.volume_disk(volume, vm.name))
            if kind == "delete":
                return names.DELETE_COMMAND, kit.delete_body(volume)
            return names.COPY_COMMAND, kit.volume_to_image_body(
                volume, f"volumes/2/{next(self.numbers)}")
        Make = Callable[[], dict[str, Any]]
        by_vm: dict[str, tuple[str, Make]] = {
                 "start": (names.START_COMMAND, lambda: kit.start_body(vm)),
                 "stop": (names.STOP_COMMAND, lambda: kit.stop_body(vm.name)),
                 "reboot": (names.REBOOT_COMMAND, lambda: kit.vm_body(vm.name)),
                 "drive+": (names.HANDLE_CONFIG_DRIVE_ISO_COMMAND,
                            lambda: kit.config_drive_body(vm, True)),
                 "drive-": (names.HANDLE_CONFIG_DRIVE_ISO_COMMAND,
                            lambda: kit.config_drive_body(vm, False)),
                 "stats": (names.GET_VM_STATS_COMMAND, lambda: kit.stats_body([vm.name], host)),
                 "volstats": (names.GET_VOLUME_STATS_COMMAND, lambda: kit.volume_stats_body(
                     vm.root.pool, [v for v in (vm.root, *vm.data)
                                    if v.pool == vm.root.pool]))}
        fqcn, make = by_vm.get(kind, (names.CHECK_VIRTUAL_MACHINE_COMMAND,
                                      lambda: kit.vm_body(vm.name)))
        return fqcn, make()

    async def _drives(self, host: str, name: str) -> list[Path] | None:
        """The files the drives of VM ``name`` on ``host`` name, or None: no such VM."""
        emulated = self.agents[host].emulator
        found = await emulated.query(wql.select(
            "Msvm_ComputerSystem", wql.eq("ElementName", name)))
        if not found:
            return None
        (system,) = found
        media = await emulated.query(wql.select(
            "Msvm_StorageAllocationSettingData",
            wql.starts_with("InstanceID", f"Microsoft:{system['Name']}\\")))
        paths = emulated.host.paths
        return [paths.local(m.strings("HostResource")[0]) for m in media
                if m.strings("HostResource") and m.strings("HostResource")[0]]

    def _settle(self, vm: Vm, host: str,
                answers: list[tuple[str, Volume | None, dict[str, Any]]]) -> None:
        """What must hold after a ``contend`` batch, whatever order it ran in; then the
        model takes what the hosts hold."""
        said = " ".join(str(f.get("details") or "") for _, _, f in answers
                        if f and not f.get("result"))
        ok = [(kind, volume) for kind, volume, fields in answers if fields.get("result")]
        for kind, _, fields in answers:  # reads of a registered pool and of VMs by name:
            # a volume or VM gone meanwhile is left out, never a failure
            assert kind not in ("stats", "volstats") or fields["result"], (kind, fields)
        deleted = {v.uuid: v for kind, v in ok if kind == "delete" and v is not None}
        self._staged_copies_only([fields for _, _, fields in answers])
        for volume in deleted.values():
            assert not self.file_of(volume).exists(), (volume, answers)
        for name in sorted(self.vms):
            places = self._vm_agrees(name, said)
            assert len(places) <= 1, (name, places)
            if name != vm.name:
                assert places == ([self.vms[name].host] if self.vms[name].host else []), (
                    name, places)
            else:
                assert set(places) <= {host}, (name, places)
        drives = self.run(self._drives(host, vm.name))
        vm.host = host if drives is not None else None
        if drives is None or any(kind == "stop" for kind, _ in ok):
            vm.seq, vm.rules = 0, frozenset()  # as _stop: a started VM is sent its rules anew
        self._forget(deleted.values())
        for volume in self.volumes.values():
            if volume.vm == vm.name or any(v is volume for _, v, _ in answers):
                self.digests[volume.uuid] = None
        if drives is not None:
            assert vm.root.uuid not in deleted, (vm.root, answers)
            held = {p.resolve() for p in drives}
            data = [v for v in self.volumes.values() if not v.root
                    and self.file_of(v).resolve() in held]
        else:
            gone = {v.uuid for k, v in ok if k == "dettach" and v is not None} | set(deleted)
            data = [v for v in vm.data if v.uuid not in gone]
            data += [v for k, v in ok if k == "attach" and v is not None
                     and v not in data and v.uuid not in gone]
        self._take_data(vm, data)
        self._config_drive_cleared(vm, host, vm.root.uuid in deleted)

    def _forget(self, deleted: Iterable[Volume]) -> None:
        """The model drops the volumes a delete of a ``contend`` batch removed."""
        for volume in deleted:
            self.volumes.pop(volume.uuid, None)
            self.digests.pop(volume.uuid, None)
            for other in self.vms.values():
                if volume in other.data:
                    other.data.remove(volume)

    def _staged_copies_only(self, answers: list[dict[str, Any]]) -> None:
        """The image store's copies the answers name removed (the MS has the secondary
        storage VM delete them): the store holds nothing else but its templates and ISO."""
        store = self.folder / "secondary"
        for fields in answers:
            if fields.get("result") and fields.get("newData"):
                (store / fields["newData"][kit.VOLUME_TO]["path"]).unlink()
        kept = {store / kit.ISO_PATH, *(p for p in (store / "template").rglob("*"))}
        assert {p for p in store.rglob("*") if p.is_file()} <= kept, sorted(store.rglob("*"))

    def _vm_agrees(self, name: str, said: str) -> list[str]:
        """The hosts VM ``name`` is on, each of whose state report and CheckVirtualMachine
        agree on it, its drives naming files in the pools or the image store that are
        there (unless a failed answer, ``said``, named one left missing)."""
        store = self.folder / "secondary"
        pools = [self.pool_folder(p).resolve() for p in (*HOSTS, SMB)] + [store.resolve()]
        places = []
        for host in HOSTS:
            drives = self.run(self._drives(host, name))
            status, report = self.run(self.agents[host].post(
                names.HOST_VM_STATE_REPORT_COMMAND, {}))
            assert status == 200, report
            shown = {n: power for entry in report for n, power in entry.items()}
            checked = self.ask(host, names.CHECK_VIRTUAL_MACHINE_COMMAND, kit.vm_body(name))
            assert (shown.get(name) == "PowerOn") is checked["result"], (
                host, name, report, checked)
            if drives is None:
                continue
            places.append(host)
            for path in drives:
                assert any(path.resolve().is_relative_to(p) for p in pools), (name, path)
                assert path.is_file() or path.name in said, (name, path, said)
        return places

    def _take_data(self, vm: Vm, data: list[Volume]) -> None:
        """The model takes ``data`` as ``vm``'s data volumes, each on a device id of its
        own."""
        for volume in vm.data:
            volume.vm = None
        for volume in data:
            assert volume.vm is None, (volume, vm)
            volume.vm = vm.name
        vm.data = data
        used = [v.device_id for v in data]
        assert len(used) == len(set(used)), data

    def _config_drive_cleared(self, vm: Vm, host: str, expunged: bool) -> None:
        """A VM whose root a delete of the batch removed is gone (expunged); a VM left
        with a config drive is stopped and its config drive deleted, as the MS deletes it
        once the VM stops, so the other rules meet VMs without one."""
        drive = self.pool_folder(vm.root.pool) / kit.config_drive_file(vm)
        if expunged:
            for volume in vm.data:
                volume.vm = None
            del self.vms[vm.name]
        elif drive.is_file() and vm.host is not None:
            self.run(self._stop(vm, False, False))
        if drive.is_file():
            self.succeeds(host, names.HANDLE_CONFIG_DRIVE_ISO_COMMAND,
                          kit.config_drive_body(vm, False))
        assert not drive.exists(), drive
        vm.config_drive = False

    # --- what holds after every step ----------------------------------------------------

    @invariant()
    def reports_show_the_running_vms(self) -> None:
        for host, agent in self.agents.items():
            status, report = self.run(agent.post(names.HOST_VM_STATE_REPORT_COMMAND, {}))
            assert status == 200, report
            shown = {name: power for entry in report for name, power in entry.items()}
            assert shown == {vm.name: "PowerOn" for vm in self.running(host)}, (host, report)

    @invariant()
    def volumes_are_kept_and_pools_hold_nothing_else(self) -> None:
        if not self.agents:
            return
        wanted: dict[Path, set[str]] = {self.pool_folder(p): set() for p in (*HOSTS, SMB)}
        wanted[self.pool_folder(SMB)] |= {f"hb-{ip}" for ip in HOSTS.values()}  # heartbeats
        for pool, template in [*self.templates.items(), *self.made_templates]:
            wanted[self.pool_folder(pool)].add(f"{template}.vhdx" if "." not in template
                                               else template)
        for volume in self.volumes.values():
            path = self.file_of(volume)
            assert path.is_file(), (volume, sorted(p.name for p in path.parent.iterdir()))
            wanted[path.parent].add(path.name)
            vm = self.vms.get(volume.vm or "")
            if vm is not None and vm.host is not None:
                self.digests[volume.uuid] = None
                continue
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            before = self.digests.get(volume.uuid)
            assert before in (None, digest), f"{path} changed unexpectedly"
            self.digests[volume.uuid] = digest
        for folder, files in wanted.items():
            drives = folder / "configdrive"  # left, empty, by the config drives deleted
            if drives.is_dir():
                assert not list(drives.iterdir()), sorted(drives.iterdir())
                files.add(drives.name)
            assert sorted(p.name for p in folder.iterdir()) == sorted(files), folder

    @invariant()
    def nics_are_as_plugged(self) -> None:
        for vm in self.running():
            assert vm.host is not None
            answer = self.succeeds(vm.host, names.GET_VM_CONFIG_COMMAND, kit.vm_body(vm.name))
            shown = [(n["macAddress"].lower(), n["state"], n["vlanid"]) for n in answer["nics"]]
            assert shown == [(nic.mac.replace(":", ""), nic.connected,
                              "-1" if nic.vlan is None else str(nic.vlan)) for nic in vm.nics
                             ], (vm, answer)

    @invariant()
    def rules_let_in_what_they_allow(self) -> None:
        for vm in self.running():
            if not vm.security_groups or not vm.seq:
                continue
            assert vm.host is not None
            emulated = self.agents[vm.host].emulator.host
            for name, (proto, port, _, remote) in RULES.items():
                packet = Packet.inbound(proto, remote, kit.vm_ip(vm), local_port=port)
                assert traffic.connects(emulated, vm.name, vm.nics[0].mac, packet) is (
                    name in vm.rules), (vm, name)

    @invariant()
    def hosts_hold_only_the_running_vms(self) -> None:
        """No VM is left defined that the MS does not have running there (a failed start
        leaves nothing behind)."""
        for host, agent in self.agents.items():
            found = self.run(agent.emulator.query(wql.select(
                "Msvm_ComputerSystem", wql.eq("Caption", "Virtual Machine"))))
            assert sorted(str(vm["ElementName"]) for vm in found) == sorted(
                vm.name for vm in self.running(host)), host

    @invariant()
    def agents_serve(self) -> None:
        for host, agent in self.agents.items():
            status, reply = self.run(agent.post(names.CHECK_HEALTH_COMMAND, {}))
            assert status == 200 and reply[0][names.CHECK_HEALTH_ANSWER]["result"], reply
            self.succeeds(host, names.PING_ROUTING_COMMAND, kit.ping_body(host))


def _contend_again(copy: int) -> Any:
    """A copy of the ``contend`` rule, named ``contend_<copy>``: each copy is one more
    rule for Hypothesis to pick with the others' weight."""
    def again(self: Soak, data: st.DataObject, kinds: list[str]) -> None:
        self.contend(data, kinds)
    again.__name__ = again.__qualname__ = f"contend_{copy}"
    return precondition(lambda self: bool(self.vms))(rule(
        data=st.data(), kinds=st.lists(st.sampled_from(CONTENDED), min_size=2, max_size=4),
    )(again))


for _copy in range(2, CONCURRENT_WEIGHT + 1):
    setattr(Soak, f"contend_{_copy}", _contend_again(_copy))


@pytest.mark.parametrize("backend", SOAK_BACKENDS)
def test_ms_like_sequences_keep_the_hosts_as_the_management_server_believes(
        backend: str) -> None:
    soak_seed = SEED if SEED is not None else random.randrange(1 << 32)
    TALLY.clear()
    COMMANDS[0] = WSMAN_REQUESTS[0] = 0
    machine = type(f"Soak_{backend.replace('-', '_')}", (Soak,), {"backend": backend})
    try:
        run_state_machine_as_test(seed(soak_seed)(machine), settings=settings(
            max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, database=None,
            phases=[p for p in Phase
                    if p is not Phase.shrink or "SOAK_NO_SHRINK" not in os.environ],
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
    except BaseException as failed:
        failed.add_note(f"soak seed: {soak_seed} (again: SOAK_SEED={soak_seed})")
        raise
    assert (WSMAN_REQUESTS[0] > 0) is (backend != "emulator"), WSMAN_REQUESTS  # as asked
    if "SOAK_EXAMPLES" not in os.environ:
        missed = [step for step in REACHED if not TALLY.get((step, True))]
        assert not missed, (f"the run of seed {soak_seed} never reached {missed}: choose "
                            "a SEED that does")
    if "SOAK_EXAMPLES" in os.environ:
        print(f"soak: seed {soak_seed}, {EXAMPLES} examples, {COMMANDS[0]} commands, "
              f"backend {backend}, {WSMAN_REQUESTS[0]} WS-Management requests")
        for (command, result), count in sorted(TALLY.items()):
            print(f"  {command} {'ok' if result else 'failed'}: {count}")
