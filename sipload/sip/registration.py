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

The machine is the table `_TABLE`: `(state, input) -> (handler, next states)`, in the style of
h2's stream.py and of `transaction.py`. It is the single source of truth: every state (`RegState`),
every input (`RegInput`), every handler (a method of that name) and every state an input may lead
to is written there, one row per pair, and nowhere else. `_dispatch(input)` looks the pair up (no
entry: `ProtocolError`), calls the handler, and sets the state the handler returned; the handler
may return only one of the states its row lists (anything else: `ProtocolError`, a bug). The first
listed is the usual outcome, the others are the refinements the row's comment explains (gave up
instead of retrying, unregistering because a stop waited for this outcome...). Handlers never set
the state themselves; helpers they share (`_begin_op`, `_fail_or_retry`, `_stop_without_request`)
return a state too.

Inputs come from four places: `start` / `stop` (START, STOP); a response, once the transaction
passes it up as final, classified by status (`classify`: OK, CHALLENGE, TOO_BRIEF, RETRY, REJECT;
a 1xx is absorbed by the transaction, PROVISIONAL is in the table for completeness); the
transaction's outcome without a response (TIMEOUT when Timer F fires, TRANSPORT_ERROR when a send
failed); and the machine's own deadlines (REFRESH_TIMER, BACKOFF_TIMER), fired by `handle_timer`.
Inside a handler the work is: build and queue a request (`_send`), append events, schedule a
deadline, read the 200 (`sipload.sip.granted`: the expiry, the flow's GRUUs). A
challenge after credentials is answered again only when it says stale=true or when we had reused a
cached nonce; otherwise the credentials were rejected.

Operations (`Op`) are the three phases measured by the engine: the initial REGISTER, each
REFRESH and the UNREGISTER. Each operation may take several requests (challenge, 423, retries
after 5xx / timeouts with bounded exponential backoff honouring Retry-After); the `Registered`,
`Unregistered` and `Failed` events carry the operation's start time and the send time of its
last request so the engine can record both the full operation and the authenticated leg.

A response counts only when its CSeq and top Via branch are those of the request in flight. A
refresh that failed for a reason that may pass (timeout, transport error, 5xx: the registrar may
have restarted) is tried again, as a new refresh, `retry_backoff_max` later; 423s are answered at
most twice per operation; a stop while waiting to retry counts the operation as interrupted.

The refresh is scheduled at a fraction of the granted expiry (from our Contact's expires
parameter, else the Expires header, else what we asked for), with jitter, and at least a margin
before the binding would expire.

RFC 5626 outbound and RFC 5627 GRUU are Profile options. With either, the endpoint has an
`instance` (`urn:uuid:...`, passed in or drawn from the IdSource) and its Contact carries
`;+sip.instance="<urn:uuid:...>"` (with outbound also `;reg-id=N`); `Supported:` lists `path, outbound`
and/or `gruu`. The 200 is then read for our binding (matched by instance and reg-id, else by URI):
`pub_gruu` / `temp_gruu` (RFC 5627 §5) and `outbound_required` (`Require: outbound`, RFC 5626 §6). The
unregister names the same instance and reg-id, so the registrar removes only this flow's binding.
Without the options the request bytes and the 200 fast path are exactly those of plain RFC 3261.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from sipload.sip.digest import Challenge, DigestClient, choose_challenge, parse_challenges
from sipload.sip.errors import ParseError, ProtocolError
from sipload.sip.failures import FailureReason
from sipload.sip.granted import Flow, granted_expiry, read_flow
from sipload.sip.headers import parse_delta
from sipload.sip.ids import IdSource
from sipload.sip.message import Response
from sipload.sip.transaction import NonInviteClientTransaction, Timers, TxAction, TxState


class RegState(enum.Enum):
    # Members are singletons compared by identity: hash them by identity too, in C (Enum.__hash__ is a
    # Python function, and the transition table is looked up by (state, input) on every message).
    __hash__ = object.__hash__

    IDLE = "idle"
    REGISTERING = "registering"
    REGISTERED = "registered"
    REFRESHING = "refreshing"
    BACKOFF = "backoff"              # waiting to retry the current operation
    UNREGISTERING = "unregistering"
    UNREGISTERED = "unregistered"    # final: stopped, nothing bound
    FAILED = "failed"                # final: gave up (the reason is in the Failed event)


class Op(enum.Enum):
    __hash__ = object.__hash__  # see RegState

    REGISTER = "register"
    REFRESH = "refresh"
    UNREGISTER = "unregister"


class RegInput(enum.Enum):
    __hash__ = object.__hash__  # see RegState

    START = "start"
    STOP = "stop"
    PROVISIONAL = "provisional"      # 1xx
    OK = "ok"                        # 2xx
    CHALLENGE = "challenge"          # 401 / 407
    TOO_BRIEF = "too_brief"          # 423
    RETRY = "retry"                  # 408, 480, 500, 502, 503, 504: retry with backoff
    REJECT = "reject"                # any other final response
    TIMEOUT = "timeout"              # the transaction's Timer F fired: no final response
    TRANSPORT_ERROR = "transport_error"  # the request could not be sent (refused, reset, flow failed)
    REFRESH_TIMER = "refresh_timer"  # the refresh is due (also: register again after a failed refresh)
    BACKOFF_TIMER = "backoff_timer"  # the wait before retrying the operation is over


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
    outbound: bool = False               # RFC 5626: +sip.instance + reg-id, Supported: path, outbound
    gruu: bool = False                   # RFC 5627: +sip.instance, Supported: gruu

    @property
    def reliable(self) -> bool:
        return self.transport.upper() not in ("UDP",)


# --- events ---------------------------------------------------------------------------------------
# Plain slotted dataclasses: one is built per request and response, and a frozen dataclass's __init__
# (object.__setattr__ per field) costs ~4x more. Treat them as values all the same.
@dataclass(slots=True)
class OpStarted:
    """An operation sent its first request. `scheduled` is when it was due (a refresh's deadline)."""

    op: Op
    scheduled: float
    now: float


@dataclass(slots=True)
class Challenged:
    """The first request of an operation was challenged: the challenge phase (REGISTER -> 401)."""

    op: Op
    sent_at: float
    now: float


@dataclass(slots=True)
class Registered:
    op: Op                    # REGISTER or REFRESH
    expires: int              # granted
    started_at: float         # the operation's first request
    last_sent_at: float       # the request that got the 200 (the authenticated leg)
    now: float


@dataclass(slots=True)
class Unregistered:
    started_at: float
    last_sent_at: float
    now: float


@dataclass(slots=True)
class Failed:
    op: Op
    reason: FailureReason
    status: int | None
    started_at: float
    now: float
    final: bool               # False: a retry is scheduled; True: the operation gave up
    detail: str = ""


@dataclass(slots=True)
class Retransmitted:
    op: Op


RegEvent = OpStarted | Challenged | Registered | Unregistered | Failed | Retransmitted

_MAX_STALE_RETRIES = 2
_MAX_BRIEF_RETRIES = 2       # 423s answered per operation
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


Handler = Callable[["Registration", "Response | None", float], RegState]
S = RegState
I = RegInput  # noqa: E741

# THE TABLE: (state, input) -> (handler, next states). The handler does the work and returns the next
# state; the first next state is where the input leads when nothing else happened, the others (if any)
# are the only ones the handler may choose instead, each for the reason in the comment. `_dispatch`
# refuses any other. A pair that is not here is a protocol error.
_TABLE: dict[tuple[RegState, RegInput], tuple[str, tuple[RegState, ...]]] = {
    (S.IDLE, I.START): ("_begin_register", (S.REGISTERING,)),
    (S.IDLE, I.STOP): ("_stop_idle", (S.UNREGISTERED,)),
    # REGISTERING: the initial REGISTER is in flight (nothing is bound yet). FAILED: gave up on it;
    # UNREGISTERING: the 200 came after a stop, which waited for it.
    (S.REGISTERING, I.STOP): ("_defer_stop", (S.REGISTERING,)),
    (S.REGISTERING, I.PROVISIONAL): ("_ignore", (S.REGISTERING,)),
    (S.REGISTERING, I.OK): ("_on_registered", (S.REGISTERED, S.UNREGISTERING, S.FAILED)),  # FAILED: no expiry
    (S.REGISTERING, I.CHALLENGE): ("_on_challenge", (S.REGISTERING, S.FAILED)),
    (S.REGISTERING, I.TOO_BRIEF): ("_on_too_brief", (S.REGISTERING, S.FAILED)),
    (S.REGISTERING, I.RETRY): ("_on_retry", (S.BACKOFF, S.FAILED)),  # FAILED: no retry left, or a stop waits
    (S.REGISTERING, I.REJECT): ("_on_reject", (S.FAILED,)),
    (S.REGISTERING, I.TIMEOUT): ("_on_timeout", (S.BACKOFF, S.FAILED)),
    (S.REGISTERING, I.TRANSPORT_ERROR): ("_on_transport_error", (S.BACKOFF, S.FAILED)),
    # REGISTERED: bound, the refresh is scheduled.
    (S.REGISTERED, I.REFRESH_TIMER): ("_begin_refresh", (S.REFRESHING,)),
    (S.REGISTERED, I.STOP): ("_begin_unregister", (S.UNREGISTERING,)),
    # REFRESHING: a refresh is in flight; as REGISTERING, and a stop that waited for a failure unregisters
    # when the registrar may still hold the binding (UNREGISTERING).
    (S.REFRESHING, I.STOP): ("_defer_stop", (S.REFRESHING,)),
    (S.REFRESHING, I.PROVISIONAL): ("_ignore", (S.REFRESHING,)),
    (S.REFRESHING, I.OK): ("_on_registered", (S.REGISTERED, S.UNREGISTERING, S.FAILED)),
    (S.REFRESHING, I.CHALLENGE): ("_on_challenge", (S.REFRESHING, S.FAILED, S.UNREGISTERING)),
    (S.REFRESHING, I.TOO_BRIEF): ("_on_too_brief", (S.REFRESHING, S.FAILED, S.UNREGISTERING)),
    (S.REFRESHING, I.RETRY): ("_on_retry", (S.BACKOFF, S.FAILED, S.UNREGISTERING)),
    (S.REFRESHING, I.REJECT): ("_on_reject", (S.FAILED, S.UNREGISTERING)),
    (S.REFRESHING, I.TIMEOUT): ("_on_timeout", (S.BACKOFF, S.FAILED, S.UNREGISTERING)),
    (S.REFRESHING, I.TRANSPORT_ERROR): ("_on_transport_error", (S.BACKOFF, S.FAILED, S.UNREGISTERING)),
    # BACKOFF: waiting to retry the operation; the retry goes back to the operation's own state.
    (S.BACKOFF, I.BACKOFF_TIMER): ("_resend", (S.REGISTERING, S.REFRESHING, S.UNREGISTERING)),
    (S.BACKOFF, I.STOP): ("_stop_at_rest", (S.UNREGISTERED, S.UNREGISTERING)),  # UNREGISTERING: may be bound
    # UNREGISTERING: the unregister is in flight; a stop changes nothing, a failure is final (the registrar
    # expires the binding on its own).
    (S.UNREGISTERING, I.STOP): ("_ignore", (S.UNREGISTERING,)),
    (S.UNREGISTERING, I.PROVISIONAL): ("_ignore", (S.UNREGISTERING,)),
    (S.UNREGISTERING, I.OK): ("_on_unregistered", (S.UNREGISTERED,)),
    (S.UNREGISTERING, I.CHALLENGE): ("_on_challenge", (S.UNREGISTERING, S.FAILED)),
    (S.UNREGISTERING, I.TOO_BRIEF): ("_on_too_brief", (S.UNREGISTERING, S.FAILED)),
    (S.UNREGISTERING, I.RETRY): ("_on_retry", (S.BACKOFF, S.FAILED)),
    (S.UNREGISTERING, I.REJECT): ("_on_reject", (S.FAILED,)),
    (S.UNREGISTERING, I.TIMEOUT): ("_on_timeout", (S.BACKOFF, S.FAILED)),
    (S.UNREGISTERING, I.TRANSPORT_ERROR): ("_on_transport_error", (S.BACKOFF, S.FAILED)),
    # UNREGISTERED: final.
    (S.UNREGISTERED, I.STOP): ("_ignore", (S.UNREGISTERED,)),
    # FAILED: final, except after a refresh that failed for a reason that may pass (register again).
    (S.FAILED, I.STOP): ("_stop_at_rest", (S.FAILED, S.UNREGISTERING)),  # UNREGISTERING: may be bound
    (S.FAILED, I.REFRESH_TIMER): ("_begin_refresh", (S.REFRESHING,)),
}

# The state of a request in flight of each operation (BACKOFF goes back to it).
_BUSY = {Op.REGISTER: S.REGISTERING, Op.REFRESH: S.REFRESHING, Op.UNREGISTER: S.UNREGISTERING}


class Registration:
    """The binding of one endpoint; see the module docstring."""

    __slots__ = (
        "_answered_at",
        "_attempt_sent_at",
        "_auth",
        "_backoff_until",
        "_branch",
        "_brief_retries",
        "_challenge",
        "_challenged_this_op",
        "_cseq",
        "_events",
        "_expires_requested",
        "_flow",
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
        "_tx_at",
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
        instance: str | None = None,
        reg_id: int = 1,
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
        # RFC 5626 / 5627 state, only with the options (one slot: a plain endpoint stays as small)
        self._flow: Flow | None = None
        if profile.outbound or profile.gruu:
            instance = instance if instance is not None else instance_urn(ids)
            self._flow = Flow(profile.outbound, profile.gruu, instance, reg_id)
        self._cseq = 0
        self._expires_requested = profile.expires
        self._op = Op.REGISTER
        self._op_started = 0.0
        self._attempt_sent_at = 0.0
        self._answered_at = 0.0
        self._tx: NonInviteClientTransaction | None = None
        # The send time of a request whose transaction has had no input yet. The transaction object
        # is only built when something other than its final response happens (a timer, a 1xx, a
        # transport error): a fresh transaction in Trying answers a final response with PASS_FINAL,
        # and its next timer is known, so the common case (request -> final response) needs none.
        self._tx_at: float | None = None
        self._pending_request: bytes = b""
        self._challenge: Challenge | None = None
        self._challenged_this_op = False
        self._sent_credentials = False
        self._used_cached_nonce = False
        self._stale_retries = 0
        self._brief_retries = 0  # 423s answered in this operation (bounded)
        self._branch = ""        # of the request in flight: a response must carry it
        self._retries = 0
        self._refresh_due: float | None = None
        self._backoff_until: float | None = None
        self._stop_requested = False
        self._outgoing: list[bytes] = []
        self._events: list[RegEvent] = []

    # --- RFC 5626 / 5627 -------------------------------------------------------------------
    @property
    def instance(self) -> str | None:
        """Our +sip.instance ("urn:uuid:..."), with outbound or GRUU."""
        return None if self._flow is None else self._flow.instance

    @property
    def reg_id(self) -> int | None:
        """Our reg-id, with outbound."""
        return None if self._flow is None else self._flow.reg_id

    @property
    def pub_gruu(self) -> str | None:
        """The public GRUU the last 200 gave our binding (RFC 5627 §5)."""
        return None if self._flow is None else self._flow.pub_gruu

    @property
    def temp_gruu(self) -> str | None:
        """The temporary GRUU the last 200 gave our binding."""
        return None if self._flow is None else self._flow.temp_gruu

    @property
    def outbound_required(self) -> bool:
        """The last 200 had `Require: outbound`: the registrar applied RFC 5626 to our flow (§6)."""
        return self._flow is not None and self._flow.outbound_required

    # --- public inputs ----------------------------------------------------------------------
    def start(self, now: float) -> None:
        self._dispatch(RegInput.START, None, now)

    def stop(self, now: float) -> None:
        self._dispatch(RegInput.STOP, None, now)

    def receive(self, response: Response, now: float, arrived: float | None = None) -> bool:
        """Feed a response; False when it does not belong to the current request (stray, late).

        `arrived`: when it reached the socket, if known (a kernel timestamp; not after `now`). The latencies
        in the events end then; the next request, its timers and the state take `now`, when it is handled.
        """
        tx = self._tx
        if tx is None:
            if self._tx_at is None:
                return False
        elif tx.state in (TxState.COMPLETED, TxState.TERMINATED):
            return False
        try:
            cseq, method = response.cseq
        except ParseError:
            return False
        if cseq != self._cseq or method != "REGISTER":
            return False
        via = response.headers.get("via")
        if via is None or self._branch not in via:  # forged, or another transaction's
            return False
        status = response.status
        if tx is None and 200 <= status <= 699:
            action = TxAction.PASS_FINAL  # what a transaction still in Trying answers to a final response
        else:
            action = self._transaction().receive_response(status, now)
        if action is TxAction.PASS_FINAL:
            self._answered_at = arrived if arrived is not None and self._attempt_sent_at <= arrived <= now else now
            self._tx = None
            self._tx_at = None
            self._pending_request = b""  # answered: never retransmitted (~600 bytes less per bound endpoint)
            self._dispatch(classify(status), response, now)
        return True

    def next_timer(self) -> float | None:
        deadline: float | None = None
        sent = self._tx_at
        if sent is not None:  # Timer E (unreliable) or F of a transaction that had no input yet
            deadline = self.profile.timers.first_deadline(sent, self.profile.reliable)
        elif self._tx is not None:
            deadline = self._tx.next_timer()
        for other in (self._refresh_due, self._backoff_until):
            if other is not None and (deadline is None or other < deadline):
                deadline = other
        return deadline

    def _transaction(self) -> NonInviteClientTransaction:
        """The current transaction, built now if it had no input yet (exactly as at its send time)."""
        tx = self._tx
        if tx is None:
            sent = self._tx_at
            assert sent is not None
            p = self.profile
            tx = self._tx = NonInviteClientTransaction(sent, reliable=p.reliable, timers=p.timers)
            self._tx_at = None
        return tx

    def handle_timer(self, now: float) -> None:
        if self._tx_at is not None:
            self._transaction()
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
                        self._dispatch(RegInput.TIMEOUT, None, now)
                if tx.state is TxState.TERMINATED and self._tx is tx:
                    self._tx = None
        if self._refresh_due is not None and self._refresh_due <= now:
            self._dispatch(RegInput.REFRESH_TIMER, None, now)
        if self._backoff_until is not None and self._backoff_until <= now:
            self._backoff_until = None
            self._dispatch(RegInput.BACKOFF_TIMER, None, now)

    def transport_error(self, now: float) -> None:
        """The last send failed (connection refused, reset...)."""
        if self._tx_at is not None:
            self._transaction()
        tx = self._tx
        if tx is None:
            return
        if tx.transport_error(now) is TxAction.TRANSPORT_FAILED:
            self._tx = None
            self._dispatch(RegInput.TRANSPORT_ERROR, None, now)

    def flow_failed(self, now: float) -> None:
        """The flow (connection) under this binding failed, e.g. a keep-alive pong never came.

        A request in flight fails as a transport error; a binding at rest is refreshed at once, so that
        the endpoint registers again on a new flow (RFC 5626 §4.4.1). Call `next_timer()` after it.
        """
        if self._tx is not None or self._tx_at is not None:
            self.transport_error(now)
        elif self.state is RegState.REGISTERED and self._refresh_due is not None:
            self._refresh_due = min(self._refresh_due, now)

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
        return self.state in (RegState.UNREGISTERED, RegState.FAILED) and self._tx is None and self._tx_at is None

    @property
    def cseq(self) -> int:
        return self._cseq

    # --- the table --------------------------------------------------------------------------
    def _dispatch(self, inp: RegInput, response: Response | None, now: float) -> None:
        entry = _HANDLERS.get((self.state, inp))
        if entry is None:
            raise ProtocolError(
                f"registration of {self.user}: no transition for {inp.value} in {self.state.value}"
            )
        handler, next_states = entry
        state = handler(self, response, now)
        if state not in next_states:  # a handler chose a state the table does not list: a bug here
            raise ProtocolError(
                f"registration of {self.user}: {inp.value} in {self.state.value} led to {state.value}, "
                f"the table allows {', '.join(n.value for n in next_states)}"
            )
        self.state = state

    # --- handlers: each returns the next state, one of those its table entry lists ---------------
    def _ignore(self, response: Response | None, now: float) -> RegState:
        return self.state

    def _begin_register(self, response: Response | None, now: float) -> RegState:
        return self._begin_op(Op.REGISTER, now)

    def _begin_refresh(self, response: Response | None, now: float) -> RegState:
        scheduled, self._refresh_due = self._refresh_due, None
        return self._begin_op(Op.REFRESH, now, scheduled)

    def _begin_unregister(self, response: Response | None, now: float) -> RegState:
        self._refresh_due = None
        return self._begin_op(Op.UNREGISTER, now)

    def _stop_idle(self, response: Response | None, now: float) -> RegState:
        return RegState.UNREGISTERED

    def _defer_stop(self, response: Response | None, now: float) -> RegState:
        self._stop_requested = True  # acted on when the request in flight has its outcome
        return self.state

    def _stop_at_rest(self, response: Response | None, now: float) -> RegState:
        return self._stop_without_request(self.state, now)

    def _resend(self, response: Response | None, now: float) -> RegState:
        self._send(now, credentials=self._next_credentials())
        return _BUSY[self._op]

    def _on_unregistered(self, response: Response | None, now: float) -> RegState:
        self.bound_until = None
        self.granted_expires = None
        if self._flow is not None:
            self._flow.pub_gruu = self._flow.temp_gruu = None
        self._events.append(Unregistered(self._op_started, self._attempt_sent_at, self._answered_at))
        return RegState.UNREGISTERED

    def _on_registered(self, response: Response | None, now: float) -> RegState:
        assert response is not None
        flow = self._flow
        requested = self._expires_requested
        granted = (granted_expiry(response, self.contact, requested) if flow is None
                   else read_flow(flow, response, self.contact, requested))
        if granted <= 0:
            return self._give_up(FailureReason.UNEXPECTED_STATUS, response.status, now,
                                 "200 OK granted no expiry to our contact")
        self.granted_expires = granted
        self.bound_until = now + granted
        self.service_route = response.headers.get_list("service-route")
        self.path = response.headers.get_list("path")
        self._events.append(Registered(self._op, granted, self._op_started, self._attempt_sent_at, self._answered_at))
        if self._stop_requested:
            self._stop_requested = False
            return self._begin_unregister(None, now)
        self._schedule_refresh(granted, now)
        return RegState.REGISTERED

    def _on_challenge(self, response: Response | None, now: float) -> RegState:
        assert response is not None
        proxy = response.status == 407
        header = "proxy-authenticate" if proxy else "www-authenticate"
        try:
            challenges = parse_challenges(response.headers.get_all(header), proxy=proxy)
        except ParseError as exc:
            return self._give_up(FailureReason.PARSE_ERROR, response.status, now, str(exc))
        auth = self._auth
        if auth is None:
            return self._give_up(FailureReason.AUTH_REJECTED, response.status, now, "challenged, no credentials")
        if not self._sent_credentials and not self._challenged_this_op:
            self._events.append(Challenged(self._op, self._attempt_sent_at, self._answered_at))
        if self._sent_credentials:
            # Credentials we sent were challenged again. That is normal when they came from a
            # cached nonce (it expired) or when the server says stale=true; otherwise rejected.
            stale = any(c.stale for c in challenges)
            if stale and self._stale_retries < _MAX_STALE_RETRIES:
                self._stale_retries += 1
            elif not self._used_cached_nonce:
                return self._give_up(FailureReason.AUTH_REJECTED, response.status, now, "credentials rejected")
        chosen = choose_challenge([c for c in challenges if auth.can_answer(c)], auth.preference)
        if chosen is None:
            names = ", ".join(c.algorithm_name for c in challenges) or "none"
            return self._give_up(FailureReason.UNSUPPORTED_AUTH, response.status, now,
                                 f"no digest challenge we can answer (offered: {names})")
        self._challenged_this_op = True
        self._challenge = chosen
        self._send(now, credentials=auth.authorize(chosen, "REGISTER", self.profile.registrar_uri))
        return self.state

    def _on_too_brief(self, response: Response | None, now: float) -> RegState:
        assert response is not None
        try:
            minimum = parse_delta(response.headers.get("min-expires") or "", "Min-Expires")
        except ParseError:
            minimum = -1
        self._brief_retries += 1  # a registrar raising Min-Expires forever must not loop
        if minimum <= self._expires_requested or minimum > 2**31 or self._brief_retries > _MAX_BRIEF_RETRIES:
            return self._give_up(FailureReason.INTERVAL_TOO_BRIEF, 423, now,
                                 f"423 with Min-Expires {response.headers.get('min-expires')!r}")
        self._expires_requested = minimum
        self._send(now, credentials=self._next_credentials())
        return self.state

    def _on_retry(self, response: Response | None, now: float) -> RegState:
        assert response is not None
        retry_after: float | None = None
        value = response.headers.get("retry-after")
        if value is not None:
            try:
                retry_after = min(float(parse_delta(value, "Retry-After")), self.profile.max_retry_after)
            except ParseError:
                retry_after = None
        reason = FailureReason.TIMEOUT if response.status == 408 else FailureReason.SERVER_ERROR
        return self._fail_or_retry(reason, response.status, now, retry_after=retry_after)

    def _on_reject(self, response: Response | None, now: float) -> RegState:
        assert response is not None
        return self._give_up(_reject_reason(response.status), response.status, now,
                             f"{response.status} {response.reason}")

    def _on_timeout(self, response: Response | None, now: float) -> RegState:
        return self._fail_or_retry(FailureReason.TIMEOUT, None, now)

    def _on_transport_error(self, response: Response | None, now: float) -> RegState:
        return self._fail_or_retry(FailureReason.TRANSPORT_ERROR, None, now)

    # --- helpers ----------------------------------------------------------------------------
    def _begin_op(self, op: Op, now: float, scheduled: float | None = None) -> RegState:
        """The first request of operation `op`; returns the operation's state (a request in flight)."""
        self._events.append(OpStarted(op, now if scheduled is None else scheduled, now))
        self._op = op
        self._op_started = now
        self._retries = 0
        self._challenged_this_op = False
        self._stale_retries = 0
        self._brief_retries = 0
        if op is not Op.REFRESH:
            self._expires_requested = self.profile.expires
        self._send(now, credentials=self._next_credentials())
        return _BUSY[op]

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
        self._tx = None
        self._tx_at = now  # the transaction is built only if it gets another input than its final response
        self._outgoing.append(request)

    def _build(self, credentials: tuple[str, str] | None) -> bytes:
        p = self.profile
        unregister = self._op is Op.UNREGISTER
        expires = 0 if unregister else self._expires_requested
        flow = self._flow
        contact = "*" if unregister and p.unregister_all else (
            f"<{self.contact}>" if flow is None else f"<{self.contact}>{flow.contact_params}")
        route = "" if p.route is None else f"Route: {p.route}\r\n"
        auth = "" if credentials is None else f"{credentials[0]}: {credentials[1]}\r\n"
        aor = self.aor
        branch = self._branch = self._ids.branch()
        return (
            f"REGISTER {p.registrar_uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/{p.transport} {self.sent_by};branch={branch};rport\r\n"
            f"Max-Forwards: 70\r\n{route}"
            f"From: <{aor}>;tag={self.from_tag}\r\n"
            f"To: <{aor}>\r\n"
            f"Call-ID: {self.call_id}\r\n"
            f"CSeq: {self._cseq} REGISTER\r\n"
            f"Contact: {contact}\r\n{'' if flow is None else flow.supported}"
            f"Expires: {expires}\r\n{auth}"
            f"User-Agent: {p.user_agent}\r\nContent-Length: 0\r\n\r\n"
        ).encode("utf-8", "surrogateescape")  # a challenge's non-UTF-8 bytes go back as they came

    def _schedule_refresh(self, granted: int, now: float) -> None:
        p = self.profile
        delay = granted * p.refresh_at
        if p.refresh_jitter:
            delay += self._ids.uniform(-p.refresh_jitter, p.refresh_jitter) * granted
        delay = min(delay, granted - p.refresh_margin)
        self._refresh_due = now + max(delay, min(granted * 0.5, 1.0))

    def _give_up(self, reason: FailureReason, status: int | None, now: float, detail: str = "") -> RegState:
        return self._fail_or_retry(reason, status, now, final=True, detail=detail)

    def _fail_or_retry(self, reason: FailureReason, status: int | None, now: float, *,
                       final: bool = False, retry_after: float | None = None, detail: str = "") -> RegState:
        """Retry the operation after a backoff (BACKOFF), or give up on it (bounded by max_retries): FAILED,
        or UNREGISTERING when a stop was waiting for this outcome and the registrar may hold a binding."""
        p = self.profile
        stopping = self._stop_requested and self._op is not Op.UNREGISTER
        if not final and not stopping and self._retries < p.max_retries:
            self._retries += 1
            backoff = min(p.retry_backoff * (2 ** (self._retries - 1)), p.retry_backoff_max)
            delay = retry_after if retry_after is not None else backoff
            self._events.append(Failed(self._op, reason, status, self._op_started, now, False, detail))
            self._backoff_until = now + delay
            return RegState.BACKOFF
        self._events.append(Failed(self._op, reason, status, self._op_started, now, True, detail))
        if self._op is Op.UNREGISTER:
            return RegState.FAILED  # we tried; the registrar expires the binding on its own
        if self._stop_requested:
            self._stop_requested = False
            return self._stop_without_request(RegState.FAILED, now)
        if self._op is Op.REFRESH and reason.may_pass:
            # the registrar went away (restarted?): register again after a backoff, as a
            # phone would; one operation at a time, until the run stops.
            self._refresh_due = now + max(p.retry_backoff_max, 1.0)
        return RegState.FAILED

    def _stop_without_request(self, state: RegState, now: float) -> RegState:
        """Stop in `state` (BACKOFF or FAILED) while no request is in flight: unregister if the registrar may
        still hold us (UNREGISTERING), else stay FAILED or end UNREGISTERED."""
        if state is RegState.BACKOFF and self._op is not Op.UNREGISTER:  # count it, once
            self._events.append(Failed(self._op, FailureReason.INTERRUPTED, None, self._op_started, now, True,
                                       "stopped while waiting to retry"))
        self._backoff_until = None
        self._refresh_due = None
        if self.bound_until is not None and self.bound_until > now:
            return self._begin_op(Op.UNREGISTER, now)
        return state if state is RegState.FAILED else RegState.UNREGISTERED


# The table with its handler names resolved (what `_dispatch` looks up).
_HANDLERS: dict[tuple[RegState, RegInput], tuple[Handler, tuple[RegState, ...]]] = {
    key: (getattr(Registration, name), next_states) for key, (name, next_states) in _TABLE.items()
}


def instance_urn(ids: IdSource) -> str:
    """A version-4 UUID URN drawn from `ids` (deterministic for a seeded source), RFC 5626 §4.1."""
    return uuid.UUID(int=int(ids.token(128), 16), version=4).urn
