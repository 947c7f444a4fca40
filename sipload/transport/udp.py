"""UDP on trio, the way DESIGN.md measured it to be cheap.

One socket, read by ONE task that waits until the socket is readable and then drains it with
non-blocking recvfrom calls until it would block; sends are raw non-blocking sendto calls (no
await). Every await on a trio socket costs ~7-8 µs, so the receive loop awaits once per burst,
not once per datagram. Socket buffers are made large, and kernel drops are read from
/proc/net/udp so a run can report them. A socket may ask the kernel to stamp each datagram as it
arrives (SO_TIMESTAMPNS, Linux): the reader then says how long each one waited.
"""

from __future__ import annotations

import errno
import socket
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

import trio

Address = tuple[str, int]
DatagramHandler = Callable[[bytes, Address], None]
# with the time the datagram waited in the socket (the kernel's receive timestamp to now), seconds
WaitedHandler = Callable[[bytes, Address, float], None]

# Linux (asm-generic): SO_TIMESTAMPNS, and the control message it adds to every datagram: a struct timespec
# of CLOCK_REALTIME when the datagram reached the socket
_SO_TIMESTAMPNS = 35
_SCM_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("@qq")
_CMSG_SPACE = socket.CMSG_SPACE(_TIMESPEC.size) if hasattr(socket, "CMSG_SPACE") else 0
_MAX_WAITED = 10.0  # longer (or negative) is a step of the system clock, not a wait: taken as none

DEFAULT_BUFFER_BYTES = 8 * 1024 * 1024
MAX_DATAGRAM = 65535


class UdpSocket:
    """A bound, non-blocking UDP socket with a draining receive loop and await-free sends."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, buffer_bytes: int = DEFAULT_BUFFER_BYTES) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            _grow_buffers(sock, buffer_bytes)
            sock.setblocking(False)
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self.local: Address = sock.getsockname()[:2]
        self.sent = 0
        self.send_errors = 0
        self.received = 0
        self.last_error: OSError | None = None
        self._closed = False
        self._timestamps = False

    @property
    def host(self) -> str:
        return self.local[0]

    @property
    def port(self) -> int:
        return self.local[1]

    @property
    def buffer_sizes(self) -> tuple[int, int]:
        return (
            self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
            self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
        )

    def send(self, data: bytes, addr: Address) -> bool:
        """Send without awaiting. False (and counted) when the kernel refused it."""
        try:
            self._sock.sendto(data, addr)
        except OSError as exc:  # EAGAIN (buffer full), ECONNREFUSED (ICMP from an earlier send), ...
            self.send_errors += 1
            self.last_error = exc
            return False
        self.sent += 1
        return True

    async def serve(self, handler: DatagramHandler) -> None:
        """Receive forever, calling handler(data, addr) for each datagram (one task only)."""
        await self.serve_waited(lambda data, addr, _waited: handler(data, addr))

    def _receive_error(self, exc: OSError) -> None:
        """An ICMP error from an earlier send (the target is not listening) is counted; others raise."""
        if exc.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
            raise exc
        self.last_error = exc
        self.send_errors += 1

    def enable_timestamps(self) -> bool:
        """Ask the kernel to stamp each datagram as it arrives (Linux); False where it cannot."""
        if sys.platform != "linux" or not _CMSG_SPACE:
            return False
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        except OSError:
            return False
        self._timestamps = True
        return True

    async def serve_waited(self, handler: WaitedHandler) -> None:
        """Receive forever, calling handler(data, addr, waited) for each datagram (one task only): `waited` is
        how long it sat in the socket before this loop took it, so that a latency ends when the answer arrived,
        not when the worker got to it (after a batch of sends, say). 0.0 without kernel timestamps
        (`enable_timestamps`)."""
        sock = self._sock
        stamped = self._timestamps
        recvfrom, recvmsg = sock.recvfrom, sock.recvmsg
        while True:
            await trio.lowlevel.wait_readable(sock)
            while True:
                try:
                    if stamped:
                        data, ancillary, _flags, addr = recvmsg(MAX_DATAGRAM, _CMSG_SPACE)
                    else:
                        data, addr = recvfrom(MAX_DATAGRAM)
                except BlockingIOError:
                    break
                except OSError as exc:
                    self._receive_error(exc)
                    continue
                self.received += 1
                handler(data, addr[:2], _waited(ancillary) if stamped else 0.0)
            await trio.lowlevel.checkpoint_if_cancelled()

    def kernel_drops(self) -> int:
        """Datagrams the kernel dropped on this socket (receive buffer overflow)."""
        return read_kernel_drops(self.port, self._sock.family == socket.AF_INET6)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._sock.close()

    def __enter__(self) -> UdpSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _waited(ancillary: list[tuple[int, int, bytes]]) -> float:
    """Seconds since the kernel stamped the datagram (its SCM_TIMESTAMPNS control message); 0.0 without one."""
    for level, kind, raw in ancillary:
        if level == socket.SOL_SOCKET and kind == _SCM_TIMESTAMPNS and len(raw) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack(raw[:_TIMESPEC.size])
            waited = time.time() - (sec + nsec * 1e-9)
            return waited if 0.0 <= waited <= _MAX_WAITED else 0.0
    return 0.0


def _grow_buffers(sock: socket.socket, size: int) -> None:
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, size)
        except OSError:
            pass
        if sys.platform == "linux" and sock.getsockopt(socket.SOL_SOCKET, opt) < size:
            force = 33 if opt == socket.SO_RCVBUF else 32  # SO_RCVBUFFORCE / SO_SNDBUFFORCE (Linux)
            try:  # works as root, beyond net.core.rmem_max
                sock.setsockopt(socket.SOL_SOCKET, force, size)
            except OSError:
                pass


def read_kernel_drops(port: int, ipv6: bool = False) -> int:
    """The drops column of /proc/net/udp(6) for sockets bound to `port` (0 if unavailable)."""
    path = Path("/proc/net/udp6" if ipv6 else "/proc/net/udp")
    try:
        lines = path.read_text().splitlines()[1:]
    except OSError:
        return 0
    total = 0
    want = f":{port:04X}"
    for line in lines:
        fields = line.split()
        if len(fields) >= 13 and fields[1].endswith(want):
            try:
                total += int(fields[-1])
            except ValueError:
                continue
    return total
