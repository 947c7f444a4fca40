//! `sipload._native`: the Python face of sipload-core. Thin: it converts, the core decides.
//!
//! Text crosses as Python `str` <-> the bytes `str.encode("utf-8", "surrogateescape")` gives, so a
//! header's bytes that are not UTF-8 come back as the same code points `sipload.sip` has for them.
//! A `ParseError` of the core is raised as `sipload.sip.errors.ParseError`; a digest error (a challenge
//! that cannot be answered, CR/LF in a value) as `ValueError`. Nothing here panics on input.

use std::borrow::Cow;

mod registration;
mod worker;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use sipload_core::digest::{self as core_digest, Algorithm, AuthError};
use sipload_core::headers::{NameAddr, Params};
use sipload_core::message::{self as core_message, StartLine};
use sipload_core::register::{build_register as core_build_register, RegisterFields};
use sipload_core::ParseError;

/// The bytes of a Python str (surrogateescape), borrowed when it is plain UTF-8.
pub(crate) fn text<'a>(s: &'a Bound<'_, PyString>) -> PyResult<Cow<'a, [u8]>> {
    match s.to_str() {
        Ok(t) => Ok(Cow::Borrowed(t.as_bytes())),
        Err(_) => {
            let encoded = s.call_method1("encode", ("utf-8", "surrogateescape"))?;
            Ok(Cow::Owned(encoded.cast::<PyBytes>()?.as_bytes().to_vec()))
        }
    }
}

/// A Python str of these bytes (surrogateescape).
pub(crate) fn py_str<'py>(py: Python<'py>, b: &[u8]) -> PyResult<Bound<'py, PyString>> {
    match std::str::from_utf8(b) {
        Ok(t) => Ok(PyString::new(py, t)),
        Err(_) => {
            Ok(PyBytes::new(py, b).call_method1("decode", ("utf-8", "surrogateescape"))?.cast_into::<PyString>()?)
        }
    }
}

pub(crate) fn opt_str<'py>(py: Python<'py>, b: Option<&[u8]>) -> PyResult<Option<Bound<'py, PyString>>> {
    b.map(|b| py_str(py, b)).transpose()
}

pub(crate) fn parse_error(py: Python<'_>, e: ParseError) -> PyErr {
    let raised =
        py.import("sipload.sip.errors").and_then(|m| m.getattr("ParseError")).and_then(|cls| cls.call1((e.0.clone(),)));
    match raised {
        Ok(value) => PyErr::from_value(value),
        Err(err) => err,
    }
}

fn auth_error(e: AuthError) -> PyErr {
    PyValueError::new_err(e.0)
}

fn params_list<'py>(py: Python<'py>, params: &Params) -> PyResult<Bound<'py, PyList>> {
    let items =
        params.iter().map(|(k, v)| Ok((py_str(py, k)?, opt_str(py, v.as_deref())?))).collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, items)
}

fn name_addr<'py>(py: Python<'py>, a: &NameAddr) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(
        py,
        [
            py_str(py, &a.uri)?.into_any(),
            opt_str(py, a.display.as_deref())?.into_pyobject(py)?,
            params_list(py, &a.params)?.into_any(),
        ],
    )
}

fn algorithm_of(name: &Bound<'_, PyString>) -> PyResult<Algorithm> {
    let t = text(name)?;
    Algorithm::ALL
        .into_iter()
        .find(|a| a.name().as_bytes() == t.as_ref())
        .ok_or_else(|| PyValueError::new_err(format!("unknown digest algorithm {:?}", String::from_utf8_lossy(&t))))
}

/// Lower-case hex digest of `data` with the hash of `algorithm` ("MD5", "SHA-256", "SHA-512-256"; -sess too).
#[pyfunction]
fn hash_hex(algorithm: &Bound<'_, PyString>, data: &[u8]) -> PyResult<String> {
    Ok(core_digest::hash_hex(algorithm_of(algorithm)?, data))
}

/// A parsed datagram (`parse_message`); fields are checked when asked for, as in `sipload.sip.message`.
#[pyclass(frozen, module = "sipload._native")]
pub(crate) struct Message {
    pub(crate) inner: core_message::Message,
}

#[pymethods]
impl Message {
    #[getter]
    fn is_response(&self) -> bool {
        matches!(self.inner.start, StartLine::Response { .. })
    }

    #[getter]
    fn status(&self) -> Option<u16> {
        self.inner.status()
    }

    #[getter]
    fn reason<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyString>>> {
        match &self.inner.start {
            StartLine::Response { reason, .. } => opt_str(py, Some(reason)),
            StartLine::Request { .. } => Ok(None),
        }
    }

    #[getter]
    fn method<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyString>>> {
        match &self.inner.start {
            StartLine::Request { method, .. } => opt_str(py, Some(method)),
            StartLine::Response { .. } => Ok(None),
        }
    }

    #[getter]
    fn uri<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyString>>> {
        match &self.inner.start {
            StartLine::Request { uri, .. } => opt_str(py, Some(uri)),
            StartLine::Response { .. } => Ok(None),
        }
    }

    #[getter]
    fn body<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.body)
    }

    /// Every header line as (lower-case full name, value).
    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let items = self
            .inner
            .headers
            .iter()
            .map(|(k, v)| Ok((PyString::new(py, k), py_str(py, v)?)))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items)
    }

    /// The first line of a header (any spelling of its name), or None.
    fn get<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Option<Bound<'py, PyString>>> {
        opt_str(py, self.inner.get(&core_message::normalize_name(name)))
    }

    fn call_id<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyString>> {
        py_str(py, self.inner.call_id().map_err(|e| parse_error(py, e))?)
    }

    fn cseq<'py>(&self, py: Python<'py>) -> PyResult<(u32, Bound<'py, PyString>)> {
        let (n, method) = self.inner.cseq().map_err(|e| parse_error(py, e))?;
        Ok((n, py_str(py, method)?))
    }

    /// The top Via as (transport, host, port, [(param, value)]).
    #[allow(clippy::type_complexity)]
    fn top_via<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyString>, Bound<'py, PyString>, Option<u32>, Bound<'py, PyList>)> {
        let via = self.inner.top_via().map_err(|e| parse_error(py, e))?;
        Ok((py_str(py, &via.transport)?, py_str(py, &via.host)?, via.port, params_list(py, &via.params)?))
    }

    /// The top Via's branch.
    fn branch<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyString>>> {
        let via = self.inner.top_via().map_err(|e| parse_error(py, e))?;
        opt_str(py, via.param(b"branch"))
    }

    /// The To header's tag.
    fn to_tag<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyString>>> {
        let to = self.inner.to_addr().map_err(|e| parse_error(py, e))?;
        opt_str(py, sipload_core::headers::param(&to.params, b"tag").and_then(|v| v.as_deref()))
    }

    /// The To and From addresses as (uri, display, [(param, value)]).
    fn to_addr<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        name_addr(py, &self.inner.to_addr().map_err(|e| parse_error(py, e))?)
    }

    #[allow(clippy::wrong_self_convention)] // the SIP From header, not a conversion
    fn from_addr<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        name_addr(py, &self.inner.from_addr().map_err(|e| parse_error(py, e))?)
    }

    /// The Contact values as (uri, display, [(param, value)]); None for '*'.
    fn contacts<'py>(&self, py: Python<'py>) -> PyResult<Option<Vec<Bound<'py, PyTuple>>>> {
        match self.inner.contacts().map_err(|e| parse_error(py, e))? {
            None => Ok(None),
            Some(list) => list.iter().map(|a| name_addr(py, a)).collect::<PyResult<Vec<_>>>().map(Some),
        }
    }

    fn expires(&self, py: Python<'_>) -> PyResult<Option<u64>> {
        self.inner.expires().map_err(|e| parse_error(py, e))
    }

    fn min_expires(&self, py: Python<'_>) -> PyResult<Option<u64>> {
        self.inner.delta("min-expires", "Min-Expires").map_err(|e| parse_error(py, e))
    }

    fn retry_after(&self, py: Python<'_>) -> PyResult<Option<u64>> {
        self.inner.delta("retry-after", "Retry-After").map_err(|e| parse_error(py, e))
    }

    /// The Digest challenges of WWW-Authenticate, or of Proxy-Authenticate with `proxy`.
    #[pyo3(signature = (proxy=false))]
    fn challenges(&self, py: Python<'_>, proxy: bool) -> PyResult<Vec<Challenge>> {
        let list = self.inner.challenges(proxy).map_err(|e| parse_error(py, e))?;
        Ok(list.into_iter().map(|inner| Challenge { inner }).collect())
    }
}

/// Parse one datagram; raise `sipload.sip.errors.ParseError` if it is not a SIP message.
#[pyfunction]
fn parse_message(py: Python<'_>, data: &[u8]) -> PyResult<Message> {
    let inner = core_message::parse_message(data).map_err(|e| parse_error(py, e))?;
    Ok(Message { inner })
}

/// One Digest challenge.
#[pyclass(frozen, module = "sipload._native")]
#[derive(Clone)]
struct Challenge {
    inner: core_digest::Challenge,
}

#[pymethods]
impl Challenge {
    #[getter]
    fn realm<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyString>> {
        py_str(py, self.inner.realm())
    }
    #[getter]
    fn nonce<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyString>> {
        py_str(py, self.inner.nonce())
    }
    /// The algorithm's canonical name, None when unsupported.
    #[getter]
    fn algorithm(&self) -> Option<&'static str> {
        self.inner.algorithm.map(Algorithm::name)
    }
    #[getter]
    fn algorithm_name<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyString>> {
        py_str(py, self.inner.algorithm_name())
    }
    #[getter]
    fn qop<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.inner.qop().map(|q| py_str(py, q)).collect::<PyResult<Vec<_>>>()?)
    }
    #[getter]
    fn opaque<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyString>>> {
        opt_str(py, self.inner.opaque())
    }
    #[getter]
    fn stale(&self) -> bool {
        self.inner.stale
    }
    #[getter]
    fn domain<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyString>>> {
        opt_str(py, self.inner.domain())
    }
    #[getter]
    fn userhash(&self) -> bool {
        self.inner.userhash
    }
    #[getter]
    fn proxy(&self) -> bool {
        self.inner.proxy
    }
    #[getter]
    fn supported(&self) -> bool {
        self.inner.supported()
    }
}

/// Every Digest challenge of these header values, in order; other schemes are skipped.
#[pyfunction]
#[pyo3(signature = (values, proxy=false))]
fn parse_challenges(py: Python<'_>, values: Vec<Bound<'_, PyString>>, proxy: bool) -> PyResult<Vec<Challenge>> {
    let owned = values.iter().map(text).collect::<PyResult<Vec<_>>>()?;
    let refs: Vec<&[u8]> = owned.iter().map(AsRef::as_ref).collect();
    let list = core_digest::parse_challenges(&refs, proxy).map_err(|e| parse_error(py, e))?;
    Ok(list.into_iter().map(|inner| Challenge { inner }).collect())
}

fn preference_of(preference: Option<Vec<Bound<'_, PyString>>>) -> PyResult<Option<Vec<Algorithm>>> {
    preference.map(|p| p.iter().map(algorithm_of).collect()).transpose()
}

/// The strongest supported challenge (first among equals), or the first in `preference` order.
#[pyfunction]
#[pyo3(signature = (challenges, preference=None))]
fn choose_challenge(
    challenges: Vec<PyRef<'_, Challenge>>,
    preference: Option<Vec<Bound<'_, PyString>>>,
) -> PyResult<Option<Challenge>> {
    let preference = preference_of(preference)?;
    let refs: Vec<&core_digest::Challenge> = challenges.iter().map(|c| &c.inner).collect();
    Ok(core_digest::choose_challenge(&refs, preference.as_deref()).map(|c| Challenge { inner: c.clone() }))
}

/// The Digest client of one endpoint (`sipload.sip.digest.DigestClient`'s twin).
#[pyclass(module = "sipload._native")]
struct DigestClient {
    inner: core_digest::DigestClient,
    cnonce: Py<PyAny>,
}

impl DigestClient {
    fn cnonce_source<'a, 'py>(
        py: Python<'py>,
        cnonce: &'a Py<PyAny>,
        failure: &'a mut Option<PyErr>,
    ) -> impl FnMut() -> Result<Vec<u8>, AuthError> + 'a
    where
        'py: 'a,
    {
        move || {
            let got = cnonce.bind(py).call0().and_then(|v| {
                let s = v.cast_into::<PyString>().map_err(|_| PyTypeError::new_err("cnonce() must return a str"))?;
                Ok(text(&s)?.into_owned())
            });
            got.map_err(|e| {
                *failure = Some(e);
                AuthError("cnonce() failed".into())
            })
        }
    }
}

#[pymethods]
impl DigestClient {
    #[new]
    #[pyo3(signature = (username, password=None, *, ha1=None, realm_for_ha1=None, cnonce, preference=None, ha1_algorithm=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        username: &Bound<'_, PyString>,
        password: Option<&Bound<'_, PyString>>,
        ha1: Option<&Bound<'_, PyString>>,
        realm_for_ha1: Option<&Bound<'_, PyString>>,
        cnonce: Py<PyAny>,
        preference: Option<Vec<Bound<'_, PyString>>>,
        ha1_algorithm: Option<&Bound<'_, PyString>>,
    ) -> PyResult<Self> {
        let password = password.map(text).transpose()?;
        let ha1 = ha1.map(text).transpose()?;
        let realm = realm_for_ha1.map(text).transpose()?;
        let inner = core_digest::DigestClient::new(
            &text(username)?,
            password.as_deref(),
            ha1.as_deref(),
            realm.as_deref(),
            preference_of(preference)?.map(std::sync::Arc::from),
            ha1_algorithm.map(algorithm_of).transpose()?,
        )
        .map_err(auth_error)?;
        Ok(DigestClient { inner, cnonce })
    }

    fn can_answer(&mut self, challenge: PyRef<'_, Challenge>) -> bool {
        self.inner.can_answer(&challenge.inner)
    }

    /// `(header name, header value)` answering `challenge`; ValueError if it cannot be answered.
    #[pyo3(signature = (challenge, method, uri, body=b"".as_slice()))]
    fn authorize<'py>(
        &mut self,
        py: Python<'py>,
        challenge: PyRef<'_, Challenge>,
        method: &Bound<'_, PyString>,
        uri: &Bound<'_, PyString>,
        body: &[u8],
    ) -> PyResult<(&'static str, Bound<'py, PyString>)> {
        let (method, uri) = (text(method)?, text(uri)?);
        let mut failure = None;
        let result = {
            let mut source = Self::cnonce_source(py, &self.cnonce, &mut failure);
            self.inner.authorize(&challenge.inner, &method, &uri, body, &mut source)
        };
        if let Some(err) = failure {
            return Err(err);
        }
        let (name, value) = result.map_err(auth_error)?;
        Ok((name, py_str(py, &value)?))
    }

    /// Choose (preference, else strongest) and authorize; None if nothing can be answered.
    #[pyo3(signature = (challenges, method, uri, body=b"".as_slice()))]
    fn answer<'py>(
        &mut self,
        py: Python<'py>,
        challenges: Vec<PyRef<'_, Challenge>>,
        method: &Bound<'_, PyString>,
        uri: &Bound<'_, PyString>,
        body: &[u8],
    ) -> PyResult<Option<(&'static str, Bound<'py, PyString>)>> {
        let (method, uri) = (text(method)?, text(uri)?);
        let list: Vec<core_digest::Challenge> = challenges.iter().map(|c| c.inner.clone()).collect();
        let mut failure = None;
        let result = {
            let mut source = Self::cnonce_source(py, &self.cnonce, &mut failure);
            self.inner.answer(&list, &method, &uri, body, &mut source)
        };
        if let Some(err) = failure {
            return Err(err);
        }
        match result.map_err(auth_error)? {
            None => Ok(None),
            Some((name, value)) => Ok(Some((name, py_str(py, &value)?))),
        }
    }
}

/// The REGISTER bytes, as `sipload.sip.registration.Registration` builds them.
#[pyfunction]
#[pyo3(signature = (*, registrar_uri, transport, sent_by, branch, aor, from_tag, call_id, cseq, contact, expires,
                    user_agent, route=None, supported=None, authorization=None))]
#[allow(clippy::too_many_arguments)]
fn build_register<'py>(
    py: Python<'py>,
    registrar_uri: &Bound<'_, PyString>,
    transport: &Bound<'_, PyString>,
    sent_by: &Bound<'_, PyString>,
    branch: &Bound<'_, PyString>,
    aor: &Bound<'_, PyString>,
    from_tag: &Bound<'_, PyString>,
    call_id: &Bound<'_, PyString>,
    cseq: u32,
    contact: &Bound<'_, PyString>,
    expires: u64,
    user_agent: &Bound<'_, PyString>,
    route: Option<&Bound<'_, PyString>>,
    supported: Option<&Bound<'_, PyString>>,
    authorization: Option<(Bound<'_, PyString>, Bound<'_, PyString>)>,
) -> PyResult<Bound<'py, PyBytes>> {
    let route = route.map(text).transpose()?;
    let supported = supported.map(text).transpose()?;
    let auth = match &authorization {
        Some((name, value)) => Some((text(name)?, text(value)?)),
        None => None,
    };
    let (registrar_uri, transport, sent_by, branch) =
        (text(registrar_uri)?, text(transport)?, text(sent_by)?, text(branch)?);
    let (aor, from_tag, call_id, contact, user_agent) =
        (text(aor)?, text(from_tag)?, text(call_id)?, text(contact)?, text(user_agent)?);
    let bytes = core_build_register(&RegisterFields {
        registrar_uri: &registrar_uri,
        transport: &transport,
        sent_by: &sent_by,
        branch: &branch,
        route: route.as_deref(),
        aor: &[&aor],
        from_tag: &from_tag,
        call_id: &call_id,
        cseq,
        contact: &[&contact],
        supported: supported.as_deref(),
        expires,
        authorization: auth.as_ref().map(|(n, v)| (n.as_ref(), v.as_ref())),
        user_agent: &user_agent,
    });
    Ok(PyBytes::new(py, &bytes))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(hash_hex, m)?)?;
    m.add_function(wrap_pyfunction!(parse_message, m)?)?;
    m.add_function(wrap_pyfunction!(parse_challenges, m)?)?;
    m.add_function(wrap_pyfunction!(choose_challenge, m)?)?;
    m.add_function(wrap_pyfunction!(build_register, m)?)?;
    m.add_class::<Message>()?;
    m.add_class::<Challenge>()?;
    m.add_class::<DigestClient>()?;
    m.add_class::<registration::Registration>()?;
    m.add_class::<worker::NativeWorker>()?;
    m.add_class::<worker::Waker>()?;
    Ok(())
}
