//! The fleet's endpoint: `sipload_core`'s registration machine with its group's profile and an id
//! generator of its own, seen through [`Machine`].
//!
//! A [`ProtocolError`](sipload_core::registration::ProtocolError) (a bug: an input the table does not
//! allow) never ends a run: it is kept for the fleet, which counts it as an internal error.

use std::rc::Rc;

use sipload_core::message::Message;
use sipload_core::registration::{self as reg, Profile, RegEvent, Registration, SplitMix};

use crate::machine::{Event, Machine, State};

pub struct Endpoint {
    pub reg: Registration,
    profile: Rc<Profile>,
    ids: SplitMix,
    error: Option<String>,
    events: Vec<RegEvent>,
}

impl Endpoint {
    pub fn new(reg: Registration, profile: Rc<Profile>, ids: SplitMix) -> Self {
        Endpoint { reg, profile, ids, error: None, events: Vec::new() }
    }

    fn keep(&mut self, result: Result<(), reg::ProtocolError>) {
        if let Err(e) = result {
            self.error = Some(e.0);
        }
    }
}

impl Machine for Endpoint {
    fn call_id(&self) -> &[u8] {
        &self.reg.call_id
    }

    fn state(&self) -> State {
        self.reg.state
    }

    fn start(&mut self, now: f64) {
        let r = self.reg.start(&self.profile, &mut self.ids, now);
        self.keep(r);
    }

    fn stop(&mut self, now: f64) {
        let r = self.reg.stop(&self.profile, &mut self.ids, now);
        self.keep(r);
    }

    fn receive(&mut self, response: &Message, now: f64, arrived: f64) -> bool {
        match self.reg.receive(&self.profile, &mut self.ids, response, now, Some(arrived)) {
            Ok(taken) => taken,
            Err(e) => {
                self.error = Some(e.0);
                true
            }
        }
    }

    fn next_timer(&self) -> Option<f64> {
        self.reg.next_timer(&self.profile)
    }

    fn handle_timer(&mut self, now: f64) {
        let r = self.reg.handle_timer(&self.profile, &mut self.ids, now);
        self.keep(r);
    }

    fn take_outgoing(&mut self, out: &mut Vec<Vec<u8>>) {
        self.reg.drain_into(out, &mut self.events);
    }

    fn take_events(&mut self, out: &mut Vec<Event>) {
        self.reg.drain_into(&mut Vec::new(), &mut self.events);
        for e in self.events.drain(..) {
            out.push(match e {
                RegEvent::OpStarted { op: o, scheduled, now } => Event::OpStarted { op: o, scheduled, now },
                RegEvent::Challenged { op: o, sent_at, now } => Event::Challenged { op: o, sent_at, now },
                RegEvent::Registered { op: o, started_at, last_sent_at, now, .. } => {
                    Event::Registered { op: o, started_at, last_sent_at, now }
                }
                RegEvent::Unregistered { started_at, last_sent_at, now } => {
                    Event::Unregistered { started_at, last_sent_at, now }
                }
                RegEvent::Failed { op: o, reason, status, final_, .. } => {
                    Event::Failed { op: o, reason: reason.name(), status, final_ }
                }
                RegEvent::Retransmitted { op: o } => Event::Retransmitted { op: o },
            });
        }
    }

    fn bound_until(&self) -> Option<f64> {
        self.reg.bound_until
    }

    fn finished(&self) -> bool {
        self.reg.finished()
    }

    fn take_error(&mut self) -> Option<String> {
        self.error.take()
    }
}
