"""Settings of one emulated Hyper-V host."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from hyperv_agent.emulator.codes import JOB_RETENTION_S

#: A vSwitch's kind, as Hyper-V names it (Get-VMSwitch's SwitchType).
SwitchType = Literal["External", "Internal", "Private"]


@dataclass(frozen=True)
class LatencyModel:
    """Modelled costs for benchmarks: a delay per primitive and a duration per job."""

    call_s: float = 0.0  # each query, get, invoke, spawn
    job_s: float = 0.0  # from a job's start to its end

    @property
    def enabled(self) -> bool:
        return self.call_s > 0 or self.job_s > 0


@dataclass(frozen=True)
class MigrationSettings:
    """The host's live-migration settings (Hyper-V Settings > Live Migrations), kept in
    Msvm_VirtualSystemMigrationServiceSettingData and one
    Msvm_VirtualSystemMigrationNetworkSettingData per network. The defaults are those of a
    host prepared for CloudStack (docs/host-prerequisites.md): migration enabled, Kerberos,
    two at once, the private address's subnet (``networks`` None) as the migration network.
    A fresh Windows install has migration disabled and CredSSP."""

    enabled: bool = True
    kerberos: bool = True  # AuthenticationType 1 (Kerberos), else 0 (CredSSP)
    simultaneous: int = 2  # MaximumActiveVirtualSystemMigration
    networks: tuple[str, ...] | None = None  # subnets such as "10.1.2.0/24"; None: private


#: A processor vendor, and the Win32_Processor.Manufacturer Windows reports for it.
Vendor = Literal["Intel", "AMD"]
MANUFACTURERS: Mapping[str, str] = MappingProxyType(
    {"Intel": "GenuineIntel", "AMD": "AuthenticAMD"})


@dataclass(frozen=True)
class ProcessorModel:
    """The host's processors as live migration sees them: their vendor, and a feature
    level standing for the processor features they offer, each level having every feature
    of the levels below it (a later generation of the vendor's processors). A running VM
    uses the features of the host it started on (all of them, or with processor
    compatibility only those every processor of its vendor has); Hyper-V moves it live
    only to a host of the same vendor offering those (emulator/processors.py)."""

    vendor: Vendor = "Intel"
    feature_level: int = 1

    @property
    def manufacturer(self) -> str:
        return MANUFACTURERS[self.vendor]


@dataclass(frozen=True)
class EmulatorConfig:
    """What the emulated host looks like and how it behaves.

    ``drives`` maps a drive letter to a local folder, ``shares`` a UNC share
    (``\\\\server\\share``) to a local folder. Drives not given live under
    ``<state_dir>/drives/<letter>``.
    """

    state_dir: Path
    host_name: str = "HYPERV-EMU"
    cpus: int = 16
    cpu_mhz: int = 2400
    sockets: int = 2
    memory_mb: int = 65536
    switches: tuple[str, ...] = ("External",)
    # The kind of a switch of ``switches``, by name, as Hyper-V's SwitchType: "Internal"
    # (a port to the management OS, none to a physical adapter) or "Private" (neither).
    # A switch not named here is External: bound to a physical adapter of its own, and
    # shared with the management OS.
    switch_types: Mapping[str, SwitchType] = field(
        default_factory=lambda: MappingProxyType({}))
    drives: Mapping[str, Path] = field(default_factory=lambda: MappingProxyType({}))
    shares: Mapping[str, Path] = field(default_factory=lambda: MappingProxyType({}))
    async_jobs: bool = True
    latency: LatencyModel = LatencyModel()
    os_version: str = "10.0.17763"
    os_caption: str = "Microsoft Windows Server 2019 Datacenter"
    private_ip: str = "192.168.100.10"
    private_netmask: str = "255.255.255.0"
    private_mac: str = "00:15:5D:0A:0B:0C"
    persist: bool = True
    # The state directory is held by the process that opened the host (``dirlock``); a
    # second process is refused, or, with this, reads what the holder has stored (a
    # diagnostic's query): its changes then stay in memory and are never written.
    read_if_held: bool = False
    guest_shutdown_s: float = 0.0  # how long a cooperative guest takes to shut down
    job_retention_s: float = JOB_RETENTION_S  # a finished job then goes (TimeBeforeRemoval)
    # Hosts of several processes whose configurations name the same folder form a
    # cluster: VMs migrate between them (emulator/cluster.py). None: a host alone.
    cluster_dir: Path | None = None
    migration: MigrationSettings = MigrationSettings()
    processor: ProcessorModel = ProcessorModel()
    # How the host names the instances of its "Hyper-V Virtual Storage Device" counters:
    # the disk's path with each backslash written as "-" ("plain": C:-pool-a.vhdx), or the
    # same of its \\?\ form ("verbatim": --?-C:-pool-a.vhdx). Windows uses both.
    disk_counter_names: Literal["plain", "verbatim"] = "plain"
    # Test and lab knobs: the emulated host falls short as a real one can. Classes its
    # schema leaves out (as on an older Hyper-V), and the free space a drive's volume
    # reports (by drive letter) instead of the folder's real one.
    lab_missing_classes: frozenset[str] = frozenset()
    lab_free_bytes: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    # The first jobs of these methods after the host opens end in Exception (method -> how
    # many), their changes not applied: a migration failing midway, say.
    lab_failing_jobs: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def switch_type(self, name: str) -> SwitchType:
        """The kind of the switch ``name`` (``switch_types``; External when not named)."""
        return next((kind for switch, kind in self.switch_types.items()
                     if switch.lower() == name.lower()), "External")

    def hides(self, class_name: str) -> bool:
        """Whether the lab knob ``lab_missing_classes`` leaves ``class_name`` out."""
        return class_name.lower() in {name.lower() for name in self.lab_missing_classes}

    def drive_root(self, letter: str) -> Path:
        for name, folder in self.drives.items():
            if name.rstrip(":").upper() == letter.upper():
                return folder
        return self.state_dir / "drives" / letter.upper()
