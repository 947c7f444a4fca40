//! A wake-up another thread can give the native loop while it waits: an eventfd in the loop's epoll
//! set, and a flag the loop reads without a system call between waits.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug)]
pub struct Wakeup {
    fd: OwnedFd,
    pending: AtomicBool,
}

impl Wakeup {
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes a count and flags and returns a new fd or -1.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new fd that nothing else owns.
        Ok(Wakeup { fd: unsafe { OwnedFd::from_raw_fd(raw) }, pending: AtomicBool::new(false) })
    }

    /// The fd to watch (readable once woken, until [`Wakeup::take`]).
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Wake the waiter (from any thread; several wakes before a take count as one).
    pub fn wake(&self) {
        self.pending.store(true, Ordering::Release);
        let one: u64 = 1;
        // SAFETY: writes the 8 bytes of `one`, a valid u64, to our own eventfd; a full counter (EAGAIN)
        // still leaves it readable, which is all a wake needs.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Whether a wake came since the last take; clears it (and the fd's readiness).
    pub fn take(&self) -> bool {
        if !self.pending.swap(false, Ordering::AcqRel) {
            return false;
        }
        let mut count: u64 = 0;
        // SAFETY: reads 8 bytes into the valid, exclusively borrowed `count`; nonblocking, so an
        // already drained counter answers EAGAIN at once.
        unsafe { libc::read(self.fd.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::Wakeup;
    use crate::Poller;

    #[test]
    fn a_wake_from_another_thread_ends_a_wait_once() {
        let wakeup = Arc::new(Wakeup::new().expect("eventfd"));
        let poller = Poller::new().expect("epoll");
        poller.add(wakeup.raw_fd()).expect("add");
        assert!(!wakeup.take());
        let other = wakeup.clone();
        std::thread::spawn(move || {
            other.wake();
            other.wake();
        })
        .join()
        .expect("thread");
        assert!(poller.wait(Duration::from_secs(5)).expect("wait"));
        assert!(wakeup.take());
        assert!(!wakeup.take());
        assert!(!poller.wait(Duration::from_millis(1)).expect("wait"), "the fd is drained by the take");
    }
}
