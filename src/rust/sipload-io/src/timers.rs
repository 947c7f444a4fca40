//! Timers for up to millions of keys (endpoints): an indexed 4-ary min-heap of (deadline, key).
//!
//! Each key has at most one deadline; scheduling a key that already has one moves it (a reschedule),
//! cancelling removes it, both in O(log n) with no stale entries left behind, so memory stays at
//! [`Timers::bytes_per_key`] whatever the churn. Sans-IO: deadlines and `now` are integers of the
//! caller's monotonic clock (nanoseconds or microseconds: the structure does not care). Equal deadlines
//! pop in key order, so a run is deterministic.
#![forbid(unsafe_code)]

const NONE: u32 = u32::MAX;
const ARITY: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    deadline: u64,
    key: u32,
}

/// A key at or above the limit given to [`Timers::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyOutOfRange {
    pub key: u32,
    pub limit: u32,
}

impl std::fmt::Display for KeyOutOfRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "timer key {} is not below the limit {}", self.key, self.limit)
    }
}

impl std::error::Error for KeyOutOfRange {}

#[derive(Clone, Debug, Default)]
pub struct Timers {
    heap: Vec<Entry>,
    pos: Vec<u32>, // key -> index in heap, NONE when the key has no deadline
}

impl Timers {
    /// Timers for keys `0..keys` (`keys` < 2^32 - 1). Memory: 4 bytes a key, plus 16 a pending timer.
    pub fn new(keys: u32) -> Self {
        let keys = keys.min(NONE - 1);
        Self { heap: Vec::new(), pos: vec![NONE; keys as usize] }
    }

    /// Keys this structure takes (`0..key_limit()`).
    pub fn key_limit(&self) -> u32 {
        self.pos.len() as u32
    }

    /// Pending timers.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Bytes this structure holds on the heap (key table and timer entries, as allocated).
    pub fn memory_bytes(&self) -> usize {
        self.pos.capacity() * std::mem::size_of::<u32>() + self.heap.capacity() * std::mem::size_of::<Entry>()
    }

    /// Bytes per key when every key has a pending timer.
    pub const fn bytes_per_key() -> usize {
        std::mem::size_of::<u32>() + std::mem::size_of::<Entry>()
    }

    /// Give `key` the deadline `deadline` (replacing the one it had, returned).
    pub fn schedule(&mut self, key: u32, deadline: u64) -> Result<Option<u64>, KeyOutOfRange> {
        let slot = self.slot(key)?;
        let at = self.pos[slot];
        if at == NONE {
            let i = self.heap.len();
            self.heap.push(Entry { deadline, key });
            self.pos[slot] = i as u32;
            self.sift_up(i);
            return Ok(None);
        }
        let i = at as usize;
        let old = self.heap[i].deadline;
        self.heap[i].deadline = deadline;
        if deadline < old {
            self.sift_up(i);
        } else {
            self.sift_down(i);
        }
        Ok(Some(old))
    }

    /// Remove `key`'s deadline; returns it (None when it had none or the key is out of range).
    pub fn cancel(&mut self, key: u32) -> Option<u64> {
        let slot = self.slot(key).ok()?;
        let at = self.pos[slot];
        if at == NONE {
            return None;
        }
        Some(self.remove_at(at as usize).deadline)
    }

    /// `key`'s pending deadline.
    pub fn deadline(&self, key: u32) -> Option<u64> {
        let at = *self.pos.get(key as usize)?;
        self.heap.get(at as usize).map(|e| e.deadline)
    }

    /// The earliest pending deadline.
    pub fn next_deadline(&self) -> Option<u64> {
        self.heap.first().map(|e| e.deadline)
    }

    /// The earliest timer if it is due at `now` (deadline <= now), removed: `(key, deadline)`.
    pub fn pop_due(&mut self, now: u64) -> Option<(u32, u64)> {
        match self.heap.first() {
            Some(e) if e.deadline <= now => {
                let e = self.remove_at(0);
                Some((e.key, e.deadline))
            }
            _ => None,
        }
    }

    /// Every timer due at `now`, earliest first, appended to `out`; returns how many.
    pub fn drain_due(&mut self, now: u64, out: &mut Vec<(u32, u64)>) -> usize {
        let before = out.len();
        while let Some(due) = self.pop_due(now) {
            out.push(due);
        }
        out.len() - before
    }

    /// Remove every timer.
    pub fn clear(&mut self) {
        for e in self.heap.drain(..) {
            self.pos[e.key as usize] = NONE;
        }
    }

    fn slot(&self, key: u32) -> Result<usize, KeyOutOfRange> {
        if (key as usize) < self.pos.len() {
            Ok(key as usize)
        } else {
            Err(KeyOutOfRange { key, limit: self.key_limit() })
        }
    }

    fn remove_at(&mut self, i: usize) -> Entry {
        let last = self.heap.len() - 1;
        self.heap.swap(i, last);
        let removed = self.heap.pop().unwrap_or(Entry { deadline: 0, key: 0 });
        self.pos[removed.key as usize] = NONE;
        if i < self.heap.len() {
            self.pos[self.heap[i].key as usize] = i as u32;
            let moved = self.heap[i];
            if i > 0 && moved < self.heap[(i - 1) / ARITY] {
                self.sift_up(i);
            } else {
                self.sift_down(i);
            }
        }
        removed
    }

    fn sift_up(&mut self, mut i: usize) {
        let e = self.heap[i];
        while i > 0 {
            let parent = (i - 1) / ARITY;
            let p = self.heap[parent];
            if p <= e {
                break;
            }
            self.heap[i] = p;
            self.pos[p.key as usize] = i as u32;
            i = parent;
        }
        self.heap[i] = e;
        self.pos[e.key as usize] = i as u32;
    }

    fn sift_down(&mut self, mut i: usize) {
        let e = self.heap[i];
        let n = self.heap.len();
        loop {
            let first = i * ARITY + 1;
            if first >= n {
                break;
            }
            let end = (first + ARITY).min(n);
            let mut best = first;
            for c in first + 1..end {
                if self.heap[c] < self.heap[best] {
                    best = c;
                }
            }
            let b = self.heap[best];
            if e <= b {
                break;
            }
            self.heap[i] = b;
            self.pos[b.key as usize] = i as u32;
            i = best;
        }
        self.heap[i] = e;
        self.pos[e.key as usize] = i as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn check_invariants(t: &Timers) {
        for (i, e) in t.heap.iter().enumerate() {
            assert_eq!(t.pos[e.key as usize], i as u32);
            if i > 0 {
                assert!(t.heap[(i - 1) / ARITY] <= *e);
            }
        }
        assert_eq!(t.pos.iter().filter(|p| **p != NONE).count(), t.heap.len());
    }

    #[test]
    fn pops_in_deadline_then_key_order() {
        let mut t = Timers::new(10);
        for (key, d) in [(3, 50), (1, 20), (7, 20), (2, 90), (0, 5)] {
            assert_eq!(t.schedule(key, d), Ok(None));
        }
        assert_eq!(t.next_deadline(), Some(5));
        assert_eq!(t.pop_due(4), None);
        let mut out = Vec::new();
        assert_eq!(t.drain_due(50, &mut out), 4);
        assert_eq!(out, vec![(0, 5), (1, 20), (7, 20), (3, 50)]);
        assert_eq!(t.next_deadline(), Some(90));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn reschedule_and_cancel() {
        let mut t = Timers::new(4);
        t.schedule(0, 100).unwrap();
        t.schedule(1, 200).unwrap();
        assert_eq!(t.schedule(1, 50), Ok(Some(200)));
        assert_eq!(t.deadline(1), Some(50));
        assert_eq!(t.schedule(1, 300), Ok(Some(50)));
        assert_eq!(t.cancel(0), Some(100));
        assert_eq!(t.cancel(0), None);
        assert_eq!(t.cancel(3), None);
        assert_eq!(t.deadline(0), None);
        assert_eq!(t.pop_due(u64::MAX), Some((1, 300)));
        assert!(t.is_empty());
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn keys_out_of_range_are_refused_never_a_panic() {
        let mut t = Timers::new(2);
        assert_eq!(t.schedule(2, 1), Err(KeyOutOfRange { key: 2, limit: 2 }));
        assert_eq!(t.schedule(u32::MAX, 1), Err(KeyOutOfRange { key: u32::MAX, limit: 2 }));
        assert_eq!(t.cancel(u32::MAX), None);
        assert_eq!(t.deadline(u32::MAX), None);
        let mut empty = Timers::new(0);
        assert!(empty.schedule(0, 0).is_err());
        assert_eq!(empty.pop_due(u64::MAX), None);
    }

    #[test]
    fn random_operations_match_a_reference_model() {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let keys = 500;
        let mut t = Timers::new(keys);
        let mut model: BTreeMap<u32, u64> = BTreeMap::new();
        let mut now = 0u64;
        for step in 0..50_000 {
            let key = (rng.next() % keys as u64) as u32;
            match rng.next() % 5 {
                0 | 1 => {
                    let d = now + rng.next() % 1000;
                    assert_eq!(t.schedule(key, d).unwrap(), model.insert(key, d));
                }
                2 => assert_eq!(t.cancel(key), model.remove(&key)),
                3 => {
                    now += rng.next() % 50;
                    let mut got = Vec::new();
                    t.drain_due(now, &mut got);
                    let mut want: Vec<(u32, u64)> =
                        model.iter().filter(|(_, d)| **d <= now).map(|(k, d)| (*k, *d)).collect();
                    want.sort_by_key(|(k, d)| (*d, *k));
                    for (k, _) in &want {
                        model.remove(k);
                    }
                    assert_eq!(got, want);
                }
                _ => assert_eq!(t.deadline(key), model.get(&key).copied()),
            }
            assert_eq!(t.next_deadline(), model.values().min().copied());
            if step % 5000 == 0 {
                check_invariants(&t);
            }
        }
        check_invariants(&t);
        t.clear();
        assert!(t.is_empty());
        assert!(t.pos.iter().all(|p| *p == NONE));
    }

    #[test]
    fn memory_per_timer_is_twenty_bytes() {
        assert_eq!(Timers::bytes_per_key(), 20);
        let mut t = Timers::new(1000);
        for k in 0..1000 {
            t.schedule(k, u64::from(k) * 7 % 1000).unwrap();
        }
        for round in 0..10u64 {
            for k in 0..1000 {
                t.schedule(k, round * 1000 + u64::from(k)).unwrap(); // churn never grows the heap
            }
        }
        assert_eq!(t.len(), 1000);
        assert!(t.memory_bytes() <= 1000 * 4 + 1024 * 16, "{}", t.memory_bytes());
    }
}
