//! The open-loop arrival schedule of `sipload/scenario/schedule.py` (`Load.arrival_times`), so the native
//! loop computes intended start times itself.
//!
//! The k-th registration (0-based) starts when the integral of the rate from 0 reaches k. The rate is
//! constant, a list of steps (a rate for a duration each; the last continues) or a linear ramp (its end rate
//! continues). Segment boundaries are computed exactly, as Python does with `Fraction`: every input is a
//! binary float, so every boundary is a dyadic rational (an integer times a power of two), held here as a
//! big integer and an exponent and rounded once to `f64` (round half to even, as `float(Fraction)`).
//! Each time is then computed directly from k, never by adding 1/rate repeatedly: no drift.
#![forbid(unsafe_code)]

use num_bigint::BigInt;
use num_bigint::Sign;

/// One piece of the rate curve (the fields of Python's `_Segment`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Segment {
    /// start time (s)
    pub t0: f64,
    /// end time (s; infinite for the last)
    pub t1: f64,
    /// arrivals due before t0
    pub c0: f64,
    /// first arrival index after this segment (`u64::MAX` for the last)
    pub k_end: u64,
    /// constant rate (/s), or the ramp's start rate
    pub rate: f64,
    /// ramp only: rate(t) = rate + slope * t, from t0 = 0
    pub slope: f64,
}

/// A load that `schedule.py`'s `read_load` would refuse.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleError(pub String);

impl std::fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScheduleError {}

/// Intended start times of an open-loop load.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    segments: Vec<Segment>,
}

/// Python's `max(a, b)`: `a` unless `b > a`.
fn py_max(a: f64, b: f64) -> f64 {
    if b > a {
        b
    } else {
        a
    }
}

/// Python's `min(a, b)`: `a` unless `b < a`.
fn py_min(a: f64, b: f64) -> f64 {
    if b < a {
        b
    } else {
        a
    }
}

/// An exact dyadic rational: `n * 2^exp`.
#[derive(Clone, Debug)]
struct Dyadic {
    n: BigInt,
    exp: i64,
}

impl Dyadic {
    fn zero() -> Self {
        Self { n: BigInt::from(0), exp: 0 }
    }

    /// The exact value of a finite float.
    fn from_f64(x: f64) -> Self {
        let bits = x.to_bits();
        let negative = bits >> 63 == 1;
        let biased = ((bits >> 52) & 0x7ff) as i64;
        let fraction = bits & ((1 << 52) - 1);
        let (mantissa, exp) = if biased == 0 { (fraction, -1074) } else { (fraction | (1 << 52), biased - 1075) };
        let n = BigInt::from(mantissa);
        Self { n: if negative { -n } else { n }, exp }
    }

    fn add(&self, other: &Self) -> Self {
        let exp = self.exp.min(other.exp);
        let a = &self.n << (self.exp - exp) as usize;
        let b = &other.n << (other.exp - exp) as usize;
        Self { n: a + b, exp }
    }

    fn mul(&self, other: &Self) -> Self {
        Self { n: &self.n * &other.n, exp: self.exp + other.exp }
    }

    fn half(&self) -> Self {
        Self { n: self.n.clone(), exp: self.exp - 1 }
    }

    /// `ceil` as an index (saturating to `0..=u64::MAX`).
    fn ceil_u64(&self) -> u64 {
        if self.n.sign() != Sign::Plus {
            return 0;
        }
        let whole = if self.exp >= 0 {
            &self.n << self.exp as usize
        } else {
            let shift = (-self.exp) as usize;
            let one = BigInt::from(1) << shift;
            (&self.n + &one - 1) >> shift
        };
        u64::try_from(whole).unwrap_or(u64::MAX)
    }

    /// Rounded once to the nearest float, ties to even (non-negative values; inf beyond f64's range).
    fn to_f64(&self) -> f64 {
        if self.n.sign() != Sign::Plus {
            return 0.0;
        }
        let (_, digits) = self.n.to_u64_digits();
        let bits = self.n.bits() as i64;
        // keep the top 53 bits (or all), round half to even on what is dropped
        let drop = (bits - 53).max(0);
        let mut mantissa = top_bits(&digits, drop as u64);
        if drop > 0 {
            let half = bit(&digits, (drop - 1) as u64);
            let sticky = (0..drop - 1).any(|i| bit(&digits, i as u64));
            if half && (sticky || mantissa & 1 == 1) {
                mantissa += 1;
            }
        }
        scale(mantissa as f64, self.exp + drop)
    }
}

fn bit(digits: &[u64], i: u64) -> bool {
    digits.get((i / 64) as usize).is_some_and(|d| d >> (i % 64) & 1 == 1)
}

/// The integer `digits >> shift`, known to fit in 54 bits.
fn top_bits(digits: &[u64], shift: u64) -> u64 {
    let word = (shift / 64) as usize;
    let offset = shift % 64;
    let lo = digits.get(word).copied().unwrap_or(0) >> offset;
    let hi = if offset == 0 { 0 } else { digits.get(word + 1).copied().unwrap_or(0) << (64 - offset) };
    lo | hi
}

/// `x * 2^exp`, exact while the result is a normal float (multiplying by powers of two in steps).
fn scale(mut x: f64, mut exp: i64) -> f64 {
    while exp > 0 && x.is_finite() {
        let s = exp.min(1000);
        x *= 2f64.powi(s as i32);
        exp -= s;
    }
    while exp < 0 && x != 0.0 {
        let s = exp.max(-1000);
        x *= 2f64.powi(s as i32);
        exp -= s;
    }
    x
}

fn check(ok: bool, message: impl FnOnce() -> String) -> Result<(), ScheduleError> {
    if ok {
        Ok(())
    } else {
        Err(ScheduleError(message()))
    }
}

impl Schedule {
    /// `load.rate`: a constant rate (> 0, finite).
    pub fn constant(rate: f64) -> Result<Self, ScheduleError> {
        check(rate > 0.0 && rate.is_finite(), || format!("load.rate: must be > 0, got {rate}"))?;
        Ok(Self { segments: vec![Segment { t0: 0.0, t1: f64::INFINITY, c0: 0.0, k_end: u64::MAX, rate, slope: 0.0 }] })
    }

    /// `load.steps`: (rate /s, duration s) pairs; rates >= 0, the last > 0, durations > 0.
    pub fn steps(steps: &[(f64, f64)]) -> Result<Self, ScheduleError> {
        check(!steps.is_empty(), || "load.steps: must be a non-empty list".to_string())?;
        for (i, (rate, duration)) in steps.iter().enumerate() {
            check(*rate >= 0.0 && rate.is_finite(), || format!("load.steps[{i}].rate: must be >= 0, got {rate}"))?;
            check(*duration > 0.0 && duration.is_finite(), || {
                format!("load.steps[{i}].duration: must be > 0, got {duration}")
            })?;
        }
        let last = steps.len() - 1;
        check(steps[last].0 > 0.0, || {
            format!("load.steps[{last}].rate: the last step must have a rate > 0 (it continues after its duration)")
        })?;
        let (mut t0, mut c0) = (Dyadic::zero(), Dyadic::zero());
        let mut segments = Vec::with_capacity(steps.len());
        for (i, &(rate, duration)) in steps.iter().enumerate() {
            let d = Dyadic::from_f64(duration);
            let t1 = t0.add(&d);
            let c1 = c0.add(&Dyadic::from_f64(rate).mul(&d));
            let is_last = i == last;
            segments.push(Segment {
                t0: t0.to_f64(),
                t1: if is_last { f64::INFINITY } else { t1.to_f64() },
                c0: c0.to_f64(),
                k_end: if is_last { u64::MAX } else { c1.ceil_u64() },
                rate,
                slope: 0.0,
            });
            (t0, c0) = (t1, c1);
        }
        segments.retain(|s| s.rate > 0.0 || s.slope != 0.0);
        Ok(Self { segments })
    }

    /// `load.ramp`: from `from` /s (>= 0) to `to` /s (> 0) over `duration` s (> 0); `to` continues.
    pub fn ramp(from: f64, to: f64, duration: f64) -> Result<Self, ScheduleError> {
        check(from >= 0.0 && from.is_finite(), || format!("load.ramp.from: must be >= 0, got {from}"))?;
        check(to > 0.0 && to.is_finite(), || format!("load.ramp.to: must be > 0, got {to}"))?;
        check(duration > 0.0 && duration.is_finite(), || format!("load.ramp.duration: must be > 0, got {duration}"))?;
        let slope = (to - from) / duration;
        let c1 = Dyadic::from_f64(from).add(&Dyadic::from_f64(to)).mul(&Dyadic::from_f64(duration)).half();
        Ok(Self {
            segments: vec![
                Segment { t0: 0.0, t1: duration, c0: 0.0, k_end: c1.ceil_u64(), rate: from, slope },
                Segment { t0: duration, t1: f64::INFINITY, c0: c1.to_f64(), k_end: u64::MAX, rate: to, slope: 0.0 },
            ],
        })
    }

    /// A schedule from segments computed elsewhere (Python's `Load._segments()`); the last must be
    /// open-ended (`k_end == u64::MAX`) and k_end must not decrease.
    pub fn from_segments(segments: Vec<Segment>) -> Result<Self, ScheduleError> {
        check(segments.last().is_some_and(|s| s.k_end == u64::MAX), || {
            "schedule: the last segment must be open-ended".to_string()
        })?;
        check(segments.windows(2).all(|w| w[0].k_end <= w[1].k_end), || {
            "schedule: segment ends must not decrease".to_string()
        })?;
        Ok(Self { segments })
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    fn time(seg: &Segment, k: u64) -> f64 {
        let kf = k as f64;
        let t = if seg.slope != 0.0 {
            // the ramp, from t = 0: solve rate*t + slope*t^2/2 = k (stable form)
            if k == 0 {
                0.0
            } else {
                2.0 * kf / (seg.rate + py_max(seg.rate * seg.rate + 2.0 * seg.slope * kf, 0.0).sqrt())
            }
        } else {
            seg.t0 + (kf - seg.c0) / seg.rate
        };
        py_min(py_max(t, seg.t0), seg.t1)
    }

    fn segment_of(&self, k: u64) -> &Segment {
        // the last segment is open-ended, so one is always found
        let i = self.segments.partition_point(|s| s.k_end <= k);
        &self.segments[i.min(self.segments.len() - 1)]
    }

    /// The intended start (s from the run start) of the k-th registration (`Load.arrival_time`).
    pub fn arrival_time(&self, k: u64) -> f64 {
        Self::time(self.segment_of(k), k)
    }

    /// The intended starts of registrations 0, 1, ... (`Load.arrival_times`: never earlier than the one
    /// before).
    pub fn arrivals(&self) -> Arrivals<'_> {
        Arrivals { schedule: self, k: 0, index: 0, previous: 0.0 }
    }
}

/// Iterator over intended start times, in seconds from the run start; see [`Schedule::arrivals`].
#[derive(Clone, Debug)]
pub struct Arrivals<'a> {
    schedule: &'a Schedule,
    k: u64,
    index: usize,
    previous: f64,
}

impl Arrivals<'_> {
    /// Index of the next arrival.
    pub fn position(&self) -> u64 {
        self.k
    }

    /// The next intended start converted to integer nanoseconds of a clock on which the run started at
    /// `start_ns` (rounded to the nearest ns, saturating), without consuming it.
    pub fn peek_ns(&self, start_ns: u64) -> u64 {
        let mut probe = self.clone();
        probe.next().map_or(u64::MAX, |t| seconds_to_ns(start_ns, t))
    }
}

/// `start_ns + t` seconds, rounded to the nearest ns and saturating.
pub fn seconds_to_ns(start_ns: u64, t: f64) -> u64 {
    let ns = (t * 1e9).round();
    if ns >= u64::MAX as f64 {
        u64::MAX
    } else {
        start_ns.saturating_add(ns.max(0.0) as u64)
    }
}

impl Iterator for Arrivals<'_> {
    type Item = f64;

    fn next(&mut self) -> Option<f64> {
        if self.k == u64::MAX {
            return None;
        }
        let segments = &self.schedule.segments;
        while self.index + 1 < segments.len() && self.k >= segments[self.index].k_end {
            self.index += 1;
        }
        self.previous = py_max(self.previous, Schedule::time(&segments[self.index], self.k));
        self.k += 1;
        Some(self.previous)
    }
}

#[cfg(test)]
#[path = "schedule_expected.rs"]
mod expected;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dyadic_rounds_once_half_to_even() {
        // 0.1 * 10 is 1.0000000000000000555...: its float is 1.0, its ceiling 2
        let p = Dyadic::from_f64(0.1).mul(&Dyadic::from_f64(10.0));
        assert_eq!(p.to_f64(), 1.0);
        assert_eq!(p.ceil_u64(), 2);
        assert_eq!(Dyadic::from_f64(3.0).ceil_u64(), 3);
        assert_eq!(Dyadic::from_f64(2.5).ceil_u64(), 3);
        assert_eq!(Dyadic::zero().ceil_u64(), 0);
        // 2^53 + 1 is a tie between 2^53 and 2^53 + 2: even wins
        let tie = Dyadic::from_f64(9007199254740992.0).add(&Dyadic::from_f64(1.0));
        assert_eq!(tie.to_f64(), 9007199254740992.0);
        let up = Dyadic::from_f64(9007199254740992.0).add(&Dyadic::from_f64(3.0));
        assert_eq!(up.to_f64(), 9007199254740996.0);
        let above = tie.add(&Dyadic::from_f64(2f64.powi(-60)));
        assert_eq!(above.to_f64(), 9007199254740994.0);
        for x in [0.1, 1e-300, 123.456, 1e300, 5e-324, 2.0f64.powi(-1022)] {
            assert_eq!(Dyadic::from_f64(x).to_f64(), x);
        }
        assert_eq!(Dyadic::from_f64(1e300).mul(&Dyadic::from_f64(1e300)).to_f64(), f64::INFINITY);
        assert_eq!(Dyadic::from_f64(1e300).mul(&Dyadic::from_f64(1e300)).ceil_u64(), u64::MAX);
    }

    #[test]
    fn constant_rate_is_k_over_rate() {
        let s = Schedule::constant(1000.0).unwrap();
        let got: Vec<f64> = s.arrivals().take(4).collect();
        assert_eq!(got, vec![0.0, 0.001, 0.002, 0.003]);
        assert_eq!(s.arrival_time(1_000_000), 1000.0);
        let mut it = s.arrivals();
        it.next();
        assert_eq!(it.peek_ns(5), 1_000_005);
        assert_eq!(it.position(), 1);
    }

    #[test]
    fn refuses_what_read_load_refuses() {
        assert!(Schedule::constant(0.0).is_err());
        assert!(Schedule::constant(f64::NAN).is_err());
        assert!(Schedule::constant(f64::INFINITY).is_err());
        assert!(Schedule::steps(&[]).is_err());
        assert!(Schedule::steps(&[(10.0, 1.0), (0.0, 1.0)]).is_err());
        assert!(Schedule::steps(&[(-1.0, 1.0), (1.0, 1.0)]).is_err());
        assert!(Schedule::steps(&[(1.0, 0.0)]).is_err());
        assert!(Schedule::ramp(-1.0, 1.0, 1.0).is_err());
        assert!(Schedule::ramp(1.0, 0.0, 1.0).is_err());
        assert!(Schedule::ramp(1.0, 1.0, 0.0).is_err());
        assert!(Schedule::from_segments(vec![]).is_err());
        let e = Schedule::steps(&[(10.0, 1.0), (0.0, 1.0)]).unwrap_err();
        assert!(e.to_string().starts_with("load.steps[1].rate"), "{e}");
    }

    #[test]
    fn matches_python_schedule() {
        for case in expected::cases() {
            let s = match &case.shape {
                expected::Shape::Constant(rate) => Schedule::constant(*rate),
                expected::Shape::Steps(steps) => Schedule::steps(steps),
                expected::Shape::Ramp(from, to, duration) => Schedule::ramp(*from, *to, *duration),
            }
            .unwrap();
            let got: Vec<f64> = s.arrivals().take(case.times.len()).collect();
            for (k, (g, w)) in got.iter().zip(&case.times).enumerate() {
                assert_eq!(g.to_bits(), w.to_bits(), "{}: arrival {k}: {g} != {w}", case.name);
            }
            for &(k, w) in &case.single {
                let g = s.arrival_time(k);
                assert_eq!(g.to_bits(), w.to_bits(), "{}: arrival_time({k}): {g} != {w}", case.name);
            }
            let segments: Vec<(f64, f64, f64, u64, f64, f64)> =
                s.segments().iter().map(|g| (g.t0, g.t1, g.c0, g.k_end, g.rate, g.slope)).collect();
            assert_eq!(segments, case.segments, "{}", case.name);
        }
    }
}
