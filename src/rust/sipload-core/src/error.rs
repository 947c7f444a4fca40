//! The one error of the core: bytes (or a header value) that are not what SIP allows.

use std::fmt;

use crate::printable::NOT_PRINTABLE;
use crate::text::char_at;

/// What is wrong, in words (the Python side raises `sipload.sip.errors.ParseError` with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl ParseError {
    pub fn new(message: impl Into<String>) -> Self {
        ParseError(message.into())
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

pub type Result<T> = std::result::Result<T, ParseError>;

/// An input a state machine has no transition for (`sipload.sip.errors.ProtocolError`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProtocolError {}

/// What Python's `repr(text[:limit])` shows for this header text (decoded with `surrogateescape`: an
/// invalid byte is one code point, shown as `\udcXX`), so that both cores word their errors alike.
pub(crate) fn shown(text: &[u8], limit: usize) -> String {
    let mut chars = Vec::new();
    let mut i = 0;
    while i < text.len() && chars.len() < limit {
        let (c, n) = char_at(text, i);
        chars.push(c.ok_or(text[i]));
        i += n.max(1);
    }
    let has = |q: char| chars.contains(&Ok(q));
    let quote = if has('\'') && !has('"') { '"' } else { '\'' };
    let mut out = String::with_capacity(chars.len() + 2);
    out.push(quote);
    for c in chars {
        match c {
            Err(byte) => out.push_str(&format!("\\udc{byte:02x}")),
            Ok('\\') => out.push_str("\\\\"),
            Ok('\t') => out.push_str("\\t"),
            Ok('\n') => out.push_str("\\n"),
            Ok('\r') => out.push_str("\\r"),
            Ok(c) if c == quote => {
                out.push('\\');
                out.push(c);
            }
            Ok(c) if is_printable(c) => out.push(c),
            Ok(c) => {
                let n = u32::from(c);
                if n < 0x100 {
                    out.push_str(&format!("\\x{n:02x}"));
                } else if n < 0x10000 {
                    out.push_str(&format!("\\u{n:04x}"));
                } else {
                    out.push_str(&format!("\\U{n:08x}"));
                }
            }
        }
    }
    out.push(quote);
    out
}

/// Python's `str.isprintable()` for one code point (the table is written from Python itself).
fn is_printable(c: char) -> bool {
    let n = u32::from(c);
    let i = NOT_PRINTABLE.partition_point(|&(_, high)| high < n);
    NOT_PRINTABLE.get(i).is_none_or(|&(low, _)| low > n)
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn shown_is_pythons_repr_of_the_cut_text() {
        assert_eq!(shown(b"abc", 2), "'ab'");
        assert_eq!(shown(b"it's", 10), "\"it's\"");
        assert_eq!(shown(b"'\"", 10), "'\\'\"'");
        assert_eq!(shown(b"a\tb\\\r\n\x01\x7f", 10), "'a\\tb\\\\\\r\\n\\x01\\x7f'");
        assert_eq!(shown(b"caf\xe9!", 10), "'caf\\udce9!'");
        assert_eq!(shown("é\u{a0}\u{2028}".as_bytes(), 10), "'é\\xa0\\u2028'");
        assert_eq!(shown("ééé".as_bytes(), 2), "'éé'");
        assert_eq!(shown("\u{58b}\u{10ffff}\u{1f600}".as_bytes(), 9), "'\\u058b\\U0010ffff\u{1f600}'");
    }
}
