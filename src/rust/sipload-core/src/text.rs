//! Text as the Python side sees it: header text is bytes decoded as UTF-8 with `surrogateescape`
//! (an invalid byte is one code point), so the core keeps the bytes and reproduces the few `str`
//! operations whose meaning goes beyond ASCII: `str.strip()` / `str.split()` (Unicode whitespace),
//! one code point at a time, and the surrogatepass encoding the digest hashes.

/// The byte length of the code point at `i`: a valid UTF-8 sequence, else one (escaped) byte.
pub fn char_len_at(s: &[u8], i: usize) -> usize {
    let Some(&b) = s.get(i) else { return 0 };
    let n = match b {
        0x00..=0x7f => return 1,
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return 1,
    };
    match s.get(i..i + n) {
        Some(seq) if std::str::from_utf8(seq).is_ok() => n,
        _ => 1,
    }
}

/// The code point at `i` (None for an escaped byte) and its length.
pub fn char_at(s: &[u8], i: usize) -> (Option<char>, usize) {
    let n = char_len_at(s, i);
    let c = s.get(i..i + n).and_then(|seq| std::str::from_utf8(seq).ok()).and_then(|t| t.chars().next());
    (c, n)
}

fn is_py_space(c: char) -> bool {
    // str.isspace(): Unicode White_Space plus the four ASCII separators U+001C..U+001F
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// The length of a Python whitespace code point starting at `i` (0 if none).
pub fn py_space_at(s: &[u8], i: usize) -> usize {
    match s.get(i) {
        Some(b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c | 0x1c..=0x1f) => 1,
        Some(0xc2 | 0xe1 | 0xe2 | 0xe3) => match char_at(s, i) {
            (Some(c), n) if is_py_space(c) => n,
            _ => 0,
        },
        _ => 0,
    }
}

/// The length of a Python whitespace code point ending at `end` (0 if none).
fn py_space_before(s: &[u8], end: usize) -> usize {
    for n in 1..=3 {
        if n <= end && py_space_at(s, end - n) == n {
            return n;
        }
    }
    0
}

/// `str.strip()` without arguments.
pub fn py_strip(s: &[u8]) -> &[u8] {
    let mut start = 0;
    loop {
        let n = py_space_at(s, start);
        if n == 0 {
            break;
        }
        start += n;
    }
    let mut end = s.len();
    while end > start {
        let n = py_space_before(s, end);
        if n == 0 {
            break;
        }
        end -= n;
    }
    s.get(start..end).unwrap_or_default()
}

/// `str.split()` without arguments.
pub fn py_split(s: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut word: Option<usize> = None;
    while i < s.len() {
        let n = py_space_at(s, i);
        if n > 0 {
            if let Some(w) = word.take() {
                out.push(&s[w..i]);
            }
            i += n;
        } else {
            if word.is_none() {
                word = Some(i);
            }
            i += char_len_at(s, i).max(1);
        }
    }
    if let Some(w) = word {
        out.push(&s[w..]);
    }
    out
}

/// `str.strip(chars)` for ASCII `chars`.
pub fn strip_ascii<'a>(s: &'a [u8], chars: &[u8]) -> &'a [u8] {
    let start = s.iter().position(|b| !chars.contains(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !chars.contains(b)).map_or(start, |p| p + 1);
    s.get(start..end).unwrap_or_default()
}

pub fn lstrip_ascii<'a>(s: &'a [u8], chars: &[u8]) -> &'a [u8] {
    let start = s.iter().position(|b| !chars.contains(b)).unwrap_or(s.len());
    s.get(start..).unwrap_or_default()
}

/// `str.rstrip(chars)` for ASCII `chars`.
pub fn rstrip_ascii<'a>(s: &'a [u8], chars: &[u8]) -> &'a [u8] {
    let end = s.iter().rposition(|b| !chars.contains(b)).map_or(0, |p| p + 1);
    s.get(..end).unwrap_or_default()
}

const fn token_bytes() -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(c, b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~' | b'-');
        b += 1;
    }
    table
}

static TOKEN_BYTES: [bool; 256] = token_bytes();

/// RFC 3261 token character.
pub fn is_token_byte(b: u8) -> bool {
    TOKEN_BYTES[usize::from(b)]
}

/// RFC 3261 token: one or more token characters.
pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_token_byte(b))
}

pub fn is_ascii_digits(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(u8::is_ascii_digit)
}

/// The number of code points (escaped bytes count one each).
pub fn char_count(s: &[u8]) -> usize {
    let mut i = 0;
    let mut n = 0;
    while i < s.len() {
        i += char_len_at(s, i).max(1);
        n += 1;
    }
    n
}

/// `str.lower()`: valid UTF-8 lower-cased, escaped bytes kept.
pub fn py_lower(s: &[u8]) -> Vec<u8> {
    if s.is_ascii() {
        return s.to_ascii_lowercase();
    }
    let mut out = Vec::with_capacity(s.len());
    for chunk in s.utf8_chunks() {
        out.extend_from_slice(chunk.valid().to_lowercase().as_bytes());
        out.extend_from_slice(chunk.invalid());
    }
    out
}

/// The bytes Python hashes for this text: `str.encode("utf-8", "surrogatepass")` of the
/// surrogateescape-decoded bytes (an escaped byte b is the surrogate U+DC00+b, three bytes).
pub fn surrogatepass(s: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if std::str::from_utf8(s).is_ok() {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(s.len() + 8);
    for chunk in s.utf8_chunks() {
        out.extend_from_slice(chunk.valid().as_bytes());
        for &b in chunk.invalid() {
            out.extend_from_slice(&[0xed, 0xb0 | (b >> 6), 0x80 | (b & 0x3f)]);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `find(needle)` for one byte.
pub fn find(s: &[u8], needle: u8) -> Option<usize> {
    s.iter().position(|&b| b == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_knows_python_whitespace() {
        assert_eq!(py_strip(b" \x1c a b\xc2\xa0\xe3\x80\x80"), b"a b");
        assert_eq!(py_strip(b"\xe2\x80\x8bx"), b"\xe2\x80\x8bx"); // U+200B is no whitespace
        assert_eq!(py_strip(b"\x85x\x85"), b"\x85x\x85"); // an escaped byte is no U+0085
        assert_eq!(py_strip(b"   "), b"");
    }

    #[test]
    fn split_on_any_whitespace() {
        assert_eq!(py_split(b" 1\xc2\x852 "), vec![&b"1"[..], &b"2"[..]]);
        assert!(py_split(b" \t").is_empty());
    }

    #[test]
    fn surrogatepass_encodes_escaped_bytes_as_surrogates() {
        assert_eq!(&*surrogatepass(b"a\xe8b"), b"a\xed\xb3\xa8b");
        assert_eq!(&*surrogatepass(b"\xc3\xa9"), b"\xc3\xa9");
    }

    #[test]
    fn char_lengths() {
        assert_eq!(char_len_at(b"\xe2\x82", 0), 1);
        assert_eq!(char_len_at("€".as_bytes(), 0), 3);
        assert_eq!(char_count(b"a\xe8\xc3\xa9"), 3);
    }
}
