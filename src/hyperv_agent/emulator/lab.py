"""The emulated host with its test and lab knobs applied (``[emulator.lab]``).

``lab_missing_classes`` leaves classes out of the emulated schema, as an older or damaged
Hyper-V lacks them: every operation naming one fails as WMI fails for an unknown class
(``CimInvalidClass``, WBEM_E_INVALID_CLASS), and its instances no longer appear in
queries of a base class or in associations. The host's records are kept, so a knob
removed again restores them. ``lab_free_bytes`` is applied by the emulated host's files
(:mod:`hyperv_agent.emulator.files`). ``lab_failing_jobs`` makes the first jobs of the
methods it names end in Exception, as ``Faults.fail_next_job`` does.
"""

from __future__ import annotations

from collections.abc import Mapping

from hyperv_agent.cim.api import V2_NAMESPACE, CimInstance, InValue, MethodResult, ObjectPath
from hyperv_agent.cim.classdecl import CimClass
from hyperv_agent.emulator import wqlparse
from hyperv_agent.emulator.backend import EmulatorCim
from hyperv_agent.emulator.config import EmulatorConfig
from hyperv_agent.errors import CimInvalidClass


def open_emulator(config: EmulatorConfig) -> EmulatorCim:
    """The emulated host ``config`` describes, with its lab knobs when it sets any."""
    cim = LabEmulatorCim.open(config) if config.lab_missing_classes else EmulatorCim.open(config)
    for method, count in config.lab_failing_jobs.items():
        for _ in range(count):
            cim.faults.fail_next_job(method)
    return cim


class LabEmulatorCim(EmulatorCim):
    """An emulated host whose schema lacks the classes of ``lab_missing_classes``."""

    def _refuse(self, class_name: str, namespace: str = V2_NAMESPACE) -> None:
        if self.host.config.hides(class_name):
            raise CimInvalidClass(f"no class {class_name} in namespace {namespace}")

    def _visible(self, found: list[CimInstance]) -> list[CimInstance]:
        return [i for i in found if not self.host.config.hides(i.class_name)]

    async def query(self, wql: str, namespace: str = V2_NAMESPACE) -> list[CimInstance]:
        parsed = wqlparse.parse(wql)
        if isinstance(parsed, wqlparse.SelectQuery):
            self._refuse(parsed.class_name, namespace)
        return self._visible(await super().query(wql, namespace))

    async def get(self, path: ObjectPath) -> CimInstance:
        self._refuse(path.class_name, path.namespace)
        return await super().get(path)

    async def invoke(self, path: ObjectPath, method: str,
                     params: Mapping[str, InValue] | None = None) -> MethodResult:
        self._refuse(path.class_name, path.namespace)
        return await super().invoke(path, method, params)

    async def spawn(self, class_name: str, namespace: str = V2_NAMESPACE) -> CimInstance:
        self._refuse(class_name, namespace)
        return await super().spawn(class_name, namespace)

    async def get_class(self, class_name: str, namespace: str = V2_NAMESPACE) -> CimClass:
        self._refuse(class_name, namespace)
        return await super().get_class(class_name, namespace)

    def parse_embedded(self, text: str) -> CimInstance:
        instance = super().parse_embedded(text)
        self._refuse(instance.class_name, instance.namespace)
        return instance
