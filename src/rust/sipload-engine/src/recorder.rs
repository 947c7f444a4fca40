//! The counts of `sipload/metrics/recorder.py`, kept natively and taken once per interval.
//!
//! Latencies are counted by HdrHistogram bucket index (`sipload_io::Histogram`, the layout the parent
//! merges); a value outside 0 .. 1 hour is clamped and counted as clamped, except a negative schedule lag
//! (an arrival sent early), which is recorded as 0 and not counted. A [`Snapshot`] holds what one
//! interval counted; the Python side turns it into an `IntervalSnapshot`.

use std::collections::BTreeMap;

use sipload_io::Histogram;

/// `sipload.metrics.phases.Phase`, in its order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    Challenge,
    Auth,
    Register,
    Refresh,
    Unregister,
}

impl Phase {
    pub const ALL: [Phase; 5] = [Phase::Challenge, Phase::Auth, Phase::Register, Phase::Refresh, Phase::Unregister];

    /// The value of the Python enum.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Challenge => "challenge",
            Phase::Auth => "auth",
            Phase::Register => "register",
            Phase::Refresh => "refresh",
            Phase::Unregister => "unregister",
        }
    }
}

/// `sipload.metrics.phases.Kind`: from the intended start, or from the actual send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Intended,
    Service,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Intended => "intended",
            Kind::Service => "service",
        }
    }
}

/// Bucket counts `(index, count)`, lowest index first.
pub type Buckets = Vec<(usize, u64)>;

/// What one interval counted. Counters are deltas; bucket lists are `(index, count)`, lowest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub histograms: Vec<(Phase, Kind, Buckets)>,
    pub schedule_lag: Buckets,
    pub attempts: Vec<(Phase, u64)>,
    pub successes: Vec<(Phase, u64)>,
    pub failures: Vec<(Phase, &'static str, u64)>,
    pub responses: Vec<(u16, u64)>,
    pub retransmissions: u64,
    pub clamped: u64,
}

/// Seconds to whole µs, 0 for anything not positive (`endpoint._us`).
pub fn micros(seconds: f64) -> i64 {
    if seconds > 0.0 {
        // saturating float-to-int conversion: an absurd value is clamped by the histogram
        (seconds * 1_000_000.0) as i64
    } else {
        0
    }
}

#[derive(Debug)]
pub struct Recorder {
    hist: Vec<[Histogram; 2]>,
    lag: Histogram,
    attempts: [u64; 5],
    successes: [u64; 5],
    failures: BTreeMap<(Phase, &'static str), u64>,
    responses: BTreeMap<u16, u64>,
    retransmissions: u64,
    clamped: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Recorder {
            hist: Phase::ALL.iter().map(|_| [Histogram::new(), Histogram::new()]).collect(),
            lag: Histogram::new(),
            attempts: [0; 5],
            successes: [0; 5],
            failures: BTreeMap::new(),
            responses: BTreeMap::new(),
            retransmissions: 0,
            clamped: 0,
        }
    }

    /// One finished `phase`: its latency from the intended start and from the actual send, in µs.
    pub fn record(&mut self, phase: Phase, from_intended_us: i64, service_us: i64) {
        if let Some([intended, service]) = self.hist.get_mut(phase as usize) {
            self.clamped += u64::from(intended.record(from_intended_us)) + u64::from(service.record(service_us));
        }
    }

    pub fn attempt(&mut self, phase: Phase) {
        self.attempts[phase as usize] += 1;
    }

    pub fn success(&mut self, phase: Phase) {
        self.successes[phase as usize] += 1;
    }

    pub fn failure(&mut self, phase: Phase, reason: &'static str) {
        *self.failures.entry((phase, reason)).or_insert(0) += 1;
    }

    pub fn response(&mut self, code: u16) {
        *self.responses.entry(code).or_insert(0) += 1;
    }

    pub fn retransmission(&mut self) {
        self.retransmissions += 1;
    }

    /// How late an arrival was sent against its intended time (µs; an early one counts as 0, unclamped).
    pub fn schedule_lag(&mut self, lag_us: i64) {
        self.clamped += u64::from(self.lag.record(lag_us.max(0)));
    }

    /// Everything since the previous call, and start a new interval.
    pub fn take(&mut self) -> Snapshot {
        let mut histograms = Vec::new();
        for (phase, pair) in Phase::ALL.iter().zip(self.hist.iter_mut()) {
            for (kind, h) in [Kind::Intended, Kind::Service].into_iter().zip(pair.iter_mut()) {
                if !h.is_empty() {
                    histograms.push((*phase, kind, h.take()));
                }
            }
        }
        let nonzero = |counts: &[u64; 5]| -> Vec<(Phase, u64)> {
            Phase::ALL.iter().zip(counts).filter(|(_, n)| **n > 0).map(|(p, n)| (*p, *n)).collect()
        };
        let snap = Snapshot {
            histograms,
            schedule_lag: self.lag.take(),
            attempts: nonzero(&self.attempts),
            successes: nonzero(&self.successes),
            failures: std::mem::take(&mut self.failures).into_iter().map(|((p, r), n)| (p, r, n)).collect(),
            responses: std::mem::take(&mut self.responses).into_iter().collect(),
            retransmissions: std::mem::take(&mut self.retransmissions),
            clamped: std::mem::take(&mut self.clamped),
        };
        self.attempts = [0; 5];
        self.successes = [0; 5];
        snap
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sipload_io::bucket_index;

    #[test]
    fn an_interval_holds_what_was_counted_since_the_last() {
        let mut r = Recorder::new();
        r.record(Phase::Register, 1500, 700);
        r.record(Phase::Register, 1500, -5);
        r.attempt(Phase::Register);
        r.success(Phase::Register);
        r.failure(Phase::Refresh, "timeout");
        r.failure(Phase::Refresh, "timeout");
        r.response(200);
        r.response(401);
        r.schedule_lag(-40);
        r.schedule_lag(4_000_000_000_000);
        let snap = r.take();
        assert_eq!(
            snap.histograms,
            vec![
                (Phase::Register, Kind::Intended, vec![(bucket_index(1500), 2)]),
                (Phase::Register, Kind::Service, vec![(0, 1), (bucket_index(700), 1)]),
            ]
        );
        assert_eq!(snap.schedule_lag, vec![(0, 1), (bucket_index(u64::MAX), 1)]);
        assert_eq!(snap.clamped, 2); // the negative service time and the hour-long lag; not the early arrival
        assert_eq!(snap.attempts, vec![(Phase::Register, 1)]);
        assert_eq!(snap.failures, vec![(Phase::Refresh, "timeout", 2)]);
        assert_eq!(snap.responses, vec![(200, 1), (401, 1)]);
        assert_eq!(r.take(), Snapshot::default());
    }

    #[test]
    fn micros_is_endpoint_us() {
        assert_eq!(micros(0.0015), 1500);
        assert_eq!(micros(-1.0), 0);
        assert_eq!(micros(f64::NAN), 0);
    }
}
