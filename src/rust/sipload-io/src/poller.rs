//! One file descriptor that is readable when any of several sockets is: an epoll set (level-triggered),
//! so that one wait (a trio task's `trio.lowlevel.wait_readable`, or the native loop's [`Poller::wait`])
//! covers all of a worker's sockets; and [`pause`], the native loop's sleep between paced wake-ups.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// epoll_pwait2 (Linux 5.11) answers ENOSYS on older kernels: then waits round up to milliseconds.
static NO_PWAIT2: AtomicBool = AtomicBool::new(false);

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: libc::c_long::from(d.subsec_nanos() as i32),
    }
}

#[derive(Debug)]
pub struct Poller {
    fd: OwnedFd,
}

impl Poller {
    pub fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 takes a flag and returns a new fd or -1.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new fd that nothing else owns.
        Ok(Poller { fd: unsafe { OwnedFd::from_raw_fd(raw) } })
    }

    /// Watch `fd` for input (it must stay open while the poller lives).
    pub fn add(&self, fd: RawFd) -> io::Result<()> {
        let mut event = libc::epoll_event { events: libc::EPOLLIN as u32, u64: fd as u64 };
        // SAFETY: both fds are plain integers; `event` is a valid epoll_event the kernel only reads.
        if unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Whether a watched fd is readable, waiting at most `timeout_ms` (0: do not wait).
    pub fn ready(&self, timeout_ms: i32) -> io::Result<bool> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 1];
        // SAFETY: `events` is a valid, exclusively borrowed buffer of one epoll_event.
        let n = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), 1, timeout_ms) };
        if n < 0 {
            let err = io::Error::last_os_error();
            return if err.kind() == io::ErrorKind::Interrupted { Ok(false) } else { Err(err) };
        }
        Ok(n > 0)
    }

    /// Wait until a watched fd is readable (true) or `timeout` passed (false); a signal ends the wait
    /// early (false). Nanosecond timeouts where the kernel has epoll_pwait2.
    pub fn wait(&self, timeout: Duration) -> io::Result<bool> {
        if !NO_PWAIT2.load(Ordering::Relaxed) {
            let mut events = [libc::epoll_event { events: 0, u64: 0 }; 1];
            let ts = timespec(timeout);
            // SAFETY: `events` is a valid, exclusively borrowed buffer of one epoll_event, `ts` a valid
            // timespec the kernel only reads; a null sigmask leaves the signal mask as it is.
            let n = unsafe { libc::epoll_pwait2(self.fd.as_raw_fd(), events.as_mut_ptr(), 1, &ts, std::ptr::null()) };
            if n >= 0 {
                return Ok(n > 0);
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => return Ok(false),
                Some(libc::ENOSYS) => NO_PWAIT2.store(true, Ordering::Relaxed),
                _ => return Err(err),
            }
        }
        let ms = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
        self.ready(ms)
    }
}

/// Sleep for `d` (CLOCK_MONOTONIC); a signal ends it early.
pub fn pause(d: Duration) {
    let ts = timespec(d);
    // SAFETY: `ts` is a valid timespec the kernel only reads; a null remainder pointer is allowed.
    unsafe { libc::clock_nanosleep(libc::CLOCK_MONOTONIC, 0, &ts, std::ptr::null_mut()) };
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Poller;
    use crate::udp::{Options, UdpSocket};

    #[test]
    fn readable_when_any_watched_socket_is() {
        let options = Options::default();
        let mut a = UdpSocket::bind("127.0.0.1:0".parse().expect("address"), &options).expect("bind");
        let b = UdpSocket::bind("127.0.0.1:0".parse().expect("address"), &options).expect("bind");
        let poller = Poller::new().expect("epoll");
        poller.add(a.raw_fd()).expect("add a");
        poller.add(b.raw_fd()).expect("add b");
        assert!(!poller.ready(0).expect("wait"));
        a.send_to(b"x", b.local_addr()).expect("send");
        assert!(poller.ready(1000).expect("wait"));
    }

    #[test]
    fn waits_below_a_millisecond_and_wakes_for_input() {
        let options = Options::default();
        let mut a = UdpSocket::bind("127.0.0.1:0".parse().expect("address"), &options).expect("bind");
        let b = UdpSocket::bind("127.0.0.1:0".parse().expect("address"), &options).expect("bind");
        let poller = Poller::new().expect("epoll");
        poller.add(b.raw_fd()).expect("add");
        assert!(!poller.wait(Duration::from_micros(200)).expect("wait"));
        a.send_to(b"x", b.local_addr()).expect("send");
        assert!(poller.wait(Duration::from_secs(5)).expect("wait"));
    }
}
