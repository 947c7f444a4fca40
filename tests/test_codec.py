"""Tests of the SIP message codec: parse_message, StreamFramer, Headers, header values, to_bytes.

Every accepted message (tests/codec_cases.py) is parsed as a datagram and, when a stream can carry
it, framed from a byte stream whole, byte by byte, and twice back to back with CRLF keep-alives
around it (as h11's tests do): the results must equal the datagram parse. Fuzz tests hold the
invariant that the codec returns a message or raises ParseError, never anything else.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from functools import partial

import pytest
from codec_cases import (
    ACCEPTED,
    AST_MD5,
    AST_SHA256,
    ASTERISK_401,
    ASTERISK_401_JOINED,
    BADASPEC,
    BADDN,
    BADINV01,
    BODY_CUT,
    COMPACT,
    CONTACT_STAR,
    CPARAM01,
    CPARAM02,
    DBLREQ,
    DBLREQ_INVITE,
    DBLREQ_REGISTER,
    ESC01,
    ESC02,
    ESCNULL,
    INSUF,
    INTMETH,
    INTMETH_METHOD,
    INTMETH_URI,
    INV2543,
    IPV6_BAD,
    IPV6_GOOD,
    IPV6_PORT,
    KAMAILIO_200,
    KAMAILIO_200_CAPTURED,
    KAMAILIO_401,
    KAMAILIO_401_CAPTURED,
    LEADING_CRLF,
    LF_BODY,
    LONGREQ,
    LONGREQ_VIAS,
    LWSDISP,
    MISMATCH01,
    MULTI01,
    NO_BLANK_LINE,
    NOREASON,
    PROXY_407,
    PYVOIP_AUTHORIZATION,
    PYVOIP_REGISTER,
    PYVOIP_REGISTER_AUTH,
    QUOTBAL,
    REGBADCT,
    REGISTER_CRLF_LF,
    REGISTER_LF,
    REGISTER_MIXED,
    REJECTED,
    RESPONSE_499,
    RESPONSE_NO_REASON,
    RFC3261_100,
    RFC3261_HEADER_EXAMPLES,
    RFC3261_INVITE,
    RFC3261_REGISTER,
    RFC3261_REGISTER_200,
    SCALAR02,
    SCALARLG,
    SEMIURI,
    SIPP_REGISTER,
    SIPP_REGISTER_AUTH,
    TRANSPORTS,
    UNKSCM,
    UNKSM2,
    UNREASON,
    UNREASON_PHRASE,
    WSINV,
    Bad,
    Case,
    sdp,
    wire,
)
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sipload.sip.errors import ParseError
from sipload.sip.headers import (
    COMPACT_FORMS,
    NameAddr,
    SipUri,
    Via,
    canonical_name,
    format_params,
    normalize_name,
    parse_cseq,
    parse_delta,
    parse_hostport,
    parse_name_addr,
    parse_params,
    parse_uri,
    parse_via,
    quote,
    split_list,
    unquote,
    via_branch,
)
from sipload.sip.message import Headers, Message, Request, Response, response_to
from sipload.sip.parser import MAX_HEAD_BYTES, StreamFramer, parse_message

Msg = Request | Response
STREAMABLE = [c for c in ACCEPTED if c.stream]


# --- helpers -----------------------------------------------------------------------------------

def summary(msg: Msg) -> tuple[object, ...]:
    """What must survive framing and serialization: start line, header lines, body."""
    if isinstance(msg, Request):
        return ("request", msg.method, msg.uri, msg.headers.items(), msg.body)
    return ("response", msg.status, msg.reason, msg.headers.items(), msg.body)


def parse(data: bytes) -> Msg:
    return parse_message(data)


def request(data: bytes) -> Request:
    msg = parse_message(data)
    assert isinstance(msg, Request)
    return msg


def response(data: bytes) -> Response:
    msg = parse_message(data)
    assert isinstance(msg, Response)
    return msg


def feed_chunks(chunks: Sequence[bytes], framer: StreamFramer | None = None) -> list[Msg]:
    framer = framer if framer is not None else StreamFramer()
    out: list[Msg] = []
    for chunk in chunks:
        out.extend(framer.feed(chunk))
    return out


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def without_length(items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in items if k != "content-length"]


def error_of(call: Callable[[], object]) -> str:
    with pytest.raises(ParseError) as info:
        call()
    return str(info.value)


def touch(msg: Msg) -> None:
    """Every derived accessor and value parser: each returns or raises ParseError, nothing else."""
    probes: list[Callable[[], object]] = [
        lambda: msg.call_id,
        lambda: msg.cseq,
        lambda: msg.top_via,
        lambda: msg.branch,
        lambda: msg.from_addr,
        lambda: msg.to_addr,
        lambda: msg.from_addr.tag,
        lambda: msg.contacts(),
        lambda: msg.expires(),
        lambda: [parse_via(v) for v in msg.headers.get_list("via")],
        lambda: [parse_uri(c.uri) for c in msg.contacts() or []],
        lambda: [parse_delta(c.params.get("expires") or "", "expires") for c in msg.contacts() or []],
        lambda: parse_uri(msg.from_addr.uri),
        lambda: parse_delta(msg.headers.get("retry-after") or "", "Retry-After"),
        lambda: parse_delta(msg.headers.get("min-expires") or "", "Min-Expires"),
        lambda: [parse_name_addr(v) for v in msg.headers.get_list("route")],
    ]
    if isinstance(msg, Request):
        probes.append(lambda: parse_uri(msg.uri))
    for probe in probes:
        try:
            probe()
        except ParseError:
            pass
    msg.to_bytes()  # whatever was parsed can be written again


# --- every accepted message: datagram, stream (3 ways), serialization --------------------------

@pytest.mark.parametrize("case", ACCEPTED, ids=lambda c: c.name)
def test_accepted_as_datagram(case: Case) -> None:
    msg = parse_message(case.data)
    assert isinstance(msg, Request | Response)
    assert parse_message(bytearray(case.data)).headers == msg.headers
    assert parse_message(memoryview(case.data)).body == msg.body
    touch(msg)


@pytest.mark.parametrize("case", STREAMABLE, ids=lambda c: c.name)
def test_accepted_framed_whole(case: Case) -> None:
    framer = StreamFramer()
    msgs = framer.feed(case.data)
    assert [summary(m) for m in msgs] == [summary(parse_message(case.data))]
    assert framer.buffered == 0


@pytest.mark.parametrize("case", STREAMABLE, ids=lambda c: c.name)
def test_accepted_framed_byte_by_byte(case: Case) -> None:
    framer = StreamFramer()
    seen: list[int] = []
    msgs: list[Msg] = []
    for i, chunk in enumerate(bytewise(case.data)):
        got = framer.feed(chunk)
        seen.extend(i for _ in got)
        msgs.extend(got)
    assert [summary(m) for m in msgs] == [summary(parse_message(case.data))]
    assert seen == [len(case.data) - 1]  # complete exactly when its last byte arrives
    assert framer.buffered == 0


@pytest.mark.parametrize("case", STREAMABLE, ids=lambda c: c.name)
@pytest.mark.parametrize("split", ["whole", "bytewise", "random"])
def test_accepted_framed_back_to_back_with_keepalives(case: Case, split: str) -> None:
    stream = b"\r\n\r\n" + case.data + b"\r\n\r\n" + b"\r\n" + case.data + b"\r\n\r\n"
    if split == "whole":
        chunks = [stream]
    elif split == "bytewise":
        chunks = bytewise(stream)
    else:
        rng = random.Random(case.name)
        cuts = sorted(rng.sample(range(1, len(stream)), min(12, len(stream) - 1)))
        chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    framer = StreamFramer()
    msgs = feed_chunks(chunks, framer)
    expected = summary(parse_message(case.data))
    assert [summary(m) for m in msgs] == [expected, expected]
    if case.data[:1] not in (b"\r", b"\n"):
        assert (framer.pings, framer.pongs) == (3, 1)
    assert framer.buffered == 0


@pytest.mark.parametrize("case", ACCEPTED, ids=lambda c: c.name)
def test_accepted_round_trip(case: Case) -> None:
    msg = parse_message(case.data)
    wire_form = msg.to_bytes()
    again = parse_message(wire_form)
    assert type(again) is type(msg)
    assert summary(again)[:3] == summary(msg)[:3]
    assert again.headers.items() == [*without_length(msg.headers.items()), ("content-length", str(len(msg.body)))]
    assert again.body == msg.body
    assert again.to_bytes() == wire_form
    assert feed_chunks(bytewise(wire_form))[0].headers == again.headers


@pytest.mark.parametrize("bad", REJECTED, ids=lambda b: b.name)
def test_rejected(bad: Bad) -> None:
    assert bad.error in error_of(lambda: parse_message(bad.data))


@pytest.mark.parametrize("bad", REJECTED, ids=lambda b: b.name)
def test_rejected_on_a_stream_never_yields_a_message(bad: Bad) -> None:
    for chunks in ([bad.data], bytewise(bad.data)):
        framer = StreamFramer()
        try:
            assert feed_chunks(chunks, framer) == []
        except ParseError:
            with pytest.raises(ParseError, match="already failed"):
                framer.feed(b"OPTIONS sip:x SIP/2.0\r\n\r\n")


def test_not_bytes() -> None:
    assert "expected bytes, got str" in error_of(lambda: parse_message("SIP/2.0 200 OK\r\n\r\n"))  # type: ignore[arg-type]


# --- real peers --------------------------------------------------------------------------------

def test_kamailio_401_captured() -> None:
    msg = response(KAMAILIO_401_CAPTURED)
    assert (msg.status, msg.reason) == (401, "Unauthorized")
    assert msg.call_id == "cap-call-1@127.0.0.1"
    assert msg.cseq == (1, "REGISTER")
    via = msg.top_via
    assert (via.transport, via.host, via.port) == ("UDP", "127.0.0.1", 56255)
    assert via.params == {"branch": "z9hG4bK-cap-1", "rport": "56255", "received": "127.0.0.1"}
    assert msg.branch == "z9hG4bK-cap-1"
    assert msg.headers.get_all("www-authenticate") == [
        'Digest realm="127.0.0.1", nonce="awRZQWsEWBWYsme+uKiUgYcO7tI5nyeq"']
    assert msg.to_addr.tag == "df673b98c9e0bd9172cfc0d849035098.ab83a413"
    assert msg.from_addr == NameAddr("sip:user1@127.0.0.1", None, {"tag": "abc123"})
    assert msg.body == b""


def test_kamailio_200_captured_contact_params() -> None:
    msg = response(KAMAILIO_200_CAPTURED)
    contacts = msg.contacts()
    assert contacts is not None and len(contacts) == 1
    (contact,) = contacts
    assert contact.uri == "sip:user1@127.0.0.1:56255;transport=udp"
    assert contact.params == {
        "expires": "3600",
        "+sip.instance": '"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"',
        "reg-id": "1",
    }
    assert unquote(contact.params["+sip.instance"] or "") == "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"
    assert parse_delta(contact.params["expires"] or "", "expires") == 3600
    uri = parse_uri(contact.uri)
    assert (uri.user, uri.host, uri.port, uri.transport) == ("user1", "127.0.0.1", 56255, "udp")
    assert msg.expires() is None


def test_kamailio_default_config_401_and_200() -> None:
    challenge = response(KAMAILIO_401)
    assert challenge.headers.get("server") == "kamailio (5.6.3 (x86_64/linux))"
    assert challenge.top_via.params["rport"] == "40312"
    assert challenge.top_via.params["received"] == "203.0.113.7"
    assert challenge.headers.get_all("WWW-Authenticate") == [
        'Digest realm="sip.example.com", nonce="ZTRjMWE1ZmUwMDAwMDAwMDRmMzRjNjU5ZWQ2NGI5MmQ=", qop="auth"']
    ok = response(KAMAILIO_200)
    assert ok.cseq == (21, "REGISTER")
    assert len(ok.headers.get_all("contact")) == 1  # one line ...
    contacts = ok.contacts()
    assert contacts is not None
    assert [c.uri for c in contacts] == ["sip:alice@192.168.1.20:5060;transport=udp", "sip:alice@10.0.0.8:5060"]
    assert contacts[0].params == {"expires": "3600", "received": '"sip:203.0.113.7:40312"'}
    assert contacts[1].params == {"expires": "1712"}
    assert parse_uri(unquote(contacts[0].params["received"] or "")) == SipUri("sip", None, "203.0.113.7", 40312)


@pytest.mark.parametrize("data", [ASTERISK_401, ASTERISK_401_JOINED], ids=["lines", "joined"])
def test_asterisk_two_challenges(data: bytes) -> None:
    msg = response(data)
    lines = msg.headers.get_all("www-authenticate")
    if data is ASTERISK_401:
        assert lines == [AST_SHA256, AST_MD5]
    else:
        assert lines == [f"{AST_SHA256}, {AST_MD5}"]  # challenges are not split by the codec
    assert msg.headers.get("www-authenticate") == lines[0]
    assert msg.headers.get_list("www-authenticate") == lines  # not a list header: the lines
    assert msg.headers.get("content-length") == "0"
    assert msg.body == b""
    assert msg.headers.get("Server") == "Asterisk PBX 20.5.0"


def test_challenges_reach_the_digest_parser() -> None:
    digest = pytest.importorskip("sipload.sip.digest")
    for data in (ASTERISK_401, ASTERISK_401_JOINED):
        challenges = digest.parse_challenges(response(data).headers.get_all("www-authenticate"))
        assert [c.algorithm_name for c in challenges] == ["SHA-256", "MD5"]
    (challenge,) = digest.parse_challenges(response(KAMAILIO_401).headers.get_all("www-authenticate"))
    assert (challenge.realm, challenge.qop) == ("sip.example.com", ("auth",))


def test_proxy_407_with_two_lines_in_different_case() -> None:
    msg = response(PROXY_407)
    assert msg.status == 407
    assert len(msg.headers.get_all("Proxy-Authenticate")) == 2
    assert "proxy-authenticate" in msg.headers and "PROXY-AUTHENTICATE" in msg.headers


def test_pyvoip_register() -> None:
    msg = request(PYVOIP_REGISTER)
    assert (msg.method, msg.uri) == ("REGISTER", "sip:127.0.0.1:5070")
    via = msg.top_via
    assert via.params == {"branch": "z9hG4bK6a1b2c3d4e5f60718293a4b5c", "rport": None}  # rport: a flag
    assert "rport" in via.params and via.params["rport"] is None
    assert msg.from_addr.display == "user1"
    assert msg.from_addr.tag == "8f14e45f"
    assert msg.to_addr == NameAddr("sip:user1@127.0.0.1:5070", "user1", {})
    contacts = msg.contacts()
    assert contacts is not None
    assert contacts[0].params == {"+sip.instance": '"<urn:uuid:5C2D7B1E-9F4A-4E0B-8C3D-2A1B0C9D8E7F>"'}
    assert msg.headers.get_list("allow") == ["INVITE", "ACK", "BYE", "CANCEL"]
    assert msg.headers.get_list("allow-events") == ["org.3gpp.nwinitdereg"]
    assert msg.expires() == 120
    assert parse_uri(msg.uri) == SipUri("sip", None, "127.0.0.1", 5070)


def test_pyvoip_authorization_kept_verbatim() -> None:
    msg = request(PYVOIP_REGISTER_AUTH)
    assert msg.headers.get("authorization") == PYVOIP_AUTHORIZATION
    assert msg.headers.get_list("Authorization") == [PYVOIP_AUTHORIZATION]  # commas inside are not split
    assert msg.cseq == (2, "REGISTER")


def test_sipp_register() -> None:
    msg = request(SIPP_REGISTER)
    assert msg.branch == "z9hG4bK-41742-1-0"
    assert msg.top_via.port == 5080
    assert msg.from_addr.tag == "41742SIPpTag001"
    assert msg.to_addr.tag is None
    assert msg.headers.get("max-forwards") == "70"
    assert msg.headers.get("user-agent") == "sipp-bench"
    assert msg.expires() == 3600
    auth = request(SIPP_REGISTER_AUTH)
    assert (auth.headers.get("authorization") or "").startswith('Digest username="user1",realm="127.0.0.1"')
    assert auth.cseq == (2, "REGISTER")


# --- RFC 3261 ----------------------------------------------------------------------------------

def test_rfc3261_register_and_folded_200() -> None:
    reg = request(RFC3261_REGISTER)
    assert reg.to_addr == NameAddr("sip:bob@biloxi.com", "Bob", {})
    assert reg.from_addr.tag == "456248"
    assert reg.expires() == 7200
    ok = response(RFC3261_REGISTER_200)
    assert ok.headers.get("via") == "SIP/2.0/UDP bobspc.biloxi.com:5060;branch=z9hG4bKnashds7 ;received=192.0.2.4"
    assert ok.top_via == Via("UDP", "bobspc.biloxi.com", 5060, {"branch": "z9hG4bKnashds7", "received": "192.0.2.4"})
    assert ok.to_addr.tag == "2493k59kd"


def test_rfc3261_invite_body_and_100() -> None:
    inv = request(RFC3261_INVITE)
    assert inv.body == sdp("192.0.2.1").encode()
    assert inv.headers.get("content-type") == "application/sdp"
    assert inv.cseq == (314159, "INVITE")
    trying = response(RFC3261_100)
    assert (trying.status, trying.reason) == (100, "Trying")
    assert trying.top_via.params["received"] == "192.0.2.1"


def test_rfc3261_header_examples() -> None:
    msg = response(RFC3261_HEADER_EXAMPLES)
    vias = [parse_via(v) for v in msg.headers.get_list("via")]
    assert vias[0] == Via("UDP", "first.example.com", 4000,
                          {"ttl": "16", "maddr": "224.2.0.1", "branch": "z9hG4bKa7c6a8dd.1"})
    assert vias[2].params == {"received": "192.0.2.207", "branch": "z9hG4bK77asjd"}
    contacts = msg.contacts()
    assert contacts == [
        NameAddr("sip:watson@worcester.bell-telephone.com", "Mr. Watson", {"q": "0.7", "expires": "3600"}),
        NameAddr("mailto:watson@bell-telephone.com", "Mr. Watson", {"q": "0.1"}),
        NameAddr("sips:bob@192.0.2.4", None, {"expires": "60"}),
    ]
    assert msg.headers.get_all("contact")[1] == "<sips:bob@192.0.2.4>;expires=60"  # "m" is Contact
    assert msg.to_addr == NameAddr("sip:operator@cs.columbia.edu", "The Operator", {"tag": "287447"})
    assert msg.from_addr == NameAddr("sip:+12125551212@server.phone2net.com", None, {"tag": "887s"})
    assert msg.call_id == "f81d4fae-7dec-11d0-a765-00a0c91e6bf6@foo.bar.com"
    assert "mailto" in error_of(lambda: parse_uri(contacts[1].uri))


# --- RFC 4475 valid messages -----------------------------------------------------------------------

def test_wsinv() -> None:
    msg = request(WSINV)
    assert (msg.method, msg.uri) == ("INVITE", "sip:vivekg@chair-dnrc.example.com;unknownparam")
    assert parse_uri(msg.uri).params == {"unknownparam": None}
    assert msg.to_addr == NameAddr("sip:vivekg@chair-dnrc.example.com", None, {"tag": "1918181833n"})
    assert msg.from_addr == NameAddr("sip:jdrosen@example.com", 'J Rosenberg \\"', {"tag": "98asjd8"})
    assert msg.headers.get("max-forwards") == "0068"
    assert msg.cseq == (9, "INVITE")
    assert msg.headers.get("subject") == ""
    assert msg.headers.get("newfangledheader") == "newfangled value continued newfangled value"
    assert msg.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert msg.headers.get_list("route") == ["<sip:services.example.com;lr;unknownwith=value;unknown-no-value>"]
    vias = [parse_via(v) for v in msg.headers.get_list("via")]
    assert vias == [
        Via("UDP", "192.0.2.2", None, {"branch": "390skdjuw"}),
        Via("TCP", "spindle.example.com", None, {"branch": "z9hG4bK9ikj8"}),
        Via("UDP", "192.168.255.111", None, {"branch": "z9hG4bK30239"}),
    ]
    assert len(msg.headers.get_all("via")) == 2  # "Via" and "v" lines
    assert msg.contacts() == [
        NameAddr("sip:jdrosen@example.com", 'Quoted string ""',
                 {"newparam": "newvalue", "secondparam": None, "q": "0.33"})
    ]
    assert len(msg.body) == 150 and msg.body.startswith(b"v=0\r\n")


def test_intmeth() -> None:
    msg = request(INTMETH)
    assert (msg.method, msg.uri) == (INTMETH_METHOD, INTMETH_URI)
    uri = parse_uri(msg.uri)
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert (uri.host, uri.port, uri.params, uri.headers) == ("example.com", None, {}, "")
    assert msg.branch == "z9hG4bK-.!%66*_+`'~"
    assert msg.to_addr.display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert parse_uri(msg.to_addr.uri).user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    sender = msg.from_addr
    assert sender.display == "token1~` token2'+_ token3*%!.-"
    assert sender.params == {"fromparam''~+*_!.-%": '"работающий"', "tag": "_token~1'+`*%!-."}
    assert msg.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert msg.cseq == (139122385, INTMETH_METHOD)  # case-sensitive, kept as sent
    assert msg.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def test_esc01_escnull_esc02() -> None:
    esc01 = request(ESC01)
    assert parse_uri(esc01.uri).user == "sips%3Auser%40example.com"
    assert parse_uri(esc01.to_addr.uri).user == "%75se%72"
    assert esc01.from_addr.tag == "938"
    assert esc01.call_id == "esc01.239409asdfakjkn23onasd0-3234"  # "i"
    assert esc01.headers.get("content-type") == "application/sdp"  # "C"
    contacts = esc01.contacts()
    assert contacts is not None
    assert parse_uri(contacts[0].uri).params == {"%6c%72": None, "n%61me": "v%61lue%25%34%31"}
    escnull = request(ESCNULL)
    assert escnull.to_addr.uri == "sip:null-%00-null@example.com"
    contacts = escnull.contacts()
    assert contacts is not None
    assert [parse_uri(c.uri).user for c in contacts] == ["%00", "%00%00"]
    assert escnull.headers.get("content-length") == "0"  # "L:0"
    esc02 = request(ESC02)
    assert esc02.method == "RE%47IST%45R"  # % is not an escape in a method
    assert esc02.cseq == (29344, "RE%47IST%45R")
    assert esc02.to_addr.display == "%Z%45"
    assert esc02.branch == "z9hG4bK209%fzsnel234"
    contacts = esc02.contacts()
    assert contacts is not None
    assert [c.uri for c in contacts] == ["sip:alias1@host1.example.com", "sip:alias3@host3.example.com"]
    assert esc02.headers.get("c%6fntact") == "<sip:alias2@host2.example.com>"  # an unknown header


def test_lwsdisp_semiuri_transports() -> None:
    assert request(LWSDISP).from_addr == NameAddr("sip:caller@example.com", "caller", {"tag": "323"})
    semi = request(SEMIURI)
    uri = parse_uri(semi.uri)
    assert (uri.user, uri.host, uri.params) == ("user;par=u%40example.net", "example.com", {})
    assert semi.headers.get_list("accept") == [
        "application/sdp", "application/pkcs7-mime", "multipart/mixed", "multipart/signed",
        "message/sip", "message/sipfrag"]
    vias = [parse_via(v) for v in request(TRANSPORTS).headers.get_list("via")]
    assert [(v.transport, v.host) for v in vias] == [
        ("UDP", "t1.example.com"), ("SCTP", "t2.example.com"), ("TLS", "t3.example.com"),
        ("UNKNOWN", "t4.example.com"), ("TCP", "t5.example.com")]
    assert request(TRANSPORTS).call_id == "transports.kijh4akdnaqjkwendsasfdj"


def test_longreq() -> None:
    msg = request(LONGREQ)
    assert msg.headers.get_list("via") == LONGREQ_VIAS  # every spelling of Via, in order
    assert msg.top_via.host == "sip33.example.com"
    last = parse_via(msg.headers.get_list("v")[-1])
    assert last.params["received"] == "192.0.2.5" and (last.branch or "").endswith("branchvalue")
    to = msg.to_addr
    assert to.display is not None and to.display.endswith(" proportion")
    assert parse_uri(to.uri).port == 6000
    assert msg.from_addr.tag is not None and msg.from_addr.tag.endswith("424")  # "F" with header params
    assert len(msg.from_addr.params) == 3
    assert len(msg.body) == 150


def test_dblreq_datagram_keeps_the_first_message_only() -> None:
    msg = request(DBLREQ)
    assert (msg.method, msg.body, msg.call_id) == ("REGISTER", b"", "dblreq.0ha0isndaksdj99sdfafnl3lk233412")
    assert msg.contacts() == [NameAddr("sip:j.user@host.example.com", None, {})]
    # on a stream the same bytes are two messages
    msgs = StreamFramer().feed(DBLREQ)
    assert [summary(m) for m in msgs] == [summary(parse(DBLREQ_REGISTER)), summary(parse(DBLREQ_INVITE))]
    assert len(msgs[1].body) == 152


def test_unreason_and_noreason() -> None:
    msg = response(UNREASON)
    assert (msg.status, msg.reason) == (200, UNREASON_PHRASE)
    assert len(msg.body) == 154
    empty = response(NOREASON)
    assert (empty.status, empty.reason) == (100, "")
    assert empty.to_bytes().startswith(b"SIP/2.0 100 \r\n")


def test_unknown_status_and_missing_reason() -> None:
    msg = response(RESPONSE_499)
    assert (msg.status, msg.reason) == (499, "Client Closed Request")
    assert (response(RESPONSE_NO_REASON).status, response(RESPONSE_NO_REASON).reason) == (486, "")
    assert Response(499).reason == "Unknown"
    assert Response(401).reason == "Unauthorized"


# --- RFC 4475: framed, but a field is invalid: the accessor raises ParseError saying what ------------

def test_badinv01_empty_params() -> None:
    msg = request(BADINV01)
    assert "empty parameter" in error_of(lambda: msg.top_via)
    assert "empty parameter" in error_of(lambda: msg.contacts())


def test_quotbal_unterminated_quote() -> None:
    msg = request(QUOTBAL)
    assert "unterminated quoted string" in error_of(lambda: msg.to_addr)
    assert msg.from_addr.tag == "93334"


def test_baddn_unquoted_display_name() -> None:
    msg = request(BADDN)
    assert "display name must be quoted" in error_of(lambda: msg.from_addr)
    assert "display name must be quoted" in error_of(lambda: msg.to_addr)
    assert msg.cseq == (3923239, "OPTIONS")


def test_badaspec_liberal() -> None:
    msg = request(BADASPEC)
    assert msg.to_addr == NameAddr("sip:t.watson@example.org", "Watson, Thomas", {})
    assert msg.from_addr.display == "Bell, Alexander"


def test_scalar02_and_scalarlg_out_of_range() -> None:
    msg = request(SCALAR02)
    assert "CSeq number out of range" in error_of(lambda: msg.cseq)
    assert "Expires out of range" in error_of(msg.expires)
    contacts = msg.contacts()
    assert contacts is not None
    assert "out of range" in error_of(lambda: parse_delta(contacts[0].params["expires"] or "", "expires"))
    assert msg.headers.get("max-forwards") == "300"
    lg = response(SCALARLG)
    assert "out of range" in error_of(lambda: lg.cseq)
    assert "Retry-After out of range" in error_of(
        lambda: parse_delta(lg.headers.get("retry-after") or "", "Retry-After"))
    assert lg.branch == "z9hG4bKzzxdiwo34sw"


def test_insuf_missing_headers() -> None:
    msg = request(INSUF)
    assert "missing Call-ID header" in error_of(lambda: msg.call_id)
    assert "missing From header" in error_of(lambda: msg.from_addr)
    assert "missing To header" in error_of(lambda: msg.to_addr)
    assert msg.contacts() == []
    assert msg.expires() is None
    assert len(msg.body) == 152


def test_unknown_schemes() -> None:
    msg = request(UNKSCM)
    assert msg.uri == "nobodyKnowsThisScheme:totallyopaquecontent"
    assert "unsupported URI scheme 'nobodyknowsthisschem" in error_of(lambda: parse_uri(msg.uri))
    other = request(UNKSM2)
    assert other.to_addr.uri == "isbn:2983792873"
    assert other.from_addr.uri == "http://www.example.com"
    contacts = other.contacts()
    assert contacts == [NameAddr("name:John_Smith", None, {})]
    assert "unsupported URI scheme" in error_of(lambda: parse_uri(contacts[0].uri))


def test_regbadct_contact_with_headers_needs_brackets() -> None:
    assert "must be enclosed in <...>" in error_of(lambda: request(REGBADCT).contacts())


def test_cparam_addr_spec_params_belong_to_the_header() -> None:
    (plain,) = request(CPARAM01).contacts() or []
    assert plain == NameAddr("sip:+19725552222@gw1.example.net", None, {"unknownparam": None})
    (bracketed,) = request(CPARAM02).contacts() or []
    assert bracketed == NameAddr("sip:+19725552222@gw1.example.net;unknownparam", None, {})
    assert parse_uri(bracketed.uri).params == {"unknownparam": None}


def test_multi01_and_mismatch01() -> None:
    msg = request(MULTI01)
    assert msg.call_id == "multi01.98asdh@192.0.2.1"  # the first line wins ...
    assert msg.headers.get_all("call-id") == ["multi01.98asdh@192.0.2.1", "multi01.98asdh@192.0.2.2"]
    assert msg.cseq == (5, "INVITE")
    assert len(msg.headers.get_all("to")) == 2
    odd = request(MISMATCH01)
    assert (odd.method, odd.cseq) == ("OPTIONS", (8, "INVITE"))  # framing is fine; meaning is not ours


def test_inv2543_datagram_without_content_length() -> None:
    msg = request(INV2543)
    assert msg.body.startswith(b"v=0\r\n") and msg.body.endswith(b"RTP/AVP 0\r\n")
    assert msg.top_via == Via("UDP", "iftgw.example.com", None, {})
    assert msg.branch is None
    assert msg.to_addr.params == {"user": "phone"}  # addr-spec: the header's, not the URI's
    framer = StreamFramer()  # on a stream no Content-Length means no body: the SDP starts the next message
    (first,) = framer.feed(INV2543)
    assert first.body == b"" and framer.buffered == len(msg.body)
    assert "without a colon: 'o=mhandley 29739 7272939 IN IP4 192.0.2.5'" in error_of(lambda: framer.feed(b"\r\n"))


# --- IPv6 (RFC 5118) -----------------------------------------------------------------------------

def test_ipv6() -> None:
    msg = request(IPV6_GOOD)
    assert parse_uri(msg.uri) == SipUri("sip", None, "2001:db8::10", None)
    assert msg.top_via == Via("UDP", "2001:db8::9:1", None, {"branch": "z9hG4bKas3-111"})
    contacts = msg.contacts() or []
    assert parse_uri(contacts[0].uri).host == "2001:db8::1"
    assert "invalid host or port" in error_of(lambda: parse_uri(request(IPV6_BAD).uri))
    ported = request(IPV6_PORT)
    uri = parse_uri(ported.uri)
    assert (uri.host, uri.port, uri.hostport) == ("2001:db8::10", 5070, "[2001:db8::10]:5070")
    top, second = (parse_via(v) for v in ported.headers.get_list("via"))
    assert (top.host, top.port) == ("2001:db8::9:1", 6050)
    assert top.params == {"received": "2001:db8::9:255", "branch": "z9hG4bKas3-111", "rport": None}
    assert str(top) == "SIP/2.0/UDP [2001:db8::9:1]:6050;received=2001:db8::9:255;branch=z9hG4bKas3-111;rport"
    assert second.params["received"] == "192.0.2.200"
    (contact,) = ported.contacts() or []
    assert contact.params == {"expires": "600"}
    assert parse_uri(contact.uri) == SipUri("sip", "caller", "2001:db8::1", 5080, {"transport": "tcp"})
    assert parse_uri("sip:[2001:db8::10:5070]").host == "2001:db8::10:5070"  # no port inside brackets
    assert parse_uri("sip:[::ffff:192.0.2.10]:19823").port == 19823


# --- line ends, folding, compact forms, lists --------------------------------------------------------

@pytest.mark.parametrize("data", [REGISTER_LF, REGISTER_MIXED, REGISTER_CRLF_LF, NO_BLANK_LINE, LEADING_CRLF],
                         ids=["lf", "mixed", "crlf_then_lf", "no_blank_line", "leading_crlf"])
def test_line_ends_do_not_matter(data: bytes) -> None:
    assert summary(parse(data)) == summary(parse(SIPP_REGISTER))


def test_no_blank_line_on_a_stream_is_an_incomplete_message() -> None:
    framer = StreamFramer()
    assert feed_chunks(bytewise(NO_BLANK_LINE), framer) == []
    assert framer.buffered == len(NO_BLANK_LINE)
    (msg,) = framer.feed(b"\r\n")
    assert summary(msg) == summary(parse(NO_BLANK_LINE))


def test_lf_only_head_with_crlf_in_body() -> None:
    msg = request(LF_BODY)
    assert msg.body == b"a\r\n\r\nb\r\n"
    assert msg.cseq == (1, "MESSAGE")


def test_folded_lines_join_with_one_space() -> None:
    data = wire("OPTIONS sip:a@example.com SIP/2.0", "Subject: one", "\t two  ", "   three",
                "X-Empty:", "  ", "Via: SIP/2.0/UDP h;branch=z9hG4bK1", "Content-Length: 0")
    msg = request(data)
    assert msg.headers.get("subject") == "one two three"
    assert msg.headers.get("x-empty") == ""
    assert msg.branch == "z9hG4bK1"


def test_compact_forms() -> None:
    msg = request(COMPACT)
    expected = {
        "via": "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1", "from": "<sip:a@example.com>;tag=1",
        "to": "<sip:a@example.com>", "call-id": "c1@example.com", "contact": "<sip:a@192.0.2.1>",
        "subject": "hello", "event": "presence", "content-type": "text/plain", "content-encoding": "gzip",
        "content-length": "5",
    }
    for key, value in expected.items():
        assert msg.headers.get(key) == value
        assert msg.headers.get(canonical_name(key)) == value
    assert msg.headers.get_list("supported") == ["path", "outbound", "gruu"]  # K and k
    assert msg.headers.get_list("u") == ["presence", "dialog"]
    assert msg.body == b"hello"
    assert [k for k, _ in msg.headers.items()][:5] == ["via", "from", "to", "call-id", "cseq"]


@pytest.mark.parametrize(("name", "key"), [
    ("i", "call-id"), ("I", "call-id"), ("m", "contact"), ("e", "content-encoding"), ("l", "content-length"),
    ("c", "content-type"), ("f", "from"), ("s", "subject"), ("k", "supported"), ("t", "to"), ("v", "via"),
    ("o", "event"), ("u", "allow-events"), ("r", "refer-to"), ("b", "referred-by"), ("x", "session-expires"),
    ("CALL-ID", "call-id"), ("Call-Id", "call-id"), ("cSeQ", "cseq"), ("WWW-AUTHENTICATE", "www-authenticate"),
    (" Via ", "via"), ("X-Custom", "x-custom"),
])
def test_normalize_name(name: str, key: str) -> None:
    assert normalize_name(name) == key


def test_canonical_names() -> None:
    assert [canonical_name(k) for k in ("call-id", "cseq", "www-authenticate", "via", "max-forwards",
                                         "x-custom-header", "p-asserted-identity")] == [
        "Call-ID", "CSeq", "WWW-Authenticate", "Via", "Max-Forwards", "X-Custom-Header", "P-Asserted-Identity"]
    for letter, key in COMPACT_FORMS.items():
        assert normalize_name(canonical_name(key)) == key == normalize_name(letter.upper())


def test_case_insensitive_lookups() -> None:
    msg = request(SIPP_REGISTER)
    for name in ("Call-ID", "call-id", "CALL-ID", "i", "I"):
        assert msg.headers.get(name) == "1-41742@127.0.0.1"
        assert name in msg.headers
    assert "X-Missing" not in msg.headers
    assert 42 not in msg.headers
    assert msg.headers.get("x-missing") is None
    assert msg.headers.get("x-missing", "dflt") == "dflt"
    assert msg.headers.get_all("x-missing") == []
    assert msg.headers.get_list("via") == ["SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-41742-1-0"]


def test_repeated_and_comma_joined_list_headers() -> None:
    data = wire(
        "SIP/2.0 200 OK",
        "Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1, SIP/2.0/TCP b.example.com;branch=z9hG4bK2",
        "v: SIP/2.0/UDP c.example.com;branch=z9hG4bK3",
        'Contact: "A, B" <sip:a@h;x=1,2>;q=0.5, <sip:b@h>',
        "m: sip:c@h;expires=30",
        "Route: <sip:p1;lr>,<sip:p2;lr>",
        "Supported: ,path,, outbound ,",
        "Content-Length: 0",
    )
    msg = response(data)
    assert len(msg.headers.get_all("via")) == 2
    hosts = [parse_via(v).host for v in msg.headers.get_list("via")]
    assert hosts == ["a.example.com", "b.example.com", "c.example.com"]
    assert msg.top_via.branch == "z9hG4bK1"
    assert msg.contacts() == [
        NameAddr("sip:a@h;x=1,2", "A, B", {"q": "0.5"}),
        NameAddr("sip:b@h", None, {}),
        NameAddr("sip:c@h", None, {"expires": "30"}),
    ]
    assert msg.headers.get_list("route") == ["<sip:p1;lr>", "<sip:p2;lr>"]
    assert msg.headers.get_list("supported") == ["path", "outbound"]


def test_contact_star() -> None:
    msg = request(CONTACT_STAR)
    assert msg.contacts() is None
    assert msg.expires() == 0
    assert msg.top_via.params == {"branch": "z9hG4bK1", "rport": None}


def test_body_longer_than_content_length_is_cut() -> None:
    msg = request(BODY_CUT)
    assert msg.body == b"hello"
    framer = StreamFramer()  # on a stream the rest is the start of the next message
    (first,) = framer.feed(BODY_CUT)
    assert first.body == b"hello"
    assert framer.buffered == len(b", and more")


def test_body_without_content_length_on_a_datagram() -> None:
    data = wire("MESSAGE sip:b@example.com SIP/2.0", "Call-ID: x", body=b"anything \r\n\r\n goes")
    assert request(data).body == b"anything \r\n\r\n goes"


def test_content_length_with_spaces_and_repeated_equal() -> None:
    data = wire("MESSAGE sip:b@example.com SIP/2.0", "Content-Length:  3 ", "l: 3", body=b"abc")
    assert request(data).body == b"abc"


# --- header values ------------------------------------------------------------------------------

def test_quoted_strings() -> None:
    assert unquote(r'"a \"b\" \\ c"') == 'a "b" \\ c'
    assert unquote('""') == ""
    assert quote('a "b" \\ c') == r'"a \"b\" \\ c"'
    for text in ('a "b" \\ c', "", "\\", '"', "plain"):
        assert unquote(quote(text)) == text
    assert "not a quoted string" in error_of(lambda: unquote("abc"))
    assert "unescaped quote" in error_of(lambda: unquote('"a"b"'))
    assert "dangling backslash" in error_of(lambda: unquote('"a\\"'))


def test_split_list_respects_quotes_and_brackets() -> None:
    assert split_list('"a,b" <sip:x,y>;p="1,2", c') == ['"a,b" <sip:x,y>;p="1,2"', "c"]
    assert split_list(r'"a\",b", c') == [r'"a\",b"', "c"]
    assert split_list(" , a ,, b , ") == ["a", "b"]
    assert split_list("") == []
    assert "unterminated quoted string" in error_of(lambda: split_list('"a, b'))


def test_params() -> None:
    assert parse_params(";tag=1;lr;Q = 0.5 ; x=\"a;b\"") == {"tag": "1", "lr": None, "q": "0.5", "x": '"a;b"'}
    assert parse_params("") == {}
    assert parse_params("  ") == {}
    assert parse_params("expires=60") == {"expires": "60"}
    assert format_params({"tag": "1", "lr": None}) == ";tag=1;lr"
    assert "empty parameter" in error_of(lambda: parse_params(";a;;b"))
    assert "empty parameter" in error_of(lambda: parse_params(";a;"))
    assert "invalid parameter" in error_of(lambda: parse_params(";a b=1"))
    assert "invalid parameter" in error_of(lambda: parse_params(";a=b c"))
    assert "invalid parameter" in error_of(lambda: parse_params(';a="b"c'))
    assert "invalid parameter" in error_of(lambda: parse_params(";a="))
    assert "unterminated quoted string" in error_of(lambda: parse_params(';a="b'))


def test_name_addr_and_addr_spec() -> None:
    assert parse_name_addr('"Bob \\"B\\"" <sip:bob@h;transport=tcp>;tag=1;expires=60') == NameAddr(
        "sip:bob@h;transport=tcp", 'Bob "B"', {"tag": "1", "expires": "60"})
    assert parse_name_addr("sip:bob@h;transport=tcp;tag=1") == NameAddr("sip:bob@h", None,
                                                                         {"transport": "tcp", "tag": "1"})
    assert parse_name_addr("<sip:bob@h>") == NameAddr("sip:bob@h")
    assert parse_name_addr('"a<b>c" <sip:x@h>') == NameAddr("sip:x@h", "a<b>c", {})  # brackets in quotes
    assert parse_name_addr("Alice  Smith <sip:a@h>").display == "Alice Smith"
    assert str(NameAddr("sip:bob@h", 'Bob "B"', {"tag": "1"})) == '"Bob \\"B\\"" <sip:bob@h>;tag=1'
    for bad, why in [
        ("", "empty address"), ("sip:a@h x", "invalid address"), ("<sip:a@h", "missing '>'"),
        ("<>", "invalid URI"), ("<sip:a@h> x", "junk after address"), ('"a" x <sip:b@h>', "expected <URI>"),
        ('"a" sip:b@h', "expected <URI>"), ("a,b <sip:x@h>", "display name must be quoted"), ("nocolon", "invalid"),
    ]:
        assert why in error_of(partial(parse_name_addr, bad)), bad


def test_via() -> None:
    assert parse_via("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx;rport") == Via(
        "UDP", "127.0.0.1", 5060, {"branch": "z9hG4bKx", "rport": None})
    assert parse_via("SIP/2.0/UDP 10.0.0.1;rport=5060;received=192.0.2.1").params == {
        "rport": "5060", "received": "192.0.2.1"}
    assert parse_via("sip/2.0/tcp host").transport == "TCP"
    assert parse_via("SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK56sdasks").transport == "WSS"
    assert parse_via("SIP/2.0/UDP h;branch=z9hG4bK1").branch == "z9hG4bK1"
    assert parse_via("SIP/2.0/UDP h").branch is None
    assert str(parse_via("SIP / 2.0 / TCP  h : 5061 ; branch = z9hG4bK1")) == "SIP/2.0/TCP h:5061;branch=z9hG4bK1"
    for bad in ("", "SIP/2.0/UDP", "SIP/2.0 UDP h", "SIP/3.0/UDP h", "HTTP/2.0/UDP h", "SIP/2.0/UDP h:999999",
                "SIP/2.0/UDP h:x", "SIP/2.0/UDP [::1", "SIP/2.0/UDP a b", "SIP/2.0/UDP h,x"):
        assert f"invalid Via {bad[:80]!r}" in error_of(partial(parse_via, bad)), bad
    assert "port out of range" in error_of(lambda: parse_via("SIP/2.0/UDP h:0"))
    assert "port out of range" in error_of(lambda: parse_via("SIP/2.0/UDP h:65536"))
    assert "empty parameter" in error_of(lambda: parse_via("SIP/2.0/UDP h;;"))


def test_via_branch_shortcut() -> None:
    assert via_branch("SIP/2.0/UDP h:5060;rport;branch=z9hG4bK1") == "z9hG4bK1"
    assert via_branch("SIP/2.0/UDP h;BRANCH=z9hG4bK1;branchx=2") == "z9hG4bK1"
    assert via_branch("SIP/2.0/UDP h;branch=a;branch=b") == "b"  # as in the params dict: the last one
    assert via_branch("SIP/2.0/UDP h;branch") is None
    assert via_branch("SIP/2.0/UDP h") is None
    assert via_branch('SIP/2.0/UDP h;x="a;branch=no";branch=yes') == "yes"
    assert via_branch("SIP / 2.0 / UDP h ; branch = z9hG4bK2") == "z9hG4bK2"
    assert "port out of range" in error_of(lambda: via_branch("SIP/2.0/UDP h:0;branch=z9hG4bK1"))
    assert "invalid Via" in error_of(lambda: via_branch("SIP/2.0/UDP"))
    msg = request(SIPP_REGISTER)
    assert msg.branch == "z9hG4bK-41742-1-0" == msg.top_via.branch == msg.branch  # before and after top_via


VIA_PIECES = st.sampled_from([
    "SIP/2.0/UDP ", "SIP/2.0/tcp ", "sip / 2.0 / TLS ", "h", "1.2.3.4", "[::1]", ":5060", ":0", ":99999", ";branch=",
    ";Branch=", ";BRANCH", "z9hG4bK1", ";rport", ";received=1.2.3.4", '"', ';x="a;branch=b"', " ", "=", ";", ",", "x",
])


@settings(max_examples=500, deadline=None)
@given(st.lists(VIA_PIECES, max_size=10).map("".join))
def test_via_branch_agrees_with_parse_via(value: str) -> None:
    def outcome(get: Callable[[], str | None]) -> tuple[object, ...]:
        try:
            return ("ok", get())
        except ParseError:
            return ("error",)

    assert outcome(lambda: via_branch(value)) == outcome(lambda: parse_via(value).branch)


def test_cseq_and_delta() -> None:
    assert parse_cseq("1 REGISTER") == (1, "REGISTER")
    assert parse_cseq("  0009\tINVITE ") == (9, "INVITE")
    assert parse_cseq("2 register") == (2, "register")  # methods are case-sensitive
    assert parse_cseq(f"{2**31 - 1} X") == (2**31 - 1, "X")
    assert parse_cseq("0000000000000000042 OPTIONS") == (42, "OPTIONS")
    for bad, why in [("REGISTER", "invalid CSeq"), ("1", "invalid CSeq"), ("x REGISTER", "invalid CSeq"),
                     ("1 REG ISTER", "invalid CSeq"), ("-1 REGISTER", "invalid CSeq"),
                     (f"{2**31} REGISTER", "out of range"), ("9" * 5000 + " REGISTER", "out of range"),
                     ("١ REGISTER", "invalid CSeq")]:
        assert why in error_of(partial(parse_cseq, bad)), bad
    assert parse_delta("3600", "Expires") == 3600
    assert parse_delta(" 120 (I'm in a meeting);duration=60", "Retry-After") == 120
    assert parse_delta(str(2**32 - 1), "Expires") == 2**32 - 1
    assert "Expires out of range" in error_of(lambda: parse_delta(str(2**32), "Expires"))
    assert "Expires out of range" in error_of(lambda: parse_delta("9" * 5000, "Expires"))
    assert parse_delta("0" * 5000 + "7", "Expires") == 7
    assert "invalid Expires" in error_of(lambda: parse_delta("", "Expires"))
    assert "invalid Expires" in error_of(lambda: parse_delta("-1", "Expires"))
    assert "invalid Expires" in error_of(lambda: parse_delta("٣", "Expires"))


def test_expires_header() -> None:
    def with_expires(value: str) -> Message:
        return request(wire("REGISTER sip:h SIP/2.0", f"Expires: {value}", "Content-Length: 0"))

    assert with_expires("0").expires() == 0
    assert with_expires(" 3600 ").expires() == 3600
    assert "invalid Expires" in error_of(with_expires("3600 x").expires)
    assert "invalid Expires" in error_of(with_expires("soon").expires)
    assert "Expires out of range" in error_of(with_expires("9" * 5000).expires)


def test_uri() -> None:
    uri = parse_uri("sips:alice:secret@Example.COM:5061;transport=TLS;lr?subject=hi&x=y")
    assert uri == SipUri("sips", "alice:secret", "Example.COM", 5061, {"transport": "TLS", "lr": None},
                         "subject=hi&x=y")
    assert uri.transport == "tls"
    assert str(uri) == "sips:alice:secret@Example.COM:5061;transport=TLS;lr?subject=hi&x=y"
    assert parse_uri("SIP:h").scheme == "sip"
    assert parse_uri("sip:user@example.com?Route=%3Csip:example.com%3E").headers == "Route=%3Csip:example.com%3E"
    for bad, why in [("", "without a scheme"), ("example.com", "without a scheme"), ("tel:+1555", "unsupported URI"),
                     ("sip:", "empty host"), ("sip:@h", "empty user"), ("sip:u@h:70000", "port out of range"),
                     ("sip:u@h:5060x", "invalid host or port"), ("sip:u@h;;", "empty parameter"),
                     ("sip:u@[::1]x", "invalid host or port"), ("sip:u@ho st", "invalid host or port"),
                     ("sip:u@[zz::1]", "invalid host or port")]:
        assert why in error_of(partial(parse_uri, bad)), bad
    assert parse_hostport(" [::1] : 5060 ") == ("::1", 5060)


# --- serialization --------------------------------------------------------------------------------

def register(**extra: str) -> Request:
    headers = [
        ("Via", "SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK776;rport"),
        ("Max-Forwards", "70"),
        ("From", "<sip:user1@example.com>;tag=a1"),
        ("To", "<sip:user1@example.com>"),
        ("i", "c1@sipload"),
        ("CSeq", "2 REGISTER"),
        ("m", "<sip:user1@127.0.0.1:5080>"),
        ("Expires", "3600"),
        ("Authorization", 'Digest username="user1", realm="r", nonce="n", uri="sip:example.com", response="x"'),
        ("User-Agent", "sipload"),
        *extra.items(),
    ]
    return Request("REGISTER", "sip:example.com", headers)


def test_to_bytes_exact() -> None:
    assert register().to_bytes() == (
        b"REGISTER sip:example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK776;rport\r\n"
        b"Max-Forwards: 70\r\n"
        b"From: <sip:user1@example.com>;tag=a1\r\n"
        b"To: <sip:user1@example.com>\r\n"
        b"Call-ID: c1@sipload\r\n"
        b"CSeq: 2 REGISTER\r\n"
        b"Contact: <sip:user1@127.0.0.1:5080>\r\n"
        b"Expires: 3600\r\n"
        b'Authorization: Digest username="user1", realm="r", nonce="n", uri="sip:example.com", response="x"\r\n'
        b"User-Agent: sipload\r\n"
        b"Content-Length: 0\r\n"
        b"\r\n"
    )
    assert bytes(register()) == register().to_bytes()


def test_to_bytes_content_length_always_matches_the_body() -> None:
    msg = Request("MESSAGE", "sip:b@h", [("Content-Length", "999"), ("Content-Type", "text/plain"), ("l", "7")],
                  b"hi \xff there")
    data = msg.to_bytes()
    assert data.count(b"Content-Length") == 1
    assert data.endswith(b"Content-Type: text/plain\r\nContent-Length: 10\r\n\r\nhi \xff there")
    assert parse(data).body == b"hi \xff there"


def test_response_to_bytes_and_response_to() -> None:
    req = parse(PYVOIP_REGISTER)
    assert isinstance(req, Request)
    resp = response_to(req, 401, to_tag="t1")
    assert resp.reason == "Unauthorized"
    assert [k for k, _ in resp.headers.items()] == ["via", "from", "to", "call-id", "cseq"]
    assert resp.to_addr.tag == "t1"
    assert resp.headers.get("via") == req.headers.get("via")
    resp.headers.add("WWW-Authenticate", 'Digest realm="r", nonce="n"')
    again = response(resp.to_bytes())
    assert (again.status, again.reason, again.call_id, again.cseq) == (401, "Unauthorized", req.call_id, req.cseq)
    assert again.to_bytes().startswith(b"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;")
    tagged = response_to(response_to_request_with_tag(), 200, to_tag="other")
    assert tagged.to_addr.tag == "existing"
    assert response_to(req, 200).to_addr.tag is None


def response_to_request_with_tag() -> Request:
    return Request("BYE", "sip:b@h", [("To", "<sip:b@h>;tag=existing"), ("Via", "SIP/2.0/UDP h;branch=z9hG4bK1")])


def test_headers_mutation() -> None:
    h = Headers([("Via", "a"), ("v", "b"), ("Call-ID", "c"), ("Route", "r")])
    assert h.items() == [("via", "a"), ("via", "b"), ("call-id", "c"), ("route", "r")]
    h.set("VIA", "z")
    assert h.items() == [("via", "z"), ("call-id", "c"), ("route", "r")]
    h.set("Expires", "60")
    assert h.items()[-1] == ("expires", "60")
    h.add("m", "<sip:x@h>")
    h.remove("route")
    assert h.get_list("contact") == ["<sip:x@h>"]
    copy = h.copy()
    copy.add("X", "1")
    assert len(copy) == len(h) + 1 and copy != h and h == h.copy()
    assert "X" not in h
    assert repr(h).startswith("Headers([('via', 'z')")


def test_messages_are_built_from_any_header_spelling() -> None:
    msg = Request("OPTIONS", "sip:h", [("CALL-ID", "x"), ("cseq", "1 OPTIONS")])
    assert msg.call_id == "x"
    assert msg.headers == Headers([("i", "x"), ("CSeq", "1 OPTIONS")])
    assert "body=0 bytes" in repr(msg) and "Response(" in repr(Response(200))


# --- stream framing details ---------------------------------------------------------------------------

def test_keepalive_counts() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == [] and framer.pings == 1
    assert framer.feed(b"\r\n") == [] and (framer.pings, framer.pongs) == (1, 0)  # ping or pong: not yet known
    assert framer.feed(b"\r\n") == [] and (framer.pings, framer.pongs) == (2, 0)
    assert framer.feed(b"\r\n" + SIPP_REGISTER) != [] and (framer.pings, framer.pongs) == (2, 1)
    framer.feed(b"\n\n")
    assert framer.pings == 3
    framer.feed(b"\n" + SIPP_REGISTER)
    assert framer.pongs == 2
    assert framer.buffered == 0


def test_keepalive_byte_by_byte() -> None:
    framer = StreamFramer()
    msgs = feed_chunks(bytewise(b"\r\n\r\n\r\n\r\n" + SIPP_REGISTER + b"\r\n" + SIPP_REGISTER), framer)
    assert len(msgs) == 2 and (framer.pings, framer.pongs) == (2, 1)


def test_stray_carriage_return_between_messages() -> None:
    framer = StreamFramer()
    with pytest.raises(ParseError, match="stray carriage return"):
        framer.feed(b"\rX")
    with pytest.raises(ParseError, match="already failed"):
        framer.feed(SIPP_REGISTER)


def test_framer_waits_for_the_body() -> None:
    framer = StreamFramer()
    head, body = RFC3261_INVITE[:-150], RFC3261_INVITE[-150:]
    assert framer.feed(head) == []
    assert framer.feed(body[:100]) == []
    (msg,) = framer.feed(body[100:] + RFC3261_100[:10])
    assert msg.body == body
    (trying,) = framer.feed(RFC3261_100[10:])
    assert isinstance(trying, Response) and trying.status == 100


def test_framer_limits() -> None:
    with pytest.raises(ParseError, match="exceeds the limit"):
        StreamFramer(max_body=10).feed(wire("MESSAGE sip:h SIP/2.0", "Content-Length: 11"))
    with pytest.raises(ParseError, match="no end of headers within 100 bytes"):
        StreamFramer(max_head=100).feed(b"OPTIONS sip:h SIP/2.0\r\nX: " + b"x" * 200)
    with pytest.raises(ParseError, match="header section larger than 100 bytes"):
        StreamFramer(max_head=100).feed(wire("OPTIONS sip:h SIP/2.0", "X: " + "x" * 200))
    assert len(wire("OPTIONS sip:h SIP/2.0", "X: " + "x" * (MAX_HEAD_BYTES - 40))) < MAX_HEAD_BYTES
    assert StreamFramer().feed(wire("OPTIONS sip:h SIP/2.0", "X: " + "x" * (MAX_HEAD_BYTES - 40)))


# --- hypothesis: nothing but ParseError, whatever the bytes ------------------------------------------

SEEDS = [c.data for c in ACCEPTED]
SIP_ALPHABET = st.sampled_from(list(" \t;,:<>\"\\@[]=?/.-_*%+0123456789abcdefzSIPUDPsipTAG\x00\xe9é"))
TOKEN = st.from_regex(r"[A-Za-z0-9.!%*_+`'~-]{1,12}", fullmatch=True)


def check_invariant(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except ParseError as exc:
        assert str(exc)
        return
    touch(msg)


def check_stream_invariant(chunks: Sequence[bytes]) -> None:
    framer = StreamFramer()
    try:
        for chunk in chunks:
            for msg in framer.feed(chunk):
                touch(msg)
    except ParseError:
        pass


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
@example(b"SIP/2.0 200 OK\r\nCSeq: " + b"9" * 5000 + b" X\r\n\r\n")
@example(b"OPTIONS sip:h:" + b"9" * 5000 + b" SIP/2.0\r\n\r\n")
@example(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h:" + b"9" * 5000 + b"\r\n\r\n")
@example(b"SIP/2.0 200 OK\r\nExpires: " + b"9" * 5000 + b"\r\n\r\n")
@example(b"SIP/2.0 200 OK\r\nExpires: " + b"0" * 5000 + b"1\r\n\r\n")
@example(b"SIP/2.0 200 OK\r\nCSeq: " + b"0" * 5000 + b"1 X\r\n\r\n")
@example(b"SIP/2.0 200 OK\r\nContact: <sip:a@h>;expires=" + b"9" * 5000 + b"\r\n\r\n")
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    check_invariant(data)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"SIP/2.0 ", b"INVITE ", b"sip:", b"\r\n", b"\n", b" ", b"\t", b":", b";",
                                 b",", b"<", b">", b'"', b"\\", b"Via", b"v", b"Contact", b"CSeq", b"1",
                                 b"Content-Length", b"l", b"[", b"]", b"=", b"tag", b"\xff", b"\xc3"]),
                max_size=60))
def test_fuzz_sip_tokens(parts: list[bytes]) -> None:
    data = b"".join(parts)
    check_invariant(data)
    check_stream_invariant([data])


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid message with a few mutations: byte flips, cuts, duplicated or junk lines, junk values."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for op in draw(st.lists(st.sampled_from(["flip", "cut", "dup", "drop", "header", "value", "insert"]),
                            min_size=1, max_size=4)):
        lines = bytes(data).split(b"\n")
        if op == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        elif op == "cut":
            data = data[: draw(st.integers(0, len(data)))]
        elif op in ("dup", "drop") and len(lines) > 1:
            i = draw(st.integers(1, len(lines) - 1))
            lines[i:i + 1] = [lines[i], lines[i]] if op == "dup" else []
            data = bytearray(b"\n".join(lines))
        elif op == "header":
            name = draw(st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=12))
            value = draw(st.text(SIP_ALPHABET, max_size=30))
            i = draw(st.integers(1, max(1, len(lines) - 1)))
            lines.insert(i, f"{name}: {value}\r".encode("utf-8", "surrogatepass"))
            data = bytearray(b"\n".join(lines))
        elif op == "value" and len(lines) > 2:
            i = draw(st.integers(1, len(lines) - 2))
            raw_name, colon, _ = lines[i].partition(b":")
            if colon:
                lines[i] = raw_name + b": " + draw(st.text(SIP_ALPHABET, max_size=40)).encode() + b"\r"
                data = bytearray(b"\n".join(lines))
        elif op == "insert":
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(min_size=1, max_size=4))
    return bytes(data)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_fuzz_mutated_messages(data: bytes) -> None:
    check_invariant(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(), mutated(), st.lists(st.integers(1, 40), min_size=1, max_size=30))
def test_fuzz_stream_random_chunks(first: bytes, second: bytes, sizes: list[int]) -> None:
    stream = first + b"\r\n\r\n" + second + b"\r\n"
    chunks, pos = [], 0
    for size in sizes:
        chunks.append(stream[pos:pos + size])
        pos += size
    chunks.append(stream[pos:])
    check_stream_invariant(chunks)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(STREAMABLE), min_size=1, max_size=4),
       st.lists(st.sampled_from([b"", b"\r\n", b"\r\n\r\n"]), min_size=4, max_size=4),
       st.randoms(use_true_random=False))
def test_fuzz_valid_stream_any_chunking_gives_the_datagram_parse(
        cases: list[Case], keepalives: list[bytes], rng: random.Random) -> None:
    stream = b"".join(ka + c.data for ka, c in zip(keepalives, cases, strict=False))
    cuts = sorted(rng.sample(range(1, len(stream)), min(len(stream) - 1, rng.randint(0, 20))))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    msgs = feed_chunks(chunks)
    assert [summary(m) for m in msgs] == [summary(parse(c.data)) for c in cases]


# --- hypothesis: round trip of generated messages -------------------------------------------------------

HEADER_NAME = TOKEN.filter(lambda n: normalize_name(n) != "content-length")
HEADER_VALUE = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=40).map(
    lambda v: v.strip(" \t"))
REASON = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=30).map(lambda v: v.strip(" \t"))
URI = st.from_regex(r"sips?:[A-Za-z0-9.!%*_+`'~;:@=?&$/\[\]-]{1,30}", fullmatch=True)
HEADERS = st.lists(st.tuples(HEADER_NAME, HEADER_VALUE), max_size=12)


@st.composite
def messages(draw: st.DrawFn) -> Msg:
    headers, body = draw(HEADERS), draw(st.binary(max_size=60))
    if draw(st.booleans()):
        return Request(draw(TOKEN), draw(URI), headers, body)
    reason = draw(st.none() | REASON)
    return Response(draw(st.integers(100, 699)), reason, headers, body)


@settings(max_examples=400, deadline=None)
@given(messages())
def test_round_trip_generated(msg: Msg) -> None:
    data = msg.to_bytes()
    again = parse_message(data)
    assert summary(again)[:3] == summary(msg)[:3]
    assert again.headers.items() == [*msg.headers.items(), ("content-length", str(len(msg.body)))]
    assert again.body == msg.body
    assert again.to_bytes() == data
    framed = StreamFramer().feed(data + data)
    assert [summary(m) for m in framed] == [summary(again)] * 2
