//! A registrar-free machine for the engine's tests: REGISTER on start (its datagram is its Call-ID),
//! registered by any 200 with its Call-ID ([`ok`]), unregisters on stop.

use sipload_core::message::Message;

use crate::machine::{Event, Machine, Op, State};

/// A registrar-free machine: REGISTER on start, registered by any 200, unregisters on stop.
pub struct Scripted {
    call_id: Vec<u8>,
    state: State,
    out: Vec<Vec<u8>>,
    events: Vec<Event>,
    started_at: f64,
}

impl Scripted {
    pub fn new(i: u32) -> Self {
        Scripted {
            call_id: format!("c{i}").into_bytes(),
            state: State::Idle,
            out: vec![],
            events: vec![],
            started_at: 0.0,
        }
    }
}

impl Machine for Scripted {
    fn call_id(&self) -> &[u8] {
        &self.call_id
    }
    fn state(&self) -> State {
        self.state
    }
    fn start(&mut self, now: f64) {
        self.state = State::Registering;
        self.started_at = now;
        self.out.push(self.call_id.clone());
        self.events.push(Event::OpStarted { op: Op::Register, scheduled: now, now });
    }
    fn stop(&mut self, now: f64) {
        match self.state {
            State::Registered => {
                self.state = State::Unregistering;
                self.started_at = now;
                self.out.push(self.call_id.clone());
                self.events.push(Event::OpStarted { op: Op::Unregister, scheduled: now, now });
            }
            _ => self.state = State::Unregistered,
        }
    }
    fn receive(&mut self, response: &Message, now: f64, _arrived: f64) -> bool {
        if response.status() != Some(200) {
            return false;
        }
        let (started_at, last_sent_at) = (self.started_at, self.started_at);
        match self.state {
            State::Registering => {
                self.state = State::Registered;
                self.events.push(Event::Registered { op: Op::Register, started_at, last_sent_at, now });
                true
            }
            State::Unregistering => {
                self.state = State::Unregistered;
                self.events.push(Event::Unregistered { started_at, last_sent_at, now });
                true
            }
            _ => false,
        }
    }
    fn next_timer(&self) -> Option<f64> {
        None
    }
    fn handle_timer(&mut self, _now: f64) {}
    fn take_output(&mut self, out: &mut Vec<Vec<u8>>, events: &mut Vec<Event>) {
        out.append(&mut self.out);
        events.append(&mut self.events);
    }
    fn bound_until(&self) -> Option<f64> {
        (self.state == State::Registered).then_some(f64::INFINITY)
    }
    fn finished(&self) -> bool {
        matches!(self.state, State::Unregistered | State::Failed)
    }
}

pub fn ok(call_id: &[u8]) -> Vec<u8> {
    let mut m = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCall-ID: ".to_vec();
    m.extend_from_slice(call_id);
    m.extend_from_slice(b"\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n");
    m
}
