"""The scheduler's tick (load.tick): sends that fall due within one tick go out together, responses never wait.

On virtual time and the in-memory network: every REGISTER is stamped with the (virtual) time it left.
"""

from __future__ import annotations

import gc
import itertools
from pathlib import Path

import pytest
import trio
import trio.testing

from sipload.gcpolicy import FULL_COLLECTION_EVERY
from sipload.scenario import Scenario, ScenarioError, parse_scenario
from sipload.sip import Request
from sipload.testing.harness import memory_worker

BODY = """
name = "tick"
seed = 3
[target]
registrar = "embedded"
domain = "sipload.test"
[endpoints]
count = COUNT
username = "user{n}"
password = "pw-user{n}"
expires = 600
[load]
rate = RATE
duration = "2s"
unregister = false
TICK
[registrar]
min_expires = 60
"""


def scenario(count: int, rate: float, tick: str | None) -> Scenario:
    text = BODY.replace("COUNT", str(count)).replace("RATE", str(rate))
    text = text.replace("TICK", f'tick = "{tick}"' if tick is not None else "")
    return parse_scenario(text, Path("tick.toml"))


async def sends(sc: Scenario, delay: float = 0.0) -> list[tuple[float, Request]]:
    """(virtual time, request) of everything the worker sent, times from the worker's start."""
    worker, _core, wire, _agg = memory_worker(sc, delay=delay)
    start = trio.current_time()
    report = await worker.run()
    assert sum(e.registrations for e in report.endpoints) == sc.endpoints.count
    return [(t - start, m) for t, m in wire.requests]


def first_registers(wire: list[tuple[float, Request]]) -> list[float]:
    return [t for t, m in wire if m.method == "REGISTER" and "authorization" not in m.headers]



def batches(times: list[float]) -> list[float]:
    return sorted(set(times))


async def test_arrivals_closer_than_a_tick_go_out_together_and_no_later_than_one_tick(
        autojump_clock: trio.testing.MockClock) -> None:
    sc = scenario(40, 4000, "1ms")          # an arrival every 0.25 ms
    times = first_registers(await sends(sc))
    assert len(times) == 40
    intended = [sc.load.arrival_time(k) for k in range(40)]
    lags = [t - i for t, i in zip(times, intended, strict=True)]
    assert min(lags) >= 0
    assert max(lags) <= 0.001 + 1e-9            # never more than one tick late
    distinct = batches(times)
    assert len(distinct) < 20                    # ~10 wake-ups for 40 arrivals, not 40
    gaps = [b - a for a, b in itertools.pairwise(distinct)]
    assert min(gaps) >= 0.001 - 1e-9             # wake-ups at least a tick apart


async def test_tick_zero_sends_each_arrival_at_its_intended_time(autojump_clock: trio.testing.MockClock) -> None:
    sc = scenario(40, 4000, "0")
    times = first_registers(await sends(sc))
    intended = [sc.load.arrival_time(k) for k in range(40)]
    assert times == pytest.approx(intended, abs=1e-9)
    assert len(batches(times)) == 40


async def test_arrivals_a_tick_or_more_apart_are_not_delayed(autojump_clock: trio.testing.MockClock) -> None:
    sc = scenario(20, 500, None)            # default tick 1 ms; an arrival every 2 ms
    assert sc.load.tick == 0.001
    times = first_registers(await sends(sc))
    intended = [sc.load.arrival_time(k) for k in range(20)]
    assert times == pytest.approx(intended, abs=1e-9)


async def test_answers_are_taken_as_they_arrive_not_at_the_tick(autojump_clock: trio.testing.MockClock) -> None:
    # 10 ms ticks, 0.3 ms each way: the REGISTER with credentials leaves when the 401 arrives, 0.6 ms after
    # the first one, not at the next tick
    sc = scenario(10, 5000, "10ms")
    wire = await sends(sc, delay=0.0003)
    calls: dict[str, list[float]] = {}
    for t, m in wire:
        calls.setdefault(str(m.headers.get("call-id")), []).append(t)
    assert len(calls) == 10
    for first, second in calls.values():
        assert second - first == pytest.approx(0.0006, abs=1e-9)


@pytest.mark.parametrize(("value", "message"), [
    ('"200ms"', "load.tick: must be at most 100ms (0 = a wake-up for each deadline)"),
    ('"-1ms"', "load.tick: must be"),
    ('"soon"', "load.tick: must be"),
])
def test_bad_ticks_name_the_field(value: str, message: str) -> None:
    text = BODY.replace("COUNT", "5").replace("RATE", "10").replace("TICK", f"tick = {value}")
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, Path("tick.toml"))
    assert message in str(info.value)
    assert "tick.toml" in str(info.value)


async def test_the_endpoints_are_out_of_the_collectors_passes_during_the_run_only(
        autojump_clock: trio.testing.MockClock) -> None:
    sc = scenario(200, 1000, None)
    before, thresholds = gc.get_freeze_count(), gc.get_threshold()
    during: list[tuple[int, int]] = []
    worker, _core, _wire, _agg = memory_worker(
        sc, sink=lambda snap: during.append((gc.get_freeze_count(), gc.get_threshold()[2])))
    await worker.run()
    assert len(during) >= 2
    frozen, full_every = during[0]
    assert frozen >= before + 200 * 3           # each endpoint: several tracked objects
    assert full_every >= FULL_COLLECTION_EVERY  # full collections rarer while the run holds them
    assert (gc.get_freeze_count(), gc.get_threshold()) == (before, thresholds)


async def test_a_slot_freed_under_max_in_flight_is_filled_at_the_next_tick(
        autojump_clock: trio.testing.MockClock) -> None:
    # 2 in flight at most, 8 ms per registration (two round trips of 4 ms): answers free slots all the time, and
    # the held-back arrivals still leave one batch per tick, not one wake-up per answer
    text = BODY.replace("COUNT", "12").replace("RATE", "1000").replace("TICK", 'tick = "5ms"\nmax_in_flight = 2')
    sc = parse_scenario(text, Path("tick.toml"))
    times = first_registers(await sends(sc, delay=0.002))
    assert len(times) == 12
    distinct = batches(times)
    assert min(b - a for a, b in itertools.pairwise(distinct)) >= 0.005 - 1e-9
