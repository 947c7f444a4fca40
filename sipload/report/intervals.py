"""intervals.jsonl: what the run looked like at the end of every interval, for the "over time" plots and
the capacity analysis of a stepped load.

Format (JSON Lines, one object per line, flushed per interval so a killed run keeps what it wrote;
its JSON Schema is sipload/data/intervals.schema.json):

- first line, the header: ``{"kind": "header", "format": "sipload-intervals", "version": 2,
  "started_at_unix": ..., "interval_s": ..., "steps": [{"index", "rate", "start_s", "end_s"}, ...],
  "sections": {...}}`` (``steps`` is empty unless the load has steps; times are seconds from the run
  start; ``sections`` says in words what each section of an interval line holds);
- then one ``{"kind": "interval", ...}`` line per interval (`IntervalRecord`): its end ``t`` (seconds
  from the run start) and ``length_s``, the ``offered_per_s`` and ``step`` at its middle, and three
  sections of named figures: ``at_end`` (gauges at the end of the interval: ``registered``,
  ``in_flight``), ``cumulative`` (since the run start) and ``in_interval`` (within this interval: the
  differences of two cumulative lines), each of the last two with ``phases`` (``{"register":
  {"attempted", "succeeded", "failed"}, ...}``), ``failures`` by reason, ``responses`` by status code,
  ``retransmissions`` and ``kernel_drops``. Readers use the cumulative section (`Intervals.deltas`), so
  that a lost line loses no count; ``in_interval`` is there for scripts (``jq``).

Version 1 files (bare ``[attempted, succeeded, failed]`` arrays, cumulative counters at the top level)
are still read.

Latency per interval is not here: the .hlog files have one histogram per interval.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from sipload.metrics.aggregate import Aggregate
from sipload.metrics.phases import Phase

INTERVALS = "intervals.jsonl"
FORMAT = "sipload-intervals"
VERSION = 2
SECTIONS = {
    "at_end": "gauges at the end of the interval: bindings held (registered) and initial registrations "
              "in flight",
    "cumulative": "counts since the run start: per phase attempted/succeeded/failed, failures by reason, "
                  "responses by status code, retransmissions, kernel socket drops",
    "in_interval": "the same counts within this interval only (this line's cumulative less the line before)",
}


@dataclass(frozen=True, slots=True)
class StepWindow:
    """One step of a stepped load: its offered rate over [start_s, end_s) from the run start."""

    index: int
    rate: float
    start_s: float
    end_s: float  # inf for a last step that continues until the run ends

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "rate": self.rate, "start_s": self.start_s,
                "end_s": self.end_s if math.isfinite(self.end_s) else None}


def step_windows(steps: Sequence[tuple[float, float]], arrivals_end_s: float) -> list[StepWindow]:
    """(rate, duration) pairs -> windows from the run start. The last step continues until the arrivals
    end (`arrivals_end_s`); a step that would start after that never happens and is left out."""
    out: list[StepWindow] = []
    t = 0.0
    for i, (rate, duration) in enumerate(steps):
        end = min(t + duration if i < len(steps) - 1 else math.inf, arrivals_end_s)
        if end <= t:
            break
        out.append(StepWindow(i, float(rate), t, end))
        t += duration
    return out


Counts = tuple[int, int, int]  # attempted, succeeded, failed


def _named(counts: Mapping[str, Counts]) -> dict[str, dict[str, int]]:
    return {p: {"attempted": c[0], "succeeded": c[1], "failed": c[2]} for p, c in counts.items()}


def _unnamed(phases: Mapping[str, Any]) -> dict[str, Counts]:
    """Per phase counts as a v2 line names them, or as a v1 line's bare arrays."""
    out: dict[str, Counts] = {}
    for p, c in dict(phases).items():
        if isinstance(c, Mapping):
            out[str(p)] = (int(c.get("attempted", 0)), int(c.get("succeeded", 0)), int(c.get("failed", 0)))
        else:
            out[str(p)] = (int(c[0]), int(c[1]), int(c[2]))
    return out


@dataclass(frozen=True, slots=True)
class IntervalRecord:
    t: float  # end of the interval, seconds from the run start
    length_s: float
    offered_per_s: float | None  # the schedule's rate at the middle of the interval (0 after the arrivals)
    step: int | None  # the load step at the middle of the interval
    registered: int  # bindings held at the end of the interval
    in_flight: int
    kernel_drops: int  # cumulative
    counts: dict[str, Counts]  # phase -> (attempted, succeeded, failed), cumulative
    failures: dict[str, int]  # reason -> count, cumulative
    responses: dict[str, int]  # status code -> count, cumulative
    retransmissions: int  # cumulative

    @property
    def start(self) -> float:
        return self.t - self.length_s

    def to_dict(self, before: IntervalRecord | None = None) -> dict[str, Any]:
        """The line; `before` is the line before it (None for the first), for the in_interval section."""
        d = delta(self, before)
        return {
            "kind": "interval",
            "t": round(self.t, 6),
            "length_s": round(self.length_s, 6),
            "offered_per_s": self.offered_per_s,
            "step": self.step,
            "at_end": {"registered": self.registered, "in_flight": self.in_flight},
            "cumulative": _section(self.counts, self.failures, self.responses, self.retransmissions,
                                   self.kernel_drops),
            "in_interval": _section(d.counts, d.failures, d.responses, d.retransmissions, d.kernel_drops),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> IntervalRecord:
        offered = d.get("offered_per_s")
        step = d.get("step")
        # version 2 keeps its figures in sections; version 1 had them all at the top level
        gauges: Mapping[str, Any] = d.get("at_end", d)
        total: Mapping[str, Any] = d.get("cumulative", d)
        return cls(
            t=float(d["t"]),
            length_s=float(d["length_s"]),
            offered_per_s=None if offered is None else float(offered),
            step=None if step is None else int(step),
            registered=int(gauges.get("registered", 0)),
            in_flight=int(gauges.get("in_flight", 0)),
            kernel_drops=int(total.get("kernel_drops", 0)),
            counts=_unnamed(total.get("phases", total.get("counts", {}))),
            failures={str(k): int(v) for k, v in dict(total.get("failures", {})).items()},
            responses={str(k): int(v) for k, v in dict(total.get("responses", {})).items()},
            retransmissions=int(total.get("retransmissions", 0)),
        )


def _section(counts: Mapping[str, Counts], failures: Mapping[str, int], responses: Mapping[str, int],
             retransmissions: int, kernel_drops: int) -> dict[str, Any]:
    return {"phases": _named(counts), "failures": dict(failures), "responses": dict(responses),
            "retransmissions": retransmissions, "kernel_drops": kernel_drops}


@dataclass(frozen=True, slots=True)
class IntervalDelta:
    """What happened within one interval (differences of the cumulative counters) plus its gauges."""

    record: IntervalRecord
    counts: dict[str, Counts]
    failures: dict[str, int]
    responses: dict[str, int]
    retransmissions: int
    kernel_drops: int
    in_flight_before: int  # the line before's in_flight gauge (0 for the first line)


def _diff(new: Mapping[str, int], old: Mapping[str, int]) -> dict[str, int]:
    return {k: v - old.get(k, 0) for k, v in new.items() if v - old.get(k, 0)}


def delta(record: IntervalRecord, before: IntervalRecord | None) -> IntervalDelta:
    """`record`'s counts less those of the line `before` it (all of them for the first line)."""
    prev_counts = before.counts if before is not None else {}
    counts = {}
    for p, c in record.counts.items():
        o = prev_counts.get(p, (0, 0, 0))
        counts[p] = (c[0] - o[0], c[1] - o[1], c[2] - o[2])
    if before is None:
        return IntervalDelta(record, counts, _diff(record.failures, {}), _diff(record.responses, {}),
                             record.retransmissions, max(0, record.kernel_drops), 0)
    return IntervalDelta(record, counts, _diff(record.failures, before.failures),
                         _diff(record.responses, before.responses),
                         record.retransmissions - before.retransmissions,
                         max(0, record.kernel_drops - before.kernel_drops), before.in_flight)


@dataclass(frozen=True, slots=True)
class Intervals:
    started_at_unix: float
    interval_s: float
    steps: list[StepWindow]
    records: list[IntervalRecord] = field(default_factory=list)

    def deltas(self) -> Iterator[IntervalDelta]:
        before: IntervalRecord | None = None
        for r in self.records:
            yield delta(r, before)
            before = r


def read_intervals(out_dir: Path) -> Intervals | None:
    """The run's intervals.jsonl, None when there is none. A truncated last line (a killed run) is
    ignored; a file that is not an intervals file raises ValueError."""
    path = out_dir / INTERVALS
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    lines = text.splitlines()
    if not lines:
        return None
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: the first line is not JSON: {exc}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path}: not a sipload intervals file")
    steps = [
        StepWindow(int(s["index"]), float(s["rate"]), float(s["start_s"]),
                   float("inf") if s.get("end_s") is None else float(s["end_s"]))
        for s in header.get("steps", [])
    ]
    records: list[IntervalRecord] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break  # the last line of a killed run
            raise ValueError(f"{path}:{number}: not JSON") from None
        if isinstance(d, dict) and d.get("kind") == "interval":
            records.append(IntervalRecord.from_dict(d))
    return Intervals(float(header["started_at_unix"]), float(header.get("interval_s", 1.0)), steps, records)


class IntervalLog:
    """Writes intervals.jsonl while the run goes: `write(agg, now)` after every `agg.flush_interval(now)`."""

    def __init__(
        self,
        out_dir: Path,
        started_at_unix: float,
        *,
        interval_s: float,
        offered: Callable[[float], float] | None = None,
        steps: Sequence[StepWindow] = (),
    ) -> None:
        self._started = started_at_unix
        self._offered = offered
        self._steps = list(steps)
        self._last = started_at_unix
        self._before: IntervalRecord | None = None
        out_dir.mkdir(parents=True, exist_ok=True)
        self._file: TextIO | None = (out_dir / INTERVALS).open("w", encoding="utf-8")
        header = {
            "kind": "header",
            "format": FORMAT,
            "version": VERSION,
            "started_at_unix": started_at_unix,
            "interval_s": interval_s,
            "steps": [s.to_dict() for s in self._steps],
            "sections": SECTIONS,
        }
        self._file.write(json.dumps(header) + "\n")
        self._file.flush()

    def _step_at(self, t: float) -> int | None:
        for s in self._steps:
            if s.start_s <= t < s.end_s:
                return s.index
        return None

    def write(self, agg: Aggregate, now_unix: float) -> None:
        """One line for the interval that ended at `now_unix` (a no-op once closed or for an empty one)."""
        if self._file is None or now_unix <= self._last:
            return
        t = now_unix - self._started
        length = now_unix - self._last
        mid = t - length / 2
        counts: dict[str, Counts] = {}
        for p in Phase:
            c = agg.counts(p)
            if c.attempted or c.succeeded or c.failed:
                counts[str(p)] = (c.attempted, c.succeeded, c.failed)
        record = IntervalRecord(
            t=t,
            length_s=length,
            offered_per_s=self._offered(mid) if self._offered is not None else None,
            step=self._step_at(mid),
            registered=agg.gauge_total("registered"),
            in_flight=agg.gauge_total("in_flight"),
            kernel_drops=agg.gauge_total("kernel_drops"),
            counts=counts,
            failures=agg.failures_by_reason(),
            responses={str(k): v for k, v in agg.responses().items()},
            retransmissions=agg.retransmissions,
        )
        self._file.write(json.dumps(record.to_dict(self._before), separators=(",", ":")) + "\n")
        self._file.flush()
        self._last = now_unix
        self._before = record

    def close(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            f.close()
