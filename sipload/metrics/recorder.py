"""Per-worker recording (the hot path) and the interval snapshots a worker sends to the parent.

Theory of operation: one `Recorder` per worker process. Every call on the hot path is a dict update
(latencies are counted by HdrHistogram bucket index, see `phases.bucket_index`); nothing computes a
percentile or touches hdrh. Once per interval the worker calls `take_interval(now)`, which turns what was
counted since the previous call into an `IntervalSnapshot` (plain, picklable data with hdrh-encoded
histograms) and starts a new interval. The parent merges snapshots in `aggregate.Aggregate`.

Ranges: latencies and schedule lag are recorded in µs, 0 .. 1 hour (the histogram's lowest discernible
value is 1 µs; 0 is stored as 0). A value outside that range is clamped to it and counted in
`IntervalSnapshot.clamped`, except a negative schedule lag (an arrival sent early), which is recorded as
0 and not counted: it is not an error.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sipload.metrics.phases import HIGHEST_US, Kind, Phase, encode_buckets
from sipload.sip.failures import FailureReason

_HIGH = HIGHEST_US


@dataclass(frozen=True, slots=True)
class IntervalSnapshot:
    """What one worker recorded in one interval. Counters are deltas; gauges are the latest values."""

    start: float  # the worker's clock (only end - start is meaningful to other processes)
    end: float
    histograms: dict[tuple[Phase, Kind], bytes]  # hdrh-encoded, µs; only non-empty ones
    schedule_lag: bytes | None  # hdrh-encoded, µs; None when nothing was recorded
    attempts: dict[Phase, int]  # only non-zero entries
    successes: dict[Phase, int]
    failures: dict[tuple[Phase, FailureReason], int]
    responses: dict[int, int]  # status code -> count
    retransmissions: int
    clamped: int  # values outside 0 .. 1 h that were clamped
    gauges: dict[str, int]

    @property
    def duration(self) -> float:
        return self.end - self.start

    def failures_in(self, phase: Phase) -> int:
        return sum(n for (p, _), n in self.failures.items() if p is phase)


def _zeroed() -> dict[Phase, int]:
    return dict.fromkeys(Phase, 0)


class Recorder:
    """Counts what one worker observes. Not thread-safe; one per worker process."""

    __slots__ = (
        "_attempts",
        "_clamped",
        "_failures",
        "_gauges",
        "_hist",
        "_lag",
        "_responses",
        "_retransmissions",
        "_start",
        "_successes",
    )

    def __init__(self, now: float) -> None:
        self._start = now
        # phase -> (bucket counts from intended start, bucket counts from actual send)
        self._hist: dict[Phase, tuple[defaultdict[int, int], defaultdict[int, int]]] = {
            p: (defaultdict(int), defaultdict(int)) for p in Phase
        }
        self._lag: defaultdict[int, int] = defaultdict(int)
        self._attempts = _zeroed()
        self._successes = _zeroed()
        self._failures: defaultdict[tuple[Phase, FailureReason], int] = defaultdict(int)
        self._responses: defaultdict[int, int] = defaultdict(int)
        self._retransmissions = 0
        self._clamped = 0
        self._gauges: dict[str, int] = {}

    # ---- hot path -----------------------------------------------------------------------------------

    def record(self, phase: Phase, from_intended_us: int, service_us: int) -> None:
        """One finished `phase`: its latency from the intended start and from the actual send, in µs."""
        intended, service = self._hist[phase]
        v = from_intended_us
        if not 0 <= v <= _HIGH:
            v = self._clamp(v)
        b = (v | 2047).bit_length() - 11  # phases.bucket_index, inlined
        intended[(b << 10) + (v >> b)] += 1
        v = service_us
        if not 0 <= v <= _HIGH:
            v = self._clamp(v)
        b = (v | 2047).bit_length() - 11
        service[(b << 10) + (v >> b)] += 1

    def attempt(self, phase: Phase) -> None:
        self._attempts[phase] += 1

    def success(self, phase: Phase) -> None:
        self._successes[phase] += 1

    def failure(self, phase: Phase, reason: FailureReason) -> None:
        self._failures[phase, reason] += 1

    def response(self, code: int) -> None:
        self._responses[code] += 1

    def retransmission(self) -> None:
        self._retransmissions += 1

    def schedule_lag(self, lag_us: int) -> None:
        """How late an arrival was sent against its intended time (µs; negative = early, stored as 0)."""
        v = lag_us
        if v < 0:
            v = 0
        elif v > _HIGH:
            v = self._clamp(v)
        b = (v | 2047).bit_length() - 11
        self._lag[(b << 10) + (v >> b)] += 1

    def set_gauge(self, name: str, value: int) -> None:
        self._gauges[name] = value

    def _clamp(self, v: int) -> int:
        self._clamped += 1
        return 0 if v < 0 else _HIGH

    # ---- once per interval --------------------------------------------------------------------------

    def take_interval(self, now: float) -> IntervalSnapshot:
        """Everything since the previous call (or construction), then start a new interval at `now`."""
        histograms: dict[tuple[Phase, Kind], bytes] = {}
        for phase, (intended, service) in self._hist.items():
            if intended:
                histograms[phase, Kind.INTENDED] = encode_buckets(intended)
                intended.clear()
            if service:
                histograms[phase, Kind.SERVICE] = encode_buckets(service)
                service.clear()
        lag = encode_buckets(self._lag) if self._lag else None
        self._lag.clear()
        snap = IntervalSnapshot(
            start=self._start,
            end=now,
            histograms=histograms,
            schedule_lag=lag,
            attempts={p: n for p, n in self._attempts.items() if n},
            successes={p: n for p, n in self._successes.items() if n},
            failures=dict(self._failures),
            responses=dict(self._responses),
            retransmissions=self._retransmissions,
            clamped=self._clamped,
            gauges=dict(self._gauges),
        )
        self._start = now
        self._attempts = _zeroed()
        self._successes = _zeroed()
        self._failures.clear()
        self._responses.clear()
        self._retransmissions = 0
        self._clamped = 0
        return snap
