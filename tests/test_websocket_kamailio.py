"""sipload -> Kamailio's SIP over WebSocket listener (RFC 7118; peers/kamailio with kamailio-websocket-modules).

20 endpoints register over ws; Kamailio's `ul.dump` and `ul.lookup` show exactly those AoRs with the
`;transport=ws` contacts sipload sent; they refresh and unregister; a handshake without the `sip`
subprotocol is refused by Kamailio. This module starts its own Kamailio (private run dir, free SIP,
RPC and WS ports). Users 24001-24020.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from interop_helpers import kamailio_scenario, lookup_all
from trio_websocket import ConnectionRejected, open_websocket

from peers import (
    HOW_TO_INSTALL_KAMAILIO,
    KamailioPeer,
    have,
    private_kamailio,
    require_peer,
)
from sipload.engine.run import ExitCode, RunOutcome, run_scenario
from sipload.providers.kamailio import KamailioRpc
from sipload.providers.status import ProviderState
from sipload.scenario import parse_scenario

FIRST, COUNT = 24001, 20
USERS = [f"user{n}" for n in range(FIRST, FIRST + COUNT)]


def values(tree: object, key: str) -> Iterator[object]:
    """Every value of `key` anywhere in a JSON-RPC answer."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            if k == key:
                yield v
            yield from values(v, key)
    elif isinstance(tree, list):
        for item in tree:
            yield from values(item, key)


@dataclass(frozen=True, slots=True)
class WsKamailio:
    peer: KamailioPeer
    ws_port: int


def websocket_module_installed() -> bool:
    return any(Path("/usr/lib").glob("*/kamailio/modules/websocket.so")) or any(
        Path(d, "kamailio/modules/websocket.so").is_file() for d in ("/usr/lib", "/usr/lib64"))


@pytest.fixture(scope="module")
def kamailio_ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WsKamailio]:
    require_peer("kamailio", have("kamailio"), HOW_TO_INSTALL_KAMAILIO)
    require_peer("kamailio websocket module", websocket_module_installed(),
                 "run peers/install (installs the Debian package kamailio-websocket-modules)")
    with private_kamailio(tmp_path_factory.mktemp("kamailio-ws")) as peer:
        assert peer.ws_port is not None, "peers/kamailio/start did not open its WebSocket listener"
        yield WsKamailio(peer, peer.ws_port)


@pytest.mark.interop
async def test_20_endpoints_register_over_ws_on_kamailio(kamailio_ws: WsKamailio, tmp_path: Path) -> None:
    text = kamailio_scenario(
        kamailio_ws.ws_port, name="kamailio-ws", transport="ws", first=FIRST, count=COUNT, expires=10,
        rate=40, duration=8,
        thresholds=["register.success_rate == 100%", "refresh.success_rate == 100%",
                    "unregister.success_rate == 100%", "failures == 0"],
    )
    scenario = parse_scenario(text, tmp_path / "scenario.toml")
    outcomes: list[RunOutcome] = []

    async def run() -> None:
        outcomes.append(await run_scenario(scenario, tmp_path / "out", progress=lambda _: None,
                                           handle_signals=False))

    async with KamailioRpc(kamailio_ws.peer.rpc_url) as rpc:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run)
                with trio.fail_after(15):
                    while await rpc.registered_users() < COUNT:
                        await trio.sleep(0.1)
                assert set(USERS) == set(await rpc.dump_aors())          # ul.dump: exactly those AoRs
                held = await lookup_all(rpc, USERS)
                ports = set()
                for user, status in held.items():
                    assert status.state is ProviderState.REGISTERED and len(status.contacts) == 1, (user, status)
                    contact = status.contacts[0].address
                    m = re.fullmatch(rf"sip:{user}@127\.0\.0\.1:(\d+);transport=ws", contact)
                    assert m is not None, contact
                    ports.add(m.group(1))
                assert len(ports) == 1      # one shared WebSocket connection
                sockets = set(values(await rpc.call("ul.dump", []), "Socket"))
                assert sockets == {f"tcp:127.0.0.1:{kamailio_ws.ws_port}"}, sockets   # received on the WS port
        assert await rpc.registered_users() == 0     # all unregistered at the end
    (outcome,) = outcomes
    assert outcome.exit_code is ExitCode.OK, outcome.result.notes
    assert outcome.result.registrations.succeeded == COUNT
    assert outcome.result.refreshes.succeeded >= COUNT
    assert outcome.result.unregistrations.succeeded == COUNT


@pytest.mark.interop
async def test_kamailio_refuses_a_websocket_without_the_sip_subprotocol(kamailio_ws: WsKamailio) -> None:
    with trio.fail_after(10), pytest.raises(ConnectionRejected) as info:
        async with open_websocket("127.0.0.1", kamailio_ws.ws_port, "/", use_ssl=False, subprotocols=["chat"]):
            pass   # pragma: no cover - refused
    assert info.value.status_code == 400
