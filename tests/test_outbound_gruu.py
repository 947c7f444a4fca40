"""RFC 5626 outbound and RFC 5627 GRUU: the registration machine's requests and its reading of the 200,
the embedded registrar's answers and counters, and both together on the wire (sans-IO: the request
bytes go through `RegistrarCore.handle_bytes`, the response bytes back through the parser).
"""

from __future__ import annotations

import json
import random
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from peers import (
    KamailioPeer,
    private_kamailio,
)
from sipload.registrar.bindings import StoreCount
from sipload.registrar.core import RegistrarCore
from sipload.registrar.settings import RegistrarSettings
from sipload.registrar.stats import RegistrarCounters, totals_line
from sipload.sip import Request, Response, parse_message, response_to
from sipload.sip.digest import DigestClient
from sipload.sip.headers import parse_name_addr, unquote
from sipload.sip.ids import IdSource
from sipload.sip.registration import Op, OpStarted, Profile, Registered, Registration, RegState, instance_urn

DOMAIN = "sipload.test"
SOURCE = ("127.0.0.1", 5080)
INSTANCE = "urn:uuid:f81d4fae-7dec-41d0-a765-00a0c91e6bf6"


def make(*, outbound: bool = False, gruu: bool = False, user: str = "alice", port: int = 5080, seed: int = 1,
         instance: str | None = None, reg_id: int = 1, unregister_all: bool = False) -> Registration:
    ids = IdSource(random.Random(seed))
    profile = Profile(domain=DOMAIN, registrar_uri=f"sip:{DOMAIN}", expires=600, outbound=outbound, gruu=gruu,
                      unregister_all=unregister_all)
    return Registration(profile, user=user, contact=f"sip:{user}@127.0.0.1:{port}", sent_by=f"127.0.0.1:{port}",
                        auth=DigestClient(user, f"pw-{user}", cnonce=ids.cnonce), ids=ids, instance=instance,
                        reg_id=reg_id)


def sent(reg: Registration) -> Request:
    (data,) = reg.take_outgoing()
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


def exchange(core: RegistrarCore, reg: Registration, now: float, source: tuple[str, int] = SOURCE,
             mangle: Callable[[bytes], bytes] | None = None) -> list[Response]:
    """Carry every request of `reg` to the registrar and every answer back, until nothing is left to send."""
    answers: list[Response] = []
    for _ in range(10):
        out = reg.take_outgoing()
        if not out:
            return answers
        for data in out:
            outcome = core.handle_bytes(data if mangle is None else mangle(data), source, "udp", now)
            assert outcome.response is not None, outcome.note
            response = parse_message(outcome.response.to_bytes())
            assert isinstance(response, Response)
            answers.append(response)
            assert reg.receive(response, now)
    raise AssertionError("the exchange did not settle")


def core(**kwargs: object) -> RegistrarCore:
    return RegistrarCore(RegistrarSettings(realm=DOMAIN, **kwargs), now=0.0, rng=random.Random(5))  # type: ignore[arg-type]


# --- the client's requests ---------------------------------------------------------------------------


def test_without_options_the_request_is_plain_rfc_3261() -> None:
    reg = make()
    reg.start(0.0)
    data = reg.take_outgoing()[0].decode()
    ids = IdSource(random.Random(1))
    call_id, tag, branch = ids.call_id(), ids.tag(), ids.branch()
    assert data == (
        f"REGISTER sip:{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5080;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:alice@{DOMAIN}>;tag={tag}\r\n"
        f"To: <sip:alice@{DOMAIN}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 REGISTER\r\n"
        "Contact: <sip:alice@127.0.0.1:5080>\r\n"
        "Expires: 600\r\n"
        "User-Agent: sipload\r\nContent-Length: 0\r\n\r\n"
    )
    assert reg.instance is None and reg.reg_id is None


def test_outbound_contact_has_instance_and_reg_id_and_supported_path_outbound() -> None:
    reg = make(outbound=True)
    reg.start(0.0)
    req = sent(reg)
    (contact,) = req.contacts() or []
    assert contact.uri == "sip:alice@127.0.0.1:5080"
    assert unquote(contact.params["+sip.instance"] or "") == f"<{reg.instance}>"
    assert contact.params["reg-id"] == "1"
    assert req.headers.get_list("supported") == ["path", "outbound"]
    assert reg.instance is not None and reg.instance.startswith("urn:uuid:")
    # deterministic from the IdSource: the same seed gives the same instance, another seed another one
    assert make(outbound=True).instance == reg.instance
    assert make(outbound=True, seed=2).instance != reg.instance
    assert reg.instance == instance_urn(_ids_after_call_id_and_tag(1))


def _ids_after_call_id_and_tag(seed: int) -> IdSource:
    ids = IdSource(random.Random(seed))
    ids.call_id()
    ids.tag()
    return ids


def test_gruu_alone_has_instance_without_reg_id() -> None:
    reg = make(gruu=True, instance=INSTANCE)
    reg.start(0.0)
    req = sent(reg)
    (contact,) = req.contacts() or []
    assert contact.params == {"+sip.instance": f'"<{INSTANCE}>"'}
    assert req.headers.get_list("supported") == ["gruu"]
    both = make(gruu=True, outbound=True, instance=INSTANCE, reg_id=2)
    both.start(0.0)
    req = sent(both)
    (contact,) = req.contacts() or []
    assert contact.params["reg-id"] == "2"
    assert req.headers.get_list("supported") == ["path", "outbound", "gruu"]


@pytest.mark.parametrize("instance", ["f81d4fae-7dec", "<urn:uuid:x>", 'urn:uuid:"x"', ""])
def test_a_malformed_instance_is_refused(instance: str) -> None:
    with pytest.raises(ValueError, match="instance"):
        make(outbound=True, instance=instance)


def test_reg_id_must_be_positive() -> None:
    with pytest.raises(ValueError, match="reg_id"):
        make(outbound=True, reg_id=0)


# --- reading the 200 ---------------------------------------------------------------------------------


def test_pub_and_temp_gruu_and_require_outbound_are_read_from_our_contact() -> None:
    reg = make(outbound=True, gruu=True, instance=INSTANCE)
    reg.start(0.0)
    req = sent(reg)
    ok = response_to(req, 200, to_tag="x")
    ok.headers.add("Contact", '<sip:alice@10.0.0.9:5060>;expires=3000;+sip.instance="<urn:uuid:other>";reg-id=1'
                              ';pub-gruu="sip:alice@sipload.test;gr=urn:uuid:other"')
    ok.headers.add("Contact", f'<sip:alice@127.0.0.1:5080>;expires=300;+sip.instance="<{INSTANCE}>";reg-id=2'
                              ';pub-gruu="sip:alice@sipload.test;gr=nope"')
    ok.headers.add("Contact", f'<sip:alice@127.0.0.1:5080>;expires=500;+sip.instance="<{INSTANCE}>";reg-id=1'
                              f';pub-gruu="sip:alice@sipload.test;gr={INSTANCE}"'
                              ';temp-gruu="sip:tgruu.7hs==jd7vnzga5w7fajsc7-ajd6fabz0f8g5@sipload.test;gr"')
    ok.headers.add("Require", "outbound")
    assert reg.receive(ok, 1.0)
    (event,) = [e for e in reg.take_events() if isinstance(e, Registered)]
    assert event.expires == 500  # our flow's expiry (instance and reg-id), not another's
    assert reg.pub_gruu == f"sip:alice@sipload.test;gr={INSTANCE}"
    assert reg.temp_gruu == "sip:tgruu.7hs==jd7vnzga5w7fajsc7-ajd6fabz0f8g5@sipload.test;gr"
    assert reg.outbound_required


def test_a_registrar_without_gruu_or_outbound_leaves_them_unset() -> None:
    reg = make(outbound=True, gruu=True, instance=INSTANCE)
    reg.start(0.0)
    req = sent(reg)
    ok = response_to(req, 200, to_tag="x")
    ok.headers.add("Contact", "<sip:alice@127.0.0.1:5080>;expires=120")  # the instance not echoed: URI match
    assert reg.receive(ok, 1.0)
    assert reg.granted_expires == 120
    assert reg.pub_gruu is None and reg.temp_gruu is None and not reg.outbound_required


def test_flow_failure_of_a_bound_endpoint_refreshes_at_once() -> None:
    registrar = core()
    reg = make(outbound=True)
    reg.start(0.0)
    exchange(registrar, reg, 0.0)
    assert reg.state is RegState.REGISTERED and reg.take_events()
    due = reg.next_timer()
    assert due is not None and due > 100
    reg.flow_failed(5.0)
    assert reg.next_timer() == 5.0
    reg.handle_timer(5.0)
    assert [type(e) for e in reg.take_events()] == [OpStarted]
    exchange(registrar, reg, 5.0)
    (event,) = reg.take_events()
    assert isinstance(event, Registered) and event.op is Op.REFRESH


def test_flow_failure_during_a_request_is_a_transport_error() -> None:
    reg = make(outbound=True)
    reg.start(0.0)
    reg.take_outgoing()
    reg.take_events()
    reg.flow_failed(0.5)
    assert reg.state is RegState.BACKOFF


# --- the registrar -----------------------------------------------------------------------------------


def test_registrar_gives_gruus_and_requires_outbound_and_counts_them() -> None:
    registrar = core()
    reg = make(outbound=True, gruu=True, instance=INSTANCE)
    reg.start(0.0)
    answers = exchange(registrar, reg, 0.0)
    assert [a.status for a in answers] == [401, 200]
    ok = answers[-1]
    assert ok.headers.get_all("require") == ["outbound"]
    (contact,) = ok.contacts() or []
    assert unquote(contact.params["pub-gruu"] or "") == f"sip:alice@{DOMAIN};gr={INSTANCE}"
    temp = unquote(contact.params["temp-gruu"] or "")
    assert temp.startswith("sip:tgruu.") and temp.endswith(f"@{DOMAIN};gr")
    assert reg.pub_gruu == f"sip:alice@{DOMAIN};gr={INSTANCE}" and reg.temp_gruu == temp
    assert reg.outbound_required
    assert registrar.counters.outbound_registers == 1 and registrar.counters.gruu_registers == 1
    (binding,) = registrar.store.bindings(f"sip:alice@{DOMAIN}", 0.0)
    assert binding.instance == f"<{INSTANCE}>" and binding.reg_id == "1"


def test_temp_gruu_is_new_for_a_new_call_id_and_pub_gruu_stays() -> None:
    registrar = core()
    first = make(gruu=True, instance=INSTANCE, seed=1)
    first.start(0.0)
    exchange(registrar, first, 0.0)
    again = make(gruu=True, instance=INSTANCE, seed=9)  # the phone rebooted: a new Call-ID
    again.start(10.0)
    exchange(registrar, again, 10.0)
    assert first.call_id != again.call_id
    assert again.pub_gruu == first.pub_gruu
    assert again.temp_gruu is not None and first.temp_gruu is not None and again.temp_gruu != first.temp_gruu
    assert registrar.counters.gruu_registers == 2 and registrar.counters.outbound_registers == 0


def test_plain_register_gets_neither_gruu_nor_require() -> None:
    registrar = core()
    reg = make(instance=INSTANCE)  # no options: no instance on the wire either
    reg.start(0.0)
    ok = exchange(registrar, reg, 0.0)[-1]
    assert ok.status == 200 and "require" not in ok.headers
    (contact,) = ok.contacts() or []
    assert set(contact.params) == {"expires"}
    assert (registrar.counters.outbound_registers, registrar.counters.gruu_registers) == (0, 0)


def test_registrar_with_gruu_and_outbound_off() -> None:
    registrar = core(gruu=False, outbound=False)
    reg = make(outbound=True, gruu=True, instance=INSTANCE)
    reg.start(0.0)
    ok = exchange(registrar, reg, 0.0)[-1]
    assert ok.status == 200 and "require" not in ok.headers
    (contact,) = ok.contacts() or []
    assert "pub-gruu" not in contact.params and contact.params["reg-id"] == "1"  # still keyed by the flow
    assert reg.pub_gruu is None and not reg.outbound_required
    options = _options(registrar)
    assert options.headers.get("supported") == "path"


def test_require_outbound_from_the_ua_is_accepted_only_when_supported() -> None:
    def require(data: bytes) -> bytes:
        return data.replace(b"Supported: path, outbound\r\n", b"Supported: path, outbound\r\nRequire: outbound\r\n")

    for settings, status in (({}, 200), ({"outbound": False}, 420)):
        reg = make(outbound=True, instance=INSTANCE)
        reg.start(0.0)
        answers = exchange(core(**settings), reg, 0.0, mangle=require)
        assert [a.status for a in answers] == [401, status]


def test_unregister_with_outbound_removes_only_our_flow() -> None:
    """Two flows of one device (RFC 5626 §4.2: same instance, reg-id 1 and 2); unregistering one keeps the other."""
    registrar = core()
    one = make(outbound=True, instance=INSTANCE, reg_id=1, port=5080, seed=1)
    two = make(outbound=True, instance=INSTANCE, reg_id=2, port=5082, seed=2)
    for reg in (one, two):
        reg.start(0.0)
        exchange(registrar, reg, 0.0)
    aor = f"sip:alice@{DOMAIN}"
    assert sorted(b.reg_id or "" for b in registrar.store.bindings(aor, 0.0)) == ["1", "2"]
    one.stop(1.0)
    seen: list[bytes] = []

    def record(data: bytes) -> bytes:
        seen.append(data)
        return data

    answers = exchange(registrar, one, 1.0, mangle=record)
    unregister = parse_message(seen[0])
    assert isinstance(unregister, Request)
    (contact,) = unregister.contacts() or []
    assert contact.params["reg-id"] == "1" and unregister.expires() == 0
    assert answers[-1].status == 200 and one.state is RegState.UNREGISTERED
    (left,) = registrar.store.bindings(aor, 1.0)
    assert (left.contact, left.reg_id) == ("sip:alice@127.0.0.1:5082", "2")
    assert one.pub_gruu is None


def test_wildcard_unregister_still_removes_every_flow() -> None:
    registrar = core()
    one = make(outbound=True, instance=INSTANCE, reg_id=1, seed=1, unregister_all=True)
    two = make(outbound=True, instance=INSTANCE, reg_id=2, port=5082, seed=2)
    for reg in (one, two):
        reg.start(0.0)
        exchange(registrar, reg, 0.0)
    one.stop(1.0)
    exchange(registrar, one, 1.0)
    assert registrar.store.bindings(f"sip:alice@{DOMAIN}", 1.0) == ()


def _options(registrar: RegistrarCore) -> Response:
    request = parse_message(
        b"OPTIONS sip:sipload.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKo1;rport\r\n"
        b"From: <sip:alice@sipload.test>;tag=a\r\nTo: <sip:sipload.test>\r\nCall-ID: o1\r\n"
        b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(request, Request)
    response = registrar.handle(request, SOURCE, "udp", 0.0).response
    assert response is not None
    return response


def test_options_are_answered_and_counted() -> None:
    registrar = core()
    response = _options(registrar)
    assert response.status == 200
    assert response.headers.get_list("supported") == ["path", "outbound", "gruu"]
    assert registrar.counters.options_answered == 1


def test_counters_are_copied_and_shown_in_the_totals_line() -> None:
    counters = RegistrarCounters()
    plain = totals_line(1.0, counters, StoreCount(0, 0))
    assert "gruu" not in plain and "crlf" not in plain  # unused: the line stays as it was
    counters.outbound_registers, counters.gruu_registers, counters.options_answered, counters.crlf_pings = 1, 2, 3, 4
    copy = counters.copy()
    assert (copy.outbound_registers, copy.gruu_registers, copy.options_answered, copy.crlf_pings) == (1, 2, 3, 4)
    line = totals_line(1.0, copy, StoreCount(0, 0))
    assert "outbound_registers=1 gruu_registers=2 options_answered=3 crlf_pings=4" in line


def test_pub_gruu_parses_as_a_sip_uri_with_gr() -> None:
    registrar = core()
    reg = make(gruu=True, instance=INSTANCE)
    reg.start(0.0)
    exchange(registrar, reg, 0.0)
    assert reg.pub_gruu is not None
    addr = parse_name_addr(f"<{reg.pub_gruu}>")
    assert addr.uri.endswith(f";gr={INSTANCE}")


# --- Kamailio (a real registrar): instance, reg-id and GRUU kept ------------------------------------


@pytest.fixture(scope="module")
def own_kamailio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KamailioPeer]:
    """A Kamailio of this module's own (run dir and ports), so that other suites' registrations never mix in."""
    with private_kamailio(tmp_path_factory.mktemp("kamailio-outbound")) as peer:
        yield peer


def _ul_dump(peer: KamailioPeer) -> dict[str, list[dict[str, Any]]]:
    """AoR -> its contacts, from Kamailio's `ul.dump` (JSON-RPC over HTTP on loopback)."""
    body = json.dumps({"jsonrpc": "2.0", "method": "ul.dump", "id": 1}).encode()
    request = urllib.request.Request(peer.rpc_url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        result = json.loads(answer.read())["result"]
    out: dict[str, list[dict[str, Any]]] = {}
    for domain in result["Domains"]:
        for aor in domain["Domain"].get("AoRs", []):
            info = aor["Info"]
            out[info["AoR"]] = [c["Contact"] for c in info["Contacts"]]
    return out


def _drive(sock: socket.socket, peer: KamailioPeer, regs: list[Registration], done: Callable[[], bool]) -> None:
    """Send what the registrations have to send, feed them the answers (by Call-ID) until `done` (bounded)."""
    by_call_id = {reg.call_id: reg for reg in regs}
    deadline = time.monotonic() + 20.0
    while not done():
        now = time.monotonic()
        assert now < deadline, [reg.state for reg in regs]
        for reg in regs:
            due = reg.next_timer()
            if due is not None and due <= now:
                reg.handle_timer(now)
            for data in reg.take_outgoing():
                sock.sendto(data, (peer.host, peer.port))
        try:
            data, _ = sock.recvfrom(65535)
        except TimeoutError:
            continue
        response = parse_message(data)
        assert isinstance(response, Response)
        reg = by_call_id[response.call_id]
        reg.receive(response, time.monotonic())
        for data in reg.take_outgoing():
            sock.sendto(data, (peer.host, peer.port))


@pytest.mark.interop
def test_kamailio_keeps_instance_and_reg_id_and_gives_pub_gruu(own_kamailio: KamailioPeer) -> None:
    peer = own_kamailio
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.2)
        port = sock.getsockname()[1]
        profile = Profile(domain="127.0.0.1", registrar_uri=f"sip:{peer.host}:{peer.port}", expires=120,
                          outbound=True, gruu=True)
        ids = IdSource(random.Random(11))
        regs = [Registration(profile, user=f"user{n}", contact=f"sip:user{n}@127.0.0.1:{port}",
                             sent_by=f"127.0.0.1:{port}", ids=ids,
                             auth=DigestClient(f"user{n}", f"pw-user{n}", cnonce=ids.cnonce)) for n in range(1, 11)]
        now = time.monotonic()
        for reg in regs:
            reg.start(now)
        _drive(sock, peer, regs, lambda: all(r.state is RegState.REGISTERED for r in regs))
        assert len({r.instance for r in regs}) == 10
        for reg in regs:
            assert reg.pub_gruu == f"sip:{reg.user}@127.0.0.1;gr={reg.instance}"
            assert reg.temp_gruu is not None and reg.temp_gruu.endswith(";gr")
            assert reg.outbound_required  # outbound_mode 1: Require: outbound for a UA that supports it
        dump = _ul_dump(peer)
        for reg in regs:
            (contact,) = dump[reg.user]
            assert contact["Address"] == reg.contact
            assert contact["Instance"] == f"<{reg.instance}>" and contact["Reg-Id"] == 1
        # unregistering five flows removes exactly those bindings
        now = time.monotonic()
        for reg in regs[:5]:
            reg.stop(now)
        _drive(sock, peer, regs, lambda: all(r.state is RegState.UNREGISTERED for r in regs[:5]))
        assert sorted(_ul_dump(peer)) == sorted(r.user for r in regs[5:])
        now = time.monotonic()
        for reg in regs[5:]:
            reg.stop(now)
        _drive(sock, peer, regs, lambda: all(r.state is RegState.UNREGISTERED for r in regs))
    assert _ul_dump(peer) == {}
