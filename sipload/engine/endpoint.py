"""Where the sans-IO registration machine meets sockets, clocks and metrics.

An `Endpoint` is one simulated device: its `Registration` machine, where it sends, and the
intended times the engine measures against. `Endpoint.flush()` moves what the machine produced
out: datagrams to its transport, events to the recorder (as latencies per phase, from the
intended start and from the actual send), and its next deadline to the worker's timer heap.
No awaits happen here: sends are raw and non-blocking.

An endpoint may have several routes (one per destination, in failover order): when an
operation fails in a way that may pass (timeout, transport error, 5xx) it moves to the next one
for the retry (RFC 3263 §4.3). It also carries its group and its behaviour counters.

The endpoints of a group with NAT keep-alives, RFC 5626 outbound or RFC 5627 GRUU are
`FlowEndpoint`s, a subclass (`sipload.engine.flows`): a plain endpoint's `flush` (the hot path)
does no new work for them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from sipload.engine.transitions import UNREGISTERED, Transitions
from sipload.metrics.phases import Phase
from sipload.metrics.recorder import Recorder
from sipload.sip.digest import DigestClient
from sipload.sip.failures import FailureReason
from sipload.sip.registration import (
    Challenged,
    Failed,
    Op,
    OpStarted,
    Registered,
    Registration,
    RegState,
    Retransmitted,
    Unregistered,
)


class Route(Protocol):
    """One way to one destination: the local address it sends from, its send function, and the host:port
    Via and Contact carry (the local address, or the advertised one)."""

    @property
    def local(self) -> tuple[str, int]: ...

    @property
    def send(self) -> Callable[[bytes], object]: ...

    @property
    def key(self) -> int: ...

    @property
    def sent_by(self) -> str: ...


_PHASE = {Op.REGISTER: Phase.REGISTER, Op.REFRESH: Phase.REFRESH, Op.UNREGISTER: Phase.UNREGISTER}
_CHALLENGE_OPS = (Op.REGISTER,)


def _us(seconds: float) -> int:
    return int(seconds * 1_000_000) if seconds > 0 else 0


@dataclass(slots=True)
class Tally:
    """Counts a worker keeps beside the recorder (read at each interval)."""


    in_flight: int = 0        # initial registrations not yet answered
    retries: int = 0          # operations retried after a timeout / 5xx


class Endpoint:
    __slots__ = (
        "auth",
        "avalanches",
        "away",
        "deadline",
        "failovers",
        "failure",
        "flaps",
        "group",
        "index",
        "intended",
        "last_status",
        "op_intended",
        "refreshes",
        "reg",
        "registering",
        "registrations",
        "returned",
        "route",
        "routes",
        "send",
        "trace",
        "username",
        "vanished",
    )

    def __init__(self, index: int, username: str, reg: Registration, send: Callable[[bytes], object]) -> None:
        self.index = index
        self.username = username
        self.reg = reg
        self.send = send                 # the transport's send for this endpoint's destination
        self.intended = 0.0              # intended start of the initial registration (open-loop schedule)
        self.op_intended = 0.0           # intended start of the current operation
        self.deadline: float | None = None
        self.last_status: int | None = None
        self.failure: FailureReason | None = None
        self.registrations = 0
        self.refreshes = 0
        # fleets: group, routes (failover) and behaviours
        self.group = 0                   # index into the fleet plan's groups
        self.auth: DigestClient | None = None
        self.routes: Sequence[Route] = ()  # one per destination, in failover order; () = only `send`
        self.route = 0                   # the route in use
        self.failovers = 0
        self.registering = False         # an initial registration is in flight (counted in Tally.in_flight)
        self.away = False                # churn: off the network
        self.vanished = 0
        self.returned = 0
        self.flaps = 0
        self.avalanches = 0
        self.trace: Transitions | None = None   # only when the run watches provider events

    def sent_by_for(self, k: int) -> str:
        return self.routes[k].sent_by

    def contact_for(self, k: int, reg: Registration) -> str:
        """The contact the endpoint registers with over route k (a stream's local port differs)."""
        return reg.contact.replace(reg.sent_by, self.sent_by_for(k), 1) if self.routes else reg.contact

    def move_to(self, k: int) -> None:
        """Send over route k from now on (the Via and Contact follow a stream's local address)."""
        reg = self.reg
        sent_by = self.sent_by_for(k)
        if sent_by != reg.sent_by:
            reg.contact = reg.contact.replace(reg.sent_by, sent_by, 1)
            reg.sent_by = sent_by
        self.route = k
        self.send = self.routes[k].send

    def flush(self, recorder: Recorder, tally: Tally) -> None:
        reg = self.reg
        outgoing = reg.take_outgoing()
        if outgoing:
            send = self.send
            for data in outgoing:
                send(data)
        for event in reg.take_events():
            kind = type(event)  # the event classes are final: an identity test is the cheapest
            if kind is OpStarted:
                assert isinstance(event, OpStarted)
                op = event.op
                recorder.attempt(_PHASE[op])
                if op is Op.REGISTER:
                    self.op_intended = self.intended
                    recorder.schedule_lag(_us(event.now - self.intended))
                    tally.in_flight += 1
                    self.registering = True
                else:
                    self.op_intended = event.scheduled
                    if op is Op.REFRESH:
                        recorder.schedule_lag(_us(event.now - event.scheduled))
            elif kind is Registered:
                assert isinstance(event, Registered)
                op = event.op
                phase = _PHASE[op]
                now = event.now
                recorder.record(phase, _us(now - self.op_intended), _us(now - event.started_at))
                auth_us = _us(now - event.last_sent_at)
                recorder.record(Phase.AUTH, auth_us, auth_us)
                recorder.success(phase)
                self.failure = None
                if self.trace is not None:
                    self.trace.registered(now)
                if op is Op.REGISTER:
                    self.registrations += 1
                    tally.in_flight -= 1
                    self.registering = False
                else:
                    self.refreshes += 1
            elif kind is Challenged:
                assert isinstance(event, Challenged)
                if event.op in _CHALLENGE_OPS:
                    recorder.record(
                        Phase.CHALLENGE, _us(event.now - self.op_intended), _us(event.now - event.sent_at)
                    )
            elif isinstance(event, Unregistered):
                recorder.record(
                    Phase.UNREGISTER, _us(event.now - self.op_intended), _us(event.now - event.started_at)
                )
                recorder.success(Phase.UNREGISTER)
                if self.trace is not None:
                    self.trace.down(UNREGISTERED, event.now)
            elif isinstance(event, Failed):
                if event.status is not None:
                    self.last_status = event.status
                if event.reason.may_pass and len(self.routes) > 1:  # RFC 3263 §4.3
                    self.failovers += 1
                    self.move_to((self.route + 1) % len(self.routes))
                if not event.final:
                    tally.retries += 1
                    continue
                self.failure = event.reason
                recorder.failure(_PHASE[event.op], event.reason)
                if event.op is Op.REGISTER:
                    tally.in_flight -= 1
                    self.registering = False
            elif isinstance(event, Retransmitted):
                recorder.retransmission()

    def bound(self, now: float) -> bool:
        """Whether the registrar holds our binding, as far as this endpoint knows."""
        until = self.reg.bound_until
        return until is not None and until > now

    @property
    def state(self) -> str:
        if self.reg.state is RegState.FAILED and self.failure is not None:
            return f"failed:{self.failure.value}"
        return self.reg.state.value

