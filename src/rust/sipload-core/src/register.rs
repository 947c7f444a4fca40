//! The REGISTER request as `sipload/sip/registration.py` builds it, byte for byte.

/// What one REGISTER carries. Text fields are the bytes the Python side encodes with
/// `surrogateescape`; `aor` and `contact` are given as the parts they are joined from (`contact`: the
/// whole Contact value, `<uri>;params` or `*`), so that the request is written in one buffer.
#[derive(Debug, Clone, Default)]
pub struct RegisterFields<'a> {
    pub registrar_uri: &'a [u8],
    pub transport: &'a [u8],
    pub sent_by: &'a [u8],
    pub branch: &'a [u8],
    pub route: Option<&'a [u8]>,
    pub aor: &'a [&'a [u8]],
    pub from_tag: &'a [u8],
    pub call_id: &'a [u8],
    pub cseq: u32,
    pub contact: &'a [&'a [u8]],
    pub supported: Option<&'a [u8]>,
    pub expires: u64,
    pub authorization: Option<(&'a [u8], &'a [u8])>,
    pub user_agent: &'a [u8],
}

/// `n` in decimal digits, as `str(n)`.
fn decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The request bytes.
pub fn build_register(f: &RegisterFields<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(400 + f.authorization.map_or(0, |(_, v)| v.len()));
    let o = &mut out;
    let put = |o: &mut Vec<u8>, parts: &[&[u8]]| parts.iter().for_each(|p| o.extend_from_slice(p));
    put(o, &[b"REGISTER ", f.registrar_uri, b" SIP/2.0\r\n"]);
    put(o, &[b"Via: SIP/2.0/", f.transport, b" ", f.sent_by, b";branch=", f.branch, b";rport\r\n"]);
    put(o, &[b"Max-Forwards: 70\r\n"]);
    if let Some(route) = f.route {
        put(o, &[b"Route: ", route, b"\r\n"]);
    }
    put(o, &[b"From: <"]);
    put(o, f.aor);
    put(o, &[b">;tag=", f.from_tag, b"\r\nTo: <"]);
    put(o, f.aor);
    put(o, &[b">\r\nCall-ID: ", f.call_id, b"\r\nCSeq: "]);
    decimal(o, u64::from(f.cseq));
    put(o, &[b" REGISTER\r\nContact: "]);
    put(o, f.contact);
    put(o, &[b"\r\n"]);
    if let Some(supported) = f.supported {
        put(o, &[b"Supported: ", supported, b"\r\n"]);
    }
    put(o, &[b"Expires: "]);
    decimal(o, f.expires);
    put(o, &[b"\r\n"]);
    if let Some((name, value)) = f.authorization {
        put(o, &[name, b": ", value, b"\r\n"]);
    }
    put(o, &[b"User-Agent: ", f.user_agent, b"\r\nContent-Length: 0\r\n\r\n"]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_register() {
        let bytes = build_register(&RegisterFields {
            registrar_uri: b"sip:h",
            transport: b"UDP",
            sent_by: b"127.0.0.1:5080",
            branch: b"z9hG4bK1",
            aor: &[b"sip:u@h"],
            from_tag: b"t",
            call_id: b"c@h",
            cseq: 1,
            contact: &[b"<sip:u@127.0.0.1:5080>"],
            expires: 60,
            user_agent: b"sipload",
            ..Default::default()
        });
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("REGISTER sip:h SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK1;rport\r\n"));
        assert!(text.ends_with("Expires: 60\r\nUser-Agent: sipload\r\nContent-Length: 0\r\n\r\n"));
        let parsed = crate::message::parse_message(text.as_bytes()).unwrap();
        assert_eq!(parsed.cseq().unwrap(), (1, &b"REGISTER"[..]));
    }

    #[test]
    fn decimals_are_python_str() {
        for n in [0, 7, 10, 3600, 4_294_967_295, u64::MAX] {
            let mut out = Vec::new();
            decimal(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }
}
