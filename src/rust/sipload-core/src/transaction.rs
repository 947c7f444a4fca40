//! The non-INVITE client transaction of RFC 3261 §17.1.2, as `sipload/sip/transaction.py` runs it:
//! the table `(state, input) -> (action, new state)`, Timer E (unreliable transports, doubling up to
//! T2, every T2 in Proceeding), Timer F at 64*T1, Timer K (T4 unreliable, 0 reliable). Time is `now`.
//!
//! A late `handle_timer` gets at most one retransmission per call, rescheduled from the firing time;
//! when Timer F is due it wins (TIMEOUT, no retransmission).

use crate::error::ProtocolError;

/// RFC 3261 timer base values in seconds (`Timers`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timers {
    pub t1: f64,
    pub t2: f64,
    pub t4: f64,
}

impl Default for Timers {
    fn default() -> Self {
        Timers { t1: 0.5, t2: 4.0, t4: 5.0 }
    }
}

impl Timers {
    /// As `Timers(t1, t2, t4)`, which refuses anything but t1 > 0, t2 >= t1, t4 >= 0.
    pub fn new(t1: f64, t2: f64, t4: f64) -> Result<Self, String> {
        if !(t1 > 0.0 && t2 >= t1 && t4 >= 0.0) {
            return Err(format!("invalid timers t1={t1} t2={t2} t4={t4}: need t1 > 0, t2 >= t1, t4 >= 0"));
        }
        Ok(Timers { t1, t2, t4 })
    }

    /// Timer F: 64*T1.
    pub fn timer_f(&self) -> f64 {
        64.0 * self.t1
    }

    /// The Timer E interval after one of `interval` fired: doubled, at most T2.
    pub fn next_e(&self, interval: f64) -> f64 {
        py_min(2.0 * interval, self.t2)
    }

    /// The first timer of a request sent at `sent`: Timer E at T1 (unreliable), else Timer F.
    pub fn first_deadline(&self, sent: f64, reliable: bool) -> f64 {
        if reliable {
            sent + self.timer_f()
        } else {
            sent + self.t1
        }
    }
}

/// Python's `min(a, b)`: `a` unless `b < a`.
pub fn py_min(a: f64, b: f64) -> f64 {
    if b < a {
        b
    } else {
        a
    }
}

/// Python's `max(a, b)`: `a` unless `b > a`.
pub fn py_max(a: f64, b: f64) -> f64 {
    if b > a {
        b
    } else {
        a
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

impl TxState {
    /// The Python member's name.
    pub fn name(self) -> &'static str {
        match self {
            TxState::Trying => "TRYING",
            TxState::Proceeding => "PROCEEDING",
            TxState::Completed => "COMPLETED",
            TxState::Terminated => "TERMINATED",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxInput {
    Provisional,
    Final,
    TimerE,
    TimerF,
    TimerK,
    TransportError,
}

impl TxInput {
    pub fn name(self) -> &'static str {
        match self {
            TxInput::Provisional => "PROVISIONAL",
            TxInput::Final => "FINAL",
            TxInput::TimerE => "TIMER_E",
            TxInput::TimerF => "TIMER_F",
            TxInput::TimerK => "TIMER_K",
            TxInput::TransportError => "TRANSPORT_ERROR",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxAction {
    None,
    Retransmit,
    PassProvisional,
    PassFinal,
    Timeout,
    TransportFailed,
    Terminated,
}

/// The table of `_TRANSITIONS`.
pub const TRANSITIONS: [((TxState, TxInput), (TxAction, TxState)); 17] = {
    use TxAction as A;
    use TxInput as I;
    use TxState as S;
    [
        ((S::Trying, I::Provisional), (A::PassProvisional, S::Proceeding)),
        ((S::Trying, I::Final), (A::PassFinal, S::Completed)),
        ((S::Trying, I::TimerE), (A::Retransmit, S::Trying)),
        ((S::Trying, I::TimerF), (A::Timeout, S::Terminated)),
        ((S::Trying, I::TransportError), (A::TransportFailed, S::Terminated)),
        ((S::Proceeding, I::Provisional), (A::PassProvisional, S::Proceeding)),
        ((S::Proceeding, I::Final), (A::PassFinal, S::Completed)),
        ((S::Proceeding, I::TimerE), (A::Retransmit, S::Proceeding)),
        ((S::Proceeding, I::TimerF), (A::Timeout, S::Terminated)),
        ((S::Proceeding, I::TransportError), (A::TransportFailed, S::Terminated)),
        // Completed: retransmitted responses are absorbed; a late error of an earlier send changes nothing.
        ((S::Completed, I::Provisional), (A::None, S::Completed)),
        ((S::Completed, I::Final), (A::None, S::Completed)),
        ((S::Completed, I::TimerK), (A::Terminated, S::Terminated)),
        ((S::Completed, I::TransportError), (A::None, S::Completed)),
        // Terminated: late duplicates are absorbed; no timer is pending here.
        ((S::Terminated, I::Provisional), (A::None, S::Terminated)),
        ((S::Terminated, I::Final), (A::None, S::Terminated)),
        ((S::Terminated, I::TransportError), (A::None, S::Terminated)),
    ]
};

/// Look `(state, input)` up in the table.
pub fn transition(state: TxState, input: TxInput) -> Result<(TxAction, TxState), ProtocolError> {
    TRANSITIONS.iter().find(|(key, _)| *key == (state, input)).map(|(_, out)| *out).ok_or_else(|| {
        ProtocolError(format!(
            "non-INVITE client transaction: input {} is not valid in state {}",
            input.name(),
            state.name()
        ))
    })
}

/// One non-INVITE client transaction; the request was sent at its creation time.
#[derive(Debug, Clone)]
pub struct NonInviteClientTransaction {
    pub state: TxState,
    pub retransmissions: u32,
    pub reliable: bool,
    pub timers: Timers,
    e_interval: f64,
    timer_e: Option<f64>,
    timer_f: Option<f64>,
    timer_k: Option<f64>,
}

impl NonInviteClientTransaction {
    pub fn new(now: f64, reliable: bool, timers: Timers) -> Self {
        NonInviteClientTransaction {
            state: TxState::Trying,
            retransmissions: 0,
            reliable,
            timers,
            e_interval: timers.t1,
            timer_e: if reliable { None } else { Some(now + timers.t1) },
            timer_f: Some(now + timers.timer_f()),
            timer_k: None,
        }
    }

    /// A response matched to this transaction: 100-199 provisional, 200-699 final.
    pub fn receive_response(&mut self, status: u16, now: f64) -> Result<TxAction, ProtocolError> {
        match status {
            100..=199 => self.fire(TxInput::Provisional, now),
            200..=699 => self.fire(TxInput::Final, now),
            _ => Err(ProtocolError(format!("status {status} is not a SIP response code (100-699)"))),
        }
    }

    /// The transport could not send the request (RFC 3261 §17.1.4).
    pub fn transport_error(&mut self, now: f64) -> Result<TxAction, ProtocolError> {
        self.fire(TxInput::TransportError, now)
    }

    /// The earliest pending deadline.
    pub fn next_timer(&self) -> Option<f64> {
        // min() over the dict's values in insertion order: F, then E (or K alone)
        [self.timer_f, self.timer_e, self.timer_k].into_iter().flatten().reduce(py_min)
    }

    /// Fire every timer whose deadline is <= `now`, in deadline order (F wins over E).
    pub fn handle_timer(&mut self, now: f64) -> Result<Vec<TxAction>, ProtocolError> {
        let mut actions = Vec::new();
        loop {
            let due = |d: Option<f64>| d.filter(|&d| d <= now);
            let timer = if due(self.timer_f).is_some() {
                TxInput::TimerF
            } else {
                // the earliest of E and K ("timer_e" sorts before "timer_k" on a tie)
                match (due(self.timer_e), due(self.timer_k)) {
                    (Some(e), Some(k)) => {
                        if k < e {
                            TxInput::TimerK
                        } else {
                            TxInput::TimerE
                        }
                    }
                    (Some(_), None) => TxInput::TimerE,
                    (None, Some(_)) => TxInput::TimerK,
                    (None, None) => return Ok(actions),
                }
            };
            match timer {
                TxInput::TimerF => self.timer_f = None,
                TxInput::TimerE => self.timer_e = None,
                _ => self.timer_k = None,
            }
            actions.push(self.fire(timer, now)?);
        }
    }

    fn fire(&mut self, input: TxInput, now: f64) -> Result<TxAction, ProtocolError> {
        let (action, new_state) = transition(self.state, input)?;
        let old_state = self.state;
        self.state = new_state;
        if action == TxAction::Retransmit {
            self.retransmissions += 1;
            self.e_interval = self.timers.next_e(self.e_interval);
            self.timer_e = Some(now + self.e_interval);
        }
        if new_state != old_state {
            self.enter(new_state, now)?;
        }
        Ok(action)
    }

    fn clear(&mut self) {
        self.timer_e = None;
        self.timer_f = None;
        self.timer_k = None;
    }

    fn enter(&mut self, state: TxState, now: f64) -> Result<(), ProtocolError> {
        match state {
            TxState::Completed => {
                self.clear();
                if self.reliable {
                    self.fire(TxInput::TimerK, now)?; // K = 0: Terminated at once
                } else {
                    self.timer_k = Some(now + self.timers.t4);
                }
            }
            TxState::Terminated => self.clear(),
            TxState::Proceeding => self.e_interval = self.timers.t2,
            TxState::Trying => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_retransmits_doubling_to_t2_then_times_out() {
        let mut tx = NonInviteClientTransaction::new(0.0, false, Timers::default());
        let mut fired = vec![];
        while let Some(deadline) = tx.next_timer() {
            let actions = tx.handle_timer(deadline).unwrap();
            fired.push((deadline, actions));
        }
        let times: Vec<f64> = fired.iter().map(|(t, _)| *t).collect();
        assert_eq!(times, [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5, 32.0]);
        assert_eq!(tx.retransmissions, 10);
        assert_eq!(fired.last().unwrap().1, [TxAction::Timeout]);
        assert_eq!(tx.state, TxState::Terminated);
    }

    #[test]
    fn a_late_caller_gets_one_retransmission_and_f_wins() {
        let mut tx = NonInviteClientTransaction::new(0.0, false, Timers::default());
        assert_eq!(tx.handle_timer(10.0).unwrap(), [TxAction::Retransmit]);
        assert_eq!(tx.next_timer(), Some(11.0));
        assert_eq!(tx.handle_timer(40.0).unwrap(), [TxAction::Timeout]);
    }

    #[test]
    fn final_response_then_k_and_reliable_terminates_at_once() {
        let mut tx = NonInviteClientTransaction::new(0.0, false, Timers::default());
        assert_eq!(tx.receive_response(100, 0.1).unwrap(), TxAction::PassProvisional);
        assert_eq!(tx.handle_timer(0.5).unwrap(), [TxAction::Retransmit]);
        assert_eq!(tx.next_timer(), Some(4.5)); // every T2 in Proceeding
        assert_eq!(tx.receive_response(200, 1.0).unwrap(), TxAction::PassFinal);
        assert_eq!(tx.next_timer(), Some(6.0));
        assert_eq!(tx.receive_response(200, 1.1).unwrap(), TxAction::None);
        assert_eq!(tx.handle_timer(6.0).unwrap(), [TxAction::Terminated]);
        assert!(tx.receive_response(99, 7.0).is_err());
        let mut tcp = NonInviteClientTransaction::new(0.0, true, Timers::default());
        assert_eq!(tcp.next_timer(), Some(32.0));
        assert_eq!(tcp.receive_response(200, 1.0).unwrap(), TxAction::PassFinal);
        assert_eq!(tcp.state, TxState::Terminated);
        assert_eq!(tcp.next_timer(), None);
    }

    #[test]
    fn pairs_without_an_entry_are_protocol_errors() {
        let e = transition(TxState::Terminated, TxInput::TimerE).unwrap_err();
        assert_eq!(e.0, "non-INVITE client transaction: input TIMER_E is not valid in state TERMINATED");
        assert!(transition(TxState::Trying, TxInput::TimerK).is_err());
    }
}
