"""Prometheus metrics of one agent: commands by class and result, latency, round trips."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
ROUND_TRIP_BUCKETS = (0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89)
_Series = tuple[Counter, Histogram, Histogram]
#: How a result is named, in the metrics' ``result`` label and in each command's log line.
RESULT_OK, RESULT_FAILED = "ok", "failed"


def result_word(ok: bool) -> str:
    return RESULT_OK if ok else RESULT_FAILED


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.commands = Counter(
            "hyperv_agent_commands", "Commands answered, by Java class and result",
            ["command", "result"], registry=self.registry)
        self.latency = Histogram(
            "hyperv_agent_command_seconds", "Time to answer a command", ["command"],
            buckets=LATENCY_BUCKETS_S, registry=self.registry)
        self.round_trips = Histogram(
            "hyperv_agent_command_cim_round_trips", "CIM round trips spent on a command",
            ["command"], buckets=ROUND_TRIP_BUCKETS, registry=self.registry)

        self._series: dict[tuple[str, bool], _Series] = {}

    def observe(self, command: str, ok: bool, seconds: float, round_trips: int) -> None:
        series = self._series.get((command, ok))
        if series is None:
            series = self._series[(command, ok)] = self._new_series(command, ok)
        count, latency, trips = series
        count.inc()
        latency.observe(seconds)
        trips.observe(round_trips)

    def _new_series(self, command: str, ok: bool) -> _Series:
        """The three series one command and result go to, looked up once (by label)."""
        short = command.rsplit(".", 1)[-1]
        return (self.commands.labels(short, result_word(ok)),
                self.latency.labels(short), self.round_trips.labels(short))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
