"""What one wake-up costs: send a datagram to ourselves, wait until it is readable, read it (and the
EAGAIN that ends a drain), in a tight loop: through trio's wait_readable, through a raw select.epoll,
and without waiting at all (the syscalls alone).

    python bench/experiments/trio_wake.py [--number 50000] [--repeat 3]

Prints CPU µs per cycle (process time). The difference between the first two is what trio adds to each
wake of a reader task; DESIGN.md's "every await on a trio socket costs ~7-8 µs".
"""

from __future__ import annotations

import argparse
import select
import socket
import time

import trio


def _socket() -> tuple[socket.socket, tuple[str, int]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock, sock.getsockname()


def _drain(sock: socket.socket) -> None:
    sock.recvfrom(65535)
    try:
        sock.recvfrom(65535)
    except BlockingIOError:
        pass


async def with_trio(n: int) -> float:
    sock, dest = _socket()
    payload = b"x" * 300
    t0 = time.process_time()
    for _ in range(n):
        sock.sendto(payload, dest)
        await trio.lowlevel.wait_readable(sock)
        _drain(sock)
    sock.close()
    return (time.process_time() - t0) / n * 1e6


def with_epoll(n: int) -> float:
    sock, dest = _socket()
    ep = select.epoll()
    ep.register(sock.fileno(), select.EPOLLIN)
    payload = b"x" * 300
    t0 = time.process_time()
    for _ in range(n):
        sock.sendto(payload, dest)
        ep.poll(1.0)
        _drain(sock)
    ep.close()
    sock.close()
    return (time.process_time() - t0) / n * 1e6


def without_wait(n: int) -> float:
    sock, dest = _socket()
    payload = b"x" * 300
    t0 = time.process_time()
    for _ in range(n):
        sock.sendto(payload, dest)
        _drain(sock)
    sock.close()
    return (time.process_time() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--number", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    for _ in range(args.repeat):
        print(f"send + wait + recv: trio wait_readable {trio.run(with_trio, args.number):.1f} µs | "
              f"select.epoll {with_epoll(args.number):.1f} µs | no wait {without_wait(args.number):.1f} µs")


if __name__ == "__main__":
    main()
