"""sipload's own webhook receiver: a small HTTP/1.1 server (h11 on trio) that records provider events.

Theory of operation
-------------------
`WebhookReceiver.serve(host, port)` is started with `nursery.start()` and returns the bound port
(or `bind(host, port)` first, to know the port before serving).
Each connection is read with h11; every POST whose body is a JSON object with a string `event` is
one `Received` (the Unix time it arrived, the event name, `data.deviceId` and `data.status`) and is
answered 200 `{"status": "received"}`; a body that is not such an object is answered 400 and
counted in `rejected`; another method 405. Connections are kept alive (a provider usually reuses
them) and closed after `idle` seconds of silence.

At most `max_events` events are kept (`overflow` counts the ones past it), so a provider that
floods the receiver cannot grow memory without limit. `answer` (tests: loss at the receiver) gives
the status to send for an event; anything but 2xx is not recorded, as a provider retries it.
`changed` is set after every recorded event (a waiter makes a new one each time it wakes).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import h11
import trio

MAX_BODY = 64 * 1024
_RECEIVE = 16 * 1024


@dataclass(frozen=True, slots=True)
class Received:
    at: float                 # Unix time of arrival
    event: str                # "device.registered", ...
    device_id: str | None
    status: str | None


class WebhookReceiver:
    def __init__(self, *, max_events: int = 1_000_000, clock: Callable[[], float] = time.time,
                 answer: Callable[[Received], int] | None = None, idle: float = 30.0) -> None:
        self.events: list[Received] = []
        self.max_events = max_events
        self.overflow = 0
        self.rejected = 0
        self.refused = 0          # events answered with a failure by `answer`
        self.changed = trio.Event()
        self._clock = clock
        self._answer = answer
        self._idle = idle
        self._listeners: list[trio.SocketListener] | None = None
        self.port = 0

    async def serve(self, host: str = "127.0.0.1", port: int = 0,
                    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled (`bind` first, or here). OSError when the address cannot be bound."""
        bound = await self.bind(host, port) if self._listeners is None else self.port
        assert self._listeners is not None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, self._connection, self._listeners)
            task_status.started(bound)

    async def bind(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on HOST:PORT (port 0: any) -> the bound port; `serve` then answers there."""
        self._listeners = await trio.open_tcp_listeners(port, host=host)
        self.port = int(self._listeners[0].socket.getsockname()[1])
        return self.port

    async def aclose(self) -> None:
        """Close the listening sockets (`serve`, when it ran, closed them already)."""
        for listener in self._listeners or ():
            await listener.aclose()

    async def _connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_BODY)
        try:
            while True:
                request, body = await self._read_request(conn, stream)
                if request is None:
                    return
                status, payload = self._handle(request, body)
                await self._send(conn, stream, status, payload)
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return
        finally:
            await trio.aclose_forcefully(stream)

    async def _read_request(self, conn: h11.Connection, stream: trio.SocketStream) -> tuple[h11.Request | None, bytes]:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = b""
                with trio.move_on_after(self._idle):
                    data = await stream.receive_some(_RECEIVE)
                if not data:
                    return None, b""
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    raise h11.RemoteProtocolError("body too large")
            elif isinstance(event, h11.EndOfMessage):
                return request, bytes(body)
            elif isinstance(event, h11.ConnectionClosed):
                return None, b""

    def _handle(self, request: h11.Request, body: bytes) -> tuple[int, dict[str, str]]:
        if request.method != b"POST":
            return 405, {"status": "error", "message": "POST an event"}
        try:
            decoded = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            decoded = None
        event = decoded.get("event") if isinstance(decoded, dict) else None
        if not isinstance(decoded, dict) or not isinstance(event, str):
            self.rejected += 1
            return 400, {"status": "error", "message": "the body must be a JSON object with a string 'event'"}
        data = decoded.get("data")
        data = data if isinstance(data, dict) else {}
        device, state = data.get("deviceId"), data.get("status")
        received = Received(self._clock(), event, device if isinstance(device, str) else None,
                            state if isinstance(state, str) else None)
        status = self._answer(received) if self._answer is not None else 200
        if not 200 <= status < 300:
            self.refused += 1
            return status, {"status": "error", "message": "refused (fault injection)"}
        if len(self.events) < self.max_events:
            self.events.append(received)
        else:
            self.overflow += 1
        self.changed.set()
        return 200, {"status": "received"}

    async def _send(self, conn: h11.Connection, stream: trio.SocketStream, status: int,
                    payload: dict[str, str]) -> None:
        body = json.dumps(payload).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        out = conn.send(h11.Response(status_code=status, headers=headers))
        out = (out or b"") + (conn.send(h11.Data(data=body)) or b"") + (conn.send(h11.EndOfMessage()) or b"")
        await stream.send_all(out)

    async def wait_change(self, deadline: float) -> bool:
        """Wait for the next recorded event until the trio time `deadline`; False when none came."""
        changed = self.changed
        with trio.move_on_at(deadline):
            await changed.wait()
        if changed.is_set():
            self.changed = trio.Event()
            return True
        return False
