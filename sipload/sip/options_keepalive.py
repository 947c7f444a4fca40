"""OPTIONS keep-alives of one endpoint on UDP (NAT bindings, RFC 5626 §4.4 / RFC 3581), sans-IO.

Theory of operation
-------------------
An `OptionsKeepalive` pings the registrar every `interval` seconds with an OPTIONS request, the way
a phone behind a NAT keeps its binding open, and counts what came back. Like the registration
machine it reads no clock and owns no socket; every input carries `now` (seconds):

* `start(now)`: the first ping is due at `now + interval` (the REGISTER itself just opened the
  binding); `stop(now)`: no more pings, an outstanding one is forgotten (not counted);
* `receive(response, now)`: a response the engine matched to this machine by its Call-ID (each
  endpoint's keep-alive has its own Call-ID, never the registration's); False when it is not the
  answer to the ping in flight (CSeq, method, top Via branch);
* `handle_timer(now)`: the engine woke up at or after `next_timer()`.

It answers with datagrams (`take_outgoing()`) and events (`take_events()`).

One ping is in flight at a time. Each ping is a new transaction: a new branch, the CSeq one higher,
the same Call-ID and From tag; the Via asks for `rport` (RFC 3581) so that the answer tells the
address the registrar saw. On UDP the request is retransmitted as RFC 3261 Timer E does (T1,
doubling, capped at T2) until an answer comes or `timeout` passes; then the ping counts as
unanswered. Any final response counts as answered (a 404 or 405 still proves the flow is alive).
The next ping is due `interval` after the previous one was first sent, answered or not.

With `track_reflexive`, the answer's top Via `received` / `rport` (the reflexive address, RFC 5626
§4.4.2) is kept; a change from the previous answer is counted and reported (`ReflexiveChanged`):
the NAT rebound us, and an outbound UA would register again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sipload.sip.errors import ParseError
from sipload.sip.ids import IdSource
from sipload.sip.message import Response
from sipload.sip.transaction import Timers

Reflexive = tuple[str, int | None]
_TIMERS = Timers()


@dataclass(frozen=True, slots=True)
class PingAnswered:
    status: int
    sent_at: float            # the first send of this ping
    now: float


@dataclass(frozen=True, slots=True)
class PingUnanswered:
    sent_at: float
    now: float


@dataclass(frozen=True, slots=True)
class ReflexiveChanged:
    old: Reflexive
    new: Reflexive
    now: float


KeepaliveEvent = PingAnswered | PingUnanswered | ReflexiveChanged


class OptionsKeepalive:
    """OPTIONS pings of one endpoint; see the module docstring."""

    __slots__ = (
        "_branch",
        "_cseq",
        "_deadline",
        "_due",
        "_events",
        "_outgoing",
        "_pending",
        "_retransmit_at",
        "_retransmit_gap",
        "_sent_at",
        "answered",
        "aor",
        "call_id",
        "from_tag",
        "ids",
        "interval",
        "reflexive",
        "reflexive_changes",
        "reliable",
        "retransmissions",
        "sent",
        "sent_by",
        "target_uri",
        "timeout",
        "timers",
        "track_reflexive",
        "transport",
        "unanswered",
        "user_agent",
    )

    def __init__(
        self,
        *,
        target_uri: str,
        aor: str,
        sent_by: str,
        ids: IdSource,
        interval: float,
        timeout: float = 10.0,
        transport: str = "UDP",
        user_agent: str = "sipload",
        timers: Timers = _TIMERS,
        track_reflexive: bool = True,
    ) -> None:
        if not (math.isfinite(interval) and interval > 0):
            raise ValueError(f"interval: must be > 0 seconds, got {interval}")
        if not (math.isfinite(timeout) and 0 < timeout <= interval):
            raise ValueError(f"timeout: must be > 0 and at most the interval ({interval:g} s), got {timeout}")
        self.target_uri = target_uri          # Request-URI and To, e.g. "sip:sipload.test"
        self.aor = aor                        # From, e.g. "sip:user1@sipload.test"
        self.sent_by = sent_by                # Via sent-by, e.g. "127.0.0.1:5080"
        self.ids = ids
        self.interval = interval
        self.timeout = timeout
        self.transport = transport
        self.reliable = transport.upper() != "UDP"
        self.user_agent = user_agent
        self.timers = timers
        self.track_reflexive = track_reflexive
        self.call_id = ids.call_id()
        self.from_tag = ids.tag()
        # counters
        self.sent = 0                         # pings (first sends)
        self.retransmissions = 0
        self.answered = 0
        self.unanswered = 0
        self.reflexive_changes = 0
        self.reflexive: Reflexive | None = None  # from the last answer's top Via
        # state
        self._cseq = 0
        self._branch = ""
        self._due: float | None = None        # next ping
        self._pending = b""                   # the ping in flight (b"": none)
        self._sent_at = 0.0
        self._deadline = math.inf
        self._retransmit_at = math.inf
        self._retransmit_gap = 0.0
        self._outgoing: list[bytes] = []
        self._events: list[KeepaliveEvent] = []

    # --- inputs -------------------------------------------------------------------------------
    def start(self, now: float) -> None:
        if self._due is None and not self._pending:
            self._due = now + self.interval

    def stop(self, now: float) -> None:
        self._due = None
        self._pending = b""
        self._deadline = self._retransmit_at = math.inf

    def receive(self, response: Response, now: float) -> bool:
        """Feed a response matched by Call-ID; False when it does not answer the ping in flight."""
        if not self._pending:
            return False
        try:
            cseq, method = response.cseq
            branch = response.branch
        except ParseError:
            return False
        if cseq != self._cseq or method != "OPTIONS" or branch != self._branch:
            return False
        if response.status < 200:
            self._retransmit_gap = self.timers.t2  # RFC 3261 §17.1.2.2 Proceeding: retransmit every T2
            return True
        self._pending = b""
        self._deadline = self._retransmit_at = math.inf
        self.answered += 1
        self._events.append(PingAnswered(response.status, self._sent_at, now))
        if self.track_reflexive:
            self._note_reflexive(response, now)
        return True

    def next_timer(self) -> float | None:
        deadline = min(self._deadline, self._retransmit_at)
        if self._due is not None and self._due < deadline:
            deadline = self._due
        return None if deadline == math.inf else deadline

    def handle_timer(self, now: float) -> None:
        if self._pending:
            if self._deadline <= now:
                self._pending = b""
                self._deadline = self._retransmit_at = math.inf
                self.unanswered += 1
                self._events.append(PingUnanswered(self._sent_at, now))
            elif self._retransmit_at <= now:
                self._outgoing.append(self._pending)
                self.retransmissions += 1
                self._retransmit_gap = self.timers.next_e(self._retransmit_gap)
                self._retransmit_at = now + self._retransmit_gap
        if self._due is not None and self._due <= now and not self._pending:
            self._send(now)

    def take_outgoing(self) -> list[bytes]:
        out, self._outgoing = self._outgoing, []
        return out

    def take_events(self) -> list[KeepaliveEvent]:
        out, self._events = self._events, []
        return out

    @property
    def cseq(self) -> int:
        return self._cseq

    @property
    def in_flight(self) -> bool:
        return bool(self._pending)

    # --- internals ----------------------------------------------------------------------------
    def _send(self, now: float) -> None:
        self._cseq += 1
        self._branch = self.ids.branch()
        request = (
            f"OPTIONS {self.target_uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/{self.transport} {self.sent_by};branch={self._branch};rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <{self.aor}>;tag={self.from_tag}\r\n"
            f"To: <{self.target_uri}>\r\n"
            f"Call-ID: {self.call_id}\r\n"
            f"CSeq: {self._cseq} OPTIONS\r\n"
            f"Accept: application/sdp\r\n"
            f"User-Agent: {self.user_agent}\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        self._pending = request
        self._outgoing.append(request)
        self.sent += 1
        self._sent_at = now
        self._deadline = now + self.timeout
        if self.reliable:
            self._retransmit_at = math.inf
        else:
            self._retransmit_gap = self.timers.t1
            self._retransmit_at = now + self.timers.t1
        self._due = now + self.interval  # the cadence holds whatever the answer

    def _note_reflexive(self, response: Response, now: float) -> None:
        try:
            via = response.top_via
        except ParseError:
            return
        received = via.params.get("received") or via.host
        rport = via.params.get("rport")
        port = int(rport) if rport and rport.isascii() and rport.isdigit() and len(rport) <= 5 else via.port
        seen: Reflexive = (received, port)
        old = self.reflexive
        self.reflexive = seen
        if old is not None and old != seen:
            self.reflexive_changes += 1
            self._events.append(ReflexiveChanged(old, seen, now))
