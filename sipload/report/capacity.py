"""Capacity analysis of a stepped load: per-step numbers, the thresholds checked on each step, the knee
and the breaking point. Reads only the results directory (intervals.jsonl, the .hlog files and the
thresholds in summary.json), so `sipload report` and `sipload compare` find the same knee later.

Theory of operation: intervals.jsonl's header lists the load steps as time windows from the run start.
Every interval (a line of intervals.jsonl and the matching line of each .hlog) belongs to the step in
which its middle falls. A step's numbers are the sums of its intervals: counters are differences of the
cumulative counters, latency percentiles come from the merged interval histograms (so, as in the whole
run, latency is counted when an operation finishes). The run's threshold expressions are evaluated on
each step's values, with the same metric names as for the whole run (`Aggregate.metric_values`). A step
of three intervals or more leaves its first interval out (`_settled`).

The knee is the highest step such that it and every step before it met every threshold; the breaking
point is the first step that missed one. Steps with a rate of 0 (pauses) are left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sipload.metrics.aggregate import summarize
from sipload.metrics.phases import Histogram, Kind, Phase
from sipload.report.intervals import IntervalDelta, StepWindow
from sipload.report.saved import LAG_LOG, LogInterval, SavedRun, log_name
from sipload.report.writers import threshold_value
from sipload.sip.failures import FailureReason
from sipload.thresholds import ThresholdError, ThresholdResult, evaluate, parse_threshold

_T = TypeVar("_T")
SETTLE_MIN_INTERVALS = 3
_SUCCESS_RATE_PHASES = ("register", "refresh", "unregister")
_COUNT_NAMES = {"register": "registrations", "refresh": "refreshes", "unregister": "unregistrations"}


@dataclass(frozen=True, slots=True)
class StepStats:
    index: int  # the step's index in the scenario's load.steps
    offered: float  # per second, as the schedule asked
    seconds: float  # the length of the intervals counted for this step
    attempted: int  # initial registrations started in the step's counted intervals
    succeeded: int  # ... and finished in them (some started before): in_flight_start + attempted
    failed: int  #     = succeeded + failed + in_flight_end
    achieved: float  # successful initial registrations per second
    latency_ms: dict[str, float]  # register, from the intended start: p50 ... max, mean, count
    service_ms: dict[str, float]  # register, from the actual send
    values: dict[str, float]  # every metric a threshold can name, for this step
    thresholds: list[ThresholdResult] = field(default_factory=list)
    in_flight_start: int = 0  # initial registrations in flight when the counted intervals began
    in_flight_end: int = 0  # ... and when they ended

    @property
    def passed(self) -> bool:
        return all(t.passed for t in self.thresholds)

    @property
    def success_pct(self) -> float | None:
        done = self.succeeded + self.failed
        return 100.0 * self.succeeded / done if done else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "offered": self.offered,
            "seconds": round(self.seconds, 3),
            "attempted": self.attempted,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "in_flight_start": self.in_flight_start,
            "in_flight_end": self.in_flight_end,
            "achieved": round(self.achieved, 3),
            "success_pct": None if self.success_pct is None else round(self.success_pct, 3),
            "latency_ms": self.latency_ms,
            "service_ms": self.service_ms,
            "passed": self.passed,
            "thresholds": [{"expr": t.expr, "value": t.value, "passed": t.passed} for t in self.thresholds],
        }


@dataclass(frozen=True, slots=True)
class Capacity:
    steps: list[StepStats]
    knee: StepStats | None  # the highest step that (with every step before it) met every threshold
    breaking: StepStats | None  # the first step that missed a threshold
    thresholds: list[str]  # the expressions checked on each step

    def verdict(self) -> str:
        """One sentence naming the knee and the breaking point."""
        if not self.steps:
            return "no load step had any interval: no capacity result"
        if self.knee is None and self.breaking is not None:
            return (f"no knee: the first step ({self.breaking.offered:g}/s) already missed a threshold "
                    f"({_missed(self.breaking)})")
        assert self.knee is not None
        knee = (f"knee at {self.knee.offered:g}/s offered (step {self.knee.index + 1}: "
                f"{self.knee.achieved:.1f}/s achieved, register p99 {_p99(self.knee)})")
        if self.breaking is None:
            return f"{knee}; no step broke a threshold: the capacity is at least {self.knee.offered:g}/s"
        return (f"{knee}; breaking point at {self.breaking.offered:g}/s (step {self.breaking.index + 1}: "
                f"{_missed(self.breaking)})")

    def to_dict(self) -> dict[str, Any]:
        return {
            "knee": None if self.knee is None else {"step": self.knee.index, "offered": self.knee.offered},
            "breaking": None if self.breaking is None else {
                "step": self.breaking.index, "offered": self.breaking.offered},
            "verdict": self.verdict(),
            "thresholds": self.thresholds,
            "steps": [s.to_dict() for s in self.steps],
        }


def _p99(s: StepStats) -> str:
    v = s.latency_ms.get("p99")
    return "-" if v is None else f"{v:.1f} ms"


def _missed(s: StepStats) -> str:
    missed = [t for t in s.thresholds if not t.passed]
    parts = [f"{t.expr} (value {threshold_value(t)})" for t in missed]
    return "missed " + ", ".join(parts) if parts else "missed a threshold"


def _step_of(start: float, end: float, steps: Iterable[StepWindow]) -> int | None:
    mid = (start + end) / 2
    for s in steps:
        if s.start_s <= mid < s.end_s:
            return s.index
    return None


def _settled(items: list[_T]) -> list[_T]:
    """A step's intervals without its first one when it has three or more: the first interval of a step
    may still hold the end of the step before (the workers' snapshots and the parent's intervals are not
    aligned to the step boundary)."""
    return items[1:] if len(items) >= SETTLE_MIN_INTERVALS else items


def _merge(logs: list[LogInterval], steps: list[StepWindow]) -> dict[int, Histogram]:
    grouped: dict[int, list[LogInterval]] = {}
    for ivl in logs:
        i = _step_of(ivl.start_s, ivl.end_s, steps)
        if i is not None:
            grouped.setdefault(i, []).append(ivl)
    out: dict[int, Histogram] = {}
    for i, ivls in grouped.items():
        h = out[i] = Histogram()
        for ivl in _settled(ivls):
            h.add(ivl.histogram)
    return out


def step_values(
    deltas: list[IntervalDelta],
    histograms: dict[tuple[str, Kind], Histogram],
    lag: Histogram | None,
    *,
    offered: float,
    seconds: float,
) -> dict[str, float]:
    """The flat metric names of `Aggregate.metric_values`, for the intervals of one step."""
    v: dict[str, float] = {}
    for kind, suffix in ((Kind.INTENDED, ""), (Kind.SERVICE, ".service")):
        for p in Phase:
            v[f"{p}{suffix}.count"] = 0.0
            h = histograms.get((str(p), kind))
            if h is not None:
                for stat, x in summarize(h).items():
                    v[f"{p}{suffix}.{stat}"] = x
    counts: dict[str, list[int]] = {}
    failures: dict[str, int] = {}
    responses: dict[str, int] = {}
    retransmissions = 0
    for d in deltas:
        for name, c in d.counts.items():
            acc = counts.setdefault(name, [0, 0, 0])
            for i in range(3):
                acc[i] += c[i]
        for k, n in d.failures.items():
            failures[k] = failures.get(k, 0) + n
        for k, n in d.responses.items():
            responses[k] = responses.get(k, 0) + n
        retransmissions += d.retransmissions
    for phase in _SUCCESS_RATE_PHASES:
        _, ok, bad = counts.get(phase, [0, 0, 0])
        if ok + bad:
            v[f"{phase}.success_rate"] = 100.0 * ok / (ok + bad)
    for phase, name in _COUNT_NAMES.items():
        att, ok, bad = counts.get(phase, [0, 0, 0])
        v[f"{name}.attempted"], v[f"{name}.succeeded"], v[f"{name}.failed"] = float(att), float(ok), float(bad)
    v["failures"] = float(sum(failures.values()))
    for reason in FailureReason:
        v[f"failures.{reason}"] = float(failures.get(str(reason), 0))
    v["timeouts"] = v[f"failures.{FailureReason.TIMEOUT}"]
    v["retransmissions"] = float(retransmissions)
    for code, n in responses.items():
        v[f"responses.{code}"] = float(n)
    if seconds > 0:
        v["rate.achieved"] = counts.get("register", [0, 0, 0])[1] / seconds
    v["rate.offered"] = offered
    if lag is not None:
        s = summarize(lag)
        for stat in ("p50", "p99", "max"):
            if stat in s:
                v[f"schedule_lag.{stat}"] = s[stat]
    v["kernel_drops"] = float(sum(d.kernel_drops for d in deltas))
    if deltas:
        v["registered"] = float(deltas[-1].record.registered)
    return v


def analyze(run: SavedRun) -> Capacity | None:
    """Per-step capacity numbers, or None when the run had no stepped load (or no intervals.jsonl)."""
    ivs = run.intervals
    if ivs is None or len(ivs.steps) < 2:
        return None
    steps = [s for s in ivs.steps if s.rate > 0]
    exprs = [str(t.get("expr")) for t in run.summary.get("thresholds", []) if isinstance(t, dict)]
    parsed = []
    for e in exprs:
        try:
            parsed.append(parse_threshold(e))
        except ThresholdError:
            continue
    hists: dict[tuple[str, Kind], dict[int, Histogram]] = {}
    for p in Phase:
        for k in Kind:
            hists[str(p), k] = _merge(run.log(log_name(p, k)), steps)
    lag = _merge(run.log(LAG_LOG), steps)
    by_step: dict[int, list[IntervalDelta]] = {}
    for d in ivs.deltas():
        i = _step_of(d.record.start, d.record.t, steps)
        if i is not None:
            by_step.setdefault(i, []).append(d)
    out: list[StepStats] = []
    for s in steps:
        deltas = _settled(by_step.get(s.index, []))
        if not deltas:
            continue
        seconds = sum(d.record.length_s for d in deltas)
        step_h = {key: per[s.index] for key, per in hists.items() if s.index in per}
        values = step_values(deltas, step_h, lag.get(s.index), offered=s.rate, seconds=seconds)
        reg = step_h.get(("register", Kind.INTENDED))
        svc = step_h.get(("register", Kind.SERVICE))
        out.append(StepStats(
            index=s.index,
            offered=s.rate,
            seconds=seconds,
            attempted=int(values["registrations.attempted"]),
            succeeded=int(values["registrations.succeeded"]),
            failed=int(values["registrations.failed"]),
            achieved=values.get("rate.achieved", 0.0),
            latency_ms=summarize(reg) if reg is not None else {},
            service_ms=summarize(svc) if svc is not None else {},
            values=values,
            thresholds=evaluate(parsed, values),
            in_flight_start=deltas[0].in_flight_before,
            in_flight_end=deltas[-1].record.in_flight,
        ))
    knee: StepStats | None = None
    breaking: StepStats | None = None
    for st in out:
        if st.passed:
            knee = st
        else:
            breaking = st
            break
    return Capacity(out, knee, breaking, exprs)
