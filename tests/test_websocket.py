"""SIP over WebSocket (RFC 7118): the WS/WSS channel and the registrar's ws/wss listeners, on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
import trustme
from trio_websocket import ConnectionRejected, WebSocketRequest, open_websocket, serve_websocket

from scenarios import PASSING, Table, refreshing_run
from sipload.engine.run import ExitCode, RunError, run_scenario
from sipload.registrar.core import RegistrarCore
from sipload.registrar.listen import Listen
from sipload.registrar.server import serve_registrar
from sipload.registrar.settings import RegistrarSettings
from sipload.scenario import parse_scenario
from sipload.scenario.target import Transport, parse_sip_uri
from sipload.sip import parse_uri
from sipload.sip.ids import IdSource
from sipload.sip.message import Request, Response
from sipload.sip.parser import parse_message
from sipload.transport.channels import open_stream_channel
from sipload.transport.stream import TlsOptions
from sipload.transport.websocket import WebSocketChannel, WebSocketError

SETTINGS = RegistrarSettings(realm="sipload.test", min_expires=1)


def options(local: tuple[str, int], transport: str = "WS", ids: IdSource | None = None) -> bytes:
    ids = ids or IdSource()
    return (
        f"OPTIONS sip:sipload.test SIP/2.0\r\nVia: SIP/2.0/{transport} {local[0]}:{local[1]};branch={ids.branch()}\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:probe@sipload.test>;tag={ids.tag()}\r\nTo: <sip:sipload.test>\r\n"
        f"Call-ID: {ids.call_id()}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def register(user: str, local: tuple[str, int], transport: str = "WS") -> bytes:
    ids = IdSource()
    return (
        f"REGISTER sip:sipload.test SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {local[0]}:{local[1]};branch={ids.branch()}\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:{user}@sipload.test>;tag={ids.tag()}\r\nTo: <sip:{user}@sipload.test>\r\n"
        f"Call-ID: {ids.call_id()}\r\nCSeq: 1 REGISTER\r\n"
        f"Contact: <sip:{user}@{local[0]}:{local[1]};transport={transport.lower()}>\r\nExpires: 60\r\n\r\n"
    ).encode()   # no Content-Length: optional over WebSocket (one message per frame)


class Collector:
    def __init__(self) -> None:
        self.messages: list[Request | Response] = []
        self.failures: list[str] = []
        self.arrived = trio.Event()

    def on_message(self, message: Request | Response) -> None:
        self.messages.append(message)
        self.arrived.set()

    def on_failure(self, reason: str) -> None:
        self.failures.append(reason)
        self.arrived.set()

    async def next(self) -> None:
        with trio.fail_after(5):
            await self.arrived.wait()
        self.arrived = trio.Event()


@asynccontextmanager
async def registrar(listen: str, core: RegistrarCore | None = None, **tls: str) -> AsyncIterator[Listen]:
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(partial(serve_registrar, SETTINGS, [Listen.parse(listen)], core=core,
                                            out=lambda _: None, **tls))
        yield bound[0]
        nursery.cancel_scope.cancel()


def write_cert(tmp_path: Path, cert: trustme.LeafCert, name: str = "server") -> dict[str, str]:
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / f"{name}.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / f"{name}.key"))
    return {"tls_cert": str(tmp_path / f"{name}.pem"), "tls_key": str(tmp_path / f"{name}.key")}


# --- the channel against the registrar ------------------------------------------------------------

@pytest.mark.parametrize("transport", ["ws", "wss"])
async def test_channel_talks_sip_to_the_registrar_over_ws_and_wss(tmp_path: Path, transport: str) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    files = write_cert(tmp_path, ca.issue_cert("localhost")) if transport == "wss" else {}
    core = RegistrarCore(SETTINGS, now=trio.current_time())
    got = Collector()
    async with registrar(f"{transport}:127.0.0.1:0", core, **files) as bound:
        tls = TlsOptions(ca_file=tmp_path / "ca.pem", server_name="localhost") if transport == "wss" else None
        channel = open_stream_channel(transport.upper(), "127.0.0.1", bound.port, got.on_message, got.on_failure,
                                      tls=tls)
        assert isinstance(channel, WebSocketChannel) and channel.transport == transport.upper()
        await channel.connect()
        assert channel.local[0] == "127.0.0.1" and channel.local[1] > 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(channel.run)
            assert channel.send(options(channel.local, transport.upper()))
            assert channel.send(register("alice", channel.local, transport.upper()))   # two frames, one batch
            await got.next()
            while len(got.messages) < 2:
                await got.next()
            statuses = sorted(m.status for m in got.messages if isinstance(m, Response))
            assert statuses == [200, 401]    # OPTIONS answered; REGISTER challenged, on this connection
            await channel.aclose()
            nursery.cancel_scope.cancel()
    assert got.failures == [] and channel.connects == 1 and channel.failures == 0
    assert core.counters.received["REGISTER"] == 1


async def test_registrar_binds_a_ws_contact_with_transport_ws() -> None:
    """A whole digest registration over one WebSocket: the binding records transport ws and the contact."""
    from sipload.sip.digest import DigestClient
    from sipload.sip.registration import Profile, Registration, RegState

    core = RegistrarCore(SETTINGS, now=trio.current_time())
    got = Collector()
    async with registrar("ws:127.0.0.1:0", core) as bound:
        channel = WebSocketChannel("127.0.0.1", bound.port, got.on_message, got.on_failure)
        await channel.connect()
        sent_by = f"{channel.local[0]}:{channel.local[1]}"
        ids = IdSource()
        reg = Registration(Profile(domain="sipload.test", registrar_uri="sip:sipload.test", transport="WS",
                                   expires=60),
                           user="bob", contact=f"sip:bob@{sent_by};transport=ws", sent_by=sent_by,
                           auth=DigestClient("bob", "pw-bob", cnonce=ids.cnonce), ids=ids)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(channel.run)
            reg.start(trio.current_time())
            for data in reg.take_outgoing():
                channel.send(data)
            while reg.state is not RegState.REGISTERED:
                await got.next()
                reg.receive(got.messages[-1], trio.current_time())  # type: ignore[arg-type]
                for data in reg.take_outgoing():
                    channel.send(data)
            (binding,) = core.store.bindings("sip:bob@sipload.test", trio.current_time())
            assert binding.transport == "ws"
            assert binding.contact == f"sip:bob@{sent_by};transport=ws"
            assert binding.source == channel.local
            await channel.aclose()
            nursery.cancel_scope.cancel()


# --- errors: subprotocol, nothing listening, server going away --------------------------------------

async def test_registrar_refuses_a_handshake_without_the_sip_subprotocol() -> None:
    async with registrar("ws:127.0.0.1:0") as bound:
        with pytest.raises(ConnectionRejected) as info:
            async with open_websocket("127.0.0.1", bound.port, "/", use_ssl=False, subprotocols=["chat"]):
                pass   # pragma: no cover - the handshake is refused
        assert info.value.status_code == 400
        assert b"subprotocol 'sip'" in (info.value.body or b"")
        async with open_websocket("127.0.0.1", bound.port, "/", use_ssl=False, subprotocols=["sip"]) as ws:
            assert ws.subprotocol == "sip"


async def test_channel_fails_clearly_when_the_server_does_not_speak_sip() -> None:
    async def plain_chat(request: WebSocketRequest) -> None:
        await request.accept()    # no subprotocol in the answer
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(serve_websocket, plain_chat, "127.0.0.1", 0, None))
        got = Collector()
        channel = WebSocketChannel("127.0.0.1", server.port, got.on_message, got.on_failure)
        with pytest.raises(WebSocketError, match=r"did not accept the WebSocket subprotocol 'sip' \(RFC 7118"):
            await channel.connect()
        assert channel.connects == 0
        nursery.cancel_scope.cancel()


async def test_channel_reports_a_refused_handshake_with_its_http_status() -> None:
    async def refuse(request: WebSocketRequest) -> None:
        await request.reject(403, body=b"go away")

    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(serve_websocket, refuse, "127.0.0.1", 0, None))
        channel = WebSocketChannel("127.0.0.1", server.port, lambda _: None, lambda _: None)
        with pytest.raises(WebSocketError, match=r"refused the WebSocket handshake: HTTP 403 \(go away\)"):
            await channel.connect()
        nursery.cancel_scope.cancel()


async def test_run_against_nothing_listening_is_a_clear_error(tmp_path: Path) -> None:
    with trio.socket.socket() as s:
        await s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]   # bound, not listening: connections are refused
        sc = parse_scenario(body("x", f"sip:127.0.0.1:{port};transport=ws"), tmp_path / "s.toml")
        with trio.fail_after(10), pytest.raises(RunError, match=r"cannot connect over WS .*refused"):
            await run_scenario(sc, tmp_path / "out", progress=lambda _: None, handle_signals=False)


async def test_run_against_a_server_without_sip_subprotocol_is_a_clear_error(tmp_path: Path) -> None:
    async def plain_chat(request: WebSocketRequest) -> None:
        await request.accept()
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(serve_websocket, plain_chat, "127.0.0.1", 0, None))
        sc = parse_scenario(body("x", f"sip:127.0.0.1:{server.port};transport=ws"), tmp_path / "s.toml")
        with trio.fail_after(10), pytest.raises(RunError, match=r"cannot connect over WS .*subprotocol 'sip'"):
            await run_scenario(sc, tmp_path / "out", progress=lambda _: None, handle_signals=False)
        nursery.cancel_scope.cancel()


async def test_pings_are_answered_and_a_close_from_the_server_is_a_failure() -> None:
    closed = trio.Event()
    pong = trio.Event()

    async def pinger(request: WebSocketRequest) -> None:
        ws = await request.accept(subprotocol="sip")
        with trio.fail_after(5):
            await ws.ping(b"are-you-there")    # returns when the matching pong arrives
        pong.set()
        await ws.aclose(code=1001, reason="going away")
        closed.set()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(serve_websocket, pinger, "127.0.0.1", 0, None))
        got = Collector()
        channel = WebSocketChannel("127.0.0.1", server.port, got.on_message, got.on_failure)
        await channel.connect()
        nursery.start_soon(channel.run)
        channel.send(b"\r\n\r\n")   # wakes the writer: the session (reader) starts
        await got.next()
        assert pong.is_set()
        assert got.failures == [f"127.0.0.1:{server.port}: WebSocket closed by the registrar: code 1001 (going away)"]
        assert channel.failures == 1
        await channel.aclose()
        nursery.cancel_scope.cancel()


async def test_channel_asks_for_its_path_with_the_sip_subprotocol() -> None:
    asked: list[tuple[str, tuple[str, ...]]] = []

    async def record(request: WebSocketRequest) -> None:
        asked.append((request.path, request.proposed_subprotocols))
        await request.accept(subprotocol="sip")

    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(serve_websocket, record, "127.0.0.1", 0, None))
        channel = open_stream_channel("WS", "127.0.0.1", server.port, lambda _: None, lambda _: None, ws_path="/ws")
        await channel.connect()
        await channel.aclose()
        nursery.cancel_scope.cancel()
    assert asked == [("/ws", ("sip",))]


# --- the scenario: transport = "ws" / "wss" --------------------------------------------------------

def test_target_uris_with_ws_and_wss() -> None:
    assert parse_sip_uri("sip:127.0.0.1;transport=ws").transport is Transport.WS
    assert parse_sip_uri("sip:127.0.0.1;transport=WSS").transport is Transport.WSS
    assert parse_sip_uri("sips:example.com;transport=ws").transport is Transport.WSS
    assert parse_sip_uri("sip:127.0.0.1;transport=ws").effective_port == 80
    assert parse_sip_uri("sips:example.com;transport=wss").effective_port == 443
    assert parse_sip_uri("sip:127.0.0.1:8080;transport=ws").effective_port == 8080
    assert Listen.parse("ws:127.0.0.1:0") == Listen("ws", "127.0.0.1", 0)
    assert str(Listen.parse("wss:[::1]:8443")) == "wss:[::1]:8443"


@pytest.mark.parametrize(("body", "field", "message"), [
    ('registrar = "sip:h;transport=ws"\nws_path = "ws"', "target.ws_path", "must be a URL path starting with '/'"),
    ('registrar = "sip:h;transport=tcp"\nws_path = "/ws"', "target.ws_path", "only allowed with transport 'ws'"),
    ('registrar = "sip:h;transport=ws"\ntls_verify = false', "target.tls_verify", "only allowed with transport 'tls'"),
])
def test_target_ws_keys_are_checked(tmp_path: Path, body: str, field: str, message: str) -> None:
    from sipload.scenario import ScenarioError

    with pytest.raises(ScenarioError, match=field) as info:
        parse_scenario(f"[target]\n{body}\n", tmp_path / "s.toml")
    assert message in str(info.value)


def test_wss_takes_the_tls_keys_and_a_path(tmp_path: Path) -> None:
    sc = parse_scenario('[target]\nregistrar = "sips:localhost:8443;transport=wss"\ntls_verify = false\n'
                        'ws_path = "/ws"\n[endpoints]\ncount = 1\n[load]\nrate = 1\n', tmp_path / "s.toml")
    assert sc.target.transport is Transport.WSS and sc.target.tls_verify is False and sc.target.ws_path == "/ws"


def body(name: str, target: str, tls: Table | None = None) -> str:
    """12 endpoints registering, refreshing and unregistering within 1.5 s; `tls`: more [target] keys."""
    return refreshing_run(name, target, seed=5, count=12, rate=40, duration="1500ms", target=tls,
                          thresholds=[*PASSING, "retransmissions == 0"])


@pytest.mark.parametrize("transport", ["ws", "wss"])
async def test_scenario_registers_refreshes_and_unregisters_over_websocket(tmp_path: Path, transport: str) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    files = write_cert(tmp_path, ca.issue_cert("localhost")) if transport == "wss" else {}
    core = RegistrarCore(SETTINGS, now=trio.current_time())
    seen: dict[str, tuple[str, str]] = {}    # user -> (transport, contact) of its binding while registered
    handle = core.handle

    def spy(request, source, transport_, now):  # type: ignore[no-untyped-def]
        outcome = handle(request, source, transport_, now)
        if request.method == "REGISTER" and outcome.response is not None and outcome.response.status == 200:
            aor = f"sip:{request.to_addr.uri.split(':', 1)[1].split('@')[0]}@sipload.test"
            for binding in core.store.bindings(aor, now):
                seen[aor] = (binding.transport, binding.contact)
        return outcome

    core.handle = spy  # type: ignore[method-assign]
    async with registrar(f"{transport}:127.0.0.1:0", core, **files) as bound:
        host = "localhost" if transport == "wss" else "127.0.0.1"
        tls = {"tls_ca": str(tmp_path / "ca.pem")} if transport == "wss" else None
        sc = parse_scenario(body(transport, f"sip:{host}:{bound.port};transport={transport}", tls), tmp_path / "s.toml")
        with trio.fail_after(30):
            outcome = await run_scenario(sc, tmp_path / "out", progress=lambda _: None, handle_signals=False)
    assert outcome.exit_code is ExitCode.OK, outcome.result.notes
    result = outcome.result
    assert result.registrations.succeeded == 12 and result.unregistrations.succeeded == 12
    assert result.refreshes.succeeded >= 12
    assert core.store.count(trio.current_time()).bindings == 0        # all unregistered
    contacts = {row.contact for row in result.endpoint_states}
    assert len(contacts) == 12 and all(c.endswith(f";transport={transport}") for c in contacts)
    assert len({parse_uri(c).port for c in contacts}) == 1            # one shared connection
    assert len(seen) == 12 and {t for t, _ in seen.values()} == {transport}
    assert {c for _, c in seen.values()} == contacts                  # the registrar held exactly those
    assert core.counters.received["REGISTER"] >= 12 * 4               # challenge + auth, refreshes, unregister


async def test_a_raw_ws_message_is_parsed_and_answered_once() -> None:
    """Each WebSocket message is one SIP message: the answer comes back as one text message."""
    async with registrar("ws:127.0.0.1:0") as bound, \
            open_websocket("127.0.0.1", bound.port, "/", use_ssl=False, subprotocols=["sip"]) as ws:
        await ws.send_message(options(("127.0.0.1", 9)).decode())
        with trio.fail_after(5):
            answer = await ws.get_message()
        assert isinstance(answer, str)
        response = parse_message(answer.encode())
        assert isinstance(response, Response) and response.status == 200
