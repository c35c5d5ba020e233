"""The WinRM benchmark runs through to its figures (on a small host, so it stays quick)."""

from __future__ import annotations

from pathlib import Path

from bench.bench_wsman import measure


async def test_the_winrm_benchmark_measures_a_small_host_through_to_its_verdicts(
        tmp_path: Path) -> None:
    rows = await measure(tmp_path, vm_count=20)
    figures = {figure: (measured, verdict) for figure, measured, _, verdict in rows}
    assert "HostVmStateReport, 20 VMs, HTTP+NTLM+encryption: requests" in figures
    start_rows = [row for row in rows if row[0].startswith("StartCommand, ")]
    assert len(start_rows) == 2
    for _, measured, _, verdict in start_rows:  # the same requests over WinRM as directly
        assert verdict == "met", measured
    for figure, (measured, verdict) in figures.items():
        if figure.endswith(": requests"):
            assert verdict == "met", (figure, measured)
