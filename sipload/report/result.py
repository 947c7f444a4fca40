"""RunResult: the one model every output (summary.json, junit.xml, endpoints.csv, report.html) reads.

No writer computes a number of its own; everything is decided here. `build_result` turns the parent's
`Aggregate` plus what the engine knows (scenario, target, timing, thresholds already evaluated on
`Aggregate.metric_values()`, per-endpoint states) into a RunResult.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sipload.metrics.aggregate import Aggregate, PhaseCounts
from sipload.metrics.phases import Kind, Phase
from sipload.report.runinfo import RunInfo
from sipload.thresholds import ThresholdResult

# The generator is reported as behind its schedule when an arrival was sent later than this.
LAG_NOTE_MS = 10.0


@dataclass(frozen=True, slots=True)
class EndpointState:
    """One simulated endpoint at the end of the run. There is no field for a password, by design."""

    index: int
    username: str
    state: str  # e.g. "registered", "failed", "unregistered"
    last_status: int | None  # last final status code seen, None if none
    failure_reason: str  # a FailureReason value, or "" when the endpoint did not fail
    registrations: int
    refreshes: int
    contact: str
    call_id: str
    group: str = "default"  # the device group, and what its behaviours did to this endpoint
    vanished: int = 0
    returned: int = 0
    flaps: int = 0
    avalanches: int = 0
    failovers: int = 0
    keepalive_pings: int = 0          # OPTIONS keep-alives (UDP): sent, answered, unanswered
    keepalive_answered: int = 0
    keepalive_unanswered: int = 0
    outbound_required: int = 0        # initial registrations whose 200 had Require: outbound (RFC 5626)
    pub_gruu: bool = False            # a 200 gave the binding a pub-gruu (RFC 5627)
    transitions: tuple[tuple[str, float], ...] = ()  # (registered|unregistered|offline, Unix time): events=true


@dataclass(frozen=True, slots=True)
class Rate:
    offered: float  # arrivals per second the schedule asked for
    achieved: float | None  # successful initial registrations per second over the arrival period


@dataclass(slots=True)
class RunResult:
    scenario: str
    target: str
    started_at: str  # ISO-8601, UTC
    duration_s: float
    complete: bool
    interrupted_by: str | None
    endpoints: int
    registrations: PhaseCounts
    refreshes: PhaseCounts
    unregistrations: PhaseCounts
    failures: dict[str, int]  # reason -> count, all phases
    failures_by_phase: dict[str, dict[str, int]]  # phase -> reason -> count
    responses: dict[str, int]  # status code (as text) -> count
    retransmissions: int
    latency_ms: dict[str, dict[str, float]]  # phase -> {p50,p90,p95,p99,p99.9,max,mean,count}, intended
    service_ms: dict[str, dict[str, float]]  # the same from the actual send
    rate: Rate
    schedule_lag_ms: dict[str, float]  # {p50, p99, max}; {} when nothing was recorded
    kernel_drops: int
    thresholds: list[ThresholdResult] = field(default_factory=list)
    endpoint_states: list[EndpointState] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    crosscheck: dict[str, Any] | None = None  # the provider cross-check (CrossCheckResult.to_dict()), if any
    events: dict[str, Any] | None = None  # the provider's webhooks against the transitions (EventsResult.to_dict())
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)  # per device group
    keepalive: dict[str, int] = field(default_factory=dict)  # keep-alive/outbound/GRUU totals of the run
    engines: dict[str, str] = field(default_factory=dict)  # device group -> "native" or "python"
    run: RunInfo | None = None  # version, host, workers, engine, effective load (report/runinfo.py)
    # a stepped run's capacity analysis (report/capacity.py: knee, breaking point, verdict, steps), else None
    capacity: dict[str, Any] | None = None


    def passed(self) -> bool:
        """True when the run completed and every threshold passed (an interrupted run never passes)."""
        return self.complete and all(t.passed for t in self.thresholds)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (everything but the per-endpoint states, which go to endpoints.csv)."""
        d = asdict(replace(self, endpoint_states=[]))
        del d["endpoint_states"]
        d["passed"] = self.passed()
        return d


STREAM_KEEPALIVE_KEYS = ("crlf_pings", "crlf_pongs", "crlf_missed")


def group_counts(states: Sequence[EndpointState],
                 stream_keepalives: Mapping[str, Sequence[int]] | None = None) -> dict[str, dict[str, Any]]:
    """Per device group: endpoints, final states and what the behaviours did.

    Keep-alives: `keepalive_pings` / `_answered` / `_unanswered` are the devices' OPTIONS pings (UDP);
    `crlf_pings` / `_pongs` / `_missed` the pings of the stream channels the group's devices use
    (`stream_keepalives`: [pings, pongs, missed] per group name; WebSocket ping frames on WS/WSS; a
    channel shared by several groups counts in each). `outbound_required`: initial registrations the
    registrar answered with Require: outbound; `pub_gruus`: devices that got a pub-gruu.
    """
    groups: dict[str, dict[str, Any]] = {}
    for e in states:
        g = groups.get(e.group)
        if g is None:
            g = groups[e.group] = {"endpoints": 0, "states": {}, "vanished": 0, "returned": 0, "flaps": 0,
                                   "avalanche_registrations": 0, "failovers": 0, "keepalive_pings": 0,
                                   "keepalive_answered": 0, "keepalive_unanswered": 0,
                                   **dict.fromkeys(STREAM_KEEPALIVE_KEYS, 0), "outbound_required": 0, "pub_gruus": 0}
        g["endpoints"] += 1
        g["states"][e.state] = g["states"].get(e.state, 0) + 1
        g["vanished"] += e.vanished
        g["returned"] += e.returned
        g["flaps"] += e.flaps
        g["avalanche_registrations"] += e.avalanches
        g["failovers"] += e.failovers
        g["keepalive_pings"] += e.keepalive_pings
        g["keepalive_answered"] += e.keepalive_answered
        g["keepalive_unanswered"] += e.keepalive_unanswered
        g["outbound_required"] += e.outbound_required
        g["pub_gruus"] += int(e.pub_gruu)
    for name, counts in (stream_keepalives or {}).items():
        if name in groups:
            for key, n in zip(STREAM_KEEPALIVE_KEYS, counts, strict=True):
                groups[name][key] += n
    return groups


def keepalive_totals(groups: Mapping[str, Mapping[str, Any]], stream_total: Sequence[int] = (0, 0, 0)) -> dict[
        str, int]:
    """The run's keep-alive, outbound and GRUU totals: the groups' sums, and each stream channel once."""
    out = {key: sum(int(g[key]) for g in groups.values()) for key in (
        "keepalive_pings", "keepalive_answered", "keepalive_unanswered", "outbound_required", "pub_gruus")}
    out.update(zip(STREAM_KEEPALIVE_KEYS, (int(n) for n in stream_total), strict=True))
    return out


def iso_utc(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_result(
    agg: Aggregate,
    *,
    scenario: str,
    target: str,
    duration_s: float,
    complete: bool,
    endpoints: int,
    offered_rate: float,
    arrival_period_s: float,
    thresholds: Sequence[ThresholdResult] = (),
    endpoint_states: Sequence[EndpointState] = (),
    interrupted_by: str | None = None,
    notes: Sequence[str] = (),
    stream_keepalives: Mapping[str, Sequence[int]] | None = None,
    stream_keepalive_total: Sequence[int] = (0, 0, 0),
) -> RunResult:
    """Everything the outputs show, from the merged metrics. `thresholds` are already evaluated on
    `agg.metric_values(arrival_period_s=..., offered_rate=...)` with the same two numbers."""
    reg = agg.counts(Phase.REGISTER)
    lag = agg.schedule_lag_summary()
    kernel_drops = agg.gauge_total("kernel_drops")
    all_notes = list(notes)
    if not complete:
        all_notes.append(f"run interrupted by {interrupted_by}" if interrupted_by else "run incomplete")
    if lag and lag["max"] > LAG_NOTE_MS:
        all_notes.append(f"generator fell behind its schedule by up to {lag['max']:.0f} ms")
    if kernel_drops:
        all_notes.append(f"the kernel dropped {kernel_drops} datagrams on the generator's sockets")
    if agg.clamped:
        all_notes.append(f"{agg.clamped} latency values were outside 0 .. 1 h and were clamped")
    groups = group_counts(endpoint_states, stream_keepalives)
    return RunResult(
        scenario=scenario,
        target=target,
        started_at=iso_utc(agg.started_at_unix),
        duration_s=float(duration_s),
        complete=complete,
        interrupted_by=interrupted_by,
        endpoints=endpoints,
        registrations=reg,
        refreshes=agg.counts(Phase.REFRESH),
        unregistrations=agg.counts(Phase.UNREGISTER),
        failures=agg.failures_by_reason(),
        failures_by_phase=agg.failures_by_phase(),
        responses={str(code): n for code, n in agg.responses().items()},
        retransmissions=agg.retransmissions,
        latency_ms=agg.latency_summary(Kind.INTENDED),
        service_ms=agg.latency_summary(Kind.SERVICE),
        rate=Rate(
            offered=float(offered_rate),
            achieved=reg.succeeded / arrival_period_s if arrival_period_s > 0 else None,
        ),
        schedule_lag_ms={k: lag[k] for k in ("p50", "p99", "max") if k in lag},
        kernel_drops=kernel_drops,
        thresholds=list(thresholds),
        endpoint_states=list(endpoint_states),
        notes=all_notes,
        groups=groups,
        keepalive=keepalive_totals(groups, stream_keepalive_total),
    )
