//! Datagram to message, as `sipload/sip/parser.py`'s `parse_message` does it, and the fields the
//! registration reads from a response, each checked as `sipload/sip/message.py` checks it.
//!
//! Accepted: CRLF or bare LF line ends, folded header lines, any case and the compact forms of header
//! names, no space after the colon, status codes 100-699, a missing reason phrase, blank lines before
//! the start line. Rejected with a `ParseError`, as in Python: everything else.

use std::borrow::Cow;

use crate::digest::{parse_challenges, Challenge};
use crate::error::{shown, ParseError, Result};
use crate::headers::{parse_cseq, parse_delta, parse_name_addr, parse_via, split_list, NameAddr, Via};
use crate::text::{is_ascii_digits, is_token, is_token_byte, py_split, py_strip, rstrip_ascii, strip_ascii};

pub const MAX_HEAD_BYTES: usize = 65536;
pub const MAX_HEADER_LINES: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: Vec<u8>, uri: Vec<u8> },
    Response { status: u16, reason: Vec<u8> },
}

/// Header lines as (lower-case full name, value), in order. The values share one buffer and the
/// names a response carries are static strings: parsing a message allocates a few times, not twice
/// per header line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderLines {
    text: Vec<u8>,
    lines: Vec<(Cow<'static, str>, u32, u32)>,
}

impl HeaderLines {
    fn push(&mut self, key: Cow<'static, str>, value: &[u8]) {
        let start = self.text.len() as u32;
        self.text.extend_from_slice(value);
        self.lines.push((key, start, self.text.len() as u32));
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// (lower-case full name, value) of every line, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.lines.iter().map(|(k, a, b)| (k.as_ref(), &self.text[*a as usize..*b as usize]))
    }
}

impl<'a> IntoIterator for &'a HeaderLines {
    type Item = (&'a str, &'a [u8]);
    type IntoIter = Box<dyn Iterator<Item = (&'a str, &'a [u8])> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

/// A parsed message: its start line, its header lines as (lower-case full name, value), its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub start: StartLine,
    pub headers: HeaderLines,
    pub body: Vec<u8>,
}

const COMPACT_FORMS: [(u8, &str); 20] = [
    (b'a', "accept-contact"),
    (b'b', "referred-by"),
    (b'c', "content-type"),
    (b'd', "request-disposition"),
    (b'e', "content-encoding"),
    (b'f', "from"),
    (b'i', "call-id"),
    (b'j', "reject-contact"),
    (b'k', "supported"),
    (b'l', "content-length"),
    (b'm', "contact"),
    (b'n', "identity-info"),
    (b'o', "event"),
    (b'r', "refer-to"),
    (b's', "subject"),
    (b't', "to"),
    (b'u', "allow-events"),
    (b'v', "via"),
    (b'x', "session-expires"),
    (b'y', "identity"),
];

/// Headers whose values are comma-separated lists.
const LIST_HEADERS: [&str; 18] = [
    "via",
    "contact",
    "route",
    "record-route",
    "path",
    "service-route",
    "allow",
    "supported",
    "require",
    "proxy-require",
    "unsupported",
    "accept",
    "accept-encoding",
    "accept-language",
    "allow-events",
    "content-encoding",
    "in-reply-to",
    "p-associated-uri",
];

/// The static key of a lower-case header name a registrar's answers carry (the compact forms', the
/// list headers' and the usual others): no allocation per line for them.
fn static_name(lower: &[u8]) -> Option<&'static str> {
    Some(match lower {
        b"accept-contact" => "accept-contact",
        b"referred-by" => "referred-by",
        b"content-type" => "content-type",
        b"request-disposition" => "request-disposition",
        b"content-encoding" => "content-encoding",
        b"from" => "from",
        b"call-id" => "call-id",
        b"reject-contact" => "reject-contact",
        b"supported" => "supported",
        b"content-length" => "content-length",
        b"contact" => "contact",
        b"identity-info" => "identity-info",
        b"event" => "event",
        b"refer-to" => "refer-to",
        b"subject" => "subject",
        b"to" => "to",
        b"allow-events" => "allow-events",
        b"via" => "via",
        b"session-expires" => "session-expires",
        b"identity" => "identity",
        b"route" => "route",
        b"record-route" => "record-route",
        b"path" => "path",
        b"service-route" => "service-route",
        b"allow" => "allow",
        b"require" => "require",
        b"proxy-require" => "proxy-require",
        b"unsupported" => "unsupported",
        b"accept" => "accept",
        b"accept-encoding" => "accept-encoding",
        b"accept-language" => "accept-language",
        b"in-reply-to" => "in-reply-to",
        b"p-associated-uri" => "p-associated-uri",
        b"cseq" => "cseq",
        b"www-authenticate" => "www-authenticate",
        b"proxy-authenticate" => "proxy-authenticate",
        b"authentication-info" => "authentication-info",
        b"expires" => "expires",
        b"min-expires" => "min-expires",
        b"retry-after" => "retry-after",
        b"server" => "server",
        b"user-agent" => "user-agent",
        b"date" => "date",
        b"warning" => "warning",
        b"max-forwards" => "max-forwards",
        b"timestamp" => "timestamp",
        b"organization" => "organization",
        _ => return None,
    })
}

/// The key of a header name (`token [ \t]*`): lower-cased, compact forms expanded.
fn header_key(name: &[u8]) -> Option<Cow<'static, str>> {
    let end = name.iter().position(|&b| !is_token_byte(b)).unwrap_or(name.len());
    if end == 0 || !name[end..].iter().all(|&b| b == b' ' || b == b'\t') {
        return None;
    }
    let token = &name[..end];
    if let [letter] = token {
        let lower = letter.to_ascii_lowercase();
        if let Some((_, full)) = COMPACT_FORMS.iter().find(|(c, _)| *c == lower) {
            return Some(Cow::Borrowed(full));
        }
    }
    let mut lower = [0u8; 24];
    if let Some(buf) = lower.get_mut(..token.len()) {
        for (l, b) in buf.iter_mut().zip(token) {
            *l = b.to_ascii_lowercase();
        }
        if let Some(name) = static_name(buf) {
            return Some(Cow::Borrowed(name));
        }
    }
    // token bytes are ASCII
    Some(Cow::Owned(token.iter().map(|b| char::from(b.to_ascii_lowercase())).collect()))
}

/// The lower-case key of any spelling ("I" -> "call-id").
pub fn normalize_name(name: &str) -> String {
    header_key(name.trim().as_bytes()).map_or_else(|| name.trim().to_lowercase(), Cow::into_owned)
}

/// Unfold: every `[ \t]*\r?\n[ \t]+` becomes one space (RFC 3261 §7.3.1).
fn unfold(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut cursor = 0;
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'\n' && matches!(text.get(i + 1), Some(b' ' | b'\t')) {
            let mut start = i;
            if start > cursor && text[start - 1] == b'\r' {
                start -= 1;
            }
            while start > cursor && matches!(text[start - 1], b' ' | b'\t') {
                start -= 1;
            }
            out.extend_from_slice(&text[cursor..start]);
            out.push(b' ');
            let mut end = i + 1;
            while matches!(text.get(end), Some(b' ' | b'\t')) {
                end += 1;
            }
            cursor = end;
            i = end;
        } else {
            i += 1;
        }
    }
    out.extend_from_slice(&text[cursor..]);
    out
}

/// `SIP/2.0` in any case (`str.upper()`: U+017F is an S, U+0131 an I), exactly.
fn is_sip_version(s: &[u8]) -> bool {
    let rest = match s {
        [b's' | b'S', rest @ ..] => rest,
        [0xc5, 0xbf, rest @ ..] => rest,
        _ => return false,
    };
    let rest = match rest {
        [b'i' | b'I', rest @ ..] => rest,
        [0xc4, 0xb1, rest @ ..] => rest,
        _ => return false,
    };
    matches!(rest, [b'p' | b'P', b'/', b'2', b'.', b'0'])
}

/// `start[:4].upper() == "SIP/"`.
fn starts_like_sip(s: &[u8]) -> bool {
    let rest = match s {
        [b's' | b'S', rest @ ..] => rest,
        [0xc5, 0xbf, rest @ ..] => rest,
        _ => return false,
    };
    let rest = match rest {
        [b'i' | b'I', rest @ ..] => rest,
        [0xc4, 0xb1, rest @ ..] => rest,
        _ => return false,
    };
    matches!(rest, [b'p' | b'P', b'/', ..])
}

/// The first `\n` at or after `from` where `pred` matches: (where, the match's end).
fn find_sub(s: &[u8], from: usize, pred: impl Fn(&[u8], usize) -> Option<usize>) -> Option<(usize, usize)> {
    let rest = s.get(from..)?;
    memchr::memchr_iter(b'\n', rest).find_map(|i| pred(s, from + i).map(|end| (from + i, end)))
}

/// `\n\r?\n` at `i`: its end.
fn blank_at(s: &[u8], i: usize) -> Option<usize> {
    if s.get(i) != Some(&b'\n') {
        return None;
    }
    match s.get(i + 1) {
        Some(b'\n') => Some(i + 2),
        Some(b'\r') if s.get(i + 2) == Some(&b'\n') => Some(i + 3),
        _ => None,
    }
}

/// `\n(?:\r?\n|[ \t])` at `i`: its end.
fn blank_or_fold_at(s: &[u8], i: usize) -> Option<usize> {
    if s.get(i) != Some(&b'\n') {
        return None;
    }
    match s.get(i + 1) {
        Some(b' ' | b'\t') => Some(i + 2),
        _ => blank_at(s, i),
    }
}

/// `text.split(b'\n')`, found with memchr.
fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut cursor = 0;
    let ends = memchr::memchr_iter(b'\n', text).chain(std::iter::once(text.len()));
    ends.map(move |end| {
        let line = &text[cursor..end];
        cursor = end + 1;
        line
    })
}

/// A start line, borrowed from the datagram.
enum StartRef<'a> {
    Request { method: &'a [u8], uri: &'a [u8] },
    Response { status: u16, reason: &'a [u8] },
}

impl StartRef<'_> {
    /// Into `line`, reusing its buffers when it is of the same kind.
    fn store(self, line: &mut StartLine) {
        match (self, line) {
            (StartRef::Response { status, reason }, StartLine::Response { status: s, reason: r }) => {
                *s = status;
                r.clear();
                r.extend_from_slice(reason);
            }
            (StartRef::Request { method, uri }, StartLine::Request { method: m, uri: u }) => {
                m.clear();
                m.extend_from_slice(method);
                u.clear();
                u.extend_from_slice(uri);
            }
            (StartRef::Response { status, reason }, line) => {
                *line = StartLine::Response { status, reason: reason.to_vec() };
            }
            (StartRef::Request { method, uri }, line) => {
                *line = StartLine::Request { method: method.to_vec(), uri: uri.to_vec() };
            }
        }
    }
}

fn status_line(start: &[u8]) -> Result<StartRef<'_>> {
    // start.split(" ", 2)
    let mut parts = start.splitn(3, |&b| b == b' ');
    let version = parts.next().unwrap_or_default();
    let Some(code) = parts.next() else {
        return Err(ParseError::new(format!("invalid status line {}", shown(start, 80))));
    };
    if !is_sip_version(version) {
        return Err(ParseError::new(format!("unsupported SIP version {}", shown(version, 20))));
    }
    if code.len() != 3 || !is_ascii_digits(code) {
        return Err(ParseError::new(format!("invalid status code {}", shown(code, 20))));
    }
    let status = code.iter().fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
    if !(100..=699).contains(&status) {
        return Err(ParseError::new(format!("status code out of range: {status}")));
    }
    let reason = parts.next().map(|r| strip_ascii(r, b" \t")).unwrap_or_default();
    Ok(StartRef::Response { status, reason })
}

fn request_line(start: &[u8]) -> Result<StartRef<'_>> {
    let parts: Vec<&[u8]> = start.split(|&b| b == b' ').collect();
    let [method, uri, version] = parts.as_slice() else {
        return Err(ParseError::new(format!("invalid request line {}", shown(start, 80))));
    };
    if !is_token(method) {
        return Err(ParseError::new(format!("invalid method {}", shown(method, 20))));
    }
    if !is_sip_version(version) {
        return Err(ParseError::new(format!("unsupported SIP version {}", shown(version, 20))));
    }
    if !uri.contains(&b':') || uri.iter().any(|b| b"<>\t".contains(b)) {
        return Err(ParseError::new(format!("invalid Request-URI {}", shown(uri, 80))));
    }
    Ok(StartRef::Request { method, uri })
}

fn start_line(start: &[u8]) -> Result<StartRef<'_>> {
    if let Some([a, b, c, tail @ ..]) = start.strip_prefix(b"SIP/2.0 ") {
        {
            if (b'1'..=b'6').contains(a)
                && b.is_ascii_digit()
                && c.is_ascii_digit()
                && matches!(tail.first(), None | Some(b' '))
            {
                let status = u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
                let reason = strip_ascii(tail.get(1..).unwrap_or_default(), b" \t");
                return Ok(StartRef::Response { status, reason });
            }
        }
    }
    if starts_like_sip(start) {
        return status_line(start);
    }
    request_line(start)
}

fn content_length(text: &[u8]) -> Result<usize> {
    if !is_ascii_digits(text) || text.len() > 9 {
        return Err(ParseError::new(format!("invalid Content-Length {}", shown(text, 20))));
    }
    Ok(text.iter().fold(0usize, |n, &d| n * 10 + usize::from(d - b'0')))
}

/// The start line and Content-Length of `head`; its header lines into `headers` (emptied first).
fn parse_head<'a>(head: &'a [u8], folded: bool, headers: &mut HeaderLines) -> Result<(StartRef<'a>, Option<usize>)> {
    let unfolded;
    let mut text = head;
    let first_end = memchr::memchr(b'\n', head).unwrap_or(head.len());
    let mut start: &'a [u8] = &head[..first_end];
    if start.last() == Some(&b'\r') {
        start = &start[..start.len() - 1];
    }
    if start.is_empty() {
        return Err(ParseError::new("empty message"));
    }
    if folded {
        if matches!(text.get(first_end + 1), Some(b' ' | b'\t')) {
            return Err(ParseError::new("continuation line before any header"));
        }
        unfolded = unfold(text);
        text = &unfolded;
    }
    headers.text.clear();
    headers.lines.clear();
    headers.text.reserve(text.len());
    let mut length: Option<&[u8]> = None;
    let first_end = memchr::memchr(b'\n', text).unwrap_or(text.len());
    if first_end < text.len() {
        for line in lines(&text[first_end + 1..]) {
            let Some(colon) = memchr::memchr(b':', line) else {
                return Err(ParseError::new(format!(
                    "header line without a colon: {}",
                    shown(rstrip_ascii(line, b" \t\r"), 60)
                )));
            };
            let Some(key) = header_key(&line[..colon]) else {
                return Err(ParseError::new(format!("invalid header name {}", shown(&line[..colon], 60))));
            };
            let value = strip_ascii(&line[colon + 1..], b" \t\r");
            if key == "content-length" {
                match length {
                    Some(previous) if previous != value => {
                        return Err(ParseError::new(format!(
                            "conflicting Content-Length values {} and {}",
                            shown(previous, 20),
                            shown(value, 20)
                        )))
                    }
                    None => length = Some(value),
                    _ => {}
                }
            }
            headers.push(key, value);
        }
    }
    if headers.len() > MAX_HEADER_LINES {
        return Err(ParseError::new(format!("more than {MAX_HEADER_LINES} header lines")));
    }
    let length = match length {
        Some(text) => Some(content_length(text)?),
        None => None,
    };
    Ok((start_line(start)?, length))
}

/// Parse one datagram. Without Content-Length the body is the rest of the datagram; with it, bytes
/// beyond it are dropped and a shorter body is an error.
pub fn parse_message(data: &[u8]) -> Result<Message> {
    let mut message = Message::empty();
    parse_message_into(data, &mut message)?;
    Ok(message)
}

/// [`parse_message`] into `message`, reusing its buffers (a loop parses every datagram into one). On
/// an error `message` holds nothing usable.
pub fn parse_message_into(data: &[u8], message: &mut Message) -> Result<()> {
    let mut data = data;
    while let [b'\r' | b'\n', rest @ ..] = data {
        data = rest;
    }
    let mut found = find_sub(data, 0, blank_or_fold_at);
    let mut folded = false;
    if let Some((_, end)) = found {
        if matches!(data.get(end - 1), Some(b' ' | b'\t')) {
            folded = true;
            found = find_sub(data, end, blank_at);
        }
    }
    let (head, body): (&[u8], &[u8]) = match found {
        None => {
            let end = data.iter().rposition(|&b| b != b'\r' && b != b'\n').map_or(0, |p| p + 1);
            (&data[..end], &[])
        }
        Some((start, end)) => {
            let head_end = if start > 0 && data[start - 1] == b'\r' { start - 1 } else { start };
            (&data[..head_end], &data[end..])
        }
    };
    if head.len() > MAX_HEAD_BYTES {
        return Err(ParseError::new(format!("header section larger than {MAX_HEAD_BYTES} bytes")));
    }
    let (start, length) = parse_head(head, folded, &mut message.headers)?;
    let body = match length {
        Some(n) if n > body.len() => {
            return Err(ParseError::new(format!("truncated body: Content-Length {n} but {} bytes follow", body.len())))
        }
        Some(n) => &body[..n],
        None => body,
    };
    start.store(&mut message.start);
    message.body.clear();
    message.body.extend_from_slice(body);
    Ok(())
}

impl Message {
    /// A message with nothing in it, to parse into.
    pub fn empty() -> Self {
        Message {
            start: StartLine::Response { status: 0, reason: Vec::new() },
            headers: HeaderLines::default(),
            body: Vec::new(),
        }
    }

    /// The first line of this header (by lower-case full name).
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Every line of this header, as sent.
    pub fn get_all(&self, key: &str) -> Vec<&[u8]> {
        self.headers.iter().filter(|(k, _)| *k == key).map(|(_, v)| v).collect()
    }

    /// Every element of a list header (lines split on commas outside quotes and <...>).
    pub fn get_list(&self, key: &str) -> Result<Vec<&[u8]>> {
        if !LIST_HEADERS.contains(&key) {
            return Ok(self.get_all(key));
        }
        let mut out = Vec::new();
        for (k, v) in &self.headers {
            if k == key {
                out.extend(split_list(v)?);
            }
        }
        Ok(out)
    }

    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { status, .. } => Some(status),
            StartLine::Request { .. } => None,
        }
    }

    pub fn call_id(&self) -> Result<&[u8]> {
        let value = self.get("call-id").ok_or_else(|| ParseError::new("missing Call-ID header"))?;
        let value = py_strip(value);
        if value.is_empty() {
            return Err(ParseError::new("empty Call-ID header"));
        }
        Ok(value)
    }

    pub fn cseq(&self) -> Result<(u32, &[u8])> {
        parse_cseq(self.get("cseq").ok_or_else(|| ParseError::new("missing CSeq header"))?)
    }

    fn top_via_value(&self) -> Result<&[u8]> {
        let first = self.get("via").ok_or_else(|| ParseError::new("missing Via header"))?;
        if first.contains(&b',') {
            let vias = split_list(first)?;
            return vias
                .first()
                .copied()
                .ok_or_else(|| ParseError::new(format!("empty Via header {}", shown(first, 40))));
        }
        Ok(first)
    }

    pub fn top_via(&self) -> Result<Via> {
        parse_via(self.top_via_value()?)
    }

    fn required_addr(&self, key: &str, name: &str) -> Result<NameAddr> {
        parse_name_addr(self.get(key).ok_or_else(|| ParseError::new(format!("missing {name} header")))?)
    }

    pub fn to_addr(&self) -> Result<NameAddr> {
        self.required_addr("to", "To")
    }

    pub fn from_addr(&self) -> Result<NameAddr> {
        self.required_addr("from", "From")
    }

    /// The Contact values; None for the wildcard '*'.
    pub fn contacts(&self) -> Result<Option<Vec<NameAddr>>> {
        let values = self.get_list("contact")?;
        if let [only] = values.as_slice() {
            if *only == b"*" {
                return Ok(None);
            }
        }
        values.into_iter().map(parse_name_addr).collect::<Result<Vec<_>>>().map(Some)
    }

    /// The Expires header as delta-seconds, or None.
    pub fn expires(&self) -> Result<Option<u64>> {
        let Some(value) = self.get("expires") else {
            return Ok(None);
        };
        if py_split(value).len() != 1 {
            return Err(ParseError::new(format!("invalid Expires {}", shown(value, 40))));
        }
        parse_delta(value, "Expires").map(Some)
    }

    /// A delta-seconds header (Min-Expires, Retry-After), or None when absent.
    pub fn delta(&self, key: &str, what: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => parse_delta(value, what).map(Some),
        }
    }

    /// The Digest challenges of WWW-Authenticate (or Proxy-Authenticate with `proxy`).
    pub fn challenges(&self, proxy: bool) -> Result<Vec<Challenge>> {
        let key = if proxy { "proxy-authenticate" } else { "www-authenticate" };
        let mut lines = self.headers.iter().filter(|(k, _)| *k == key).map(|(_, v)| v);
        match (lines.next(), lines.next()) {
            (Some(only), None) => parse_challenges(&[only], proxy),
            _ => parse_challenges(&self.get_all(key), proxy),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &[u8] = b"SIP/2.0 200 OK\r\n\
v: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK1;rport=5080;received=10.0.0.1\r\n\
To: <sip:u@h>;tag=t1\r\n\
i: c1@h\r\n\
CSEQ:2 REGISTER\r\n\
m: <sip:u@10.0.0.1:5080>;expires=60, <sip:u@x>;expires=30\r\n\
Expires: 120\r\n\
l: 0\r\n\r\n";

    #[test]
    fn a_200_and_its_fields() {
        let m = parse_message(OK).unwrap();
        assert_eq!(m.status(), Some(200));
        assert_eq!(m.call_id().unwrap(), b"c1@h");
        assert_eq!(m.cseq().unwrap(), (2, &b"REGISTER"[..]));
        let via = m.top_via().unwrap();
        assert_eq!(via.param(b"received"), Some(&b"10.0.0.1"[..]));
        assert_eq!(m.to_addr().unwrap().params[0].1.as_deref(), Some(&b"t1"[..]));
        assert_eq!(m.contacts().unwrap().unwrap().len(), 2);
        assert_eq!(m.expires().unwrap(), Some(120));
    }

    #[test]
    fn lf_only_and_folded() {
        let m = parse_message(b"SIP/2.0 401 Unauthorized\nVia: SIP/2.0/UDP h\n ;branch=b\nCall-ID: x\n\n").unwrap();
        assert_eq!(m.get("via"), Some(&b"SIP/2.0/UDP h ;branch=b"[..]));
        assert!(parse_message(b"SIP/2.0 200 OK\r\n folded: x\r\n\r\n").is_err());
    }

    #[test]
    fn rejections() {
        for bad in [
            &b""[..],
            b"\r\n\r\n",
            b"SIP/2.0 2000 OK\r\n\r\n",
            b"SIP/2.0 099 Odd\r\n\r\n",
            b"SIP/3.0 200 OK\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"SIP/2.0 200 OK\r\nCall ID: x\r\n\r\n",
            b"SIP/2.0 200 OK\r\nl: 10\r\n\r\nshort",
            b"SIP/2.0 200 OK\r\nl: 1\r\nContent-Length: 2\r\n\r\nab",
            b"SIP/2.0 200 OK\r\nno colon\r\n\r\n",
        ] {
            assert!(parse_message(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn names() {
        assert_eq!(normalize_name("I"), "call-id");
        assert_eq!(normalize_name("WWW-Authenticate"), "www-authenticate");
    }
}
