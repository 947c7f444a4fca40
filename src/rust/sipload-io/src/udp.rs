//! A batched UDP socket for the native loop (Linux).
//!
//! - [`UdpSocket::bind`]: IPv4 or IPv6, non-blocking and close-on-exec, large buffers (SO_RCVBUF/SO_SNDBUF,
//!   then the *FORCE variants that root may use beyond `net.core.rmem_max`; [`UdpSocket::buffer_sizes`]
//!   says what the kernel granted), kernel receive timestamps (SO_TIMESTAMPNS) and the kernel's drop
//!   counter (SO_RXQ_OVFL).
//! - [`UdpSocket::recv_batch`]: one recvmmsg into caller-owned buffers ([`RecvBatch`]): per datagram its
//!   length, source, kernel receive time and whether it was truncated.
//! - [`UdpSocket::send_batch`]: sendmmsg of `(bytes, destination)` items until all went or the socket would
//!   block; [`SendReport`] says how many items were taken, so the rest stay with the caller for the next
//!   writable moment.
//! - [`UdpSocket::raw_fd`]: for a Python trio task's `wait_readable`.
//!
//! ICMP errors reported on the socket (ECONNREFUSED, EHOSTUNREACH, ENETUNREACH from an earlier send) are
//! counted, never fatal. Nothing here panics on any input: every length from the kernel is bounded before
//! use.
//!
//! Kernel timestamps are of CLOCK_REALTIME. [`RecvBatch::set_clock_offset_ns`] takes the offset that turns
//! them into the caller's clock (`caller = realtime + offset`); [`realtime_offset_ns`] measures it for a
//! libc clock (CLOCK_MONOTONIC for `time.monotonic_ns()`/`time.perf_counter_ns()` in Python). The offset
//! moves when the system clock is stepped or slewed: take it again once per interval.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

/// Datagrams per system call at most (the headers live on the stack: ~20 KiB).
pub const MAX_BATCH: usize = 128;
/// Default buffer size asked for, per direction.
pub const DEFAULT_BUFFER_BYTES: usize = 8 * 1024 * 1024;
/// Consecutive EINTRs after which a batch call gives up and returns what it has.
const MAX_INTERRUPTS: u32 = 64;

/// Control-message space per datagram: a timespec (SCM_TIMESTAMPNS) and a u32 (SO_RXQ_OVFL), each
/// CMSG_SPACE-aligned, with room to spare; u64 words keep it aligned for cmsghdr.
const CMSG_WORDS: usize = 12;

/// How a socket is set up.
#[derive(Clone, Debug)]
pub struct Options {
    /// SO_RCVBUF and SO_SNDBUF asked for (bytes); the kernel may grant less (or report double).
    pub buffer_bytes: usize,
    /// Ask for kernel receive timestamps (SO_TIMESTAMPNS).
    pub timestamps: bool,
    /// Ask for the kernel's drop counter on each datagram (SO_RXQ_OVFL).
    pub drop_counter: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self { buffer_bytes: DEFAULT_BUFFER_BYTES, timestamps: true, drop_counter: true }
    }
}

/// One received datagram's metadata; its bytes are [`RecvBatch::data`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Datagram {
    /// Bytes received into the slot (at most the slot's size).
    pub len: usize,
    /// Who sent it (an IPv4-mapped IPv6 source is given as IPv4).
    pub source: SocketAddr,
    /// Kernel receive time on the caller's clock (`realtime + offset`, ns); None without SO_TIMESTAMPNS.
    pub timestamp_ns: Option<i64>,
    /// The datagram was longer than the slot: its tail is lost.
    pub truncated: bool,
}

/// Caller-owned receive buffers: `slots` datagrams of up to `slot_len` bytes each.
#[derive(Debug)]
pub struct RecvBatch {
    data: Vec<u8>,
    slot_len: usize,
    meta: Vec<Datagram>,
    clock_offset_ns: i64,
    // what the kernel writes besides the bytes, kept here so a call does not clear them again
    addrs: Vec<RawAddr>,
    control: Vec<[u64; CMSG_WORDS]>,
}

impl RecvBatch {
    /// Room for `slots` datagrams (1..=MAX_BATCH, clamped) of `slot_len` bytes (at least 1).
    pub fn new(slots: usize, slot_len: usize) -> Self {
        let slots = slots.clamp(1, MAX_BATCH);
        let slot_len = slot_len.max(1);
        Self {
            data: vec![0; slots * slot_len],
            slot_len,
            meta: Vec::with_capacity(slots),
            clock_offset_ns: 0,
            addrs: vec![RawAddr::empty(); slots],
            control: vec![[0; CMSG_WORDS]; slots],
        }
    }

    /// Offset added to the kernel's CLOCK_REALTIME stamps (ns); see [`realtime_offset_ns`].
    pub fn set_clock_offset_ns(&mut self, offset_ns: i64) {
        self.clock_offset_ns = offset_ns;
    }

    pub fn clock_offset_ns(&self) -> i64 {
        self.clock_offset_ns
    }

    pub fn slots(&self) -> usize {
        self.data.len() / self.slot_len
    }

    pub fn slot_len(&self) -> usize {
        self.slot_len
    }

    /// Datagrams held from the last [`UdpSocket::recv_batch`].
    pub fn len(&self) -> usize {
        self.meta.len()
    }

    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    pub fn datagram(&self, i: usize) -> Option<&Datagram> {
        self.meta.get(i)
    }

    /// The bytes of datagram `i` (empty when there is no such datagram).
    pub fn data(&self, i: usize) -> &[u8] {
        match self.meta.get(i) {
            Some(d) => {
                let start = i * self.slot_len;
                self.data.get(start..start + d.len.min(self.slot_len)).unwrap_or(&[])
            }
            None => &[],
        }
    }

    /// `(metadata, bytes)` of every datagram held.
    pub fn iter(&self) -> impl Iterator<Item = (&Datagram, &[u8])> + '_ {
        (0..self.meta.len()).filter_map(move |i| self.meta.get(i).map(|d| (d, self.data(i))))
    }
}

/// Something to send: bytes and a destination.
pub trait Outgoing {
    fn bytes(&self) -> &[u8];
    fn destination(&self) -> SocketAddr;
}

impl<B: AsRef<[u8]>> Outgoing for (B, SocketAddr) {
    fn bytes(&self) -> &[u8] {
        self.0.as_ref()
    }

    fn destination(&self) -> SocketAddr {
        self.1
    }
}

/// What [`UdpSocket::send_batch`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendReport {
    /// Items taken from the front of the slice: sent or failed. The caller keeps the rest.
    pub consumed: usize,
    /// Items the kernel accepted.
    pub sent: usize,
    /// Items refused for a reason of their own (bad destination, too long, no route, ICMP error): dropped.
    pub failed: usize,
    /// The errno of the last failure.
    pub last_errno: Option<i32>,
    /// The socket's send buffer was full (EAGAIN/ENOBUFS): wait until it is writable, then send the rest.
    pub would_block: bool,
}

/// Buffer sizes as the kernel reports them (Linux reports twice what it accounts as payload room).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferSizes {
    pub recv: usize,
    pub send: usize,
}

/// A socket address as the kernel takes and gives it.
#[repr(C)]
#[derive(Clone, Copy)]
union RawAddr {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

impl std::fmt::Debug for RawAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawAddr")
    }
}

impl RawAddr {
    fn empty() -> Self {
        RawAddr {
            v6: libc::sockaddr_in6 {
                sin6_family: 0,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr { s6_addr: [0; 16] },
                sin6_scope_id: 0,
            },
        }
    }

    /// `addr` for a socket of the family `v6` (IPv4 destinations become IPv4-mapped on an IPv6 socket).
    fn new(addr: SocketAddr, v6: bool) -> (Self, libc::socklen_t) {
        let v6_addr = |a: &SocketAddrV6| libc::sockaddr_in6 {
            sin6_family: libc::AF_INET6 as libc::sa_family_t,
            sin6_port: a.port().to_be(),
            sin6_flowinfo: a.flowinfo(),
            sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
            sin6_scope_id: a.scope_id(),
        };
        match addr {
            SocketAddr::V4(a) if v6 => {
                let mapped = SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0);
                (RawAddr { v6: v6_addr(&mapped) }, mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t)
            }
            SocketAddr::V4(a) => (
                RawAddr {
                    v4: libc::sockaddr_in {
                        sin_family: libc::AF_INET as libc::sa_family_t,
                        sin_port: a.port().to_be(),
                        sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
                        sin_zero: [0; 8],
                    },
                },
                mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ),
            SocketAddr::V6(a) => (RawAddr { v6: v6_addr(&a) }, mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t),
        }
    }

    /// The address the kernel wrote (`len` bytes of it), None for another family or a short one.
    fn get(&self, len: libc::socklen_t) -> Option<SocketAddr> {
        // SAFETY: both union members start with the family field at the same offset, and every bit pattern
        // is a valid u16; the union was fully initialized by `empty` before the kernel wrote into it.
        let family = unsafe { self.v4.sin_family } as libc::c_int;
        let len = len as usize;
        if family == libc::AF_INET && len >= mem::size_of::<libc::sockaddr_in>() {
            // SAFETY: the kernel wrote a sockaddr_in (family AF_INET, length checked); plain integers.
            let a = unsafe { self.v4 };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        } else if family == libc::AF_INET6 && len >= mem::size_of::<libc::sockaddr_in6>() {
            // SAFETY: the kernel wrote a sockaddr_in6 (family AF_INET6, length checked); plain integers.
            let a = unsafe { self.v6 };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            let port = u16::from_be(a.sin6_port);
            Some(match ip.to_ipv4_mapped() {
                Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
                None => SocketAddr::V6(SocketAddrV6::new(ip, port, a.sin6_flowinfo, a.sin6_scope_id)),
            })
        } else {
            None
        }
    }
}

/// A timespec in ns (saturating); the casts are no-ops where time_t is 64 bits.
#[allow(clippy::unnecessary_cast)]
fn timespec_ns(ts: &libc::timespec) -> i64 {
    (ts.tv_sec as i64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as i64)
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn is_icmp_error(e: i32) -> bool {
    matches!(e, libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EHOSTDOWN | libc::ENETDOWN)
}

/// The clock of the native loop: Python's `time.monotonic()` on Linux.
pub const CLOCK_MONOTONIC: libc::clockid_t = libc::CLOCK_MONOTONIC;

/// A reading of the libc clock `clock` in ns (CLOCK_MONOTONIC is Python's `time.monotonic_ns()` and
/// `time.perf_counter_ns()` on Linux; trio's clock is perf_counter plus an offset of its own).
pub fn clock_ns(clock: libc::clockid_t) -> io::Result<i64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed `ts`.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(timespec_ns(&ts))
}

/// The offset (ns) that turns CLOCK_REALTIME readings into readings of `clock`
/// (`clock = realtime + offset`): the tightest of a few bracketed readings.
pub fn realtime_offset_ns(clock: libc::clockid_t) -> io::Result<i64> {
    let mut best: Option<(i64, i64)> = None; // (bracket width, offset)
    for _ in 0..5 {
        let a = clock_ns(clock)?;
        let r = clock_ns(libc::CLOCK_REALTIME)?;
        let b = clock_ns(clock)?;
        let width = b.saturating_sub(a);
        let offset = (a / 2 + b / 2).saturating_sub(r);
        if best.is_none_or(|(w, _)| width < w) {
            best = Some((width, offset));
        }
    }
    Ok(best.map_or(0, |(_, offset)| offset))
}

/// A bound, non-blocking UDP socket with batched receive and send.
#[derive(Debug)]
pub struct UdpSocket {
    fd: OwnedFd,
    local: SocketAddr,
    v6: bool,
    timestamps: bool,
    drop_counter: bool,
    buffers: BufferSizes,
    kernel_drops: u64,
    icmp_errors: u64,
}

impl AsRawFd for UdpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for UdpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl UdpSocket {
    /// A socket bound to `addr` (port 0: the kernel picks), set up as `options` asks where the kernel
    /// lets it (timestamps and the drop counter are off where it does not: see [`Self::timestamps`]).
    pub fn bind(addr: SocketAddr, options: &Options) -> io::Result<Self> {
        let v6 = addr.is_ipv6();
        let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
        // SAFETY: socket() takes plain integers and returns a new fd or -1.
        let raw = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut socket = UdpSocket {
            fd,
            local: addr,
            v6,
            timestamps: false,
            drop_counter: false,
            buffers: BufferSizes { recv: 0, send: 0 },
            kernel_drops: 0,
            icmp_errors: 0,
        };
        let want = options.buffer_bytes.min(i32::MAX as usize / 2) as libc::c_int;
        for (opt, force) in [(libc::SO_RCVBUF, libc::SO_RCVBUFFORCE), (libc::SO_SNDBUF, libc::SO_SNDBUFFORCE)] {
            // a refusal leaves the default: not an error
            let _ = socket.set_int(libc::SOL_SOCKET, opt, want);
            if socket.get_int(libc::SOL_SOCKET, opt).unwrap_or(0) < want {
                let _ = socket.set_int(libc::SOL_SOCKET, force, want); // root only, beyond rmem_max/wmem_max
            }
        }
        socket.buffers = BufferSizes {
            recv: socket.get_int(libc::SOL_SOCKET, libc::SO_RCVBUF)?.max(0) as usize,
            send: socket.get_int(libc::SOL_SOCKET, libc::SO_SNDBUF)?.max(0) as usize,
        };
        socket.timestamps = options.timestamps && socket.set_int(libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1).is_ok();
        socket.drop_counter = options.drop_counter && socket.set_int(libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1).is_ok();
        let (raw_addr, len) = RawAddr::new(addr, v6);
        // SAFETY: bind reads `len` bytes of the initialized address, which is at least that long.
        if unsafe { libc::bind(socket.fd.as_raw_fd(), ptr::from_ref(&raw_addr).cast(), len) } != 0 {
            return Err(io::Error::last_os_error());
        }
        socket.local = socket.query_local_addr()?;
        Ok(socket)
    }

    fn set_int(&self, level: libc::c_int, opt: libc::c_int, value: libc::c_int) -> io::Result<()> {
        // SAFETY: setsockopt reads one c_int from the valid `value`, with its size given.
        let r = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                opt,
                ptr::from_ref(&value).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn get_int(&self, level: libc::c_int, opt: libc::c_int) -> io::Result<libc::c_int> {
        let mut value: libc::c_int = 0;
        let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into the valid `value` and updates `len`.
        let r =
            unsafe { libc::getsockopt(self.fd.as_raw_fd(), level, opt, ptr::from_mut(&mut value).cast(), &mut len) };
        if r == 0 {
            Ok(value)
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn query_local_addr(&self) -> io::Result<SocketAddr> {
        let mut addr = RawAddr::empty();
        let mut len = mem::size_of::<RawAddr>() as libc::socklen_t;
        // SAFETY: getsockname writes at most `len` bytes into the valid `addr` and updates `len`.
        if unsafe { libc::getsockname(self.fd.as_raw_fd(), ptr::from_mut(&mut addr).cast(), &mut len) } != 0 {
            return Err(io::Error::last_os_error());
        }
        addr.get(len).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected local address family"))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The fd, for a readiness wait (trio's `wait_readable`); the socket keeps owning it.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Buffer sizes the kernel granted (as SO_RCVBUF/SO_SNDBUF report them).
    pub fn buffer_sizes(&self) -> BufferSizes {
        self.buffers
    }

    /// Kernel receive timestamps are on.
    pub fn timestamps(&self) -> bool {
        self.timestamps
    }

    /// Datagrams the kernel dropped on this socket for a full receive buffer, as of the last datagram
    /// that carried the counter (SO_RXQ_OVFL; the kernel adds it once there was a drop).
    pub fn kernel_drops(&self) -> u64 {
        self.kernel_drops
    }

    /// ICMP errors (from earlier sends) the socket reported; counted, never fatal.
    pub fn icmp_errors(&self) -> u64 {
        self.icmp_errors
    }

    /// Wait up to `timeout_ms` (negative: forever) until the socket is readable (`events` POLLIN) or
    /// writable (POLLOUT); true when it is. For Rust drivers and tests: a trio task waits on
    /// [`Self::raw_fd`] instead.
    pub fn poll(&self, writable: bool, timeout_ms: i32) -> io::Result<bool> {
        let events = if writable { libc::POLLOUT } else { libc::POLLIN };
        let mut fds = [libc::pollfd { fd: self.fd.as_raw_fd(), events, revents: 0 }];
        loop {
            // SAFETY: poll reads and writes the one valid pollfd it is given.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), 1, timeout_ms) };
            if r >= 0 {
                return Ok(r > 0 && fds[0].revents & (events | libc::POLLERR) != 0);
            }
            let e = errno();
            if e != libc::EINTR {
                return Err(io::Error::from_raw_os_error(e));
            }
        }
    }

    /// Receive up to `batch.slots()` datagrams with one recvmmsg (retried on EINTR and after an ICMP
    /// error); 0 when none is waiting. `batch` then holds them.
    pub fn recv_batch(&mut self, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.meta.clear();
        let slots = batch.slots().min(MAX_BATCH);
        let slot_len = batch.slot_len;
        let slots = slots.min(batch.addrs.len()).min(batch.control.len());
        let mut iovecs = [libc::iovec { iov_base: ptr::null_mut(), iov_len: 0 }; MAX_BATCH];
        // SAFETY: mmsghdr is integers and raw pointers, for which all-zero (null) is valid.
        let mut headers: [libc::mmsghdr; MAX_BATCH] = unsafe { mem::zeroed() };
        let base = batch.data.as_mut_ptr();
        let (addrs, control) = (&mut batch.addrs, &mut batch.control);
        for i in 0..slots {
            // in bounds: data holds slots * slot_len bytes
            iovecs[i] = libc::iovec { iov_base: base.wrapping_add(i * slot_len).cast(), iov_len: slot_len };
            let h = &mut headers[i].msg_hdr;
            h.msg_name = ptr::from_mut(&mut addrs[i]).cast();
            h.msg_namelen = mem::size_of::<RawAddr>() as libc::socklen_t;
            h.msg_iov = ptr::from_mut(&mut iovecs[i]);
            h.msg_iovlen = 1;
            h.msg_control = control[i].as_mut_ptr().cast();
            h.msg_controllen = mem::size_of::<[u64; CMSG_WORDS]>() as _;
        }
        let mut interrupts = 0;
        let n = loop {
            // SAFETY: the first `slots` headers point at live buffers of the sizes they give (the batch's
            // slots, `addrs`, `control`), all outliving the call; a null timeout means none.
            let r = unsafe {
                libc::recvmmsg(self.fd.as_raw_fd(), headers.as_mut_ptr(), slots as libc::c_uint, 0, ptr::null_mut())
            };
            if r >= 0 {
                break (r as usize).min(slots);
            }
            let e = errno();
            if e == libc::EAGAIN || e == libc::EWOULDBLOCK {
                return Ok(0);
            }
            if e == libc::EINTR || is_icmp_error(e) {
                if is_icmp_error(e) {
                    self.icmp_errors += 1;
                }
                interrupts += 1;
                if interrupts < MAX_INTERRUPTS {
                    continue;
                }
                return Ok(0);
            }
            return Err(io::Error::from_raw_os_error(e));
        };
        for i in 0..n {
            let h = &headers[i];
            let len = (h.msg_len as usize).min(slot_len);
            let source = addrs[i]
                .get(h.msg_hdr.msg_namelen)
                .unwrap_or(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)));
            let (realtime, drops) = read_control(&h.msg_hdr);
            if let Some(d) = drops {
                self.kernel_drops = self.kernel_drops.max(u64::from(d));
            }
            batch.meta.push(Datagram {
                len,
                source,
                timestamp_ns: realtime.map(|t| t.saturating_add(batch.clock_offset_ns)),
                truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            });
        }
        Ok(n)
    }

    /// Send `items` in order with sendmmsg, MAX_BATCH a call, until all are taken or the send buffer is
    /// full. An item the kernel refuses for a reason of its own is dropped and counted; EINTR is retried.
    pub fn send_batch<T: Outgoing>(&mut self, items: &[T]) -> SendReport {
        let mut report = SendReport::default();
        let mut interrupts = 0;
        while report.consumed < items.len() {
            let chunk = &items[report.consumed..items.len().min(report.consumed + MAX_BATCH)];
            let mut addrs = [RawAddr::empty(); MAX_BATCH];
            let mut iovecs = [libc::iovec { iov_base: ptr::null_mut(), iov_len: 0 }; MAX_BATCH];
            // SAFETY: mmsghdr is integers and raw pointers, for which all-zero (null) is valid.
            let mut headers: [libc::mmsghdr; MAX_BATCH] = unsafe { mem::zeroed() };
            for (i, item) in chunk.iter().enumerate() {
                let (addr, len) = RawAddr::new(item.destination(), self.v6);
                addrs[i] = addr;
                let bytes = item.bytes();
                // the kernel only reads through iov_base (sendmmsg's iovecs are const in effect)
                iovecs[i] = libc::iovec { iov_base: bytes.as_ptr().cast_mut().cast(), iov_len: bytes.len() };
                let h = &mut headers[i].msg_hdr;
                h.msg_name = ptr::from_mut(&mut addrs[i]).cast();
                h.msg_namelen = len;
                h.msg_iov = ptr::from_mut(&mut iovecs[i]);
                h.msg_iovlen = 1;
            }
            // SAFETY: the first `chunk.len()` headers point at live addresses and at the items' bytes, all
            // outliving the call; sendmmsg reads them and writes only msg_len.
            let r =
                unsafe { libc::sendmmsg(self.fd.as_raw_fd(), headers.as_mut_ptr(), chunk.len() as libc::c_uint, 0) };
            if r > 0 {
                let sent = (r as usize).min(chunk.len());
                report.sent += sent;
                report.consumed += sent;
                interrupts = 0;
                continue;
            }
            let e = if r == 0 { libc::EAGAIN } else { errno() };
            match e {
                libc::EAGAIN | libc::ENOBUFS => {
                    report.would_block = true;
                    break;
                }
                libc::EINTR => {
                    interrupts += 1;
                    if interrupts >= MAX_INTERRUPTS {
                        break;
                    }
                }
                _ => {
                    // this first item of the chunk is refused (or an ICMP error from an earlier one was
                    // reported on it): drop it, go on with the next
                    if is_icmp_error(e) {
                        self.icmp_errors += 1;
                    }
                    report.failed += 1;
                    report.consumed += 1;
                    report.last_errno = Some(e);
                }
            }
        }
        report
    }

    /// One datagram with sendto (the unbatched path, for comparison and the odd single send).
    pub fn send_to(&mut self, bytes: &[u8], dest: SocketAddr) -> io::Result<usize> {
        let (addr, len) = RawAddr::new(dest, self.v6);
        loop {
            // SAFETY: sendto reads `bytes` and `len` bytes of the initialized address, both live.
            let r = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    bytes.as_ptr().cast(),
                    bytes.len(),
                    0,
                    ptr::from_ref(&addr).cast(),
                    len,
                )
            };
            if r >= 0 {
                return Ok(r as usize);
            }
            let e = errno();
            if e != libc::EINTR {
                if is_icmp_error(e) {
                    self.icmp_errors += 1;
                }
                return Err(io::Error::from_raw_os_error(e));
            }
        }
    }

    /// One datagram with recvfrom into `buf` (the unbatched path): `(length, source)`, None when none is
    /// waiting. No timestamp on this path.
    pub fn recv_from(&mut self, buf: &mut [u8]) -> io::Result<Option<(usize, SocketAddr)>> {
        let mut addr = RawAddr::empty();
        let mut interrupts = 0;
        loop {
            let mut len = mem::size_of::<RawAddr>() as libc::socklen_t;
            // SAFETY: recvfrom writes at most `buf.len()` bytes into `buf` and at most `len` into `addr`.
            let r = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    ptr::from_mut(&mut addr).cast(),
                    &mut len,
                )
            };
            if r >= 0 {
                let source = addr.get(len).unwrap_or(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)));
                return Ok(Some(((r as usize).min(buf.len()), source)));
            }
            let e = errno();
            if e == libc::EAGAIN || e == libc::EWOULDBLOCK {
                return Ok(None);
            }
            if e == libc::EINTR || is_icmp_error(e) {
                if is_icmp_error(e) {
                    self.icmp_errors += 1;
                }
                interrupts += 1;
                if interrupts < MAX_INTERRUPTS {
                    continue;
                }
                return Ok(None);
            }
            return Err(io::Error::from_raw_os_error(e));
        }
    }
}

/// The kernel receive time (CLOCK_REALTIME ns) and the drop counter from one message's control data.
fn read_control(h: &libc::msghdr) -> (Option<i64>, Option<u32>) {
    let (mut realtime, mut drops) = (None, None);
    // SAFETY: `h` is the header recvmmsg filled: msg_control points at our buffer and msg_controllen
    // is what the kernel wrote into it (at most its size), which is what CMSG_FIRSTHDR checks against.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(h) };
    while !cmsg.is_null() {
        // SAFETY: CMSG_FIRSTHDR/CMSG_NXTHDR return null or a header inside the control buffer.
        let c = unsafe { ptr::read_unaligned(cmsg) };
        // SAFETY: the data follows its header inside the same buffer.
        let data = unsafe { libc::CMSG_DATA(cmsg) };
        let header = data as usize - cmsg as usize;
        let payload = (c.cmsg_len as usize).saturating_sub(header);
        if c.cmsg_level == libc::SOL_SOCKET {
            if c.cmsg_type == libc::SCM_TIMESTAMPNS && payload >= mem::size_of::<libc::timespec>() {
                // SAFETY: the kernel wrote a timespec there (type and length checked); unaligned read.
                let ts = unsafe { ptr::read_unaligned(data.cast::<libc::timespec>()) };
                realtime = Some(timespec_ns(&ts));
            } else if c.cmsg_type == libc::SO_RXQ_OVFL && payload >= mem::size_of::<u32>() {
                // SAFETY: the kernel wrote a u32 there (type and length checked); unaligned read.
                drops = Some(unsafe { ptr::read_unaligned(data.cast::<u32>()) });
            }
        }
        // SAFETY: `h` and `cmsg` are as above; CMSG_NXTHDR bounds the next header by msg_controllen.
        cmsg = unsafe { libc::CMSG_NXTHDR(h, cmsg) };
    }
    (realtime, drops)
}

#[cfg(test)]
mod tests;
