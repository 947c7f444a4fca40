"""The compiled codec (`sipload._native`) against the Python reference (`sipload.sip`), on the same bytes.

Every field the registration machine reads from a response (status, reason, headers, Call-ID, CSeq,
top Via and its branch, To tag, From/To, Contact, Expires, Min-Expires, Retry-After, the Digest
challenges) is asked of both parsers for every message of the codec corpus, the hostile registrar's
replies and hypothesis-made messages: the answer, or the ParseError and its message, must be the
same. Digest answers and REGISTER bytes are compared for every algorithm, qop and challenge shape.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import codec_cases
import hostile_registrar
import pytest
from codec_cases import ACCEPTED, REJECTED
from hypothesis import given, settings
from hypothesis import strategies as st

from sipload import _native
from sipload.sip import Request, Response, parse_message, response_to
from sipload.sip.digest import Algorithm, DigestClient, choose_challenge, parse_challenges
from sipload.sip.errors import ParseError
from sipload.sip.headers import NameAddr, parse_delta
from sipload.sip.ids import IdSource
from sipload.sip.registration import Profile, Registration, RegState

Outcome = tuple[str, Any]


def outcome(read: Callable[[], Any]) -> Outcome:
    """What reading a field gives: its value, or the parse error's message."""
    try:
        return ("value", read())
    except ParseError as e:
        return ("error", str(e))


def addr(a: NameAddr) -> tuple[str, str | None, dict[str, str | None]]:
    return (a.uri, a.display, dict(a.params))


def native_addr(a: _native.NameAddr) -> tuple[str, str | None, dict[str, str | None]]:
    return (a[0], a[1], dict(a[2]))


def challenge_fields(c: Any) -> tuple[Any, ...]:
    algorithm = c.algorithm if isinstance(c, _native.Challenge) else (c.algorithm and str(c.algorithm))
    return (c.realm, c.nonce, algorithm, c.algorithm_name, tuple(c.qop), c.opaque, c.stale, c.domain,
            c.userhash, c.proxy, c.supported)


def delta(msg: Request | Response, name: str, shown: str) -> int | None:
    value = msg.headers.get(name)
    return None if value is None else parse_delta(value, shown)


def python_fields(msg: Request | Response) -> dict[str, Outcome]:
    is_response = isinstance(msg, Response)
    return {
        "start": ("value", (msg.status, msg.reason) if isinstance(msg, Response) else (msg.method, msg.uri)),
        "body": ("value", msg.body),
        "headers": ("value", msg.headers.items()),
        "call_id": outcome(lambda: msg.call_id),
        "cseq": outcome(lambda: msg.cseq),
        "top_via": outcome(lambda: (lambda v: (v.transport, v.host, v.port, dict(v.params)))(msg.top_via)),
        "branch": outcome(lambda: msg.branch),
        "to_tag": outcome(lambda: msg.to_addr.tag),
        "to": outcome(lambda: addr(msg.to_addr)),
        "from": outcome(lambda: addr(msg.from_addr)),
        "contacts": outcome(lambda: (lambda cs: None if cs is None else [addr(c) for c in cs])(msg.contacts())),
        "expires": outcome(msg.expires),
        "min_expires": outcome(lambda: delta(msg, "min-expires", "Min-Expires")),
        "retry_after": outcome(lambda: delta(msg, "retry-after", "Retry-After")),
        "challenges": outcome(lambda: [challenge_fields(c) for c in
                                       parse_challenges(msg.headers.get_all("www-authenticate"))]),
        "proxy_challenges": outcome(lambda: [challenge_fields(c) for c in
                                             parse_challenges(msg.headers.get_all("proxy-authenticate"), True)]),
        "is_response": ("value", is_response),
    }


def native_fields(msg: _native.Message) -> dict[str, Outcome]:
    return {
        "start": ("value", (msg.status, msg.reason) if msg.is_response else (msg.method, msg.uri)),
        "body": ("value", msg.body),
        "headers": ("value", msg.headers),
        "call_id": outcome(msg.call_id),
        "cseq": outcome(msg.cseq),
        "top_via": outcome(lambda: (lambda v: (v[0], v[1], v[2], dict(v[3])))(msg.top_via())),
        "branch": outcome(msg.branch),
        "to_tag": outcome(msg.to_tag),
        "to": outcome(lambda: native_addr(msg.to_addr())),
        "from": outcome(lambda: native_addr(msg.from_addr())),
        "contacts": outcome(lambda: (lambda cs: None if cs is None else [native_addr(c) for c in cs])(
            msg.contacts())),
        "expires": outcome(msg.expires),
        "min_expires": outcome(msg.min_expires),
        "retry_after": outcome(msg.retry_after),
        "challenges": outcome(lambda: [challenge_fields(c) for c in msg.challenges()]),
        "proxy_challenges": outcome(lambda: [challenge_fields(c) for c in msg.challenges(proxy=True)]),
        "is_response": ("value", msg.is_response),
    }


def parsed_both(data: bytes) -> tuple[Outcome, Outcome]:
    """Both parsers on one datagram: their fields, or the error each raised."""
    def python() -> dict[str, Outcome]:
        return python_fields(parse_message(data))

    def native() -> dict[str, Outcome]:
        return native_fields(_native.parse_message(data))

    return outcome(python), outcome(native)


def assert_same(data: bytes) -> None:
    py, nat = parsed_both(data)
    assert py[0] == nat[0], (data[:200], py, nat)
    if py[0] == "error":
        assert nat[1] == py[1]
        return
    for field, value in py[1].items():
        assert nat[1][field] == value, (field, data[:200])


@pytest.mark.parametrize("case", ACCEPTED, ids=lambda c: c.name)
def test_every_accepted_message_reads_the_same(case: codec_cases.Case) -> None:
    assert_same(case.data)


@pytest.mark.parametrize("case", REJECTED, ids=lambda c: c.name)
def test_every_rejected_message_fails_with_the_same_message(case: codec_cases.Bad) -> None:
    with pytest.raises(ParseError) as py_error:
        parse_message(case.data)
    with pytest.raises(ParseError) as native_error:
        _native.parse_message(case.data)
    assert str(native_error.value) == str(py_error.value)
    assert case.error in str(native_error.value)


def machine(profile: Profile, user: str, seed: int) -> Registration:
    ids = IdSource(random.Random(seed))
    return Registration(profile, user=user, contact=f"sip:{user}@127.0.0.1:5062;transport=udp",
                        sent_by="127.0.0.1:5062", auth=DigestClient(user, "pw", cnonce=ids.cnonce), ids=ids)


def hostile_replies() -> Iterator[tuple[str, bytes]]:
    """What every behaviour of the hostile registrar sends back to one REGISTER (and its 401 answer)."""
    reg = machine(Profile(domain="sipload.test", registrar_uri="sip:sipload.test"), "alice", 3)
    reg.start(0.0)
    request = parse_message(reg.take_outgoing()[0])
    assert isinstance(request, Request)
    for name, case in sorted(hostile_registrar.CASES.items()):
        for i, reply in enumerate(case(request, hostile_registrar.HostileRegistrar(name))):
            yield f"{name}-{i}", reply.data


HOSTILE = list(hostile_replies())


@pytest.mark.parametrize("data", [d for _, d in HOSTILE], ids=[n for n, _ in HOSTILE])
def test_every_hostile_reply_reads_the_same(data: bytes) -> None:
    assert_same(data)


_HEADER_NAMES = ["Via", "v", "Call-ID", "i", "CSeq", "From", "f", "To", "t", "Contact", "m", "Expires",
                 "Min-Expires", "Retry-After", "WWW-Authenticate", "Proxy-Authenticate", "X-Other"]
_VALUES = st.sampled_from([
    "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1;rport=5060;received=127.0.0.1", "SIP/2.0/UDP [::1]:5060",
    "SIP/2.0/TCP a.example, SIP/2.0/UDP b.example;branch=x", "abc@host", "1 REGISTER", "4294967296 REGISTER",
    "<sip:alice@example.com>;tag=1", '"Al ice" <sip:alice@example.com>', "sip:bob@b;expires=30",
    "<sip:a@b>;expires=60, <sip:c@d>;expires=0", "*", "60", "0", "4294967295", "4294967296", "-1", "12 (x)",
    '120;duration=10', 'Digest realm="r", nonce="n", qop="auth,auth-int", algorithm=SHA-256',
    'Digest realm="r", nonce="n", algorithm=MD5-sess, opaque="o", stale=TRUE',
    'Digest realm="r", nonce="n", algorithm=SHA-512-256, userhash=true, domain="sip:a"',
    'Basic realm="r", Digest realm="r2", nonce="n2"', 'Digest realm="r, nonce=', "", " ", "\t",
    "caf\udce9", "x,y", '"quoted, comma"', "<sip:a@b;lr>", "<sip:[2001:db8::1]:5070;transport=tcp>",
])


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    status = draw(st.sampled_from(["SIP/2.0 200 OK", "SIP/2.0 401 Unauthorized", "SIP/2.0 423 Interval Too Brief",
                                   "SIP/2.0 503", "SIP/2.0 999 Odd", "SIP/2.0 20 OK", "REGISTER sip:a SIP/2.0",
                                   "OPTIONS sip:a@b SIP/2.0", "HTTP/1.1 200 OK", "SIP/2.0 180 Ringing"]))
    lines = [status]
    for _ in range(draw(st.integers(0, 12))):
        name = draw(st.sampled_from(_HEADER_NAMES))
        sep = draw(st.sampled_from([": ", ":", " : ", ":\t"]))
        lines.append(f"{name}{sep}{draw(_VALUES)}")
    eol = draw(st.sampled_from(["\r\n", "\n"]))
    body = draw(st.sampled_from([b"", b"v=0\r\n"]))
    if body and draw(st.booleans()):
        lines.append(f"Content-Length: {len(body)}")
    return codec_cases.wire(*lines, body=body, eol=eol)


@settings(max_examples=400, deadline=None)
@given(messages())
def test_made_messages_read_the_same(data: bytes) -> None:
    assert_same(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_read_the_same_or_fail_the_same(data: bytes) -> None:
    assert_same(data)


# --- digest ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_hashes_agree(algorithm: Algorithm) -> None:
    from sipload.sip.digest import _H
    for data in (b"", b"alice:sipload.test:pw-alice", bytes(range(256))):
        assert _native.hash_hex(str(algorithm), data) == _H(algorithm, data)


CHALLENGES = [
    'Digest realm="sipload.test", nonce="n-1"',
    'Digest realm="sipload.test", nonce="n-2", qop="auth"',
    'Digest realm="sipload.test", nonce="n-3", qop="auth-int", opaque="op"',
    'Digest realm="sipload.test", nonce="n-4", qop="auth,auth-int", algorithm=MD5-sess',
    'Digest realm="sipload.test", nonce="n-5", qop="auth", algorithm=SHA-256',
    'Digest realm="sipload.test", nonce="n-6", qop="auth", algorithm=SHA-256-sess, userhash=true',
    'Digest realm="sipload.test", nonce="n-7", qop="auth", algorithm=SHA-512-256',
    'Digest realm="sipload.test", nonce="n-8", algorithm=SHA-512-256-sess, stale=true',
    'Digest realm="other", nonce="n-9", qop="auth-int"',
    'Digest realm="sipload.test", nonce="n-10", algorithm=UNKNOWN',
    'Digest realm="sipload.test", nonce="n-11", qop="auth-conf"',
]


def clients(**kwargs: Any) -> tuple[DigestClient, _native.DigestClient]:
    """The two clients of one endpoint, with one cnonce sequence each (the same sequence)."""
    seqs = [iter(f"cn{i:04d}" for i in range(1000)) for _ in range(2)]
    preference = kwargs.pop("preference", None)
    py = DigestClient(cnonce=lambda: next(seqs[0]), preference=preference, **kwargs)
    kw = dict(kwargs)
    if "ha1_algorithm" in kw and kw["ha1_algorithm"] is not None:
        kw["ha1_algorithm"] = str(kw["ha1_algorithm"])
    nat = _native.DigestClient(cnonce=lambda: next(seqs[1]),
                               preference=None if preference is None else [str(a) for a in preference], **kw)
    return py, nat


@pytest.mark.parametrize("value", CHALLENGES)
@pytest.mark.parametrize("proxy", [False, True])
def test_each_challenge_is_answered_the_same_nonce_count_included(value: str, proxy: bool) -> None:
    py, nat = clients(username="alice", password="pw-alice")
    (py_challenge,) = parse_challenges([value], proxy)
    (nat_challenge,) = _native.parse_challenges([value], proxy)
    assert py.can_answer(py_challenge) == nat.can_answer(nat_challenge)
    for body in (b"", b"v=0\r\n"):
        for _ in range(3):  # nc 1, 2, 3 on the same nonce
            got = outcome_of_answer(partial(py.authorize, py_challenge, "REGISTER", "sip:sipload.test", body))
            native = outcome_of_answer(partial(nat.authorize, nat_challenge, "REGISTER", "sip:sipload.test", body))
            assert native == got


def outcome_of_answer(call: Callable[[], tuple[str, str]]) -> tuple[str, Any]:
    try:
        return ("answer", call())
    except ValueError as e:
        return ("refused", str(e))


@pytest.mark.parametrize("kwargs", [
    {"username": "alice", "ha1": "0" * 32},
    {"username": "alice", "ha1": "a" * 64, "realm_for_ha1": "sipload.test"},
    {"username": "alice", "ha1": "b" * 64, "realm_for_ha1": "elsewhere"},
    {"username": "alice", "ha1": "c" * 64, "ha1_algorithm": Algorithm.SHA512_256},
    {"username": "alice", "password": "pw", "preference": [Algorithm.MD5]},
    {"username": "alice", "password": "pw", "preference": [Algorithm.SHA256, Algorithm.MD5]},
    {"username": "bob", "password": "caf\udce9"},
], ids=str)
def test_several_challenges_choose_and_answer_the_same(kwargs: dict[str, Any]) -> None:
    py, nat = clients(**kwargs)
    for k in range(1, len(CHALLENGES) + 1):
        values = CHALLENGES[:k][::-1] if k % 2 else CHALLENGES[:k]
        py_list, nat_list = parse_challenges(values), _native.parse_challenges(values)
        chosen = choose_challenge(py_list, kwargs.get("preference"))
        native_chosen = _native.choose_challenge(
            nat_list, None if "preference" not in kwargs else [str(a) for a in kwargs["preference"]])
        assert (None if native_chosen is None else challenge_fields(native_chosen)) == (
            None if chosen is None else challenge_fields(chosen))
        assert nat.answer(nat_list, "REGISTER", "sip:sipload.test") == py.answer(py_list, "REGISTER",
                                                                               "sip:sipload.test")


def test_bad_client_arguments_are_refused_alike() -> None:
    for kwargs in ({"username": "alice"}, {"username": "alice", "ha1": "0" * 40},
                   {"username": "al\r\nice", "password": "pw"}):
        with pytest.raises(ValueError) as py_error:
            clients(**kwargs)
        with pytest.raises(ValueError) as native_error:
            _native.DigestClient(cnonce=lambda: "c", **kwargs)
        assert str(native_error.value) == str(py_error.value)


def test_a_failing_cnonce_source_raises_its_own_error() -> None:
    def broken() -> str:
        raise RuntimeError("entropy gone")

    nat = _native.DigestClient("alice", "pw", cnonce=broken)
    (c,) = _native.parse_challenges([CHALLENGES[1]])
    with pytest.raises(RuntimeError, match="entropy gone"):
        nat.authorize(c, "REGISTER", "sip:sipload.test")


# --- REGISTER bytes --------------------------------------------------------------------------------------

def registrations(seed: int) -> Iterator[tuple[Registration, bytes]]:
    """Requests the Python machine sends (first REGISTER, the answer to a 401, the unregister), varied."""
    rng = random.Random(seed)
    profile = Profile(domain=rng.choice(["sipload.test", "[2001:db8::1]", "caf\udce9.test"]),
                      registrar_uri=rng.choice(["sip:sipload.test", "sip:10.0.0.1:5070;transport=udp"]),
                      transport=rng.choice(["UDP", "TCP", "TLS", "WS"]), expires=rng.choice([60, 3600, 0x7fffffff]),
                      user_agent=rng.choice(["sipload", "sipload/0.1 (test)"]),
                      route=rng.choice([None, "<sip:proxy.test;lr>"]), unregister_all=rng.random() < 0.5)
    reg = machine(profile, f"u{seed}", seed)
    reg.start(0.0)
    (first,) = reg.take_outgoing()
    yield reg, first
    request = parse_message(first)
    assert isinstance(request, Request)
    challenge = Response(401, "Unauthorized", [(n, v) for n, v in request.headers.items()
                                               if n in ("via", "from", "to", "call-id", "cseq")]
                         + [("www-authenticate", CHALLENGES[seed % 8])])
    challenge.headers.set("to", f"{request.headers.get('to')};tag=t{seed}")
    reg.receive(challenge, 0.01)
    (answer,) = reg.take_outgoing()
    yield reg, answer
    answered = parse_message(answer)
    assert isinstance(answered, Request)
    reg.receive(response_to(answered, 200, to_tag=f"t{seed}"), 0.02)
    assert reg.state is RegState.REGISTERED
    reg.stop(0.03)
    (unregister,) = reg.take_outgoing()
    yield reg, unregister


def rebuilt(reg: Registration, data: bytes) -> bytes:
    """The native builder given the fields of one of the Python machine's requests."""
    request = parse_message(data)
    assert isinstance(request, Request)
    h = request.headers
    auth = next(((n, h.get(n)) for n in ("Authorization", "Proxy-Authorization") if h.get(n) is not None), None)
    return _native.build_register(
        registrar_uri=request.uri, transport=request.top_via.transport,
        sent_by=reg.sent_by, branch=request.branch or "", aor=reg.aor, from_tag=reg.from_tag,
        call_id=request.call_id, cseq=request.cseq[0], contact=h.get("contact") or "",
        expires=int(h.get("expires") or 0), user_agent=reg.profile.user_agent, route=h.get("route"),
        supported=h.get("supported"), authorization=None if auth is None else (auth[0], auth[1] or ""))


@pytest.mark.parametrize("seed", range(24))
def test_register_bytes_are_the_python_machines(seed: int) -> None:
    for reg, data in registrations(seed):
        assert rebuilt(reg, data) == data


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A corpus message with a few bytes replaced, inserted or cut: near-valid input, where parsers differ."""
    data = bytearray(draw(st.sampled_from([c.data for c in ACCEPTED] + [d for _, d in HOSTILE])))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        edit = draw(st.sampled_from(["replace", "insert", "cut"]))
        byte = draw(st.sampled_from(b":;,<>\"\\ \t\r\n=@0\x00\xff\xc3"))
        if edit == "replace" and at < len(data):
            data[at] = byte
        elif edit == "insert":
            data.insert(at, byte)
        else:
            del data[at:at + draw(st.integers(1, 8))]
    return bytes(data)


@settings(max_examples=500, deadline=None)
@given(mutated())
def test_mutated_corpus_messages_read_the_same(data: bytes) -> None:
    assert_same(data)
