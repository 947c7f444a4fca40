"""What a run writes and serves while it goes, once per interval, besides the .hlog files:
intervals.jsonl (bindings held, failures, responses, retransmissions over time, and the load step each
interval belongs to, for the capacity analysis of a stepped load) and, with `--metrics HOST:PORT`,
the Prometheus text exposition.

`run.py` calls `open_live_outputs` when the interval logs are opened, `LiveOutputs.interval(agg, now)`
after every `agg.flush_interval(now)` (the last one in `finish`), then `close()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sipload.metrics.aggregate import Aggregate
from sipload.report.intervals import IntervalLog, StepWindow, step_windows
from sipload.report.prometheus import MetricsExporter
from sipload.scenario import Load, Scenario


def arrivals_end(load: Load, count: int) -> float:
    """Seconds from the start until the schedule stops arriving: the last arrival or the duration."""
    last = load.arrival_time(count - 1) if count > 0 else 0.0
    return min(load.duration, last)


def load_steps(load: Load, count: int) -> list[StepWindow]:
    """The load's steps as time windows (empty unless the load has steps)."""
    if not load.steps:
        return []
    return step_windows([(s.rate, s.duration) for s in load.steps], arrivals_end(load, count))


@dataclass(slots=True)
class LiveOutputs:
    log: IntervalLog
    exporter: MetricsExporter | None = None

    def interval(self, agg: Aggregate, now_unix: float) -> None:
        self.log.write(agg, now_unix)
        if self.exporter is not None:
            self.exporter.update(agg, now_unix)

    def close(self) -> None:
        self.log.close()


def open_live_outputs(scenario: Scenario, out_dir: Path, started_at_unix: float,
                      exporter: MetricsExporter | None = None) -> LiveOutputs:
    load = scenario.load
    count = scenario.endpoints.count
    end = arrivals_end(load, count)
    # The arrival of index k is due at arrival_time(k); the schedule offers nothing after the last one.
    slack = load.interval / 2

    def offered(t: float) -> float:
        return load.rate_at(t) if t <= end + slack else 0.0

    log = IntervalLog(out_dir, started_at_unix, interval_s=load.interval, offered=offered,
                      steps=load_steps(load, count))
    return LiveOutputs(log, exporter)
