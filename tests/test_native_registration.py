"""The native registration machine (`sipload._native.Registration`) against the Python one, exchange for exchange.

A `Twin` drives `sipload.sip.Registration` and the native machine with the same inputs, the same clock and
the same identifiers (`IdSource(random.Random(seed))` on one side, `seed=` on the other: the native machine
draws CPython's Mersenne Twister in the same order). Every response goes to both as the same bytes, each
machine parsing them with its own parser. After every input the twin compares everything either machine
shows: the datagrams it sent (byte for byte), its events (field by field: times, failure reasons, statuses,
details), its state, CSeq, next timer, refresh deadline, binding, routes and flow, and what the input
returned or raised (the exception's type and message).

Driven so: every scenario of tests/test_registration.py that takes `make` (collected here again with this
module's `make`: the twin), the table itself, the hostile registrar's cases and corpus, and hypothesis step
sequences of responses (random codes, with and without challenges), timers, stops and transport errors.
"""

from __future__ import annotations

import heapq
import inspect
import random
from collections.abc import Callable
from typing import Any

import hostile_registrar
import pytest
import test_outbound_gruu as flow_scenarios
import test_registration as python_scenarios
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from registration_scripts import (
    CONTACT,
    REALM,
    SENT_BY,
    USER,
    Make,
    default_profile,
    make_registration,
    register,
    sent,
)

from sipload import _native
from sipload.sip import Request, Response, parse_message, response_to
from sipload.sip.digest import DigestClient
from sipload.sip.errors import ParseError
from sipload.sip.ids import IdSource
from sipload.sip.registration import _TABLE, Profile, RegEvent, RegInput, Registration, RegState
from sipload.sip.transaction import Timers

Outcome = tuple[str, Any]


def outcome(call: Callable[[], Any]) -> Outcome:
    """What a call gave: its value, or the exception's type and message."""
    try:
        return ("value", call())
    except Exception as e:
        return ("raised", (type(e).__name__, str(e)))


# What both machines show, read after every input (native attribute name, Python reading).
VIEWS: dict[str, Callable[[Registration], Any]] = {
    "state": lambda r: r.state.value,
    "cseq": lambda r: r.cseq,
    "next_timer": lambda r: r.next_timer(),
    "refresh_due": lambda r: r.refresh_due,
    "finished": lambda r: r.finished,
    "bound_until": lambda r: r.bound_until,
    "granted_expires": lambda r: r.granted_expires,
    "service_route": lambda r: r.service_route,
    "path": lambda r: r.path,
    "user": lambda r: r.user,
    "aor": lambda r: r.aor,
    "contact": lambda r: r.contact,
    "sent_by": lambda r: r.sent_by,
    "call_id": lambda r: r.call_id,
    "from_tag": lambda r: r.from_tag,
    "instance": lambda r: r.instance,
    "reg_id": lambda r: r.reg_id,
    "pub_gruu": lambda r: r.pub_gruu,
    "temp_gruu": lambda r: r.temp_gruu,
    "outbound_required": lambda r: r.outbound_required,
}


def native_view(native: _native.Registration, name: str) -> Any:
    value = getattr(native, name)
    return value() if name == "next_timer" else value


class Twin:
    """A Python and a native registration machine driven together, compared after every input.

    It has the Python machine's interface (what the scripts of tests/registration_scripts.py use) and answers
    with the Python machine's values once both agree; the datagrams and events both produced are kept until
    `take_outgoing` / `take_events`.
    """

    def __init__(self, py: Registration, native: _native.Registration) -> None:
        self.py = py
        self.native = native
        self.steps = 0
        self._outgoing: list[bytes] = []
        self._events: list[RegEvent] = []
        self.compare("created")

    def compare(self, what: str) -> None:
        py_out, native_out = self.py.take_outgoing(), self.native.take_outgoing()
        assert native_out == py_out, f"after {what}: datagrams differ"
        py_events, native_events = self.py.take_events(), self.native.take_events()
        assert native_events == py_events, f"after {what}: events differ"
        for py_event, native_event in zip(py_events, native_events, strict=True):  # field by field, types too
            assert type(native_event) is type(py_event)
            assert [(k, type(v)) for k, v in vars_of(native_event)] == [(k, type(v)) for k, v in vars_of(py_event)]
        self._outgoing += py_out
        self._events += py_events
        for name, read in VIEWS.items():
            assert native_view(self.native, name) == read(self.py), f"after {what}: {name} differs"
        self.steps += 1

    def _both(self, what: str, py_call: Callable[[Registration], Any],
              native_call: Callable[[_native.Registration], Any]) -> Any:
        raised: list[Exception] = []

        def python() -> Any:
            try:
                return py_call(self.py)
            except Exception as e:
                raised.append(e)
                raise

        expected = outcome(python)
        got = outcome(lambda: native_call(self.native))
        assert got == expected, f"{what}: native {got} != python {expected}"
        self.compare(what)
        if raised:
            raise raised[0]  # the Python machine's, for the script
        return expected[1]

    # --- inputs -----------------------------------------------------------------------------
    def start(self, now: float) -> None:
        self._both(f"start({now})", lambda r: r.start(now), lambda r: r.start(now))

    def stop(self, now: float) -> None:
        self._both(f"stop({now})", lambda r: r.stop(now), lambda r: r.stop(now))

    def handle_timer(self, now: float) -> None:
        self._both(f"handle_timer({now})", lambda r: r.handle_timer(now), lambda r: r.handle_timer(now))

    def transport_error(self, now: float) -> None:
        self._both(f"transport_error({now})", lambda r: r.transport_error(now), lambda r: r.transport_error(now))

    def flow_failed(self, now: float) -> None:
        self._both(f"flow_failed({now})", lambda r: r.flow_failed(now), lambda r: r.flow_failed(now))

    def receive(self, response: Response, now: float, arrived: float | None = None) -> bool:
        return self.receive_bytes(response.to_bytes(), now, arrived)

    def receive_bytes(self, data: bytes, now: float, arrived: float | None = None) -> bool:
        """A datagram to both: parsed by each machine's own parser; False if it parses as no response."""
        py_msg = outcome(lambda: parse_message(data))
        native_msg = outcome(lambda: _native.parse_message(data))
        assert (py_msg[0], native_msg[0]) in (("value", "value"), ("raised", "raised")), (py_msg, native_msg)
        if py_msg[0] == "raised":
            assert native_msg == py_msg
            return False
        if not isinstance(py_msg[1], Response):
            return False
        result: bool = self._both(f"receive({data[:40]!r}..., {now}, {arrived})",
                                  lambda r: r.receive(py_msg[1], now, arrived),
                                  lambda r: r.receive(native_msg[1], now, arrived))
        return result

    def _dispatch(self, inp: RegInput, response: Response | None, now: float) -> None:
        data = None if response is None else response.to_bytes()
        py_msg = None if data is None else parse_message(data)
        native_msg = None if data is None else _native.parse_message(data)
        assert py_msg is None or isinstance(py_msg, Response)
        self._both(f"_dispatch({inp.value})", lambda r: r._dispatch(inp, py_msg, now),
                   lambda r: r._dispatch(inp.value, native_msg, now))

    # --- outputs (the Python machine's, once both agreed) -----------------------------------
    def take_outgoing(self) -> list[bytes]:
        out, self._outgoing = self._outgoing, []
        return out

    def take_events(self) -> list[RegEvent]:
        out, self._events = self._events, []
        return out

    def next_timer(self) -> float | None:
        return self.py.next_timer()

    def __getattr__(self, name: str) -> Any:  # state, refresh_due, profile, bound_until...: compared already
        return getattr(self.py, name)


def vars_of(event: RegEvent) -> list[tuple[str, Any]]:
    return [(name, getattr(event, name)) for name in event.__slots__]


def native_for(profile: Profile, *, password: str | None = "pw-alice", seed: int = 1, user: str = USER,
               contact: str = CONTACT, sent_by: str = SENT_BY, **kw: Any) -> _native.Registration:
    auth = {} if password is None else {"auth_user": user, "password": password}
    return _native.Registration(profile, user=user, contact=contact, sent_by=sent_by, seed=seed, **auth, **kw)


def make_twin(profile: Profile | None = None, password: str = "pw-alice", seed: int = 1) -> Twin:
    """`make_registration`'s twin: the same machine, Python and native."""
    profile = profile or default_profile()
    return Twin(make_registration(profile, password, seed), native_for(profile, password=password, seed=seed))


def twin_of(profile: Profile, *, password: str | None = "pw-alice", seed: int = 1, instance: str | None = None,
            reg_id: int = 1) -> Twin:
    ids = IdSource(random.Random(seed))
    auth = None if password is None else DigestClient(USER, password, cnonce=ids.cnonce)
    py = Registration(profile, user=USER, contact=CONTACT, sent_by=SENT_BY, auth=auth, ids=ids, instance=instance,
                      reg_id=reg_id)
    return Twin(py, native_for(profile, password=password, seed=seed, instance=instance, reg_id=reg_id))


@pytest.fixture(scope="module")
def make() -> Make:
    return make_twin


# --- every scenario of tests/test_registration.py that takes `make`, on both machines -------------------
for _name, _test in vars(python_scenarios).items():
    if _name.startswith("test_") and "make" in inspect.signature(_test).parameters:
        globals()[_name] = _test


def test_the_scenarios_of_test_registration_run_here() -> None:
    shared = {n for n in globals() if n.startswith("test_")}
    assert "test_every_entry_leads_to_the_next_state_it_lists" in shared
    assert "test_random_response_sequences_keep_the_invariants" in shared
    assert "test_total_loss_times_out_with_bounded_retries" in shared


# --- the outbound / GRUU scenarios of tests/test_outbound_gruu.py (their `make` replaced by a twin's) --------
python_flow_make = flow_scenarios.make


def make_flow_twin(*, user: str = "alice", seed: int = 1, instance: str | None = None, reg_id: int = 1,
                   **kw: Any) -> Twin:
    try:
        py = python_flow_make(user=user, seed=seed, instance=instance, reg_id=reg_id, **kw)
    except ValueError as e:  # a bad instance or reg_id: refused alike
        profile = Profile(domain=REALM, registrar_uri=f"sip:{REALM}", outbound=kw.get("outbound", False),
                          gruu=kw.get("gruu", False))
        with pytest.raises(ValueError) as refused:
            native_for(profile, seed=seed, instance=instance, reg_id=reg_id)
        assert str(refused.value) == str(e)
        raise
    native = native_for(py.profile, password=f"pw-{user}", seed=seed, user=user, contact=py.contact,
                        sent_by=py.sent_by, instance=instance, reg_id=reg_id)
    return Twin(py, native)


def flow_scenarios_cases() -> list[Any]:
    """Every test of test_outbound_gruu.py that makes a machine, each case of a parametrized one."""
    cases = []
    for name, test in vars(flow_scenarios).items():
        if not name.startswith("test_") or "make(" not in inspect.getsource(test):
            continue
        params = set(inspect.signature(test).parameters)
        marks = [m for m in getattr(test, "pytestmark", []) if m.name == "parametrize"]
        if not params:
            cases.append(pytest.param(name, {}, id=name))
        elif len(marks) == 1 and params == {marks[0].args[0]}:
            cases += [pytest.param(name, {marks[0].args[0]: v}, id=f"{name}[{v}]") for v in marks[0].args[1]]
    return cases


@pytest.mark.parametrize(("name", "args"), flow_scenarios_cases())
def test_outbound_and_gruu_scenarios(name: str, args: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flow_scenarios, "make", make_flow_twin)
    getattr(flow_scenarios, name)(**args)


def test_the_table_is_pythons() -> None:
    expected = [(s.value, i.value, handler, tuple(n.value for n in nexts))
                for (s, i), (handler, nexts) in _TABLE.items()]
    assert _native.Registration.table() == expected


def test_a_twin_sees_a_difference() -> None:
    """The comparison can fail: two machines with other seeds differ at once (their Call-IDs)."""
    profile = default_profile()
    with pytest.raises(AssertionError, match="call_id differs"):
        Twin(make_registration(profile, seed=1), native_for(profile, seed=2))


# --- what the Python machine raises, the native one raises --------------------------------------------
def test_a_second_start_is_the_same_protocol_error() -> None:
    twin = make_twin()
    twin.start(0.0)
    with pytest.raises(Exception, match="no transition for start in registering"):
        twin.start(1.0)


def test_a_200_whose_service_route_does_not_split_is_the_same_parse_error() -> None:
    # Python raises ParseError out of receive() here, the binding set and no timer left: the engine counts
    # an internal error and the endpoint stays REGISTERING (reported; the native machine does the same).
    twin = make_twin()
    twin.start(0.0)
    resp = response_to(sent(twin), 200)
    resp.headers.add("Contact", f"<{CONTACT}>;expires=60")
    resp.headers.add("Service-Route", '<sip:a;lr>, "unterminated')
    with pytest.raises(ParseError):
        twin.receive(resp, 0.1)
    assert twin.state is RegState.REGISTERING and twin.next_timer() is None


def test_a_challenge_without_credentials_and_an_unanswerable_one() -> None:
    twin = twin_of(default_profile(), password=None)
    twin.start(0.0)
    resp = response_to(sent(twin), 407)
    resp.headers.add("Proxy-Authenticate", f'Digest realm="{REALM}", nonce="n"')
    twin.receive(resp, 0.0)
    assert [e.detail for e in twin.take_events() if hasattr(e, "detail")] == ["challenged, no credentials"]
    twin = make_twin()
    twin.start(0.0)
    resp = response_to(sent(twin), 401)
    resp.headers.add("WWW-Authenticate", 'Digest realm="x", nonce="n", algorithm=ROT13, Digest realm="y", nonce="m", '
                                         'algorithm=MD5, qop="auth-conf"')
    twin.receive(resp, 0.0)
    assert twin.take_events()[-1].detail == "no digest challenge we can answer (offered: ROT13, MD5)"


# --- the hostile registrar ------------------------------------------------------------------------------
def run_against(twin: Twin, answer: Callable[[bytes], list[hostile_registrar.Reply]], *, stop_at: float,
                end: float = 400.0) -> None:
    """The twin against a registrar on virtual time: its datagrams answered (with their delays), its timers
    fired, a stop at `stop_at`; until nothing is pending or `end`."""
    queue: list[tuple[float, int, bytes]] = []
    seq = 0
    now = 0.0
    twin.start(now)
    stopped = False
    for _ in range(2000):
        for data in twin.take_outgoing():
            for reply in answer(data):
                seq += 1
                heapq.heappush(queue, (now + reply.delay, seq, reply.data))
        candidates = [t for t in (queue[0][0] if queue else None, twin.next_timer(),
                                  None if stopped else stop_at) if t is not None]
        if not candidates or min(candidates) > end:
            return
        now = max(now, min(candidates))
        if queue and queue[0][0] <= now:
            _, _, data = heapq.heappop(queue)
            twin.receive_bytes(data, now, arrived=now)
        elif not stopped and stop_at <= now:
            stopped = True
            twin.stop(now)
        else:
            twin.handle_timer(now)
    raise AssertionError("the exchange did not end")


@pytest.mark.parametrize("case", sorted(hostile_registrar.CASES))
def test_hostile_registrar_cases(case: str) -> None:
    registrar = hostile_registrar.HostileRegistrar(case, late=40.0, flood=3)
    for stop_at in (0.05, 150.0):
        profile = Profile(domain=REALM, registrar_uri=f"sip:{REALM}", expires=60, max_retries=2)
        twin = make_twin(profile)
        run_against(twin, registrar.respond, stop_at=stop_at)
        assert twin.steps > 3


def test_every_datagram_of_the_hostile_corpus_as_the_answer_to_our_register() -> None:
    corpus = hostile_registrar.corpus_responses()
    assert len(corpus) > 30
    for name, data in corpus.items():
        for granted_now in (False, True):
            twin = make_twin(Profile(domain=REALM, registrar_uri=f"sip:{REALM}", expires=60, max_retries=1))
            if granted_now:  # the datagram answers a refresh
                register(twin, 0.0)
                twin.handle_timer(twin.refresh_due or 0.0)
            else:
                twin.start(0.0)
            req = sent(twin)
            assert req.branch is not None
            ours = (data.replace(hostile_registrar.CORPUS_BRANCH.encode(), req.branch.encode())
                    .replace(hostile_registrar.CORPUS_CALL_ID.encode(), req.call_id.encode())
                    .replace(b"CSeq: 1 REGISTER", f"CSeq: {req.cseq[0]} REGISTER".encode()))
            twin.receive_bytes(ours, 1.0, arrived=0.9)
            for _ in range(30):  # and whatever follows: retries, refreshes, timeouts
                deadline = twin.next_timer()
                if deadline is None:
                    break
                twin.handle_timer(deadline)
            twin.stop(500.0)
            assert twin.steps >= 3, name


# --- hypothesis: random step sequences -------------------------------------------------------------------
NONCES = ("bm9uY2Ux", "bm9uY2Uy")
INSTANCE = "urn:uuid:00000000-0000-4000-8000-000000000001"
CHALLENGES = {
    "md5": 'Digest realm="sipload.test", nonce="{n}", algorithm=MD5, qop="auth"',
    "md5-stale": 'Digest realm="sipload.test", nonce="{n}", algorithm=MD5, qop="auth", stale=true',
    "sha256-sess": 'Digest realm="sipload.test", nonce="{n}", algorithm=SHA-256-sess, qop="auth-int,auth", opaque="o"',
    "rfc2069": 'Digest realm="sipload.test", nonce="{n}"',
    "several": 'Digest realm="sipload.test", nonce="{n}", algorithm=MD5, Digest realm="sipload.test", nonce="{n}", '
               'algorithm=SHA-512-256, qop="auth"',
    "userhash": 'Digest realm="sipload.test", nonce="{n}", algorithm=SHA-256, qop="auth", userhash=true',
    "unsupported": 'Digest realm="sipload.test", nonce="{n}", algorithm=ROT13',
    "malformed": 'Digest realm="sipload.test, nonce="{n}"',
    "basic": 'Basic realm="x"',
    "not-utf8": 'Digest realm="host\udce8le", nonce="{n}", qop="auth"',
}
CONTACTS = {
    "param": f"<{CONTACT}>;expires={{e}}",
    "header": "Expires: {e}",
    "none": "",
    "other-case": "<sip:alice@127.0.0.1:5080;TRANSPORT=udp>;expires={e}, <sip:bob@x>;expires=5",
    "other": "<sip:bob@127.0.0.1:5080>;expires={e}",
    "absurd": f"<{CONTACT}>;expires=99999999999999",
    "unparseable": f"<{CONTACT};expires={{e}}",
    "flow": f'<sip:elsewhere@10.0.0.1>;+sip.instance="<{INSTANCE}>";reg-id=1;'
            'pub-gruu="sip:alice@sipload.test;gr=x";temp-gruu="sip:t@sipload.test;gr";expires={e}',
}

STATUSES = [100, 180, 200, 202, 401, 407, 403, 404, 408, 423, 480, 486, 500, 502, 503, 504, 603, 699]

response_step = st.tuples(
    st.just("respond"),
    st.sampled_from(STATUSES),
    st.sampled_from(sorted(CHALLENGES)),
    st.sampled_from(NONCES),
    st.sampled_from(sorted(CONTACTS)),
    st.sampled_from(["0", "1", "30", "60", "3600", "4294967296", "x"]),   # expires, Min-Expires, Retry-After
    st.sampled_from(["", "route", "bad-route", "require"]),
    st.sampled_from(["fresh", "stray-cseq", "stray-branch", "again"]),
    st.sampled_from(["before", "at-send", "at-now", "after-now", "unknown"]),   # when it reached the socket
)
other_step = st.tuples(st.sampled_from(["start", "stop", "timer", "late_timer", "transport_error", "flow_failed",
                                        "wait"]))
STEPS = st.lists(st.one_of(response_step, other_step), min_size=8, max_size=40)

PROFILES = st.builds(
    Profile,
    domain=st.just(REALM),
    registrar_uri=st.just(f"sip:{REALM}"),
    transport=st.sampled_from(["UDP", "TCP"]),
    expires=st.sampled_from([0, 30, 60, 3600]),
    refresh_at=st.sampled_from([0.5, 0.9]),
    refresh_jitter=st.sampled_from([0.0, 0.1]),
    timers=st.sampled_from([Timers(), Timers(t1=0.1, t2=0.4, t4=1.0)]),
    max_retries=st.integers(0, 3),
    retry_backoff=st.sampled_from([0.0, 1.0]),
    retry_backoff_max=st.sampled_from([0.5, 30.0]),
    route=st.sampled_from([None, "<sip:127.0.0.1:5070;lr>"]),
    unregister_all=st.booleans(),
    reuse_nonce=st.booleans(),
    max_retry_after=st.sampled_from([5.0, 3600.0]),
    outbound=st.booleans(),
    gruu=st.booleans(),
)


def response_for(req: Request, step: tuple[Any, ...], previous: bytes | None) -> bytes | None:
    _, status, chal, nonce, contact, number, extra, how, _arrived = step
    if how == "again":
        return previous
    resp = response_to(req, status, to_tag="t")
    if status in (401, 407):
        resp.headers.add("Proxy-Authenticate" if status == 407 else "WWW-Authenticate",
                         CHALLENGES[chal].format(n=nonce))
    if 200 <= status < 300 and CONTACTS[contact]:
        line = CONTACTS[contact].format(e=number)
        name, value = ("Expires", line[len("Expires: "):]) if line.startswith("Expires: ") else ("Contact", line)
        resp.headers.add(name, value)
    if status == 423:
        resp.headers.add("Min-Expires", number if number != "60" else "120")
    if status in (500, 503):
        resp.headers.add("Retry-After", number)
    if extra == "route":
        resp.headers.add("Service-Route", "<sip:orig@scscf.test;lr>, <sip:b@c;lr>")
        resp.headers.add("Path", "<sip:edge.test;lr>")
    elif extra == "bad-route":
        resp.headers.add("Path", '<sip:edge.test;lr>, "open')
    elif extra == "require":
        resp.headers.add("Require", "outbound")
    if how == "stray-cseq":
        resp.headers.set("CSeq", f"{req.cseq[0] + 1} REGISTER")
    elif how == "stray-branch":
        resp.headers.set("Via", f"SIP/2.0/UDP {SENT_BY};branch=z9hG4bKother;rport")
    return resp.to_bytes()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PROFILES, st.booleans(), st.sampled_from([None, INSTANCE]), st.integers(0, 2**64), STEPS)
def test_random_step_sequences_keep_both_machines_equal(profile: Profile, with_auth: bool, instance: str | None,
                                                        seed: int, steps: list[tuple[Any, ...]]) -> None:
    twin = twin_of(profile, password="pw-alice" if with_auth else None, seed=seed, instance=instance)
    now = 0.0
    twin.start(now)   # (a "start" step later is a ProtocolError on both)
    last: Request | None = None
    previous: bytes | None = None
    sent_at = now
    for step in steps:
        for data in twin.take_outgoing():
            req = parse_message(data)
            assert isinstance(req, Request)
            last, sent_at = req, now
        now += 0.01
        kind = step[0]
        try:
            if kind == "start":
                twin.start(now)
            elif kind == "stop":
                twin.stop(now)
            elif kind in ("timer", "late_timer"):
                deadline = twin.next_timer()
                if deadline is not None:
                    now = max(now, deadline + (7.3 if kind == "late_timer" else 0.0))
                    twin.handle_timer(now)
            elif kind == "wait":
                now += 100.0
                twin.handle_timer(now)
            elif kind == "transport_error":
                twin.transport_error(now)
            elif kind == "flow_failed":
                twin.flow_failed(now)
            elif last is not None:
                data = response_for(last, step, previous)
                if data is not None:
                    previous = data
                    arrived = {"before": sent_at - 0.5, "at-send": sent_at, "at-now": now, "after-now": now + 0.1,
                               "unknown": None}.get(step[-1], now - 0.004)
                    twin.receive_bytes(data, now, arrived=arrived)
        except Exception as e:
            assert type(e).__name__ in ("ProtocolError", "ParseError"), e


# --- hypothesis: what a 200 says about our binding (granted expiry, GRUUs, Require) -------------------------
CONTACT_PARAMS = st.lists(st.sampled_from([
    ";expires=30", ";expires=0", ";expires=99999999999", ";expires=x", ";expires", ";q=0.5",
    f';+sip.instance="<{INSTANCE}>"', f";+sip.instance=<{INSTANCE}>", ';+sip.instance="<urn:uuid:other>"',
    ';+sip.instance="unterminated', ";reg-id=1", ";reg-id=2", ";reg-id",
    ';pub-gruu="sip:alice@sipload.test;gr=urn:uuid:1"', ";pub-gruu=sip:p@g", ';temp-gruu="sip:t@g;gr"',
    ';temp-gruu=""', ';pub-gruu="bad\\', ]), max_size=4)
CONTACT_URIS = st.sampled_from([
    CONTACT, "sip:alice@127.0.0.1:5080", "sip:alice@127.0.0.1:5080;TRANSPORT=udp", "sip:ALICE@127.0.0.1:5080",
    "sip:alice@LOCALHOST:5080", "sip:alice@localhost:5080", "sip:alice@[::1]:5080", "sip:bob@127.0.0.1:5080",
    "sips:alice@127.0.0.1:5080",
    "tel:+1", "sip:alice@127.0.0.1:0", "sip:@127.0.0.1", "sip:alice@127.0.0.1:5080;a=\"b",
])
CONTACT_VALUES = st.builds(lambda uri, params, angle: (f"<{uri}>" if angle else uri) + "".join(params),
                           CONTACT_URIS, CONTACT_PARAMS, st.booleans())
MINE = st.sampled_from(["sip:alice@127.0.0.1:5080", CONTACT, "sip:alice@LOCALHOST:5080"])
REQUIRE = st.sampled_from([None, "outbound", "OutBound, gruu", '"x'])


@settings(max_examples=300, deadline=None)
@given(st.booleans(), st.booleans(), MINE, st.lists(st.lists(CONTACT_VALUES, min_size=1, max_size=3), max_size=3),
       st.sampled_from([None, "45", "x", "1 2", "4294967296"]), REQUIRE)
def test_what_a_200_grants_is_read_alike(outbound: bool, gruu: bool, mine: str, contacts: list[list[str]],
                                          expires: str | None, require: str | None) -> None:
    profile = Profile(domain=REALM, registrar_uri=f"sip:{REALM}", expires=60, outbound=outbound, gruu=gruu)
    ids = IdSource(random.Random(5))
    py = Registration(profile, user=USER, contact=mine, sent_by=SENT_BY, auth=None, ids=ids, instance=INSTANCE)
    twin = Twin(py, _native.Registration(profile, user=USER, contact=mine, sent_by=SENT_BY, seed=5, instance=INSTANCE))
    twin.start(0.0)
    resp = response_to(sent(twin), 200)
    for line in contacts:
        resp.headers.add("Contact", ", ".join(line))
    if expires is not None:
        resp.headers.add("Expires", expires)
    if require is not None:
        resp.headers.add("Require", require)
    try:
        twin.receive(resp, 0.5)
    except ParseError:
        assert require == '"x'  # Require that does not split: raised by both (compared)
