"""An in-memory network between a worker and a sans-IO registrar core, for tests on virtual time.

Datagrams go through a trio memory channel and one delivery task, so everything is scheduled by
trio: under `MockClock(autojump_threshold=0)` a run of hours of virtual time takes milliseconds,
and nothing depends on real sockets. Loss and one-way delay can be injected with a seeded rng
(the template is trio's own lossy fake network in test_dtls.py).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable

import trio

from sipload.registrar.core import RegistrarCore

Address = tuple[str, int]
DatagramHandler = Callable[[bytes, Address], None]

REGISTRAR: Address = ("127.0.0.1", 5060)


class MemoryNetwork:
    """Client side sends with `send`; the registrar's responses reach the handler given to `run`."""

    def __init__(self, core: RegistrarCore, *, loss: float = 0.0, delay: float = 0.0,
                 rng: random.Random | None = None) -> None:
        self.core = core
        self.loss = loss
        self.delay = delay
        self.rng = rng or random.Random(0)
        self.client: Address = ("127.0.0.1", 5080)
        self.sent = 0
        self.lost = 0
        self._queue: list[tuple[float, int, bytes, bool]] = []   # (due, seq, data, to_registrar)
        self._seq = 0
        self._wake = trio.Event()
        self._last_tick = -1e9

    def send(self, data: bytes) -> bool:
        """Client -> registrar (never blocks)."""
        self.sent += 1
        self._push(data, to_registrar=True)
        return True

    def _push(self, data: bytes, *, to_registrar: bool, extra_delay: float = 0.0) -> None:
        if self.loss and self.rng.random() < self.loss:
            self.lost += 1
            return
        self._seq += 1
        heapq.heappush(self._queue, (trio.current_time() + self.delay + extra_delay, self._seq, data, to_registrar))
        self._wake.set()

    async def run(self, handler: DatagramHandler) -> None:
        """Deliver datagrams in due order, forever."""
        queue = self._queue
        while True:
            if not queue:
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            due = queue[0][0]
            if due > trio.current_time():
                with trio.move_on_at(due):
                    await self._wake.wait()
                    self._wake = trio.Event()
                continue
            _, _, data, to_registrar = heapq.heappop(queue)
            now = trio.current_time()
            if to_registrar:
                if now - self._last_tick >= 1.0:
                    self._last_tick = now
                    self.core.tick(now)
                outcome = self.core.handle_bytes(data, self.client, "udp", now)
                if outcome.response is not None:
                    self._push(outcome.response.to_bytes(), to_registrar=False, extra_delay=outcome.delay)
            else:
                handler(data, REGISTRAR)
            await trio.lowlevel.checkpoint()
