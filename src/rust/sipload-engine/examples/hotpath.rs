//! CPU per registration of the native fleet's hot path, without sockets or a registrar: the
//! native twin of `bench/hotpath.py`.
//!
//!     cargo run --release -p sipload-engine --example hotpath -- [--endpoints 20000] [--repeat 5]
//!
//! A fleet of N digest endpoints is built as the binding builds it; Kamailio's own 401 and 200 (as
//! `bench/hotpath.py` has them, no qop) are made for each request between the passes, off the clock.
//! Timed (thread CPU time): every arrival (`poll`: REGISTER built), every 401 (`receive`: parse, match,
//! digest, second REGISTER) and every 200 (parse, granted expiry, events, histograms), each with the
//! `take_outgoing` that hands the datagrams on. Not in it: the system calls and the wake-ups.
//! Prints µs per registration (median and best of the repetitions), split as arrival + 401 + 200.

use std::sync::{Arc, Mutex};

use sipload_core::digest::DigestClient;
use sipload_core::ids::PyRandom;
use sipload_core::registration::{Profile, Registration};
use sipload_core::transaction::Timers;
use sipload_engine::core_machine::CoreMachine;
use sipload_engine::io::{clock_ns, Schedule};
use sipload_engine::{Fleet, FleetConfig, Slot};

const CLOCK_THREAD_CPUTIME_ID: i32 = 3;

fn cpu() -> f64 {
    clock_ns(CLOCK_THREAD_CPUTIME_ID).map_or(0.0, |ns| ns as f64 / 1e9)
}

fn between<'a>(data: &'a [u8], before: &[u8], after: u8) -> &'a [u8] {
    let start = data.windows(before.len()).position(|w| w == before).map_or(data.len(), |i| i + before.len());
    let rest = &data[start..];
    let end = rest.iter().position(|&b| b == after || b == b'\r').unwrap_or(rest.len());
    &rest[..end]
}

/// Kamailio 5.6's answer to `request` (peers/kamailio/kamailio.cfg), with its branch, tag, Call-ID.
fn answer(request: &[u8], status: &str, cseq: u32, tail: &str) -> Vec<u8> {
    let branch = String::from_utf8_lossy(between(request, b";branch=", b';'));
    let tag = String::from_utf8_lossy(between(request, b">;tag=", b';'));
    let call_id = String::from_utf8_lossy(between(request, b"Call-ID: ", b'\r'));
    let user = String::from_utf8_lossy(between(request, b"From: <sip:", b'@'));
    format!(
        "SIP/2.0 {status}\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:50320;branch={branch};rport=50320;received=127.0.0.1\r\n\
         From: <sip:{user}@127.0.0.1>;tag={tag}\r\n\
         To: <sip:{user}@127.0.0.1>;tag=1e3b0cc639417e0df20ca39488876c28.fec52636\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} REGISTER\r\n\
         {tail}\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn fleet(n: u32) -> Fleet<CoreMachine<Arc<Mutex<PyRandom>>>> {
    let profile = Arc::new(Profile {
        registrar_uri: b"sip:127.0.0.1".to_vec(),
        domain: b"127.0.0.1".to_vec(),
        transport: b"UDP".to_vec(),
        expires: 3600,
        refresh_at: 0.5,
        refresh_jitter: 0.05,
        refresh_margin: 5.0,
        user_agent: b"sipload".to_vec(),
        timers: Timers::new(0.5, 4.0, 5.0).expect("timers"),
        max_retries: 0,
        retry_backoff: 1.0,
        retry_backoff_max: 32.0,
        route: None,
        unregister_all: false,
        reuse_nonce: true,
        max_retry_after: 300.0,
        outbound: false,
        gruu: false,
    });
    let ids = Arc::new(Mutex::new(PyRandom::new(1)));
    let slots = (0..n)
        .map(|k| {
            let user = format!("user{}", k + 1);
            let auth =
                DigestClient::new(user.as_bytes(), Some(format!("pw-{user}").as_bytes()), None, None, None, None)
                    .expect("client");
            let contact = format!("sip:{user}@127.0.0.1:50320;transport=udp");
            let reg = Registration::new(
                profile.clone(),
                user.as_bytes(),
                contact.as_bytes(),
                b"127.0.0.1:50320",
                Some(auth),
                ids.clone(),
                None,
                1,
            )
            .expect("registration");
            Slot::new(CoreMachine::new(reg), u64::from(k), 0)
        })
        .collect();
    let schedule = Schedule::constant(1e9).expect("rate");
    Fleet::new(FleetConfig { schedule, max_in_flight: u64::from(n) }, slots)
}

/// One round: (arrival, 401, 200) µs per registration.
fn round(n: u32) -> (f64, f64, f64) {
    let mut f = fleet(n);
    f.start(0.0);
    let now = 1.0;
    let t0 = cpu();
    f.poll(now);
    let registers: Vec<Vec<u8>> = f.take_outgoing().map(|(_, d)| d).collect();
    let arrivals = cpu() - t0;
    let challenges: Vec<Vec<u8>> = registers
        .iter()
        .map(|r| {
            answer(
                r,
                "401 Unauthorized",
                1,
                "WWW-Authenticate: Digest realm=\"127.0.0.1\", nonce=\"awRmoWsEZXUrVpXRavFG2EMDefq1pmBm\"\r\n",
            )
        })
        .collect();
    let mut second = Vec::with_capacity(n as usize);
    let t0 = cpu();
    for c in &challenges {
        f.receive(c, now, now);
        second.extend(f.take_outgoing().map(|(_, d)| d));
    }
    let answered = cpu() - t0;
    let oks: Vec<Vec<u8>> = second
        .iter()
        .map(|r| {
            let contact = String::from_utf8_lossy(between(r, b"Contact: <", b'>')).into_owned();
            answer(r, "200 OK", 2, &format!("Contact: <{contact}>;expires=3600\r\n"))
        })
        .collect();
    let t0 = cpu();
    for o in &oks {
        f.receive(o, now, now);
        f.take_outgoing().for_each(drop);
    }
    let done = cpu() - t0;
    let bound = f.bound(now);
    assert_eq!(bound, u64::from(n), "only {bound} of {n} registered: the harness is broken");
    let per = |s: f64| s / f64::from(n) * 1e6;
    (per(arrivals), per(answered), per(done))
}

fn main() {
    let mut endpoints = 20_000u32;
    let mut repeat = 5usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let value = args.next().and_then(|v| v.parse::<u64>().ok());
        match (a.as_str(), value) {
            ("--endpoints", Some(v)) => endpoints = v as u32,
            ("--repeat", Some(v)) => repeat = v as usize,
            _ => {
                eprintln!("usage: hotpath [--endpoints N] [--repeat R]");
                std::process::exit(2);
            }
        }
    }
    let mut rounds: Vec<(f64, f64, f64)> = (0..repeat.max(1)).map(|_| round(endpoints)).collect();
    rounds.sort_by(|a, b| (a.0 + a.1 + a.2).total_cmp(&(b.0 + b.1 + b.2)));
    let (a, c, o) = rounds[rounds.len() / 2];
    let best = rounds[0];
    println!(
        "native hot path, {endpoints} endpoints, {repeat} rounds: median {:.2} µs/registration \
         (arrival {a:.2} + 401 {c:.2} + 200 {o:.2}), best {:.2}",
        a + c + o,
        best.0 + best.1 + best.2
    );
}
