//! The one error of the core: bytes (or a header value) that are not what SIP allows.

use std::fmt;

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

/// At most `limit` bytes of `text`, shown lossily, for error messages.
pub(crate) fn shown(text: &[u8], limit: usize) -> String {
    let cut = text.get(..limit).unwrap_or(text);
    format!("{:?}", String::from_utf8_lossy(cut))
}
