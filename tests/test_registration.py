"""The registration machine, driven by hand: responses crafted here, time passed as `now`."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from registration_scripts import (
    CASES,
    REALM,
    USUAL,
    I,
    Make,
    S,
    challenge,
    feed,
    make_registration,
    ok,
    reach,
    register,
    sent,
    verify,
)

from sipload.sip import ProtocolError, Request, parse_message, response_to
from sipload.sip.failures import FailureReason
from sipload.sip.registration import (
    _TABLE,
    Challenged,
    Failed,
    Op,
    OpStarted,
    Profile,
    RegInput,
    Registered,
    RegState,
    Retransmitted,
    Unregistered,
)
from sipload.sip.transaction import Timers


@pytest.fixture(scope="module")
def make() -> Make:
    """How a test gets its machine: the Python one here (tests/test_native_registration.py runs these tests
    with a `make` of its own, the Python and the native machine driven together)."""
    return make_registration


def test_challenge_then_registered_with_one_call_id_and_rising_cseq(make: Make) -> None:
    reg = make()
    reg.start(10.0)
    first = sent(reg)
    assert first.method == "REGISTER" and first.uri == f"sip:{REALM}"
    assert first.cseq == (1, "REGISTER")
    assert first.headers.get("expires") == "60"
    assert first.branch is not None and first.branch.startswith("z9hG4bK")
    reg.receive(challenge(first, 10.0), 10.004)
    second = sent(reg)
    assert second.call_id == first.call_id
    assert second.cseq == (2, "REGISTER")
    assert second.branch != first.branch
    assert second.from_addr.tag == first.from_addr.tag
    assert verify(second, 10.0)
    reg.receive(ok(second, contact_expires=60), 10.010)
    events = reg.take_events()
    assert isinstance(events[0], OpStarted) and events[0].op is Op.REGISTER
    assert events[1] == Challenged(Op.REGISTER, 10.0, 10.004)
    assert events[2] == Registered(Op.REGISTER, 60, 10.0, 10.004, 10.010)
    assert reg.state is RegState.REGISTERED
    assert reg.bound_until == pytest.approx(70.010)


def test_latencies_end_when_the_answer_arrived_and_the_next_request_leaves_when_handled(make: Make) -> None:
    # the 401 reached the socket at 10.004 but was handled at 10.007 (the worker was busy): the
    # challenge took 4 ms, the authenticated leg starts at 10.007; the 200 arrived at 10.010, handled at 10.012
    reg = make()
    reg.start(10.0)
    first = sent(reg)
    reg.receive(challenge(first, 10.0), 10.007, arrived=10.004)
    second = sent(reg)
    reg.receive(ok(second, contact_expires=60), 10.012, arrived=10.010)
    events = reg.take_events()
    assert events[1] == Challenged(Op.REGISTER, 10.0, 10.004)
    assert events[2] == Registered(Op.REGISTER, 60, 10.0, 10.007, 10.010)
    assert reg.bound_until == pytest.approx(70.012)   # the state takes the time it was handled
    # an arrival time that cannot be (before the request left, or after now) is not believed
    reg.stop(20.0)
    third = sent(reg)
    reg.receive(ok(third, contact_expires=0), 20.002, arrived=19.0)
    assert reg.take_events()[-1] == Unregistered(20.0, 20.0, 20.002)


def test_granted_expiry_contact_param_beats_expires_header_and_header_beats_request(make: Make) -> None:
    reg = make()
    reg.start(0.0)
    reg.receive(challenge(sent(reg), 0.0), 0.0)
    reg.receive(ok(sent(reg), expires=300, contact_expires=45), 0.0)
    assert reg.granted_expires == 45
    reg2 = make()
    reg2.start(0.0)
    reg2.receive(challenge(sent(reg2), 0.0), 0.0)
    reg2.receive(ok(sent(reg2), expires=30), 0.0)
    assert reg2.granted_expires == 30
    reg3 = make()
    reg3.start(0.0)
    reg3.receive(challenge(sent(reg3), 0.0), 0.0)
    reg3.receive(ok(sent(reg3)), 0.0)
    assert reg3.granted_expires == 60


def test_refreshes_for_hours_keep_call_id_raise_cseq_and_reuse_the_nonce(make: Make) -> None:
    profile = Profile(domain=REALM, registrar_uri=f"sip:{REALM}", expires=600, refresh_at=0.5)
    reg = make(profile)
    call_id = register(reg, 0.0, granted=600).call_id
    reg.take_events()
    now = 0.0
    cseqs = []
    for _ in range(24):  # 4 hours of refreshes every 300 s
        deadline = reg.next_timer()
        assert deadline is not None
        assert deadline - now == pytest.approx(300.0, abs=0.01)
        now = deadline
        reg.handle_timer(now)
        req = sent(reg)
        assert req.call_id == call_id
        assert "authorization" in req.headers  # the cached nonce answers without a new 401
        cseqs.append(req.cseq[0])
        reg.receive(ok(req, contact_expires=600), now + 0.001)
        now += 0.001
        kinds = [type(e) for e in reg.take_events()]
        assert kinds == [OpStarted, Registered]
    assert cseqs == list(range(3, 27))


def test_refresh_with_expired_nonce_is_answered_once_not_an_auth_failure(make: Make) -> None:
    reg = make()
    register(reg, 0.0)
    reg.take_events()
    now = reg.next_timer() or 0.0
    reg.handle_timer(now)
    cached = sent(reg)
    reg.receive(challenge(cached, now), now)  # the server forgot our nonce: fresh challenge, no stale flag
    fresh = sent(reg)
    assert fresh.cseq[0] == cached.cseq[0] + 1
    assert verify(fresh, now)
    reg.receive(ok(fresh, contact_expires=60), now)
    assert [type(e) for e in reg.take_events()] == [OpStarted, Registered]


def test_wrong_password_is_auth_rejected_and_not_retried(make: Make) -> None:
    reg = make(password="wrong")
    reg.start(0.0)
    reg.receive(challenge(sent(reg), 0.0), 0.0)
    second = sent(reg)
    assert not verify(second, 0.0)
    reg.receive(challenge(second, 0.0), 0.0)
    assert reg.take_outgoing() == []
    failed = [e for e in reg.take_events() if isinstance(e, Failed)]
    assert failed == [Failed(Op.REGISTER, FailureReason.AUTH_REJECTED, 401, 0.0, 0.0, True, "credentials rejected")]
    assert reg.state is RegState.FAILED and reg.next_timer() is None


def test_stale_challenge_after_credentials_is_retried_with_the_new_nonce(make: Make) -> None:
    reg = make()
    reg.start(0.0)
    reg.receive(challenge(sent(reg), 0.0), 0.0)
    second = sent(reg)
    reg.receive(challenge(second, 1.0, stale=True), 1.0)
    third = sent(reg)
    assert third.cseq[0] == 3
    reg.receive(ok(third, contact_expires=60), 1.0)
    assert reg.state is RegState.REGISTERED
    assert not any(isinstance(e, Failed) for e in reg.take_events())


def test_423_retries_with_min_expires(make: Make) -> None:
    reg = make()
    reg.start(0.0)
    first = sent(reg)
    resp = response_to(first, 423)
    resp.headers.add("Min-Expires", "120")
    reg.receive(resp, 0.0)
    second = sent(reg)
    assert second.headers.get("expires") == "120"
    resp2 = response_to(second, 423)
    resp2.headers.add("Min-Expires", "120")  # not higher than what we asked: give up
    reg.receive(resp2, 0.0)
    assert reg.state is RegState.FAILED
    failed = [e for e in reg.take_events() if isinstance(e, Failed)]
    assert failed[-1].reason is FailureReason.INTERVAL_TOO_BRIEF


@pytest.mark.parametrize(("status", "reason"), [(403, FailureReason.FORBIDDEN), (404, FailureReason.NOT_FOUND),
                                                (486, FailureReason.UNEXPECTED_STATUS)])
def test_final_rejections(make: Make, status: int, reason: FailureReason) -> None:
    reg = make()
    reg.start(0.0)
    reg.receive(response_to(sent(reg), status), 0.0)
    failed = [e for e in reg.take_events() if isinstance(e, Failed)]
    assert [(f.reason, f.status, f.final) for f in failed] == [(reason, status, True)]


def test_503_with_retry_after_backs_off_then_succeeds(make: Make) -> None:
    reg = make()
    reg.start(0.0)
    resp = response_to(sent(reg), 503)
    resp.headers.add("Retry-After", "7")
    reg.receive(resp, 0.5)
    assert reg.state is RegState.BACKOFF
    assert reg.next_timer() == pytest.approx(7.5)
    reg.handle_timer(7.0)
    assert reg.take_outgoing() == []
    reg.handle_timer(7.5)
    again = sent(reg)
    reg.receive(challenge(again, 7.5), 7.5)
    reg.receive(ok(sent(reg), contact_expires=60), 7.6)
    events = reg.take_events()
    assert [e.final for e in events if isinstance(e, Failed)] == [False]
    assert isinstance(events[-1], Registered) and events[-1].started_at == 0.0


def test_total_loss_times_out_with_bounded_retries(make: Make) -> None:
    profile = Profile(domain=REALM, registrar_uri=f"sip:{REALM}", max_retries=2, retry_backoff=1.0,
                      timers=Timers(t1=0.5))
    reg = make(profile)
    reg.start(0.0)
    sends = len(reg.take_outgoing())
    now = 0.0
    for _ in range(1000):
        deadline = reg.next_timer()
        if deadline is None:
            break
        now = deadline
        reg.handle_timer(now)
        sends += len(reg.take_outgoing())
    events = reg.take_events()
    failures = [e for e in events if isinstance(e, Failed)]
    assert [(f.reason, f.final) for f in failures] == [(FailureReason.TIMEOUT, False)] * 2 + [
        (FailureReason.TIMEOUT, True)
    ]
    assert sum(isinstance(e, Retransmitted) for e in events) == 3 * 10  # 10 retransmissions per try (UDP)
    assert sends == 3 * 11
    assert now == pytest.approx(3 * 32.0 + 1.0 + 2.0)  # three Timer F's and two backoffs
    assert reg.state is RegState.FAILED


def test_reliable_transport_never_retransmits(make: Make) -> None:
    profile = Profile(domain=REALM, registrar_uri=f"sip:{REALM}", transport="TCP", max_retries=0)
    reg = make(profile)
    reg.start(0.0)
    reg.take_outgoing()
    assert reg.next_timer() == pytest.approx(32.0)
    reg.handle_timer(32.0)
    assert reg.take_outgoing() == []
    assert reg.state is RegState.FAILED


def test_unregister_sends_expires_zero_for_our_contact_or_star(make: Make) -> None:
    for unregister_all, contact in ((False, "<sip:alice@127.0.0.1:5080;transport=udp>"), (True, "*")):
        profile = Profile(domain=REALM, registrar_uri=f"sip:{REALM}", unregister_all=unregister_all)
        reg = make(profile)
        reg_req = register(reg, 0.0)
        reg.take_events()
        reg.stop(5.0)
        req = sent(reg)
        assert req.headers.get("expires") == "0"
        assert req.headers.get("contact") == contact
        assert req.call_id == reg_req.call_id and req.cseq[0] == reg_req.cseq[0] + 1
        assert "authorization" in req.headers
        reg.receive(ok(req), 5.001)
        assert reg.take_events()[-1] == Unregistered(5.0, 5.0, 5.001)
        assert reg.state is RegState.UNREGISTERED and reg.finished and reg.bound_until is None


def test_stop_during_registration_unregisters_after_the_200(make: Make) -> None:
    reg = make()
    reg.start(0.0)
    reg.receive(challenge(sent(reg), 0.0), 0.0)
    second = sent(reg)
    reg.stop(0.001)
    assert reg.take_outgoing() == []
    reg.receive(ok(second, contact_expires=60), 0.002)
    unreg = sent(reg)
    assert unreg.headers.get("expires") == "0"
    reg.receive(ok(unreg), 0.003)
    assert reg.state is RegState.UNREGISTERED


def test_stop_before_start_sends_nothing(make: Make) -> None:
    reg = make()
    reg.stop(0.0)
    assert reg.take_outgoing() == [] and reg.state is RegState.UNREGISTERED and reg.finished


def test_stray_and_late_responses_are_ignored(make: Make) -> None:
    reg = make()
    reg.start(0.0)
    first = sent(reg)
    other = response_to(first, 200)
    other.headers.set("CSeq", "99 REGISTER")
    assert reg.receive(other, 0.0) is False
    reg.receive(challenge(first, 0.0), 0.0)
    second = sent(reg)
    assert reg.receive(challenge(first, 0.0), 0.0) is False  # a retransmitted 401 to the first request
    reg.receive(ok(second, contact_expires=60), 0.0)
    assert reg.receive(ok(second, contact_expires=60), 0.1) is False  # duplicated 200
    assert reg.state is RegState.REGISTERED


def test_outbound_route_and_service_route_kept(make: Make) -> None:
    profile = Profile(domain=REALM, registrar_uri=f"sip:{REALM}", route="<sip:127.0.0.1:5070;lr>")
    reg = make(profile)
    reg.start(0.0)
    first = sent(reg)
    assert first.headers.get("route") == "<sip:127.0.0.1:5070;lr>"
    reg.receive(challenge(first, 0.0), 0.0)
    resp = ok(sent(reg), contact_expires=60)
    resp.headers.add("Service-Route", "<sip:orig@scscf.test;lr>")
    resp.headers.add("Path", "<sip:edge.test;lr>")
    reg.receive(resp, 0.0)
    assert reg.service_route == ["<sip:orig@scscf.test;lr>"]
    assert reg.path == ["<sip:edge.test;lr>"]


def test_refresh_schedule_respects_jitter_and_margin(make: Make) -> None:
    profile = Profile(domain=REALM, registrar_uri=f"sip:{REALM}", expires=10, refresh_at=0.9,
                      refresh_jitter=0.05, refresh_margin=2.0)
    for seed in range(20):
        reg = make(profile, seed=seed)
        register(reg, 0.0, granted=10)
        due = reg.next_timer()
        assert due is not None
        assert due <= 0.002 + 10 - 2.0 + 1e-9   # at least the margin before expiry


# --- the table, exhaustively -------------------------------------------------------------------------
ALL_PAIRS = [(s, i) for s in RegState for i in RegInput]


@pytest.mark.parametrize(("state", "inp"), [pair for pair in ALL_PAIRS if pair not in _TABLE],
                         ids=lambda v: v.value)
def test_every_pair_without_an_entry_raises_protocol_error(state: RegState, inp: RegInput) -> None:
    reg = make_registration()
    reg.state = state
    with pytest.raises(ProtocolError, match=f"no transition for {inp.value} in {state.value}"):
        reg._dispatch(inp, None, 0.0)


@pytest.mark.parametrize(("state", "inp", "twist"), list(CASES), ids=lambda v: getattr(v, "value", v) or "-")
def test_every_entry_leads_to_the_next_state_it_lists(make: Make, state: RegState, inp: RegInput, twist: str) -> None:
    reg, req, now = reach(make, state, twist)
    feed(reg, inp, req, now, twist)
    expected = CASES[(state, inp, twist)]
    assert reg.state is expected
    _handler, next_states = _TABLE[(state, inp)]
    assert expected in next_states


def test_every_entry_is_driven_and_every_next_state_it_lists_is_reached() -> None:
    usual = {(state, inp): nxt for (state, inp, twist), nxt in CASES.items() if twist == USUAL.get((state, inp), "")}
    assert set(usual) == set(_TABLE)
    for pair, nxt in usual.items():
        assert _TABLE[pair][1][0] is nxt, pair  # the usual outcome is listed first
    reached = {(state, inp, nxt) for (state, inp, _twist), nxt in CASES.items()}
    listed = {(state, inp, nxt) for (state, inp), (_handler, nexts) in _TABLE.items() for nxt in nexts}
    assert listed - reached == set()


def test_a_handler_cannot_lead_where_its_entry_does_not_list(monkeypatch: pytest.MonkeyPatch) -> None:
    reg, _req, now = reach(make_registration, S.REGISTERED)
    import sipload.sip.registration as registration

    handler, _next = registration._HANDLERS[(S.REGISTERED, I.STOP)]
    monkeypatch.setitem(registration._HANDLERS, (S.REGISTERED, I.STOP), (handler, (S.REGISTERED,)))
    with pytest.raises(ProtocolError, match="stop in registered led to unregistering, the table allows registered"):
        reg.stop(now)


STEPS = st.lists(
    st.sampled_from(["401", "401stale", "200", "423", "503", "403", "100", "timer", "stop", "late"]),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(STEPS)
def test_random_response_sequences_keep_the_invariants(make: Make, steps: list[str]) -> None:
    """Whatever the registrar answers, the machine never raises, CSeq only rises, one Call-ID,
    and it ends in a known state with bounded retries."""
    reg = make(Profile(domain=REALM, registrar_uri=f"sip:{REALM}", expires=60, max_retries=2))
    now = 0.0
    reg.start(now)
    last: Request | None = None
    cseq = 0
    call_ids = set()
    for step in steps:
        for data in reg.take_outgoing():
            req = parse_message(data)
            assert isinstance(req, Request)
            assert req.cseq[0] >= cseq
            cseq = req.cseq[0]
            call_ids.add(req.call_id)
            last = req
        now += 0.01
        if step == "timer":
            deadline = reg.next_timer()
            if deadline is not None:
                now = max(now, deadline)
                reg.handle_timer(now)
            continue
        if step == "stop":
            reg.stop(now)
            continue
        if last is None:
            continue
        if step == "401":
            resp = challenge(last, now)
        elif step == "401stale":
            resp = challenge(last, now, stale=True)
        elif step == "200":
            resp = ok(last, contact_expires=60)
        elif step == "late":
            resp = ok(last, contact_expires=60)
            resp.headers.set("CSeq", f"{max(cseq - 1, 0)} REGISTER")
        else:
            resp = response_to(last, int(step))
            if step == "423":
                resp.headers.add("Min-Expires", "120")
            if step == "503":
                resp.headers.add("Retry-After", "1")
        reg.receive(resp, now)
    assert len(call_ids) <= 1
    assert isinstance(reg.state, RegState)
    retries = [e for e in reg.take_events() if isinstance(e, Failed) and not e.final]
    assert len(retries) <= 2 * 3  # bounded per operation (register, refresh, unregister)


def test_failures_that_may_pass_are_no_answer_a_broken_transport_and_server_errors() -> None:
    assert {r for r in FailureReason if r.may_pass} == {
        FailureReason.TIMEOUT, FailureReason.TRANSPORT_ERROR, FailureReason.SERVER_ERROR}
