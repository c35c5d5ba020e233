"""Method implementations of the emulated host; importing this package registers them.

Live migration's implementation loads with the first call of the migration service that
needs it: it brings the emulated cluster (peers, hand-over, arrival), which a host that
never migrates does not use, and the agent starts without it.
"""

import importlib

from hyperv_agent.emulator.calls import HANDLERS, Handler
from hyperv_agent.emulator.services import (  # noqa: F401 - each module registers handlers
    features,
    image,
    jobstate,
    kvp,
    metrics,
    migration_settings,
    power,
    processes,
    resources,
    summary,
    systems,
)

#: The modules that register the rest of a class's methods, by lower-case class name.
_LOADED_LATER = {"msvm_virtualsystemmigrationservice": "hyperv_agent.emulator.services.migration"}


def handler(class_name: str, method: str) -> Handler | None:
    """The implementation of ``class_name.method``, None when the emulator has none."""
    key = (class_name.lower(), method.lower())
    found = HANDLERS.get(key)
    if found is None and key[0] in _LOADED_LATER:
        importlib.import_module(_LOADED_LATER[key[0]])
        found = HANDLERS.get(key)
    return found
