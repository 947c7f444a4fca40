"""Tests of the non-INVITE client transaction (RFC 3261 §17.1.2). Time is driven by hand."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipload.sip.errors import ProtocolError
from sipload.sip.transaction import (
    NonInviteClientTransaction,
    Timers,
    TxAction,
    TxInput,
    TxState,
    transition,
)

A = TxAction
OUTCOMES = {A.PASS_FINAL, A.TIMEOUT, A.TRANSPORT_FAILED}


def state(tx: NonInviteClientTransaction) -> TxState:
    """``tx.state`` through a call, so that mypy does not narrow it across assertions."""
    return tx.state


def run_timers(tx: NonInviteClientTransaction, until: float) -> list[tuple[float, TxAction]]:
    """Call handle_timer on time at every deadline up to ``until``; return (time, action) pairs."""
    log: list[tuple[float, TxAction]] = []
    while (deadline := tx.next_timer()) is not None and deadline <= until:
        log.extend((deadline, action) for action in tx.handle_timer(deadline))
    return log


# --- UDP (unreliable) -------------------------------------------------------------------------


def test_udp_retransmit_schedule_then_timeout() -> None:
    tx = NonInviteClientTransaction(0.0, reliable=False)
    assert state(tx) is TxState.TRYING
    assert tx.next_timer() == 0.5
    log = run_timers(tx, until=100.0)
    retransmit_times = [t for t, a in log if a is A.RETRANSMIT]
    assert retransmit_times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert log[-1] == (32.0, A.TIMEOUT)
    assert len(log) == 11
    assert tx.retransmissions == 10
    assert state(tx) is TxState.TERMINATED
    assert tx.next_timer() is None
    assert tx.handle_timer(1000.0) == []


def test_timers_relative_to_start_time() -> None:
    tx = NonInviteClientTransaction(100.0, reliable=False)
    log = run_timers(tx, until=1000.0)
    assert [t for t, _ in log][:4] == [100.5, 101.5, 103.5, 107.5]
    assert log[-1] == (132.0, A.TIMEOUT)


def test_handle_timer_before_deadline_does_nothing() -> None:
    tx = NonInviteClientTransaction(0.0, reliable=False)
    assert tx.handle_timer(0.49) == []
    assert state(tx) is TxState.TRYING
    assert tx.retransmissions == 0
    assert tx.next_timer() == 0.5


def test_provisional_moves_to_proceeding_and_retransmits_every_t2() -> None:
    tx = NonInviteClientTransaction(0.0, reliable=False)
    assert tx.handle_timer(0.5) == [A.RETRANSMIT]  # next E at 1.5
    assert tx.receive_response(100, 1.0) is A.PASS_PROVISIONAL
    assert state(tx) is TxState.PROCEEDING
    assert tx.next_timer() == 1.5  # the pending E keeps its deadline
    log = run_timers(tx, until=100.0)
    retransmit_times = [t for t, a in log if a is A.RETRANSMIT]
    assert retransmit_times == [1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5]
    assert log[-1] == (32.0, A.TIMEOUT)
    assert state(tx) is TxState.TERMINATED


def test_more_provisionals_in_proceeding_are_passed() -> None:
    tx = NonInviteClientTransaction(0.0, reliable=False)
    assert tx.receive_response(180, 0.1) is A.PASS_PROVISIONAL
    assert tx.receive_response(183, 0.2) is A.PASS_PROVISIONAL
    assert state(tx) is TxState.PROCEEDING


@pytest.mark.parametrize("status", [200, 302, 401, 404, 500, 699])
def test_final_completed_then_timer_k_terminates(status: int) -> None:
    tx = NonInviteClientTransaction(0.0, reliable=False)
    assert tx.receive_response(status, 0.2) is A.PASS_FINAL
    assert state(tx) is TxState.COMPLETED
    assert tx.next_timer() == 5.2  # K = T4; E and F cancelled
    assert tx.handle_timer(5.1) == []
    assert tx.handle_timer(5.2) == [A.TERMINATED]
    assert state(tx) is TxState.TERMINATED
    assert tx.next_timer() is None
    assert tx.retransmissions == 0


def test_final_in_proceeding() -> None:
    tx = NonInviteClientTransaction(0.0, reliable=False)
    tx.receive_response(100, 0.1)
    assert tx.receive_response(200, 0.3) is A.PASS_FINAL
    assert state(tx) is TxState.COMPLETED
    assert tx.next_timer() == 5.3


def test_duplicate_responses_absorbed_in_completed_and_terminated() -> None:
    tx = NonInviteClientTransaction(0.0, reliable=False)
    assert tx.receive_response(401, 0.1) is A.PASS_FINAL
    assert tx.receive_response(401, 0.2) is A.NONE
    assert tx.receive_response(100, 0.3) is A.NONE
    assert tx.transport_error(0.4) is A.NONE
    assert state(tx) is TxState.COMPLETED
    assert tx.next_timer() == 5.1  # absorbing does not restart K
    assert tx.handle_timer(5.1) == [A.TERMINATED]
    assert tx.receive_response(401, 6.0) is A.NONE
    assert tx.receive_response(100, 6.0) is A.NONE
    assert tx.transport_error(6.0) is A.NONE
    assert state(tx) is TxState.TERMINATED
    assert tx.next_timer() is None


def test_no_retransmission_after_final() -> None:
    tx = NonInviteClientTransaction(0.0, reliable=False)
    tx.handle_timer(0.5)
    tx.receive_response(200, 0.6)
    assert run_timers(tx, until=100.0) == [(5.6, A.TERMINATED)]
    assert tx.retransmissions == 1


def test_configurable_timers() -> None:
    tx = NonInviteClientTransaction(0.0, reliable=False, timers=Timers(t1=0.1, t2=0.4, t4=1.0))
    log = run_timers(tx, until=100.0)
    times = [t for t, a in log if a is A.RETRANSMIT]
    assert times[:5] == pytest.approx([0.1, 0.3, 0.7, 1.1, 1.5])
    assert log[-1][1] is A.TIMEOUT
    assert log[-1][0] == pytest.approx(6.4)
    assert all(t < 6.4 for t in times)
    tx2 = NonInviteClientTransaction(0.0, reliable=False, timers=Timers(t1=0.1, t2=0.4, t4=1.0))
    tx2.receive_response(200, 0.05)
    assert tx2.next_timer() == pytest.approx(1.05)


@pytest.mark.parametrize(
    ("t1", "t2", "t4"), [(0.0, 4.0, 5.0), (-1.0, 4.0, 5.0), (1.0, 0.5, 5.0), (0.5, 4.0, -1.0)]
)
def test_invalid_timers_rejected(t1: float, t2: float, t4: float) -> None:
    with pytest.raises(ValueError, match="invalid timers"):
        Timers(t1=t1, t2=t2, t4=t4)


# --- late caller --------------------------------------------------------------------------------


def test_late_caller_gets_one_retransmission_rescheduled_from_now() -> None:
    tx = NonInviteClientTransaction(0.0, reliable=False)
    # 0.5, 1.5 and 3.5 have all passed: one retransmission, not a stale burst.
    assert tx.handle_timer(4.0) == [A.RETRANSMIT]
    assert tx.retransmissions == 1
    assert tx.next_timer() == 5.0  # now + 2*T1
    assert tx.handle_timer(5.0) == [A.RETRANSMIT]
    assert tx.next_timer() == 7.0  # the interval keeps doubling: now + 4*T1


def test_late_caller_past_timer_f_times_out_without_retransmitting() -> None:
    tx = NonInviteClientTransaction(0.0, reliable=False)
    assert tx.handle_timer(31.0) == [A.RETRANSMIT]
    assert tx.next_timer() == 32.0  # F (E would be at 31 + 1)
    assert tx.handle_timer(40.0) == [A.TIMEOUT]  # E is due too, F wins
    assert tx.retransmissions == 1
    assert state(tx) is TxState.TERMINATED
    assert tx.next_timer() is None


def test_very_late_first_call_is_just_timeout() -> None:
    tx = NonInviteClientTransaction(0.0, reliable=False)
    assert tx.handle_timer(1000.0) == [A.TIMEOUT]
    assert tx.retransmissions == 0


def test_late_caller_in_completed() -> None:
    tx = NonInviteClientTransaction(0.0, reliable=False)
    tx.receive_response(200, 0.1)
    assert tx.handle_timer(500.0) == [A.TERMINATED]
    assert tx.handle_timer(1000.0) == []


def test_timer_e_and_f_same_deadline_f_wins() -> None:
    # T1 = T2 = 1: E fires every second, and the 64th would coincide with F at 64.
    tx = NonInviteClientTransaction(0.0, reliable=False, timers=Timers(t1=1.0, t2=1.0))
    log = run_timers(tx, until=100.0)
    assert [t for t, a in log if a is A.RETRANSMIT] == [float(i) for i in range(1, 64)]
    assert log[-1] == (64.0, A.TIMEOUT)


# --- reliable transports ------------------------------------------------------------------------


def test_reliable_no_timer_e_timeout_at_64_t1() -> None:
    tx = NonInviteClientTransaction(0.0, reliable=True)
    assert tx.next_timer() == 32.0
    assert tx.handle_timer(31.9) == []
    assert tx.handle_timer(32.0) == [A.TIMEOUT]
    assert tx.retransmissions == 0
    assert state(tx) is TxState.TERMINATED


def test_reliable_final_terminates_at_once() -> None:
    tx = NonInviteClientTransaction(0.0, reliable=True)
    assert tx.receive_response(100, 0.1) is A.PASS_PROVISIONAL
    assert tx.next_timer() == 32.0
    assert tx.receive_response(200, 0.2) is A.PASS_FINAL
    assert state(tx) is TxState.TERMINATED
    assert tx.next_timer() is None
    assert tx.receive_response(200, 0.3) is A.NONE


# --- transport errors and bad input -------------------------------------------------------------


@pytest.mark.parametrize("reliable", [False, True])
@pytest.mark.parametrize("provisional_first", [False, True])
def test_transport_error(reliable: bool, provisional_first: bool) -> None:
    tx = NonInviteClientTransaction(0.0, reliable=reliable)
    if provisional_first:
        tx.receive_response(100, 0.1)
    assert tx.transport_error(0.2) is A.TRANSPORT_FAILED
    assert state(tx) is TxState.TERMINATED
    assert tx.next_timer() is None
    assert tx.transport_error(0.3) is A.NONE
    assert tx.handle_timer(100.0) == []


@pytest.mark.parametrize("status", [0, 99, 700, 999, -200])
def test_status_out_of_range_is_protocol_error(status: int) -> None:
    tx = NonInviteClientTransaction(0.0, reliable=False)
    with pytest.raises(ProtocolError, match=str(status)):
        tx.receive_response(status, 0.1)
    assert state(tx) is TxState.TRYING


def test_missing_entry_message_names_state_and_input() -> None:
    with pytest.raises(ProtocolError, match=r"TIMER_K.*TRYING"):
        transition(TxState.TRYING, TxInput.TIMER_K)


# --- the table over every (state, input) pair ---------------------------------------------------


ALL_PAIRS = list(itertools.product(TxState, TxInput))


@given(st.sampled_from(ALL_PAIRS))
def test_every_pair_has_entry_or_raises_protocol_error(pair: tuple[TxState, TxInput]) -> None:
    state, inp = pair
    try:
        action, new_state = transition(state, inp)
    except ProtocolError:
        return
    assert isinstance(action, TxAction)
    assert isinstance(new_state, TxState)


def test_table_shape() -> None:
    """Pin which pairs are errors: timers only where they can be pending."""
    errors = set()
    for state, inp in ALL_PAIRS:
        try:
            transition(state, inp)
        except ProtocolError:
            errors.add((state, inp))
    S, In = TxState, TxInput
    assert errors == {
        (S.TRYING, In.TIMER_K),
        (S.PROCEEDING, In.TIMER_K),
        (S.COMPLETED, In.TIMER_E),
        (S.COMPLETED, In.TIMER_F),
        (S.TERMINATED, In.TIMER_E),
        (S.TERMINATED, In.TIMER_F),
        (S.TERMINATED, In.TIMER_K),
    }
    # Nothing leaves Terminated, nothing returns to Trying.
    for (state, _), (_, new_state) in ((p, transition(*p)) for p in ALL_PAIRS if p not in errors):
        if state is S.TERMINATED:
            assert new_state is S.TERMINATED
        if state is not S.TRYING:
            assert new_state is not S.TRYING


# --- random sequences ---------------------------------------------------------------------------


op = st.one_of(
    st.tuples(st.just("response"), st.integers(100, 699)),
    st.tuples(st.just("timer"), st.just(0)),  # on time, at next_timer()
    st.tuples(st.just("late"), st.integers(0, 40_000)),  # handle_timer(now + ms)
    st.tuples(st.just("error"), st.just(0)),
    st.tuples(st.just("wait"), st.integers(0, 5_000)),  # time passes, no call
)


@given(
    reliable=st.booleans(),
    ops=st.lists(op, max_size=40),
    t1=st.sampled_from([0.5, 0.1, 1.0]),
)
def test_random_sequences_keep_invariants(reliable: bool, ops: list[tuple[str, int]], t1: float) -> None:
    timers = Timers(t1=t1, t2=8 * t1, t4=10 * t1)
    start = 10.0
    tx = NonInviteClientTransaction(start, reliable=reliable, timers=timers)
    now = start
    actions: list[TxAction] = []
    got_final = False

    def record(new: list[TxAction]) -> None:
        for action in new:
            if action is A.RETRANSMIT:
                assert not (set(actions) & OUTCOMES), "retransmission after the outcome"
                assert tx.state in (TxState.TRYING, TxState.PROCEEDING)
            if action is A.TIMEOUT:
                assert now >= start + 64 * t1
            actions.append(action)
        if tx.state is TxState.TERMINATED:
            assert tx.next_timer() is None
        deadline = tx.next_timer()
        assert deadline is None or deadline > now, "a due timer was left unprocessed"

    for kind, arg in ops:
        if kind == "response":
            before = tx.state
            action = tx.receive_response(arg, now)
            if arg >= 200 and before in (TxState.TRYING, TxState.PROCEEDING):
                got_final = True
                assert action is A.PASS_FINAL
            record([action])
        elif kind == "timer":
            deadline = tx.next_timer()
            if deadline is not None:
                now = deadline
                record(tx.handle_timer(now))
        elif kind == "late":
            now += arg / 1000
            record(tx.handle_timer(now))
        elif kind == "error":
            record([tx.transport_error(now)])
        else:
            now += arg / 1000
            # no call: the pending timers (if any) are now overdue; the next handle_timer catches up
            deadline = tx.next_timer()
            if deadline is not None and deadline <= now:
                record(tx.handle_timer(now))

    # Run to the end: the transaction always terminates, without outside help.
    for _ in range(1000):
        deadline = tx.next_timer()
        if deadline is None:
            break
        now = max(now, deadline)
        record(tx.handle_timer(now))
    assert state(tx) is TxState.TERMINATED
    assert tx.next_timer() is None
    outcomes = [a for a in actions if a in OUTCOMES]
    assert len(outcomes) == 1, outcomes
    assert (outcomes[0] is A.PASS_FINAL) == got_final
    assert tx.retransmissions == actions.count(A.RETRANSMIT)
    if reliable:
        assert tx.retransmissions == 0
        assert A.TERMINATED not in actions  # K = 0: no separate TERMINATED action


@pytest.mark.parametrize("reliable", [False, True])
def test_first_deadline_is_the_first_timer_of_a_fresh_transaction(reliable: bool) -> None:
    """The registration machine's transaction-less shortcut uses `first_deadline`: it must be what the
    transaction itself would wait for (E at T1 unreliable, F at 64*T1 reliable)."""
    timers = Timers(t1=0.25, t2=2.0)
    tx = NonInviteClientTransaction(10.0, reliable=reliable, timers=timers)
    assert timers.first_deadline(10.0, reliable) == tx.next_timer() == (26.0 if reliable else 10.25)


def test_timer_e_doubles_up_to_t2_and_timer_f_is_64_t1() -> None:
    timers = Timers(t1=0.5, t2=4.0)
    intervals = [0.5]
    for _ in range(5):
        intervals.append(timers.next_e(intervals[-1]))
    assert intervals == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert timers.timer_f == 32.0
