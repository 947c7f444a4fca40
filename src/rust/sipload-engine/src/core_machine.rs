//! sipload-core's registration machine as the fleet's [`Machine`]: its events narrowed to the fields
//! the fleet reads, and what the Python engine does with an exception out of a machine (a bug or a
//! registrar the machine cannot follow: `Worker._internal_error`) done here: counted, the message kept,
//! the machine left as it was.

use sipload_core::ids::Ids;
use sipload_core::message::Message;
use sipload_core::registration::{MachineError, RegEvent, Registration};

use crate::machine::{Event, Machine, State};

/// A core machine and the errors it returned (the Python engine's `internal_errors`).
#[derive(Debug, Clone)]
pub struct CoreMachine<I: Ids> {
    pub inner: Registration<I>,
    pub errors: u32,
    pub last_error: Option<Box<MachineError>>,
    /// The last error, not yet taken by the fleet ([`Machine::take_error`]).
    unreported: bool,
}

impl<I: Ids> CoreMachine<I> {
    pub fn new(inner: Registration<I>) -> Self {
        CoreMachine { inner, errors: 0, last_error: None, unreported: false }
    }

    fn note<T: Default>(&mut self, result: Result<T, MachineError>) -> T {
        result.unwrap_or_else(|e| {
            self.errors += 1;
            self.last_error = Some(Box::new(e));
            self.unreported = true;
            T::default()
        })
    }
}

/// An error as `Worker._internal_error` words it: `f"{type(exc).__name__}: {exc}"`.
pub fn describe(e: &MachineError) -> String {
    match e {
        MachineError::Protocol(message) => format!("ProtocolError: {}", String::from_utf8_lossy(message)),
        MachineError::Parse(e) => format!("ParseError: {e}"),
        MachineError::Auth(e) => format!("ValueError: {}", e.0),
    }
}

/// The fleet's view of one core event.
pub fn event(e: RegEvent) -> Event {
    match e {
        RegEvent::OpStarted { op: o, scheduled, now } => Event::OpStarted { op: o, scheduled, now },
        RegEvent::Challenged { op: o, sent_at, now } => Event::Challenged { op: o, sent_at, now },
        RegEvent::Registered { op: o, started_at, last_sent_at, now, .. } => {
            Event::Registered { op: o, started_at, last_sent_at, now }
        }
        RegEvent::Unregistered { started_at, last_sent_at, now } => {
            Event::Unregistered { started_at, last_sent_at, now }
        }
        RegEvent::Failed { op: o, reason, status, final_, .. } => {
            Event::Failed { op: o, reason: reason.value(), status, final_ }
        }
        RegEvent::Retransmitted { op: o } => Event::Retransmitted { op: o },
    }
}

impl<I: Ids> Machine for CoreMachine<I> {
    fn call_id(&self) -> &[u8] {
        self.inner.call_id()
    }

    fn contact(&self) -> &[u8] {
        self.inner.contact()
    }

    fn user(&self) -> &[u8] {
        self.inner.user()
    }

    fn state(&self) -> State {
        self.inner.state
    }

    fn start(&mut self, now: f64) {
        let r = self.inner.start(now);
        self.note(r)
    }

    fn stop(&mut self, now: f64) {
        let r = self.inner.stop(now);
        self.note(r)
    }

    fn receive(&mut self, response: &Message, now: f64, arrived: f64) -> bool {
        match self.inner.receive(response, now, Some(arrived)) {
            Ok(ours) => ours,
            Err(e) => {
                // out of a response that was ours (Python: receive raised after matching it)
                self.note::<()>(Err(e));
                true
            }
        }
    }

    fn next_timer(&self) -> Option<f64> {
        self.inner.next_timer()
    }

    fn handle_timer(&mut self, now: f64) {
        let r = self.inner.handle_timer(now);
        self.note(r)
    }

    fn take_output(&mut self, out: &mut Vec<Vec<u8>>, events: &mut Vec<Event>) {
        self.inner.take_output(|d| out.push(d), |e| events.push(event(e)));
    }

    fn bound_until(&self) -> Option<f64> {
        self.inner.bound_until
    }

    fn finished(&self) -> bool {
        self.inner.finished()
    }

    fn take_error(&mut self) -> Option<String> {
        if !std::mem::take(&mut self.unreported) {
            return None;
        }
        self.last_error.as_deref().map(describe)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use sipload_core::ids::PyRandom;
    use sipload_core::message::parse_message;
    use sipload_core::registration::Profile;

    use super::*;
    use crate::machine::Op;

    fn machine() -> CoreMachine<PyRandom> {
        let profile = Profile {
            domain: b"sipload.test".to_vec(),
            registrar_uri: b"sip:sipload.test".to_vec(),
            expires: 60,
            ..Profile::default()
        };
        let reg = Registration::new(
            Arc::new(profile),
            b"u1",
            b"sip:u1@127.0.0.1:5080",
            b"127.0.0.1:5080",
            None,
            PyRandom::new(3),
            None,
            1,
        )
        .unwrap();
        CoreMachine::new(reg)
    }

    #[test]
    fn a_registration_through_the_fleets_trait() {
        let mut m = machine();
        m.start(1.0);
        let (mut out, mut events) = (vec![], vec![]);
        m.take_output(&mut out, &mut events);
        let req = parse_message(&out[0]).unwrap();
        let mut text = b"SIP/2.0 200 OK\r\n".to_vec();
        for name in ["via", "call-id", "cseq", "from", "to"] {
            text.extend_from_slice(format!("{name}: ").as_bytes());
            text.extend_from_slice(req.get(name).unwrap());
            text.extend_from_slice(b"\r\n");
        }
        text.extend_from_slice(b"Contact: <sip:u1@127.0.0.1:5080>;expires=60\r\n\r\n");
        assert!(m.receive(&parse_message(&text).unwrap(), 1.2, 1.1));
        m.take_output(&mut out, &mut events);
        assert_eq!(
            events,
            [
                Event::OpStarted { op: Op::Register, scheduled: 1.0, now: 1.0 },
                Event::Registered { op: Op::Register, started_at: 1.0, last_sent_at: 1.0, now: 1.1 }
            ]
        );
        assert_eq!((m.state(), m.bound_until(), m.next_timer()), (State::Registered, Some(61.2), Some(31.2)));
        assert_eq!(m.call_id(), m.inner.call_id());
    }

    #[test]
    fn an_error_is_counted_and_the_run_goes_on() {
        let mut m = machine();
        m.start(0.0);
        m.start(1.0);
        assert_eq!(m.errors, 1);
        assert!(matches!(m.last_error.as_deref(), Some(MachineError::Protocol(_))));
        assert_eq!(m.state(), State::Registering);
        let taken = m.take_error().unwrap();
        assert!(taken == "ProtocolError: registration of u1: no transition for start in registering", "{taken}");
        assert_eq!(m.take_error(), None);
    }

    #[test]
    fn a_workers_machines_share_one_source_drawn_as_pythons_idsource() {
        // Python: ids = IdSource(random.Random(42)); ids.call_id(), ids.tag(), ids.call_id()
        let ids = Arc::new(Mutex::new(PyRandom::new(42)));
        let profile = Arc::new(Profile { domain: b"sipload.test".to_vec(), ..Profile::default() });
        let make = |user: &[u8]| {
            let reg = Registration::new(profile.clone(), user, b"sip:u@h", b"h", None, ids.clone(), None, 1).unwrap();
            CoreMachine::new(reg)
        };
        let (first, second) = (make(b"u0"), make(b"u1"));
        assert_eq!(first.call_id(), b"06671ad11c80317fa3b1799d@sipload");
        assert_eq!(first.inner.from_tag(), b"4668bdd640fb");
        assert_eq!(second.call_id(), b"23b8c1e9392456de3eb13b90@sipload");
    }
}
