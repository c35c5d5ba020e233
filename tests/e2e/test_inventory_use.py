"""The inventory names each name under the class it is used on: a whole deployment, played
through the real agent, records every class and property its queries select and filter on
and every method and parameter it calls, and each must be in ``hyperv.inventory.USED``
under that class (the static scan in tests/hyperv/test_inventory.py proves the names are
there; this proves they sit under the right class)."""

from __future__ import annotations

from collections.abc import Mapping

from hyperv_agent import backends, probe
from hyperv_agent.cim.api import (
    V2_NAMESPACE,
    Cim,
    CimInstance,
    InValue,
    MethodResult,
    ObjectPath,
)
from hyperv_agent.cim.counting import CountingCim
from hyperv_agent.emulator import wqlparse
from hyperv_agent.hyperv.inventory import USED
from hyperv_agent.probe_deploy import DeployPlan
from tests.e2e.conftest import PRIVATE_IP, Running


class Recorder(CountingCim):
    """Passes every call on, noting (class, name) for what it selects, filters and calls."""

    def __init__(self, inner: Cim) -> None:
        super().__init__(inner)
        self.used: set[tuple[str, str]] = set()

    async def query(self, wql: str, namespace: str = V2_NAMESPACE) -> list[CimInstance]:
        parsed = wqlparse.parse(wql)
        if isinstance(parsed, wqlparse.SelectQuery):
            names = set(parsed.properties)
            if parsed.where is not None:
                names |= wqlparse.referenced_properties(parsed.where)
            self.used |= {(parsed.class_name, name) for name in names}
            self.used.add((parsed.class_name, ""))
        return await super().query(wql, namespace)

    async def invoke(self, path: ObjectPath, method: str,
                     params: Mapping[str, InValue] | None = None) -> MethodResult:
        self.used.add((path.class_name, f"{method}()"))
        self.used |= {(path.class_name, f"{method}({name})") for name in params or {}}
        return await super().invoke(path, method, params)

    async def spawn(self, class_name: str, namespace: str = V2_NAMESPACE) -> CimInstance:
        self.used.add((class_name, ""))
        return await super().spawn(class_name, namespace)


def _table() -> set[tuple[str, str]]:
    known: set[tuple[str, str]] = set()
    for use in USED:
        known.add((use.name, ""))
        known |= {(use.name, name) for name in (*use.properties, *use.optional)}
        for method, parameters in (*use.methods.items(), *use.optional_methods.items()):
            known.add((use.name, f"{method}()"))
            known |= {(use.name, f"{method}({name})") for name in parameters}
    return {(cls.lower(), name.lower()) for cls, name in known}


async def test_a_deployment_uses_only_what_the_inventory_lists_under_each_class(
        running: Running) -> None:
    assert isinstance(running.agent.cim, CountingCim)
    recorder = Recorder(running.agent.cim.inner)
    running.agent.cim.inner = recorder
    backends.seed_secondary(running.agent.config)

    report = await probe.probe(running.url, PRIVATE_IP, deploy=DeployPlan())

    assert report.passed, report.table()
    used = {(cls.lower(), name.lower()) for cls, name in recorder.used}
    assert len(used) > 60
    assert used - _table() == set()
