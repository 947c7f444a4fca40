//! What the fleet asks of one endpoint's registration machine (`sipload_core`'s, or a test's), and the
//! events it reads from it: those of `sipload/sip/registration.py` with the fields the engine uses.

use sipload_core::message::Message;
pub use sipload_core::registration::{Op, RegState as State};

/// One event of a machine (the Python events `OpStarted`, `Challenged`, `Registered`, `Unregistered`,
/// `Failed`, `Retransmitted`). Times are seconds on the fleet's clock.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    OpStarted {
        op: Op,
        scheduled: f64,
        now: f64,
    },
    Challenged {
        op: Op,
        sent_at: f64,
        now: f64,
    },
    Registered {
        op: Op,
        started_at: f64,
        last_sent_at: f64,
        now: f64,
    },
    Unregistered {
        started_at: f64,
        last_sent_at: f64,
        now: f64,
    },
    /// `reason` is a `FailureReason` value ("timeout", "auth_rejected", ...); `final_` false: a retry
    /// is scheduled.
    Failed {
        op: Op,
        reason: &'static str,
        status: Option<u16>,
        final_: bool,
    },
    Retransmitted {
        op: Op,
    },
}

/// One endpoint's registration machine, driven with `now` in seconds.
pub trait Machine {
    fn call_id(&self) -> &[u8];
    /// The Contact URI it registers (for the endpoint's report).
    fn contact(&self) -> &[u8] {
        &[]
    }
    /// The user part of its AoR (for the endpoint's report).
    fn user(&self) -> &[u8] {
        &[]
    }
    fn state(&self) -> State;
    fn start(&mut self, now: f64);
    fn stop(&mut self, now: f64);
    /// A response matched by Call-ID; false when it is not for the request in flight (stray).
    fn receive(&mut self, response: &Message, now: f64, arrived: f64) -> bool;
    fn next_timer(&self) -> Option<f64>;
    fn handle_timer(&mut self, now: f64);
    /// Datagrams to send, appended to `out`, and events, appended to `events`.
    fn take_output(&mut self, out: &mut Vec<Vec<u8>>, events: &mut Vec<Event>);
    /// Until when the registrar may hold our binding.
    fn bound_until(&self) -> Option<f64>;
    /// Stopped or gave up: nothing more will be sent.
    fn finished(&self) -> bool;
    /// An error the last input raised (a bug in the machine: counted, the run goes on).
    fn take_error(&mut self) -> Option<String> {
        None
    }
}
