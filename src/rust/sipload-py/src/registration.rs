//! `sipload._native.Registration`: sipload-core's registration machine with the Python machine's
//! face, for the differential tests (tests/test_native_registration.py) and for Python callers.
//!
//! It reads a `sipload.sip.registration.Profile`, takes the digest client's arguments (`auth_user`,
//! `password`, `ha1`...) and a `seed`: its identifiers come from CPython's `random.Random(seed)`
//! drawn in the Python machine's order, so `IdSource(random.Random(seed))` on the Python side gives
//! the same bytes. Responses are `_native.Message`s; events are the Python event dataclasses
//! (`OpStarted`, `Registered`, `Failed`...) with `Op` and `FailureReason` members, so that they compare
//! with `==`. A `ProtocolError` or `ParseError` of the machine is raised as the Python one.

use std::sync::Arc;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyInt, PyList, PyString, PyTuple};

use sipload_core::digest::{Algorithm, DigestClient};
use sipload_core::ids::PyRandom;
use sipload_core::message::StartLine;
use sipload_core::registration::{self as core, MachineError, Profile, RegEvent, RegInput, RegState, TABLE};
use sipload_core::transaction::Timers;

use crate::{opt_str, parse_error, py_str, text, Message};

fn attr<'py, T: FromPyObjectOwned<'py>>(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<T> {
    obj.getattr(name)?.extract::<T>().map_err(|e| {
        let e: PyErr = e.into();
        PyValueError::new_err(format!("profile.{name}: {e}"))
    })
}

fn attr_text(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Vec<u8>> {
    let value = obj.getattr(name)?;
    let s = value.cast::<PyString>().map_err(|_| PyTypeError::new_err(format!("profile.{name}: expected a str")))?;
    Ok(text(s)?.into_owned())
}

/// The core's `Profile` from a `sipload.sip.registration.Profile`.
fn profile_of(p: &Bound<'_, PyAny>) -> PyResult<Profile> {
    let expires: i64 = attr(p, "expires")?;
    let expires = u64::try_from(expires)
        .map_err(|_| PyValueError::new_err(format!("profile.expires: must be >= 0, got {expires}")))?;
    let timers = p.getattr("timers")?;
    let timers =
        Timers::new(attr(&timers, "t1")?, attr(&timers, "t2")?, attr(&timers, "t4")?).map_err(PyValueError::new_err)?;
    let route = p.getattr("route")?;
    let route = if route.is_none() {
        None
    } else {
        Some(
            text(route.cast::<PyString>().map_err(|_| PyTypeError::new_err("profile.route: expected a str"))?)?
                .into_owned(),
        )
    };
    Ok(Profile {
        domain: attr_text(p, "domain")?,
        registrar_uri: attr_text(p, "registrar_uri")?,
        transport: attr_text(p, "transport")?,
        expires,
        refresh_at: attr(p, "refresh_at")?,
        refresh_jitter: attr(p, "refresh_jitter")?,
        refresh_margin: attr(p, "refresh_margin")?,
        user_agent: attr_text(p, "user_agent")?,
        timers,
        max_retries: attr(p, "max_retries")?,
        retry_backoff: attr(p, "retry_backoff")?,
        retry_backoff_max: attr(p, "retry_backoff_max")?,
        route,
        unregister_all: attr(p, "unregister_all")?,
        reuse_nonce: attr(p, "reuse_nonce")?,
        max_retry_after: attr(p, "max_retry_after")?,
        outbound: attr(p, "outbound")?,
        gruu: attr(p, "gruu")?,
    })
}

/// The key of `random.Random(seed)`: the little-endian 32-bit words of `abs(seed)`; a seed of None is
/// drawn from `os.urandom(16)`, as `IdSource()` draws it.
fn random_of(py: Python<'_>, seed: Option<&Bound<'_, PyInt>>) -> PyResult<PyRandom> {
    let number = match seed {
        Some(s) => s.call_method0("__abs__")?,
        None => {
            let bytes = py.import("os")?.call_method1("urandom", (16,))?;
            py.get_type::<PyInt>().call_method1("from_bytes", (bytes, "big"))?
        }
    };
    let bits: usize = number.call_method0("bit_length")?.extract()?;
    let length = bits.div_ceil(32).max(1) * 4;
    let bytes = number.call_method1("to_bytes", (length, "little"))?;
    let bytes = bytes.cast::<PyBytes>()?.as_bytes();
    let key: Vec<u32> = bytes.chunks(4).map(|c| c.iter().rev().fold(0u32, |n, &b| (n << 8) | u32::from(b))).collect();
    Ok(PyRandom::from_key(&key))
}

fn algorithm_of(name: &Bound<'_, PyString>) -> PyResult<Algorithm> {
    let t = text(name)?;
    Algorithm::ALL
        .into_iter()
        .find(|a| a.name().as_bytes() == t.as_ref())
        .ok_or_else(|| PyValueError::new_err(format!("unknown digest algorithm {:?}", String::from_utf8_lossy(&t))))
}

fn machine_error(py: Python<'_>, e: MachineError) -> PyErr {
    match e {
        MachineError::Parse(e) => parse_error(py, e),
        MachineError::Auth(e) => PyValueError::new_err(e.0),
        MachineError::Protocol(message) => {
            let raised = py_str(py, &message)
                .and_then(|m| py.import("sipload.sip.errors")?.getattr("ProtocolError")?.call1((m,)));
            match raised {
                Ok(value) => PyErr::from_value(value),
                Err(err) => err,
            }
        }
    }
}

fn input_of(value: &str) -> PyResult<RegInput> {
    RegInput::ALL
        .into_iter()
        .find(|i| i.value() == value)
        .ok_or_else(|| PyValueError::new_err(format!("unknown registration input {value:?}")))
}

/// (state, input, handler name, next states), as values.
type TableRow<'py> = (&'static str, &'static str, &'static str, Bound<'py, PyTuple>);

/// One endpoint's registration machine (`sipload.sip.registration.Registration`'s twin).
#[pyclass(module = "sipload._native")]
pub(crate) struct Registration {
    inner: core::Registration<PyRandom>,
}

#[pymethods]
impl Registration {
    #[new]
    #[pyo3(signature = (profile, *, user, contact, sent_by, seed=None, auth_user=None, password=None, ha1=None,
                        realm_for_ha1=None, preference=None, ha1_algorithm=None, instance=None, reg_id=1))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        profile: &Bound<'_, PyAny>,
        user: &Bound<'_, PyString>,
        contact: &Bound<'_, PyString>,
        sent_by: &Bound<'_, PyString>,
        seed: Option<&Bound<'_, PyInt>>,
        auth_user: Option<&Bound<'_, PyString>>,
        password: Option<&Bound<'_, PyString>>,
        ha1: Option<&Bound<'_, PyString>>,
        realm_for_ha1: Option<&Bound<'_, PyString>>,
        preference: Option<Vec<Bound<'_, PyString>>>,
        ha1_algorithm: Option<&Bound<'_, PyString>>,
        instance: Option<&Bound<'_, PyString>>,
        reg_id: i64,
    ) -> PyResult<Self> {
        let profile = profile_of(profile)?;
        let auth = match auth_user {
            None => None,
            Some(username) => {
                let password = password.map(text).transpose()?;
                let ha1 = ha1.map(text).transpose()?;
                let realm = realm_for_ha1.map(text).transpose()?;
                let preference: Option<Vec<_>> =
                    preference.map(|p| p.iter().map(algorithm_of).collect()).transpose()?;
                let client = DigestClient::new(
                    &text(username)?,
                    password.as_deref(),
                    ha1.as_deref(),
                    realm.as_deref(),
                    preference.map(Arc::from),
                    ha1_algorithm.map(algorithm_of).transpose()?,
                )
                .map_err(|e| PyValueError::new_err(e.0))?;
                Some(client)
            }
        };
        let instance = instance.map(text).transpose()?;
        let inner = core::Registration::new(
            Arc::new(profile),
            &text(user)?,
            &text(contact)?,
            &text(sent_by)?,
            auth,
            random_of(py, seed)?,
            instance.as_deref(),
            reg_id,
        )
        .map_err(PyValueError::new_err)?;
        Ok(Registration { inner })
    }

    fn start(&mut self, py: Python<'_>, now: f64) -> PyResult<()> {
        self.inner.start(now).map_err(|e| machine_error(py, e))
    }

    fn stop(&mut self, py: Python<'_>, now: f64) -> PyResult<()> {
        self.inner.stop(now).map_err(|e| machine_error(py, e))
    }

    /// Feed a response; False when it does not belong to the current request (stray, late).
    #[pyo3(signature = (response, now, arrived=None))]
    fn receive(
        &mut self,
        py: Python<'_>,
        response: PyRef<'_, Message>,
        now: f64,
        arrived: Option<f64>,
    ) -> PyResult<bool> {
        if !matches!(response.inner.start, StartLine::Response { .. }) {
            return Err(PyTypeError::new_err("receive() takes a response, not a request"));
        }
        self.inner.receive(&response.inner, now, arrived).map_err(|e| machine_error(py, e))
    }

    fn next_timer(&self) -> Option<f64> {
        self.inner.next_timer()
    }

    fn handle_timer(&mut self, py: Python<'_>, now: f64) -> PyResult<()> {
        self.inner.handle_timer(now).map_err(|e| machine_error(py, e))
    }

    fn transport_error(&mut self, py: Python<'_>, now: f64) -> PyResult<()> {
        self.inner.transport_error(now).map_err(|e| machine_error(py, e))
    }

    fn flow_failed(&mut self, py: Python<'_>, now: f64) -> PyResult<()> {
        self.inner.flow_failed(now).map_err(|e| machine_error(py, e))
    }

    /// Feed one input of the table directly (`Registration._dispatch`), for tests.
    #[pyo3(signature = (input, response, now))]
    fn _dispatch(
        &mut self,
        py: Python<'_>,
        input: &str,
        response: Option<PyRef<'_, Message>>,
        now: f64,
    ) -> PyResult<()> {
        let input = input_of(input)?;
        self.inner.dispatch_input(input, response.as_ref().map(|m| &m.inner), now).map_err(|e| machine_error(py, e))
    }

    fn take_outgoing<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.inner.take_outgoing().iter().map(|d| PyBytes::new(py, d)))
    }

    /// The events since the last call, as `sipload.sip.registration`'s event dataclasses.
    fn take_events<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let events = self.inner.take_events();
        let module = py.import("sipload.sip.registration")?;
        let op_class = module.getattr("Op")?;
        let op = |o: core::Op| op_class.call1((o.value(),));
        let out = PyList::empty(py);
        for event in events {
            let value = match event {
                RegEvent::OpStarted { op: o, scheduled, now } => {
                    module.getattr("OpStarted")?.call1((op(o)?, scheduled, now))?
                }
                RegEvent::Challenged { op: o, sent_at, now } => {
                    module.getattr("Challenged")?.call1((op(o)?, sent_at, now))?
                }
                RegEvent::Registered { op: o, expires, started_at, last_sent_at, now } => {
                    module.getattr("Registered")?.call1((op(o)?, expires, started_at, last_sent_at, now))?
                }
                RegEvent::Unregistered { started_at, last_sent_at, now } => {
                    module.getattr("Unregistered")?.call1((started_at, last_sent_at, now))?
                }
                RegEvent::Failed { op: o, reason, status, started_at, now, final_, detail } => {
                    let reason = module.getattr("FailureReason")?.call1((reason.value(),))?;
                    let args = (op(o)?, reason, status, started_at, now, final_, py_str(py, &detail)?);
                    module.getattr("Failed")?.call1(args)?
                }
                RegEvent::Retransmitted { op: o } => module.getattr("Retransmitted")?.call1((op(o)?,))?,
            };
            out.append(value)?;
        }
        Ok(out)
    }

    /// The state's value ("idle", "registering", ...).
    #[getter]
    fn state(&self) -> &'static str {
        self.inner.state.value()
    }

    #[getter]
    fn refresh_due(&self) -> Option<f64> {
        self.inner.refresh_due()
    }

    #[getter]
    fn finished(&self) -> bool {
        self.inner.finished()
    }

    #[getter]
    fn cseq(&self) -> u32 {
        self.inner.cseq()
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
    fn service_route(&self, py: Python<'_>) -> PyResult<Vec<Py<PyString>>> {
        self.inner.service_route().iter().map(|v| Ok(py_str(py, v)?.unbind())).collect()
    }

    #[getter]
    fn path(&self, py: Python<'_>) -> PyResult<Vec<Py<PyString>>> {
        self.inner.path().iter().map(|v| Ok(py_str(py, v)?.unbind())).collect()
    }

    #[getter]
    fn user<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyString>> {
        py_str(py, self.inner.user())
    }

    #[getter]
    fn aor<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyString>> {
        py_str(py, &self.inner.aor())
    }

    #[getter]
    fn contact<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyString>> {
        py_str(py, self.inner.contact())
    }

    #[getter]
    fn sent_by<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyString>> {
        py_str(py, self.inner.sent_by())
    }

    #[getter]
    fn call_id<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyString>> {
        py_str(py, self.inner.call_id())
    }

    #[getter]
    #[allow(clippy::wrong_self_convention)] // the From header's tag, not a conversion
    fn from_tag<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyString>> {
        py_str(py, self.inner.from_tag())
    }

    #[getter]
    fn instance<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyString>>> {
        opt_str(py, self.inner.instance())
    }

    #[getter]
    fn reg_id(&self) -> Option<u32> {
        self.inner.reg_id()
    }

    #[getter]
    fn pub_gruu<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyString>>> {
        opt_str(py, self.inner.pub_gruu())
    }

    #[getter]
    fn temp_gruu<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyString>>> {
        opt_str(py, self.inner.temp_gruu())
    }

    #[getter]
    fn outbound_required(&self) -> bool {
        self.inner.outbound_required()
    }

    /// The table: `[(state, input, handler name, (next states...))]`, values as Python's `_TABLE` has them.
    #[staticmethod]
    fn table(py: Python<'_>) -> PyResult<Vec<TableRow<'_>>> {
        TABLE
            .iter()
            .map(|((state, input), (handler, next))| {
                let next = PyTuple::new(py, next.iter().map(|s: &RegState| s.value()))?;
                Ok((state.value(), input.value(), handler.name(), next))
            })
            .collect()
    }
}
