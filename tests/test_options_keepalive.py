"""NAT keep-alives: the sans-IO OPTIONS machine in virtual time (against the embedded registrar's core),
and CRLF ping/pong on TCP streams under trio's MockClock against the embedded registrar's TCP listener
(real sockets on loopback) and against a server that never answers.
"""

from __future__ import annotations

import random
from functools import partial

import pytest
import trio
import trio.testing

from sipload.registrar.core import RegistrarCore
from sipload.registrar.listen import Listen
from sipload.registrar.server import serve_registrar
from sipload.registrar.settings import RegistrarSettings
from sipload.sip import Request, Response, parse_message, response_to
from sipload.sip.ids import IdSource
from sipload.sip.options_keepalive import OptionsKeepalive, PingAnswered, PingUnanswered, ReflexiveChanged
from sipload.sip.parser import StreamFramer
from sipload.sip.registration import Profile, Registration
from sipload.transport.stream import StreamChannel

TARGET = "sip:sipload.test"


def pinger(interval: float = 30.0, timeout: float = 10.0, seed: int = 1, transport: str = "UDP") -> OptionsKeepalive:
    return OptionsKeepalive(target_uri=TARGET, aor="sip:alice@sipload.test", sent_by="127.0.0.1:5080",
                            ids=IdSource(random.Random(seed)), interval=interval, timeout=timeout, transport=transport)


def request(data: bytes) -> Request:
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


def registrar() -> RegistrarCore:
    return RegistrarCore(RegistrarSettings(realm="sipload.test"), now=0.0, rng=random.Random(3))


def answer(core: RegistrarCore, data: bytes, now: float, source: tuple[str, int] = ("127.0.0.1", 5080)) -> Response:
    outcome = core.handle_bytes(data, source, "udp", now)
    assert outcome.response is not None, outcome.note
    response = parse_message(outcome.response.to_bytes())
    assert isinstance(response, Response)
    return response


# --- the OPTIONS machine ------------------------------------------------------------------------------


def test_pings_every_interval_with_rising_cseq_new_branch_and_rport() -> None:
    core = registrar()
    ka = pinger()
    assert ka.next_timer() is None
    ka.start(0.0)
    assert ka.next_timer() == 30.0
    ka.handle_timer(29.9)
    assert ka.take_outgoing() == []
    seen: list[Request] = []
    for k in range(1, 5):
        now = 30.0 * k
        assert ka.next_timer() == now
        ka.handle_timer(now)
        (data,) = ka.take_outgoing()
        req = request(data)
        seen.append(req)
        assert req.method == "OPTIONS" and req.uri == TARGET
        assert req.cseq == (k, "OPTIONS")
        assert "rport" in req.top_via.params and req.top_via.params["rport"] is None
        assert ka.receive(answer(core, data, now + 0.01), now + 0.01)
        assert ka.take_events() == [PingAnswered(200, now, now + 0.01)]
    assert len({r.call_id for r in seen}) == 1 and seen[0].call_id == ka.call_id
    assert len({r.branch for r in seen}) == 4
    assert (ka.sent, ka.answered, ka.unanswered, ka.retransmissions) == (4, 4, 0, 0)
    assert core.counters.options_answered == 4


def test_each_endpoint_has_its_own_call_id_apart_from_its_registration() -> None:
    ids = IdSource(random.Random(4))
    reg = Registration(Profile(domain="sipload.test", registrar_uri=TARGET), user="alice",
                       contact="sip:alice@127.0.0.1:5080", sent_by="127.0.0.1:5080", auth=None, ids=ids)
    ka = OptionsKeepalive(target_uri=TARGET, aor=reg.aor, sent_by=reg.sent_by, ids=ids, interval=30.0)
    assert ka.call_id != reg.call_id and ka.call_id != pinger(seed=5).call_id


def test_unanswered_pings_are_retransmitted_then_counted_and_the_cadence_holds() -> None:
    ka = pinger()
    ka.start(0.0)
    ka.handle_timer(30.0)
    first = ka.take_outgoing()
    times: list[float] = []
    now = 30.0
    while True:  # bounded: the timeout ends it
        due = ka.next_timer()
        assert due is not None and due <= 60.0
        now = due
        ka.handle_timer(now)
        if ka.take_events():
            break
        out = ka.take_outgoing()
        assert out == first  # a retransmission is the same request
        times.append(now)
    assert now == 40.0 and ka.unanswered == 1 and ka.answered == 0
    assert times[:4] == [30.5, 31.5, 33.5, 37.5]  # Timer E: T1, doubling, capped at T2 (4 s)
    assert ka.retransmissions == len(times)
    assert ka.next_timer() == 60.0  # the next ping, interval after the first send of this one
    ka.handle_timer(60.0)
    (data,) = ka.take_outgoing()
    assert request(data).cseq == (2, "OPTIONS")


def test_late_stray_and_provisional_responses() -> None:
    ka = pinger()
    ka.start(0.0)
    ka.handle_timer(30.0)
    req = request(ka.take_outgoing()[0])
    late = response_to(req, 200)
    trying = response_to(req, 100)
    wrong_branch = response_to(req, 200)
    wrong_branch.headers.set("Via", "SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKother;rport=5080")
    assert not ka.receive(wrong_branch, 30.1)
    assert ka.receive(trying, 30.1) and ka.take_events() == [] and ka.in_flight
    ka.handle_timer(40.0)
    assert [type(e) for e in ka.take_events()] == [PingUnanswered]
    assert not ka.receive(late, 41.0)  # after the timeout: counted once, as unanswered
    assert (ka.answered, ka.unanswered) == (0, 1)


def test_any_final_answer_counts_a_404_too() -> None:
    ka = pinger()
    ka.start(0.0)
    ka.handle_timer(30.0)
    req = request(ka.take_outgoing()[0])
    assert ka.receive(response_to(req, 404), 30.2)
    assert ka.take_events() == [PingAnswered(404, 30.0, 30.2)]


def test_a_changed_reflexive_address_is_noted() -> None:
    core = registrar()
    ka = pinger(interval=20.0)
    ka.start(0.0)
    sources = [("192.0.2.7", 40000), ("192.0.2.7", 40000), ("192.0.2.7", 41234)]  # the NAT rebinds
    for k, source in enumerate(sources, start=1):
        now = 20.0 * k
        ka.handle_timer(now)
        (data,) = ka.take_outgoing()
        assert ka.receive(answer(core, data, now, source), now)
    assert ka.reflexive == ("192.0.2.7", 41234)
    assert ka.reflexive_changes == 1
    events = ka.take_events()
    assert ReflexiveChanged(("192.0.2.7", 40000), ("192.0.2.7", 41234), 60.0) in events


def test_stop_ends_the_pings() -> None:
    ka = pinger()
    ka.start(0.0)
    ka.handle_timer(30.0)
    ka.take_outgoing()
    ka.stop(31.0)
    assert ka.next_timer() is None and not ka.in_flight
    ka.handle_timer(100.0)
    assert ka.take_outgoing() == [] and ka.take_events() == []


def test_reliable_transport_does_not_retransmit() -> None:
    ka = pinger(transport="TCP")
    ka.start(0.0)
    ka.handle_timer(30.0)
    ka.take_outgoing()
    assert ka.next_timer() == 40.0


@pytest.mark.parametrize(("interval", "timeout"), [(0.0, 1.0), (10.0, 20.0), (float("inf"), 1.0), (10.0, 0.0)])
def test_bad_intervals_are_refused(interval: float, timeout: float) -> None:
    with pytest.raises(ValueError, match=r"interval|timeout"):
        pinger(interval=interval, timeout=timeout)


# --- CRLF keep-alives on streams ----------------------------------------------------------------------


def test_framer_takes_a_lone_pong_only_at_a_boundary() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n") == [] and framer.pongs == 0  # could still become a ping
    assert framer.take_lone_pong() and framer.pongs == 1 and framer.buffered == 0
    framer.feed(b"SIP/2.0 200 OK\r\n")
    assert not framer.take_lone_pong()


async def test_stream_pings_are_answered_by_the_embedded_registrar(
        autojump_clock: trio.testing.MockClock) -> None:
    settings = RegistrarSettings(realm="sipload.test")
    core = RegistrarCore(settings, now=trio.current_time())
    failures: list[str] = []
    messages: list[object] = []
    async with trio.open_nursery() as nursery:
        (listen,) = await nursery.start(partial(serve_registrar, settings, [Listen("tcp", "127.0.0.1", 0)],
                                                core=core))
        channel = StreamChannel("127.0.0.1", listen.port, messages.append, failures.append, keepalive=30.0)
        await channel.connect()
        nursery.start_soon(channel.run)
        await trio.sleep(95)
        assert (channel.keepalive_pings, channel.keepalive_pongs, channel.keepalive_missed) == (3, 3, 0)
        assert core.counters.crlf_pings == 3
        # the flow still carries SIP between the pings
        ka = pinger(transport="TCP")
        ka.start(trio.current_time() - 30.0)
        ka.handle_timer(trio.current_time())
        channel.send(ka.take_outgoing()[0])
        await trio.sleep(1)
        (response,) = messages
        assert isinstance(response, Response) and ka.receive(response, trio.current_time())
        assert failures == [] and channel.connects == 1
        await channel.aclose()
        nursery.cancel_scope.cancel()


async def test_a_server_that_never_pongs_is_a_flow_failure(autojump_clock: trio.testing.MockClock) -> None:
    received: list[bytes] = []

    async def mute(stream: trio.SocketStream) -> None:
        async for data in stream:
            received.append(bytes(data))

    failures: list[str] = []
    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(partial(trio.serve_tcp, mute, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        channel = StreamChannel("127.0.0.1", port, lambda _: None, failures.append, keepalive=30.0)
        await channel.connect()
        nursery.start_soon(channel.run)
        start = trio.current_time()
        with trio.fail_after(100):
            while not failures:
                await trio.sleep(1)
        assert trio.current_time() - start == pytest.approx(40.0, abs=1.0)  # 30 s to the ping, 10 s to wait
        assert received == [b"\r\n\r\n"]
        (failure,) = failures
        assert "no keep-alive pong within 10 s" in failure and f"127.0.0.1:{port}" in failure
        assert (channel.keepalive_pings, channel.keepalive_pongs, channel.keepalive_missed) == (1, 0, 1)
        assert channel.failures == 1
        await channel.aclose()
        nursery.cancel_scope.cancel()


def test_keepalive_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="keepalive"):
        StreamChannel("127.0.0.1", 5060, lambda _: None, lambda _: None, keepalive=0.0)
