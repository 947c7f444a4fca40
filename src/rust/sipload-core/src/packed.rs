//! `N` byte strings kept in one allocation: what a machine or a challenge holds for as long as an
//! endpoint lives. A million endpoints each holding a dozen small `Vec<u8>`s pay a dozen allocator
//! headers and a dozen 24-byte `Vec`s per endpoint; packed, they pay one of each.

/// `N` byte strings in one buffer; part `i` is `text[ends[i-1]..ends[i]]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Packed<const N: usize> {
    text: Box<[u8]>,
    ends: [u32; N],
}

impl<const N: usize> Packed<N> {
    /// The parts, in order. A part longer than 4 GiB in all cannot be held (nothing a datagram carries
    /// comes near): the buffer then ends at 4 GiB.
    pub fn new(parts: [&[u8]; N]) -> Self {
        let mut text = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut ends = [0u32; N];
        for (end, part) in ends.iter_mut().zip(parts) {
            let room = (u32::MAX as usize).saturating_sub(text.len());
            text.extend_from_slice(&part[..part.len().min(room)]);
            *end = text.len() as u32;
        }
        Packed { text: text.into_boxed_slice(), ends }
    }

    /// Part `i` (`i < N`).
    pub fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }
}

impl<const N: usize> std::fmt::Debug for Packed<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries((0..N).map(|i| String::from_utf8_lossy(self.get(i)))).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::Packed;

    #[test]
    fn parts_come_back_as_given() {
        let p = Packed::new([b"alice".as_slice(), b"", b"sip:alice@example.com", b"\xff\x00"]);
        assert_eq!(p.get(0), b"alice");
        assert_eq!(p.get(1), b"");
        assert_eq!(p.get(2), b"sip:alice@example.com");
        assert_eq!(p.get(3), b"\xff\x00");
        assert_eq!(format!("{p:?}"), "[\"alice\", \"\", \"sip:alice@example.com\", \"\u{fffd}\\0\"]");
    }

    #[test]
    fn equal_parts_are_equal() {
        assert_eq!(Packed::new([b"a".as_slice(), b"bc"]), Packed::new([b"a".as_slice(), b"bc"]));
        assert_ne!(Packed::new([b"ab".as_slice(), b"c"]), Packed::new([b"a".as_slice(), b"bc"]));
    }
}
