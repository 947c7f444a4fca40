//! What the 200 of a REGISTER says about a plain binding: the granted expiry (`sipload/sip/granted.py`'s
//! `granted_expiry`, `delta_param` and `contact_key`).
//!
//! Our binding is the Contact with our URI (user, host, port); its expires parameter wins, then the
//! Expires header, then what we asked for. A shortcut reads the usual single `<ours>;expires=N` line
//! without parsing addresses; it gives what the general path gives.

use crate::headers::{param, parse_uri_params};
use crate::message::Message;
use crate::text::py_strip;

/// The largest delta-seconds (RFC 3261 §20.19).
pub const MAX_DELTA: u64 = (1 << 32) - 1;

/// An expires parameter as delta-seconds, clamped at MAX_DELTA; None unless plain ASCII digits.
pub fn delta_param(value: Option<&[u8]>) -> Option<u64> {
    let value = value?;
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if value.len() > 10 {
        return Some(MAX_DELTA);
    }
    let n = value.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
    Some(n.min(MAX_DELTA))
}

/// What makes two Contact URIs the same binding: user, host (lower case), port; the whole text when the
/// URI does not parse (`parse_uri` raised).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContactKey {
    Parsed { user: Option<Vec<u8>>, host: Vec<u8>, port: Option<u32> },
    Unparsed(Vec<u8>),
}

pub fn contact_key(uri: &[u8]) -> ContactKey {
    parse_sip_uri(uri).unwrap_or_else(|| ContactKey::Unparsed(uri.to_vec()))
}

/// `headers.parse_uri` reduced to the key, None where it raises.
fn parse_sip_uri(text: &[u8]) -> Option<ContactKey> {
    let text = py_strip(text);
    let colon = text.iter().position(|&b| b == b':')?;
    let (scheme, rest) = (text.get(..colon)?, text.get(colon + 1..)?);
    if scheme.is_empty() {
        return None;
    }
    let scheme = String::from_utf8_lossy(scheme).to_lowercase();
    if scheme != "sip" && scheme != "sips" {
        return None;
    }
    let (user, rest) = match rest.iter().rposition(|&b| b == b'@') {
        Some(at) => {
            let user = rest.get(..at)?;
            if user.is_empty() {
                return None;
            }
            (Some(user.to_vec()), rest.get(at + 1..)?)
        }
        None => (None, rest),
    };
    let rest = rest.split(|&b| b == b'?').next().unwrap_or_default();
    let mut parts = rest.splitn(2, |&b| b == b';');
    let hostport = parts.next().unwrap_or_default();
    let (host, port) = parse_hostport(hostport)?;
    if let Some(params) = parts.next() {
        if !params.is_empty() {
            parse_uri_params(params).ok()?;
        }
    }
    Some(ContactKey::Parsed { user, host: host.to_ascii_lowercase(), port })
}

/// `_HOSTPORT_RE` fullmatch: `[ \t]*(\[v6\]|name)[ \t]*(:[ \t]*digits{1,5})?[ \t]*`, the port in 1..65535.
fn parse_hostport(s: &[u8]) -> Option<(Vec<u8>, Option<u32>)> {
    let ws = |b: &u8| *b == b' ' || *b == b'\t';
    let mut i = s.iter().take_while(|b| ws(b)).count();
    let host: Vec<u8>;
    if s.get(i) == Some(&b'[') {
        let len = s.get(i + 1..)?.iter().take_while(|b| b.is_ascii_hexdigit() || **b == b':' || **b == b'.').count();
        let inner = s.get(i + 1..i + 1 + len)?;
        if !inner.contains(&b':') || s.get(i + 1 + len) != Some(&b']') {
            return None;
        }
        host = inner.to_vec();
        i += len + 2;
    } else {
        let len = s
            .get(i..)?
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'.' || **b == b'_' || **b == b'-')
            .count();
        if len == 0 {
            return None;
        }
        host = s.get(i..i + len)?.to_vec();
        i += len;
    }
    i += s.get(i..)?.iter().take_while(|b| ws(b)).count();
    let mut port = None;
    if s.get(i) == Some(&b':') {
        i += 1;
        i += s.get(i..)?.iter().take_while(|b| ws(b)).count();
        let digits = s.get(i..)?.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 5 {
            return None;
        }
        let n = s.get(i..i + digits)?.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
        if !(1..65536).contains(&n) {
            return None;
        }
        port = Some(n);
        i += digits;
        i += s.get(i..)?.iter().take_while(|b| ws(b)).count();
    }
    (i == s.len()).then_some((host, port))
}

/// The expiry a 200 granted our Contact `mine`: its expires param, else the Expires header, else
/// `requested`.
pub fn granted_expiry(response: &Message, mine: &[u8], requested: u64) -> u64 {
    let lines = response.get_all("contact");
    if let [line] = lines.as_slice() {
        let end = mine.len() + 11;
        let shortcut = line.get(end.saturating_sub(10)..end) == Some(b">;expires=".as_slice())
            && line.get(1..end - 10) == Some(mine)
            && line.first() == Some(&b'<')
            && !line.contains(&b',')
            && !mine.contains(&b'<')
            && !mine.contains(&b'>')
            && py_strip(mine) == mine;
        if shortcut {
            if let Some(seconds) = delta_param(line.get(end..)) {
                return seconds;
            }
        }
    }
    let header = match response.contacts() {
        Ok(contacts) => {
            let mut ours: Option<ContactKey> = None;
            for addr in contacts.unwrap_or_default() {
                if addr.uri != mine {
                    let key = ours.get_or_insert_with(|| contact_key(mine)).clone();
                    if contact_key(&addr.uri) != key {
                        continue;
                    }
                }
                if let Some(seconds) = delta_param(param(&addr.params, b"expires").and_then(|v| v.as_deref())) {
                    return seconds;
                }
                break;
            }
            response.expires().ok().flatten()
        }
        Err(_) => None,
    };
    header.unwrap_or(requested)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::parse_message;

    fn ok(contact: &str, expires: Option<&str>) -> Message {
        let mut m = format!("SIP/2.0 200 OK\r\nCall-ID: x\r\nContact: {contact}\r\n");
        if let Some(e) = expires {
            m += &format!("Expires: {e}\r\n");
        }
        m += "Content-Length: 0\r\n\r\n";
        parse_message(m.as_bytes()).expect("a response")
    }

    #[test]
    fn our_contact_param_then_header_then_requested() {
        let mine = b"sip:a@127.0.0.1:5080;transport=udp";
        assert_eq!(granted_expiry(&ok("<sip:a@127.0.0.1:5080;transport=udp>;expires=30", None), mine, 60), 30);
        assert_eq!(granted_expiry(&ok("<sip:a@127.0.0.1:5080>;expires=45", Some("90")), mine, 60), 45);
        assert_eq!(granted_expiry(&ok("<sip:b@127.0.0.1:5080>;expires=45", Some("90")), mine, 60), 90);
        assert_eq!(granted_expiry(&ok("<sip:a@127.0.0.1:5080>", None), mine, 60), 60);
        assert_eq!(granted_expiry(&ok("<sip:a@127.0.0.1:5080>;expires=99999999999", None), mine, 60), MAX_DELTA);
    }

    #[test]
    fn keys_compare_user_host_any_case_and_port() {
        assert_eq!(contact_key(b"sip:a@HOST:5060;lr"), contact_key(b" sip:a@host:5060 "));
        assert_ne!(contact_key(b"sip:a@host:5060"), contact_key(b"sip:a@host"));
        assert_eq!(contact_key(b"mailto:x"), ContactKey::Unparsed(b"mailto:x".to_vec()));
        assert_eq!(contact_key(b"sip:[::1]:70000"), ContactKey::Unparsed(b"sip:[::1]:70000".to_vec()));
    }
}
