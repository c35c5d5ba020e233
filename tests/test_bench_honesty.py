"""Benchmarks check that the state they measure is the state their figures name."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.bench_agent import seeded
from bench.common import NotWhatItNames
from bench.scale_fill import interleaved_fill

SMALL_HOST = "[emulator]\nmemory_mb = 8192\ncpus = 4\n"  # runs only a few VMs at once


async def test_state_report_benchmark_refuses_a_host_that_runs_fewer_vms_than_it_names(
        tmp_path: Path) -> None:
    with pytest.raises(NotWhatItNames, match="60 VMs, 30 running"):
        await seeded(tmp_path / "small", count=60, running=30, host=SMALL_HOST)


async def test_state_report_benchmark_seeds_what_it_names_when_the_host_has_room(
        tmp_path: Path) -> None:
    await seeded(tmp_path / "roomy", count=60, running=30)  # the benchmark's own host


def test_hosts_filled_in_turns_end_with_the_vms_they_name_and_time_each_host() -> None:
    turns = interleaved_fill(4, 12)  # three small hosts of 2 pairs, in turns with the large
    assert (turns.small_vms, turns.large_vms) == ((4, 4, 4), 12)
    assert len(turns.small_s) == 3 and all(spent > 0 for spent in turns.small_s)
    assert turns.large_s > 0
