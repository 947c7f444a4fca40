"""The registration machine's scripts: a machine, the requests it sent, the registrar's answers, and every
entry of its table reached through real inputs (`reach`, `feed`, `CASES`).

tests/test_registration.py drives the Python machine with them; tests/test_native_registration.py drives the
Python and the native machine together with the same ones (its `make` builds both).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from sipload.sip import Request, Response, parse_message, response_to
from sipload.sip.digest import DigestClient, DigestServer, parse_credentials
from sipload.sip.ids import IdSource
from sipload.sip.registration import Profile, RegInput, Registration, RegState

S, I = RegState, RegInput  # noqa: E741

REALM = "sipload.test"
SERVER = DigestServer(REALM, b"secret", nonce_lifetime=300.0)
USER = "alice"
CONTACT = "sip:alice@127.0.0.1:5080;transport=udp"
SENT_BY = "127.0.0.1:5080"

Make = Callable[..., Registration]   # make_registration's signature: (profile, password, seed)


def default_profile() -> Profile:
    return Profile(domain=REALM, registrar_uri=f"sip:{REALM}", expires=60)


def make_registration(profile: Profile | None = None, password: str = "pw-alice", seed: int = 1) -> Registration:
    ids = IdSource(random.Random(seed))
    auth = DigestClient("alice", password, cnonce=ids.cnonce)
    return Registration(
        profile or default_profile(),
        user=USER,
        contact=CONTACT,
        sent_by=SENT_BY,
        auth=auth,
        ids=ids,
    )


def sent(reg: Registration) -> Request:
    out = reg.take_outgoing()
    assert len(out) == 1, out
    msg = parse_message(out[0])
    assert isinstance(msg, Request)
    return msg


def challenge(req: Request, now: float, stale: bool = False) -> Response:
    resp = response_to(req, 401, to_tag="srv")
    for value in SERVER.challenges(now, stale=stale):
        resp.headers.add("WWW-Authenticate", value)
    return resp


def ok(req: Request, expires: int | None = None, contact_expires: int | None = None) -> Response:
    resp = response_to(req, 200, to_tag="srv")
    if contact_expires is not None:
        resp.headers.add("Contact", f"<sip:alice@127.0.0.1:5080;transport=udp>;expires={contact_expires}")
    if expires is not None:
        resp.headers.add("Expires", str(expires))
    return resp


def verify(req: Request, now: float, password: str = "pw-alice") -> bool:
    value = req.headers.get("authorization")
    assert value is not None
    creds = parse_credentials(value)
    return SERVER.verify("REGISTER", creds, lambda u: password, now).value == "ok"


def register(reg: Registration, now: float = 0.0, granted: int = 60) -> Request:
    reg.start(now)
    first = sent(reg)
    assert "authorization" not in first.headers
    reg.receive(challenge(first, now), now + 0.001)
    second = sent(reg)
    assert verify(second, now)
    reg.receive(ok(second, contact_expires=granted), now + 0.002)
    return second


def reach(make: Make, state: RegState, twist: str = "") -> tuple[Registration, Request | None, float]:
    """A machine brought into `state` through real inputs; the request in flight (if any) and the time.

    twist (words joined by "+"): "last_try" no retry left; "stop" a stop already waits for the outcome;
    "refresh" / "unregister" the operation whose retry BACKOFF waits for; "refresh_failed" FAILED after
    a refresh that got a 503 and no retry, the binding still held; "expired" FAILED, no binding left;
    "refused" (read by `feed`) a challenge we cannot answer, a Min-Expires below what we asked."""
    profile = Profile(domain=REALM, registrar_uri=f"sip:{REALM}", expires=60,
                      max_retries=0 if twist in ("last_try", "refresh_failed") else 3)
    reg = make(profile)
    now = 0.0
    if state is S.IDLE:
        return reg, None, now
    if state is S.REGISTERING or (state is S.BACKOFF and twist not in ("refresh", "unregister")):
        reg.start(now)
        req = sent(reg)
    elif state is S.FAILED and twist in ("", "expired"):
        reg.start(now)
        reg.receive(response_to(sent(reg), 403), now)
        req = None
    else:
        register(reg, now, granted=600)
        now = 10.0
        if state is S.REGISTERED:
            return reg, None, now
        if state in (S.UNREGISTERING, S.UNREGISTERED) or twist == "unregister":
            reg.stop(now)
        else:  # REFRESHING, a refresh's BACKOFF, a refresh's FAILED
            due = reg.refresh_due
            assert due is not None
            now = due
            reg.handle_timer(now)
        req = sent(reg)
        if state is S.UNREGISTERED:
            reg.receive(ok(req), now)
            req = None
        elif state is S.FAILED:  # a refresh that failed for a reason that may pass: registers again later
            reg.receive(response_to(req, 503), now)
            req = None
    if state is S.BACKOFF:
        assert req is not None
        reg.receive(response_to(req, 503), now)
        req = None
    if "stop" in twist.split("+"):
        reg.stop(now)
    if twist == "expired":
        now += 3600.0
    assert reg.state is state, (reg.state, state, twist)
    reg.take_events()
    return reg, req, now


def feed(reg: Registration, inp: RegInput, req: Request | None, now: float, twist: str = "") -> None:
    """Input `inp` as the machine gets it: through start/stop/receive/handle_timer/transport_error."""
    if inp is I.START:
        reg.start(now)
    elif inp is I.STOP:
        reg.stop(now)
    elif inp is I.TIMEOUT:
        reg.handle_timer(now + 64 * reg.profile.timers.t1)  # Timer F (it wins over a due E)
    elif inp is I.TRANSPORT_ERROR:
        reg.transport_error(now)
    elif inp is I.REFRESH_TIMER:
        assert reg.refresh_due is not None
        reg.handle_timer(reg.refresh_due)
    elif inp is I.BACKOFF_TIMER:
        deadline = reg.next_timer()
        assert deadline is not None
        reg.handle_timer(deadline)
    else:
        assert req is not None
        if inp is I.PROVISIONAL:  # the transaction absorbs a 1xx: the table's row is reached only directly
            reg._dispatch(inp, response_to(req, 100), now)
            return
        resp = {
            I.OK: lambda: ok(req, contact_expires=0 if twist == "no_expiry" else 60),
            I.CHALLENGE: lambda: challenge(req, now),
            I.TOO_BRIEF: lambda: response_to(req, 423),
            I.RETRY: lambda: response_to(req, 503),
            I.REJECT: lambda: response_to(req, 403),
        }[inp]()
        refused = "refused" in twist.split("+")   # a challenge we cannot answer, a Min-Expires below ours
        if inp is I.CHALLENGE and refused:
            resp = response_to(req, 401)
            resp.headers.add("WWW-Authenticate", f'Digest realm="{REALM}", nonce="n1", algorithm=NO-SUCH-HASH')
        if inp is I.TOO_BRIEF:
            resp.headers.add("Min-Expires", "30" if refused else "120")
        assert reg.receive(resp, now)


# (state, input, twist) -> the next state: every pair of the table with its usual outcome, then the
# refinements the table lists (a stop waiting for the outcome, no retry left, no expiry granted...).
USUAL = {(S.FAILED, I.REFRESH_TIMER): "refresh_failed"}  # FAILED registers again only after a refresh
CASES: dict[tuple[RegState, RegInput, str], RegState] = {
    (S.IDLE, I.START, ""): S.REGISTERING,
    (S.IDLE, I.STOP, ""): S.UNREGISTERED,
    (S.REGISTERING, I.STOP, ""): S.REGISTERING,
    (S.REGISTERING, I.PROVISIONAL, ""): S.REGISTERING,
    (S.REGISTERING, I.OK, ""): S.REGISTERED,
    (S.REGISTERING, I.CHALLENGE, ""): S.REGISTERING,
    (S.REGISTERING, I.TOO_BRIEF, ""): S.REGISTERING,
    (S.REGISTERING, I.RETRY, ""): S.BACKOFF,
    (S.REGISTERING, I.REJECT, ""): S.FAILED,
    (S.REGISTERING, I.TIMEOUT, ""): S.BACKOFF,
    (S.REGISTERING, I.TRANSPORT_ERROR, ""): S.BACKOFF,
    (S.REGISTERED, I.REFRESH_TIMER, ""): S.REFRESHING,
    (S.REGISTERED, I.STOP, ""): S.UNREGISTERING,
    (S.REFRESHING, I.STOP, ""): S.REFRESHING,
    (S.REFRESHING, I.PROVISIONAL, ""): S.REFRESHING,
    (S.REFRESHING, I.OK, ""): S.REGISTERED,
    (S.REFRESHING, I.CHALLENGE, ""): S.REFRESHING,
    (S.REFRESHING, I.TOO_BRIEF, ""): S.REFRESHING,
    (S.REFRESHING, I.RETRY, ""): S.BACKOFF,
    (S.REFRESHING, I.REJECT, ""): S.FAILED,
    (S.REFRESHING, I.TIMEOUT, ""): S.BACKOFF,
    (S.REFRESHING, I.TRANSPORT_ERROR, ""): S.BACKOFF,
    (S.BACKOFF, I.BACKOFF_TIMER, ""): S.REGISTERING,
    (S.BACKOFF, I.STOP, ""): S.UNREGISTERED,
    (S.UNREGISTERING, I.STOP, ""): S.UNREGISTERING,
    (S.UNREGISTERING, I.PROVISIONAL, ""): S.UNREGISTERING,
    (S.UNREGISTERING, I.OK, ""): S.UNREGISTERED,
    (S.UNREGISTERING, I.CHALLENGE, ""): S.UNREGISTERING,
    (S.UNREGISTERING, I.TOO_BRIEF, ""): S.UNREGISTERING,
    (S.UNREGISTERING, I.RETRY, ""): S.BACKOFF,
    (S.UNREGISTERING, I.REJECT, ""): S.FAILED,
    (S.UNREGISTERING, I.TIMEOUT, ""): S.BACKOFF,
    (S.UNREGISTERING, I.TRANSPORT_ERROR, ""): S.BACKOFF,
    (S.UNREGISTERED, I.STOP, ""): S.UNREGISTERED,
    (S.FAILED, I.STOP, ""): S.FAILED,
    (S.FAILED, I.REFRESH_TIMER, "refresh_failed"): S.REFRESHING,
    # refinements
    (S.REGISTERING, I.OK, "stop"): S.UNREGISTERING,
    (S.REGISTERING, I.OK, "no_expiry"): S.FAILED,
    (S.REGISTERING, I.RETRY, "last_try"): S.FAILED,
    (S.REGISTERING, I.RETRY, "stop"): S.FAILED,
    (S.REGISTERING, I.TIMEOUT, "last_try"): S.FAILED,
    (S.REGISTERING, I.TRANSPORT_ERROR, "last_try"): S.FAILED,
    (S.REFRESHING, I.OK, "stop"): S.UNREGISTERING,
    (S.REFRESHING, I.OK, "no_expiry"): S.FAILED,
    (S.REFRESHING, I.RETRY, "last_try"): S.FAILED,
    (S.REFRESHING, I.RETRY, "stop"): S.UNREGISTERING,
    (S.REFRESHING, I.REJECT, "stop"): S.UNREGISTERING,
    (S.REFRESHING, I.TIMEOUT, "stop"): S.UNREGISTERING,
    (S.REFRESHING, I.TRANSPORT_ERROR, "stop"): S.UNREGISTERING,
    (S.REFRESHING, I.TRANSPORT_ERROR, "last_try"): S.FAILED,
    (S.BACKOFF, I.BACKOFF_TIMER, "refresh"): S.REFRESHING,
    (S.BACKOFF, I.BACKOFF_TIMER, "unregister"): S.UNREGISTERING,
    (S.BACKOFF, I.STOP, "refresh"): S.UNREGISTERING,
    (S.UNREGISTERING, I.RETRY, "last_try"): S.FAILED,
    (S.UNREGISTERING, I.TIMEOUT, "last_try"): S.FAILED,
    (S.UNREGISTERING, I.TRANSPORT_ERROR, "last_try"): S.FAILED,
    (S.REGISTERING, I.CHALLENGE, "refused"): S.FAILED,
    (S.REGISTERING, I.TOO_BRIEF, "refused"): S.FAILED,
    (S.REFRESHING, I.CHALLENGE, "refused"): S.FAILED,
    (S.REFRESHING, I.CHALLENGE, "refused+stop"): S.UNREGISTERING,
    (S.REFRESHING, I.TOO_BRIEF, "refused"): S.FAILED,
    (S.REFRESHING, I.TOO_BRIEF, "refused+stop"): S.UNREGISTERING,
    (S.REFRESHING, I.TIMEOUT, "last_try"): S.FAILED,
    (S.UNREGISTERING, I.CHALLENGE, "refused"): S.FAILED,
    (S.UNREGISTERING, I.TOO_BRIEF, "refused"): S.FAILED,
    (S.FAILED, I.STOP, "refresh_failed"): S.UNREGISTERING,
    (S.FAILED, I.STOP, "expired"): S.FAILED,
}
