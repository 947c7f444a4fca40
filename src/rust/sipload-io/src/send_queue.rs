//! Datagrams waiting to go out: what [`UdpSocket::send_batch`] did not take stays here, in order, for
//! the next writable moment; the buffers of those that went are kept for reuse (no allocation per
//! message once warm).
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::udp::{SendReport, UdpSocket};

/// Spare buffers kept at most.
const SPARE_LIMIT: usize = 1024;

#[derive(Debug)]
pub struct SendQueue {
    items: VecDeque<(Vec<u8>, SocketAddr)>,
    spare: Vec<Vec<u8>>,
    limit: usize,
}

impl SendQueue {
    /// A queue holding at most `limit` datagrams (at least 1).
    pub fn new(limit: usize) -> Self {
        Self { items: VecDeque::new(), spare: Vec::new(), limit: limit.max(1) }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// An empty buffer to build a message in (a reused one when there is one).
    pub fn buffer(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }

    /// Queue `bytes` for `dest`; false (and the buffer kept for reuse) when the queue is full.
    pub fn push(&mut self, bytes: Vec<u8>, dest: SocketAddr) -> bool {
        if self.items.len() >= self.limit {
            self.recycle(bytes);
            return false;
        }
        self.items.push_back((bytes, dest));
        true
    }

    /// Send from the front until the queue is empty or the socket would block; the report's counts
    /// are over this call.
    pub fn flush(&mut self, socket: &mut UdpSocket) -> SendReport {
        let mut total = SendReport::default();
        loop {
            let (front, _) = self.items.as_slices();
            if front.is_empty() {
                break;
            }
            let r = socket.send_batch(front);
            total.consumed += r.consumed;
            total.sent += r.sent;
            total.failed += r.failed;
            total.last_errno = r.last_errno.or(total.last_errno);
            for (bytes, _) in self.items.drain(..r.consumed) {
                if self.spare.len() < SPARE_LIMIT {
                    let mut bytes = bytes;
                    bytes.clear();
                    self.spare.push(bytes);
                }
            }
            if r.would_block || r.consumed == 0 {
                total.would_block = r.would_block;
                break;
            }
        }
        total
    }

    fn recycle(&mut self, mut bytes: Vec<u8>) {
        if self.spare.len() < SPARE_LIMIT {
            bytes.clear();
            self.spare.push(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::udp::{Options, RecvBatch};

    fn bind() -> UdpSocket {
        UdpSocket::bind("127.0.0.1:0".parse().unwrap(), &Options::default()).unwrap()
    }

    #[test]
    fn flush_sends_in_order_across_the_ring_wrap_and_reuses_buffers() {
        let mut a = bind();
        let mut b = bind();
        let dest = b.local_addr();
        let mut q = SendQueue::new(8);
        let mut expected = Vec::new();
        let mut batch = RecvBatch::new(16, 64);
        for round in 0..5 {
            for i in 0..(3 + round) {
                let mut buf = q.buffer();
                buf.extend_from_slice(format!("{round}-{i}").as_bytes());
                expected.push(buf.clone());
                assert!(q.push(buf, dest));
            }
            let r = q.flush(&mut a);
            assert_eq!((r.sent, r.consumed, r.failed, r.would_block), (3 + round, 3 + round, 0, false));
            assert!(q.is_empty());
        }
        assert!(!q.spare.is_empty(), "buffers of sent datagrams are kept for reuse");
        let mut got = Vec::new();
        while got.len() < expected.len() && b.poll(false, 2000).unwrap() {
            b.recv_batch(&mut batch).unwrap();
            got.extend(batch.iter().map(|(_, bytes)| bytes.to_vec()));
        }
        assert_eq!(got, expected);
    }

    #[test]
    fn a_full_queue_refuses() {
        let mut q = SendQueue::new(2);
        let dest = "127.0.0.1:9".parse().unwrap();
        assert!(q.push(b"a".to_vec(), dest));
        assert!(q.push(b"b".to_vec(), dest));
        assert!(!q.push(b"c".to_vec(), dest));
        assert_eq!(q.len(), 2);
        assert_eq!(q.buffer(), Vec::<u8>::new());
    }

    #[test]
    fn refused_items_leave_the_queue() {
        let mut a = bind();
        let mut q = SendQueue::new(4);
        q.push(b"x".to_vec(), "[::1]:9".parse().unwrap()); // IPv6 from an IPv4 socket: refused
        let r = q.flush(&mut a);
        assert_eq!((r.consumed, r.failed), (1, 1));
        assert!(q.is_empty());
    }
}
