"""The Hyper-V session of a backend in tests: one per backend, as the agent holds one, so
what the operations learn (service paths, templates, GUIDs) carries over between calls of
a test as it does in the agent."""

from __future__ import annotations

import weakref

from hyperv_agent.cim.api import Cim
from hyperv_agent.hyperv.session import HyperV

_SESSIONS: weakref.WeakKeyDictionary[Cim, HyperV] = weakref.WeakKeyDictionary()


def hv(cim: Cim) -> HyperV:
    """The session of ``cim`` (made on first use)."""
    found = _SESSIONS.get(cim)
    if found is None:
        found = _SESSIONS[cim] = HyperV(cim)
    return found
