//! What the 200 of a REGISTER says about our binding, as `sipload/sip/granted.py` reads it: the
//! granted expiry of our Contact (its expires parameter, else the Expires header, else what we asked
//! for), and, with RFC 5626 outbound / RFC 5627 GRUU, our flow's GRUUs and `Require: outbound`.
//!
//! Our binding is the Contact with our URI (user, host in any case, port: [`contact_key`]); with a
//! flow, the one with our +sip.instance (and reg-id with outbound), else one with our URI. Every
//! delta-seconds read here goes through [`delta_param`]: digits only, clamped at 2**32-1.

use crate::error::{shown, ParseError, Result};
use crate::headers::{param, parse_uri_params, quote, unquote, Params};
use crate::message::Message;
use crate::text::{is_ascii_digits, py_lower, py_strip};

/// The largest delta-seconds (RFC 3261 §20.19).
pub const MAX_DELTA: u64 = (1 << 32) - 1;

/// An expires parameter as delta-seconds, clamped at `MAX_DELTA`; None unless plain ASCII digits.
pub fn delta_param(value: Option<&[u8]>) -> Option<u64> {
    let value = value?;
    if !is_ascii_digits(value) {
        return None;
    }
    if value.len() > 10 {
        return Some(MAX_DELTA);
    }
    Some(value.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')).min(MAX_DELTA))
}

fn param_value<'a>(params: &'a Params, name: &[u8]) -> Option<&'a [u8]> {
    param(params, name).and_then(|v| v.as_deref())
}

/// The expiry a 200 granted our Contact `mine`: its expires param, else the Expires header, else `requested`.
pub fn granted_expiry(response: &Message, mine: &[u8], requested: u64) -> u64 {
    let lines = response.get_all("contact");
    if let [line] = lines.as_slice() {
        // the usual answer, "<our contact>;expires=N", read without parsing addresses
        let rest =
            line.strip_prefix(b"<").and_then(|l| l.strip_prefix(mine)).and_then(|l| l.strip_prefix(b">;expires="));
        if let Some(rest) = rest {
            if !line.contains(&b',') && !mine.contains(&b'<') && !mine.contains(&b'>') && py_strip(mine) == mine {
                if let Some(seconds) = delta_param(Some(rest)) {
                    return seconds;
                }
            }
        }
    }
    let header = (|| -> Result<Option<u64>> {
        let contacts = response.contacts()?.unwrap_or_default();
        let mut ours: Option<ContactKey> = None;
        for addr in &contacts {
            if addr.uri != mine {
                // the same text is the same key: parse URIs only when it differs
                let key = ours.get_or_insert_with(|| contact_key(mine));
                if contact_key(&addr.uri) != *key {
                    continue;
                }
            }
            if let Some(seconds) = delta_param(param_value(&addr.params, b"expires")) {
                return Ok(Some(seconds));
            }
            break;
        }
        response.expires()
    })();
    header.ok().flatten().unwrap_or(requested)
}

/// What makes two Contact URIs the same binding here: user, host (any case), port; an unparseable
/// URI is its own text with an empty host.
pub type ContactKey = (Option<Vec<u8>>, Vec<u8>, Option<u32>);

/// `contact_key(uri)`.
pub fn contact_key(uri: &[u8]) -> ContactKey {
    match parse_uri_key(uri) {
        Ok(key) => key,
        Err(_) => (Some(uri.to_vec()), Vec::new(), None),
    }
}

/// The (user, lower-case host, port) of `headers.parse_uri`, with its errors.
fn parse_uri_key(text: &[u8]) -> Result<ContactKey> {
    let text = py_strip(text);
    let colon = text.iter().position(|&b| b == b':');
    let (scheme, rest) = match colon {
        Some(c) if c > 0 => (&text[..c], &text[c + 1..]),
        _ => return Err(ParseError::new(format!("URI without a scheme: {}", shown(text, 80)))),
    };
    let scheme = py_lower(scheme);
    if scheme != b"sip" && scheme != b"sips" {
        return Err(ParseError::new(format!("unsupported URI scheme {} in {}", shown(&scheme, 20), shown(text, 80))));
    }
    let mut user = None;
    let mut rest = rest;
    if let Some(at) = rest.iter().rposition(|&b| b == b'@') {
        if at == 0 {
            return Err(ParseError::new(format!("empty user part in {}", shown(text, 80))));
        }
        user = Some(rest[..at].to_vec());
        rest = &rest[at + 1..];
    }
    let rest = rest.split(|&b| b == b'?').next().unwrap_or_default();
    let (hostport, params_text) = match rest.iter().position(|&b| b == b';') {
        Some(p) => (&rest[..p], &rest[p + 1..]),
        None => (rest, &b""[..]),
    };
    let (host, port) = parse_hostport(hostport)?;
    if !params_text.is_empty() {
        parse_uri_params(params_text)?;
    }
    Ok((user, host.to_ascii_lowercase(), port))
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while matches!(s.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    i
}

/// `headers.parse_hostport`: `[ \t]*` (`[v6]` | host) `[ \t]*` (`:` `[ \t]*` 1-5 digits)? `[ \t]*`, in full.
fn parse_hostport(text: &[u8]) -> Result<(&[u8], Option<u32>)> {
    let bad = || {
        if py_strip(text).is_empty() {
            ParseError::new("empty host")
        } else {
            ParseError::new(format!("invalid host or port in {}", shown(text, 80)))
        }
    };
    let mut i = skip_ws(text, 0);
    let host;
    if text.get(i) == Some(&b'[') {
        let start = i + 1;
        let mut j = start;
        while j < text.len() && (text[j].is_ascii_hexdigit() || text[j] == b':' || text[j] == b'.') {
            j += 1;
        }
        if text.get(j) != Some(&b']') || !text[start..j].contains(&b':') {
            return Err(bad());
        }
        host = &text[start..j];
        i = j + 1;
    } else {
        let start = i;
        while i < text.len() && (text[i].is_ascii_alphanumeric() || b"._-".contains(&text[i])) {
            i += 1;
        }
        if i == start {
            return Err(bad());
        }
        host = &text[start..i];
    }
    i = skip_ws(text, i);
    let mut port = None;
    if text.get(i) == Some(&b':') {
        let start = skip_ws(text, i + 1);
        let mut d = start;
        while d < text.len() && text[d].is_ascii_digit() {
            d += 1;
        }
        if d == start || d - start > 5 {
            return Err(bad());
        }
        let number = text[start..d].iter().fold(0u32, |n, &b| n * 10 + u32::from(b - b'0'));
        port = Some(number);
        i = skip_ws(text, d);
    }
    if i != text.len() {
        return Err(bad());
    }
    if let Some(number) = port {
        if !(1..65536).contains(&number) {
            return Err(ParseError::new(format!("port out of range in {}", shown(text, 80))));
        }
    }
    Ok((host, port))
}

/// What outbound / GRUU add to one registration: its identity on the wire, what the 200 said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub instance: Vec<u8>,
    pub reg_id: Option<u32>,
    /// `;+sip.instance="<urn:...>"` (and `;reg-id=N`), appended to our Contact.
    pub contact_params: Vec<u8>,
    /// The value of the Supported header (`path, outbound` and/or `gruu`).
    pub supported: Vec<u8>,
    pub pub_gruu: Option<Vec<u8>>,
    pub temp_gruu: Option<Vec<u8>>,
    pub outbound_required: bool,
}

impl Flow {
    /// As `Flow(outbound, gruu, instance, reg_id)`, with its checks.
    pub fn new(outbound: bool, gruu: bool, instance: &[u8], reg_id: i64) -> std::result::Result<Self, String> {
        if !instance.starts_with(b"urn:") || instance.iter().any(|b| b"<>\" \t\r\n".contains(b)) {
            return Err(format!("instance: expected a URN such as urn:uuid:..., got {}", shown(instance, usize::MAX)));
        }
        if reg_id < 1 {
            return Err(format!("reg_id: must be >= 1, got {reg_id}"));
        }
        let reg_id = if outbound {
            Some(u32::try_from(reg_id).map_err(|_| format!("reg_id: too large: {reg_id}"))?)
        } else {
            None
        };
        let mut bracketed = Vec::with_capacity(instance.len() + 2);
        bracketed.push(b'<');
        bracketed.extend_from_slice(instance);
        bracketed.push(b'>');
        let mut contact_params = b";+sip.instance=".to_vec();
        contact_params.extend(quote(&bracketed));
        if let Some(id) = reg_id {
            contact_params.extend_from_slice(format!(";reg-id={id}").as_bytes());
        }
        let mut tags: Vec<&str> = Vec::new();
        if outbound {
            tags.extend(["path", "outbound"]);
        }
        if gruu {
            tags.push("gruu");
        }
        Ok(Flow {
            instance: instance.to_vec(),
            reg_id,
            contact_params,
            supported: tags.join(", ").into_bytes(),
            pub_gruu: None,
            temp_gruu: None,
            outbound_required: false,
        })
    }
}

/// A pub-gruu / temp-gruu parameter value (a quoted URI), unquoted; None when absent or malformed.
pub fn gruu_param(value: Option<&[u8]>) -> Option<Vec<u8>> {
    let value = value?;
    let text = if value.starts_with(b"\"") { unquote(value).ok()? } else { value.to_vec() };
    (!text.is_empty()).then_some(text)
}

/// The 200 of an outbound / GRUU registration: our binding's expiry (returned), GRUUs and Require
/// (into `flow`). Our binding is the Contact with our instance (and reg-id), else one with our URI.
pub fn read_flow(flow: &mut Flow, response: &Message, mine: &[u8], requested: u64) -> Result<u64> {
    flow.outbound_required = response.get_list("require")?.iter().any(|t| py_lower(t) == b"outbound");
    flow.pub_gruu = None;
    flow.temp_gruu = None;
    let contacts = response.contacts().ok().flatten().unwrap_or_default();
    let key = contact_key(mine);
    let mut ours = None;
    for addr in &contacts {
        let raw = param_value(&addr.params, b"+sip.instance");
        let instance = match raw {
            Some(r) if r.starts_with(b"\"") => unquote(r).ok(),
            Some(r) => Some(r.to_vec()),
            None => None,
        };
        if let Some(instance) = instance {
            let trimmed = strip_angles(&instance);
            if trimmed != flow.instance.as_slice() {
                continue;
            }
            if let (Some(id), Some(given)) = (flow.reg_id, param_value(&addr.params, b"reg-id")) {
                if given != id.to_string().as_bytes() {
                    continue;
                }
            }
            ours = Some(addr);
            break;
        }
        if ours.is_none() && (addr.uri == mine || contact_key(&addr.uri) == key) {
            ours = Some(addr);
        }
    }
    if let Some(addr) = ours {
        flow.pub_gruu = gruu_param(param_value(&addr.params, b"pub-gruu"));
        flow.temp_gruu = gruu_param(param_value(&addr.params, b"temp-gruu"));
        if let Some(seconds) = delta_param(param_value(&addr.params, b"expires")) {
            return Ok(seconds);
        }
    }
    Ok(response.expires().ok().flatten().unwrap_or(requested))
}

/// `str.strip("<>")`.
fn strip_angles(s: &[u8]) -> &[u8] {
    crate::text::strip_ascii(s, b"<>")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::parse_message;

    fn ok(contact_lines: &str) -> Message {
        let text = format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n{contact_lines}\r\n"
        );
        parse_message(text.as_bytes()).unwrap()
    }

    const MINE: &[u8] = b"sip:alice@127.0.0.1:5080;transport=udp";

    #[test]
    fn contact_param_beats_header_beats_request() {
        assert_eq!(
            granted_expiry(&ok("Contact: <sip:alice@127.0.0.1:5080;transport=udp>;expires=45\r\n"), MINE, 60),
            45
        );
        assert_eq!(
            granted_expiry(
                &ok("Contact: <sip:alice@127.0.0.1:5080;transport=udp>;expires=45, <sip:b@x>\r\nExpires: 9\r\n"),
                MINE,
                60
            ),
            45
        );
        assert_eq!(
            granted_expiry(&ok("Contact: <sip:ALICE@127.0.0.1:5080>;expires=1\r\nExpires: 30\r\n"), MINE, 60),
            30
        );
        assert_eq!(granted_expiry(&ok("Contact: <sip:alice@127.0.0.1:5080>;expires=7\r\n"), MINE, 60), 7);
        assert_eq!(granted_expiry(&ok("Expires: 30\r\n"), MINE, 60), 30);
        assert_eq!(granted_expiry(&ok(""), MINE, 60), 60);
        assert_eq!(
            granted_expiry(&ok("Contact: <sip:alice@127.0.0.1:5080>;expires=99999999999\r\n"), MINE, 60),
            MAX_DELTA
        );
        // an unparseable Contact: the Expires header is not read either
        assert_eq!(granted_expiry(&ok("Contact: <sip:a@h\r\nExpires: 30\r\n"), MINE, 60), 60);
    }

    #[test]
    fn keys_of_uris() {
        assert_eq!(contact_key(b"sip:u@HOST:5"), (Some(b"u".to_vec()), b"host".to_vec(), Some(5)));
        assert_eq!(contact_key(b" sip:[::1] ;x"), (None, b"::1".to_vec(), None));
        assert_eq!(contact_key(b"tel:1"), (Some(b"tel:1".to_vec()), vec![], None));
        assert_eq!(contact_key(b"sip:h:0").1, b"");
        assert_eq!(contact_key(b"sip:h:123456").1, b"");
        assert_eq!(contact_key(b"sip:@h").1, b"");
    }

    #[test]
    fn delta_params() {
        assert_eq!(delta_param(Some(b"0")), Some(0));
        assert_eq!(delta_param(Some(b"4294967296")), Some(MAX_DELTA));
        assert_eq!(delta_param(Some("\u{b2}".as_bytes())), None);
        assert_eq!(delta_param(None), None);
    }

    #[test]
    fn flows() {
        let mut flow = Flow::new(true, true, b"urn:uuid:1", 1).unwrap();
        assert_eq!(flow.contact_params, b";+sip.instance=\"<urn:uuid:1>\";reg-id=1");
        assert_eq!(flow.supported, b"path, outbound, gruu");
        let m = ok("Require: outbound\r\nContact: <sip:x@y>;+sip.instance=\"<urn:uuid:1>\";reg-id=1;pub-gruu=\"sip:p@g\";expires=30\r\n");
        assert_eq!(read_flow(&mut flow, &m, MINE, 60).unwrap(), 30);
        assert!(flow.outbound_required);
        assert_eq!(flow.pub_gruu.as_deref(), Some(&b"sip:p@g"[..]));
        assert!(Flow::new(true, false, b"uuid:1", 1).is_err());
        assert!(Flow::new(true, false, b"urn:1", 0).is_err());
    }
}
