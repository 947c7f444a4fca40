"""Provider events against what the endpoints did: latency per event type, and what went wrong.

Theory of operation
-------------------
Input: per user, the transitions the endpoint saw (`EndpointState.transitions`: registered,
unregistered, offline, each with its Unix time), and the events the webhook receiver recorded (`Received`:
arrival time, event name, deviceId), with `user_of(deviceId)` naming the run's user of a device.

`match_events` takes the received events in arrival order. An event of a device no user of the run has
is `unknown_device`. Otherwise it is matched to the latest not yet matched transition of its kind for
that user that happened before it arrived (`SLACK` seconds of clock skew allowed: the provider may send
it before sipload has read the 200 OK), so that one lost event does not shift the later ones; its latency is the
arrival time less the transition's time (0 when it came first). An event with no such transition is a
`duplicate` when a transition of its kind was matched already, else `unexpected` (e.g. an offline the
endpoint never caused). A match for a transition earlier than one matched before for the same user is
`out_of_order`. Transitions left unmatched are `missing`.

Latencies go into one HdrHistogram per event type (µs, up to an hour); `to_dict()` is summary.json's
`events`, `metric_values()` the `webhook.*` values thresholds read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sipload.metrics.aggregate import summarize
from sipload.metrics.phases import HIGHEST_US, Histogram
from sipload.providers.webhook_receiver import Received
from sipload.thresholds import WEBHOOK_EVENTS, WEBHOOK_TOTALS

KINDS = WEBHOOK_EVENTS
EVENT_NAMES = {f"device.{kind}": kind for kind in KINDS}
SLACK = 1.0
TOTALS = WEBHOOK_TOTALS


@dataclass
class KindTally:
    expected: int = 0
    received: int = 0
    matched: int = 0
    duplicates: int = 0
    unexpected: int = 0
    latency: Histogram = field(default_factory=Histogram)

    @property
    def missing(self) -> int:
        return self.expected - self.matched

    def to_dict(self) -> dict[str, Any]:
        return {"expected": self.expected, "received": self.received, "matched": self.matched,
                "missing": self.missing, "duplicates": self.duplicates, "unexpected": self.unexpected,
                "latency_ms": summarize(self.latency)}


@dataclass
class EventsResult:
    provider: str
    kinds: dict[str, KindTally] = field(default_factory=lambda: {k: KindTally() for k in KINDS})
    out_of_order: int = 0
    unknown_device: int = 0
    unknown_devices: list[str] = field(default_factory=list)   # the first few
    other_events: int = 0          # event names sipload does not watch
    rejected: int = 0              # bodies the receiver refused (not JSON events)
    overflow: int = 0              # events past the receiver's bound, not kept
    waited_s: float = 0.0          # how long the run waited for the last events after it ended

    def total(self, name: str) -> int:
        if name == "out_of_order":
            return self.out_of_order
        if name == "unknown_device":
            return self.unknown_device
        return sum(getattr(t, name) for t in self.kinds.values())

    def to_dict(self) -> dict[str, Any]:
        return {"provider": self.provider, "events": {k: t.to_dict() for k, t in self.kinds.items()},
                **{name: self.total(name) for name in TOTALS},
                "unknown_devices": list(self.unknown_devices), "other_events": self.other_events,
                "rejected": self.rejected, "overflow": self.overflow, "waited_s": round(self.waited_s, 3)}

    def metric_values(self) -> dict[str, float]:
        """`webhook.<kind>.<stat>` (ms) and `.count` (matched), `webhook.<total>` counts."""
        values: dict[str, float] = {}
        for kind, tally in self.kinds.items():
            for stat, value in summarize(tally.latency).items():
                values[f"webhook.{kind}.{stat}"] = value
            values[f"webhook.{kind}.count"] = float(tally.matched)
        for name in TOTALS:
            values[f"webhook.{name}"] = float(self.total(name))
        return values

    @property
    def pending(self) -> int:
        """Transitions not matched yet."""
        return self.total("missing")


def match_events(transitions: Mapping[str, Sequence[tuple[str, float]]], received: Iterable[Received],
                 user_of: Callable[[str], str | None], provider: str = "audian",
                 max_listed: int = 20) -> EventsResult:
    """Match received events to the users' transitions (see the module docstring)."""
    result = EventsResult(provider)
    kinds = result.kinds
    for timeline in transitions.values():
        for went, _ in timeline:
            kinds[went].expected += 1
    taken: dict[str, set[int]] = {}
    latest: dict[str, int] = {}
    for event in sorted(received, key=lambda e: e.at):
        kind = EVENT_NAMES.get(event.event)
        if kind is None:
            result.other_events += 1
            continue
        tally = kinds[kind]
        tally.received += 1
        user = user_of(event.device_id) if event.device_id is not None else None
        if user is None or user not in transitions:
            result.unknown_device += 1
            if len(result.unknown_devices) < max_listed:
                result.unknown_devices.append(str(event.device_id))
            continue
        timeline = transitions[user]
        used = taken.setdefault(user, set())
        index = next((i for i in range(len(timeline) - 1, -1, -1)
                      if timeline[i][0] == kind and i not in used and timeline[i][1] <= event.at + SLACK), None)
        if index is None:
            if any(timeline[i][0] == kind for i in used):
                tally.duplicates += 1
            else:
                tally.unexpected += 1
            continue
        used.add(index)
        tally.matched += 1
        delay_us = int(max(0.0, event.at - timeline[index][1]) * 1_000_000)
        tally.latency.record(max(1, min(delay_us, HIGHEST_US)))
        if index < latest.get(user, -1):
            result.out_of_order += 1
        latest[user] = max(index, latest.get(user, -1))
    return result


def events_line(result: EventsResult) -> str:
    """'registered 100/100 p50 3.1 ms p99 9.8 ms; unregistered ...; missing 0, duplicates 0, ...'."""
    parts = []
    for kind, tally in result.kinds.items():
        if not tally.expected and not tally.received:
            continue
        stats = summarize(tally.latency)
        timing = f" p50 {stats['p50']:.1f} ms p99 {stats['p99']:.1f} ms" if stats else ""
        parts.append(f"{kind} {tally.matched}/{tally.expected}{timing}")
    totals = ", ".join(f"{name.replace('_', ' ')} {result.total(name)}" for name in TOTALS[:-1])
    return "; ".join([*parts, totals]) + f" (waited {result.waited_s:.1f} s)"
