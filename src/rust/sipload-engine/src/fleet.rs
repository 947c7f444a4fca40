//! The endpoints of one worker on one schedule: `sipload/engine/worker.py`'s scheduler and
//! `sipload/engine/endpoint.py`'s flush, for plain UDP groups, sans-IO.
//!
//! Theory of operation: the fleet owns every endpoint's machine, a map Call-ID -> endpoint, one timer
//! per endpoint (its machine's `next_timer`, in an indexed heap) and the open-loop arrival schedule (each
//! registration has an intended start; a late start is measured, never hidden; `max_in_flight` initial
//! registrations at most are unanswered at once). The loop around it calls [`Fleet::receive`] for each
//! datagram and [`Fleet::poll`] when it wakes, sends what [`Fleet::take_outgoing`] gives, and sleeps
//! until [`Fleet::next_wake`] or the next datagram. [`Fleet::request_stop`] ends arrivals and
//! unregisters every endpoint that may be bound, paced over at most half the unregister timeout; `poll`
//! answers `false` once every machine finished or the timeout passed (what did not finish is counted as
//! interrupted, as `Worker._abandon` does). Every event a machine emits becomes counts in the
//! [`Recorder`] exactly as `Endpoint.flush` records it.

use std::collections::VecDeque;

use sipload_core::message::{parse_message_into, Message, StartLine};
use sipload_io::{Schedule, Timers};

use crate::call_ids::CallIds;
use crate::machine::{Event, Machine, Op, State};
use crate::recorder::{micros, Phase, Recorder, Snapshot};

/// How the fleet runs.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    /// The intended starts of the scenario's registrations (all shards: endpoint `index` starts at
    /// `arrival_time(index)`).
    pub schedule: Schedule,
    /// Initial registrations unanswered at once, at most.
    pub max_in_flight: u64,
}

/// Counts beside the recorder (the worker report's and the gauges').
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FleetCounters {
    pub arrivals_started: u64,
    pub first_arrival: Option<f64>,
    pub last_arrival: Option<f64>,
    pub stray: u64,
    pub unparseable: u64,
    pub in_flight: u64,
    pub retries: u64,
    pub unregister_timed_out: u64,
    pub internal_errors: u64,
    pub last_internal_error: String,
}

/// One endpoint's line in the results (`EndpointState`'s fields that the fleet knows).
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointReport {
    pub index: u64,
    pub state: String,
    pub last_status: Option<u16>,
    pub failure_reason: &'static str,
    pub registrations: u32,
    pub refreshes: u32,
    pub call_id: Vec<u8>,
    pub contact: Vec<u8>,
}

/// Every endpoint's report as columns (the end of a run: a million [`EndpointReport`]s would each
/// own three allocations). Row `i` is endpoint `index[i]`; texts are `names[code]`; `last_status` 0:
/// none; `users` / `call_ids` / `contacts`: one buffer each, row `i` ending at `..._ends[i]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReportTable {
    pub index: Vec<u64>,
    pub state: Vec<u8>,
    pub state_names: Vec<String>,
    pub last_status: Vec<u16>,
    pub reason: Vec<u8>,
    pub reason_names: Vec<&'static str>,
    pub registrations: Vec<u32>,
    pub refreshes: Vec<u32>,
    pub users: Vec<u8>,
    pub user_ends: Vec<u32>,
    pub call_ids: Vec<u8>,
    pub call_id_ends: Vec<u32>,
    pub contacts: Vec<u8>,
    pub contact_ends: Vec<u32>,
}

/// The code of `name` in `names`, added if new (a handful of distinct values: a scan is enough).
fn code_of<T: PartialEq + Clone>(names: &mut Vec<T>, name: &T) -> u8 {
    match names.iter().position(|n| n == name) {
        Some(i) => i as u8,
        None => {
            names.push(name.clone());
            (names.len() - 1) as u8
        }
    }
}

/// One endpoint of the fleet: its machine and what the fleet keeps beside it.
pub struct Slot<M> {
    machine: M,
    index: u64,
    socket: u16,
    intended: f64,
    op_intended: f64,
    deadline: Option<u64>,
    last_status: Option<u16>,
    failure: Option<&'static str>,
    registrations: u32,
    refreshes: u32,
    registering: bool,
}

struct Stopping {
    queue: VecDeque<u32>,
    started: f64,
    rate: f64,
    sent: u64,
    deadline: f64,
    next_check: f64,
}

impl<M> Slot<M> {
    /// The endpoint of scenario index `index` with its machine, sending from socket `socket`.
    pub fn new(machine: M, index: u64, socket: u16) -> Self {
        Slot {
            machine,
            index,
            socket,
            intended: 0.0,
            op_intended: 0.0,
            deadline: None,
            last_status: None,
            failure: None,
            registrations: 0,
            refreshes: 0,
            registering: false,
        }
    }
}

/// An endpoint's final state as the results write it ("registered", "failed:timeout", ...).
fn state_text<M: Machine>(s: &Slot<M>) -> String {
    match (s.machine.state(), s.failure) {
        (State::Failed, Some(reason)) => format!("failed:{reason}"),
        (state, _) => state.value().to_string(),
    }
}

/// Deadlines as integer ns for the heap, rounded up: a timer pops only once `now` reached it.
fn deadline_ns(t: f64) -> u64 {
    let ns = (t * 1e9).ceil();
    if ns.is_nan() || ns <= 0.0 {
        0
    } else if ns >= u64::MAX as f64 {
        u64::MAX
    } else {
        ns as u64
    }
}

fn now_ns(t: f64) -> u64 {
    let ns = (t * 1e9).floor();
    if ns.is_nan() || ns <= 0.0 {
        0
    } else if ns >= u64::MAX as f64 {
        u64::MAX
    } else {
        ns as u64
    }
}

fn phase_of(op: Op) -> Phase {
    match op {
        Op::Register => Phase::Register,
        Op::Refresh => Phase::Refresh,
        Op::Unregister => Phase::Unregister,
    }
}

pub struct Fleet<M> {
    config: FleetConfig,
    slots: Vec<Slot<M>>,
    by_call_id: CallIds,
    timers: Timers,
    recorder: Recorder,
    counters: FleetCounters,
    start: Option<f64>,
    next_arrival: usize,
    previous_intended: f64,
    stopping: Option<Stopping>,
    outgoing: Vec<(u16, Vec<u8>)>,
    scratch_out: Vec<Vec<u8>>,
    scratch_events: Vec<Event>,
    /// Every datagram is parsed into this one.
    scratch_message: Message,
}

impl<M: Machine> Fleet<M> {
    /// A fleet of `slots` ([`Slot::new`]), in index order. They are taken as they are, not copied:
    /// a million of them are built once.
    pub fn new(config: FleetConfig, slots: Vec<Slot<M>>) -> Self {
        let mut by_call_id = CallIds::with_capacity(slots.len());
        for (i, slot) in slots.iter().enumerate() {
            by_call_id.insert(slot.machine.call_id(), i as u32, |j| slots[j as usize].machine.call_id());
        }
        let timers = Timers::new(slots.len() as u32);
        Fleet {
            config,
            slots,
            by_call_id,
            timers,
            recorder: Recorder::new(),
            counters: FleetCounters::default(),
            start: None,
            next_arrival: 0,
            previous_intended: 0.0,
            stopping: None,
            outgoing: Vec::new(),
            scratch_out: Vec::new(),
            scratch_events: Vec::new(),
            scratch_message: Message::empty(),
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn counters(&self) -> &FleetCounters {
        &self.counters
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.is_some()
    }

    /// The run starts: arrivals are due from `now` on.
    pub fn start(&mut self, now: f64) {
        if self.start.is_none() {
            self.start = Some(now);
        }
    }

    /// The intended start of the next arrival, if any is left (and the run started).
    fn pending_arrival(&self) -> Option<f64> {
        let start = self.start?;
        if self.stopping.is_some() {
            return None;
        }
        let slot = self.slots.get(self.next_arrival)?;
        let t = self.config.schedule.arrival_time(slot.index);
        Some(start + if t > self.previous_intended { t } else { self.previous_intended })
    }

    /// One datagram from the registrar, received at `now`, arrived (kernel timestamp) at `arrived`.
    pub fn receive(&mut self, data: &[u8], now: f64, arrived: f64) {
        if parse_message_into(data, &mut self.scratch_message).is_err() {
            self.counters.unparseable += 1;
            return;
        }
        let msg = &self.scratch_message;
        let StartLine::Response { status, .. } = msg.start else {
            self.counters.stray += 1;
            return;
        };
        let slots = &self.slots;
        let call_id_of = |j: u32| slots.get(j as usize).map_or(&b""[..], |s| s.machine.call_id());
        let Some(i) = msg.get("call-id").and_then(|v| self.by_call_id.get(sipload_core::text::py_strip(v), call_id_of))
        else {
            self.counters.stray += 1;
            return;
        };
        let Some(slot) = self.slots.get_mut(i as usize) else {
            self.counters.stray += 1;
            return;
        };
        if !slot.machine.receive(msg, now, arrived) {
            self.counters.stray += 1;
            return;
        }
        self.recorder.response(status);
        if status >= 200 {
            slot.last_status = Some(status);
        }
        self.after_input(i);
    }

    /// Arrivals due (as `max_in_flight` allows), paced unregistrations, timers due. False once the
    /// stop finished (every machine done, or the unregister timeout passed).
    pub fn poll(&mut self, now: f64) -> bool {
        while self.counters.in_flight < self.config.max_in_flight {
            match self.pending_arrival() {
                Some(intended) if intended <= now => {
                    let i = self.next_arrival;
                    self.next_arrival += 1;
                    self.previous_intended = intended - self.start.unwrap_or(0.0);
                    if self.counters.first_arrival.is_none() {
                        self.counters.first_arrival = Some(now);
                    }
                    self.counters.last_arrival = Some(now);
                    self.counters.arrivals_started += 1;
                    if let Some(slot) = self.slots.get_mut(i) {
                        slot.intended = intended;
                        slot.machine.start(now);
                    }
                    self.after_input(i as u32);
                }
                _ => break,
            }
        }
        if let Some(stop) = self.stopping.as_mut() {
            let mut due = Vec::new();
            while !stop.queue.is_empty() && stop.started + stop.sent as f64 / stop.rate <= now {
                if let Some(i) = stop.queue.pop_front() {
                    due.push(i);
                }
                stop.sent += 1;
            }
            for i in due {
                if let Some(slot) = self.slots.get_mut(i as usize) {
                    slot.machine.stop(now);
                }
                self.after_input(i);
            }
        }
        let limit = now_ns(now);
        while let Some((key, deadline)) = self.timers.pop_due(limit) {
            let Some(slot) = self.slots.get_mut(key as usize) else { continue };
            if slot.deadline != Some(deadline) {
                continue;
            }
            slot.deadline = None;
            slot.machine.handle_timer(now);
            self.after_input(key);
        }
        self.check_stop(now)
    }

    fn check_stop(&mut self, now: f64) -> bool {
        let Some(stop) = self.stopping.as_mut() else { return true };
        if !stop.queue.is_empty() {
            return true;
        }
        if now >= stop.next_check {
            if self.slots.iter().all(|s| s.machine.finished()) {
                return false;
            }
            stop.next_check = now + 0.05;
        }
        if now >= stop.deadline {
            self.abandon();
            return false;
        }
        true
    }

    /// The unregister timeout passed: what did not finish is interrupted.
    fn abandon(&mut self) {
        for slot in &self.slots {
            match slot.machine.state() {
                State::Unregistering => {
                    self.counters.unregister_timed_out += 1;
                    self.recorder.failure(Phase::Unregister, "interrupted");
                }
                State::Registering => self.recorder.failure(Phase::Register, "interrupted"),
                State::Refreshing | State::Backoff => self.recorder.failure(Phase::Refresh, "interrupted"),
                _ => {}
            }
        }
    }

    /// End arrivals; unregister (when `unregister`) every endpoint that started, paced so that the
    /// burst spreads over at most half of `unregister_timeout` and is never slower than `end_rate`.
    /// Returns false when nothing is left to wait for.
    pub fn request_stop(&mut self, now: f64, unregister: bool, unregister_timeout: f64, end_rate: f64) -> bool {
        if self.stopping.is_some() {
            return true;
        }
        let mut queue = VecDeque::new();
        if unregister {
            for i in 0..self.slots.len() {
                let idle = self.slots.get(i).is_some_and(|s| s.machine.state() == State::Idle);
                if idle {
                    if let Some(slot) = self.slots.get_mut(i) {
                        slot.machine.stop(now); // never started: nothing to undo
                    }
                } else {
                    queue.push_back(i as u32);
                }
            }
        }
        let spread = (0.5 * unregister_timeout).max(1e-3);
        let rate = end_rate.max(queue.len() as f64 / spread).max(1e-9);
        self.stopping =
            Some(Stopping { queue, started: now, rate, sent: 0, deadline: now + unregister_timeout, next_check: now });
        if !unregister {
            return false;
        }
        true
    }

    /// When the fleet has something to do next without a datagram (None: nothing until one arrives).
    pub fn next_wake(&self) -> Option<f64> {
        let mut wake = f64::INFINITY;
        if let Some(deadline) = self.timers.next_deadline() {
            wake = wake.min(deadline as f64 / 1e9);
        }
        if self.counters.in_flight < self.config.max_in_flight {
            if let Some(t) = self.pending_arrival() {
                wake = wake.min(t);
            }
        }
        if let Some(stop) = &self.stopping {
            if stop.queue.is_empty() {
                wake = wake.min(stop.next_check).min(stop.deadline);
            } else {
                wake = wake.min(stop.started + stop.sent as f64 / stop.rate);
            }
        }
        wake.is_finite().then_some(wake)
    }

    /// Datagrams to send, with the socket each leaves from.
    pub fn take_outgoing(&mut self) -> std::vec::Drain<'_, (u16, Vec<u8>)> {
        self.outgoing.drain(..)
    }

    /// Endpoints the registrar may hold bound at `now`.
    pub fn bound(&self, now: f64) -> u64 {
        self.slots.iter().filter(|s| s.machine.bound_until().is_some_and(|u| u > now)).count() as u64
    }

    /// What the interval counted.
    pub fn take_interval(&mut self) -> Snapshot {
        self.recorder.take()
    }

    pub fn reports(&self) -> Vec<EndpointReport> {
        self.reports_of(0, self.slots.len())
    }

    /// The reports of endpoints `start..start + count` (in the fleet's order; past the end: fewer).
    pub fn reports_of(&self, start: usize, count: usize) -> Vec<EndpointReport> {
        self.slots
            .iter()
            .skip(start)
            .take(count)
            .map(|s| EndpointReport {
                index: s.index,
                state: state_text(s),
                last_status: s.last_status,
                failure_reason: s.failure.unwrap_or(""),
                registrations: s.registrations,
                refreshes: s.refreshes,
                call_id: s.machine.call_id().to_vec(),
                contact: s.machine.contact().to_vec(),
            })
            .collect()
    }

    /// Every endpoint's report, as columns (the same values as [`Fleet::reports`]).
    pub fn report_table(&self) -> ReportTable {
        let n = self.slots.len();
        let mut t = ReportTable {
            index: Vec::with_capacity(n),
            state: Vec::with_capacity(n),
            last_status: Vec::with_capacity(n),
            reason: Vec::with_capacity(n),
            registrations: Vec::with_capacity(n),
            refreshes: Vec::with_capacity(n),
            user_ends: Vec::with_capacity(n),
            call_id_ends: Vec::with_capacity(n),
            contact_ends: Vec::with_capacity(n),
            ..ReportTable::default()
        };
        for s in &self.slots {
            t.index.push(s.index);
            let state = code_of(&mut t.state_names, &state_text(s));
            t.state.push(state);
            t.last_status.push(s.last_status.unwrap_or(0));
            let reason = code_of(&mut t.reason_names, &s.failure.unwrap_or(""));
            t.reason.push(reason);
            t.registrations.push(s.registrations);
            t.refreshes.push(s.refreshes);
            t.users.extend_from_slice(s.machine.user());
            t.user_ends.push(t.users.len() as u32);
            t.call_ids.extend_from_slice(s.machine.call_id());
            t.call_id_ends.push(t.call_ids.len() as u32);
            t.contacts.extend_from_slice(s.machine.contact());
            t.contact_ends.push(t.contacts.len() as u32);
        }
        t
    }

    /// After any input of endpoint `i`: send what it produced, record its events, reschedule its timer.
    fn after_input(&mut self, i: u32) {
        let Some(slot) = self.slots.get_mut(i as usize) else { return };
        if let Some(error) = slot.machine.take_error() {
            self.counters.internal_errors += 1;
            self.counters.last_internal_error = error.chars().take(300).collect();
        }
        slot.machine.take_output(&mut self.scratch_out, &mut self.scratch_events);
        for data in self.scratch_out.drain(..) {
            self.outgoing.push((slot.socket, data));
        }
        let rec = &mut self.recorder;
        let counters = &mut self.counters;
        for event in self.scratch_events.drain(..) {
            match event {
                Event::OpStarted { op, scheduled, now } => {
                    rec.attempt(phase_of(op));
                    match op {
                        Op::Register => {
                            slot.op_intended = slot.intended;
                            rec.schedule_lag(micros(now - slot.intended));
                            counters.in_flight += 1;
                            slot.registering = true;
                        }
                        Op::Refresh => {
                            slot.op_intended = scheduled;
                            rec.schedule_lag(micros(now - scheduled));
                        }
                        Op::Unregister => slot.op_intended = scheduled,
                    }
                }
                Event::Registered { op, started_at, last_sent_at, now } => {
                    let phase = phase_of(op);
                    rec.record(phase, micros(now - slot.op_intended), micros(now - started_at));
                    let auth = micros(now - last_sent_at);
                    rec.record(Phase::Auth, auth, auth);
                    rec.success(phase);
                    slot.failure = None;
                    if op == Op::Register {
                        slot.registrations += 1;
                        counters.in_flight = counters.in_flight.saturating_sub(1);
                        slot.registering = false;
                    } else {
                        slot.refreshes += 1;
                    }
                }
                Event::Challenged { op, sent_at, now } => {
                    if op == Op::Register {
                        rec.record(Phase::Challenge, micros(now - slot.op_intended), micros(now - sent_at));
                    }
                }
                Event::Unregistered { started_at, now, .. } => {
                    rec.record(Phase::Unregister, micros(now - slot.op_intended), micros(now - started_at));
                    rec.success(Phase::Unregister);
                }
                Event::Failed { op, reason, status, final_ } => {
                    if status.is_some() {
                        slot.last_status = status;
                    }
                    if !final_ {
                        counters.retries += 1;
                        continue;
                    }
                    slot.failure = Some(reason);
                    rec.failure(phase_of(op), reason);
                    if op == Op::Register {
                        counters.in_flight = counters.in_flight.saturating_sub(1);
                        slot.registering = false;
                    }
                }
                Event::Retransmitted { .. } => rec.retransmission(),
            }
        }
        let deadline = slot.machine.next_timer().map(deadline_ns);
        if deadline != slot.deadline {
            slot.deadline = deadline;
            match deadline {
                Some(d) => {
                    let _ = self.timers.schedule(i, d);
                }
                None => {
                    self.timers.cancel(i);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scripted::{ok, Scripted};

    fn fleet(n: u32, rate: f64, max_in_flight: u64, shard: (u64, u64)) -> Fleet<Scripted> {
        let schedule = Schedule::constant(rate).expect("a valid rate");
        let endpoints = (0..n).map(|k| Slot::new(Scripted::new(k), shard.0 + u64::from(k) * shard.1, 0)).collect();
        Fleet::new(FleetConfig { schedule, max_in_flight }, endpoints)
    }

    fn sent(f: &mut Fleet<Scripted>) -> Vec<Vec<u8>> {
        f.take_outgoing().map(|(_, d)| d).collect()
    }

    #[test]
    fn arrivals_start_on_the_schedule_of_their_scenario_index() {
        // shard 1 of 2 at 10/s: its endpoints are scenario indexes 1, 3, 5: due at 0.1, 0.3, 0.5 s
        let mut f = fleet(3, 10.0, 100, (1, 2));
        f.start(100.0);
        assert!(f.poll(100.05));
        assert!(sent(&mut f).is_empty());
        assert_eq!(f.next_wake(), Some(100.1));
        f.poll(100.35);
        assert_eq!(sent(&mut f), vec![b"c0".to_vec(), b"c1".to_vec()]);
        let snap = f.take_interval();
        assert_eq!(snap.attempts, vec![(Phase::Register, 2)]);
        // lags 250 ms and 50 ms
        assert_eq!(snap.schedule_lag.iter().map(|(_, n)| n).sum::<u64>(), 2);
        assert_eq!(f.counters().in_flight, 2);
    }

    #[test]
    fn max_in_flight_holds_arrivals_until_an_answer_frees_a_slot() {
        let mut f = fleet(5, 1000.0, 2, (0, 1));
        f.start(0.0);
        f.poll(1.0);
        assert_eq!(sent(&mut f).len(), 2);
        assert_eq!(f.next_wake(), None); // nothing due until an answer comes
        f.receive(&ok(b"c0"), 1.01, 1.005);
        f.poll(1.01);
        assert_eq!(sent(&mut f), vec![b"c2".to_vec()]);
        let snap = f.take_interval();
        assert_eq!(snap.successes, vec![(Phase::Register, 1)]);
        assert_eq!(snap.responses, vec![(200, 1)]);
        f.receive(&ok(b"nobody"), 1.02, 1.02);
        f.receive(b"garbage", 1.02, 1.02);
        assert_eq!((f.counters().stray, f.counters().unparseable), (1, 1));
    }

    #[test]
    fn a_stop_unregisters_the_started_paced_and_ends_when_all_finished() {
        let mut f = fleet(4, 1000.0, 10, (0, 1));
        f.start(0.0);
        f.poll(0.0025); // endpoints 0, 1 and 2 started
        for d in sent(&mut f) {
            f.receive(&ok(&d), 0.003, 0.003);
        }
        assert_eq!(f.bound(0.003), 3);
        assert!(f.request_stop(0.01, true, 2.0, 1.0)); // 3 to unregister over at most 1 s
        assert!(f.poll(0.01));
        assert_eq!(sent(&mut f).len(), 1); // paced: one now, the next 1/3 s later
        assert!((f.next_wake().unwrap_or(0.0) - (0.01 + 1.0 / 3.0)).abs() < 1e-9);
        assert!(f.poll(0.7));
        let unregistering = sent(&mut f);
        assert_eq!(unregistering.len(), 2);
        for d in unregistering.iter().chain([b"c0".to_vec()].iter()) {
            f.receive(&ok(d), 0.8, 0.8);
        }
        assert!(!f.poll(0.8));
        let snap = f.take_interval();
        assert!(snap.successes.contains(&(Phase::Unregister, 3)));
        let states: Vec<String> = f.reports().into_iter().map(|r| r.state).collect();
        assert_eq!(states, vec!["unregistered"; 4]);
    }

    #[test]
    fn unanswered_unregistrations_are_interrupted_at_the_timeout() {
        let mut f = fleet(2, 1000.0, 10, (0, 1));
        f.start(0.0);
        f.poll(0.01);
        for d in sent(&mut f) {
            f.receive(&ok(&d), 0.011, 0.011);
        }
        f.request_stop(0.02, true, 1.0, 1000.0);
        assert!(f.poll(0.5));
        assert!(!f.poll(1.02));
        assert_eq!(f.counters().unregister_timed_out, 2);
        assert_eq!(f.take_interval().failures, vec![(Phase::Unregister, "interrupted", 2)]);
    }

    /// The table's rows as reports.
    fn rows(t: &ReportTable) -> Vec<EndpointReport> {
        let text = |buf: &[u8], ends: &[u32], i: usize| {
            let start = if i == 0 { 0 } else { ends[i - 1] as usize };
            buf[start..ends[i] as usize].to_vec()
        };
        (0..t.index.len())
            .map(|i| EndpointReport {
                index: t.index[i],
                state: t.state_names[t.state[i] as usize].clone(),
                last_status: (t.last_status[i] != 0).then_some(t.last_status[i]),
                failure_reason: t.reason_names[t.reason[i] as usize],
                registrations: t.registrations[i],
                refreshes: t.refreshes[i],
                call_id: text(&t.call_ids, &t.call_id_ends, i),
                contact: text(&t.contacts, &t.contact_ends, i),
            })
            .collect()
    }

    #[test]
    fn the_report_table_holds_the_reports() {
        let mut f = fleet(5, 1000.0, 10, (3, 2));
        f.start(0.0);
        f.poll(0.01);
        let out = sent(&mut f);
        for d in &out[..3] {
            f.receive(&ok(d), 0.011, 0.011); // two left registering
        }
        f.request_stop(0.02, true, 1.0, 1000.0);
        f.poll(0.5);
        f.poll(1.02);
        let reports = f.reports();
        let states: Vec<&str> = reports.iter().map(|r| r.state.as_str()).collect();
        assert!(states.iter().collect::<std::collections::HashSet<_>>().len() > 1, "a mix of states: {states:?}");
        let table = f.report_table();
        assert_eq!(rows(&table), reports);
        assert_eq!(table.user_ends.len(), 5); // the scripted machine has no user
        assert_eq!(table.index, vec![3, 5, 7, 9, 11]);
        assert!(table.state_names.len() < table.index.len()); // each text once
        assert_eq!(rows(&Fleet::<Scripted>::new(f.config.clone(), vec![]).report_table()), vec![]);
    }
}
