"""The registration machine of one endpoint (RFC 3261 §10), sans-IO.

Theory of operation
-------------------
One `Registration` owns one binding: an AoR, a Contact and one Call-ID kept across every
refresh, with the CSeq rising by one per request. It is driven by three inputs, each carrying
`now` (seconds; no clock is read here):

* `start(now)` / `stop(now)`: begin registering; unregister (or give up) at the end of a run;
* `receive(response, now)`: a response the engine matched to this endpoint by Call-ID;
* `handle_timer(now)`: the engine woke up at or after `next_timer()`.

It answers with bytes to send (`take_outgoing()`) and events (`take_events()`), like h11 and
aioquic. Every request runs in a `NonInviteClientTransaction`, which owns retransmission (Timer E
on unreliable transports) and the timeout (Timer F).

The coarse behaviour is the table `_TRANSITIONS`: `(state, input) -> (handler, default next
state)`, in the style of h2's stream.py. Responses are classified into inputs first (CHALLENGE,
OK, TOO_BRIEF, RETRY, REJECT...). Handlers refine where the table cannot: a challenge after
credentials is answered again only when it says stale=true or when we had reused a cached nonce;
otherwise the credentials were rejected. An input with no entry raises ProtocolError.

Operations (`Op`) are the three phases measured by the engine: the initial REGISTER, each
REFRESH and the UNREGISTER. Each operation may take several requests (challenge, 423, retries
after 5xx / timeouts with bounded exponential backoff honouring Retry-After); the `Registered`,
`Unregistered` and `Failed` events carry the operation's start time and the send time of its
last request so the engine can record both the full operation and the authenticated leg.

The refresh is scheduled at a fraction of the granted expiry (from our Contact's expires
parameter, else the Expires header, else what we asked for), with jitter, and at least a margin
before the binding would expire.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from sipload.sip.digest import Challenge, DigestClient, choose_challenge, parse_challenges
from sipload.sip.errors import ParseError, ProtocolError
from sipload.sip.failures import FailureReason
from sipload.sip.headers import parse_delta, parse_uri
from sipload.sip.ids import IdSource
from sipload.sip.message import Response
from sipload.sip.transaction import NonInviteClientTransaction, Timers, TxAction, TxState


class RegState(enum.Enum):
    IDLE = "idle"
    REGISTERING = "registering"
    REGISTERED = "registered"
    REFRESHING = "refreshing"
    BACKOFF = "backoff"              # waiting to retry the current operation
    UNREGISTERING = "unregistering"
    UNREGISTERED = "unregistered"    # final: stopped, nothing bound
    FAILED = "failed"                # final: gave up (the reason is in the Failed event)


class Op(enum.Enum):
    REGISTER = "register"
    REFRESH = "refresh"
    UNREGISTER = "unregister"


class RegInput(enum.Enum):
    START = "start"
    STOP = "stop"
    PROVISIONAL = "provisional"      # 1xx
    OK = "ok"                        # 2xx
    CHALLENGE = "challenge"          # 401 / 407
    TOO_BRIEF = "too_brief"          # 423
    RETRY = "retry"                  # 5xx, 408, 480 and timeouts / transport errors: retry with backoff
    REJECT = "reject"                # any other final response
    REFRESH_TIMER = "refresh_timer"
    BACKOFF_TIMER = "backoff_timer"


@dataclass(frozen=True, slots=True)
class Profile:
    """What endpoints of one group share (one object for thousands of endpoints)."""

    domain: str                          # AoR host, e.g. "sipload.test"
    registrar_uri: str                   # Request-URI, e.g. "sip:sipload.test"
    transport: str = "UDP"               # Via transport token
    expires: int = 3600                  # requested
    refresh_at: float = 0.5              # fraction of the granted expiry
    refresh_jitter: float = 0.0          # +- fraction of the granted expiry
    refresh_margin: float = 2.0          # refresh at least this many seconds before expiry
    user_agent: str = "sipload"
    timers: Timers = field(default_factory=Timers)
    max_retries: int = 3                 # retries of one operation after a timeout / 5xx
    retry_backoff: float = 1.0           # first backoff, doubling
    retry_backoff_max: float = 30.0
    route: str | None = None             # outbound proxy, as a Route header value
    unregister_all: bool = False         # unregister with Contact: *
    reuse_nonce: bool = True             # refresh with the last challenge (nc+1) instead of waiting for a 401
    max_retry_after: float = 3600.0      # Retry-After values above this are capped

    @property
    def reliable(self) -> bool:
        return self.transport.upper() not in ("UDP",)


# --- events ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class OpStarted:
    """An operation sent its first request. `scheduled` is when it was due (a refresh's deadline)."""

    op: Op
    scheduled: float
    now: float


@dataclass(frozen=True, slots=True)
class Challenged:
    """The first request of an operation was challenged: the challenge phase (REGISTER -> 401)."""

    op: Op
    sent_at: float
    now: float


@dataclass(frozen=True, slots=True)
class Registered:
    op: Op                    # REGISTER or REFRESH
    expires: int              # granted
    started_at: float         # the operation's first request
    last_sent_at: float       # the request that got the 200 (the authenticated leg)
    now: float


@dataclass(frozen=True, slots=True)
class Unregistered:
    started_at: float
    last_sent_at: float
    now: float


@dataclass(frozen=True, slots=True)
class Failed:
    op: Op
    reason: FailureReason
    status: int | None
    started_at: float
    now: float
    final: bool               # False: a retry is scheduled; True: the operation gave up
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Retransmitted:
    op: Op


RegEvent = OpStarted | Challenged | Registered | Unregistered | Failed | Retransmitted

_MAX_STALE_RETRIES = 2
_RETRY_STATUSES = frozenset({408, 480, 500, 502, 503, 504})


def classify(status: int) -> RegInput:
    if status < 200:
        return RegInput.PROVISIONAL
    if status < 300:
        return RegInput.OK
    if status in (401, 407):
        return RegInput.CHALLENGE
    if status == 423:
        return RegInput.TOO_BRIEF
    if status in _RETRY_STATUSES:
        return RegInput.RETRY
    return RegInput.REJECT


def _reject_reason(status: int) -> FailureReason:
    if status == 403:
        return FailureReason.FORBIDDEN
    if status == 404:
        return FailureReason.NOT_FOUND
    if status >= 500:
        return FailureReason.SERVER_ERROR
    return FailureReason.UNEXPECTED_STATUS


Handler = Callable[["Registration", RegInput, "Response | None", float], None]
S = RegState
I = RegInput  # noqa: E741

# (state, input) -> handler name. Handlers set the next state themselves.
_TRANSITIONS: dict[tuple[RegState, RegInput], str] = {
    (S.IDLE, I.START): "_begin_register",
    (S.IDLE, I.STOP): "_stop_idle",
    (S.REGISTERED, I.REFRESH_TIMER): "_begin_refresh",
    (S.REGISTERED, I.STOP): "_begin_unregister",
    (S.BACKOFF, I.BACKOFF_TIMER): "_resend",
    (S.BACKOFF, I.STOP): "_stop_without_request",
    (S.FAILED, I.STOP): "_stop_without_request",
    (S.UNREGISTERED, I.STOP): "_ignore",
    (S.UNREGISTERING, I.STOP): "_ignore",
}
for _busy in (S.REGISTERING, S.REFRESHING, S.UNREGISTERING):
    _TRANSITIONS[(_busy, I.PROVISIONAL)] = "_ignore"
    _TRANSITIONS[(_busy, I.OK)] = "_on_ok"
    _TRANSITIONS[(_busy, I.CHALLENGE)] = "_on_challenge"
    _TRANSITIONS[(_busy, I.TOO_BRIEF)] = "_on_too_brief"
    _TRANSITIONS[(_busy, I.RETRY)] = "_on_retry"
    _TRANSITIONS[(_busy, I.REJECT)] = "_on_reject"
for _busy in (S.REGISTERING, S.REFRESHING):
    _TRANSITIONS[(_busy, I.STOP)] = "_defer_stop"
del _busy


class Registration:
    """The binding of one endpoint; see the module docstring."""

    __slots__ = (
        "_attempt_sent_at",
        "_auth",
        "_backoff_until",
        "_challenge",
        "_challenged_this_op",
        "_cseq",
        "_events",
        "_expires_requested",
        "_ids",
        "_op",
        "_op_started",
        "_outgoing",
        "_pending_request",
        "_refresh_due",
        "_retries",
        "_sent_credentials",
        "_stale_retries",
        "_stop_requested",
        "_tx",
        "_used_cached_nonce",
        "aor",
        "bound_until",
        "call_id",
        "contact",
        "from_tag",
        "granted_expires",
        "path",
        "profile",
        "sent_by",
        "service_route",
        "state",
        "user",
    )

    def __init__(
        self,
        profile: Profile,
        *,
        user: str,
        contact: str,
        sent_by: str,
        auth: DigestClient | None,
        ids: IdSource,
    ) -> None:
        self.profile = profile
        self.user = user
        self.aor = f"sip:{user}@{profile.domain}"
        self.contact = contact               # URI, e.g. "sip:user1@127.0.0.1:5080;transport=udp"
        self.sent_by = sent_by               # Via sent-by, e.g. "127.0.0.1:5080"
        self._auth = auth
        self._ids = ids
        self.call_id = ids.call_id()
        self.from_tag = ids.tag()
        self.state = RegState.IDLE
        self.granted_expires: int | None = None
        self.bound_until: float | None = None  # until when the registrar may hold our binding
        self.service_route: list[str] = []
        self.path: list[str] = []
        self._cseq = 0
        self._expires_requested = profile.expires
        self._op = Op.REGISTER
        self._op_started = 0.0
        self._attempt_sent_at = 0.0
        self._tx: NonInviteClientTransaction | None = None
        self._pending_request: bytes = b""
        self._challenge: Challenge | None = None
        self._challenged_this_op = False
        self._sent_credentials = False
        self._used_cached_nonce = False
        self._stale_retries = 0
        self._retries = 0
        self._refresh_due: float | None = None
        self._backoff_until: float | None = None
        self._stop_requested = False
        self._outgoing: list[bytes] = []
        self._events: list[RegEvent] = []

    # --- public inputs ----------------------------------------------------------------------
    def start(self, now: float) -> None:
        self._dispatch(RegInput.START, None, now)

    def stop(self, now: float) -> None:
        self._dispatch(RegInput.STOP, None, now)

    def receive(self, response: Response, now: float) -> bool:
        """Feed a response; False when it does not belong to the current request (stray, late)."""
        tx = self._tx
        if tx is None or tx.state in (TxState.COMPLETED, TxState.TERMINATED):
            return False
        try:
            cseq, method = response.cseq
        except ParseError:
            return False
        if cseq != self._cseq or method != "REGISTER":
            return False
        action = tx.receive_response(response.status, now)
        if action is TxAction.PASS_FINAL:
            self._tx = None
            self._dispatch(classify(response.status), response, now)
        return True

    def next_timer(self) -> float | None:
        deadline: float | None = None
        if self._tx is not None:
            deadline = self._tx.next_timer()
        for other in (self._refresh_due, self._backoff_until):
            if other is not None and (deadline is None or other < deadline):
                deadline = other
        return deadline

    def handle_timer(self, now: float) -> None:
        tx = self._tx
        if tx is not None:
            deadline = tx.next_timer()
            if deadline is not None and deadline <= now:
                for action in tx.handle_timer(now):
                    if action is TxAction.RETRANSMIT:
                        self._outgoing.append(self._pending_request)
                        self._events.append(Retransmitted(self._op))
                    elif action is TxAction.TIMEOUT:
                        self._tx = None
                        self._fail_or_retry(FailureReason.TIMEOUT, None, now)
                if tx.state is TxState.TERMINATED and self._tx is tx:
                    self._tx = None
        if self._refresh_due is not None and self._refresh_due <= now:
            self._dispatch(RegInput.REFRESH_TIMER, None, now)
        if self._backoff_until is not None and self._backoff_until <= now:
            self._backoff_until = None
            self._dispatch(RegInput.BACKOFF_TIMER, None, now)

    def transport_error(self, now: float) -> None:
        """The last send failed (connection refused, reset...)."""
        tx = self._tx
        if tx is None:
            return
        if tx.transport_error(now) is TxAction.TRANSPORT_FAILED:
            self._tx = None
            self._fail_or_retry(FailureReason.TRANSPORT_ERROR, None, now)

    def take_outgoing(self) -> list[bytes]:
        out, self._outgoing = self._outgoing, []
        return out

    def take_events(self) -> list[RegEvent]:
        out, self._events = self._events, []
        return out

    @property
    def refresh_due(self) -> float | None:
        return self._refresh_due

    @property
    def finished(self) -> bool:
        return self.state in (RegState.UNREGISTERED, RegState.FAILED) and self._tx is None

    @property
    def cseq(self) -> int:
        return self._cseq

    # --- the table --------------------------------------------------------------------------
    def _dispatch(self, inp: RegInput, response: Response | None, now: float) -> None:
        name = _TRANSITIONS.get((self.state, inp))
        if name is None:
            raise ProtocolError(
                f"registration of {self.user}: no transition for {inp.value} in {self.state.value}"
            )
        handler: Handler = getattr(Registration, name)
        handler(self, inp, response, now)

    # --- handlers -------------------------------------------------------------------------------
    def _ignore(self, inp: RegInput, response: Response | None, now: float) -> None:
        return

    def _begin_register(self, inp: RegInput, response: Response | None, now: float) -> None:
        self._begin_op(Op.REGISTER, RegState.REGISTERING, now)

    def _begin_refresh(self, inp: RegInput, response: Response | None, now: float) -> None:
        scheduled, self._refresh_due = self._refresh_due, None
        self._begin_op(Op.REFRESH, RegState.REFRESHING, now, scheduled)

    def _begin_unregister(self, inp: RegInput, response: Response | None, now: float) -> None:
        self._refresh_due = None
        self._begin_op(Op.UNREGISTER, RegState.UNREGISTERING, now)

    def _stop_idle(self, inp: RegInput, response: Response | None, now: float) -> None:
        self.state = RegState.UNREGISTERED

    def _defer_stop(self, inp: RegInput, response: Response | None, now: float) -> None:
        self._stop_requested = True

    def _stop_without_request(self, inp: RegInput, response: Response | None, now: float) -> None:
        """Stop while no request is in flight: unregister if the registrar may still hold us."""
        self._backoff_until = None
        self._refresh_due = None
        if self.bound_until is not None and self.bound_until > now:
            self._begin_op(Op.UNREGISTER, RegState.UNREGISTERING, now)
        elif self.state is not RegState.FAILED:
            self.state = RegState.UNREGISTERED

    def _resend(self, inp: RegInput, response: Response | None, now: float) -> None:
        self.state = RegState.REFRESHING if self._op is Op.REFRESH else (
            RegState.UNREGISTERING if self._op is Op.UNREGISTER else RegState.REGISTERING
        )
        self._send(now, credentials=self._next_credentials())

    def _on_ok(self, inp: RegInput, response: Response | None, now: float) -> None:
        assert response is not None
        if self._op is Op.UNREGISTER:
            self.bound_until = None
            self.granted_expires = None
            self.state = RegState.UNREGISTERED
            self._events.append(Unregistered(self._op_started, self._attempt_sent_at, now))
            return
        granted = self._granted_expiry(response)
        if granted <= 0:
            self._give_up(FailureReason.UNEXPECTED_STATUS, response.status, now,
                          "200 OK granted no expiry to our contact")
            return
        self.granted_expires = granted
        self.bound_until = now + granted
        self.service_route = response.headers.get_list("service-route")
        self.path = response.headers.get_list("path")
        self.state = RegState.REGISTERED
        self._events.append(Registered(self._op, granted, self._op_started, self._attempt_sent_at, now))
        if self._stop_requested:
            self._stop_requested = False
            self._begin_unregister(RegInput.STOP, None, now)
            return
        self._schedule_refresh(granted, now)

    def _on_challenge(self, inp: RegInput, response: Response | None, now: float) -> None:
        assert response is not None
        proxy = response.status == 407
        header = "proxy-authenticate" if proxy else "www-authenticate"
        try:
            challenges = parse_challenges(response.headers.get_all(header), proxy=proxy)
        except ParseError as exc:
            self._give_up(FailureReason.PARSE_ERROR, response.status, now, str(exc))
            return
        auth = self._auth
        if auth is None:
            self._give_up(FailureReason.AUTH_REJECTED, response.status, now, "challenged, no credentials")
            return
        if not self._sent_credentials and not self._challenged_this_op:
            self._events.append(Challenged(self._op, self._attempt_sent_at, now))
        if self._sent_credentials:
            # Credentials we sent were challenged again. That is normal when they came from a
            # cached nonce (it expired) or when the server says stale=true; otherwise rejected.
            stale = any(c.stale for c in challenges)
            if stale and self._stale_retries < _MAX_STALE_RETRIES:
                self._stale_retries += 1
            elif not self._used_cached_nonce:
                self._give_up(FailureReason.AUTH_REJECTED, response.status, now, "credentials rejected")
                return
        chosen = choose_challenge([c for c in challenges if auth.can_answer(c)], auth.preference)
        if chosen is None:
            names = ", ".join(c.algorithm_name for c in challenges) or "none"
            self._give_up(FailureReason.UNSUPPORTED_AUTH, response.status, now,
                          f"no digest challenge we can answer (offered: {names})")
            return
        self._challenged_this_op = True
        self._challenge = chosen
        self._send(now, credentials=auth.authorize(chosen, "REGISTER", self.profile.registrar_uri))

    def _on_too_brief(self, inp: RegInput, response: Response | None, now: float) -> None:
        assert response is not None
        try:
            minimum = parse_delta(response.headers.get("min-expires") or "", "Min-Expires")
        except ParseError:
            minimum = -1
        if minimum <= self._expires_requested or minimum > 2**31:
            self._give_up(FailureReason.INTERVAL_TOO_BRIEF, 423, now,
                          f"423 with Min-Expires {response.headers.get('min-expires')!r}")
            return
        self._expires_requested = minimum
        self._send(now, credentials=self._next_credentials())

    def _on_retry(self, inp: RegInput, response: Response | None, now: float) -> None:
        assert response is not None
        retry_after: float | None = None
        value = response.headers.get("retry-after")
        if value is not None:
            try:
                retry_after = min(float(parse_delta(value, "Retry-After")), self.profile.max_retry_after)
            except ParseError:
                retry_after = None
        reason = FailureReason.TIMEOUT if response.status == 408 else FailureReason.SERVER_ERROR
        self._fail_or_retry(reason, response.status, now, retry_after=retry_after)

    def _on_reject(self, inp: RegInput, response: Response | None, now: float) -> None:
        assert response is not None
        self._give_up(_reject_reason(response.status), response.status, now,
                      f"{response.status} {response.reason}")

    # --- helpers ----------------------------------------------------------------------------
    def _begin_op(self, op: Op, state: RegState, now: float, scheduled: float | None = None) -> None:
        self._events.append(OpStarted(op, now if scheduled is None else scheduled, now))
        self._op = op
        self._op_started = now
        self._retries = 0
        self._challenged_this_op = False
        self._stale_retries = 0
        if op is not Op.REFRESH:
            self._expires_requested = self.profile.expires
        self.state = state
        self._send(now, credentials=self._next_credentials())

    def _next_credentials(self) -> tuple[str, str] | None:
        """Credentials for a new request of this operation: the cached challenge with nc+1."""
        if self._auth is None or self._challenge is None or not self.profile.reuse_nonce:
            return None
        return self._auth.authorize(self._challenge, "REGISTER", self.profile.registrar_uri)

    def _send(self, now: float, credentials: tuple[str, str] | None = None) -> None:
        self._cseq += 1
        self._sent_credentials = credentials is not None
        self._used_cached_nonce = credentials is not None and not self._challenged_this_op
        request = self._build(credentials)
        self._pending_request = request
        self._attempt_sent_at = now
        self._tx = NonInviteClientTransaction(now, reliable=self.profile.reliable, timers=self.profile.timers)
        self._outgoing.append(request)

    def _build(self, credentials: tuple[str, str] | None) -> bytes:
        p = self.profile
        unregister = self._op is Op.UNREGISTER
        expires = 0 if unregister else self._expires_requested
        contact = "*" if unregister and p.unregister_all else f"<{self.contact}>"
        lines = [
            f"REGISTER {p.registrar_uri} SIP/2.0",
            f"Via: SIP/2.0/{p.transport} {self.sent_by};branch={self._ids.branch()};rport",
            "Max-Forwards: 70",
        ]
        if p.route is not None:
            lines.append(f"Route: {p.route}")
        lines += [
            f"From: <{self.aor}>;tag={self.from_tag}",
            f"To: <{self.aor}>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self._cseq} REGISTER",
            f"Contact: {contact}",
            f"Expires: {expires}",
        ]
        if credentials is not None:
            lines.append(f"{credentials[0]}: {credentials[1]}")
        lines += [f"User-Agent: {p.user_agent}", "Content-Length: 0", "", ""]
        return "\r\n".join(lines).encode()

    def _granted_expiry(self, response: Response) -> int:
        """Our contact's expires param in the 200, else the Expires header, else what we asked."""
        try:
            contacts = response.contacts() or []
            ours = _contact_key(self.contact)
            for addr in contacts:
                if _contact_key(addr.uri) == ours:
                    value = addr.params.get("expires")
                    if value is not None and value.isdigit():
                        return int(value)
                    break
            header = response.expires()
        except ParseError:
            header = None
        return header if header is not None else self._expires_requested

    def _schedule_refresh(self, granted: int, now: float) -> None:
        p = self.profile
        delay = granted * p.refresh_at
        if p.refresh_jitter:
            delay += self._ids.uniform(-p.refresh_jitter, p.refresh_jitter) * granted
        delay = min(delay, granted - p.refresh_margin)
        self._refresh_due = now + max(delay, min(granted * 0.5, 1.0))

    def _give_up(self, reason: FailureReason, status: int | None, now: float, detail: str = "") -> None:
        self._fail_or_retry(reason, status, now, final=True, detail=detail)

    def _fail_or_retry(self, reason: FailureReason, status: int | None, now: float, *,
                       final: bool = False, retry_after: float | None = None, detail: str = "") -> None:
        """Retry the operation after a backoff, or give up on it (bounded by max_retries)."""
        p = self.profile
        stopping = self._stop_requested and self._op is not Op.UNREGISTER
        if not final and not stopping and self._retries < p.max_retries:
            self._retries += 1
            backoff = min(p.retry_backoff * (2 ** (self._retries - 1)), p.retry_backoff_max)
            delay = retry_after if retry_after is not None else backoff
            self._events.append(Failed(self._op, reason, status, self._op_started, now, False, detail))
            self._backoff_until = now + delay
            self.state = RegState.BACKOFF
            return
        self._events.append(Failed(self._op, reason, status, self._op_started, now, True, detail))
        self.state = RegState.FAILED
        if self._op is Op.UNREGISTER:
            return  # we tried; the registrar expires the binding on its own
        if self._stop_requested:
            self._stop_requested = False
            self._stop_without_request(RegInput.STOP, None, now)


def _contact_key(uri: str) -> tuple[str | None, str, int | None]:
    try:
        parsed = parse_uri(uri)
    except ParseError:
        return (uri, "", None)
    return (parsed.user, parsed.host.lower(), parsed.port)
