//! sipload's sans-IO SIP core: bytes in, values and bytes out; no I/O, no clock, no unsafe.
//!
//! It is the twin of the Python `sipload.sip` package, and differential tests hold the two to the same
//! answers: `message` (`parse_message` and the fields of a response), `headers` (the grammar inside
//! header values), `digest` (the Digest client), `register` (the REGISTER request), `transaction` (the
//! non-INVITE client transaction), `granted` (the expiry a 200 grants, outbound and GRUU), `failures`
//! (the failure reasons), `ids` (CPython's `random.Random`, drawn as `IdSource` draws it) and
//! `registration` (the registration machine).

pub mod digest;
pub mod error;
pub mod failures;
pub mod granted;
pub mod headers;
pub mod ids;
pub mod message;
pub mod packed;
mod printable;
pub mod register;
pub mod registration;
pub mod text;
pub mod transaction;

pub use error::ParseError;
