"""A registrar pushing back on a whole fleet: 423 Interval Too Brief and 503 with Retry-After,
on virtual time over the in-memory network. What is asserted is on the wire: the requests the endpoints
sent (their Expires, when each retry left) and the registrar's own counters and bindings."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import trio
import trio.testing

from sipload.scenario import Scenario, parse_scenario
from sipload.testing.harness import run_memory

DEVICES = 200


def pushback(registrar: str) -> Scenario:
    return parse_scenario(f"""
name = "pushback"
seed = 5
[target]
registrar = "embedded"
[endpoints]
count = {DEVICES}
expires = 60
refresh_jitter = 0.0
[load]
rate = 50
duration = "2m"
max_in_flight = 1000
unregister_timeout = "60s"
[timers]
max_retries = 6
[registrar]
password = "pw-{{user}}"
nonce_lifetime = "1h"
{registrar}
""", Path("pushback.toml"))


async def test_every_device_answers_423_with_the_registrars_min_expires(
        autojump_clock: trio.testing.MockClock) -> None:
    seen_bound: list[int] = []
    worker, core, wire, _ = await run_memory(
        pushback("min_expires = 300\nmax_expires = 3600"),
        hold=lambda w, c, _: seen_bound.append(c.store.count(trio.current_time()).bindings))
    assert core.counters.responses[423] == DEVICES          # each asked for 60 s once, authenticated
    asked = Counter(req.headers.get("expires") for _, req in wire.requests)
    assert set(asked) == {"60", "300", "0"}                  # then Min-Expires, then the unregister
    for user, requests in wire.by_user().items():
        expires = [req.headers.get("expires") for _, req in requests]
        first_300 = expires.index("300")
        assert set(expires[:first_300]) == {"60"}, (user, expires)   # 60 until the 423, never again after
        assert "60" not in expires[first_300:], (user, expires)
    assert seen_bound == [DEVICES]                          # all bound, at the registrar, at the hold's end
    assert worker.report.left_bound == 0
    assert all(e.state == "unregistered" for e in worker.report.endpoints)


async def test_503_with_retry_after_is_honoured_by_every_device(autojump_clock: trio.testing.MockClock) -> None:
    worker, core, wire, _ = await run_memory(pushback("min_expires = 1\nerror_503 = 0.3\nretry_after = 7"))
    refused = core.counters.responses[503]
    assert refused > DEVICES // 5                            # ~30 % of all requests, registrations included
    # each 503 was retried, none given up on; only a refresh refused just before the end may be superseded by
    # the device's unregister instead
    assert 0 <= refused - worker.tally.retries <= 4, (refused, worker.tally.retries)
    gaps = []
    for requests in wire.by_user().values():
        times = [at for at, req in requests if req.headers.get("expires") != "0"]  # not the final unregister
        gaps += [b - a for a, b in itertools.pairwise(times)]
    # a retry after a 503 leaves 7 s later (Retry-After), not after the 1 s backoff the device would
    # use on its own; a challenge is answered at once (a 0-delay network)
    assert not [g for g in gaps if 1e-6 < g < 7 - 1e-6], sorted(gaps)[:20]
    assert sum(1 for g in gaps if abs(g - 7) < 1e-6) >= refused // 2
    assert all(e.state in ("unregistered",) for e in worker.report.endpoints), Counter(
        e.state for e in worker.report.endpoints)
