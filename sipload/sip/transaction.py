"""The non-INVITE client transaction of RFC 3261 §17.1.2, sans-IO.

Theory of operation
-------------------
The transaction user (the registration machine) sends a request at time ``now`` and creates a
``NonInviteClientTransaction(now, reliable=...)``. From then on the transaction is driven by three
kinds of input, each carrying the current time as a parameter (no clock is read here):

* ``receive_response(status, now)``: a 1xx (PROVISIONAL) or 2xx-6xx (FINAL) response matched to us;
* ``transport_error(now)``: the transport failed to send the request;
* ``handle_timer(now)``: the caller woke up at (or after) ``next_timer()``.

Every input is looked up in ``_TRANSITIONS``, a table ``(state, input) -> (action, new_state)`` in the
style of h2's ``stream.py``. An input with no entry raises ``ProtocolError``; there is no silent no-op.
The returned ``TxAction`` tells the caller what to do (retransmit, pass a response to the TU, ...).

Timers are deadlines, not tasks (the aioquic style). Entering a state sets or cancels them:

* Trying: timer F at start + 64*T1; on unreliable transports timer E at start + T1, doubling after
  each firing up to T2. A provisional response moves to Proceeding; the pending E keeps its deadline
  and every later E is T2 after the previous one.
* Completed (a final response arrived): E and F cancelled, timer K = T4 (unreliable). On reliable
  transports K is 0, so the transaction goes straight to Terminated and only PASS_FINAL is returned.
* Terminated: no timer pending; the owner may forget the transaction.

A late caller (``handle_timer`` long after a deadline) gets at most one retransmission per call,
rescheduled from the actual firing time, as a real timer would: no burst of stale retransmissions.
If timer F is due, it wins: TIMEOUT is returned, and no retransmission precedes or follows it.

Late duplicates are a fact of real networks: responses (and transport errors of earlier sends)
arriving in Completed or Terminated are explicit entries in the table with action NONE.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sipload.sip.errors import ProtocolError

__all__ = [
    "NonInviteClientTransaction",
    "Timers",
    "TxAction",
    "TxInput",
    "TxState",
    "transition",
]


@dataclass(frozen=True, slots=True)
class Timers:
    """RFC 3261 timer base values in seconds (§17.1.2.2, Table 4)."""

    t1: float = 0.5  # RTT estimate: first E interval; F = 64*T1
    t2: float = 4.0  # cap of the E interval
    t4: float = 5.0  # max time a message stays in the network: K on unreliable transports

    def __post_init__(self) -> None:
        if not (self.t1 > 0 and self.t2 >= self.t1 and self.t4 >= 0):
            raise ValueError(f"invalid timers {self!r}: need t1 > 0, t2 >= t1, t4 >= 0")

    # The one place where Timer E and Timer F are computed (the transaction below, the registration
    # machine's transaction-less shortcut, the OPTIONS keep-alive all use these).
    @property
    def timer_f(self) -> float:
        """Timer F: how long a non-INVITE request waits for its final response, 64*T1."""
        return 64 * self.t1

    def next_e(self, interval: float) -> float:
        """The Timer E interval after one of `interval` fired: doubled, at most T2."""
        return min(2 * interval, self.t2)

    def first_deadline(self, sent: float, reliable: bool) -> float:
        """The first timer of a request sent at `sent`: Timer E at T1 (unreliable), else Timer F."""
        return sent + self.timer_f if reliable else sent + self.t1


class TxState(enum.Enum):
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    TERMINATED = "terminated"


class TxInput(enum.Enum):
    PROVISIONAL = "provisional"
    FINAL = "final"
    TIMER_E = "timer_e"
    TIMER_F = "timer_f"
    TIMER_K = "timer_k"
    TRANSPORT_ERROR = "transport_error"


class TxAction(enum.Enum):
    NONE = "none"  # nothing to do (e.g. a retransmitted final response absorbed in Completed)
    RETRANSMIT = "retransmit"  # send the request again
    PASS_PROVISIONAL = "pass_provisional"  # hand the response to the TU
    PASS_FINAL = "pass_final"  # hand the response to the TU
    TIMEOUT = "timeout"  # timer F fired: tell the TU the transaction timed out
    TRANSPORT_FAILED = "transport_failed"  # tell the TU the transport failed
    TERMINATED = "terminated"  # timer K fired: the transaction is over, forget it


_S, _I, _A = TxState, TxInput, TxAction

_TRANSITIONS: dict[tuple[TxState, TxInput], tuple[TxAction, TxState]] = {
    (_S.TRYING, _I.PROVISIONAL): (_A.PASS_PROVISIONAL, _S.PROCEEDING),
    (_S.TRYING, _I.FINAL): (_A.PASS_FINAL, _S.COMPLETED),
    (_S.TRYING, _I.TIMER_E): (_A.RETRANSMIT, _S.TRYING),
    (_S.TRYING, _I.TIMER_F): (_A.TIMEOUT, _S.TERMINATED),
    (_S.TRYING, _I.TRANSPORT_ERROR): (_A.TRANSPORT_FAILED, _S.TERMINATED),
    (_S.PROCEEDING, _I.PROVISIONAL): (_A.PASS_PROVISIONAL, _S.PROCEEDING),
    (_S.PROCEEDING, _I.FINAL): (_A.PASS_FINAL, _S.COMPLETED),
    (_S.PROCEEDING, _I.TIMER_E): (_A.RETRANSMIT, _S.PROCEEDING),
    (_S.PROCEEDING, _I.TIMER_F): (_A.TIMEOUT, _S.TERMINATED),
    (_S.PROCEEDING, _I.TRANSPORT_ERROR): (_A.TRANSPORT_FAILED, _S.TERMINATED),
    # Completed: retransmitted responses are absorbed; the request was delivered, so a late error of
    # an earlier send changes nothing.
    (_S.COMPLETED, _I.PROVISIONAL): (_A.NONE, _S.COMPLETED),
    (_S.COMPLETED, _I.FINAL): (_A.NONE, _S.COMPLETED),
    (_S.COMPLETED, _I.TIMER_K): (_A.TERMINATED, _S.TERMINATED),
    (_S.COMPLETED, _I.TRANSPORT_ERROR): (_A.NONE, _S.COMPLETED),
    # Terminated: late duplicates still arrive on real networks; absorb them explicitly.
    # No timer is pending here, so timer inputs have no entry.
    (_S.TERMINATED, _I.PROVISIONAL): (_A.NONE, _S.TERMINATED),
    (_S.TERMINATED, _I.FINAL): (_A.NONE, _S.TERMINATED),
    (_S.TERMINATED, _I.TRANSPORT_ERROR): (_A.NONE, _S.TERMINATED),
}


def transition(state: TxState, inp: TxInput) -> tuple[TxAction, TxState]:
    """Look ``(state, inp)`` up in the table; ``ProtocolError`` if there is no entry."""
    try:
        return _TRANSITIONS[(state, inp)]
    except KeyError:
        raise ProtocolError(
            f"non-INVITE client transaction: input {inp.name} is not valid in state {state.name}"
        ) from None


class NonInviteClientTransaction:
    """One non-INVITE client transaction; the request was just sent at ``now``."""

    def __init__(self, now: float, *, reliable: bool, timers: Timers = Timers()) -> None:
        self.state = TxState.TRYING
        self.retransmissions = 0
        self.reliable = reliable
        self.timers = timers
        self._e_interval = timers.t1
        self._deadlines: dict[TxInput, float] = {TxInput.TIMER_F: now + timers.timer_f}
        if not reliable:
            self._deadlines[TxInput.TIMER_E] = now + timers.t1

    def receive_response(self, status: int, now: float) -> TxAction:
        """A response matched to this transaction: 100-199 provisional, 200-699 final."""
        if 100 <= status <= 199:
            return self._fire(TxInput.PROVISIONAL, now)
        if 200 <= status <= 699:
            return self._fire(TxInput.FINAL, now)
        raise ProtocolError(f"status {status} is not a SIP response code (100-699)")

    def transport_error(self, now: float) -> TxAction:
        """The transport could not send the request (RFC 3261 §17.1.4)."""
        return self._fire(TxInput.TRANSPORT_ERROR, now)

    def next_timer(self) -> float | None:
        """The earliest pending deadline, or None when no timer is pending."""
        return min(self._deadlines.values(), default=None)

    def handle_timer(self, now: float) -> list[TxAction]:
        """Fire every timer whose deadline is <= ``now``, in deadline order (F wins over E)."""
        actions: list[TxAction] = []
        while True:
            due = sorted((deadline, t.value, t) for t, deadline in self._deadlines.items() if deadline <= now)
            if not due:
                return actions
            # F is due: TIMEOUT, and a retransmission now (even of an earlier E) would be pointless.
            timer = TxInput.TIMER_F if TxInput.TIMER_F in (t for _, _, t in due) else due[0][2]
            del self._deadlines[timer]
            actions.append(self._fire(timer, now))

    def _fire(self, inp: TxInput, now: float) -> TxAction:
        action, new_state = transition(self.state, inp)
        old_state, self.state = self.state, new_state
        if action is TxAction.RETRANSMIT:
            self.retransmissions += 1
            self._e_interval = self.timers.next_e(self._e_interval)  # already T2 in Proceeding
            self._deadlines[TxInput.TIMER_E] = now + self._e_interval
        if new_state is not old_state:
            self._enter(new_state, now)
        return action

    def _enter(self, state: TxState, now: float) -> None:
        if state is TxState.COMPLETED:
            self._deadlines.clear()  # cancel E and F
            if self.reliable:
                self._fire(TxInput.TIMER_K, now)  # K = 0: Terminated at once, TU only sees PASS_FINAL
            else:
                self._deadlines[TxInput.TIMER_K] = now + self.timers.t4
        elif state is TxState.TERMINATED:
            self._deadlines.clear()
        elif state is TxState.PROCEEDING:
            self._e_interval = self.timers.t2  # the pending E keeps its deadline; later ones every T2
