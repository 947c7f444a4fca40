"""Where the sans-IO registration machine meets sockets, clocks and metrics.

An `Endpoint` is one simulated device: its `Registration` machine, where it sends, and the
intended times the engine measures against. `Endpoint.flush()` moves what the machine produced
out: datagrams to its transport, events to the recorder (as latencies per phase, from the
intended start and from the actual send), and its next deadline to the worker's timer heap.
No awaits happen here: sends are raw and non-blocking.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sipload.metrics.phases import Phase
from sipload.metrics.recorder import Recorder
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
        "deadline",
        "failure",
        "index",
        "intended",
        "last_status",
        "op_intended",
        "refreshes",
        "reg",
        "registrations",
        "send",
        "username",
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
                if op is Op.REGISTER:
                    self.registrations += 1
                    tally.in_flight -= 1
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
            elif isinstance(event, Failed):
                if event.status is not None:
                    self.last_status = event.status
                if not event.final:
                    tally.retries += 1
                    continue
                self.failure = event.reason
                recorder.failure(_PHASE[event.op], event.reason)
                if event.op is Op.REGISTER:
                    tally.in_flight -= 1
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
