"""intervals.jsonl: what the run looked like at the end of every interval, for the "over time" plots and
the capacity analysis of a stepped load.

Format (JSON Lines, one object per line, flushed per interval so a killed run keeps what it wrote):

- first line, the header: ``{"kind": "header", "format": "sipload-intervals", "version": 1,
  "started_at_unix": ..., "interval_s": ..., "steps": [{"index", "rate", "start_s", "end_s"}, ...]}``
  (``steps`` is empty unless the load has steps; times are seconds from the run start);
- then one ``{"kind": "interval", ...}`` line per interval (`IntervalRecord`): its end ``t`` (seconds
  from the run start) and length, the offered rate and step at its middle, the gauges (bindings held,
  in flight, kernel drops) and the CUMULATIVE counters (per phase attempted/succeeded/failed, failures
  by reason, responses by code, retransmissions). Cumulative counters make every line self-contained:
  a reader takes differences (`Intervals.deltas`), and a lost line loses no count.

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
VERSION = 1


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


@dataclass(frozen=True, slots=True)
class IntervalRecord:
    t: float  # end of the interval, seconds from the run start
    length_s: float
    offered_per_s: float | None  # the schedule's rate at the middle of the interval (0 after the arrivals)
    step: int | None  # the load step at the middle of the interval
    registered: int  # bindings held at the end of the interval
    in_flight: int
    kernel_drops: int
    counts: dict[str, tuple[int, int, int]]  # phase -> (attempted, succeeded, failed), cumulative
    failures: dict[str, int]  # reason -> count, cumulative
    responses: dict[str, int]  # status code -> count, cumulative
    retransmissions: int  # cumulative

    @property
    def start(self) -> float:
        return self.t - self.length_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "interval",
            "t": round(self.t, 6),
            "length_s": round(self.length_s, 6),
            "offered_per_s": self.offered_per_s,
            "step": self.step,
            "registered": self.registered,
            "in_flight": self.in_flight,
            "kernel_drops": self.kernel_drops,
            "counts": {p: list(c) for p, c in self.counts.items()},
            "failures": self.failures,
            "responses": self.responses,
            "retransmissions": self.retransmissions,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> IntervalRecord:
        counts = {str(p): (int(c[0]), int(c[1]), int(c[2])) for p, c in dict(d.get("counts", {})).items()}
        offered = d.get("offered_per_s")
        step = d.get("step")
        return cls(
            t=float(d["t"]),
            length_s=float(d["length_s"]),
            offered_per_s=None if offered is None else float(offered),
            step=None if step is None else int(step),
            registered=int(d.get("registered", 0)),
            in_flight=int(d.get("in_flight", 0)),
            kernel_drops=int(d.get("kernel_drops", 0)),
            counts=counts,
            failures={str(k): int(v) for k, v in dict(d.get("failures", {})).items()},
            responses={str(k): int(v) for k, v in dict(d.get("responses", {})).items()},
            retransmissions=int(d.get("retransmissions", 0)),
        )


@dataclass(frozen=True, slots=True)
class IntervalDelta:
    """What happened within one interval (differences of the cumulative counters) plus its gauges."""

    record: IntervalRecord
    counts: dict[str, tuple[int, int, int]]
    failures: dict[str, int]
    responses: dict[str, int]
    retransmissions: int
    kernel_drops: int


def _diff(new: Mapping[str, int], old: Mapping[str, int]) -> dict[str, int]:
    return {k: v - old.get(k, 0) for k, v in new.items() if v - old.get(k, 0)}


@dataclass(frozen=True, slots=True)
class Intervals:
    started_at_unix: float
    interval_s: float
    steps: list[StepWindow]
    records: list[IntervalRecord] = field(default_factory=list)

    def deltas(self) -> Iterator[IntervalDelta]:
        prev_counts: dict[str, tuple[int, int, int]] = {}
        prev_fail: dict[str, int] = {}
        prev_resp: dict[str, int] = {}
        prev_retx = prev_drops = 0
        for r in self.records:
            counts = {}
            for p, c in r.counts.items():
                o = prev_counts.get(p, (0, 0, 0))
                counts[p] = (c[0] - o[0], c[1] - o[1], c[2] - o[2])
            yield IntervalDelta(r, counts, _diff(r.failures, prev_fail), _diff(r.responses, prev_resp),
                                r.retransmissions - prev_retx, max(0, r.kernel_drops - prev_drops))
            prev_counts, prev_fail, prev_resp = r.counts, r.failures, r.responses
            prev_retx, prev_drops = r.retransmissions, r.kernel_drops


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
        out_dir.mkdir(parents=True, exist_ok=True)
        self._file: TextIO | None = (out_dir / INTERVALS).open("w", encoding="utf-8")
        header = {
            "kind": "header",
            "format": FORMAT,
            "version": VERSION,
            "started_at_unix": started_at_unix,
            "interval_s": interval_s,
            "steps": [s.to_dict() for s in self._steps],
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
        counts: dict[str, tuple[int, int, int]] = {}
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
        self._file.write(json.dumps(record.to_dict(), separators=(",", ":")) + "\n")
        self._file.flush()
        self._last = now_unix

    def close(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            f.close()
