//! The system-call side of the native worker: the fleet's sockets, drained with recvmmsg and written with
//! sendmmsg, on CLOCK_MONOTONIC (Python's `time.monotonic()`).
//!
//! One [`UdpLoop::step`] is one wake-up of the worker: every datagram waiting on every socket goes to the
//! fleet (timed by its kernel receive timestamp; a datagram from another address than the registrar's is
//! counted as foreign and dropped, RFC 3581), then the fleet's due work runs, then everything it wants sent
//! leaves in batches. What the send buffer does not take waits, in order, for the next step.
//!
//! [`UdpLoop::run_until`] is the worker's whole loop between two moments Python cares about (an interval's
//! end, the run's end): step, wait for a datagram or the next deadline, step again, without coming back to
//! Python (whose trio task waits for it in a thread, the GIL released). Its wake-ups are paced by a token
//! bucket ([`Pacing`]): a quiet worker wakes at once for each datagram and at each deadline (up to
//! `quiet_rate` a second), so that a challenge is answered without delay; a busy one (moving more than
//! `busy_above` datagrams a second) at most `busy_rate` times a second, each wake-up handling what arrived
//! or fell due since (answers keep their kernel receive timestamps; a late send is
//! measured from its intended start). On this kind of VM a wake-up from sleep costs tens of microseconds:
//! pacing is what keeps the CPU per registration flat as the rate grows.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sipload_io::udp::CLOCK_MONOTONIC;
use sipload_io::{clock_ns, pause, realtime_offset_ns, Options, Poller, RecvBatch, SendQueue, UdpSocket, Wakeup};

use crate::fleet::Fleet;
use crate::machine::Machine;

/// Datagrams read per recvmmsg, and the largest datagram kept whole (larger: truncated, unparseable).
const BATCH_SLOTS: usize = 64;
const SLOT_BYTES: usize = 65_536;
/// Datagrams waiting per socket for the send buffer, at most; beyond that they are dropped and counted.
const SEND_QUEUE_LIMIT: usize = 1 << 20;

/// CLOCK_MONOTONIC in seconds.
pub fn monotonic() -> f64 {
    clock_ns(CLOCK_MONOTONIC).map_or(0.0, |ns| ns as f64 / 1e9)
}

/// What the loop counted beside the fleet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoopCounters {
    pub foreign: u64,
    pub truncated: u64,
    pub send_errors: u64,
    pub send_dropped: u64,
    pub receive_errors: u64,
    pub last_error: String,
}

/// What one step did.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepOutcome {
    pub received: usize,
    pub sent: usize,
    /// Datagrams still waiting for a full send buffer.
    pub queued: usize,
    /// The fleet still runs (false: the stop finished).
    pub running: bool,
    /// When the fleet has something to do next (monotonic seconds), if anything.
    pub wake: Option<f64>,
}

/// How often the loop may wake: a bucket of `burst` wake-ups refilled at `quiet_rate` a second while
/// the loop moves at most `busy_above` datagrams a second (measured over [`RATE_WINDOW`]), at
/// `busy_rate` beyond. Infinite rates: every datagram and deadline wakes it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pacing {
    pub quiet_rate: f64,
    pub busy_rate: f64,
    pub busy_above: f64,
    pub burst: f64,
}

impl Pacing {
    pub const UNPACED: Pacing =
        Pacing { quiet_rate: f64::INFINITY, busy_rate: f64::INFINITY, busy_above: f64::INFINITY, burst: 1.0 };
}

/// The span over which the loop measures how many datagrams a second it moves.
pub const RATE_WINDOW: f64 = 0.05;

/// The wake-up bucket and the datagram rate that sets its refill.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    pacing: Pacing,
    tokens: f64,
    refilled: f64,
    busy: bool,
    window_start: f64,
    window_datagrams: u64,
}

impl Bucket {
    fn new(pacing: Pacing) -> Self {
        Bucket { pacing, tokens: pacing.burst, refilled: 0.0, busy: false, window_start: 0.0, window_datagrams: 0 }
    }

    fn rate(&self) -> f64 {
        if self.busy {
            self.pacing.busy_rate
        } else {
            self.pacing.quiet_rate
        }
    }

    fn moved(&mut self, datagrams: usize, now: f64) {
        self.window_datagrams += datagrams as u64;
        let span = now - self.window_start;
        if span >= RATE_WINDOW {
            self.busy = self.window_datagrams as f64 / span > self.pacing.busy_above;
            self.window_start = now;
            self.window_datagrams = 0;
        }
    }

    fn refill(&mut self, now: f64) {
        let rate = self.rate();
        self.tokens = if rate.is_infinite() {
            self.pacing.burst
        } else {
            (self.tokens + (now - self.refilled).max(0.0) * rate).min(self.pacing.burst)
        };
        self.refilled = now;
    }

    /// When the next wake-up may come (`now` when a token is there).
    fn ready_at(&self, now: f64) -> f64 {
        if self.tokens >= 1.0 {
            now
        } else {
            now + (1.0 - self.tokens) / self.rate()
        }
    }
}

/// What one [`UdpLoop::run_until`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RunOutcome {
    pub steps: u64,
    pub received: u64,
    pub sent: u64,
    /// The fleet still runs (false: the stop finished).
    pub running: bool,
    /// It returned for a [`Wakeup::wake`] (before `until`).
    pub woken: bool,
}

pub struct UdpLoop {
    sockets: Vec<UdpSocket>,
    queues: Vec<SendQueue>,
    peer: SocketAddr,
    batch: RecvBatch,
    poller: Poller,
    wakeup: Arc<Wakeup>,
    bucket: Bucket,
    counters: LoopCounters,
}

impl UdpLoop {
    /// Sockets bound to `locals` (port 0: the kernel picks), all sending to `peer`.
    pub fn bind(locals: &[SocketAddr], peer: SocketAddr) -> io::Result<Self> {
        let options = Options::default();
        let sockets = locals.iter().map(|a| UdpSocket::bind(*a, &options)).collect::<io::Result<Vec<_>>>()?;
        let mut batch = RecvBatch::new(BATCH_SLOTS, SLOT_BYTES);
        batch.set_clock_offset_ns(realtime_offset_ns(CLOCK_MONOTONIC)?);
        let queues = sockets.iter().map(|_| SendQueue::new(SEND_QUEUE_LIMIT)).collect();
        let poller = Poller::new()?;
        for socket in &sockets {
            poller.add(socket.raw_fd())?;
        }
        let wakeup = Arc::new(Wakeup::new()?);
        poller.add(wakeup.raw_fd())?;
        let bucket = Bucket::new(Pacing::UNPACED);
        Ok(UdpLoop { sockets, queues, peer, batch, poller, wakeup, bucket, counters: LoopCounters::default() })
    }

    /// What another thread calls to make [`UdpLoop::run_until`] return early.
    pub fn wakeup(&self) -> Arc<Wakeup> {
        self.wakeup.clone()
    }

    /// Rates below 1 a second count as 1, a burst below 1 as 1.
    pub fn set_pacing(&mut self, pacing: Pacing) {
        self.bucket = Bucket::new(Pacing {
            quiet_rate: pacing.quiet_rate.max(1.0),
            busy_rate: pacing.busy_rate.max(1.0),
            busy_above: pacing.busy_above.max(0.0),
            burst: pacing.burst.max(1.0),
        });
    }

    /// Step, wait (paced) for a datagram or the fleet's next deadline, step again... until `until`
    /// (monotonic seconds), a wake-up from another thread, or the end of the fleet's stop.
    pub fn run_until<M: Machine>(&mut self, fleet: &mut Fleet<M>, until: f64) -> io::Result<RunOutcome> {
        let mut run = RunOutcome::default();
        self.bucket.refill(monotonic());
        loop {
            let o = self.step(fleet);
            run.steps += 1;
            run.received += o.received as u64;
            run.sent += o.sent as u64;
            run.running = o.running;
            if !o.running {
                return Ok(run);
            }
            if self.wakeup.take() {
                run.woken = true;
                return Ok(run);
            }
            let mut now = monotonic();
            if now >= until {
                return Ok(run);
            }
            self.bucket.moved(o.received + o.sent, now);
            // a full send buffer: try again soon rather than at the next deadline
            let retry = if o.queued > 0 { now + 0.000_5 } else { f64::INFINITY };
            let deadline = o.wake.unwrap_or(f64::INFINITY).min(retry).min(until);
            self.bucket.refill(now);
            let ready = self.bucket.ready_at(now).min(until);
            if ready > now {
                pause(Duration::from_secs_f64(ready - now));
                now = monotonic();
            }
            if deadline > now {
                self.poller.wait(Duration::from_secs_f64((deadline - now).min(3600.0)))?;
                now = monotonic();
            }
            self.bucket.refill(now);
            self.bucket.tokens -= 1.0;
        }
    }

    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.sockets.iter().map(UdpSocket::local_addr).collect()
    }

    pub fn counters(&self) -> &LoopCounters {
        &self.counters
    }

    /// Datagrams the kernel dropped for a full receive buffer (SO_RXQ_OVFL), over every socket.
    pub fn kernel_drops(&self) -> u64 {
        self.sockets.iter().map(UdpSocket::kernel_drops).sum()
    }

    /// Whether every socket reports kernel receive timestamps.
    pub fn timestamps(&self) -> bool {
        self.sockets.iter().all(UdpSocket::timestamps)
    }

    /// One wake-up: receive everything waiting, run what is due, send.
    pub fn step<M: Machine>(&mut self, fleet: &mut Fleet<M>) -> StepOutcome {
        let mut outcome = StepOutcome::default();
        for socket in &mut self.sockets {
            loop {
                let n = match socket.recv_batch(&mut self.batch) {
                    Ok(n) => n,
                    Err(e) => {
                        self.counters.receive_errors += 1;
                        self.counters.last_error = format!("receive: {e}");
                        break;
                    }
                };
                if n == 0 {
                    break;
                }
                let now = monotonic();
                for (meta, data) in self.batch.iter() {
                    if meta.source != self.peer {
                        self.counters.foreign += 1;
                        continue;
                    }
                    if meta.truncated {
                        self.counters.truncated += 1;
                    }
                    let arrived = meta.timestamp_ns.map_or(now, |ns| (ns as f64 / 1e9).min(now));
                    fleet.receive(data, now, arrived);
                }
                outcome.received += n;
                if n < self.batch.slots() {
                    break;
                }
            }
        }
        let now = monotonic();
        outcome.running = fleet.poll(now);
        for (socket, data) in fleet.take_outgoing() {
            match self.queues.get_mut(socket as usize) {
                Some(queue) => {
                    if !queue.push(data, self.peer) {
                        self.counters.send_dropped += 1;
                    }
                }
                None => self.counters.send_dropped += 1,
            }
        }
        for (socket, queue) in self.sockets.iter_mut().zip(self.queues.iter_mut()) {
            let report = queue.flush(socket);
            outcome.sent += report.sent;
            if report.failed > 0 {
                self.counters.send_errors += report.failed as u64;
                if let Some(errno) = report.last_errno {
                    self.counters.last_error = format!("send: {}", io::Error::from_raw_os_error(errno));
                }
            }
            outcome.queued += queue.len();
        }
        outcome.wake = fleet.next_wake();
        outcome
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket as StdSocket;
    use std::thread;
    use std::time::Duration;

    use sipload_io::Schedule;

    use super::*;
    use crate::fleet::{FleetConfig, Slot};
    use crate::scripted::{ok, Scripted};

    fn fleet(n: u32, rate: f64) -> Fleet<Scripted> {
        let schedule = Schedule::constant(rate).expect("a valid rate");
        let endpoints = (0..n).map(|k| Slot::new(Scripted::new(k), u64::from(k), 0)).collect();
        Fleet::new(FleetConfig { schedule, max_in_flight: u64::from(n) }, endpoints)
    }

    /// A registrar on loopback answering every datagram with a 200 for the Call-ID it carries, until
    /// it has answered `count` or 20 s passed.
    fn registrar(count: usize) -> (SocketAddr, thread::JoinHandle<usize>) {
        let socket = StdSocket::bind("127.0.0.1:0").expect("bind");
        socket.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        let address = socket.local_addr().expect("address");
        let answering = thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut answered = 0;
            while answered < count {
                let Ok((n, from)) = socket.recv_from(&mut buf) else { break };
                socket.send_to(&ok(&buf[..n]), from).expect("answer");
                answered += 1;
            }
            answered
        });
        (address, answering)
    }

    fn idle_peer() -> SocketAddr {
        "127.0.0.1:9".parse().expect("address")
    }

    #[test]
    fn run_until_comes_back_at_its_moment_when_nothing_happens() {
        let mut io = UdpLoop::bind(&["127.0.0.1:0".parse().expect("address")], idle_peer()).expect("bind");
        let mut f = fleet(0, 10.0);
        f.start(monotonic());
        let until = monotonic() + 0.02;
        let run = io.run_until(&mut f, until).expect("run");
        assert!(monotonic() >= until);
        assert!(run.running && !run.woken);
        assert!(run.steps <= 3, "an idle loop waits instead of spinning: {} steps", run.steps);
    }

    #[test]
    fn a_wake_from_another_thread_ends_run_until_early() {
        let mut io = UdpLoop::bind(&["127.0.0.1:0".parse().expect("address")], idle_peer()).expect("bind");
        let mut f = fleet(0, 10.0);
        f.start(monotonic());
        let wakeup = io.wakeup();
        thread::spawn(move || wakeup.wake()).join().expect("thread");
        let until = monotonic() + 30.0;
        let run = io.run_until(&mut f, until).expect("run");
        assert!(run.woken && run.running);
        assert!(monotonic() < until);
        // the wake is used up: the next run goes on to its moment
        let run = io.run_until(&mut f, monotonic() + 0.01).expect("run");
        assert!(!run.woken);
    }

    #[test]
    fn a_busy_loop_wakes_at_its_busy_rate_and_serves_every_endpoint() {
        let n = 4000;
        let (peer, answering) = registrar(n as usize);
        let mut io = UdpLoop::bind(&["127.0.0.1:0".parse().expect("address")], peer).expect("bind");
        io.set_pacing(Pacing { quiet_rate: 4000.0, busy_rate: 500.0, busy_above: 2000.0, burst: 8.0 });
        let mut f = fleet(n, 20_000.0);
        let start = monotonic();
        f.start(start);
        let mut run = RunOutcome::default();
        while f.bound(monotonic()) < u64::from(n) && monotonic() < start + 20.0 {
            let r = io.run_until(&mut f, monotonic() + 0.05).expect("run");
            run.steps += r.steps;
            run.received += r.received;
        }
        let elapsed = monotonic() - start;
        assert_eq!(f.bound(monotonic()), u64::from(n));
        assert_eq!(run.received, u64::from(n));
        // unpaced, 20,000 arrivals a second would wake it ~4,000 times in 0.2 s; paced: the burst, the
        // quiet rate until the first rate window, the busy rate after it (and one step per run_until)
        let most = 8.0 + 4000.0 * RATE_WINDOW * 2.0 + 500.0 * elapsed + (elapsed / 0.05 + 1.0);
        assert!((run.steps as f64) <= most, "{} steps in {elapsed:.3} s (at most {most:.0})", run.steps);
        assert_eq!(answering.join().expect("registrar"), n as usize);
    }
}
