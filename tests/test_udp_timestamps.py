"""Kernel receive timestamps: a latency ends when the answer reached the socket, not when a busy worker got to it.

Real sockets on loopback. No sleeping: each datagram's send is bracketed by two clock readings, and the
handler is made slow on purpose (a CPU spin), so that the later datagrams wait in the socket while the
earlier ones are handled.
"""

from __future__ import annotations

import socket
import sys
import time

import pytest
import trio

from sipload.transport.udp import UdpSocket

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="SO_TIMESTAMPNS is Linux's")

COUNT = 40
SPIN = 0.0005  # each datagram costs the handler 0.5 ms: the last one waits ~20 ms in the socket


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def receive_all(sock: UdpSocket) -> list[tuple[bytes, float, float]]:
    """(data, arrival time reconstructed from `waited`, waited) of COUNT datagrams, with a slow handler."""
    got: list[tuple[bytes, float, float]] = []

    async with trio.open_nursery() as nursery:
        def handler(data: bytes, addr: tuple[str, int], waited: float) -> None:
            got.append((data, time.time() - waited, waited))
            spin(SPIN)
            if len(got) == COUNT:
                nursery.cancel_scope.cancel()

        nursery.start_soon(sock.serve_waited, handler)
    return got


def send_bracketed(sock: UdpSocket) -> list[tuple[float, float]]:
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        brackets = []
        for k in range(COUNT):
            before = time.time()
            peer.sendto(b"datagram %d" % k, sock.local)
            brackets.append((before, time.time()))
        return brackets
    finally:
        peer.close()


async def test_each_datagram_is_timed_when_it_reached_the_socket() -> None:
    with UdpSocket("127.0.0.1", 0) as sock:
        assert sock.enable_timestamps()
        brackets = send_bracketed(sock)
        got = await receive_all(sock)
    assert [d for d, _, _ in got] == [b"datagram %d" % k for k in range(COUNT)]
    slack = 0.0002  # loopback delivers within the sendto call; the two clock readings around it
    for (before, after), (_, arrived, _) in zip(brackets, got, strict=True):
        assert before - slack <= arrived <= after + slack
    # the slow handler made the later ones wait, and that wait is what was reported
    assert got[-1][2] > (COUNT - 2) * SPIN * 0.9
    assert all(0.0 <= waited < 1.0 for _, _, waited in got)


async def test_without_timestamps_nothing_is_said_to_have_waited() -> None:
    with UdpSocket("127.0.0.1", 0) as sock:
        send_bracketed(sock)
        got = await receive_all(sock)
    assert len(got) == COUNT
    assert {waited for _, _, waited in got} == {0.0}
