"""`[load]` and `[timers]`: the open-loop arrival schedule and the SIP/retry timers.

The schedule (``Load.arrival_times``) is open loop: the k-th registration (0-based) starts when the integral
of the rate from 0 reaches k. The rate is constant, a list of steps (a rate for a duration each; the last
continues) or a linear ramp (its end rate continues). Each time is computed directly from k and exact
(Fraction) segment boundaries, rounded once to float, never by adding 1/rate repeatedly, so there is no
accumulated drift. ``load.duration`` defaults to, and must not be shorter than, the time the last endpoint
needs to arrive.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from fractions import Fraction

from sipload.durations import format_duration
from sipload.scenario.reader import Ctx, Table


class LoadShape(enum.StrEnum):
    CONSTANT = "constant"
    STEPS = "steps"
    RAMP = "ramp"


@dataclass(frozen=True, slots=True)
class Step:
    rate: float  # per second (0 = a pause)
    duration: float  # seconds


@dataclass(frozen=True, slots=True)
class Ramp:
    start_rate: float  # "from"
    end_rate: float  # "to"; kept after the ramp
    duration: float


@dataclass(frozen=True, slots=True)
class _Segment:
    t0: float  # start time
    t1: float  # end time (inf for the last)
    c0: float  # arrivals due before t0 (the integral of the rate up to t0, rounded once from a Fraction)
    k_end: float  # first arrival index after this segment (inf for the last)
    rate: float  # constant segments
    slope: float  # ramp segment: rate(t) = rate + slope * t, starting at t0 = 0


@dataclass(frozen=True, slots=True)
class Load:
    rate: float | None = None  # constant rate; exactly one of rate, steps, ramp is set
    steps: tuple[Step, ...] = ()  # after the last step its rate continues
    ramp: Ramp | None = None  # after the ramp its end rate continues
    duration: float = 0.0  # from the first arrival until unregistering starts
    max_in_flight: int = 1000
    unregister: bool = True
    unregister_timeout: float = 10.0
    interval: float = 1.0
    # the scheduler's wake-ups are at least this far apart: what falls due within one tick
    # (arrivals, retransmissions, refreshes) is sent in one batch. A late send is measured (latency from
    # the intended start, schedule lag); responses are taken as they arrive, never batched. 0: a wake-up
    # for each deadline (~30 % more generator CPU per registration at 3,000/s: bench/worker_cpu.py).
    tick: float = 0.001
    # which engine runs the UDP fleet: "auto" (the native one where it can, else Python, saying why),
    # "native" (refuse a scenario it cannot run) or "python"
    engine: str = "auto"
    # settled with the engine (never read from a scenario file): the device groups the Python engine runs
    # beside a native fleet, when the native engine cannot run them (TCP, churn...)
    python_groups: tuple[str, ...] = ()

    @property
    def peak_rate(self) -> float:
        """The highest arrival rate of the schedule (per second)."""
        if self.ramp is not None:
            return max(self.ramp.start_rate, self.ramp.end_rate)
        if self.steps:
            return max(s.rate for s in self.steps)
        return self.rate or 0.0

    @property
    def shape(self) -> LoadShape:
        if self.steps:
            return LoadShape.STEPS
        return LoadShape.RAMP if self.ramp is not None else LoadShape.CONSTANT

    def rate_at(self, t: float) -> float:
        """The intended arrival rate (per second) at ``t`` seconds from the start."""
        t = max(t, 0.0)
        if self.ramp is not None:
            r = self.ramp
            return r.start_rate + (r.end_rate - r.start_rate) * t / r.duration if t < r.duration else r.end_rate
        if self.steps:
            end = Fraction(0)
            for step in self.steps:
                end += Fraction(step.duration)
                if t < end:
                    return step.rate
            return self.steps[-1].rate
        assert self.rate is not None
        return self.rate

    def _segments(self) -> list[_Segment]:
        inf = math.inf
        if self.ramp is not None:
            r = self.ramp
            slope = (r.end_rate - r.start_rate) / r.duration
            c1 = (Fraction(r.start_rate) + Fraction(r.end_rate)) * Fraction(r.duration) / 2
            return [
                _Segment(0.0, r.duration, 0.0, math.ceil(c1), r.start_rate, slope),
                _Segment(r.duration, inf, float(c1), inf, r.end_rate, 0.0),
            ]
        if not self.steps:
            assert self.rate is not None
            return [_Segment(0.0, inf, 0.0, inf, self.rate, 0.0)]
        segments, t0, c0 = [], Fraction(0), Fraction(0)
        for i, step in enumerate(self.steps):
            last = i == len(self.steps) - 1
            t1, c1 = t0 + Fraction(step.duration), c0 + Fraction(step.rate) * Fraction(step.duration)
            segments.append(
                _Segment(
                    float(t0), inf if last else float(t1), float(c0), inf if last else math.ceil(c1), step.rate, 0.0
                )
            )
            t0, c0 = t1, c1
        return [s for s in segments if s.rate > 0 or s.slope != 0]

    @staticmethod
    def _time(seg: _Segment, k: int) -> float:
        if seg.slope != 0:  # the ramp, from t = 0: solve rate*t + slope*t^2/2 = k (stable form)
            t = 0.0 if k == 0 else 2 * k / (seg.rate + math.sqrt(max(seg.rate**2 + 2 * seg.slope * k, 0.0)))
        else:
            t = seg.t0 + (k - seg.c0) / seg.rate
        return min(max(t, seg.t0), seg.t1)

    def arrival_times(self, count: int) -> Iterator[float]:
        """Intended start times (seconds from the run start) of the first ``count`` registrations."""
        segments, index, previous = self._segments(), 0, 0.0
        for k in range(count):
            while k >= segments[index].k_end:
                index += 1
            previous = max(previous, self._time(segments[index], k))
            yield previous

    def arrival_time(self, k: int) -> float:
        """The intended start time of the k-th registration (0-based)."""
        seg = next(s for s in self._segments() if k < s.k_end)
        return self._time(seg, k)


@dataclass(frozen=True, slots=True)
class TimerConfig:
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    max_retries: int = 3  # retries after a timeout / 503 before giving up on an endpoint
    retry_backoff: float = 1.0  # first backoff, doubling ...
    retry_backoff_max: float = 30.0  # ... capped here


LOAD_KEYS = tuple("rate steps ramp max_in_flight duration unregister unregister_timeout interval tick engine".split())
ENGINES = ("auto", "native", "python")
MAX_TICK = 0.1  # a coarser tick would distort the schedule more than it saves
TIMER_KEYS = ("t1", "t2", "t4", "max_retries", "retry_backoff", "retry_backoff_max")


def read_load(ctx: Ctx, data: object, count: int) -> Load:
    t = Table(ctx, "load", data, LOAD_KEYS)
    shapes = [k for k in ("rate", "steps", "ramp") if t.given(k)]
    if len(shapes) != 1:
        raise ctx.error(
            "load",
            "one of rate, steps or ramp is required"
            if not shapes
            else f"give only one of rate, steps or ramp, got {' and '.join(shapes)}",
        )
    rate: float | None = None
    steps: tuple[Step, ...] = ()
    ramp: Ramp | None = None
    if shapes == ["rate"]:
        rate = t.number("rate", gt=0)
    elif shapes == ["steps"]:
        raw = t.data["steps"]
        if not isinstance(raw, list) or not raw:
            raise t.fail("steps", "must be a non-empty list of { rate = ..., duration = ... }")
        tables = [Table(ctx, f"load.steps[{i}]", s, ("rate", "duration")) for i, s in enumerate(raw)]
        steps = tuple(Step(s.number("rate", ge=0), s.duration("duration", positive=True)) for s in tables)
        if steps[-1].rate == 0:
            raise tables[-1].fail("rate", "the last step must have a rate > 0 (it continues after its duration)")
    else:
        r = t.table("ramp", ("from", "to", "duration"))
        ramp = Ramp(r.number("from", ge=0), r.number("to", gt=0), r.duration("duration", positive=True))
    load = Load(
        rate=rate,
        steps=steps,
        ramp=ramp,
        max_in_flight=t.integer("max_in_flight", 1000, minimum=1),
        unregister=t.boolean("unregister", True),
        unregister_timeout=t.duration("unregister_timeout", 10.0, positive=True),
        interval=t.duration("interval", 1.0, positive=True),
        tick=t.duration("tick", 0.001),
        engine=t.choice("engine", "auto", ENGINES),
    )
    if load.tick > MAX_TICK:
        raise t.fail("tick", f"must be at most {format_duration(MAX_TICK)} (0 = a wake-up for each deadline)")
    needed = load.arrival_time(count - 1)
    if not needed < 1e300:
        raise ctx.error("load", f"the rate is too low: {count} endpoints would never all arrive")
    duration = t.duration("duration", needed)
    if duration < needed:
        how = {LoadShape.STEPS: "with the load steps", LoadShape.RAMP: "on the load ramp"}.get(
            load.shape, f"at {load.rate_at(0):g}/s"
        )
        raise ctx.error(
            "load.duration",
            f"{format_duration(duration)} is shorter than the {format_duration(needed)} "
            f"that {count} endpoints need to arrive {how}",
        )
    return replace(load, duration=duration)


def read_timers(ctx: Ctx, data: object) -> TimerConfig:
    t = Table(ctx, "timers", data, TIMER_KEYS)
    timers = TimerConfig(
        t.duration("t1", 0.5, positive=True),
        t.duration("t2", 4.0, positive=True),
        t.duration("t4", 5.0, positive=True),
        t.integer("max_retries", 3, minimum=0),
        t.duration("retry_backoff", 1.0),
        t.duration("retry_backoff_max", 30.0),
    )
    if timers.t2 < timers.t1:
        raise t.fail("t2", f"must not be shorter than timers.t1 ({format_duration(timers.t1)})")
    if timers.retry_backoff_max < timers.retry_backoff:
        raise t.fail(
            "retry_backoff_max",
            f"must not be shorter than timers.retry_backoff ({format_duration(timers.retry_backoff)})",
        )
    return timers

