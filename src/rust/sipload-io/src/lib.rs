//! sipload's native I/O, pure Rust: what the native registration loop needs around the sans-IO core.
//!
//! - [`udp`]: a batched UDP socket (recvmmsg/sendmmsg, kernel receive timestamps, large buffers, the raw
//!   fd for a trio task's `wait_readable`). With [`poller`] and [`wakeup`], the modules with `unsafe`,
//!   around system calls.
//! - [`poller`]: one epoll fd readable when any of a worker's sockets is (level-triggered), waits below
//!   a millisecond, the paced loop's sleep.
//! - [`wakeup`]: an eventfd another thread wakes the native loop with.
//! - [`timers`]: an indexed heap of deadlines for up to millions of keys, time as a parameter.
//! - [`histogram`]: latency bucket counts in the layout `sipload/metrics/phases.py` merges.
//! - [`send_queue`]: datagrams the socket did not take yet, in order, with buffers reused.
//! - [`schedule`]: the intended start times of `sipload/scenario/schedule.py`.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod histogram;
pub mod poller;
pub mod schedule;
pub mod send_queue;
pub mod timers;
pub mod udp;
pub mod wakeup;

pub use histogram::{bucket_index, Histogram, HIGHEST_US};
pub use poller::{pause, Poller};
pub use schedule::{Schedule, ScheduleError, Segment};
pub use send_queue::SendQueue;
pub use timers::{KeyOutOfRange, Timers};
pub use udp::{clock_ns, realtime_offset_ns, Datagram, Options, RecvBatch, SendReport, UdpSocket};
pub use wakeup::Wakeup;
