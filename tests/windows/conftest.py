"""Tests that need a real Windows host: collected on Windows only (the Windows workflow,
.github/workflows/windows.yml); elsewhere they are not even imported, as they import
pywin32."""

from __future__ import annotations

import sys

collect_ignore_glob = [] if sys.platform == "win32" else ["test_*.py"]
