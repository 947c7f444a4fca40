"""Fleets against a real Kamailio (peers/kamailio): a mixed UDP+TCP fleet with churn, and the
bundled scenarios at small scale. Kamailio's own view (``ul.lookup`` over JSON-RPC) shows each group's
User-Agent, expiry and transport, and the churned devices registered again with a fresh Call-ID.

The module starts its own Kamailio (private run dir and free ports), like test_interop_kamailio.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from peers import (
    KamailioPeer,
    private_kamailio,
)
from sipload.engine.run import ExitCode, run_scenario
from sipload.providers.kamailio import KamailioRpc
from sipload.scenario import load_scenario, parse_scenario

ROOT = Path(__file__).resolve().parent.parent

FLEET = """
name = "fleet-kamailio"
seed = 21
[target]
registrar = "sip:127.0.0.1:{port}"
domain = "127.0.0.1"
[endpoints]
count = 40
first = 24001
username = "user{{n}}"
password = "pw-user{{n}}"
refresh_jitter = 0.0
[load]
rate = 40
duration = "8s"
unregister = false
[[groups]]
name = "desk"
share = 0.5
transport = "udp"
expires = 60
user_agent = "Desk/1"
[[groups]]
name = "soft"
share = 0.25
transport = "tcp"
expires = 30
user_agent = "Soft/2"
[[groups]]
name = "mobile"
share = 0.25
transport = "udp"
expires = 20
user_agent = "Mobile/3"
churn = {{ share = 1, every = "3s", away = "1s" }}
"""


@pytest.fixture(scope="module")
def kamailio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KamailioPeer]:
    with private_kamailio(tmp_path_factory.mktemp("kamailio-fleet")) as peer:
        yield peer


async def contacts_of(rpc: KamailioRpc, user: str) -> list[dict[str, Any]]:
    answer = await rpc.call_raw("ul.lookup", [rpc.table, user])
    result = answer.get("result")
    assert isinstance(result, dict), answer
    return [entry["Contact"] for entry in result["Contacts"]]


async def test_mixed_fleet_as_kamailio_holds_it(kamailio: KamailioPeer, tmp_path: Path) -> None:
    sc = parse_scenario(FLEET.format(port=kamailio.port), Path("fleet.toml"))
    with trio.fail_after(60):
        outcome = await run_scenario(sc, tmp_path / "out", progress=lambda _: None, handle_signals=False,
                                     workers=1)
    states = outcome.result.endpoint_states
    groups = outcome.result.groups
    assert groups["mobile"]["vanished"] > 0 and groups["mobile"]["returned"] > 0
    expect = {"desk": ("Desk/1", 60, "udp"), "soft": ("Soft/2", 30, "tcp"), "mobile": ("Mobile/3", 20, "udp")}
    returned_checked = 0
    async with KamailioRpc(kamailio.rpc_url) as rpc:
        for state in states:
            if state.state != "registered":
                continue  # a churned device away at the end
            (contact,) = await contacts_of(rpc, state.username)
            ua, expires, transport = expect[state.group]
            assert contact["User-Agent"] == ua
            assert 0 < int(contact["Expires"]) <= expires
            assert str(contact["Socket"]).startswith(f"{transport}:")
            assert contact["Address"].endswith(f";transport={transport}")
            assert contact["Call-ID"] == state.call_id
            if state.returned:
                # came back like a rebooted phone: a fresh Call-ID whose CSeq started again from 1
                assert state.registrations == state.returned + 1
                assert int(contact["CSeq"]) <= 2 + 2 * state.refreshes
                returned_checked += 1
    assert returned_checked > 0


@pytest.mark.parametrize("name", ["soak", "storm", "churn", "mixed-fleet"])
async def test_bundled_scenarios_against_kamailio(name: str, kamailio: KamailioPeer, tmp_path: Path) -> None:
    sc = load_scenario(ROOT / "scenarios" / f"{name}.toml")
    targets = [f"sip:127.0.0.1:{kamailio.port}"]
    if name == "mixed-fleet":  # its WebRTC-like group registers over WebSocket, on Kamailio's WS listener
        assert kamailio.ws_port is not None, "Kamailio without the websocket module (peers/install)"
        targets.append(f"sip:127.0.0.1:{kamailio.ws_port};transport=ws")
    sc = sc.with_overrides(target=targets, endpoints=30, rate=30, duration=15 if name == "soak" else 3)
    with trio.fail_after(90):
        outcome = await run_scenario(sc, tmp_path / name, progress=lambda _: None, handle_signals=False, workers=1)
    failed = [t for t in outcome.result.thresholds if not t.passed]
    assert outcome.exit_code is ExitCode.OK, (failed, outcome.result.notes)
    assert sum(g["endpoints"] for g in outcome.result.groups.values()) == 30


