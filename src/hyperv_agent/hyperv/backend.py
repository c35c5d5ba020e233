"""The backend type the operation layer works with, named for the layers above it.

Handlers hold a ``Backend`` and pass it to ``hyperv`` functions without importing the
CIM seam themselves.
"""

from __future__ import annotations

from hyperv_agent.cim.api import Cim as Backend

__all__ = ["Backend"]
