//! The HTTP Digest client of `sipload/sip/digest.py` (RFC 2617, RFC 7616, RFC 8760): challenge
//! parsing, the choice among several challenges, and the Authorization value, byte for byte.
//!
//! Hashes (text hashed as Python's `str.encode("utf-8", "surrogatepass")`):
//! HA1 = H(user:realm:password) (-sess: H(HA1:nonce:cnonce)); HA2 = H(method:uri) (auth-int:
//! H(method:uri:H(body))); response = H(HA1:nonce:nc:cnonce:qop:HA2) (no qop: H(HA1:nonce:HA2)).

use std::borrow::Cow;
use std::sync::Arc;

use md5::Md5;
use sha2::{Digest, Sha256, Sha512_256};

use crate::error::{shown, ParseError, Result};
use crate::packed::Packed;
use crate::text::{py_lower, py_strip, surrogatepass};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
    Sha512_256,
    Sha512_256Sess,
}

impl Algorithm {
    pub const ALL: [Algorithm; 6] = [
        Algorithm::Md5,
        Algorithm::Md5Sess,
        Algorithm::Sha256,
        Algorithm::Sha256Sess,
        Algorithm::Sha512_256,
        Algorithm::Sha512_256Sess,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
            Algorithm::Sha512_256 => "SHA-512-256",
            Algorithm::Sha512_256Sess => "SHA-512-256-sess",
        }
    }

    /// The algorithm named `name` (case-insensitive), None when unsupported.
    pub fn parse(name: &[u8]) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| name.eq_ignore_ascii_case(a.name().as_bytes()))
    }

    pub fn base(self) -> Algorithm {
        match self {
            Algorithm::Md5Sess => Algorithm::Md5,
            Algorithm::Sha256Sess => Algorithm::Sha256,
            Algorithm::Sha512_256Sess => Algorithm::Sha512_256,
            other => other,
        }
    }

    pub fn sess(self) -> bool {
        self.base() != self
    }

    /// SHA-512-256 > SHA-512-256-sess > SHA-256 > SHA-256-sess > MD5 > MD5-sess.
    pub fn rank(self) -> u8 {
        match self {
            Algorithm::Sha512_256 => 6,
            Algorithm::Sha512_256Sess => 5,
            Algorithm::Sha256 => 4,
            Algorithm::Sha256Sess => 3,
            Algorithm::Md5 => 2,
            Algorithm::Md5Sess => 1,
        }
    }
}

/// A digest in lower-case hex, on the stack (MD5: 32 digits; SHA-256, SHA-512/256: 64).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HexDigest {
    digits: [u8; 64],
    len: u8,
}

impl HexDigest {
    fn of(bytes: &[u8]) -> Self {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut digits = [0u8; 64];
        let n = bytes.len().min(32);
        for (pair, &b) in digits.chunks_exact_mut(2).zip(&bytes[..n]) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 15)];
        }
        HexDigest { digits, len: (2 * n) as u8 }
    }

    /// Hex digits kept as they are (a cached HA1); None when longer than a digest.
    fn copied(hex: &[u8]) -> Option<Self> {
        let mut digits = [0u8; 64];
        digits.get_mut(..hex.len())?.copy_from_slice(hex);
        Some(HexDigest { digits, len: hex.len() as u8 })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.digits[..usize::from(self.len)]
    }
}

/// H of text parts joined by ':' (text as Python hashes it), fed to the hash part by part.
fn h_digest(algorithm: Algorithm, parts: &[&[u8]]) -> HexDigest {
    fn fed<D: Digest>(parts: &[&[u8]]) -> HexDigest {
        let mut d = D::new();
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                d.update(b":");
            }
            // surrogatepass of the joined text is that of each part joined: ':' ends any sequence
            d.update(surrogatepass(part));
        }
        HexDigest::of(&d.finalize())
    }
    match algorithm.base() {
        Algorithm::Md5 => fed::<Md5>(parts),
        Algorithm::Sha256 => fed::<Sha256>(parts),
        _ => fed::<Sha512_256>(parts),
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// Lower-case hex digest of raw bytes with the hash of `algorithm`.
pub fn hash_hex(algorithm: Algorithm, data: &[u8]) -> String {
    match algorithm.base() {
        Algorithm::Md5 => hex(&Md5::digest(data)),
        Algorithm::Sha256 => hex(&Sha256::digest(data)),
        _ => hex(&Sha512_256::digest(data)),
    }
}

/// H of text parts joined by ':' (text as Python hashes it).
fn h(algorithm: Algorithm, parts: &[&[u8]]) -> String {
    String::from_utf8_lossy(h_digest(algorithm, parts).as_bytes()).into_owned()
}

/// Hex H(username:realm:password), the non-sess HA1.
pub fn compute_ha1(username: &[u8], realm: &[u8], password: &[u8], algorithm: Algorithm) -> String {
    h(algorithm, &[username, realm, password])
}

/// RFC 7616 §3.4.4 userhash: H(username:realm).
pub fn userhash(username: &[u8], realm: &[u8], algorithm: Algorithm) -> String {
    h(algorithm, &[username, realm])
}

/// The request-digest from the non-sess HA1 (the -sess step is applied here).
#[allow(clippy::too_many_arguments)]
pub fn compute_response(
    algorithm: Algorithm,
    ha1: &[u8],
    nonce: &[u8],
    method: &[u8],
    uri: &[u8],
    qop: Option<&[u8]>,
    nc: Option<&[u8]>,
    cnonce: Option<&[u8]>,
    body: &[u8],
) -> String {
    let r = response_digest(algorithm, ha1, nonce, method, uri, qop, nc, cnonce, body);
    String::from_utf8_lossy(r.as_bytes()).into_owned()
}

/// An H(method:uri) and what it was computed of: (base algorithm, method, uri, HA2).
type Ha2Memo = (Option<Algorithm>, Vec<u8>, Vec<u8>, HexDigest);

thread_local! {
    /// The last H(method:uri): every endpoint of a group registers with the same method and URI.
    static LAST_HA2: std::cell::RefCell<Ha2Memo> =
        const { std::cell::RefCell::new((None, Vec::new(), Vec::new(), HexDigest { digits: [0; 64], len: 0 })) };
}

/// H(method:uri), the last one remembered.
fn ha2_of(algorithm: Algorithm, method: &[u8], uri: &[u8]) -> HexDigest {
    let base = algorithm.base();
    LAST_HA2.with_borrow_mut(|(alg, m, u, ha2)| {
        if *alg != Some(base) || m != method || u != uri {
            *ha2 = h_digest(base, &[method, uri]);
            *alg = Some(base);
            m.clear();
            m.extend_from_slice(method);
            u.clear();
            u.extend_from_slice(uri);
        }
        *ha2
    })
}

#[allow(clippy::too_many_arguments)]
fn response_digest(
    algorithm: Algorithm,
    ha1: &[u8],
    nonce: &[u8],
    method: &[u8],
    uri: &[u8],
    qop: Option<&[u8]>,
    nc: Option<&[u8]>,
    cnonce: Option<&[u8]>,
    body: &[u8],
) -> HexDigest {
    let sess_ha1;
    let mut ha1 = ha1;
    if algorithm.sess() {
        sess_ha1 = h_digest(algorithm, &[ha1, nonce, cnonce.unwrap_or_default()]);
        ha1 = sess_ha1.as_bytes();
    }
    let ha2 = if qop == Some(b"auth-int") {
        let body_hash = h_digest(algorithm, &[body]);
        h_digest(algorithm, &[method, uri, body_hash.as_bytes()])
    } else {
        ha2_of(algorithm, method, uri)
    };
    match qop {
        None => h_digest(algorithm, &[ha1, nonce, ha2.as_bytes()]),
        Some(q) => {
            h_digest(algorithm, &[ha1, nonce, nc.unwrap_or(b"None"), cnonce.unwrap_or(b"None"), q, ha2.as_bytes()])
        }
    }
}

// --------------------------------------------------------------------------------------- parsing

fn is_t(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+.^_`|~-".contains(&b)
}

fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn run(s: &[u8], mut i: usize, pred: fn(u8) -> bool) -> usize {
    while i < s.len() && pred(s[i]) {
        i += 1;
    }
    i
}

fn skip(s: &[u8], i: usize) -> usize {
    run(s, i, |b| is_lws(b) || b == b',')
}

/// `_SCHEME`: a token, then whitespace, or a ',' ahead, or the end.
fn scheme_at(s: &[u8], pos: usize) -> Option<(usize, usize)> {
    let end = run(s, pos, is_t);
    if end == pos {
        return None;
    }
    match s.get(end) {
        None | Some(b',') => Some((end, end)),
        Some(&b) if is_lws(b) => Some((end, run(s, end, is_lws))),
        _ => None,
    }
}

/// `_PARAM`: name, '=', a quoted string (escapes, no CR/LF) or a token-ish value; (name, value, end).
/// A parameter: (name as written, unquoted value, where the next one may start).
type Param<'a> = (&'a [u8], Cow<'a, [u8]>, usize);

fn param_at(s: &[u8], pos: usize) -> Option<Param<'_>> {
    let name_end = run(s, pos, is_t);
    if name_end == pos {
        return None;
    }
    let mut i = run(s, name_end, is_lws);
    if s.get(i) != Some(&b'=') {
        return None;
    }
    i = run(s, i + 1, is_lws);
    let value;
    if s.get(i) == Some(&b'"') {
        let open = i + 1;
        let close = memchr::memchr3(b'"', b'\\', b'\n', &s[open..]).map(|k| open + k);
        if let Some(close) = close.filter(|&c| s[c] == b'"' && !s[open..c].contains(&b'\r')) {
            // no escape, no CR/LF: the value is the text between the quotes
            return Some((&s[pos..name_end], Cow::Borrowed(&s[open..close]), run(s, close + 1, is_lws)));
        }
        let mut j = open;
        let mut out = Vec::new();
        let mut escaped = false;
        loop {
            let &b = s.get(j)?;
            if b == b'\r' || b == b'\n' {
                return None;
            }
            if escaped {
                out.push(b);
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                break;
            } else {
                out.push(b);
            }
            j += 1;
        }
        value = Cow::Owned(out);
        i = j + 1;
    } else {
        let end = run(s, i, |b| !is_lws(b) && b != b',' && b != b'"');
        if end == i {
            return None;
        }
        value = Cow::Borrowed(&s[i..end]);
        i = end;
    }
    Some((&s[pos..name_end], value, run(s, i, is_lws)))
}

/// `_IS_PARAM`: a token then '=' (whitespace between allowed).
fn is_param_at(s: &[u8], pos: usize) -> bool {
    let end = run(s, pos, is_t);
    end > pos && s.get(run(s, end, is_lws)) == Some(&b'=')
}

/// `_TOKEN68`: its end.
fn token68_at(s: &[u8], pos: usize) -> Option<usize> {
    let end = run(s, pos, |b| b.is_ascii_alphanumeric() || b"._~+/-".contains(&b));
    if end == pos {
        return None;
    }
    Some(run(s, run(s, end, |b| b == b'='), is_lws))
}

/// (name as written, unquoted value) of a scheme's parameters.
type AuthParams<'a> = Vec<(&'a [u8], Cow<'a, [u8]>)>;

/// The value of parameter `name` (lower-case), names compared without case.
fn get<'a>(params: &'a AuthParams<'_>, name: &[u8]) -> Option<&'a [u8]> {
    params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_ref())
}

/// `[(scheme, [(param name, unquoted value)])]` of one header value, scheme and names as written
/// (`_parse_auth_list` lower-cases them: compare without case).
pub fn parse_auth_list(value: &[u8]) -> Result<Vec<(&[u8], AuthParams<'_>)>> {
    let n = value.len();
    let mut pos = skip(value, 0);
    if pos == n {
        return Err(ParseError::new("empty authentication header value"));
    }
    let mut out = Vec::new();
    while pos < n {
        let Some((scheme_end, after)) = scheme_at(value, pos) else {
            return Err(ParseError::new(format!(
                "expected an auth scheme at offset {pos}: {}",
                shown(&value[pos..], 30)
            )));
        };
        let scheme = &value[pos..scheme_end];
        let mut params: AuthParams = Vec::new();
        pos = after;
        let mut first = true;
        while pos < n && value[pos] != b',' {
            if let Some((name, v, end)) = param_at(value, pos) {
                if params.iter().any(|(k, _)| k.eq_ignore_ascii_case(name)) {
                    return Err(ParseError::new(format!(
                        "parameter {:?} repeated in the {} challenge/credentials",
                        String::from_utf8_lossy(&name.to_ascii_lowercase()),
                        String::from_utf8_lossy(&scheme.to_ascii_lowercase())
                    )));
                }
                params.push((name, v));
                pos = end;
            } else if let (true, Some(end)) = (first, token68_at(value, pos)) {
                pos = end;
            } else {
                return Err(ParseError::new(format!(
                    "bad auth parameter at offset {pos}: {} (unterminated quote, CR/LF or stray character?)",
                    shown(&value[pos..], 30)
                )));
            }
            first = false;
            if pos == n {
                break;
            }
            if value[pos] != b',' {
                return Err(ParseError::new(format!("expected ',' at offset {pos}: {}", shown(&value[pos..], 30))));
            }
            pos = skip(value, pos);
            if !is_param_at(value, pos) {
                break;
            }
        }
        pos = skip(value, pos);
        out.push((scheme, params));
    }
    Ok(out)
}

/// One Digest challenge from WWW-Authenticate (401) or Proxy-Authenticate (407, `proxy`). Its texts
/// are packed in one allocation: a machine keeps its last challenge (to refresh with nc+1) for as long
/// as the endpoint lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// realm, nonce, algorithm (as written), the qop tokens joined by ',', opaque, domain.
    texts: Packed<6>,
    pub algorithm: Option<Algorithm>,
    pub stale: bool,
    pub userhash: bool,
    pub proxy: bool,
    has_opaque: bool,
    has_domain: bool,
}

impl Challenge {
    /// `qop`: the tokens, lower-case, none empty or holding a ','.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        realm: &[u8],
        nonce: &[u8],
        algorithm_name: &[u8],
        qop: &[&[u8]],
        opaque: Option<&[u8]>,
        stale: bool,
        domain: Option<&[u8]>,
        userhash: bool,
        proxy: bool,
    ) -> Self {
        let qop = qop.join(&b',');
        Challenge {
            texts: Packed::new([realm, nonce, algorithm_name, &qop, opaque.unwrap_or(b""), domain.unwrap_or(b"")]),
            algorithm: Algorithm::parse(algorithm_name),
            stale,
            userhash,
            proxy,
            has_opaque: opaque.is_some(),
            has_domain: domain.is_some(),
        }
    }

    pub fn realm(&self) -> &[u8] {
        self.texts.get(0)
    }

    pub fn nonce(&self) -> &[u8] {
        self.texts.get(1)
    }

    /// The algorithm as the challenge wrote it ("MD5" when it named none).
    pub fn algorithm_name(&self) -> &[u8] {
        self.texts.get(2)
    }

    /// The qop tokens, in order (none: RFC 2069).
    pub fn qop(&self) -> impl Iterator<Item = &[u8]> {
        let joined = self.texts.get(3);
        joined.split(|&b| b == b',').filter(move |_| !joined.is_empty())
    }

    pub fn opaque(&self) -> Option<&[u8]> {
        self.has_opaque.then(|| self.texts.get(4))
    }

    pub fn domain(&self) -> Option<&[u8]> {
        self.has_domain.then(|| self.texts.get(5))
    }

    pub fn supported(&self) -> bool {
        let mut qop = self.qop().peekable();
        self.algorithm.is_some() && (qop.peek().is_none() || qop.any(|q| q == b"auth" || q == b"auth-int"))
    }
}

/// Every Digest challenge of these header values, in order; other schemes are skipped.
pub fn parse_challenges(values: &[&[u8]], proxy: bool) -> Result<Vec<Challenge>> {
    let mut out = Vec::new();
    for value in values {
        for (scheme, p) in parse_auth_list(value)? {
            if !scheme.eq_ignore_ascii_case(b"digest") {
                continue;
            }
            let (Some(realm), Some(nonce)) = (get(&p, b"realm"), get(&p, b"nonce")) else {
                let missing = if get(&p, b"realm").is_none() { "realm" } else { "nonce" };
                return Err(ParseError::new(format!("Digest challenge without {missing}: {}", shown(value, 80))));
            };
            let name = get(&p, b"algorithm").unwrap_or(b"MD5");
            let qop: Vec<Vec<u8>> = match get(&p, b"qop") {
                None => vec![],
                Some(b"auth") => vec![b"auth".to_vec()],
                Some(text) => {
                    text.split(|&b| b == b',').map(|x| py_lower(py_strip(x))).filter(|q| !q.is_empty()).collect()
                }
            };
            let qop: Vec<&[u8]> = qop.iter().map(Vec::as_slice).collect();
            out.push(Challenge::new(
                realm,
                nonce,
                name,
                &qop,
                get(&p, b"opaque"),
                get(&p, b"stale").is_some_and(|s| s.eq_ignore_ascii_case(b"true")),
                get(&p, b"domain"),
                get(&p, b"userhash").is_some_and(|s| s.eq_ignore_ascii_case(b"true")),
                proxy,
            ));
        }
    }
    Ok(out)
}

/// The strongest supported challenge (first among equals), or the first in `preference` order.
pub fn choose_challenge<'a>(challenges: &[&'a Challenge], preference: Option<&[Algorithm]>) -> Option<&'a Challenge> {
    let Some(preference) = preference else {
        if let [only] = challenges {
            return only.supported().then_some(*only);
        }
        let mut best: Option<&Challenge> = None;
        for c in challenges.iter().filter(|c| c.supported()) {
            let rank = c.algorithm.map_or(0, Algorithm::rank);
            if best.is_none_or(|b| rank > b.algorithm.map_or(0, Algorithm::rank)) {
                best = Some(c);
            }
        }
        return best;
    };
    preference.iter().find_map(|&a| challenges.iter().find(|c| c.supported() && c.algorithm == Some(a)).copied())
}

/// Why a challenge could not be answered, or a value could not be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError(pub String);

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AuthError {}

/// `_quote`: a quoted-string for a Digest header; CR/LF cannot be sent.
pub fn auth_quote(s: &[u8]) -> std::result::Result<Vec<u8>, AuthError> {
    let mut out = Vec::with_capacity(s.len() + 2);
    auth_quote_into(&mut out, s)?;
    Ok(out)
}

/// [`auth_quote`] written at the end of `out`.
fn auth_quote_into(out: &mut Vec<u8>, s: &[u8]) -> std::result::Result<(), AuthError> {
    if memchr::memchr2(b'\r', b'\n', s).is_some() {
        return Err(AuthError(format!("CR/LF cannot be sent in a Digest header value: {}", shown(s, 80))));
    }
    crate::headers::quote_into(out, s);
    Ok(())
}

const CLIENT_NONCES: usize = 8;

/// An HA1: computed from the password (on the stack), or the one given.
enum Ha1 {
    Computed(HexDigest),
    Given(Vec<u8>),
}

impl Ha1 {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Ha1::Computed(h) => h.as_bytes(),
            Ha1::Given(h) => h,
        }
    }
}

/// A precomputed HA1 given instead of a password.
#[derive(Debug, Clone)]
struct GivenHa1 {
    ha1: Vec<u8>,
    realm: Option<Vec<u8>>,
    algorithm: Option<Algorithm>,
}

/// A nonce as the nonce-count list keys it: 64 bits of SipHash (fixed keys), so that a million
/// clients do not each keep a copy of their last nonce besides the challenge that holds it. Two of an
/// endpoint's last 8 nonces hashing alike (odds ~2^-61) would continue one count instead of starting one.
fn nonce_key(nonce: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = std::hash::DefaultHasher::new();
    h.write(nonce);
    h.finish()
}

/// Answers challenges for one endpoint, keeping a nonce count per nonce (the last 8 nonces).
#[derive(Debug, Clone)]
pub struct DigestClient {
    /// username, password ("" without one).
    creds: Packed<2>,
    has_password: bool,
    given: Option<Box<GivenHa1>>,
    pub preference: Option<Arc<[Algorithm]>>,
    nc: Vec<(u64, u32)>, // (nonce_key, count), oldest first
    /// (realm, HA1) of the last HA1 computed from the password, and its algorithm.
    last_ha1: Option<(Packed<2>, Algorithm)>,
}

impl DigestClient {
    /// As `DigestClient(username, password, ha1=, realm_for_ha1=, preference=, ha1_algorithm=)`.
    pub fn new(
        username: &[u8],
        password: Option<&[u8]>,
        ha1: Option<&[u8]>,
        realm_for_ha1: Option<&[u8]>,
        preference: Option<Arc<[Algorithm]>>,
        ha1_algorithm: Option<Algorithm>,
    ) -> std::result::Result<Self, AuthError> {
        if password.is_none() && ha1.is_none() {
            return Err(AuthError("DigestClient needs a password or a precomputed ha1".into()));
        }
        auth_quote(username)?;
        let mut ha1_algorithm = ha1_algorithm;
        if let (Some(h), None) = (ha1, ha1_algorithm) {
            ha1_algorithm = match crate::text::char_count(h) {
                32 => Some(Algorithm::Md5),
                64 => Some(Algorithm::Sha256),
                n => {
                    return Err(AuthError(format!("cannot infer the algorithm of a {n}-digit ha1: give ha1_algorithm")))
                }
            };
        }
        let given = ha1.map(|h| {
            Box::new(GivenHa1 {
                ha1: py_lower(h),
                realm: realm_for_ha1.map(<[u8]>::to_vec),
                algorithm: ha1_algorithm.map(Algorithm::base),
            })
        });
        Ok(DigestClient {
            creds: Packed::new([username, password.unwrap_or(b"")]),
            has_password: password.is_some(),
            given,
            preference,
            nc: Vec::new(),
            last_ha1: None,
        })
    }

    pub fn username(&self) -> &[u8] {
        self.creds.get(0)
    }

    fn ha1_for(&mut self, challenge: &Challenge) -> Option<Ha1> {
        let alg = challenge.algorithm?;
        if let Some(g) = &self.given {
            if Some(alg.base()) == g.algorithm && g.realm.as_deref().is_none_or(|r| r == challenge.realm()) {
                return Some(Ha1::Given(g.ha1.clone()));
            }
        }
        if !self.has_password {
            return None;
        }
        if let Some((cached, a)) = &self.last_ha1 {
            if *a == alg && cached.get(0) == challenge.realm() {
                if let Some(ha1) = HexDigest::copied(cached.get(1)) {
                    return Some(Ha1::Computed(ha1));
                }
            }
        }
        let ha1 = h_digest(alg, &[self.creds.get(0), challenge.realm(), self.creds.get(1)]);
        self.last_ha1 = Some((Packed::new([challenge.realm(), ha1.as_bytes()]), alg));
        Some(Ha1::Computed(ha1))
    }

    pub fn can_answer(&mut self, challenge: &Challenge) -> bool {
        challenge.supported() && (self.has_password || self.ha1_for(challenge).is_some())
    }

    /// `(header name, header value)` answering `challenge`; `cnonce` is asked only when needed.
    pub fn authorize(
        &mut self,
        challenge: &Challenge,
        method: &[u8],
        uri: &[u8],
        body: &[u8],
        cnonce: &mut dyn FnMut() -> std::result::Result<Vec<u8>, AuthError>,
    ) -> std::result::Result<(&'static str, Vec<u8>), AuthError> {
        let ha1 = self.ha1_for(challenge);
        let (Some(alg), Some(ha1), true) = (challenge.algorithm, ha1, challenge.supported()) else {
            return Err(AuthError(format!(
                "cannot answer Digest challenge algorithm={} qop={} realm={}",
                String::from_utf8_lossy(challenge.algorithm_name()),
                String::from_utf8_lossy(&challenge.qop().collect::<Vec<_>>().join(&b',')),
                shown(challenge.realm(), 200)
            )));
        };
        let qop: Option<&[u8]> = if challenge.qop().next().is_none() {
            None
        } else if challenge.qop().any(|q| q == b"auth") {
            Some(b"auth")
        } else {
            Some(b"auth-int")
        };
        let cnonce = if qop.is_some() || alg.sess() { Some(cnonce()?) } else { None };
        let mut nc = None;
        if qop.is_some() {
            let key = nonce_key(challenge.nonce());
            let count = match self.nc.iter().position(|&(n, _)| n == key) {
                Some(i) => self.nc.remove(i).1,
                None => 0,
            }
            .wrapping_add(1);
            self.nc.push((key, count));
            if self.nc.len() > CLIENT_NONCES {
                self.nc.remove(0);
            }
            nc = Some(HexDigest::of(&count.to_be_bytes()));
        }
        let response = response_digest(
            alg,
            ha1.as_bytes(),
            challenge.nonce(),
            method,
            uri,
            qop,
            nc.as_ref().map(HexDigest::as_bytes),
            cnonce.as_deref(),
            body,
        );
        let hashed;
        let user = if challenge.userhash {
            hashed = h_digest(alg, &[self.username(), challenge.realm()]);
            hashed.as_bytes()
        } else {
            self.username()
        };
        let mut value = Vec::with_capacity(256);
        value.extend_from_slice(b"Digest username=");
        auth_quote_into(&mut value, user)?;
        value.extend_from_slice(b", realm=");
        auth_quote_into(&mut value, challenge.realm())?;
        value.extend_from_slice(b", nonce=");
        auth_quote_into(&mut value, challenge.nonce())?;
        value.extend_from_slice(b", uri=");
        auth_quote_into(&mut value, uri)?;
        value.extend_from_slice(b", response=\"");
        value.extend_from_slice(response.as_bytes());
        value.extend_from_slice(b"\", algorithm=");
        value.extend_from_slice(challenge.algorithm_name());
        if let Some(c) = &cnonce {
            value.extend_from_slice(b", cnonce=");
            auth_quote_into(&mut value, c)?;
        }
        if let Some(o) = challenge.opaque() {
            value.extend_from_slice(b", opaque=");
            auth_quote_into(&mut value, o)?;
        }
        if let (Some(q), Some(n)) = (qop, &nc) {
            value.extend_from_slice(b", qop=");
            value.extend_from_slice(q);
            value.extend_from_slice(b", nc=");
            value.extend_from_slice(n.as_bytes());
        }
        if challenge.userhash {
            value.extend_from_slice(b", userhash=true");
        }
        Ok((if challenge.proxy { "Proxy-Authorization" } else { "Authorization" }, value))
    }

    /// Choose (client preference, else strongest) and authorize; None if nothing can be answered.
    pub fn answer(
        &mut self,
        challenges: &[Challenge],
        method: &[u8],
        uri: &[u8],
        body: &[u8],
        cnonce: &mut dyn FnMut() -> std::result::Result<Vec<u8>, AuthError>,
    ) -> std::result::Result<Option<(&'static str, Vec<u8>)>, AuthError> {
        let answerable: Vec<&Challenge> = challenges.iter().filter(|c| self.can_answer(c)).collect();
        let preference = self.preference.clone();
        match choose_challenge(&answerable, preference.as_deref()) {
            None => Ok(None),
            Some(chosen) => self.authorize(chosen, method, uri, body, cnonce).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2617_example() {
        // RFC 2617 §3.5 (Mufasa), qop=auth
        let ha1 = compute_ha1(b"Mufasa", b"testrealm@host.com", b"Circle Of Life", Algorithm::Md5);
        let r = compute_response(
            Algorithm::Md5,
            ha1.as_bytes(),
            b"dcd98b7102dd2f0e8b11d0f600bfb0c093",
            b"GET",
            b"/dir/index.html",
            Some(b"auth"),
            Some(b"00000001"),
            Some(b"0a4f113b"),
            b"",
        );
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn rfc7616_sha256_example() {
        let ha1 = compute_ha1(b"Mufasa", b"http-auth@example.org", b"Circle of Life", Algorithm::Sha256);
        let r = compute_response(
            Algorithm::Sha256,
            ha1.as_bytes(),
            b"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            b"GET",
            b"/dir/index.html",
            Some(b"auth"),
            Some(b"00000001"),
            Some(b"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"),
            b"",
        );
        assert_eq!(r, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1");
    }

    #[test]
    fn sha512_256_is_not_truncated_sha512() {
        assert_eq!(
            hash_hex(Algorithm::Sha512_256, b"abc"),
            "53048e2681941ef99b2e29b76b4c7dabe4c2d0c634fc6d46e0e2f13107e7af23"
        );
    }

    #[test]
    fn several_challenges_one_line_and_the_strongest() {
        let v: &[u8] = b"Digest realm=\"r\", nonce=\"n1\", algorithm=MD5, qop=\"auth\", \
Digest realm=\"r\", nonce=\"n2\", algorithm=SHA-256, Basic realm=\"x\"";
        let cs = parse_challenges(&[v], false).unwrap();
        assert_eq!(cs.len(), 2);
        let refs: Vec<&Challenge> = cs.iter().collect();
        assert_eq!(choose_challenge(&refs, None).unwrap().nonce(), b"n2");
        assert_eq!(choose_challenge(&refs, Some(&[Algorithm::Md5])).unwrap().nonce(), b"n1");
        assert!(parse_challenges(&[&b"Digest realm=\"r\""[..]], false).is_err());
        assert!(parse_auth_list(b"Digest realm=\"r, nonce=x").is_err());
        assert!(parse_auth_list(b" , ").is_err());
    }

    #[test]
    fn nonce_count_rises_per_nonce() {
        let cs =
            parse_challenges(&[&b"Digest realm=\"r\", nonce=\"n\", qop=\"auth-int,auth\", opaque=\"o\""[..]], true)
                .unwrap();
        let mut client = DigestClient::new(b"u", Some(b"p"), None, None, None, None).unwrap();
        let mut cn = || Ok(b"c".to_vec());
        let (name, first) = client.authorize(&cs[0], b"REGISTER", b"sip:h", b"", &mut cn).unwrap();
        assert_eq!(name, "Proxy-Authorization");
        assert!(first.ends_with(b"qop=auth, nc=00000001"));
        let (_, second) = client.authorize(&cs[0], b"REGISTER", b"sip:h", b"", &mut cn).unwrap();
        assert!(second.ends_with(b"nc=00000002"));
    }
}
