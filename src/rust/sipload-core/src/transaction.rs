//! The non-INVITE client transaction of RFC 3261 §17.1.2, sans-IO: `sipload/sip/transaction.py`'s twin.
//!
//! A table `(state, input) -> (action, new state)`; an input with no entry is a [`ProtocolError`]. Timers
//! are deadlines (seconds, the caller's clock): F at start + 64*T1; on unreliable transports E at start +
//! T1, doubling up to T2 (every T2 once a provisional came); K = T4 after the final response (0 on
//! reliable transports). A late caller gets one retransmission per call; a due F wins over E.

use std::fmt;

/// RFC 3261 timer base values in seconds (§17.1.2.2, Table 4).
#[derive(Clone, Copy, Debug, PartialEq)]
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
    /// Timer F: how long a non-INVITE request waits for its final response, 64*T1.
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
pub(crate) fn py_min(a: f64, b: f64) -> f64 {
    if b < a {
        b
    } else {
        a
    }
}

/// A machine asked to do what its table does not allow: a bug (the Python side raises ProtocolError).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProtocolError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxInput {
    Provisional,
    Final,
    TimerE,
    TimerF,
    TimerK,
    TransportError,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxAction {
    None,
    Retransmit,
    PassProvisional,
    PassFinal,
    Timeout,
    TransportFailed,
    Terminated,
}

/// The table.
pub fn transition(state: TxState, input: TxInput) -> Result<(TxAction, TxState), ProtocolError> {
    use TxAction as A;
    use TxInput as I;
    use TxState as S;
    Ok(match (state, input) {
        (S::Trying, I::Provisional) => (A::PassProvisional, S::Proceeding),
        (S::Trying, I::Final) => (A::PassFinal, S::Completed),
        (S::Trying, I::TimerE) => (A::Retransmit, S::Trying),
        (S::Trying, I::TimerF) => (A::Timeout, S::Terminated),
        (S::Trying, I::TransportError) => (A::TransportFailed, S::Terminated),
        (S::Proceeding, I::Provisional) => (A::PassProvisional, S::Proceeding),
        (S::Proceeding, I::Final) => (A::PassFinal, S::Completed),
        (S::Proceeding, I::TimerE) => (A::Retransmit, S::Proceeding),
        (S::Proceeding, I::TimerF) => (A::Timeout, S::Terminated),
        (S::Proceeding, I::TransportError) => (A::TransportFailed, S::Terminated),
        (S::Completed, I::Provisional | I::Final | I::TransportError) => (A::None, S::Completed),
        (S::Completed, I::TimerK) => (A::Terminated, S::Terminated),
        (S::Terminated, I::Provisional | I::Final | I::TransportError) => (A::None, S::Terminated),
        _ => {
            return Err(ProtocolError(format!(
                "non-INVITE client transaction: input {} is not valid in state {}",
                input_name(input),
                state_name(state)
            )))
        }
    })
}

fn input_name(input: TxInput) -> &'static str {
    match input {
        TxInput::Provisional => "PROVISIONAL",
        TxInput::Final => "FINAL",
        TxInput::TimerE => "TIMER_E",
        TxInput::TimerF => "TIMER_F",
        TxInput::TimerK => "TIMER_K",
        TxInput::TransportError => "TRANSPORT_ERROR",
    }
}

fn state_name(state: TxState) -> &'static str {
    match state {
        TxState::Trying => "TRYING",
        TxState::Proceeding => "PROCEEDING",
        TxState::Completed => "COMPLETED",
        TxState::Terminated => "TERMINATED",
    }
}

/// One non-INVITE client transaction; the request was just sent.
#[derive(Clone, Debug)]
pub struct NonInviteClientTransaction {
    pub state: TxState,
    pub retransmissions: u32,
    reliable: bool,
    timers: Timers,
    e_interval: f64,
    e: Option<f64>,
    f: Option<f64>,
    k: Option<f64>,
}

impl NonInviteClientTransaction {
    pub fn new(now: f64, reliable: bool, timers: Timers) -> Self {
        NonInviteClientTransaction {
            state: TxState::Trying,
            retransmissions: 0,
            reliable,
            timers,
            e_interval: timers.t1,
            e: (!reliable).then_some(now + timers.t1),
            f: Some(now + timers.timer_f()),
            k: None,
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

    pub fn transport_error(&mut self, now: f64) -> Result<TxAction, ProtocolError> {
        self.fire(TxInput::TransportError, now)
    }

    /// The earliest pending deadline.
    pub fn next_timer(&self) -> Option<f64> {
        [self.f, self.e, self.k].into_iter().flatten().reduce(py_min)
    }

    /// Fire every timer whose deadline is <= `now`, in deadline order (F wins over E).
    pub fn handle_timer(&mut self, now: f64) -> Result<Vec<TxAction>, ProtocolError> {
        let mut actions = Vec::new();
        loop {
            // Python sorts (deadline, name) and takes F if it is among the due, else the earliest
            let due = |d: Option<f64>| d.is_some_and(|t| t <= now);
            let timer = if due(self.f) {
                TxInput::TimerF
            } else {
                let mut best: Option<(f64, &str, TxInput)> = None;
                for (d, name, t) in [(self.e, "timer_e", TxInput::TimerE), (self.k, "timer_k", TxInput::TimerK)] {
                    if let Some(d) = d.filter(|d| *d <= now) {
                        if best.is_none_or(|(bd, bn, _)| d < bd || (d == bd && name < bn)) {
                            best = Some((d, name, t));
                        }
                    }
                }
                match best {
                    Some((_, _, t)) => t,
                    None => return Ok(actions),
                }
            };
            match timer {
                TxInput::TimerF => self.f = None,
                TxInput::TimerE => self.e = None,
                _ => self.k = None,
            }
            actions.push(self.fire(timer, now)?);
        }
    }

    fn fire(&mut self, input: TxInput, now: f64) -> Result<TxAction, ProtocolError> {
        let (action, new_state) = transition(self.state, input)?;
        let old = self.state;
        self.state = new_state;
        if action == TxAction::Retransmit {
            self.retransmissions += 1;
            self.e_interval = self.timers.next_e(self.e_interval);
            self.e = Some(now + self.e_interval);
        }
        if new_state != old {
            self.enter(new_state, now)?;
        }
        Ok(action)
    }

    fn enter(&mut self, state: TxState, now: f64) -> Result<(), ProtocolError> {
        match state {
            TxState::Completed => {
                self.e = None;
                self.f = None;
                self.k = None;
                if self.reliable {
                    self.fire(TxInput::TimerK, now)?;
                } else {
                    self.k = Some(now + self.timers.t4);
                }
            }
            TxState::Terminated => {
                self.e = None;
                self.f = None;
                self.k = None;
            }
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
    fn timer_e_doubles_to_t2_and_f_wins() {
        let mut tx = NonInviteClientTransaction::new(0.0, false, Timers::default());
        let mut sent = vec![];
        let mut now = 0.0;
        while let Some(t) = tx.next_timer() {
            now = t;
            let actions = tx.handle_timer(now).expect("valid");
            if actions.contains(&TxAction::Timeout) {
                break;
            }
            sent.push(now);
        }
        assert_eq!(&sent[..5], &[0.5, 1.5, 3.5, 7.5, 11.5]);
        assert_eq!(now, 32.0);
        assert_eq!(tx.state, TxState::Terminated);
    }

    #[test]
    fn final_then_k_on_unreliable_and_at_once_on_reliable() {
        let mut tx = NonInviteClientTransaction::new(0.0, false, Timers::default());
        assert_eq!(tx.receive_response(200, 0.1), Ok(TxAction::PassFinal));
        assert_eq!(tx.next_timer(), Some(5.1));
        assert_eq!(tx.receive_response(200, 0.2), Ok(TxAction::None));
        let mut tx = NonInviteClientTransaction::new(0.0, true, Timers::default());
        assert_eq!(tx.receive_response(200, 0.1), Ok(TxAction::PassFinal));
        assert_eq!(tx.state, TxState::Terminated);
        assert!(tx.receive_response(99, 0.1).is_err());
        assert!(transition(TxState::Terminated, TxInput::TimerE).is_err());
    }
}
