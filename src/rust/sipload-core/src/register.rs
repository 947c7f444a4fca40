//! The REGISTER request as `sipload/sip/registration.py` builds it, byte for byte.

/// What one REGISTER carries. Text fields are the bytes the Python side encodes with
/// `surrogateescape`; `contact` is the whole Contact value (`<uri>;params` or `*`).
#[derive(Debug, Clone, Default)]
pub struct RegisterFields<'a> {
    pub registrar_uri: &'a [u8],
    pub transport: &'a [u8],
    pub sent_by: &'a [u8],
    pub branch: &'a [u8],
    pub route: Option<&'a [u8]>,
    pub aor: &'a [u8],
    pub from_tag: &'a [u8],
    pub call_id: &'a [u8],
    pub cseq: u32,
    pub contact: &'a [u8],
    pub supported: Option<&'a [u8]>,
    pub expires: u64,
    pub authorization: Option<(&'a [u8], &'a [u8])>,
    pub user_agent: &'a [u8],
}

fn decimal(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(n.to_string().as_bytes());
}

/// The request bytes.
pub fn build_register(f: &RegisterFields<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(400 + f.authorization.map_or(0, |(_, v)| v.len()));
    let mut line = |parts: &[&[u8]]| {
        for p in parts {
            out.extend_from_slice(p);
        }
        out.extend_from_slice(b"\r\n");
    };
    line(&[b"REGISTER ", f.registrar_uri, b" SIP/2.0"]);
    line(&[b"Via: SIP/2.0/", f.transport, b" ", f.sent_by, b";branch=", f.branch, b";rport"]);
    line(&[b"Max-Forwards: 70"]);
    if let Some(route) = f.route {
        line(&[b"Route: ", route]);
    }
    line(&[b"From: <", f.aor, b">;tag=", f.from_tag]);
    line(&[b"To: <", f.aor, b">"]);
    line(&[b"Call-ID: ", f.call_id]);
    let mut cseq = Vec::new();
    decimal(&mut cseq, u64::from(f.cseq));
    line(&[b"CSeq: ", &cseq, b" REGISTER"]);
    line(&[b"Contact: ", f.contact]);
    if let Some(supported) = f.supported {
        line(&[b"Supported: ", supported]);
    }
    let mut expires = Vec::new();
    decimal(&mut expires, f.expires);
    line(&[b"Expires: ", &expires]);
    if let Some((name, value)) = f.authorization {
        line(&[name, b": ", value]);
    }
    line(&[b"User-Agent: ", f.user_agent]);
    line(&[b"Content-Length: 0"]);
    out.extend_from_slice(b"\r\n");
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
            aor: b"sip:u@h",
            from_tag: b"t",
            call_id: b"c@h",
            cseq: 1,
            contact: b"<sip:u@127.0.0.1:5080>",
            expires: 60,
            user_agent: b"sipload",
            ..Default::default()
        });
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("REGISTER sip:h SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK1;rport\r\n"));
        assert!(text.ends_with("Expires: 60\r\nUser-Agent: sipload\r\nContent-Length: 0\r\n\r\n"));
        let parsed = crate::message::parse_message(text.as_bytes()).unwrap();
        assert_eq!(parsed.cseq().unwrap(), (1, b"REGISTER".to_vec()));
    }
}
