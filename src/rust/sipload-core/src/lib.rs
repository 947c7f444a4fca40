//! sipload's sans-IO SIP core: bytes in, values and bytes out; no I/O, no clock, no unsafe.
//!
//! It is the twin of the Python `sipload.sip` package, and differential tests hold the two to the same
//! answers: `message` (`parse_message` and the fields of a response), `headers` (the grammar inside
//! header values), `digest` (the Digest client), `register` (the REGISTER request).

pub mod digest;
pub mod error;
pub mod headers;
pub mod message;
mod printable;
pub mod register;
pub mod text;

pub use error::ParseError;
