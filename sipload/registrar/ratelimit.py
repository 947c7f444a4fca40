"""Challenges rate-limited per source address: a token bucket per source IP, bounded memory.

A 401 is larger than the REGISTER that asked for it and costs a nonce: a registrar reachable from
other hosts should not answer a flood of unauthenticated REGISTERs (from spoofed addresses, too)
with as many challenges. `ChallengeLimiter.allow(source, now)` says whether one more challenge
may go to `source`: each source has `burst` tokens, refilled at `rate` per second. Over the limit
the registrar sends nothing (no reflection) and counts it. At most `max_sources` buckets are kept,
the least recently used forgotten first (a forgotten source starts with a full bucket again).

Time is a parameter (`now`), as everywhere in the registrar core.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict

DEFAULT_RATE = 100.0      # challenges per second per source, when the registrar listens beyond loopback
MAX_SOURCES = 65_536


class ChallengeLimiter:
    __slots__ = ("_buckets", "burst", "max_sources", "rate")

    def __init__(self, rate: float, burst: float | None = None, max_sources: int = MAX_SOURCES) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"challenge_rate: must be > 0 per second, got {rate}")
        burst = 2 * rate if burst is None else burst
        if not (math.isfinite(burst) and burst >= 1):
            raise ValueError(f"challenge_burst: must be >= 1, got {burst}")
        if max_sources < 1:
            raise ValueError("max_sources: must be >= 1")
        self.rate = rate
        self.burst = float(burst)
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # source -> (tokens, at)

    def allow(self, source: str, now: float) -> bool:
        """Take one token of `source`'s bucket; False when it is empty (the caller sends nothing)."""
        buckets = self._buckets
        entry = buckets.pop(source, None)
        if entry is None:
            tokens = self.burst
        else:
            tokens, at = entry
            tokens = min(self.burst, tokens + max(0.0, now - at) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        buckets[source] = (tokens, now)
        if len(buckets) > self.max_sources:
            buckets.popitem(last=False)
        return allowed

    def __len__(self) -> int:
        return len(self._buckets)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def default_challenge_rate(hosts: list[str]) -> float:
    """No limit when every listen address is loopback (a load test from one host), else DEFAULT_RATE."""
    return 0.0 if hosts and all(is_loopback(h) for h in hosts) else DEFAULT_RATE
