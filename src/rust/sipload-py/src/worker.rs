//! `sipload._native.NativeWorker`: one worker's UDP fleet in one compiled loop (`sipload-engine`'s fleet
//! over its UDP loop), driven by the trio task in `sipload/engine/native_worker.py`.
//!
//! Built in three steps: the sockets (their local addresses go into the endpoints' Via and Contact), the
//! profiles and endpoints, then `start()`. `run_until()` is the whole loop up to a moment, the GIL
//! released, for a trio task to wait on in a thread (`trio.to_thread.run_sync`), while the [`Waker`] it
//! took before can end it early from the trio thread. A panic inside the loop is caught: it is counted as
//! an internal error with its message, the fleet stops, and the results so far stay readable; it never
//! reaches Python as a crash.

use std::net::{IpAddr, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

use sipload_core::digest::{Algorithm, DigestClient};
use sipload_core::ids::PyRandom;
use sipload_core::registration::{Profile, Registration};
use sipload_core::transaction::Timers;
use sipload_engine::core_machine::CoreMachine;
use sipload_engine::io::Wakeup;
use sipload_engine::io::{Schedule, ScheduleError};
use sipload_engine::udp_loop::{monotonic, Pacing, UdpLoop};
use sipload_engine::{Fleet, FleetConfig, Slot};

use crate::{py_str, text};

/// The worker's one id source, shared by its machines (as `sipload/engine/worker.py` shares its
/// `IdSource`): `random.Random(seed)`, drawn in the Python machines' order.
type SharedIds = Arc<Mutex<PyRandom>>;
type Endpoint = CoreMachine<SharedIds>;

fn algorithms(names: Option<Vec<String>>) -> PyResult<Option<Vec<Algorithm>>> {
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

fn address(host: &str, port: u16) -> PyResult<SocketAddr> {
    let ip: IpAddr = host.parse().map_err(|_| PyValueError::new_err(format!("not an IP address: {host:?}")))?;
    Ok(SocketAddr::new(ip, port))
}

fn schedule_of(shape: &Bound<'_, PyAny>) -> PyResult<Schedule> {
    let kind: String = shape.get_item(0)?.extract()?;
    let made: Result<Schedule, ScheduleError> = match kind.as_str() {
        "constant" => Schedule::constant(shape.get_item(1)?.extract()?),
        "steps" => Schedule::steps(&shape.get_item(1)?.extract::<Vec<(f64, f64)>>()?),
        "ramp" => {
            Schedule::ramp(shape.get_item(1)?.extract()?, shape.get_item(2)?.extract()?, shape.get_item(3)?.extract()?)
        }
        other => return Err(PyValueError::new_err(format!("unknown load shape {other:?}"))),
    };
    made.map_err(|e| PyValueError::new_err(e.0))
}

/// Ends a `NativeWorker.run_until` early, from any thread (the worker itself is busy meanwhile).
#[pyclass(module = "sipload._native", frozen)]
pub struct Waker {
    wakeup: Arc<Wakeup>,
}

#[pymethods]
impl Waker {
    fn wake(&self) {
        self.wakeup.wake();
    }
}

#[pyclass(module = "sipload._native")]
pub struct NativeWorker {
    io: UdpLoop,
    schedule: Schedule,
    max_in_flight: u64,
    ids: SharedIds,
    profiles: Vec<Arc<Profile>>,
    preferences: Vec<Option<Arc<[Algorithm]>>>,
    pending: Vec<Slot<Endpoint>>,
    fleet: Option<Fleet<Endpoint>>,
    panics: u64,
    last_panic: String,
}

impl NativeWorker {
    fn fleet(&mut self) -> PyResult<&mut Fleet<Endpoint>> {
        self.fleet.as_mut().ok_or_else(|| PyRuntimeError::new_err("the native worker has not started"))
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

#[pymethods]
impl NativeWorker {
    /// Sockets bound to `locals` [(host, port)] (port 0: any), all sending to `peer`; `schedule` is
    /// ("constant", rate) | ("steps", [(rate, duration)]) | ("ramp", from, to, duration).
    #[new]
    fn new(
        locals: Vec<(String, u16)>,
        peer: (String, u16),
        schedule: &Bound<'_, PyAny>,
        max_in_flight: u64,
        seed: u64,
    ) -> PyResult<Self> {
        let locals = locals.iter().map(|(h, p)| address(h, *p)).collect::<PyResult<Vec<_>>>()?;
        let peer = address(&peer.0, peer.1)?;
        let io = UdpLoop::bind(&locals, peer).map_err(|e| PyOSError::new_err(e.to_string()))?;
        Ok(NativeWorker {
            io,
            schedule: schedule_of(schedule)?,
            max_in_flight,
            ids: Arc::new(Mutex::new(PyRandom::new(seed))),
            profiles: Vec::new(),
            preferences: Vec::new(),
            pending: Vec::new(),
            fleet: None,
            panics: 0,
            last_panic: String::new(),
        })
    }

    /// The sockets' bound (host, port), in the order given.
    fn local_addresses(&self) -> Vec<(String, u16)> {
        self.io.local_addrs().iter().map(|a| (a.ip().to_string(), a.port())).collect()
    }

    /// Whether every socket reports kernel receive timestamps.
    fn timestamps(&self) -> bool {
        self.io.timestamps()
    }

    /// A group's profile (the fields of `sipload.sip.registration.Profile`, plain UDP); its number.
    #[pyo3(signature = (*, domain, registrar_uri, expires, refresh_at, refresh_jitter, refresh_margin, user_agent,
                        t1, t2, t4, max_retries, retry_backoff, retry_backoff_max, unregister_all, reuse_nonce,
                        max_retry_after, preference=None))]
    #[allow(clippy::too_many_arguments)]
    fn add_profile(
        &mut self,
        domain: &Bound<'_, PyString>,
        registrar_uri: &Bound<'_, PyString>,
        expires: u64,
        refresh_at: f64,
        refresh_jitter: f64,
        refresh_margin: f64,
        user_agent: &Bound<'_, PyString>,
        t1: f64,
        t2: f64,
        t4: f64,
        max_retries: u32,
        retry_backoff: f64,
        retry_backoff_max: f64,
        unregister_all: bool,
        reuse_nonce: bool,
        max_retry_after: f64,
        preference: Option<Vec<String>>,
    ) -> PyResult<usize> {
        let preference = algorithms(preference)?.map(Arc::from); // one list, shared by the group's clients
        let timers = Timers::new(t1, t2, t4).map_err(PyValueError::new_err)?;
        self.profiles.push(Arc::new(Profile {
            registrar_uri: text(registrar_uri)?.into_owned(),
            domain: text(domain)?.into_owned(),
            transport: b"UDP".to_vec(),
            expires,
            refresh_at,
            refresh_jitter,
            refresh_margin,
            user_agent: text(user_agent)?.into_owned(),
            timers,
            max_retries: i64::from(max_retries),
            retry_backoff,
            retry_backoff_max,
            route: None,
            unregister_all,
            reuse_nonce,
            max_retry_after,
            outbound: false,
            gruu: false,
        }));
        self.preferences.push(preference);
        Ok(self.profiles.len() - 1)
    }

    /// One endpoint: scenario index `index`, sending from socket `socket`.
    #[allow(clippy::too_many_arguments)]
    fn add_endpoint(
        &mut self,
        profile: usize,
        index: u64,
        socket: u16,
        username: &Bound<'_, PyString>,
        contact: &Bound<'_, PyString>,
        sent_by: &Bound<'_, PyString>,
        auth_user: &Bound<'_, PyString>,
        password: &Bound<'_, PyString>,
    ) -> PyResult<()> {
        if self.fleet.is_some() {
            return Err(PyRuntimeError::new_err("endpoints are added before start()"));
        }
        let p = self.profiles.get(profile).cloned().ok_or_else(|| PyValueError::new_err("no such profile"))?;
        if usize::from(socket) >= self.io.local_addrs().len() {
            return Err(PyValueError::new_err(format!("no socket {socket}")));
        }
        let preference = self.preferences.get(profile).cloned().flatten();
        let auth = DigestClient::new(&text(auth_user)?, Some(&text(password)?), None, None, preference, None)
            .map_err(|e| PyValueError::new_err(e.0))?;
        let reg = Registration::new(
            p,
            &text(username)?,
            &text(contact)?,
            &text(sent_by)?,
            Some(auth),
            self.ids.clone(),
            None,
            1,
        )
        .map_err(PyValueError::new_err)?;
        self.pending.push(Slot::new(CoreMachine::new(reg), index, socket));
        Ok(())
    }

    /// Arrivals are due from now on.
    fn start(&mut self) {
        if self.fleet.is_none() {
            let config = FleetConfig { schedule: self.schedule.clone(), max_in_flight: self.max_in_flight };
            let mut fleet = Fleet::new(config, std::mem::take(&mut self.pending));
            fleet.start(monotonic());
            self.fleet = Some(fleet);
        }
    }

    /// CLOCK_MONOTONIC in seconds (Python's `time.monotonic()`).
    #[staticmethod]
    fn now() -> f64 {
        monotonic()
    }

    /// What ends a `run_until` early from another thread.
    fn waker(&self) -> Waker {
        Waker { wakeup: self.io.wakeup() }
    }

    /// Pace `run_until`'s wake-ups: a bucket of `burst` wake-ups refilled at `quiet_rate` a second, at
    /// `busy_rate` while the worker moves more than `busy_above` datagrams a second (inf: unpaced).
    fn set_pacing(&mut self, quiet_rate: f64, busy_rate: f64, busy_above: f64, burst: f64) -> PyResult<()> {
        let rates_ok = [quiet_rate, busy_rate].iter().all(|r| *r > 0.0);
        if !rates_ok || busy_above.is_nan() || busy_above < 0.0 || burst.is_nan() || burst < 1.0 {
            return Err(PyValueError::new_err(format!(
                "pacing needs rates > 0, busy_above >= 0 and burst >= 1, not {quiet_rate}, {busy_rate}, \
                 {busy_above}, {burst}"
            )));
        }
        self.io.set_pacing(Pacing { quiet_rate, busy_rate, busy_above, burst });
        Ok(())
    }

    /// Run until `until` (monotonic seconds), a `Waker.wake()`, or the end of the stop, the GIL
    /// released: (steps, datagrams received, sent, still running, woken).
    fn run_until(&mut self, py: Python<'_>, until: f64) -> PyResult<(u64, u64, u64, bool, bool)> {
        let NativeWorker { io, fleet, panics, last_panic, .. } = self;
        let fleet = fleet.as_mut().ok_or_else(|| PyRuntimeError::new_err("the native worker has not started"))?;
        let ran = py.detach(|| catch_unwind(AssertUnwindSafe(|| io.run_until(fleet, until))));
        match ran {
            Ok(Ok(o)) => Ok((o.steps, o.received, o.sent, o.running, o.woken)),
            Ok(Err(e)) => Err(PyOSError::new_err(format!("the native loop's wait failed: {e}"))),
            Err(payload) => {
                *panics += 1;
                *last_panic = panic_text(payload.as_ref());
                Ok((0, 0, 0, false, false))
            }
        }
    }

    /// End arrivals and unregister (paced); False when nothing is left to wait for.
    fn request_stop(&mut self, unregister: bool, timeout: f64, end_rate: f64) -> PyResult<bool> {
        let now = monotonic();
        Ok(self.fleet()?.request_stop(now, unregister, timeout, end_rate))
    }

    /// What the interval counted (phase, kind and reason names as the Python enums' values).
    fn take_interval<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let snap = self.fleet()?.take_interval();
        let d = PyDict::new(py);
        let hist: Vec<_> = snap.histograms.into_iter().map(|(p, k, b)| (p.name(), k.name(), b)).collect();
        d.set_item("histograms", hist)?;
        d.set_item("schedule_lag", snap.schedule_lag)?;
        d.set_item("attempts", snap.attempts.into_iter().map(|(p, n)| (p.name(), n)).collect::<Vec<_>>())?;
        d.set_item("successes", snap.successes.into_iter().map(|(p, n)| (p.name(), n)).collect::<Vec<_>>())?;
        d.set_item("failures", snap.failures.into_iter().map(|(p, r, n)| (p.name(), r, n)).collect::<Vec<_>>())?;
        d.set_item("responses", snap.responses)?;
        d.set_item("retransmissions", snap.retransmissions)?;
        d.set_item("clamped", snap.clamped)?;
        Ok(d)
    }

    /// The gauges of an interval snapshot.
    fn gauges<'py>(&mut self, py: Python<'py>, now: f64) -> PyResult<Bound<'py, PyDict>> {
        let drops = self.io.kernel_drops();
        let send_errors = self.io.counters().send_errors;
        let fleet = self.fleet()?;
        let c = fleet.counters().clone();
        let d = PyDict::new(py);
        d.set_item("registered", fleet.bound(now))?;
        d.set_item("in_flight", c.in_flight)?;
        d.set_item("retries", c.retries)?;
        d.set_item("kernel_drops", drops)?;
        d.set_item("stray", c.stray + c.unparseable)?;
        d.set_item("send_errors", send_errors)?;
        Ok(d)
    }

    /// The worker report's counts.
    fn counters<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let io = self.io.counters().clone();
        let (panics, last_panic) = (self.panics, self.last_panic.clone());
        let c = self.fleet()?.counters().clone();
        let d = PyDict::new(py);
        d.set_item("arrivals_started", c.arrivals_started)?;
        d.set_item("first_arrival", c.first_arrival)?;
        d.set_item("last_arrival", c.last_arrival)?;
        d.set_item("stray", c.stray)?;
        d.set_item("unparseable", c.unparseable + io.truncated)?;
        d.set_item("foreign", io.foreign)?;
        d.set_item("send_errors", io.send_errors + io.send_dropped)?;
        d.set_item("unregister_timed_out", c.unregister_timed_out)?;
        d.set_item("internal_errors", c.internal_errors + panics)?;
        let last = if panics > 0 { format!("panic: {last_panic}") } else { c.last_internal_error };
        d.set_item("last_internal_error", last)?;
        d.set_item("last_error", io.last_error)?;
        Ok(d)
    }

    /// Every endpoint's line as columns, then the machines are released (the end of a run: the
    /// lines of a million endpoints are made without the machines still held). Native-endian
    /// buffers: index (u64), state code (u8; `state_names[code]`), last status (u16; 0: none), reason
    /// code (u8; `reason_names[code]`), registrations and refreshes (u32), users, Call-IDs and contacts (one
    /// buffer each, row i ending at `ends[i]`, u32). The worker answers nothing after it.
    #[allow(clippy::type_complexity)]
    fn take_reports<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let table = self.fleet()?.report_table();
        self.fleet = None;
        let d = PyDict::new(py);
        let bytes = |v: &[u8]| PyBytes::new(py, v);
        d.set_item("index", bytes(&table.index.iter().flat_map(|v| v.to_ne_bytes()).collect::<Vec<u8>>()))?;
        d.set_item("state", bytes(&table.state))?;
        d.set_item("state_names", table.state_names)?;
        d.set_item("last_status", bytes(&table.last_status.iter().flat_map(|v| v.to_ne_bytes()).collect::<Vec<u8>>()))?;
        d.set_item("reason", bytes(&table.reason))?;
        d.set_item("reason_names", table.reason_names)?;
        for (key, column) in [
            ("registrations", &table.registrations),
            ("refreshes", &table.refreshes),
            ("user_ends", &table.user_ends),
            ("call_id_ends", &table.call_id_ends),
            ("contact_ends", &table.contact_ends),
        ] {
            d.set_item(key, bytes(&column.iter().flat_map(|v| v.to_ne_bytes()).collect::<Vec<u8>>()))?;
        }
        d.set_item("users", bytes(&table.users))?;
        d.set_item("call_ids", bytes(&table.call_ids))?;
        d.set_item("contacts", bytes(&table.contacts))?;
        Ok(d)
    }

    /// Endpoints `start..start + count` (all by default; past the end: fewer): (index, state, last status,
    /// failure reason, registrations, refreshes, Call-ID, contact).
    #[pyo3(signature = (start=0, count=None))]
    #[allow(clippy::type_complexity)]
    fn reports<'py>(
        &mut self,
        py: Python<'py>,
        start: usize,
        count: Option<usize>,
    ) -> PyResult<Vec<(u64, String, Option<u16>, &'static str, u32, u32, Bound<'py, PyString>, Bound<'py, PyString>)>>
    {
        self.fleet()?
            .reports_of(start, count.unwrap_or(usize::MAX))
            .into_iter()
            .map(|r| {
                Ok((
                    r.index,
                    r.state,
                    r.last_status,
                    r.failure_reason,
                    r.registrations,
                    r.refreshes,
                    py_str(py, &r.call_id)?,
                    py_str(py, &r.contact)?,
                ))
            })
            .collect()
    }
}
