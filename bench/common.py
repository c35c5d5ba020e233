"""Shared helpers for benchmarks: timing, a printed table and a JSON record."""

from __future__ import annotations

import json
import socket
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


async def timed_async(work: Callable[[], Awaitable[object]], repeat: int) -> list[float]:
    """Wall seconds of ``repeat`` runs of ``work``."""
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        await work()
        samples.append(time.perf_counter() - started)
    return samples


def median_ms(samples: Sequence[float]) -> float:
    return statistics.median(samples) * 1000


def report(name: str, rows: Sequence[tuple[str, str, str, str]]) -> None:
    """Print ``(figure, measured, budget, verdict)`` rows and save them as JSON."""
    widths = [max(len(row[i]) for row in [("figure", "measured", "budget", "verdict"), *rows])
              for i in range(4)]
    print(f"\n{name}")
    for row in [("figure", "measured", "budget", "verdict"), *rows]:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(
        [dict(zip(("figure", "measured", "budget", "verdict"), row, strict=True)) for row in rows],
        indent=2))


def free_port() -> int:
    """A TCP port of 127.0.0.1 no one listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


class NotWhatItNames(AssertionError):
    """A benchmark measured another state than the one its figures name."""


def require(condition: bool, what: str) -> None:
    """Stop the benchmark, printing no figure, when the state it set up or measured is not
    the state its figures name (``what``: that state, in words)."""
    if not condition:
        raise NotWhatItNames(f"the benchmark did not measure what it names: {what}")
