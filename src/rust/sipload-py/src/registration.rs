//! `sipload._native.Registration`: the native registration machine, driven from Python exactly as
//! `sipload.sip.registration.Registration` is, for the differential tests (and nothing per message in a
//! run: the native worker drives its machines itself).
//!
//! The profile is read from a `sipload.sip.registration.Profile`; ids come from a Python object with
//! `branch()`, `cnonce()` and `uniform(low, high)` (an `IdSource`), so both machines can draw the same
//! sequence. A `ProtocolError` of the machine is raised as `sipload.sip.errors.ProtocolError`.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};

use sipload_core::digest::{Algorithm, DigestClient};
use sipload_core::message::parse_message;
use sipload_core::registration::{self as reg, Ids, Profile, RegEvent, Timers};

use crate::{parse_error, py_str, text};

/// A Python IdSource seen as the machine's Ids; the first error a call raised is kept and re-raised.
struct PyIds<'py> {
    source: Bound<'py, PyAny>,
    error: Option<PyErr>,
}

impl PyIds<'_> {
    fn text(&mut self, method: &str) -> Vec<u8> {
        let got = self
            .source
            .call_method0(method)
            .and_then(|v| v.cast_into::<PyString>().map_err(PyErr::from))
            .and_then(|s| Ok(text(&s)?.into_owned()));
        got.unwrap_or_else(|e| {
            self.error.get_or_insert(e);
            Vec::new()
        })
    }
}

impl Ids for PyIds<'_> {
    fn branch(&mut self) -> Vec<u8> {
        self.text("branch")
    }

    fn cnonce(&mut self) -> Vec<u8> {
        self.text("cnonce")
    }

    fn uniform(&mut self, low: f64, high: f64) -> f64 {
        self.source.call_method1("uniform", (low, high)).and_then(|v| v.extract::<f64>()).unwrap_or_else(|e| {
            self.error.get_or_insert(e);
            low
        })
    }
}

fn attr_text(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Vec<u8>> {
    let value = obj.getattr(name)?;
    Ok(text(value.cast::<PyString>()?)?.into_owned())
}

/// The native Profile of a `sipload.sip.registration.Profile` (outbound and GRUU refused).
pub(crate) fn profile_of(p: &Bound<'_, PyAny>) -> PyResult<Profile> {
    if p.getattr("outbound")?.is_truthy()? || p.getattr("gruu")?.is_truthy()? {
        return Err(PyValueError::new_err("the native machine does plain bindings: no outbound, no GRUU"));
    }
    let timers = p.getattr("timers")?;
    let route = p.getattr("route")?;
    Ok(Profile {
        registrar_uri: attr_text(p, "registrar_uri")?,
        domain: attr_text(p, "domain")?,
        transport: attr_text(p, "transport")?,
        expires: p.getattr("expires")?.extract()?,
        refresh_at: p.getattr("refresh_at")?.extract()?,
        refresh_jitter: p.getattr("refresh_jitter")?.extract()?,
        refresh_margin: p.getattr("refresh_margin")?.extract()?,
        user_agent: attr_text(p, "user_agent")?,
        timers: Timers {
            t1: timers.getattr("t1")?.extract()?,
            t2: timers.getattr("t2")?.extract()?,
            t4: timers.getattr("t4")?.extract()?,
        },
        max_retries: p.getattr("max_retries")?.extract()?,
        retry_backoff: p.getattr("retry_backoff")?.extract()?,
        retry_backoff_max: p.getattr("retry_backoff_max")?.extract()?,
        route: if route.is_none() { None } else { Some(text(route.cast::<PyString>()?)?.into_owned()) },
        unregister_all: p.getattr("unregister_all")?.is_truthy()?,
        reuse_nonce: p.getattr("reuse_nonce")?.is_truthy()?,
        max_retry_after: p.getattr("max_retry_after")?.extract()?,
    })
}

pub(crate) fn algorithms(names: Option<Vec<String>>) -> PyResult<Option<Vec<Algorithm>>> {
    names
        .map(|list| {
            list.iter()
                .map(|n| {
                    Algorithm::parse(n.as_bytes())
                        .ok_or_else(|| PyValueError::new_err(format!("unknown digest algorithm {n:?}")))
                })
                .collect()
        })
        .transpose()
}

fn protocol_error(py: Python<'_>, e: reg::ProtocolError) -> PyErr {
    match py.import("sipload.sip.errors").and_then(|m| m.getattr("ProtocolError")).and_then(|c| c.call1((e.0,))) {
        Ok(value) => PyErr::from_value(value),
        Err(err) => err,
    }
}

#[pyclass(module = "sipload._native", unsendable)]
pub struct Registration {
    inner: reg::Registration,
    profile: Profile,
    ids: Py<PyAny>,
}

impl Registration {
    fn drive<T>(
        &mut self,
        py: Python<'_>,
        f: impl FnOnce(&mut reg::Registration, &Profile, &mut dyn Ids) -> Result<T, reg::ProtocolError>,
    ) -> PyResult<T> {
        let mut ids = PyIds { source: self.ids.bind(py).clone(), error: None };
        let result = f(&mut self.inner, &self.profile, &mut ids);
        if let Some(e) = ids.error {
            return Err(e);
        }
        result.map_err(|e| protocol_error(py, e))
    }
}

fn op_name(op: reg::Op) -> &'static str {
    op.name()
}

fn event_tuple<'py>(py: Python<'py>, e: &RegEvent) -> PyResult<Bound<'py, PyTuple>> {
    Ok(match e {
        RegEvent::OpStarted { op, scheduled, now } => {
            ("OpStarted", op_name(*op), *scheduled, *now).into_pyobject(py)?
        }
        RegEvent::Challenged { op, sent_at, now } => ("Challenged", op_name(*op), *sent_at, *now).into_pyobject(py)?,
        RegEvent::Registered { op, expires, started_at, last_sent_at, now } => {
            ("Registered", op_name(*op), *expires, *started_at, *last_sent_at, *now).into_pyobject(py)?
        }
        RegEvent::Unregistered { started_at, last_sent_at, now } => {
            ("Unregistered", *started_at, *last_sent_at, *now).into_pyobject(py)?
        }
        RegEvent::Failed { op, reason, status, started_at, now, final_, detail } => {
            ("Failed", op_name(*op), reason.name(), *status, *started_at, *now, *final_, py_str(py, detail.as_bytes())?)
                .into_pyobject(py)?
        }
        RegEvent::Retransmitted { op } => ("Retransmitted", op_name(*op)).into_pyobject(py)?,
    })
}

#[pymethods]
impl Registration {
    /// `Registration(profile, user=, contact=, sent_by=, auth=, ids=)` with the Call-ID and From tag given
    /// (`auth`: (username, password) or None; `preference`: digest algorithm names).
    #[new]
    #[pyo3(signature = (profile, *, user, contact, sent_by, auth, ids, call_id, from_tag, preference=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        profile: &Bound<'_, PyAny>,
        user: &Bound<'_, PyString>,
        contact: &Bound<'_, PyString>,
        sent_by: &Bound<'_, PyString>,
        auth: Option<(Bound<'_, PyString>, Bound<'_, PyString>)>,
        ids: Py<PyAny>,
        call_id: &Bound<'_, PyString>,
        from_tag: &Bound<'_, PyString>,
        preference: Option<Vec<String>>,
    ) -> PyResult<Self> {
        let profile = profile_of(profile)?;
        let client = match &auth {
            Some((username, password)) => Some(
                DigestClient::new(&text(username)?, Some(&text(password)?), None, None, algorithms(preference)?, None)
                    .map_err(|e| PyValueError::new_err(e.0))?,
            ),
            None => None,
        };
        let inner = reg::Registration::new(
            &profile,
            &text(user)?,
            &text(contact)?,
            &text(sent_by)?,
            client,
            text(call_id)?.into_owned(),
            text(from_tag)?.into_owned(),
        );
        Ok(Registration { inner, profile, ids })
    }

    #[getter]
    fn state(&self) -> &'static str {
        self.inner.state.name()
    }

    #[getter]
    fn cseq(&self) -> u32 {
        self.inner.cseq()
    }

    #[getter]
    fn finished(&self) -> bool {
        self.inner.finished()
    }

    #[getter]
    fn bound_until(&self) -> Option<f64> {
        self.inner.bound_until
    }

    #[getter]
    fn granted_expires(&self) -> Option<u64> {
        self.inner.granted_expires
    }

    #[getter]
    fn refresh_due(&self) -> Option<f64> {
        self.inner.refresh_due()
    }

    fn start(&mut self, py: Python<'_>, now: f64) -> PyResult<()> {
        self.drive(py, |r, p, ids| r.start(p, ids, now))
    }

    fn stop(&mut self, py: Python<'_>, now: f64) -> PyResult<()> {
        self.drive(py, |r, p, ids| r.stop(p, ids, now))
    }

    /// Feed a response's bytes; False when it is not for the request in flight. ParseError if they do not
    /// parse (the engine counts such a datagram before any machine sees it).
    #[pyo3(signature = (data, now, arrived=None))]
    fn receive(&mut self, py: Python<'_>, data: &[u8], now: f64, arrived: Option<f64>) -> PyResult<bool> {
        let msg = parse_message(data).map_err(|e| parse_error(py, e))?;
        self.drive(py, |r, p, ids| r.receive(p, ids, &msg, now, arrived))
    }

    fn next_timer(&self) -> Option<f64> {
        self.inner.next_timer(&self.profile)
    }

    fn handle_timer(&mut self, py: Python<'_>, now: f64) -> PyResult<()> {
        self.drive(py, |r, p, ids| r.handle_timer(p, ids, now))
    }

    fn transport_error(&mut self, py: Python<'_>, now: f64) -> PyResult<()> {
        self.drive(py, |r, p, ids| r.transport_error(p, ids, now))
    }

    fn take_outgoing<'py>(&mut self, py: Python<'py>) -> Vec<Bound<'py, PyBytes>> {
        self.inner.take_outgoing().iter().map(|b| PyBytes::new(py, b)).collect()
    }

    /// The events as tuples: ("OpStarted", op, scheduled, now), ("Challenged", op, sent_at, now),
    /// ("Registered", op, expires, started_at, last_sent_at, now), ("Unregistered", started_at,
    /// last_sent_at, now), ("Failed", op, reason, status, started_at, now, final, detail), ("Retransmitted", op).
    fn take_events<'py>(&mut self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyTuple>>> {
        self.inner.take_events().iter().map(|e| event_tuple(py, e)).collect()
    }
}

/// Every (state, input) pair of the native table: (state, input, handler name, next states), in order.
#[pyfunction]
pub fn registration_table() -> Vec<(&'static str, &'static str, &'static str, Vec<&'static str>)> {
    let mut out = Vec::new();
    for s in reg::RegState::ALL {
        for i in reg::RegInput::ALL {
            if let Some((handler, next)) = reg::table(s, i) {
                out.push((s.name(), i.name(), handler, next.iter().map(|n| n.name()).collect()));
            }
        }
    }
    out
}
