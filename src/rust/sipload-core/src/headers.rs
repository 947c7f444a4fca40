//! The grammar inside header values (RFC 3261 §7.3, §20, §25), as `sipload/sip/headers.py` reads it:
//! lists, parameters, name-addr / addr-spec, Via, CSeq, delta-seconds. Every function returns a
//! `ParseError` for what the Python raises one for, and the same values otherwise.

use crate::error::{shown, ParseError, Result};
use crate::text::{
    char_len_at, is_ascii_digits, is_token, is_token_byte, lstrip_ascii, py_lower, py_split, py_strip, strip_ascii,
};

/// Ordered parameters: a repeated name keeps its first place and takes the last value (a dict).
pub type Params = Vec<(Vec<u8>, Option<Vec<u8>>)>;

pub fn param<'a>(params: &'a Params, name: &[u8]) -> Option<&'a Option<Vec<u8>>> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

fn set_param(params: &mut Params, name: Vec<u8>, value: Option<Vec<u8>>) {
    match params.iter_mut().find(|(k, _)| *k == name) {
        Some(slot) => slot.1 = value,
        None => params.push((name, value)),
    }
}

/// Split on `sep` outside quoted strings (and, for ',', outside <...>).
pub fn split_outside(text: &[u8], sep: u8) -> Result<Vec<&[u8]>> {
    let mut parts = Vec::new();
    let (mut start, mut in_quotes, mut in_angle, mut escaped) = (0, false, false, false);
    let angles = sep == b',';
    for (i, &ch) in text.iter().enumerate() {
        if escaped {
            // a backslash escapes one code point: its continuation bytes are never special
            escaped = false;
        } else if in_quotes {
            if ch == b'\\' {
                escaped = true;
            } else if ch == b'"' {
                in_quotes = false;
            }
        } else if ch == b'"' {
            in_quotes = true;
        } else if angles && ch == b'<' {
            in_angle = true;
        } else if angles && ch == b'>' {
            in_angle = false;
        } else if ch == sep && !in_angle {
            parts.push(&text[start..i]);
            start = i + 1;
        }
    }
    if in_quotes {
        let what = if sep == b';' { "parameters " } else { "" };
        return Err(ParseError::new(format!("unterminated quoted string in {what}{}", shown(text, usize::MAX))));
    }
    parts.push(&text[start..]);
    Ok(parts)
}

/// A comma-separated header value split outside quotes and <...>, each element stripped, empty ones dropped.
pub fn split_list(value: &[u8]) -> Result<Vec<&[u8]>> {
    if !value.contains(&b',') {
        let stripped = py_strip(value);
        return Ok(if stripped.is_empty() { vec![] } else { vec![stripped] });
    }
    Ok(split_outside(value, b',')?.into_iter().map(py_strip).filter(|p| !p.is_empty()).collect())
}

/// Remove the quotes of a quoted-string and resolve its backslash escapes.
pub fn unquote(text: &[u8]) -> Result<Vec<u8>> {
    if text.len() < 2 || text.first() != Some(&b'"') || text.last() != Some(&b'"') {
        return Err(ParseError::new(format!("not a quoted string: {}", shown(text, 80))));
    }
    let inner = &text[1..text.len() - 1];
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        let ch = inner[i];
        if ch == b'\\' {
            if i + 1 >= inner.len() {
                return Err(ParseError::new(format!("dangling backslash in {}", shown(text, 80))));
            }
            let n = char_len_at(inner, i + 1).max(1);
            out.extend_from_slice(&inner[i + 1..i + 1 + n]);
            i += 1 + n;
            continue;
        }
        if ch == b'"' {
            return Err(ParseError::new(format!("unescaped quote inside {}", shown(text, 80))));
        }
        out.push(ch);
        i += 1;
    }
    Ok(out)
}

/// A quoted-string, backslashes and quotes escaped.
pub fn quote(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 2);
    quote_into(&mut out, text);
    out
}

/// [`quote`] written at the end of `out`.
pub fn quote_into(out: &mut Vec<u8>, text: &[u8]) {
    out.push(b'"');
    let mut rest = text;
    while let Some(i) = memchr::memchr2(b'\\', b'"', rest) {
        out.extend_from_slice(&rest[..i]);
        out.push(b'\\');
        out.push(rest[i]);
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while matches!(s.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    i
}

/// The end of the quoted-string `"(?:[^"\\]|\\.)*"` opening at `i`, if it closes.
fn quoted_string_end(s: &[u8], i: usize) -> Option<usize> {
    if s.get(i) != Some(&b'"') {
        return None;
    }
    let mut j = i + 1;
    while j < s.len() {
        match s[j] {
            b'"' => return Some(j + 1),
            b'\\' => {
                if j + 1 >= s.len() {
                    return None;
                }
                j += 1 + char_len_at(s, j + 1).max(1);
            }
            _ => j += 1,
        }
    }
    None
}

/// One `name[=value]` part (no ';' outside quotes): `_HEADER_PARAM_RE` (token names) or, with
/// `header` false, `_URI_PARAM_RE`, matched in full.
fn param_part(part: &[u8], header: bool) -> Option<(&[u8], Option<&[u8]>)> {
    let start = skip_ws(part, 0);
    let mut i = start;
    if header {
        while i < part.len() && is_token_byte(part[i]) {
            i += 1;
        }
    } else {
        while i < part.len() && !b" \t\";=".contains(&part[i]) {
            i += 1;
        }
    }
    if i == start {
        return None;
    }
    let name = &part[start..i];
    let j = skip_ws(part, i);
    if j == part.len() {
        return Some((name, None));
    }
    if part[j] != b'=' {
        return None;
    }
    let v = skip_ws(part, j + 1);
    let end = if part.get(v) == Some(&b'"') {
        quoted_string_end(part, v)?
    } else {
        let mut e = v;
        while e < part.len() && !b" \t\";".contains(&part[e]) {
            e += 1;
        }
        if e == v {
            return None;
        }
        e
    };
    if skip_ws(part, end) != part.len() {
        return None;
    }
    Some((name, Some(&part[v..end])))
}

fn params_impl(text: &[u8], header: bool) -> Result<Params> {
    let mut params = Params::new();
    let mut text = text;
    if text.first() != Some(&b';') {
        text = lstrip_ascii(text, b" \t");
        if text.is_empty() {
            return Ok(params);
        }
    }
    if text.first() == Some(&b';') {
        text = &text[1..];
    }
    let parts = if text.contains(&b'"') { split_outside(text, b';')? } else { text.split(|&b| b == b';').collect() };
    for part in parts {
        let Some((name, value)) = param_part(part, header) else {
            let what = if strip_ascii(part, b" \t").is_empty() {
                "empty parameter".to_string()
            } else {
                format!("invalid parameter {}", shown(part, 40))
            };
            return Err(ParseError::new(format!("{what} in {}", shown(text, 80))));
        };
        set_param(&mut params, py_lower(name), value.map(<[u8]>::to_vec));
    }
    Ok(params)
}

/// Header parameters ';name=value;flag' (the leading ';' optional); quoted values keep their quotes.
pub fn parse_params(text: &[u8]) -> Result<Params> {
    params_impl(text, true)
}

/// URI parameters (laxer names).
pub fn parse_uri_params(text: &[u8]) -> Result<Params> {
    params_impl(text, false)
}

/// A From/To/Contact value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    pub uri: Vec<u8>,
    pub display: Option<Vec<u8>>,
    pub params: Params,
}

/// The index just past the quoted-string that opens `text`.
fn quoted_end(text: &[u8]) -> Result<usize> {
    let mut i = 1;
    while i < text.len() {
        match text[i] {
            b'\\' => i += 1 + char_len_at(text, i + 1).max(1),
            b'"' => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Err(ParseError::new(format!("unterminated quoted string in {}", shown(text, 80))))
}

/// name-addr ('"Bob" <sip:bob@h>;tag=1') or addr-spec ('sip:bob@h;tag=1').
pub fn parse_name_addr(value: &[u8]) -> Result<NameAddr> {
    let value = py_strip(value);
    if value.is_empty() {
        return Err(ParseError::new("empty address"));
    }
    let display: Option<Vec<u8>>;
    let lt: usize;
    if value[0] == b'"' {
        let end = quoted_end(value)?;
        display = Some(unquote(&value[..end.min(value.len())])?);
        let l = skip_ws(value, end);
        if value.get(l) != Some(&b'<') {
            return Err(ParseError::new(format!("expected <URI> after the display name in {}", shown(value, 80))));
        }
        lt = l;
    } else {
        let Some(l) = value.iter().position(|&b| b == b'<') else {
            let (uri, params_text) = match value.iter().position(|&b| b == b';') {
                Some(p) => (&value[..p], &value[p + 1..]),
                None => (value, &b""[..]),
            };
            let uri = py_strip(uri);
            if uri.is_empty() || uri.iter().any(|b| b" \t>".contains(b)) || !uri.contains(&b':') {
                return Err(ParseError::new(format!("invalid address {}", shown(value, 80))));
            }
            if uri.contains(&b'?') {
                return Err(ParseError::new(format!("a URI with '?' must be enclosed in <...>: {}", shown(value, 80))));
            }
            return Ok(NameAddr { uri: uri.to_vec(), display: None, params: parse_params(params_text)? });
        };
        lt = l;
        if lt > 0 {
            let words = py_split(&value[..lt]);
            if !words.iter().all(|w| is_token(w)) {
                return Err(ParseError::new(format!("display name must be quoted: {}", shown(&value[..lt], 60))));
            }
            display = Some(words.join(&b' '));
        } else {
            display = None;
        }
    }
    let Some(gt) = value[lt..].iter().position(|&b| b == b'>').map(|p| p + lt) else {
        return Err(ParseError::new(format!("missing '>' in address {}", shown(value, 80))));
    };
    let uri = py_strip(&value[lt + 1..gt]);
    if uri.is_empty() || uri.contains(&b'<') {
        return Err(ParseError::new(format!("invalid URI in address {}", shown(value, 80))));
    }
    let rest = lstrip_ascii(&value[gt + 1..], b" \t");
    if !rest.is_empty() && rest[0] != b';' {
        return Err(ParseError::new(format!("junk after address {}", shown(value, 80))));
    }
    let params = if rest.is_empty() { Params::new() } else { parse_params(rest)? };
    Ok(NameAddr { uri: uri.to_vec(), display, params })
}

/// One Via value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    pub transport: Vec<u8>,
    pub host: Vec<u8>,
    pub port: Option<u32>,
    pub params: Params,
}

impl Via {
    pub fn param(&self, name: &[u8]) -> Option<&[u8]> {
        param(&self.params, name).and_then(|v| v.as_deref())
    }
    pub fn has_param(&self, name: &[u8]) -> bool {
        param(&self.params, name).is_some()
    }
}

/// The code points that `re.IGNORECASE` lets match the ASCII letters i, s, k besides themselves
/// (U+0130, U+0131, U+017F, U+212A), as bytes, and the ASCII letter each stands for.
const IGNORECASE_EXTRA: [(&[u8], u8); 4] = [
    ("\u{130}".as_bytes(), b'i'),
    ("\u{131}".as_bytes(), b'i'),
    ("\u{17f}".as_bytes(), b's'),
    ("\u{212a}".as_bytes(), b'k'),
];

/// Under `re.I`, the letter (lower-case ASCII) at `i` and its byte length, for an ASCII letter or one of
/// the four code points above.
fn ci_letter_at(s: &[u8], i: usize) -> Option<(u8, usize)> {
    let b = *s.get(i)?;
    if b.is_ascii_alphabetic() {
        return Some((b.to_ascii_lowercase(), 1));
    }
    IGNORECASE_EXTRA.iter().find(|(seq, _)| s[i..].starts_with(seq)).map(|(seq, l)| (*l, seq.len()))
}

/// The end of a run of `[class]+` under re.I, where `ascii` says which non-letter bytes belong.
fn ci_run(s: &[u8], mut i: usize, ascii: fn(u8) -> bool) -> usize {
    loop {
        match s.get(i) {
            Some(&b) if ascii(b) => i += 1,
            Some(_) => match ci_letter_at(s, i) {
                Some((_, n)) => i += n,
                None => return i,
            },
            None => return i,
        }
    }
}

fn ci_literal(s: &[u8], i: usize, lit: &[u8]) -> Option<usize> {
    let mut j = i;
    for &want in lit {
        if want.is_ascii_alphabetic() {
            let (got, n) = ci_letter_at(s, j)?;
            if got != want.to_ascii_lowercase() {
                return None;
            }
            j += n;
        } else {
            if s.get(j) != Some(&want) {
                return None;
            }
            j += 1;
        }
    }
    Some(j)
}

fn ascii_upper_ci(s: &[u8]) -> Vec<u8> {
    // str.upper() of a re.I token: ASCII upper-cased, U+0131 -> I, U+017F -> S (U+0130, U+212A stay)
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i..].starts_with("\u{131}".as_bytes()) {
            out.push(b'I');
            i += 2;
        } else if s[i..].starts_with("\u{17f}".as_bytes()) {
            out.push(b'S');
            i += 2;
        } else {
            out.push(s[i].to_ascii_uppercase());
            i += 1;
        }
    }
    out
}

fn port_number(digits: &[u8], whole: &[u8]) -> Result<u32> {
    let number = digits.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
    if !(1..65536).contains(&number) {
        return Err(ParseError::new(format!("port out of range in {}", shown(whole, 80))));
    }
    Ok(number)
}

/// One Via value: 'SIP/2.0/UDP host:port;branch=z9hG4bK...;rport' (`_VIA_RE`, re.I, in full).
pub fn parse_via(value: &[u8]) -> Result<Via> {
    let bad = || ParseError::new(format!("invalid Via {}", shown(value, 80)));
    let mut i = skip_ws(value, 0);
    i = ci_literal(value, i, b"SIP").ok_or_else(bad)?;
    i = skip_ws(value, i);
    i = ci_literal(value, i, b"/").ok_or_else(bad)?;
    i = skip_ws(value, i);
    i = ci_literal(value, i, b"2.0").ok_or_else(bad)?;
    i = skip_ws(value, i);
    i = ci_literal(value, i, b"/").ok_or_else(bad)?;
    i = skip_ws(value, i);
    let t0 = i;
    i = ci_run(value, i, |b| b.is_ascii_digit() || b".!%*_+`'~-".contains(&b));
    if i == t0 {
        return Err(bad());
    }
    let transport = ascii_upper_ci(&value[t0..i]);
    let w = skip_ws(value, i);
    if w == i {
        return Err(bad());
    }
    i = w;
    let host: &[u8];
    if value.get(i) == Some(&b'[') {
        let h0 = i + 1;
        let mut j = h0;
        while j < value.len() && (value[j].is_ascii_hexdigit() || value[j] == b':' || value[j] == b'.') {
            j += 1;
        }
        if value.get(j) != Some(&b']') || !value[h0..j].contains(&b':') {
            return Err(bad());
        }
        host = &value[h0..j];
        i = j + 1;
    } else {
        let h0 = i;
        i = ci_run(value, i, |b| b.is_ascii_digit() || b"._-".contains(&b));
        if i == h0 {
            return Err(bad());
        }
        host = &value[h0..i];
    }
    i = skip_ws(value, i);
    let mut port = None;
    if value.get(i) == Some(&b':') {
        let d0 = skip_ws(value, i + 1);
        let mut d = d0;
        while d < value.len() && d - d0 < 5 && value[d].is_ascii_digit() {
            d += 1;
        }
        if d == d0 {
            return Err(bad());
        }
        port = Some(&value[d0..d]);
        i = skip_ws(value, d);
    }
    let params = match value.get(i) {
        None => Params::new(),
        Some(b';') => parse_params(&value[i..])?,
        Some(_) => return Err(bad()),
    };
    let port = match port {
        Some(digits) => Some(port_number(digits, value)?),
        None => None,
    };
    Ok(Via { transport, host: host.to_vec(), port, params })
}

/// A decimal number of at most `limit`.
fn digits_value(text: &[u8], what: &str, whole: &[u8], limit: u64) -> Result<u64> {
    if !is_ascii_digits(text) {
        return Err(ParseError::new(format!("invalid {what} {}", shown(whole, 40))));
    }
    let first = text.iter().position(|&b| b != b'0');
    let significant = first.map_or(&b"0"[..], |p| &text[p..]);
    let number = if significant.len() > 12 {
        u64::MAX
    } else {
        significant.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'))
    };
    if number > limit {
        return Err(ParseError::new(format!("{what} out of range in {}", shown(whole, 40))));
    }
    Ok(number)
}

/// '314159 INVITE' -> (314159, "INVITE"); the method is case-sensitive.
pub fn parse_cseq(value: &[u8]) -> Result<(u32, &[u8])> {
    let s = strip_ascii(value, b" \t");
    let mut parts = s.split(|&b| b == b' ' || b == b'\t').filter(|p| !p.is_empty());
    let (Some(number), Some(method), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(ParseError::new(format!("invalid CSeq {}", shown(value, 40))));
    };
    if !is_token(method) {
        return Err(ParseError::new(format!("invalid CSeq {}", shown(value, 40))));
    }
    let number = digits_value(number, "CSeq number", value, (1 << 31) - 1)?;
    Ok((number as u32, method))
}

/// A delta-seconds value (Expires, Min-Expires, Retry-After's first token), at most 2**32-1.
pub fn parse_delta(value: &[u8], what: &str) -> Result<u64> {
    let stripped = py_strip(value);
    let text = py_split(stripped).first().copied().unwrap_or_default();
    digits_value(text, what, value, (1 << 32) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_keep_first_place_and_last_value() {
        let p = parse_params(b";a=1;B;a=2").unwrap();
        assert_eq!(p, vec![(b"a".to_vec(), Some(b"2".to_vec())), (b"b".to_vec(), None)]);
        assert!(parse_params(b";a=1;;b").is_err());
        assert!(parse_params(b";a=\"x").is_err());
        assert_eq!(parse_params(b"").unwrap(), vec![]);
        assert_eq!(parse_params(b" ; q = \"a;b\" ").unwrap(), vec![(b"q".to_vec(), Some(b"\"a;b\"".to_vec()))]);
    }

    #[test]
    fn name_addr_forms() {
        let a = parse_name_addr(b"\"Bob \\\"B\\\"\" <sip:bob@h>;tag=1").unwrap();
        assert_eq!(a.display.as_deref(), Some(&b"Bob \"B\""[..]));
        assert_eq!(a.uri, b"sip:bob@h");
        let b = parse_name_addr(b"sip:bob@h;tag=2").unwrap();
        assert_eq!(param(&b.params, b"tag"), Some(&Some(b"2".to_vec())));
        assert!(parse_name_addr(b"sip:a@h?x=1").is_err());
        assert!(parse_name_addr(b"Bob Smith@ <sip:a@h>").is_err());
        assert_eq!(parse_name_addr(b"Bob  Smith <sip:a@h>").unwrap().display.as_deref(), Some(&b"Bob Smith"[..]));
    }

    #[test]
    fn via_usual_and_unusual() {
        let v = parse_via(b"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1;rport=5060;received=10.0.0.1").unwrap();
        assert_eq!(v.transport, b"UDP");
        assert_eq!(v.port, Some(5060));
        assert_eq!(v.param(b"branch"), Some(&b"z9hG4bK1"[..]));
        let w = parse_via(b" sip / 2.0 / udp [::1] : 5 ; rport").unwrap();
        assert_eq!((w.transport.as_slice(), w.host.as_slice(), w.port), (&b"UDP"[..], &b"::1"[..], Some(5)));
        assert!(w.has_param(b"rport") && w.param(b"rport").is_none());
        assert!(parse_via(b"SIP/2.0/UDP h:70000").is_err());
        assert!(parse_via(b"SIP/2.0/UDP h:123456").is_err());
        assert!(parse_via("\u{17f}IP/2.0/udp h".as_bytes()).is_ok());
    }

    #[test]
    fn cseq_and_delta() {
        assert_eq!(parse_cseq(b"1 REGISTER").unwrap(), (1, &b"REGISTER"[..]));
        assert_eq!(parse_cseq(b" 0000000000007 \t OPTIONS ").unwrap().0, 7);
        assert!(parse_cseq(b"2147483648 REGISTER").is_err());
        assert!(parse_cseq(b"1 REG ISTER").is_err());
        assert_eq!(parse_delta(b" 3600 ;comment", "Expires").unwrap(), 3600);
        assert!(parse_delta(b"4294967296", "Expires").is_err());
        assert!(parse_delta(b"", "Expires").is_err());
        assert!(parse_delta("\u{b2}".as_bytes(), "Expires").is_err());
    }

    #[test]
    fn lists_and_quotes() {
        assert_eq!(split_list(b"<sip:a,b>, c ,, ").unwrap(), vec![&b"<sip:a,b>"[..], &b"c"[..]]);
        assert!(split_list(b"\"a,b").is_err());
        assert_eq!(unquote(b"\"a\\\\b\"").unwrap(), b"a\\b");
        assert_eq!(quote(b"a\"b"), b"\"a\\\"b\"");
    }
}
