"""Fleets over real loopback sockets: failover across registrars, a mixed UDP+TCP fleet against
the embedded registrar, and the bundled scenarios at small scale (embedded, and Kamailio when present).

Timing is real here (sockets), so nothing asserts a latency: only what the registrars hold.
"""

from __future__ import annotations

import json
from collections import defaultdict
from functools import partial
from pathlib import Path

import pytest
import trio

from sipload.engine.run import ExitCode, resolve_destinations, run_scenario
from sipload.registrar.core import RegistrarCore
from sipload.registrar.listen import Listen
from sipload.registrar.server import serve_registrar
from sipload.registrar.settings import RegistrarSettings
from sipload.scenario import Scenario, load_scenario, parse_scenario

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ("soak", "storm", "churn", "mixed-fleet")

FAILOVER = """
name = "failover"
seed = 3
[target]
registrar = ["sip:127.0.0.1:{first}", "sip:127.0.0.1:{second}"]
domain = "sipload.test"
[endpoints]
count = 20
expires = 60
[load]
rate = 40
duration = "{duration}"
unregister = false
[timers]
t1 = "50ms"
t2 = "200ms"
retry_backoff = "100ms"
retry_backoff_max = "200ms"
"""


def registrar_core() -> RegistrarCore:
    return RegistrarCore(RegistrarSettings(realm="sipload.test", min_expires=1, error_503=0.0),
                         now=trio.current_time())


def aors(core: RegistrarCore) -> int:
    return sum(1 for _ in core.store.aors(trio.current_time()))


async def serve(nursery: trio.Nursery, core: RegistrarCore, settings: RegistrarSettings | None = None) -> int:
    listens = await nursery.start(partial(serve_registrar, settings or core.settings,
                                          [Listen("udp", "127.0.0.1", 0)], core=core))
    return int(listens[0].port)


async def test_destinations_keep_the_order_written() -> None:
    sc = parse_scenario(FAILOVER.format(first=5071, second=5072, duration="2s"), Path("f.toml"))
    assert await resolve_destinations(sc) == {"UDP": (("127.0.0.1", 5071), ("127.0.0.1", 5072))}
    assert [str(u) for u in sc.target.registrars] == ["sip:127.0.0.1:5071", "sip:127.0.0.1:5072"]


async def test_failover_from_a_registrar_answering_503(tmp_path: Path) -> None:
    first, second = registrar_core(), registrar_core()
    busy = RegistrarSettings(realm="sipload.test", min_expires=1, error_503=1.0, retry_after=None)
    first = RegistrarCore(busy, now=trio.current_time())
    async with trio.open_nursery() as nursery:
        p1 = await serve(nursery, first, busy)
        p2 = await serve(nursery, second)
        sc = parse_scenario(FAILOVER.format(first=p1, second=p2, duration="3s"), Path("f.toml"))
        with trio.fail_after(60):
            outcome = await run_scenario(sc, tmp_path / "out", progress=lambda _: None, handle_signals=False,
                                         workers=1)
        assert first.counters.injected_503 >= 20  # every endpoint tried the first registrar first
        assert aors(first) == 0
        assert aors(second) == 20  # ... and ended registered on the second
        nursery.cancel_scope.cancel()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["groups"]["default"]["states"] == {"registered": 20}
    assert summary["groups"]["default"]["failovers"] >= 20
    assert outcome.result.registrations.succeeded == 20


async def test_failover_from_a_dead_registrar(tmp_path: Path) -> None:
    second = registrar_core()
    async with trio.open_nursery() as nursery:
        dead = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        await dead.bind(("127.0.0.1", 0))  # bound, never read: requests vanish, transactions time out
        p2 = await serve(nursery, second)
        sc = parse_scenario(FAILOVER.format(first=dead.getsockname()[1], second=p2, duration="6s"),
                            Path("f.toml"))
        with trio.fail_after(60):
            await run_scenario(sc, tmp_path / "out", progress=lambda _: None, handle_signals=False, workers=1)
        assert aors(second) == 20
        dead.close()
        nursery.cancel_scope.cancel()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["failures"].get("timeout", 0) == 0  # a timeout that failed over is a retry, not a failure
    assert summary["groups"]["default"]["states"] == {"registered": 20}


MIXED = """
name = "mixed"
seed = 5
[target]
registrar = "embedded"
[endpoints]
count = 30
expires = 60
[load]
rate = 60
duration = "2s"
[registrar]
password = "pw-{user}"
[[groups]]
name = "desk"
share = 0.7
transport = "udp"
user_agent = "Desk/1"
[[groups]]
name = "soft"
share = 0.3
transport = "tcp"
expires = 30
user_agent = "Soft/2"
"""


async def test_mixed_udp_tcp_fleet_against_the_embedded_registrar(tmp_path: Path) -> None:
    sc = parse_scenario(MIXED, Path("mixed.toml"))
    with trio.fail_after(60):
        outcome = await run_scenario(sc, tmp_path / "out", progress=lambda _: None, handle_signals=False, workers=1)
    assert outcome.exit_code is ExitCode.OK
    assert "udp 127.0.0.1:" in outcome.result.target and "tcp 127.0.0.1:" in outcome.result.target
    groups = outcome.result.groups
    assert groups["desk"]["endpoints"] == 21 and groups["soft"]["endpoints"] == 9
    assert groups["desk"]["states"] == {"unregistered": 21} and groups["soft"]["states"] == {"unregistered": 9}
    contacts: dict[str, set[str]] = defaultdict(set)
    for state in outcome.result.endpoint_states:
        contacts[state.group].add(state.contact.rsplit("transport=", 1)[1])
    assert contacts == {"desk": {"udp"}, "soft": {"tcp"}}


def small(name: str) -> Scenario:
    """A bundled scenario at small scale: tens of endpoints, a few seconds (soak: 15 s, for its renewals; the
    others' storms, flaps and churn come tens of seconds in, so 3 s hold as much as 6 did)."""
    sc = load_scenario(ROOT / "scenarios" / f"{name}.toml")
    return sc.with_overrides(endpoints=30, rate=30, duration=15 if name == "soak" else 3)


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_scenarios_are_valid(name: str) -> None:
    sc = load_scenario(ROOT / "scenarios" / f"{name}.toml")
    assert sc.description
    assert sum(g.count for g in sc.fleet) == sc.endpoints.count
    assert sum(g.count for g in small(name).fleet) == 30


@pytest.mark.parametrize("name", BUNDLED)
async def test_bundled_scenarios_pass_at_small_scale(name: str, tmp_path: Path) -> None:
    sc = small(name)
    with trio.fail_after(120):
        outcome = await run_scenario(sc, tmp_path / name, progress=lambda _: None, handle_signals=False, workers=1)
    failed = [t for t in outcome.result.thresholds if not t.passed]
    assert outcome.exit_code is ExitCode.OK, (failed, outcome.result.notes)
    assert sum(g["endpoints"] for g in outcome.result.groups.values()) == 30
