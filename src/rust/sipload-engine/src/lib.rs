//! sipload's native fleet: the part of `sipload/engine/worker.py` that runs per message, for plain UDP
//! groups, in one compiled loop.
//!
//! - [`machine`]: what the fleet needs of one endpoint's registration machine, and the events it reads.
//! - [`core_machine`]: sipload-core's registration machine as such a machine (its errors counted).
//! - [`recorder`]: the counts of `sipload/metrics/recorder.py` (latency buckets per phase and kind,
//!   attempts, successes, failures by reason, responses by code), taken once per interval.
//! - [`fleet`]: the endpoints of one worker on the open-loop arrival schedule, `max_in_flight`, timers,
//!   the paced unregistration at the end; sans-IO (time is a parameter, datagrams in and out).
//!
//! - [`udp_loop`]: the system-call side, apart: the fleet's sockets drained and written in batches
//!   (`sipload-io`'s recvmmsg/sendmmsg, whose `unsafe` stays there), on CLOCK_MONOTONIC.

pub mod call_ids;
pub mod core_machine;
pub mod fleet;
pub mod machine;
pub mod recorder;
pub mod udp_loop;

#[cfg(test)]
mod scripted;

pub use sipload_io as io;

pub use fleet::{EndpointReport, Fleet, FleetConfig, FleetCounters, ReportTable, Slot};
pub use machine::{Event, Machine, Op};
pub use recorder::{Kind, Phase, Recorder, Snapshot};
