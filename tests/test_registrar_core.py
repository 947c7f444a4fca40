"""The embedded registrar's sans-IO core, its binding store and settings. Time is a parameter."""

from __future__ import annotations

import random
import statistics

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipload.registrar.bindings import (
    BindingStore,
    ContactChange,
    RequestInfo,
    UpdateStatus,
    UserState,
)
from sipload.registrar.core import Outcome, RegistrarCore
from sipload.registrar.listen import Listen
from sipload.registrar.settings import DelayKind, DelaySpec, RegistrarSettings, load_users, parse_delay
from sipload.registrar.stats import too_brief_text
from sipload.sip.digest import Algorithm, DigestClient, compute_ha1, compute_response, parse_challenges
from sipload.sip.errors import ParseError
from sipload.sip.message import Request, Response
from sipload.sip.parser import parse_message

SOURCE = ("127.0.0.1", 5080)
URI = "sip:sipload.test"


class Phone:
    """Builds REGISTERs for one user the way a phone does (one Call-ID, rising CSeq)."""

    def __init__(self, user: str = "alice", password: str | None = None, *, call_id: str | None = None,
                 contact: str | None = None, algorithms: tuple[Algorithm, ...] | None = None) -> None:
        self.user = user
        self.call_id = call_id or f"{user}-call@test"
        self.contact = contact or f"sip:{user}@127.0.0.1:5080"
        self.cseq = 0
        self.branches = 0
        counter = iter(range(1, 1_000_000))
        self.client = DigestClient(user, password if password is not None else f"pw-{user}",
                                   cnonce=lambda: f"cn{next(counter)}", preference=algorithms)
        self.auth: tuple[str, str] | None = None

    def request(self, *, expires: int | None = 3600, contact: str | None = "", cseq: int | None = None,
                extra: tuple[str, ...] = (), method: str = "REGISTER", to_user: str | None = None) -> Request:
        self.cseq = cseq if cseq is not None else self.cseq + 1
        self.branches += 1
        to = to_user or self.user
        lines = [
            f"{method} {URI} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK{self.call_id}-{self.branches};rport",
            "Max-Forwards: 70",
            f"From: <sip:{to}@sipload.test>;tag=ft1",
            f"To: <sip:{to}@sipload.test>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} {method}",
        ]
        if contact is not None:
            lines.append(f"Contact: {contact or f'<{self.contact}>'}")
        if expires is not None:
            lines.append(f"Expires: {expires}")
        if self.auth is not None:
            lines.append(f"{self.auth[0]}: {self.auth[1]}")
        lines += [*extra, "Content-Length: 0", "", ""]
        message = parse_message("\r\n".join(lines).encode())
        assert isinstance(message, Request)
        return message

    def answer(self, response: Response) -> None:
        challenges = parse_challenges(response.headers.get_all("www-authenticate"))
        self.auth = self.client.answer(challenges, "REGISTER", URI)
        assert self.auth is not None


def respond(core: RegistrarCore, request: Request, now: float = 0.0, transport: str = "udp") -> Response:
    outcome = core.handle(request, SOURCE, transport, now)
    assert outcome.response is not None, outcome.note
    return outcome.response


def register(core: RegistrarCore, phone: Phone, now: float = 0.0, **kwargs: object) -> Response:
    """REGISTER (with the cached nonce, nc + 1, once the phone has one); answer a 401 once."""
    if phone.auth is not None:
        _refresh_credentials(phone)
    response = respond(core, phone.request(**kwargs), now)  # type: ignore[arg-type]
    if response.status == 401:
        phone.answer(response)
        response = respond(core, phone.request(**kwargs), now)  # type: ignore[arg-type]
    return response


def make_core(**kwargs: object) -> RegistrarCore:
    return RegistrarCore(RegistrarSettings(**kwargs), now=0.0, rng=random.Random(7))  # type: ignore[arg-type]


def contact_expires(response: Response) -> dict[str, str | None]:
    return {c.uri: c.params.get("expires") for c in response.contacts() or []}


# --- digest ------------------------------------------------------------------------------------


def test_challenge_then_authorized_register_binds_the_contact() -> None:
    core = make_core()
    phone = Phone()
    first = respond(core, phone.request())
    assert first.status == 401
    assert first.to_addr.tag
    (challenge,) = parse_challenges(first.headers.get_all("www-authenticate"))
    assert challenge.realm == "sipload" and challenge.qop == ("auth",) and not challenge.stale
    phone.answer(first)
    ok = respond(core, phone.request(), now=1.0)
    assert ok.status == 200
    assert contact_expires(ok) == {phone.contact: "3600"}
    assert ok.cseq == (2, "REGISTER") and ok.call_id == phone.call_id
    (binding,) = core.store.bindings("sip:alice@sipload.test", 2.0)
    assert binding.contact == phone.contact and binding.expires_at == 3601.0
    assert (binding.call_id, binding.cseq, binding.source, binding.transport) == (phone.call_id, 2, SOURCE, "udp")
    assert core.store.user_state("alice", 2.0).state is UserState.LIVE
    assert core.counters.challenges == 1 and core.counters.auth_ok == 1
    assert core.counters.responses == {401: 1, 200: 1}
    assert core.counters.received == {"REGISTER": 2}


def test_response_via_gets_received_and_rport() -> None:
    core = make_core()
    request = Phone().request()
    outcome = core.handle(request, ("127.0.0.9", 40000), "udp", 0.0)
    assert outcome.response is not None
    via = outcome.response.top_via
    assert via.params["rport"] == "40000" and via.params["received"] == "127.0.0.9"
    assert via.branch == request.branch
    two = Phone().request()
    two.headers.remove("via")
    two.headers.add("Via", "SIP/2.0/UDP 10.0.0.1:5080;RPORT;branch=z9hG4bKa, SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKb")
    outcome = core.handle(two, ("127.0.0.9", 40000), "udp", 0.0)
    assert outcome.response is not None
    assert outcome.response.headers.get_list("via") == [
        "SIP/2.0/UDP 10.0.0.1:5080;rport=40000;branch=z9hG4bKa;received=127.0.0.9",
        "SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKb",
    ]


def test_wrong_password_is_challenged_again_and_user_rejected() -> None:
    core = make_core()
    phone = Phone(password="wrong")
    assert core.store.user_state("alice", 0.0).state is UserState.NEVER_SEEN
    response = register(core, phone, now=5.0)
    assert response.status == 401
    assert not parse_challenges(response.headers.get_all("www-authenticate"))[0].stale
    status = core.store.user_state("alice", 6.0)
    assert status.state is UserState.REJECTED and status.since == 5.0
    assert core.counters.auth_failures == {"wrong_response": 1}
    assert core.store.bindings("sip:alice@sipload.test", 6.0) == ()


def test_unknown_user_in_users_table_is_rejected() -> None:
    core = make_core(users={"bob": "secret"})
    assert register(core, Phone("bob", "secret")).status == 200
    assert register(core, Phone("carol", "pw-carol")).status == 401
    assert core.counters.auth_failures == {"unknown_user": 1}
    assert core.store.user_state("carol", 1.0).state is UserState.REJECTED


def test_expired_nonce_gets_stale_challenge_and_then_succeeds() -> None:
    core = make_core(nonce_lifetime=30.0)
    phone = Phone()
    assert register(core, phone, now=0.0).status == 200
    # the phone reuses its cached nonce after the lifetime: stale=true, not a rejection
    stale_request = _reuse_nonce(phone)
    response = respond(core, stale_request, now=31.0)
    assert response.status == 401
    (challenge,) = parse_challenges(response.headers.get_all("www-authenticate"))
    assert challenge.stale
    assert core.counters.stale_challenges == 1
    assert core.store.user_state("alice", 31.0).state is UserState.LIVE
    phone.answer(response)
    assert respond(core, phone.request(), now=31.0).status == 200


def _refresh_credentials(phone: Phone) -> None:
    """Answer the last challenge again (nc + 1), as phones do on a refresh."""
    assert phone.auth is not None
    nonce = phone.auth[1].split('nonce="', 1)[1].split('"', 1)[0]
    algorithm = phone.auth[1].split("algorithm=", 1)[1].split(",", 1)[0]
    challenge = parse_challenges([f'Digest realm="sipload", nonce="{nonce}", algorithm={algorithm}, qop="auth"'])
    phone.auth = phone.client.authorize(challenge[0], "REGISTER", URI)


def _reuse_nonce(phone: Phone) -> Request:
    """A refresh with the cached nonce."""
    _refresh_credentials(phone)
    return phone.request()


def test_replayed_nc_is_rejected() -> None:
    core = make_core()
    phone = Phone()
    assert register(core, phone).status == 200
    # same Authorization (same nc) in a new request: a replay, challenged without stale
    replay = phone.request()
    response = respond(core, replay, now=1.0)
    assert response.status == 401
    assert not parse_challenges(response.headers.get_all("www-authenticate"))[0].stale
    assert core.counters.auth_failures == {"replay": 1}
    # the next nc on the same nonce is fine
    assert respond(core, _reuse_nonce(phone), now=2.0).status == 200


def test_md5_without_qop_is_accepted() -> None:
    core = make_core()
    phone = Phone()
    first = respond(core, phone.request())
    nonce = parse_challenges(first.headers.get_all("www-authenticate"))[0].nonce
    ha1 = compute_ha1("alice", "sipload", "pw-alice", Algorithm.MD5)
    digest = compute_response(Algorithm.MD5, ha1, nonce, "REGISTER", URI)
    phone.auth = ("Authorization", f'Digest username="alice", realm="sipload", nonce="{nonce}", '
                                   f'uri="{URI}", response="{digest}"')
    assert respond(core, phone.request()).status == 200
    strict = make_core(allow_no_qop=False)
    first = respond(strict, Phone().request())
    assert first.status == 401


def test_sha256_only_registrar() -> None:
    core = make_core(algorithms=(Algorithm.SHA256,))
    phone = Phone()
    first = respond(core, phone.request())
    (challenge,) = parse_challenges(first.headers.get_all("www-authenticate"))
    assert challenge.algorithm is Algorithm.SHA256
    phone.answer(first)
    assert "algorithm=SHA-256" in phone.auth[1] if phone.auth else False
    assert respond(core, phone.request()).status == 200


def test_both_algorithms_offered_strongest_first() -> None:
    core = make_core(algorithms=(Algorithm.MD5, Algorithm.SHA256))
    first = respond(core, Phone().request())
    names = [c.algorithm for c in parse_challenges(first.headers.get_all("www-authenticate"))]
    assert names == [Algorithm.SHA256, Algorithm.MD5]
    md5_phone = Phone(algorithms=(Algorithm.MD5,))
    assert register(core, md5_phone).status == 200


def test_to_user_must_match_digest_username_unless_allowed() -> None:
    core = make_core()
    phone = Phone("alice")
    response = register(core, phone, to_user="bob")
    assert response.status == 403
    assert core.counters.auth_failures["user_mismatch"] == 1
    assert core.store.user_state("bob", 1.0).state is UserState.REJECTED
    lenient = make_core(allow_user_mismatch=True)
    assert register(lenient, Phone("alice"), to_user="bob").status == 200
    assert lenient.store.bindings("sip:bob@sipload.test", 1.0)


def test_digest_uri_must_match_request_uri() -> None:
    core = make_core()
    phone = Phone()
    first = respond(core, phone.request())
    challenges = parse_challenges(first.headers.get_all("www-authenticate"))
    phone.auth = phone.client.answer(challenges, "REGISTER", "sip:elsewhere.test")
    response = respond(core, phone.request())
    assert response.status == 400 and "uri" in response.reason
    assert core.counters.auth_failures == {"uri_mismatch": 1}


def test_malformed_authorization_is_400() -> None:
    core = make_core()
    request = Phone().request(extra=('Authorization: Digest username="alice, realm=',))
    response = respond(core, request)
    assert response.status == 400 and "Authorization" in response.reason


# --- expires and contacts ------------------------------------------------------------------------


def test_too_brief_gets_423_with_min_expires() -> None:
    core = make_core(min_expires=60)
    phone = Phone()
    response = register(core, phone, expires=30)
    assert response.status == 423
    assert response.headers.get("min-expires") == "60"
    assert register(core, phone, expires=45).status == 423
    assert register(core, phone, expires=60).status == 200
    assert (core.counters.too_brief, core.counters.briefest_asked) == (2, 30)
    assert too_brief_text(core.counters, 60) == (
        "answered 423 Interval Too Brief to 2 REGISTERs: expires down to 30 s asked, below its min-expires of 60 s "
        "(the endpoints then register again with the Min-Expires it sent)")
    assert too_brief_text(make_core().counters, 60) is None


def test_contact_expires_param_wins_over_header_and_is_clamped() -> None:
    core = make_core(max_expires=7200)
    phone = Phone()
    response = register(core, phone, expires=100, contact=f"<{phone.contact}>;expires=99999")
    assert response.status == 200
    assert contact_expires(response) == {phone.contact: "7200"}
    response = register(core, phone, expires=None)
    assert contact_expires(response) == {phone.contact: "3600"}  # the default


def test_refresh_keeps_one_binding_and_200_lists_every_contact() -> None:
    core = make_core()
    desk = Phone()
    assert register(core, desk, now=0.0).status == 200
    for t in (100.0, 200.0):
        assert respond(core, _reuse_nonce(desk), now=t).status == 200
    (binding,) = core.store.bindings("sip:alice@sipload.test", 200.0)
    assert binding.registered_at == 0.0 and binding.last_refresh == 200.0 and binding.cseq == 4
    mobile = Phone(call_id="mobile@test", contact="sip:alice@127.0.0.2:5090")
    response = register(core, mobile, now=300.0, expires=600)
    assert contact_expires(response) == {desk.contact: "3500", mobile.contact: "600"}
    assert core.store.count(300.0).bindings == 2


def test_unregister_one_contact_then_all() -> None:
    core = make_core()
    desk, mobile = Phone(), Phone(call_id="mobile@test", contact="sip:alice@127.0.0.2:5090")
    register(core, desk)
    register(core, mobile)
    response = register(core, desk, expires=0, now=10.0)
    assert response.status == 200
    assert contact_expires(response) == {mobile.contact: "3590"}
    assert core.store.user_state("alice", 10.0).state is UserState.LIVE
    bad = register(core, desk, contact="*", expires=5)
    assert bad.status == 400 and "Expires: 0" in bad.reason
    response = register(core, desk, contact="*", expires=0, now=20.0)
    assert response.status == 200 and response.contacts() == []
    status = core.store.user_state("alice", 21.0)
    assert (status.state, status.since) == (UserState.UNREGISTERED, 20.0)


def test_query_without_contact_lists_bindings() -> None:
    core = make_core()
    phone = Phone()
    register(core, phone)
    response = register(core, phone, contact=None, expires=None, now=60.0)
    assert response.status == 200 and contact_expires(response) == {phone.contact: "3540"}


def test_cseq_rules_same_call_id_needs_a_higher_cseq() -> None:
    core = make_core()
    phone = Phone()
    assert register(core, phone).status == 200  # CSeq 2 stored
    for cseq in (2, 1):
        response = respond(core, _with_cseq(phone, cseq), now=1.0)
        assert response.status == 500 and "CSeq" in response.reason
    assert core.store.bindings("sip:alice@sipload.test", 1.0)[0].cseq == 2
    # another Call-ID with a lower CSeq may update the binding (a rebooted phone)
    rebooted = Phone(call_id="reboot@test")
    assert register(core, rebooted, now=2.0).status == 200
    (binding,) = core.store.bindings("sip:alice@sipload.test", 2.0)
    assert binding.call_id == "reboot@test" and binding.cseq == 2


def _with_cseq(phone: Phone, cseq: int) -> Request:
    _reuse_nonce(phone)  # fresh nc, so the failure is the CSeq, not a replay
    phone.cseq = cseq - 1
    return phone.request()


def test_wildcard_unregister_follows_the_cseq_rule() -> None:
    core = make_core()
    phone = Phone()
    register(core, phone)
    response = respond(core, _with_cseq_contact(phone, 1), now=1.0)
    assert response.status == 500
    assert core.store.count(1.0).bindings == 1


def _with_cseq_contact(phone: Phone, cseq: int) -> Request:
    _reuse_nonce(phone)
    phone.cseq = cseq - 1
    return phone.request(contact="*", expires=0)


def test_instance_id_replaces_the_binding_of_a_moved_phone() -> None:
    core = make_core()
    instance = '"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"'
    phone = Phone()
    register(core, phone, contact=f"<sip:alice@127.0.0.1:5080>;+sip.instance={instance};reg-id=1")
    moved = Phone(call_id="moved@test")
    response = register(core, moved, contact=f"<sip:alice@127.0.0.3:6000>;+sip.instance={instance};reg-id=1")
    (contact,) = response.contacts() or []
    assert contact.uri == "sip:alice@127.0.0.3:6000"
    assert contact.params["+sip.instance"] == instance and contact.params["reg-id"] == "1"


def test_path_is_stored_and_echoed() -> None:
    core = make_core()
    response = register(core, Phone(), extra=("Path: <sip:edge.test;lr>",))
    assert response.headers.get_all("path") == ["<sip:edge.test;lr>"]
    assert core.store.bindings("sip:alice@sipload.test", 0.0)[0].path == ("<sip:edge.test;lr>",)


def test_unsupported_require_gets_420() -> None:
    core = make_core()
    response = register(core, Phone(), extra=("Require: foo, path",))
    assert response.status == 420 and response.headers.get("unsupported") == "foo"


def test_too_many_contacts_gets_403() -> None:
    core = make_core(max_contacts=2)
    for i in range(2):
        assert register(core, Phone(call_id=f"c{i}", contact=f"sip:alice@127.0.0.{i + 1}")).status == 200
    assert register(core, Phone(call_id="c9", contact="sip:alice@127.0.0.9")).status == 403


# --- other methods and malformed requests -----------------------------------------------------------


def test_options_200_other_methods_405_ack_nothing() -> None:
    core = make_core()
    phone = Phone()
    options = respond(core, phone.request(method="OPTIONS", contact=None, expires=None))
    assert options.status == 200 and "REGISTER" in (options.headers.get("allow") or "")
    invite = respond(core, phone.request(method="INVITE", expires=None))
    assert invite.status == 405 and invite.headers.get("allow") == "REGISTER, OPTIONS"
    assert core.handle(phone.request(method="ACK"), SOURCE, "udp", 0.0).response is None
    assert respond(core, phone.request(method="CANCEL")).status == 481


@pytest.mark.parametrize(
    ("drop_header", "reason"),
    [("call-id", "Call-ID"), ("cseq", "CSeq"), ("to", "To"), ("from", "From"), ("via", "Via")],
)
def test_missing_mandatory_header_is_400_with_a_reason(drop_header: str, reason: str) -> None:
    core = make_core()
    request = Phone().request()
    request.headers.remove(drop_header)
    outcome = core.handle(request, SOURCE, "udp", 0.0)
    assert outcome.response is not None and outcome.response.status == 400
    assert reason in outcome.response.reason


@pytest.mark.parametrize(
    "line",
    ["CSeq: x REGISTER", "CSeq: 1 INVITE", "To: <>", "To: sip", "Contact: <sip:a@h>, *", "Expires: soon",
     "Contact: <sip:alice@h>;expires=x", "Contact: <mailto:a@b>", "To: <tel:123>", "To: <sip:sipload.test>"],
)
def test_garbage_values_get_400_not_an_exception(line: str) -> None:
    core = make_core()
    phone = Phone()
    register(core, phone)
    name = line.split(":", 1)[0].lower()
    request = _reuse_nonce(phone)
    request.headers.remove(name)
    request.headers.add(*line.split(": ", 1))
    outcome = core.handle(request, SOURCE, "tcp", 1.0)
    assert outcome.response is not None and outcome.response.status == 400, outcome.response


def test_handle_bytes_counts_unparsable_data_and_stray_responses() -> None:
    core = make_core()
    for _ in range(2):
        outcome = core.handle_bytes(b"\x00\xffgarbage", SOURCE, "udp", 0.0)
        assert outcome.response is None and outcome.note.startswith("parse error")
    assert core.counters.parse_errors == 2
    assert core.handle_bytes(b"SIP/2.0 200 OK\r\n\r\n", SOURCE, "udp", 0.0).response is None
    assert core.counters.stray_responses == 1


_METHODS = st.sampled_from(["REGISTER", "REGISTER", "REGISTER", "OPTIONS", "INVITE", "ACK", "CANCEL", "FOO"])
_TEXT = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
_BASE = {
    "Via": ["SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK1;rport", "SIP/2.0/TCP [::1]:5;branch=x, SIP/2.0/UDP h"],
    "From": ["<sip:alice@sipload.test>;tag=1", "sip:bob@h;tag=2"],
    "To": ["<sip:alice@sipload.test>", "<sip:bob@sipload.test>", "<sips:alice@sipload.test:5061>"],
    "Call-ID": ["abc@h", "x"],
    "CSeq": ["{n} {method}"],
}
_EXTRA = {
    "Contact": ["*", "<sip:alice@127.0.0.1:5080>", "<sip:alice@h>;expires=0", "<sip:a@b>;expires=5",
                '<sip:a@b>;+sip.instance="<urn:uuid:1>";reg-id=1', "<sip:a@b>, <sip:c@d>;expires=99999999999"],
    "Expires": ["0", "30", "3600", "99999999999"],
    "Authorization": ['Digest username="alice", realm="sipload", nonce="x", uri="sip:sipload.test", '
                      'response="00", qop=auth, nc=00000001, cnonce="c"',
                      'Digest username="alice", realm="other", nonce="x", uri="u", response="0"', "Basic abc"],
    "Require": ["path", "foo"],
    "Path": ["<sip:edge;lr>"],
}


@st.composite
def _requests(draw: st.DrawFn) -> bytes:
    """A valid request, then: mandatory headers kept, dropped or garbled; optional ones added."""
    method = draw(_METHODS)
    lines = [f"{method} {URI} SIP/2.0"]
    for name, values in _BASE.items():
        choice = draw(st.sampled_from(["keep", "keep", "keep", "drop", "garble"]))
        if choice == "drop":
            continue
        if choice == "keep":
            value = draw(st.sampled_from(values)).replace("{n}", str(draw(st.integers(0, 2**32))))
            value = value.replace("{method}", method)
        else:
            value = draw(_TEXT)
        lines.append(f"{name}: {value}")
    for name in draw(st.lists(st.sampled_from(sorted(_EXTRA)), max_size=4)):
        lines.append(f"{name}: {draw(st.one_of(st.sampled_from(_EXTRA[name]), _TEXT))}")
    return "\r\n".join([*lines, "", ""]).encode()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_requests(), transport=st.sampled_from(["udp", "tcp"]), drop=st.sampled_from([0.0, 0.2]))
def test_fuzz_core_only_returns_a_response_or_nothing(data: bytes, transport: str, drop: float) -> None:
    try:
        request = parse_message(data)
    except ParseError:
        return
    assert isinstance(request, Request)
    core = make_core(drop=drop, error_503=drop)
    outcome = core.handle(request, SOURCE, transport, 0.0)
    assert isinstance(outcome, Outcome)
    if outcome.response is not None:
        assert isinstance(outcome.response, Response)
        assert 200 <= outcome.response.status <= 599
        assert isinstance(parse_message(outcome.response.to_bytes()), Response)
    else:
        assert outcome.note


# --- retransmissions ---------------------------------------------------------------------------------


def test_udp_retransmission_gets_the_same_response_without_reprocessing() -> None:
    core = make_core()
    phone = Phone()
    first = respond(core, phone.request())
    phone.answer(first)
    request = phone.request()
    ok = respond(core, request, now=1.0)
    again = respond(core, request, now=2.0)
    assert again.to_bytes() == ok.to_bytes() and again.status == 200  # the same bytes, not a second pass
    assert again.headers.get("call-id") == ok.headers.get("call-id")
    assert core.counters.retransmissions == 1 and core.counters.auth_failures == {}
    # after Timer J the request is new again: same CSeq -> the update fails
    assert respond(core, request, now=40.0).status != 200


def test_retransmission_while_the_response_is_delayed_is_absorbed() -> None:
    core = make_core(delay=DelaySpec(DelayKind.FIXED, 2.0))
    request = Phone().request()
    first = core.handle(request, SOURCE, "udp", 0.0)
    assert first.response is not None and first.delay == 2.0
    assert core.handle(request, SOURCE, "udp", 1.0).response is None
    late = core.handle(request, SOURCE, "udp", 3.0)
    assert late.response is not None and late.delay == 0.0
    assert late.response.to_bytes() == first.response.to_bytes()


# --- fault injection -----------------------------------------------------------------------------------


def test_drop_share_over_10k_requests() -> None:
    core = make_core(drop=0.1)
    phone = Phone()
    answered = sum(
        core.handle(phone.request(method="OPTIONS", contact=None), SOURCE, "tcp", 0.0).response is not None
        for _ in range(10_000)
    )
    assert core.counters.drops == 10_000 - answered
    assert 0.09 <= core.counters.drops / 10_000 <= 0.11


def test_error_503_share_with_retry_after() -> None:
    core = make_core(error_503=0.25, retry_after=7)
    phone = Phone()
    statuses = [respond(core, phone.request(method="OPTIONS", contact=None), transport="tcp")
                for _ in range(4000)]
    unavailable = [r for r in statuses if r.status == 503]
    assert 0.22 <= len(unavailable) / 4000 <= 0.28
    assert core.counters.injected_503 == len(unavailable)
    assert all(r.headers.get("retry-after") == "7" for r in unavailable)


@pytest.mark.parametrize(
    ("spec", "mean", "low", "high"),
    [("5ms", 0.005, 0.005, 0.005), ("uniform:1ms:9ms", 0.005, 0.001, 0.009), ("exp:2ms", 0.002, 0.0, 1.0)],
)
def test_delay_distributions(spec: str, mean: float, low: float, high: float) -> None:
    core = make_core(delay=parse_delay(spec))
    phone = Phone()
    delays = [core.handle(phone.request(method="OPTIONS", contact=None), SOURCE, "tcp", 0.0).delay
              for _ in range(4000)]
    assert min(delays) >= low and max(delays) <= high
    assert statistics.fmean(delays) == pytest.approx(mean, rel=0.08)


def test_seeded_cores_make_the_same_decisions() -> None:
    def run() -> list[int]:
        core = RegistrarCore(RegistrarSettings(drop=0.3, error_503=0.3, seed=42), now=0.0)
        phone = Phone()
        return [getattr(core.handle(phone.request(method="OPTIONS"), SOURCE, "tcp", 0.0).response,
                        "status", 0) for _ in range(200)]

    assert run() == run()


# --- the binding store ------------------------------------------------------------------------------


def _info(call_id: str = "c", cseq: int = 1) -> RequestInfo:
    return RequestInfo(call_id, cseq, SOURCE, "udp")


def test_user_state_transitions() -> None:
    store = BindingStore()
    assert store.user_state("u", 0.0).state is UserState.NEVER_SEEN
    store.mark_rejected("u", 1.0)
    assert (store.user_state("u", 2.0).state, store.user_state("u", 2.0).since) == (UserState.REJECTED, 1.0)
    store.register("sip:u@d", "u", [ContactChange("sip:u@h", 60)], _info(cseq=1), 10.0)
    assert (store.user_state("u", 11.0).state, store.user_state("u", 11.0).since) == (UserState.LIVE, 10.0)
    store.mark_rejected("u", 20.0)  # a failed attempt while live: still LIVE
    assert store.user_state("u", 21.0).state is UserState.LIVE
    store.register("sip:u@d", "u", [ContactChange("sip:u@h", 60)], _info(cseq=2), 40.0)  # refresh
    assert store.user_state("u", 99.0) == store.user_state("u", 11.0)  # LIVE since 10.0
    status = store.user_state("u", 100.0)
    assert (status.state, status.since) == (UserState.EXPIRED, 100.0)
    store.register("sip:u@d", "u", [ContactChange("sip:u@h", 60)], _info(cseq=3), 200.0)
    assert store.user_state("u", 201.0).since == 200.0
    store.register("sip:u@d", "u", [ContactChange("sip:u@h", 0)], _info(cseq=4), 210.0)
    status = store.user_state("u", 211.0)
    assert (status.state, status.since) == (UserState.UNREGISTERED, 210.0)
    store.mark_rejected("u", 220.0)
    assert store.user_state("u", 221.0).state is UserState.REJECTED


def test_lazy_expiry_purge_and_count_for_many_aors() -> None:
    store = BindingStore()
    for i in range(20_000):
        store.register(f"sip:u{i}@d", f"u{i}", [ContactChange(f"sip:u{i}@h", 60 + i % 100)], _info(), 0.0)
    assert store.count(0.0).bindings == 20_000 and store.count(0.0).aors == 20_000
    assert store.purge(100.0, limit=500) == 500  # bounded
    assert store.stored == 19_500
    assert store.count(130.0).bindings == 20_000 - sum(1 for i in range(20_000) if 60 + i % 100 <= 130)
    assert store.count(1000.0).aors == 0 and store.stored == 0
    assert store.user_state("u5", 1000.0).state is UserState.EXPIRED


def test_refresh_storm_keeps_the_heap_bounded() -> None:
    store = BindingStore()
    for n in range(5000):
        status = store.register("sip:u@d", "u", [ContactChange("sip:u@h", 3600)], _info(cseq=n + 1), n * 0.1)
        assert status.status is UpdateStatus.OK
    assert len(store._heap) <= 2 * store.stored + 1024


def test_history_is_capped_evicting_non_live_users_first() -> None:
    store = BindingStore(max_history=100)
    store.register("sip:live@d", "live", [ContactChange("sip:live@h", 3600)], _info(), 0.0)
    for i in range(1000):
        store.mark_rejected(f"r{i}", float(i))
    assert len(list(store.users())) <= 101
    assert store.user_state("live", 1000.0).state is UserState.LIVE
    assert store.user_state("r999", 1000.0).state is UserState.REJECTED


def test_passwords_never_in_repr() -> None:
    settings_ = RegistrarSettings(password_template="s3cret-{user}")
    assert "s3cret" not in repr(settings_)
    assert "hunter2" not in repr(RegistrarSettings(users={"bob": "hunter2"}))
    assert settings_.password_for("bob") == "s3cret-bob"


# --- settings, listens ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{"drop": 1.5}, {"error_503": -0.1}, {"min_expires": 100, "default_expires": 50}, {"realm": ""},
     {"password_template": "static"}, {"algorithms": ()}, {"nonce_lifetime": 0.0}, {"users": {}}],
)
def test_settings_reject_bad_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RegistrarSettings(**kwargs)  # type: ignore[arg-type]


def test_parse_delay() -> None:
    assert parse_delay("none") == DelaySpec()
    assert parse_delay("5ms") == DelaySpec(DelayKind.FIXED, 0.005)
    assert parse_delay("uniform:1ms:10ms") == DelaySpec(DelayKind.UNIFORM, 0.001, 0.01)
    assert parse_delay("exp:2ms") == DelaySpec(DelayKind.EXPONENTIAL, 0.002)
    for bad in ("fast", "uniform:1ms", "uniform:10ms:1ms", "gauss:1ms", "-5ms"):
        with pytest.raises(ValueError, match="invalid delay"):
            parse_delay(bad)


def test_load_users(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    good = tmp_path / "users.csv"
    good.write_text("# users\nalice;pw1\n\nbob;p;w2\n")
    assert load_users(good) == {"alice": "pw1", "bob": "p;w2"}
    bad = tmp_path / "bad.csv"
    bad.write_text("alice;pw1\nbob\n")
    with pytest.raises(ValueError, match=r"bad\.csv:2"):
        load_users(bad)


def test_listen_parse() -> None:
    assert Listen.parse("udp:127.0.0.1:5062") == Listen("udp", "127.0.0.1", 5062)
    assert Listen.parse("TLS:[::1]:0") == Listen("tls", "::1", 0)
    assert str(Listen("tcp", "::1", 5)) == "tcp:[::1]:5"
    for bad in ("udp", "sctp:127.0.0.1:5", "udp:127.0.0.1", "udp:localhost:5", "udp:127.0.0.1:99999",
                "tcp:127.0.0.1:x"):
        with pytest.raises(ValueError, match="TRANSPORT:HOST:PORT"):
            Listen.parse(bad)
