"""The parent's view of a run: merges the workers' interval snapshots, writes the interval logs.

Theory of operation: every interval, the parent calls `add(snapshot, worker)` once per worker, then
`flush_interval(end_unix)` once. `add` decodes each histogram once and adds it to the cumulative
histogram (and, when logs are open, to this interval's merged histogram); counters are summed; gauges
are kept per worker (latest value) and summed on read. `flush_interval` closes the interval: it writes
one merged line per log file (an empty histogram when a phase saw nothing, so every file has one line
per interval) and computes the live `Progress` (percentiles: once per interval, here, never per
request). Because merging is a sum, N workers yield exactly the totals of one recorder fed every stream.

Logs (after `open_logs(dir)`): `<phase>.hlog` (latency from the intended start), `<phase>.service.hlog`
(from the actual send) and `schedule_lag.hlog`, in HdrHistogram's interval log format (values in µs;
the max column in ms), with StartTime/BaseTime headers and interval timestamps relative to BaseTime,
readable by `hdrh.log.HistogramLogReader` and HdrHistogram's Java tools. Lines are flushed per interval,
so a killed run keeps every finished interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from hdrh.log import HistogramLogWriter

from sipload.metrics.phases import PERCENTILES, Histogram, Kind, Phase
from sipload.metrics.recorder import IntervalSnapshot
from sipload.sip.failures import FailureReason

_LAG_LOG = "schedule_lag"
_SUCCESS_RATE_PHASES = (Phase.REGISTER, Phase.REFRESH, Phase.UNREGISTER)
_COUNT_NAMES = {
    Phase.REGISTER: "registrations",
    Phase.REFRESH: "refreshes",
    Phase.UNREGISTER: "unregistrations",
}


def stat_name(percentile: float) -> str:
    """50.0 -> "p50", 99.9 -> "p99.9"."""
    return f"p{percentile:g}"


def summarize(h: Histogram) -> dict[str, float]:
    """{p50, p90, p95, p99, p99.9, max, mean, count} in ms; {} when the histogram is empty."""
    if not h.count:
        return {}
    out = {stat_name(p): v / 1000.0 for p, v in h.percentiles_us(PERCENTILES).items()}
    out["max"] = h.max_us / 1000.0
    out["mean"] = h.mean_us / 1000.0
    out["count"] = float(h.count)
    return out


@dataclass(frozen=True, slots=True)
class PhaseCounts:
    attempted: int
    succeeded: int
    failed: int


@dataclass(frozen=True, slots=True)
class Progress:
    """For the live line; as of the end of the last flushed interval."""

    elapsed_s: float
    # successful initial registrations (refreshes) per second of the last interval, over the time the
    # workers' snapshots in it covered (each worker's own, summed over the workers)
    rate_per_s: float
    registered: int  # bindings held now (sum of the workers' latest "registered" gauges)
    in_flight: int
    failures: int  # all phases, since the start
    register_p50_ms: float | None  # cumulative; None before the first registration
    register_p99_ms: float | None
    refresh_per_s: float = 0.0
    timeouts: int = 0  # failures for no final response (Timer F), since the start
    retransmissions: int = 0  # since the start

    def line(self) -> str:
        lat = (
            f"p50 {self.register_p50_ms:.1f} ms p99 {self.register_p99_ms:.1f} ms"
            if self.register_p50_ms is not None and self.register_p99_ms is not None
            else "p50 - p99 -"
        )
        return (
            f"{self.elapsed_s:7.1f}s  {self.rate_per_s:8.1f} reg/s  {self.refresh_per_s:7.1f} refresh/s"
            f"  registered {self.registered}  in flight {self.in_flight}  failures {self.failures}"
            f" (timeouts {self.timeouts})  retrans {self.retransmissions}  register {lat}"
        )


class _Log:
    __slots__ = ("file", "writer")

    def __init__(self, path: Path, title: str, started_at_unix: float) -> None:
        self.file: TextIO = path.open("w", encoding="utf-8")
        self.writer = HistogramLogWriter(self.file)
        self.writer.output_log_format_version()
        self.writer.output_comment(f"[sipload: {title}; values in microseconds]")
        # hdrh's output_start_time is broken (datetime.iso_format); same line, written here.
        iso = datetime.fromtimestamp(started_at_unix, UTC).isoformat(" ")
        # StartTime rounded DOWN to the ms: never after BaseTime, or HdrHistogram's readers
        # (Python and Java) see the first interval start before StartTime and skip it.
        start_ms = math.floor(started_at_unix * 1000.0) / 1000.0
        self.file.write(f"#[StartTime: {start_ms:.3f} (seconds since epoch), {iso}]\n")
        self.writer.output_base_time(started_at_unix * 1000.0)
        self.writer.base_time = started_at_unix * 1000.0
        self.writer.output_legend()
        self.file.flush()

    def write(self, h: Histogram, start_unix: float, end_unix: float) -> None:
        h.set_times_ms(start_unix * 1000.0, end_unix * 1000.0)
        # start/end 0 -> taken from the histogram's timestamps, relative to base_time.
        self.writer.output_interval_histogram(h.raw, max_value_unit_ratio=1000.0)
        self.file.flush()


class Aggregate:
    def __init__(self, started_at_unix: float) -> None:
        self._started = started_at_unix
        self._cum: dict[tuple[Phase, Kind], Histogram] = {(p, k): Histogram() for p in Phase for k in Kind}
        self._cum_lag = Histogram()
        self._attempts = dict.fromkeys(Phase, 0)
        self._successes = dict.fromkeys(Phase, 0)
        self._failures: dict[tuple[Phase, FailureReason], int] = {}
        self._responses: dict[int, int] = {}
        self._retransmissions = 0
        self._clamped = 0
        self._gauges: dict[int, dict[str, int]] = {}
        # the open interval
        self._last_flush = started_at_unix
        self._ivl_done: dict[int, list[float]] = {}
        self._ivl: dict[str, Histogram] = {}
        self._logs: dict[str, _Log] = {}
        self._progress = Progress(0.0, 0.0, 0, 0, 0, None, None)

    @property
    def started_at_unix(self) -> float:
        return self._started

    # ---- merging ------------------------------------------------------------------------------------

    def add(self, snap: IntervalSnapshot, worker: int = 0) -> None:
        logging = bool(self._logs)
        for (phase, kind), encoded in snap.histograms.items():
            h = Histogram.decode(encoded)
            self._cum[phase, kind].add(h)
            if logging:
                self._interval_hist(_log_name(phase, kind)).add(h)
        if snap.schedule_lag is not None:
            h = Histogram.decode(snap.schedule_lag)
            self._cum_lag.add(h)
            if logging:
                self._interval_hist(_LAG_LOG).add(h)
        for p, n in snap.attempts.items():
            self._attempts[p] += n
        for p, n in snap.successes.items():
            self._successes[p] += n
        done = self._ivl_done.setdefault(worker, [0, 0, 0.0])   # registrations, refreshes, seconds covered
        done[0] += snap.successes.get(Phase.REGISTER, 0)
        done[1] += snap.successes.get(Phase.REFRESH, 0)
        done[2] += max(0.0, snap.end - snap.start)
        for key, n in snap.failures.items():
            self._failures[key] = self._failures.get(key, 0) + n
        for code, n in snap.responses.items():
            self._responses[code] = self._responses.get(code, 0) + n
        self._retransmissions += snap.retransmissions
        self._clamped += snap.clamped
        self._gauges[worker] = dict(snap.gauges)

    def _interval_hist(self, name: str) -> Histogram:
        h = self._ivl.get(name)
        if h is None:
            h = self._ivl[name] = Histogram()
        return h

    def flush_interval(self, end_unix: float) -> None:
        """Close the interval [previous flush (or start), end_unix]: log lines, then `progress()`."""
        for name, log in self._logs.items():
            log.write(self._ivl.get(name) or Histogram(), self._last_flush, end_unix)
        self._ivl = {}
        length = end_unix - self._last_flush
        reg = self._cum[Phase.REGISTER, Kind.INTENDED]
        pct = reg.percentiles_us((50.0, 99.0)) if reg.count else {}
        self._progress = Progress(
            elapsed_s=end_unix - self._started,
            rate_per_s=self._covered_rate(0, length),
            refresh_per_s=self._covered_rate(1, length),
            timeouts=self.failures_by_reason().get(str(FailureReason.TIMEOUT), 0),
            retransmissions=self._retransmissions,
            registered=self.gauge_total("registered"),
            in_flight=self.gauge_total("in_flight"),
            failures=sum(self._failures.values()),
            register_p50_ms=pct[50.0] / 1000.0 if pct else None,
            register_p99_ms=pct[99.0] / 1000.0 if pct else None,
        )
        self._last_flush = end_unix
        self._ivl_done = {}

    def _covered_rate(self, what: int, length: float) -> float:
        """Successes a second over the span each worker's snapshots covered (the flush interval's own
        length for a worker whose snapshots had none, e.g. the last of a run)."""
        return sum(d[what] / (d[2] if d[2] > 0 else length) for d in self._ivl_done.values()
                   if d[2] > 0 or length > 0)

    def progress(self) -> Progress:
        return self._progress

    # ---- interval logs ------------------------------------------------------------------------------

    def open_logs(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.close_logs()
        for p in Phase:
            for k in Kind:
                title = f"{p} latency from the {'intended start' if k is Kind.INTENDED else 'actual send'}"
                name = _log_name(p, k)
                self._logs[name] = _Log(out_dir / f"{name}.hlog", title, self._started)
        self._logs[_LAG_LOG] = _Log(out_dir / f"{_LAG_LOG}.hlog", "schedule lag", self._started)

    def close_logs(self) -> None:
        logs, self._logs = self._logs, {}
        for log in logs.values():
            log.file.close()

    # ---- reading ------------------------------------------------------------------------------------

    def histogram(self, phase: Phase, kind: Kind = Kind.INTENDED) -> Histogram:
        """The cumulative histogram (µs). Read-only by convention."""
        return self._cum[phase, kind]

    def latency_summary(self, kind: Kind = Kind.INTENDED) -> dict[str, dict[str, float]]:
        """phase -> {p50, p90, p95, p99, p99.9, max, mean, count} in ms; phases with no samples omitted."""
        out: dict[str, dict[str, float]] = {}
        for p in Phase:
            s = summarize(self._cum[p, kind])
            if s:
                out[str(p)] = s
        return out

    def schedule_lag_summary(self) -> dict[str, float]:
        """{p50, p90, p95, p99, p99.9, max, mean, count} in ms; {} when nothing was recorded."""
        return summarize(self._cum_lag)

    def counts(self, phase: Phase) -> PhaseCounts:
        failed = sum(n for (p, _), n in self._failures.items() if p is phase)
        return PhaseCounts(self._attempts[phase], self._successes[phase], failed)

    def failures_by_reason(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for (_, reason), n in self._failures.items():
            out[str(reason)] = out.get(str(reason), 0) + n
        return dict(sorted(out.items()))

    def failures_by_phase(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for (phase, reason), n in sorted(self._failures.items()):
            out.setdefault(str(phase), {})[str(reason)] = n
        return out

    def responses(self) -> dict[int, int]:
        return dict(sorted(self._responses.items()))

    @property
    def retransmissions(self) -> int:
        return self._retransmissions

    @property
    def clamped(self) -> int:
        """Values outside 0 .. 1 h that the workers clamped."""
        return self._clamped

    def gauge_total(self, name: str) -> int:
        """Sum over workers of each worker's latest value of the gauge (0 if never set)."""
        return sum(g.get(name, 0) for g in self._gauges.values())

    def metric_values(
        self, *, arrival_period_s: float | None = None, offered_rate: float | None = None
    ) -> dict[str, float]:
        """The flat names thresholds use. A metric with no data is absent (never a made-up 0 or 100),
        except counts, which are 0. `rate.achieved` needs `arrival_period_s` > 0, `rate.offered`
        `offered_rate`."""
        v: dict[str, float] = {}
        for kind, suffix in ((Kind.INTENDED, ""), (Kind.SERVICE, ".service")):
            for p in Phase:
                s = summarize(self._cum[p, kind])
                v[f"{p}{suffix}.count"] = 0.0
                for stat, x in s.items():
                    v[f"{p}{suffix}.{stat}"] = x
        for p in _SUCCESS_RATE_PHASES:
            c = self.counts(p)
            if c.succeeded + c.failed:
                v[f"{p}.success_rate"] = 100.0 * c.succeeded / (c.succeeded + c.failed)
        for p, name in _COUNT_NAMES.items():
            c = self.counts(p)
            v[f"{name}.attempted"] = float(c.attempted)
            v[f"{name}.succeeded"] = float(c.succeeded)
            v[f"{name}.failed"] = float(c.failed)
        by_reason = self.failures_by_reason()
        v["failures"] = float(sum(by_reason.values()))
        for reason in FailureReason:
            v[f"failures.{reason}"] = float(by_reason.get(str(reason), 0))
        v["timeouts"] = v[f"failures.{FailureReason.TIMEOUT}"]
        v["retransmissions"] = float(self._retransmissions)
        for code, n in self.responses().items():
            v[f"responses.{code}"] = float(n)
        if arrival_period_s is not None and arrival_period_s > 0:
            v["rate.achieved"] = self._successes[Phase.REGISTER] / arrival_period_s
        if offered_rate is not None:
            v["rate.offered"] = float(offered_rate)
        lag = summarize(self._cum_lag)
        for stat in ("p50", "p99", "max"):
            if stat in lag:
                v[f"schedule_lag.{stat}"] = lag[stat]
        v["kernel_drops"] = float(self.gauge_total("kernel_drops"))
        v["registered"] = float(self.gauge_total("registered"))
        return v


def _log_name(phase: Phase, kind: Kind) -> str:
    return str(phase) if kind is Kind.INTENDED else f"{phase}.service"
