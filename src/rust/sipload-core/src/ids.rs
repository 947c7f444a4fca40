//! Random identifiers (Call-ID, tags, branches, cnonces) and the refresh jitter, as
//! `sipload/sip/ids.py`'s `IdSource` draws them, bit for bit.
//!
//! Why the generator itself and not values handed in: the Python machine draws from one
//! `random.Random` (`IdSource(random.Random(seed))`), in an order that depends on what happens
//! (a challenge draws a cnonce before the next branch, a 200 draws the jitter...). The native machine
//! draws from [`PyRandom`], CPython's Mersenne Twister (`init_by_array` seeding of an integer seed,
//! `getrandbits`, `random`, `uniform`) written out, through the same [`Ids`] calls in the same order:
//! given the same seed both machines produce the same identifiers, whatever the exchange, with no
//! callback into Python and no list of precomputed values to run out of (fast in a native loop).
//!
//! The machine is generic over [`Ids`]: a differential test gives each machine its own `PyRandom`; a
//! fleet of a million endpoints shares one per worker (as `sipload/engine/worker.py` does) through
//! `Arc<Mutex<PyRandom>>`, 8 bytes per machine instead of the generator's 2.5 KB (a mutex, not a
//! `RefCell`, so that the worker's loop can run in a thread of its own; it is never contended).

use std::sync::{Arc, Mutex, MutexGuard};

/// `sipload.sip.ids.BRANCH_MAGIC` (RFC 3261 §8.1.1.7).
pub const BRANCH_MAGIC: &str = "z9hG4bK";

/// A source of 32-bit words, and the identifiers `IdSource` makes of them.
pub trait Ids {
    /// The next word of the generator (CPython's `genrand_uint32`).
    fn next_u32(&mut self) -> u32;

    /// `random.getrandbits(k)` for `k <= 128`: words little-endian, the last one cut to its top bits.
    fn getrandbits(&mut self, k: u32) -> u128 {
        let k = k.min(128);
        let mut value = 0u128;
        let mut shift = 0;
        let mut left = k;
        while left > 0 {
            let word = self.next_u32();
            let word = if left < 32 { word >> (32 - left) } else { word };
            value |= u128::from(word) << shift;
            shift += 32;
            left = left.saturating_sub(32);
        }
        value
    }

    /// `IdSource.token(bits)`: `bits` random bits as `bits // 4` hex digits (at least).
    fn token(&mut self, bits: u32) -> String {
        let value = self.getrandbits(bits);
        format!("{value:0width$x}", width = (bits / 4) as usize)
    }

    fn call_id(&mut self) -> String {
        format!("{:024x}@sipload", self.getrandbits(96))
    }

    fn tag(&mut self) -> String {
        format!("{:012x}", self.getrandbits(48))
    }

    fn branch(&mut self) -> String {
        String::from_utf8_lossy(branch_text(self.branch_bits()).as_bytes()).into_owned()
    }

    /// The random bits of the next branch, which [`branch_text`] writes out.
    fn branch_bits(&mut self) -> u64 {
        self.getrandbits(64) as u64
    }

    fn cnonce(&mut self) -> String {
        format!("{:016x}", self.getrandbits(64))
    }

    /// `random.random()`: 53 bits from two words.
    fn random(&mut self) -> f64 {
        let a = self.next_u32() >> 5;
        let b = self.next_u32() >> 6;
        (f64::from(a) * 67108864.0 + f64::from(b)) * (1.0 / 9007199254740992.0)
    }

    /// `random.uniform(low, high)`: `low + (high - low) * random()`.
    fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.random()
    }
}

/// A branch's text: the magic cookie and 16 hex digits, on the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BranchText([u8; BRANCH_MAGIC.len() + 16]);

impl BranchText {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// `f"{BRANCH_MAGIC}{bits:016x}"`.
pub fn branch_text(bits: u64) -> BranchText {
    let mut text = [0u8; BRANCH_MAGIC.len() + 16];
    text[..BRANCH_MAGIC.len()].copy_from_slice(BRANCH_MAGIC.as_bytes());
    for (i, digit) in text[BRANCH_MAGIC.len()..].iter_mut().enumerate() {
        *digit = b"0123456789abcdef"[((bits >> (60 - 4 * i)) & 0xf) as usize];
    }
    BranchText(text)
}

fn locked<T>(shared: &Mutex<T>) -> MutexGuard<'_, T> {
    // a panic while drawing leaves the generator as valid as before: draw on
    shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One lock per identifier, not per word.
impl<T: Ids> Ids for Arc<Mutex<T>> {
    fn next_u32(&mut self) -> u32 {
        locked(self).next_u32()
    }

    fn getrandbits(&mut self, k: u32) -> u128 {
        locked(self).getrandbits(k)
    }

    fn random(&mut self) -> f64 {
        locked(self).random()
    }
}

const N: usize = 624;
const M: usize = 397;

/// CPython's `random.Random`: MT19937 seeded as `random.Random(n)` seeds it for an integer `n`.
#[derive(Clone)]
pub struct PyRandom {
    mt: Box<[u32; N]>,
    index: usize,
}

impl std::fmt::Debug for PyRandom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PyRandom").field("index", &self.index).finish_non_exhaustive()
    }
}

impl PyRandom {
    /// `random.Random(n)` for the integer whose absolute value has these little-endian 32-bit words
    /// (no words: 0).
    pub fn from_key(key: &[u32]) -> Self {
        let key: &[u32] = if key.is_empty() { &[0] } else { key };
        let mut mt = Box::new([0u32; N]);
        mt[0] = 19_650_218;
        for i in 1..N {
            mt[i] = 1_812_433_253u32.wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30)).wrapping_add(i as u32);
        }
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..N.max(key.len()) {
            let prev = mt[i - 1] ^ (mt[i - 1] >> 30);
            mt[i] = (mt[i] ^ prev.wrapping_mul(1_664_525)).wrapping_add(key[j]).wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                mt[0] = mt[N - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..N - 1 {
            let prev = mt[i - 1] ^ (mt[i - 1] >> 30);
            mt[i] = (mt[i] ^ prev.wrapping_mul(1_566_083_941)).wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                mt[0] = mt[N - 1];
                i = 1;
            }
        }
        mt[0] = 0x8000_0000;
        PyRandom { mt, index: N }
    }

    /// `random.Random(seed)` for a seed that fits in 64 bits.
    pub fn new(seed: u64) -> Self {
        let (low, high) = (seed as u32, (seed >> 32) as u32);
        if high == 0 {
            PyRandom::from_key(&[low])
        } else {
            PyRandom::from_key(&[low, high])
        }
    }

    fn twist(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        const MATRIX_A: u32 = 0x9908_b0df;
        let mt = &mut self.mt;
        for k in 0..N {
            let y = (mt[k] & UPPER) | (mt[(k + 1) % N] & LOWER);
            let mag = if y & 1 == 1 { MATRIX_A } else { 0 };
            mt[k] = mt[(k + M) % N] ^ (y >> 1) ^ mag;
        }
        self.index = 0;
    }
}

impl Ids for PyRandom {
    fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            self.twist();
        }
        let mut y = self.mt.get(self.index).copied().unwrap_or_default();
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values printed by CPython 3.11 (random.Random(seed) and sipload.sip.ids.IdSource).
    #[test]
    fn words_and_bits_as_cpython() {
        let mut r = PyRandom::new(1);
        assert_eq!([r.next_u32(), r.next_u32(), r.next_u32()], [577_090_037, 2_444_712_010, 3_639_700_191]);
        let mut r = PyRandom::new(1);
        assert_eq!(r.getrandbits(48), 0x91b7_2265_b1f5);
        assert_eq!(r.getrandbits(96), 0xc386_bbc4_cd61_3e30_d8f1_6adf);
        assert_eq!(PyRandom::new(0).next_u32(), 3_626_764_237);
    }

    #[test]
    fn a_seed_of_four_words_and_floats() {
        // random.Random(2**100 + 12345)
        let mut r = PyRandom::from_key(&[12345, 0, 0, 16]);
        assert_eq!(r.next_u32(), 1_910_715_478);
        assert_eq!(r.random(), 0.06490685270815633);
        assert_eq!(r.uniform(-0.05, 0.05), 0.009629875938835478);
    }

    #[test]
    fn identifiers_as_id_source() {
        let mut ids = PyRandom::new(7);
        assert_eq!(ids.call_id(), "269e0d37f2a74de452e6b438@sipload");
        assert_eq!(ids.tag(), "a6a36513270e");
        assert_eq!(ids.branch(), "z9hG4bK128b2f330c5c7fd0");
        assert_eq!(ids.cnonce(), "892f902bd23f0824");
        assert_eq!(ids.token(128), "0ed904759531985d5d9dc9f81818e811");
        assert_eq!(ids.uniform(-0.1, 0.1), 0.08194081262862046);
        assert_eq!(ids.random(), 0.21469818083566172);
        // a shared source draws the same sequence
        let shared = Arc::new(Mutex::new(PyRandom::new(7)));
        let mut a = shared.clone();
        let mut b = shared;
        assert_eq!(a.call_id(), "269e0d37f2a74de452e6b438@sipload");
        assert_eq!(b.tag(), "a6a36513270e");
    }
}
