"""Fleets: device groups and their behaviours, on virtual time over the in-memory network.

Every assertion is about what reached the registrar (the requests on the wire, the core's counters
and binding store) or what the run reports per group; nothing sleeps: trio's autojump clock runs
minutes of virtual time in milliseconds.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from pathlib import Path

import trio
import trio.testing

from sipload.engine.worker import Worker
from sipload.metrics.aggregate import Aggregate
from sipload.registrar.core import RegistrarCore
from sipload.report.result import group_counts
from sipload.scenario import Scenario, load_scenario, parse_scenario
from sipload.scenario.groups import Role
from sipload.testing.harness import Wire, run_memory


def fleet(groups: str, *, count: int = 20, duration: str = "10m", expires: int = 60,
          max_in_flight: int = 1000) -> Scenario:
    text = f"""
name = "fleet"
seed = 11
[target]
registrar = "embedded"
[endpoints]
count = {count}
expires = {expires}
refresh_jitter = 0.0
[load]
rate = 10
duration = "{duration}"
max_in_flight = {max_in_flight}
unregister_timeout = "40s"
[registrar]
password = "pw-{{user}}"
min_expires = 1
nonce_lifetime = "5h"
""" + groups
    return parse_scenario(text, Path("fleet.toml"))


def users_with(worker: Worker, role: Role) -> set[str]:
    return {e.username for e in worker.endpoints if worker.plan.role[e.index] == role}


async def test_groups_get_their_own_user_agent_and_expiry(autojump_clock: trio.testing.MockClock) -> None:
    sc = fleet("""
[[groups]]
name = "desk"
share = 0.75
user_agent = "Desk/1"
[[groups]]
name = "soft"
share = 0.25
expires = 120
user_agent = "Soft/2"
""", duration="1m")
    worker, _core, wire, _ = await run_memory(sc)
    seen: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for _, req in wire.requests:
        if req.headers.get("expires") != "0":
            ua = req.headers.get("user-agent") or ""
            seen[ua].add((req.headers.get("to") or "", req.headers.get("expires") or ""))
    assert {ua for ua in seen} == {"Desk/1", "Soft/2"}
    assert {exp for _, exp in seen["Desk/1"]} == {"60"} and len(seen["Desk/1"]) == 15
    assert {exp for _, exp in seen["Soft/2"]} == {"120"} and len(seen["Soft/2"]) == 5
    counts = group_counts(worker.report.endpoints)
    assert counts["desk"]["endpoints"] == 15 and counts["soft"]["endpoints"] == 5
    assert counts["desk"]["states"] == {"unregistered": 15}


async def test_wrong_passwords_end_auth_rejected(autojump_clock: trio.testing.MockClock) -> None:
    sc = fleet("""
[[groups]]
name = "phones"
share = 1
wrong_passwords = 0.1
""", duration="1m")
    worker, core, _, _ = await run_memory(sc)
    wrong = users_with(worker, Role.WRONG_PASSWORD)
    assert len(wrong) == 2
    failed = {s.username for s in worker.report.endpoints if s.state == "failed:auth_rejected"}
    assert failed == wrong
    assert sum(core.counters.auth_failures.values()) == 2  # the registrar counted each rejection once
    assert core.counters.auth_ok >= 18


async def test_churn_vanishes_without_unregistering_and_returns_afresh(
        autojump_clock: trio.testing.MockClock) -> None:
    sc = fleet("""
[[groups]]
name = "mobiles"
share = 1
churn = { share = 0.5, every = "60s", away = "90s" }
""", expires=30)
    expired_seen: list[str] = []

    def at_hold_end(worker: Worker, core: RegistrarCore, wire: Wire) -> None:
        # a device away for longer than its binding: the registrar let the binding expire on its own
        now = trio.current_time()
        for user, sent in wire.by_user().items():
            if now - sent[-1][0] > 31:
                assert core.store.bindings(f"sip:{user}@sipload.test", now) == ()
                assert core.store.user_state(user, now).state.value == "expired"
                expired_seen.append(user)

    worker, _core, wire, start = await run_memory(sc, hold=at_hold_end)
    churners = users_with(worker, Role.CHURN)
    assert expired_seen and set(expired_seen) <= churners
    assert len(churners) == 10
    counts = group_counts(worker.report.endpoints)["mobiles"]
    assert counts["vanished"] >= 10 and counts["returned"] >= 10
    hold_end = start + sc.load.duration
    for user, sent in wire.by_user().items():
        during = [(at, r) for at, r in sent if at < hold_end]
        call_ids = list(dict.fromkeys(r.headers.get("call-id") for _, r in during))
        if user not in churners:
            assert len(call_ids) == 1, user
            continue
        assert len(call_ids) >= 2, user
        for old, new in itertools.pairwise(call_ids):
            last_old = max(at for at, r in during if r.headers.get("call-id") == old)
            first_new = next((at, r) for at, r in during if r.headers.get("call-id") == new)
            # vanished: no unregistration from the old Call-ID, then silence past the binding's expiry
            assert all(r.headers.get("expires") != "0" for _, r in during if r.headers.get("call-id") == old)
            assert first_new[0] - last_old >= 30
            assert first_new[1].headers.get("cseq") == "1 REGISTER"  # a fresh registration, like a reboot


async def test_flapping_devices_unregister_and_register_every_period(
        autojump_clock: trio.testing.MockClock) -> None:
    sc = fleet("""
[[groups]]
name = "flaky"
share = 1
flap = { share = 0.25, period = "20s" }
""", duration="2m", expires=600)
    worker, _core, wire, start = await run_memory(sc)
    flappers = users_with(worker, Role.FLAP)
    assert len(flappers) == 5
    hold_end = start + sc.load.duration
    for user, sent in wire.by_user().items():
        unregisters = [at for at, r in sent if r.headers.get("expires") == "0" and at < hold_end]
        if user in flappers:
            assert len(unregisters) >= 4, (user, unregisters)  # ~ every 20 s over ~2 min
            call_ids = {r.headers.get("call-id") for at, r in sent if at < hold_end}
            assert len(call_ids) == len(unregisters) + 1
        else:
            assert unregisters == [], user
    counts = group_counts(worker.report.endpoints)["flaky"]
    assert counts["flaps"] == sum(e.flaps for e in worker.endpoints) >= 20


async def test_avalanche_reregisters_the_whole_group_at_once(autojump_clock: trio.testing.MockClock) -> None:
    sc = fleet("""
[[groups]]
name = "calm"
share = 0.5
[[groups]]
name = "storm"
share = 0.5
avalanche = ["60s"]
""", duration="2m", expires=600, max_in_flight=4)
    agg = Aggregate(0.0)
    worker, _core, wire, start = await run_memory(sc, delay=0.05, agg=agg)
    storm = {e.username for e in worker.endpoints if worker.plan.groups[e.group].name == "storm"}
    at = start + 60
    after = [(t, r) for t, r in wire.requests if at <= t < at + 30]
    fresh = {r.headers.get("to") for t, r in after if r.headers.get("cseq") == "1 REGISTER"}
    assert {f"<sip:{u}@sipload.test>" for u in storm} == fresh
    counts = group_counts(worker.report.endpoints)
    assert counts["storm"]["avalanche_registrations"] == 10 and counts["calm"]["avalanche_registrations"] == 0
    assert counts["storm"]["states"] == {"unregistered": 10}
    # max_in_flight = 4 still applies: 10 re-registrations of 2 round trips (0.2 s) four at a time
    # start up to ~0.4 s after the avalanche, and the schedule lag shows it
    assert max(t for t, r in after if r.headers.get("cseq") == "1 REGISTER") >= at + 0.35
    assert agg.schedule_lag_summary()["max"] >= 350
    calm = {e.username for e in worker.endpoints} - storm
    assert not {f"<sip:{u}@sipload.test>" for u in calm} & fresh


async def test_bundled_behaviour_scenarios_in_virtual_time(autojump_clock: trio.testing.MockClock) -> None:
    """storm.toml and churn.toml at full length but 40 devices: their behaviours fire (the loopback test
    runs them for a few seconds only, before the first storm or churn)."""
    root = Path(__file__).resolve().parent.parent / "scenarios"
    storm = load_scenario(root / "storm.toml").with_overrides(endpoints=40, rate=20)
    worker, core, _, _ = await run_memory(storm, delay=0.002)
    counts = group_counts(worker.report.endpoints)
    assert counts["office"]["avalanche_registrations"] == 2 * counts["office"]["endpoints"] == 72
    assert counts["remote"]["avalanche_registrations"] == counts["remote"]["endpoints"] == 4
    assert core.counters.received["REGISTER"] >= 2 * (40 + 76)  # challenge + auth per registration
    churn = load_scenario(root / "churn.toml").with_overrides(endpoints=40, rate=20)
    worker, core, _, _ = await run_memory(churn, delay=0.002)
    counts = group_counts(worker.report.endpoints)
    desk, mobiles = counts["desk-phones"], counts["mobiles"]
    assert desk["states"].get("failed:auth_rejected") == 1  # 5 % of 24
    assert desk["flaps"] > 0 and mobiles["vanished"] > 0 and mobiles["returned"] > 0
    assert core.counters.auth_failures["wrong_response"] == 1  # the registrar rejected the wrong password
