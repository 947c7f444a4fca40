//! The system-call side of the native worker: the fleet's sockets, drained with recvmmsg and written with
//! sendmmsg, on CLOCK_MONOTONIC (Python's `time.monotonic()`).
//!
//! One [`UdpLoop::step`] is one wake-up of the worker: every datagram waiting on every socket goes to the
//! fleet (timed by its kernel receive timestamp; a datagram from another address than the registrar's is
//! counted as foreign and dropped, RFC 3581), then the fleet's due work runs, then everything it wants sent
//! leaves in batches. What the send buffer does not take waits, in order, for the next step.

use std::io;
use std::net::SocketAddr;

use sipload_io::udp::CLOCK_MONOTONIC;
use sipload_io::{clock_ns, realtime_offset_ns, Options, Poller, RecvBatch, SendQueue, UdpSocket};

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

pub struct UdpLoop {
    sockets: Vec<UdpSocket>,
    queues: Vec<SendQueue>,
    peer: SocketAddr,
    batch: RecvBatch,
    poller: Poller,
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
        Ok(UdpLoop { sockets, queues, peer, batch, poller, counters: LoopCounters::default() })
    }

    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.sockets.iter().map(UdpSocket::local_addr).collect()
    }

    /// One fd readable when any socket is (for a trio task's `wait_readable`).
    pub fn poll_fd(&self) -> i32 {
        self.poller.raw_fd()
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
