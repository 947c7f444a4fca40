//! The endpoint of a Call-ID without a second copy of every Call-ID: a map from a 64-bit hash of the
//! Call-ID to the endpoint, checked against the endpoint's own Call-ID on lookup. The rare Call-ID whose
//! hash another one already has is kept whole in a second map. 16 bytes an endpoint instead of ~100:
//! at a million endpoints, the difference is 80 MB.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher, Hasher};

/// The keys of `by_hash` are SipHash values already: the map takes them as its own hash.
#[derive(Debug, Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[derive(Debug, Default)]
pub struct CallIds {
    by_hash: HashMap<u64, u32, BuildHasherDefault<Prehashed>>,
    colliding: HashMap<Vec<u8>, u32>,
}

fn hash(call_id: &[u8]) -> u64 {
    BuildHasherDefault::<DefaultHasher>::default().hash_one(call_id)
}

impl CallIds {
    pub fn with_capacity(n: usize) -> Self {
        CallIds {
            by_hash: HashMap::with_capacity_and_hasher(n, BuildHasherDefault::default()),
            colliding: HashMap::new(),
        }
    }

    /// Endpoint `i` has `call_id` (a Call-ID given twice: the later endpoint has it); `call_id_of`
    /// gives the Call-ID of an endpoint already in.
    pub fn insert<'a>(&mut self, call_id: &[u8], i: u32, call_id_of: impl Fn(u32) -> &'a [u8]) {
        let h = hash(call_id);
        match self.by_hash.get(&h) {
            Some(&j) if call_id_of(j) != call_id => {
                self.colliding.insert(call_id.to_vec(), i);
            }
            _ => {
                self.by_hash.insert(h, i);
            }
        }
    }

    pub fn get<'a>(&self, call_id: &[u8], call_id_of: impl Fn(u32) -> &'a [u8]) -> Option<u32> {
        match self.by_hash.get(&hash(call_id)) {
            Some(&j) if call_id_of(j) == call_id => Some(j),
            _ => self.colliding.get(call_id).copied(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_call_id_and_nothing_else() {
        let ids: Vec<Vec<u8>> = (0..1000).map(|i| format!("{i:024x}@sipload").into_bytes()).collect();
        let mut map = CallIds::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            map.insert(id, i as u32, |j| &ids[j as usize]);
        }
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(map.get(id, |j| &ids[j as usize]), Some(i as u32));
        }
        assert_eq!(map.get(b"unknown@sipload", |j| &ids[j as usize]), None);
    }

    #[test]
    fn a_shared_hash_keeps_both_and_a_repeated_call_id_goes_to_the_later() {
        // the same hash for different Call-IDs cannot be found by search: plant one in the hash map
        let ids: Vec<&[u8]> = vec![b"a", b"b", b"a"];
        let mut map = CallIds::default();
        map.by_hash.insert(hash(b"b"), 0); // as if "a" (endpoint 0) had the hash of "b"
        map.insert(ids[1], 1, |j| ids[j as usize]);
        assert_eq!(map.get(b"b", |j| ids[j as usize]), Some(1));
        assert_eq!(map.colliding.len(), 1);
        map.insert(ids[0], 0, |j| ids[j as usize]);
        map.insert(ids[2], 2, |j| ids[j as usize]);
        assert_eq!(map.get(b"a", |j| ids[j as usize]), Some(2));
        assert_eq!(map.get(b"b", |j| ids[j as usize]), Some(1));
    }
}
