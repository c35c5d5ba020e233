"""The deterministic half of bench/bench_migration.py: the round trips of a warm
MigrateCommand for a VM with 2 disks and 2 NICs (source) and of its PrepareForMigration
(destination), without the latency model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from bench.bench_migration import MIGRATE_BUDGET, PREPARE_BUDGET, measure

pytestmark = pytest.mark.skipif(sys.platform != "linux",
                                reason="needs 127.0.0.2 and 127.0.0.3 (Linux loopback)")


async def test_a_move_costs_what_its_budget_allows(tmp_path: Path) -> None:
    (tmp_path / "pool").mkdir()
    figures = await measure(tmp_path, call_s=0.0, job_s=0.0)
    calls, waits = MIGRATE_BUDGET
    assert figures.migrate.calls <= calls and figures.migrate.waits == waits
    assert figures.migrate["invoke:CheckVirtualSystemIsMigratableToHost"] == 1
    assert figures.migrate["invoke:MigrateVirtualSystemToHost"] == 1
    assert (figures.prepare.calls, figures.prepare.waits) == (PREPARE_BUDGET, 0)
