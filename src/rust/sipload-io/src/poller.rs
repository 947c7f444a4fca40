//! One file descriptor that is readable when any of several sockets is: an epoll set (level-triggered),
//! so that a trio task waits on one fd (`trio.lowlevel.wait_readable`) for all of a worker's sockets.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

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
}

#[cfg(test)]
mod tests {
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
}
