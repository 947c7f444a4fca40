"""What a `Worker` needs of a network that is not its own sockets (`Worker(..., network=)`).

A run opens sockets and streams (`sipload.engine.routes`); a test or a benchmark hands the worker a
`Network` instead: every endpoint then sends through `send`, and `run` delivers the answers to the
worker's datagram handler, as the UDP socket's receive loop does. The in-memory network on virtual
time (`sipload.testing.memory.MemoryNetwork`) is one; the engine knows none of them by name.
"""

from __future__ import annotations

from typing import Protocol

from sipload.transport.udp import Address, DatagramHandler


class Network(Protocol):
    client: Address
    """The endpoints' source address, as the registrar sees it (their Via and Contact)."""

    def send(self, data: bytes) -> bool:
        """One datagram to the registrar; False when it could not be sent. Never blocks."""
        ...

    async def run(self, handler: DatagramHandler) -> None:
        """Deliver the registrar's datagrams to `handler(data, source)` until cancelled."""
        ...
