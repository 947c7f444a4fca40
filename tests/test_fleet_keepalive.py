"""NAT keep-alives, RFC 5626 outbound and RFC 5627 GRUU wired into the engine per device group.

Everything is asserted on the wire or at the registrar: its counters (`options_answered`, `crlf_pings`),
its binding store (instance, reg-id), the requests the endpoints sent; and the result's per-group counters
are checked against those. Virtual time throughout (trio's autojump clock), over the in-memory network
or real loopback sockets to the embedded registrar in the same trio loop; one test against Kamailio.
"""

from __future__ import annotations

import itertools
import json
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from test_fleet import fleet
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, TextMessage
from wsproto.events import Request as WsRequest
from wsproto.utilities import LocalProtocolError

from peers import (
    KamailioPeer,
    private_kamailio,
)
from scenarios import Table, Value, scenario_toml
from sipload.engine.run import ExitCode, run_scenario
from sipload.engine.worker import Worker, WorkerReport, instance_for, merge_reports
from sipload.registrar.bindings import Binding
from sipload.registrar.core import RegistrarCore
from sipload.registrar.listen import Listen
from sipload.registrar.server import serve_registrar
from sipload.registrar.settings import RegistrarSettings
from sipload.registrar.stats import RegistrarCounters
from sipload.report.result import group_counts
from sipload.scenario import parse_scenario
from sipload.scenario.groups import Role
from sipload.sip import Request, parse_message
from sipload.sip.headers import parse_name_addr, unquote
from sipload.sip.parser import StreamFramer
from sipload.testing.harness import run_memory


def user_of(req: Request) -> str:
    return (req.headers.get("from") or "").split("sip:", 1)[1].split("@", 1)[0]


def contact_instance(req: Request) -> str | None:
    contact = req.headers.get("contact")
    if contact is None or contact.strip() == "*":
        return None
    raw = parse_name_addr(contact).params.get("+sip.instance")
    return None if raw is None else unquote(raw).strip("<>")


# --- UDP: OPTIONS pings ----------------------------------------------------------------------------


async def test_udp_group_pings_with_options_and_the_registrar_answers_each(
        autojump_clock: trio.testing.MockClock) -> None:
    sc = fleet("""
[[groups]]
name = "nat"
share = 0.5
transport = "udp"
keepalive = "10s"
[[groups]]
name = "plain"
share = 0.5
transport = "udp"
""", count=10, duration="60s", expires=3600)
    worker, core, wire, _ = await run_memory(sc)
    groups = group_counts(worker.report.endpoints)
    nat, plain = groups["nat"], groups["plain"]
    options = [(at, req) for at, req in wire.requests if req.method == "OPTIONS"]
    # what the result reports is what reached the registrar and what it answered
    assert nat["keepalive_pings"] == len(options) == core.counters.options_answered == nat["keepalive_answered"]
    assert nat["keepalive_unanswered"] == 0
    per_user: dict[str, int] = defaultdict(int)
    for _, req in options:
        per_user[user_of(req)] += 1
    nat_users = {e.username for e in worker.report.endpoints if e.group == "nat"}
    assert set(per_user) == nat_users and len(nat_users) == 5
    assert all(5 <= n <= 6 for n in per_user.values()), per_user  # every 10 s over a 60 s hold
    assert (plain["keepalive_pings"], plain["crlf_pings"]) == (0, 0)
    # each device pings on its own Call-ID, apart from its registration's, every 10 s from its 200
    for user in nat_users:
        mine = [(at, req) for at, req in options if user_of(req) == user]
        assert len({req.call_id for _, req in mine}) == 1
        registers = {req.call_id for _, req in wire.requests if req.method == "REGISTER" and user_of(req) == user}
        assert mine[0][1].call_id not in registers
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(mine)]
        assert all(gap == pytest.approx(10.0) for gap in gaps)
        assert [req.cseq[0] for _, req in mine] == list(range(1, len(mine) + 1))
    # no pings once the unregistrations went out
    first_unregister = min(at for at, req in wire.requests if req.headers.get("expires") == "0")
    assert all(at <= first_unregister for at, _ in options)


async def test_churned_devices_stop_pinging_while_away_and_come_back_as_the_same_instance(
        autojump_clock: trio.testing.MockClock) -> None:
    sc = fleet("""
[[groups]]
name = "mobile"
share = 1.0
transport = "udp"
keepalive = "2s"
outbound = true
churn = { share = 1, every = "20s", away = "5s" }
""", count=6, duration="90s", expires=3600)
    seen: dict[str, list[tuple[str, str | None]]] = {}

    def at_hold_end(worker: Worker, core: RegistrarCore, wire: object) -> None:
        now = trio.current_time()
        for e in worker.endpoints:
            if e.away or not e.bound(now):
                continue
            (binding,) = core.store.bindings(f"sip:{e.username}@sipload.test", now)  # replaced, never doubled
            seen[e.username] = [(binding.call_id, binding.instance)]
            assert binding.call_id == e.reg.call_id
            assert binding.instance is not None and binding.instance.strip("<>") == instance_for(sc.name, e.index)
            assert binding.reg_id == "1"

    worker, _core, wire, _ = await run_memory(sc, hold=at_hold_end)
    assert seen, "no device was registered at the end of the hold"
    returned_checked = 0
    for e in worker.endpoints:
        mine = [(at, req) for at, req in wire.requests if user_of(req) == e.username]
        registers = [(at, req) for at, req in mine if req.method == "REGISTER"]
        call_ids = list(dict.fromkeys(req.call_id for _, req in registers))
        assert len(call_ids) == e.returned + 1
        # every registration of the device, before and after it churned, names the same instance
        assert {contact_instance(req) for _, req in registers} == {instance_for(sc.name, e.index)}
        for call_id in call_ids[1:]:
            back = min(at for at, req in registers if req.call_id == call_id)
            # away for 5 s before that: not a single ping meanwhile (pings are every 2 s otherwise)
            quiet = [at for at, req in mine if req.method == "OPTIONS" and back - 5.0 < at < back]
            assert quiet == [], (e.username, back, quiet)
            assert any(req.method == "OPTIONS" and back < at <= back + 2.5 for at, req in mine)
            returned_checked += 1
    assert returned_checked >= len(worker.endpoints)
    assert worker.plan.role.count(Role.CHURN) == 6


# --- outbound and GRUU ----------------------------------------------------------------------------------


async def test_outbound_gruu_group_binds_its_instance_and_reg_id_and_counts_pub_gruus(
        autojump_clock: trio.testing.MockClock) -> None:
    sc = fleet("""
[[groups]]
name = "webrtc"
share = 0.5
transport = "udp"
outbound = true
gruu = true
[[groups]]
name = "desk"
share = 0.5
transport = "udp"
""", count=10, duration="30s", expires=3600)
    held: dict[str, tuple[str, int, Binding]] = {}
    counters: list[RegistrarCounters] = []

    def at_hold_end(worker: Worker, core: RegistrarCore, wire: object) -> None:
        now = trio.current_time()
        for e in worker.endpoints:
            (binding,) = core.store.bindings(f"sip:{e.username}@sipload.test", now)
            held[e.username] = (worker.plan.groups[e.group].name, e.index, binding)
        counters.append(core.counters.copy())

    worker, _core, _wire, _ = await run_memory(sc, hold=at_hold_end)
    assert len(held) == 10
    for user, (group, index, binding) in held.items():
        if group == "webrtc":
            assert binding.instance == f"<{instance_for(sc.name, index)}>" and binding.reg_id == "1", user
        else:
            assert binding.instance is None and binding.reg_id is None
    groups = group_counts(worker.report.endpoints)
    assert groups["webrtc"]["pub_gruus"] == 5 and groups["webrtc"]["outbound_required"] == 5
    assert groups["desk"]["pub_gruus"] == 0 and groups["desk"]["outbound_required"] == 0
    assert counters[0].outbound_registers >= 5 and counters[0].gruu_registers >= 5
    assert groups["webrtc"]["states"] == {"unregistered": 5}
    # the instances are the devices' own: stable across runs, distinct across devices
    assert len({instance_for(sc.name, i) for i in range(10)}) == 10
    assert instance_for(sc.name, 3) == instance_for("fleet", 3) != instance_for("other", 3)


# --- streams: CRLF keep-alives ------------------------------------------------------------------------


def held(name: str, registrar: str | list[str], *groups: Table, count: int = 8, duration: str,
         **target: Value) -> str:
    """`count` endpoints (user{n} / pw-user{n}, expiry 1 h) at 8/s, held for `duration` in `groups`;
    `target`: more keys of [target]."""
    return scenario_toml(
        name, seed=5, target={"registrar": registrar, "domain": "sipload.test", **target},
        endpoints={"count": count, "username": "user{n}", "password": "pw-user{n}", "expires": 3600,
                   "refresh_jitter": 0.0},
        load={"rate": 8, "duration": duration, "unregister_timeout": "20s"}, groups=groups)


async def test_tcp_group_keepalives_reach_the_registrar(autojump_clock: trio.testing.MockClock,
                                                        tmp_path: Path) -> None:
    settings = RegistrarSettings(realm="sipload.test")  # passwords pw-{user}
    core = RegistrarCore(settings, now=trio.current_time())
    async with trio.open_nursery() as nursery:
        tcp, udp = await nursery.start(partial(serve_registrar, settings, [Listen("tcp", "127.0.0.1", 0),
                                                                           Listen("udp", "127.0.0.1", 0)], core=core))
        sc = parse_scenario(held("streams", [f"sip:127.0.0.1:{tcp.port};transport=tcp", f"sip:127.0.0.1:{udp.port}"],
                                 {"name": "soft", "share": 0.5, "transport": "tcp", "keepalive": "15s"},
                                 {"name": "desk", "share": 0.5, "transport": "udp"}, duration="60s"),
                            Path("streams.toml"))
        with trio.fail_after(300):
            outcome = await run_scenario(sc, tmp_path / "out", progress=lambda _: None, handle_signals=False,
                                         workers=1, probe=False)
        nursery.cancel_scope.cancel()
    result = outcome.result
    assert outcome.exit_code is ExitCode.OK, result.notes
    soft, desk = result.groups["soft"], result.groups["desk"]
    # one shared connection pinging every 15 s over the 60 s hold
    assert soft["crlf_pings"] == 4
    assert soft["crlf_pings"] == core.counters.crlf_pings == soft["crlf_pongs"] == result.keepalive["crlf_pings"]
    assert soft["crlf_missed"] == 0 and soft["keepalive_pings"] == 0
    assert (desk["crlf_pings"], desk["keepalive_pings"]) == (0, 0) and core.counters.options_answered == 0
    assert soft["states"] == {"unregistered": 4} and desk["states"] == {"unregistered": 4}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["groups"]["soft"]["crlf_pings"] == soft["crlf_pings"]
    assert summary["keepalive"]["crlf_pongs"] == soft["crlf_pongs"]


class NoPongRegistrar:
    """A TCP registrar (the embedded core) that answers SIP but never a CRLF keep-alive ping."""

    def __init__(self, core: RegistrarCore) -> None:
        self.core = core
        self.connections = 0
        self.pings = 0
        self.registers: list[tuple[float, int, str]] = []   # (time, connection, user)

    async def serve(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        conn = self.connections
        framer = StreamFramer()
        peer = stream.socket.getpeername()
        try:
            async for data in stream:
                messages = framer.feed(bytes(data))
                self.pings = max(self.pings, framer.pings)
                for msg in messages:
                    assert isinstance(msg, Request)
                    self.registers.append((trio.current_time(), conn, user_of(msg)))
                    outcome = self.core.handle(msg, (peer[0], peer[1]), "tcp", trio.current_time())
                    if outcome.response is not None:
                        await stream.send_all(outcome.response.to_bytes())
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


async def test_missed_pongs_are_flow_failures_and_the_endpoints_register_again(
        autojump_clock: trio.testing.MockClock, tmp_path: Path) -> None:
    settings = RegistrarSettings(realm="sipload.test")  # passwords pw-{user}
    mute = NoPongRegistrar(RegistrarCore(settings, now=trio.current_time()))
    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(partial(trio.serve_tcp, mute.serve, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        sc = parse_scenario(held("mute", f"sip:127.0.0.1:{port};transport=tcp",
                                 {"name": "soft", "share": 1, "transport": "tcp", "keepalive": "10s"}, duration="50s"),
                            Path("mute.toml"))
        with trio.fail_after(300):
            outcome = await run_scenario(sc, tmp_path / "out", progress=lambda _: None, handle_signals=False,
                                         workers=1, probe=False)
        nursery.cancel_scope.cancel()
    result = outcome.result
    soft = result.groups["soft"]
    # pinged at 10 s, no pong by 20 s: the flow failed; again on the next connection (30 s, 40 s); then the end
    assert (soft["crlf_pings"], soft["crlf_pongs"], soft["crlf_missed"]) == (3, 0, 2)
    assert mute.connections == 3
    users = {u for _, _, u in mute.registers}
    assert len(users) == 8
    for conn, failed_at in ((2, 20.0), (3, 40.0)):
        # every endpoint registered again on the new connection at once (its binding had 3600 s to go)
        again = [(at, u) for at, c, u in mute.registers if c == conn and at < failed_at + 1.0]
        assert {u for _, u in again} == users, (conn, again)
    assert result.refreshes.succeeded == 16  # the re-registrations after the two flow failures
    assert result.unregistrations.succeeded == 8 and result.failures == {}
    assert any("no keep-alive pong within 10 s" in note for note in result.notes), result.notes


# --- WebSocket: ping frames -----------------------------------------------------------------------------


class WsRegistrar:
    """A WebSocket registrar (wsproto + the embedded core) that records the handshake's path and the ping
    frames, and answers them with pongs or not."""

    def __init__(self, core: RegistrarCore, *, pong: bool) -> None:
        self.core = core
        self.pong = pong
        self.paths: list[str] = []
        self.pings = 0
        self.text_pings = 0      # CRLF sent as a text message: must never happen
        self.registers: list[tuple[float, int, str]] = []

    async def serve(self, stream: trio.SocketStream) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        conn = len(self.paths) + 1
        peer = stream.socket.getpeername()
        parts: list[str] = []
        try:
            async for data in stream:
                ws.receive_data(bytes(data))
                out = b""
                for event in ws.events():
                    if isinstance(event, WsRequest):
                        self.paths.append(event.target)
                        out += ws.send(AcceptConnection(subprotocol="sip"))
                    elif isinstance(event, Ping):
                        self.pings += 1
                        if self.pong:
                            out += ws.send(event.response())
                    elif isinstance(event, TextMessage):
                        parts.append(event.data)
                        if not event.message_finished:
                            continue
                        text, parts = "".join(parts), []
                        if not text.strip("\r\n"):
                            self.text_pings += 1
                            continue
                        msg = parse_message(text.encode())
                        assert isinstance(msg, Request)
                        self.registers.append((trio.current_time(), conn, user_of(msg)))
                        outcome = self.core.handle(msg, (peer[0], peer[1]), "ws", trio.current_time())
                        if outcome.response is not None:
                            out += ws.send(TextMessage(outcome.response.to_bytes().decode()))
                    elif isinstance(event, CloseConnection):
                        out += ws.send(event.response())
                if out:
                    await stream.send_all(out)
        except (trio.BrokenResourceError, trio.ClosedResourceError, LocalProtocolError):
            pass


@pytest.mark.parametrize("pong", [True, False])
async def test_websocket_keepalives_are_ping_frames(pong: bool, autojump_clock: trio.testing.MockClock,
                                                    tmp_path: Path) -> None:
    server = WsRegistrar(RegistrarCore(RegistrarSettings(realm="sipload.test"), now=trio.current_time()), pong=pong)
    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(partial(trio.serve_tcp, server.serve, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        sc = parse_scenario(held("webrtc", f"sip:127.0.0.1:{port};transport=ws",
                                 {"name": "webrtc", "share": 1, "transport": "ws", "keepalive": "10s"}, count=4,
                                 duration="50s", ws_path="/sip"), Path("ws.toml"))
        with trio.fail_after(300):
            outcome = await run_scenario(sc, tmp_path / "out", progress=lambda _: None, handle_signals=False,
                                         workers=1, probe=False)
        nursery.cancel_scope.cancel()
    result = outcome.result
    webrtc = result.groups["webrtc"]
    assert server.paths and set(server.paths) == {"/sip"}  # target.ws_path reaches the handshake
    assert server.text_pings == 0 and webrtc["crlf_pings"] == server.pings
    users = {u for _, _, u in server.registers}
    assert len(users) == 4
    if pong:
        assert (webrtc["crlf_pings"], webrtc["crlf_pongs"], webrtc["crlf_missed"]) == (5, 5, 0)
        assert len(server.paths) == 1 and result.refreshes.attempted == 0
    else:  # missed at 20 s and 40 s: a new connection each time, and every endpoint registered again on it
        assert (webrtc["crlf_pongs"], webrtc["crlf_missed"]) == (0, 2) and len(server.paths) == 3
        for conn in (2, 3):
            assert {u for _, c, u in server.registers if c == conn} == users
        assert result.refreshes.succeeded == 8
        assert any("no WebSocket keep-alive pong within 10 s" in note for note in result.notes), result.notes
    assert result.unregistrations.succeeded == 4 and result.failures == {}


def test_workers_stream_keepalive_counts_add_up() -> None:
    one = WorkerReport(stream_keepalives={"soft": [3, 3, 0]}, stream_keepalive_total=[3, 3, 0])
    two = WorkerReport(stream_keepalives={"soft": [2, 1, 1], "web": [4, 4, 0]}, stream_keepalive_total=[6, 5, 1])
    merged = merge_reports([one, two])
    assert merged.stream_keepalives == {"soft": [5, 4, 1], "web": [4, 4, 0]}
    assert merged.stream_keepalive_total == [9, 8, 1]


# --- Kamailio -----------------------------------------------------------------------------------------

KAMAILIO = """
name = "keepalive-kamailio"
seed = 8
[target]
registrar = "sip:127.0.0.1:{port}"
domain = "127.0.0.1"
[endpoints]
count = 10
first = 31001
username = "user{{n}}"
password = "pw-user{{n}}"
expires = 120
refresh_jitter = 0.0
[load]
rate = 20
duration = "5s"
unregister = false
[[groups]]
name = "nat"
share = 0.5
transport = "udp"
keepalive = "1s"
outbound = true
gruu = true
[[groups]]
name = "plain"
share = 0.5
transport = "udp"
"""


@pytest.fixture(scope="module")
def kamailio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KamailioPeer]:
    with private_kamailio(tmp_path_factory.mktemp("kamailio-keepalive")) as peer:
        yield peer


def ul_dump(peer: KamailioPeer) -> dict[str, list[dict[str, Any]]]:
    body = json.dumps({"jsonrpc": "2.0", "method": "ul.dump", "id": 1}).encode()
    request = urllib.request.Request(peer.rpc_url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        result = json.loads(answer.read())["result"]
    out: dict[str, list[dict[str, Any]]] = {}
    for domain in result["Domains"]:
        for aor in domain["Domain"].get("AoRs", []):
            out[aor["Info"]["AoR"]] = [c["Contact"] for c in aor["Info"]["Contacts"]]
    return out


@pytest.mark.interop
async def test_keepalive_outbound_gruu_group_against_kamailio(kamailio: KamailioPeer, tmp_path: Path) -> None:
    sc = parse_scenario(KAMAILIO.format(port=kamailio.port), Path("keepalive-kamailio.toml"))
    with trio.fail_after(60):
        outcome = await run_scenario(sc, tmp_path / "out", progress=lambda _: None, handle_signals=False,
                                     workers=1)
    result = outcome.result
    assert outcome.exit_code is ExitCode.OK, result.notes
    nat, plain = result.groups["nat"], result.groups["plain"]
    # 1 s pings over a 5 s hold (4 a device), each answered by Kamailio's 200 to OPTIONS
    assert nat["keepalive_pings"] >= 5 * 3
    assert nat["keepalive_answered"] == nat["keepalive_pings"] - nat["keepalive_unanswered"]
    assert nat["keepalive_unanswered"] == 0
    assert nat["pub_gruus"] == 5 and nat["outbound_required"] == 5
    assert (plain["keepalive_pings"], plain["pub_gruus"], plain["outbound_required"]) == (0, 0, 0)
    dump = ul_dump(kamailio)
    for state in result.endpoint_states:
        (contact,) = dump[state.username]
        if state.group == "nat":
            assert contact["Instance"] == f"<{instance_for(sc.name, state.index)}>"
            assert contact["Reg-Id"] == 1
        else:
            assert (contact["Instance"], contact["Reg-Id"]) == ("[not set]", 0)
