"""Method implementations of the emulated host; importing this package registers them."""

from hyperv_agent.emulator.services import (  # noqa: F401 - each module registers handlers
    features,
    image,
    jobstate,
    kvp,
    metrics,
    migration,
    migration_settings,
    power,
    processes,
    resources,
    summary,
    systems,
)
