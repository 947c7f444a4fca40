"""Counters of the embedded registrar and the lines printed from them (per interval and totals)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sipload.registrar.bindings import StoreCount

LINE_CODES = (200, 401, 403, 423, 503)
_FLEET_COUNTERS = ("outbound_registers", "gruu_registers", "options_answered", "crlf_pings")  # shown when used


@dataclass
class RegistrarCounters:
    """Cumulative since start. Mutated by the core only; read by tests and the stats lines."""

    received: Counter[str] = field(default_factory=Counter)       # requests by method
    responses: Counter[int] = field(default_factory=Counter)      # responses by status code
    challenges: int = 0                                           # 401s sent (stale ones included)
    stale_challenges: int = 0
    auth_ok: int = 0
    auth_failures: Counter[str] = field(default_factory=Counter)  # Verdict value, or a check's name
    drops: int = 0                                                # requests dropped on purpose
    injected_503: int = 0
    retransmissions: int = 0         # requests answered from (or absorbed by) the UDP response cache
    parse_errors: int = 0            # datagrams / stream data that were not SIP
    stray_responses: int = 0         # responses sent to us
    internal_errors: int = 0         # exceptions caught by the server around the core (bugs)
    send_failures: int = 0           # responses the transport could not send
    challenges_limited: int = 0      # challenges not sent: over the per-source rate limit
    outbound_registers: int = 0      # REGISTERs answered 200 with Require: outbound (RFC 5626 §6)
    gruu_registers: int = 0          # REGISTERs answered 200 with pub-gruu / temp-gruu (RFC 5627)
    options_answered: int = 0        # OPTIONS answered (keep-alive pings on UDP)
    crlf_pings: int = 0              # CRLFCRLF pings answered with a CRLF pong (TCP/TLS, RFC 5626 §4.4.1)
    too_brief: int = 0               # REGISTERs answered 423 Interval Too Brief (expires below min-expires)
    briefest_asked: int = 0          # the shortest expires (s) one of them asked

    @property
    def total_received(self) -> int:
        return sum(self.received.values())

    def copy(self) -> RegistrarCounters:
        return RegistrarCounters(
            Counter(self.received), Counter(self.responses), self.challenges, self.stale_challenges,
            self.auth_ok, Counter(self.auth_failures), self.drops, self.injected_503,
            self.retransmissions, self.parse_errors, self.stray_responses, self.internal_errors,
            self.send_failures, self.challenges_limited, self.outbound_registers, self.gruu_registers,
            self.options_answered, self.crlf_pings, self.too_brief, self.briefest_asked,
        )


def _codes(responses: Counter[int], before: Counter[int] | None = None) -> str:
    parts = []
    for code in LINE_CODES:
        value = responses[code] - (before[code] if before is not None else 0)
        parts.append(f"{code}={value}")
    other = sum(v for k, v in responses.items() if k not in LINE_CODES)
    if before is not None:
        other -= sum(v for k, v in before.items() if k not in LINE_CODES)
    parts.append(f"other={other}")
    return " ".join(parts)


def interval_line(elapsed: float, interval: float, now: RegistrarCounters, before: RegistrarCounters,
                  live: StoreCount) -> str:
    """One line per interval: request rate, responses of the interval by code, drops, bindings."""
    rate = (now.total_received - before.total_received) / interval if interval > 0 else 0.0
    return (
        f"[{elapsed:8.1f}s] rx/s={rate:.0f} {_codes(now.responses, before.responses)}"
        f" drops={now.drops - before.drops} live={live.bindings} aors={live.aors}"
    )


def too_brief_text(counters: RegistrarCounters, min_expires: int) -> str | None:
    """What the 423s were about, None when there was none."""
    if not counters.too_brief:
        return None
    return (f"answered 423 Interval Too Brief to {counters.too_brief} REGISTER"
            f"{'s' if counters.too_brief > 1 else ''}: expires down to {counters.briefest_asked} s asked, below "
            f"its min-expires of {min_expires} s (the endpoints then register again with the Min-Expires it sent)")


def totals_line(elapsed: float, counters: RegistrarCounters, live: StoreCount) -> str:
    """The final line: cumulative counts."""
    methods = ",".join(f"{m}:{n}" for m, n in sorted(counters.received.items())) or "none"
    failures = ",".join(f"{k}:{n}" for k, n in sorted(counters.auth_failures.items())) or "none"
    return (
        f"totals after {elapsed:.1f}s: received={counters.total_received} ({methods})"
        f" {_codes(counters.responses)} challenges={counters.challenges}"
        f" auth_failures={failures} drops={counters.drops} injected_503={counters.injected_503}"
        f" retransmissions={counters.retransmissions} parse_errors={counters.parse_errors}"
        f" live={live.bindings} aors={live.aors}"
        + (f" challenges_limited={counters.challenges_limited}" if counters.challenges_limited else "")
        + "".join(f" {name}={getattr(counters, name)}" for name in _FLEET_COUNTERS if getattr(counters, name))
    )
