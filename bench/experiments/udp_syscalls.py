"""What one UDP datagram costs the Python side on loopback when nobody has to be woken.

    python bench/experiments/udp_syscalls.py [--count 2000] [--reps 7]

Two non-blocking sockets on 127.0.0.1: `--count` datagrams (a 401-sized 476 bytes) are sent back to back,
then drained, per repetition; variants alternate within each repetition. Prints the median and best µs per
datagram of: sendto; recvfrom(65535) (what `UdpSocket.serve` does); recvmsg with a kernel receive timestamp
(SO_TIMESTAMPNS) and its control message parsed (what `UdpSocket.serve_waited` does, the worker's reader).
Compare with the in-run cost of the same calls (py-spy on `bench/worker_cpu.py`), where each datagram wakes a
sleeping receiver.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import struct
import time

SO_TIMESTAMPNS = 35
MESSAGE = b"SIP/2.0 401 Unauthorized\r\n" + b"X" * 450


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (rx, tx):
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    stamped = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stamped.bind(("127.0.0.1", 0))
    stamped.setblocking(False)
    stamped.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    stamped.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    timespec = struct.Struct("@qq")
    space = socket.CMSG_SPACE(timespec.size)

    def send(dst: socket.socket) -> float:
        addr = dst.getsockname()
        t = time.perf_counter()
        for _ in range(args.count):
            tx.sendto(MESSAGE, addr)
        return (time.perf_counter() - t) / args.count * 1e6

    def recvfrom() -> float:
        n, t = 0, time.perf_counter()
        while True:
            try:
                rx.recvfrom(65535)
            except BlockingIOError:
                break
            n += 1
        assert n == args.count, n
        return (time.perf_counter() - t) / n * 1e6

    def recvmsg() -> float:
        n, t = 0, time.perf_counter()
        while True:
            try:
                _data, ancillary, _flags, _addr = stamped.recvmsg(65535, space)
            except BlockingIOError:
                break
            for _level, kind, raw in ancillary:
                if kind == SO_TIMESTAMPNS:
                    sec, nsec = timespec.unpack(raw[: timespec.size])
                    _waited = time.time() - (sec + nsec * 1e-9)
            n += 1
        assert n == args.count, n
        return (time.perf_counter() - t) / n * 1e6

    rows: dict[str, list[float]] = {"sendto": [], "recvfrom(65535)": [], "recvmsg + timestamp": []}
    for _ in range(args.reps):
        rows["sendto"].append(send(rx))
        rows["recvfrom(65535)"].append(recvfrom())
        send(stamped)
        rows["recvmsg + timestamp"].append(recvmsg())
    for name, values in rows.items():
        print(f"{name:22s} median {statistics.median(values):6.2f} µs  best {min(values):6.2f} µs per datagram")


if __name__ == "__main__":
    main()
