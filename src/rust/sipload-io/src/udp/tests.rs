use super::*;

const WAIT_MS: i32 = 2000; // bound on any one wait: loopback delivers in microseconds

fn v4() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn v6() -> SocketAddr {
    "[::1]:0".parse().unwrap()
}

fn bind(addr: SocketAddr) -> UdpSocket {
    UdpSocket::bind(addr, &Options::default()).unwrap()
}

fn payload(i: usize) -> Vec<u8> {
    format!("REGISTER sip:{i}@example.test SIP/2.0\r\n\r\n").into_bytes()
}

/// Receive until `want` datagrams came or a wait times out; (bytes, metadata) in arrival order.
fn receive(sock: &mut UdpSocket, batch: &mut RecvBatch, want: usize) -> Vec<(Vec<u8>, Datagram)> {
    let mut got = Vec::new();
    while got.len() < want {
        if sock.recv_batch(batch).unwrap() == 0 {
            if !sock.poll(false, WAIT_MS).unwrap() {
                break;
            }
            continue;
        }
        got.extend(batch.iter().map(|(d, bytes)| (bytes.to_vec(), *d)));
    }
    got
}

fn now_ns(clock: libc::clockid_t) -> i64 {
    clock_ns(clock).unwrap()
}

fn round_trip_64(addr: SocketAddr) {
    let mut a = bind(addr);
    let mut b = bind(addr);
    assert!(a.timestamps() && b.timestamps());
    let dest = b.local_addr();
    let items: Vec<(Vec<u8>, SocketAddr)> = (0..64).map(|i| (payload(i), dest)).collect();
    let before = now_ns(libc::CLOCK_MONOTONIC);
    let report = a.send_batch(&items);
    assert_eq!(report, SendReport { consumed: 64, sent: 64, ..SendReport::default() });
    let mut batch = RecvBatch::new(64, 2048);
    batch.set_clock_offset_ns(realtime_offset_ns(libc::CLOCK_MONOTONIC).unwrap());
    let got = receive(&mut b, &mut batch, 64);
    let after = now_ns(libc::CLOCK_MONOTONIC);
    assert_eq!(got.len(), 64);
    let mut previous = i64::MIN;
    for (i, (bytes, d)) in got.iter().enumerate() {
        assert_eq!(*bytes, payload(i), "datagram {i} in order and intact");
        assert_eq!(d.len, payload(i).len());
        assert_eq!(d.source, a.local_addr());
        assert!(!d.truncated);
        let t = d.timestamp_ns.expect("a kernel timestamp on every datagram");
        // on the monotonic clock, between the send and the end of the receive (1 ms of slack for the
        // offset's own error and clock slew)
        assert!(t >= before - 1_000_000 && t <= after + 1_000_000, "{before} <= {t} <= {after}");
        assert!(t >= previous, "timestamps do not go back: {previous} then {t}");
        previous = t;
    }
    assert_eq!(b.kernel_drops(), 0);
}

#[test]
fn ipv4_batches_of_64_out_and_in_with_timestamps() {
    round_trip_64(v4());
}

#[test]
fn ipv6_batches_of_64_out_and_in_with_timestamps() {
    round_trip_64(v6());
}

#[test]
fn ipv4_sender_to_dual_stack_socket_is_seen_as_ipv4() {
    let mut a = bind(v4());
    let mut b = bind("[::]:0".parse().unwrap());
    let dest = SocketAddr::new("127.0.0.1".parse().unwrap(), b.local_addr().port());
    assert_eq!(a.send_batch(&[(b"x".as_slice(), dest)]).sent, 1);
    let mut batch = RecvBatch::new(4, 64);
    let got = receive(&mut b, &mut batch, 1);
    assert_eq!(got[0].1.source, a.local_addr());
    // and back: an IPv4 destination from the IPv6 socket goes out IPv4-mapped
    let r = b.send_batch(&[(b"y".as_slice(), a.local_addr())]);
    assert_eq!(r.sent, 1, "{r:?}");
    let got = receive(&mut a, &mut batch, 1);
    assert_eq!(got[0].0, b"y");
}

#[test]
fn nothing_waiting_is_zero_not_an_error() {
    let mut a = bind(v4());
    let mut batch = RecvBatch::new(8, 64);
    assert_eq!(a.recv_batch(&mut batch).unwrap(), 0);
    assert!(batch.is_empty());
    assert!(!a.poll(false, 0).unwrap());
    assert!(a.poll(true, 0).unwrap());
    let mut buf = [0u8; 16];
    assert_eq!(a.recv_from(&mut buf).unwrap(), None);
}

#[test]
fn a_datagram_longer_than_its_slot_is_truncated_and_flagged() {
    let mut a = bind(v4());
    let mut b = bind(v4());
    let long = vec![b'z'; 100];
    let items = [(long.as_slice(), b.local_addr()), (b"short".as_slice(), b.local_addr())];
    assert_eq!(a.send_batch(&items).sent, 2);
    let mut batch = RecvBatch::new(4, 10);
    let got = receive(&mut b, &mut batch, 2);
    assert_eq!(got[0].0, vec![b'z'; 10]);
    assert!(got[0].1.truncated);
    assert_eq!(got[0].1.len, 10);
    assert_eq!(got[1].0, b"short");
    assert!(!got[1].1.truncated);
}

#[test]
fn items_the_kernel_refuses_are_dropped_and_counted_the_rest_go() {
    let mut a = bind(v4());
    let mut b = bind(v4());
    let dest = b.local_addr();
    let v6_dest: SocketAddr = "[::1]:5060".parse().unwrap(); // no IPv6 on an IPv4 socket
    let too_long = vec![0u8; 70_000]; // over UDP's 65,507-byte limit
    let items = [
        (b"one".as_slice(), dest),
        (b"bad".as_slice(), v6_dest),
        (too_long.as_slice(), dest),
        (b"two".as_slice(), dest),
    ];
    let r = a.send_batch(&items);
    assert_eq!((r.consumed, r.sent, r.failed, r.would_block), (4, 2, 2, false), "{r:?}");
    assert_eq!(r.last_errno, Some(libc::EMSGSIZE));
    let mut batch = RecvBatch::new(8, 64);
    let got: Vec<Vec<u8>> = receive(&mut b, &mut batch, 2).into_iter().map(|(bytes, _)| bytes).collect();
    assert_eq!(got, vec![b"one".to_vec(), b"two".to_vec()]);
    assert!(a.send_to(b"x", v6_dest).is_err());
}

#[test]
fn a_closed_port_is_never_fatal() {
    let mut a = bind(v4());
    let closed = bind(v4()).local_addr(); // bound, then closed: nobody listens there now
    let items: Vec<(&[u8], SocketAddr)> = (0..10).map(|_| (b"x".as_slice(), closed)).collect();
    for _ in 0..3 {
        let r = a.send_batch(&items);
        assert_eq!(r.consumed, 10, "{r:?}");
        let mut batch = RecvBatch::new(8, 64);
        assert_eq!(a.recv_batch(&mut batch).unwrap(), 0);
    }
}

#[test]
fn a_full_receive_buffer_drops_and_the_counter_says_how_many() {
    let mut a = bind(v4());
    let small = Options { buffer_bytes: 4096, ..Options::default() };
    let mut b = UdpSocket::bind(v4(), &small).unwrap();
    let dest = b.local_addr();
    let data = vec![b'd'; 1000];
    let items: Vec<(&[u8], SocketAddr)> = (0..300).map(|_| (data.as_slice(), dest)).collect();
    let mut sent = 0;
    for _ in 0..100 {
        let r = a.send_batch(&items[sent..]);
        sent += r.consumed;
        if sent == items.len() {
            break;
        }
        assert!(a.poll(true, WAIT_MS).unwrap());
    }
    assert_eq!(sent, 300);
    let mut batch = RecvBatch::new(64, 2048);
    let mut received = 0;
    while b.recv_batch(&mut batch).unwrap() > 0 {
        received += batch.len();
    }
    assert!(received < 300, "a 4 KiB buffer cannot hold 300 KB");
    // the counter rides on datagrams read after a drop: one more, read after the overflow
    assert_eq!(a.send_batch(&items[..1]).sent, 1);
    received += receive(&mut b, &mut batch, 1).len();
    assert!(b.kernel_drops() > 0);
    assert_eq!(received as u64 + b.kernel_drops(), 301, "every datagram received or counted as dropped");
}

/// Run `f` on a thread of its own in a new network namespace whose loopback sends through a slow token
/// bucket (tc tbf): sent datagrams wait in the queue, still charged to their socket, so a small send
/// buffer fills (on a plain loopback the kernel frees a datagram the moment it is sent, and a send never
/// blocks). Needs root and tc: without them the test says why and passes, except under CI=true.
fn in_slow_loopback_namespace(f: impl FnOnce() + Send + 'static) {
    let run = std::thread::spawn(move || {
        // SAFETY: unshare takes a flag and changes only this thread's network namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!("no network namespace: {}", io::Error::last_os_error()));
        }
        for args in [
            &["ip", "link", "set", "lo", "up"][..],
            &["tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", "20mbit", "burst", "1600", "latency", "10s"],
        ] {
            let status = std::process::Command::new(args[0]).args(&args[1..]).status();
            if !status.as_ref().is_ok_and(|s| s.success()) {
                return Err(format!("{}: {status:?}", args.join(" ")));
            }
        }
        f();
        Ok(())
    });
    match run.join() {
        Ok(Ok(())) => {}
        Ok(Err(why)) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipped: {why}");
        }
        Ok(Err(why)) => panic!("{why}"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

#[test]
fn a_full_send_buffer_returns_would_block_and_the_rest_goes_later() {
    in_slow_loopback_namespace(|| {
        let small = Options { buffer_bytes: 4096, ..Options::default() };
        let mut a = UdpSocket::bind(v4(), &small).unwrap();
        let mut b = bind(v4());
        let dest = b.local_addr();
        let items: Vec<(Vec<u8>, SocketAddr)> =
            (0..200).map(|i| ([payload(i), vec![b'.'; 1000]].concat(), dest)).collect();
        let first = a.send_batch(&items);
        assert!(first.would_block, "{first:?}");
        assert_eq!((first.failed, first.consumed), (0, first.sent), "{first:?}");
        assert!(first.sent > 0 && first.sent < items.len(), "{first:?}");
        let mut sent = first.consumed;
        let mut blocked = 1;
        for _ in 0..10_000 {
            if sent == items.len() {
                break;
            }
            assert!(a.poll(true, 5000).unwrap(), "writable again as the queue drains");
            let r = a.send_batch(&items[sent..]);
            assert_eq!((r.failed, r.consumed), (0, r.sent), "{r:?}");
            sent += r.consumed;
            blocked += usize::from(r.would_block);
        }
        assert_eq!(sent, items.len(), "the rest, kept by the caller, went later");
        assert!(blocked > 1);
        let mut batch = RecvBatch::new(64, 2048);
        let got = receive(&mut b, &mut batch, items.len());
        assert_eq!(got.len(), items.len(), "nothing lost, in order");
        assert!(got.iter().zip(&items).all(|((bytes, _), (want, _))| bytes == want));
    });
}

#[test]
fn buffers_are_large_and_what_was_granted_is_reported() {
    let a = bind(v4());
    let sizes = a.buffer_sizes();
    // SAFETY: geteuid takes nothing and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        // root may go beyond net.core.rmem_max (Linux reports twice the size asked for)
        assert!(sizes.recv >= DEFAULT_BUFFER_BYTES, "{sizes:?}");
        assert!(sizes.send >= DEFAULT_BUFFER_BYTES, "{sizes:?}");
    } else {
        assert!(sizes.recv > 0 && sizes.send > 0, "{sizes:?}");
    }
    let small = UdpSocket::bind(v4(), &Options { buffer_bytes: 4096, ..Options::default() }).unwrap();
    assert!(small.buffer_sizes().recv < sizes.recv);
}

#[test]
fn one_at_a_time_paths_and_the_fd() {
    let mut a = bind(v4());
    let mut b = bind(v4());
    assert_eq!(a.raw_fd(), a.as_raw_fd());
    assert_ne!(a.raw_fd(), b.raw_fd());
    assert_eq!(a.send_to(b"hello", b.local_addr()).unwrap(), 5);
    assert!(b.poll(false, WAIT_MS).unwrap());
    let mut buf = [0u8; 64];
    assert_eq!(b.recv_from(&mut buf).unwrap(), Some((5, a.local_addr())));
    assert_eq!(&buf[..5], b"hello");
}

#[test]
fn timestamps_off_when_not_asked() {
    let mut a = bind(v4());
    let mut b = UdpSocket::bind(v4(), &Options { timestamps: false, ..Options::default() }).unwrap();
    assert!(!b.timestamps());
    a.send_to(b"x", b.local_addr()).unwrap();
    let mut batch = RecvBatch::new(1, 16);
    let got = receive(&mut b, &mut batch, 1);
    assert_eq!(got[0].1.timestamp_ns, None);
}

#[test]
fn batch_bounds() {
    let b = RecvBatch::new(0, 0);
    assert_eq!((b.slots(), b.slot_len()), (1, 1));
    let b = RecvBatch::new(10_000, 1500);
    assert_eq!(b.slots(), MAX_BATCH);
    assert_eq!(b.data(0), b"");
    assert_eq!(b.datagram(5), None);
    let mut a = bind(v4());
    let empty: [(&[u8], SocketAddr); 0] = [];
    assert_eq!(a.send_batch(&empty), SendReport::default());
}

#[test]
fn more_items_than_one_call_takes() {
    let mut a = bind(v4());
    let mut b = bind(v4());
    let dest = b.local_addr();
    let items: Vec<(Vec<u8>, SocketAddr)> = (0..MAX_BATCH * 2 + 5).map(|i| (payload(i), dest)).collect();
    assert_eq!(a.send_batch(&items).sent, items.len());
    let mut batch = RecvBatch::new(MAX_BATCH, 256);
    let got = receive(&mut b, &mut batch, items.len());
    assert_eq!(got.len(), items.len());
    assert!(got.iter().enumerate().all(|(i, (bytes, _))| *bytes == payload(i)));
}

#[test]
fn realtime_offset_to_monotonic_is_stable() {
    let a = realtime_offset_ns(libc::CLOCK_MONOTONIC).unwrap();
    let b = realtime_offset_ns(libc::CLOCK_MONOTONIC).unwrap();
    assert!((a - b).abs() < 1_000_000, "{a} vs {b}");
    assert!(realtime_offset_ns(libc::CLOCK_REALTIME).unwrap().abs() < 1_000_000);
    assert!(realtime_offset_ns(-12345).is_err());
}
