//! Side-by-side figures for sipload-io (not a test): `cargo run --release --example bench [reps]`.
//!
//! - UDP on 127.0.0.1: µs per datagram to send and to receive, one system call per datagram
//!   (sendto/recvfrom) against sendmmsg/recvmmsg batches of 32 and 64, in the same run, the order rotated
//!   each repetition. Each round sends a batch, then receives it (the receive buffer never overflows).
//! - Timers at 1,000,000 keys: schedule, reschedule, cancel, pop; operations per second, bytes per timer.
//! - Histogram: ns per record.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use sipload_io::histogram::Histogram;
use sipload_io::timers::Timers;
use sipload_io::udp::{Options, RecvBatch, UdpSocket};

const DATAGRAMS: usize = 32 * 64 * 10; // per mode and repetition (divisible by 32 and 64)
const SIZE: usize = 500; // about a digest REGISTER

fn rng(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// (µs per datagram sent, µs per datagram received) with `batch` datagrams per call (0: one at a time).
fn udp_round(a: &mut UdpSocket, b: &mut UdpSocket, batch: usize) -> (f64, f64) {
    let dest = b.local_addr();
    let data = vec![b'r'; SIZE];
    let round = if batch == 0 { 64 } else { batch };
    let items: Vec<(&[u8], SocketAddr)> = (0..round).map(|_| (data.as_slice(), dest)).collect();
    let mut recv = RecvBatch::new(round, 2048);
    let mut buf = vec![0u8; 2048];
    let (mut send_ns, mut recv_ns) = (0u128, 0u128);
    let mut received = 0;
    for _ in 0..DATAGRAMS / round {
        let t = Instant::now();
        if batch == 0 {
            for _ in 0..round {
                a.send_to(&data, dest).expect("sendto");
            }
        } else {
            let r = a.send_batch(&items);
            assert_eq!(r.sent, round, "{r:?}");
        }
        send_ns += t.elapsed().as_nanos();
        let t = Instant::now();
        let mut got = 0;
        while got < round {
            if batch == 0 {
                if b.recv_from(&mut buf).expect("recvfrom").is_some() {
                    got += 1;
                }
            } else {
                got += b.recv_batch(&mut recv).expect("recvmmsg");
            }
        }
        recv_ns += t.elapsed().as_nanos();
        received += got;
    }
    assert_eq!(received, DATAGRAMS);
    let per = |ns: u128| ns as f64 / 1000.0 / DATAGRAMS as f64;
    (per(send_ns), per(recv_ns))
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn timers(n: u32) {
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let before = rss_kib();
    let mut t = Timers::new(n);
    let rate = |label: &str, ops: u64, start: Instant| {
        let s = start.elapsed().as_secs_f64();
        println!("  {label:<28} {:>6.2} M ops/s ({:.0} ns/op)", ops as f64 / s / 1e6, s * 1e9 / ops as f64);
    };
    let start = Instant::now();
    for k in 0..n {
        // deadlines in ns over 60 s, as refreshes of a million endpoints are
        t.schedule(k, rng(&mut seed) % 60_000_000_000).unwrap();
    }
    rate("schedule (new)", u64::from(n), start);
    let after = rss_kib();
    println!(
        "  {n} timers: {} bytes allocated = {:.1} bytes a timer (RSS grew {:.1} bytes a timer)",
        t.memory_bytes(),
        t.memory_bytes() as f64 / f64::from(n),
        (after.saturating_sub(before) * 1024) as f64 / f64::from(n)
    );
    let start = Instant::now();
    for k in 0..n {
        t.schedule(k, rng(&mut seed) % 60_000_000_000).unwrap();
    }
    rate("reschedule", u64::from(n), start);
    let start = Instant::now();
    for k in (0..n).step_by(2) {
        black_box(t.cancel(k));
    }
    rate("cancel (half)", u64::from(n / 2), start);
    let start = Instant::now();
    let mut out = Vec::with_capacity(n as usize);
    let mut now = 0;
    let mut popped = 0;
    while !t.is_empty() {
        now += 1_000_000; // 1 ms ticks
        out.clear();
        popped += t.drain_due(now, &mut out);
    }
    rate("pop due (1 ms ticks)", popped as u64, start);
    // steady state: pop the earliest, reschedule it 60 s later (a refresh)
    for k in 0..n {
        t.schedule(k, rng(&mut seed) % 60_000_000_000).unwrap();
    }
    let ops = 2_000_000u64;
    let start = Instant::now();
    for _ in 0..ops {
        if let Some((k, d)) = t.pop_due(u64::MAX) {
            t.schedule(k, d + 60_000_000_000).unwrap();
        }
    }
    rate("pop + schedule (steady)", ops, start);
}

fn main() {
    let reps: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut a = UdpSocket::bind(any, &Options::default()).expect("bind");
    let mut b = UdpSocket::bind(any, &Options::default()).expect("bind");
    println!(
        "UDP loopback, {SIZE}-byte datagrams, {DATAGRAMS} per mode per repetition, {reps} repetitions (buffers granted: {:?})",
        b.buffer_sizes()
    );
    let modes = [0usize, 32, 64];
    let mut figures: Vec<Vec<(f64, f64)>> = vec![Vec::new(); modes.len()];
    for rep in 0..reps {
        for i in 0..modes.len() {
            let m = (i + rep) % modes.len();
            figures[m].push(udp_round(&mut a, &mut b, modes[m]));
        }
    }
    for (m, mode) in modes.iter().enumerate() {
        let name =
            if *mode == 0 { "sendto/recvfrom one at a time".to_string() } else { format!("sendmmsg/recvmmsg x{mode}") };
        let mut send: Vec<f64> = figures[m].iter().map(|f| f.0).collect();
        let mut recv: Vec<f64> = figures[m].iter().map(|f| f.1).collect();
        send.sort_by(f64::total_cmp);
        recv.sort_by(f64::total_cmp);
        let list = |v: &[f64]| v.iter().map(|x| format!("{x:.3}")).collect::<Vec<_>>().join(" ");
        println!(
            "  {name:<32} send {:.3} µs/datagram (median; all: {})  receive {:.3} µs/datagram (all: {})",
            send[send.len() / 2],
            list(&send),
            recv[recv.len() / 2],
            list(&recv)
        );
    }
    println!("  kernel drops on the receiver: {}", b.kernel_drops());

    println!("Timers, 1,000,000 keys");
    timers(1_000_000);

    let mut h = Histogram::new();
    let mut seed = 1u64;
    let values: Vec<i64> = (0..1_000_000).map(|_| (rng(&mut seed) % 200_000) as i64).collect();
    let start = Instant::now();
    for v in &values {
        h.record(*v);
    }
    let s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let buckets = h.take();
    println!(
        "Histogram: {:.1} ns a record; export + reset of {} buckets {:.0} µs",
        s * 1e9 / values.len() as f64,
        buckets.len(),
        start.elapsed().as_secs_f64() * 1e6
    );
}
