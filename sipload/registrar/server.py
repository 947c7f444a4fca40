"""The embedded registrar on trio: UDP, TCP and TLS listeners around one `RegistrarCore`.

Theory of operation
-------------------
`serve_registrar` is started with `nursery.start()`: it binds every listen address, then reports
the bound ones (port 0 -> the real port) and serves until cancelled; cancelling it closes every
socket and connection.

* UDP: one `UdpSocket` per address, read by its one draining task; each datagram goes through
  `core.handle_bytes` and the response goes back to the source address (RFC 3581: rport / NAT).
* TCP and TLS: `trio.serve_tcp` / `trio.serve_ssl_over_tcp`; per connection a `StreamFramer`
  reader and a writer task fed by a bounded channel, so that a slow peer never blocks anyone
  else. A CRLFCRLF keep-alive ping is answered with CRLF (RFC 5626 §4.4.1).
* WS and WSS (RFC 7118): trio-websocket's server on the same TCP (TLS) listeners; a handshake
  that does not offer the subprotocol `sip` is refused (HTTP 400); each WebSocket message is one
  SIP request, handled with transport "ws" / "wss" and answered on the same connection by a
  writer task fed by a bounded channel.
* TLS (tls, wss): the server's certificate; with `tls_client_ca`, a client certificate signed
  by that CA is required. `on_sni` is told the server name (SNI) each TLS client asked for.
* Delays (fault injection) go to one `DelayQueue`: a heap of (send time, response) served by one
  task, never a task per request, so delayed responses do not hold up other requests.
* Upkeep: `core.tick(now)` every second; with `stats_interval`, a line per interval to `out`.

Time is `trio.current_time()`, so the whole server runs under trio's MockClock in tests.
"""

from __future__ import annotations

import heapq
import math
import ssl
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from functools import partial

import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, wrap_server_stream

from sipload.registrar.core import Outcome, RegistrarCore
from sipload.registrar.listen import TLS_TRANSPORTS, Listen
from sipload.registrar.settings import RegistrarSettings
from sipload.registrar.stats import interval_line, too_brief_text
from sipload.sip.errors import ParseError
from sipload.sip.message import Request
from sipload.sip.parser import StreamFramer
from sipload.transport.udp import Address, UdpSocket
from sipload.transport.websocket import SUBPROTOCOL

__all__ = ["DelayQueue", "Listen", "serve_registrar"]

Sender = Callable[[bytes], None]
Output = Callable[[str], object]
SniHandler = Callable[[str | None], object]

_STREAM_QUEUE = 1024         # responses waiting for a slow TCP/TLS peer before they are dropped
_RECEIVE_BYTES = 65536
_SEND_BATCH = 10_000         # due responses sent before the delay task yields
_TICK = 1.0
_WS_HANDSHAKE = 10.0         # seconds a ws/wss client has for its TLS and WebSocket handshakes
_WS_MAX_MESSAGE = 1 << 20


class DelayQueue:
    """Sends each pushed response at its time, from one task (`run`)."""

    def __init__(self, max_pending: int = 1_000_000) -> None:
        self.max_pending = max_pending
        self._heap: list[tuple[float, int, Sender, bytes]] = []
        self._seq = 0
        self._wake = trio.Event()

    def push(self, at: float, send: Sender, data: bytes) -> bool:
        """Schedule `send(data)` at time `at`; False (not queued) when max_pending are waiting."""
        if len(self._heap) >= self.max_pending:
            return False
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, send, data))
        if self._heap[0][1] == self._seq:
            self._wake.set()  # the new entry is the earliest: re-arm the sleep
        return True

    def __len__(self) -> int:
        return len(self._heap)

    async def run(self) -> None:
        heap = self._heap
        while True:
            now = trio.current_time()
            sent = 0
            while heap and heap[0][0] <= now and sent < _SEND_BATCH:
                _, _, send, data = heapq.heappop(heap)
                send(data)
                sent += 1
            if sent == _SEND_BATCH:
                await trio.lowlevel.checkpoint()
                continue
            with trio.move_on_at(heap[0][0] if heap else math.inf):
                await self._wake.wait()
            self._wake = trio.Event()


class _Registrar:
    """What the listener tasks share."""

    def __init__(self, core: RegistrarCore, out: Output) -> None:
        self.core = core
        self.out = out
        self.delays = DelayQueue()
        self.ws_refused = 0          # WebSocket handshakes without the `sip` subprotocol
        self._reported_errors = 0

    def deliver(self, outcome: Outcome, send: Sender, now: float) -> None:
        response = outcome.response
        if response is None:
            return
        data = response.to_bytes()
        if outcome.delay > 0:
            if not self.delays.push(now + outcome.delay, send, data):
                self.core.counters.send_failures += 1
        else:
            send(data)

    def internal_error(self, exc: Exception) -> None:
        self.core.counters.internal_errors += 1
        if self._reported_errors < 10:  # bounded: a bug must not flood the output
            self._reported_errors += 1
            self.out(f"registrar internal error: {type(exc).__name__}: {exc}")

    # --- UDP ------------------------------------------------------------------------------------
    def on_datagram(self, sock: UdpSocket, data: bytes, addr: Address) -> None:
        now = trio.current_time()
        try:
            outcome = self.core.handle_bytes(data, addr, "udp", now)
        except Exception as exc:  # a bug in the core must not stop the server
            self.internal_error(exc)
            return
        self.deliver(outcome, partial(self._send_udp, sock, addr), now)

    def _send_udp(self, sock: UdpSocket, addr: Address, data: bytes) -> None:
        if not sock.send(data, addr):
            self.core.counters.send_failures += 1

    def _queued_sender(self) -> tuple[Sender, trio.MemorySendChannel[bytes], trio.MemoryReceiveChannel[bytes]]:
        """A connection's non-blocking send into a bounded queue (its writer task drains the receiving end);
        a full or closed queue counts a send failure instead of blocking the reader."""
        send_channel, receive_channel = trio.open_memory_channel[bytes](_STREAM_QUEUE)

        def send(data: bytes) -> None:
            try:
                send_channel.send_nowait(data)
            except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                self.core.counters.send_failures += 1

        return send, send_channel, receive_channel

    # --- TCP / TLS ------------------------------------------------------------------------------
    async def serve_stream(self, transport: str, stream: trio.abc.Stream) -> None:
        peer = _peer_address(stream)
        send, send_channel, receive_channel = self._queued_sender()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_write_stream, stream, receive_channel, nursery.cancel_scope)
                try:
                    await self._read_stream(transport, stream, peer, send)
                except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
                    pass  # the peer went away (or failed the TLS handshake)
                finally:
                    send_channel.close()  # the writer sends what is queued, then ends
        finally:
            await trio.aclose_forcefully(stream)

    async def _read_stream(self, transport: str, stream: trio.abc.Stream, peer: Address,
                           send: Sender) -> None:
        framer = StreamFramer()
        pings = 0
        while True:
            data = await stream.receive_some(_RECEIVE_BYTES)
            if not data:
                return
            try:
                messages = framer.feed(bytes(data))
            except ParseError:
                self.core.counters.parse_errors += 1
                return  # a stream cannot resynchronize: close it
            while pings < framer.pings:
                pings += 1
                self.core.counters.crlf_pings += 1  # answered keep-alives, in the stats
                send(b"\r\n")
            now = trio.current_time()
            for message in messages:
                if not isinstance(message, Request):
                    self.core.counters.stray_responses += 1
                    continue
                try:
                    outcome = self.core.handle(message, peer, transport, now)
                except Exception as exc:  # a bug in the core must not stop the server
                    self.internal_error(exc)
                    continue
                self.deliver(outcome, send, now)

    # --- WS / WSS (RFC 7118) -----------------------------------------------------------------------
    async def serve_websocket(self, transport: str, request: WebSocketRequest) -> None:
        if SUBPROTOCOL not in request.proposed_subprotocols:
            self.ws_refused += 1
            await request.reject(400, body=b"SIP over WebSocket needs the subprotocol 'sip' (RFC 7118)\n")
            return
        connection = await request.accept(subprotocol=SUBPROTOCOL)
        remote = request.remote
        peer = (str(remote.address), int(remote.port)) if not isinstance(remote, str) else ("0.0.0.0", 0)
        send, send_channel, receive_channel = self._queued_sender()

        async def write() -> None:
            async with receive_channel:
                async for data in receive_channel:
                    try:
                        await connection.send_message(_ws_message(data))
                    except ConnectionClosed:
                        return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            try:
                while True:
                    try:
                        message = await connection.get_message()
                    except ConnectionClosed:
                        break
                    data = message.encode() if isinstance(message, str) else message
                    if not data.strip(b"\r\n"):
                        continue   # an empty keep-alive message
                    now = trio.current_time()
                    try:
                        outcome = self.core.handle_bytes(data, peer, transport, now)
                    except Exception as exc:  # a bug in the core must not stop the server
                        self.internal_error(exc)
                        continue
                    self.deliver(outcome, send, now)
            finally:
                send_channel.close()   # the writer sends what is queued, then ends
        with trio.move_on_after(2):
            await connection.aclose()

    # --- upkeep -----------------------------------------------------------------------------------
    async def upkeep(self, stats_interval: float | None) -> None:
        core = self.core
        start = trio.current_time()
        next_tick = start + _TICK
        next_stats = start + stats_interval if stats_interval else math.inf
        before = core.counters.copy()
        while True:
            await trio.sleep_until(min(next_tick, next_stats))
            now = trio.current_time()
            if now >= next_tick:
                core.tick(now)
                next_tick += _TICK * max(1, math.ceil((now - next_tick) / _TICK))
            if stats_interval and now >= next_stats:
                current = core.counters.copy()
                self.out(interval_line(now - start, stats_interval, current, before, core.store.count(now)))
                if current.too_brief and not before.too_brief:  # said once; the 423= count goes on
                    self.out(f"[{now - start:8.1f}s] {too_brief_text(current, core.settings.min_expires)}; "
                             "--min-expires sets the limit")
                before = current
                next_stats += stats_interval * max(1, math.ceil((now - next_stats) / stats_interval))


async def _serve_websocket_connection(handler: Callable[[WebSocketRequest], Awaitable[None]],
                                      stream: trio.abc.Stream) -> None:
    """One ws/wss connection: TLS handshake (a failure closes at once), WebSocket handshake, `handler`.

    trio-websocket's `WebSocketServer` does the same but waits for its connect timeout when the
    TLS handshake fails (a client without the required certificate would wait for it too).
    """
    try:
        if isinstance(stream, trio.SSLStream):
            with trio.fail_after(_WS_HANDSHAKE):
                await stream.do_handshake()
        async with trio.open_nursery() as nursery:   # runs the connection's reader task
            request: WebSocketRequest | None = None
            with trio.move_on_after(_WS_HANDSHAKE):
                request = await wrap_server_stream(nursery, stream, max_message_size=_WS_MAX_MESSAGE)
            if request is not None:
                await handler(request)   # closes the connection it accepted
            nursery.cancel_scope.cancel()
    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, ssl.SSLError, OSError):
        pass  # the peer went away or failed the TLS handshake
    finally:
        await trio.aclose_forcefully(stream)


async def _write_stream(stream: trio.abc.Stream, channel: trio.MemoryReceiveChannel[bytes],
                        scope: trio.CancelScope) -> None:
    try:
        async with channel:
            async for data in channel:
                await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
        scope.cancel()  # cannot write any more: stop reading too


def _ws_message(data: bytes) -> str | bytes:
    """RFC 7118 §5: a text frame for UTF-8, else a binary frame."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


def _peer_address(stream: trio.abc.Stream) -> Address:
    inner = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    if isinstance(inner, trio.SocketStream):
        try:
            peer = inner.socket.getpeername()
            return (str(peer[0]), int(peer[1]))
        except OSError:
            pass
    return ("0.0.0.0", 0)


def _ssl_context(cert: str, key: str, client_ca: str | None = None, on_sni: SniHandler | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.load_verify_locations(cafile=client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    if on_sni is not None:
        def sni(_socket: ssl.SSLObject | ssl.SSLSocket, name: str | None, _context: ssl.SSLContext) -> None:
            on_sni(name)

        context.sni_callback = sni
    return context


async def _bind(stack: AsyncExitStack, registrar: _Registrar, listen: Listen,
                context: ssl.SSLContext | None) -> tuple[Listen, Callable[[], Awaitable[object]]]:
    """Bind one address (closed by `stack`); the bound address (the real port for port 0) and the
    coroutine function that serves it."""
    if listen.transport == "udp":
        sock = stack.enter_context(UdpSocket(listen.host, listen.port))
        return Listen("udp", sock.host, sock.port), partial(sock.serve, partial(registrar.on_datagram, sock))
    tcp_listeners = await trio.open_tcp_listeners(listen.port, host=listen.host)
    for tcp_listener in tcp_listeners:
        stack.push_async_callback(tcp_listener.aclose)
    port = int(tcp_listeners[0].socket.getsockname()[1])
    handler = partial(registrar.serve_stream, listen.transport)
    if listen.transport in ("ws", "wss"):
        handler = partial(_serve_websocket_connection, partial(registrar.serve_websocket, listen.transport))
    listeners: list[trio.abc.Listener[trio.abc.Stream]] = list(tcp_listeners)
    if listen.transport in TLS_TRANSPORTS:
        assert context is not None
        listeners = [trio.SSLListener(tcp, context, https_compatible=False) for tcp in tcp_listeners]
    return Listen(listen.transport, listen.host, port), partial(trio.serve_listeners, handler, listeners)


async def serve_registrar(
    settings: RegistrarSettings,
    listens: Sequence[Listen],
    *,
    task_status: trio.TaskStatus[list[Listen]] = trio.TASK_STATUS_IGNORED,
    stats_interval: float | None = None,
    out: Output = print,
    core: RegistrarCore | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    tls_client_ca: str | None = None,
    on_sni: SniHandler | None = None,
) -> None:
    """Serve until cancelled; `nursery.start()` returns the bound listen addresses.

    Pass `core` to share the binding store with others (provider emulators, tests); otherwise
    one is made from `settings`. TLS listens (tls, wss) need `tls_cert` and `tls_key` (PEM files);
    `tls_client_ca` (PEM) makes them require a client certificate signed by it; `on_sni` is called
    with the server name each TLS client sent (None when it sent none).
    Raises OSError when an address cannot be bound, ValueError for TLS without files.
    """
    if not listens:
        raise ValueError("serve_registrar: no listen address")
    context: ssl.SSLContext | None = None
    if any(listen.transport in TLS_TRANSPORTS for listen in listens):
        if not (tls_cert and tls_key):
            raise ValueError("a tls or wss listen address needs tls_cert and tls_key")
        context = _ssl_context(tls_cert, tls_key, tls_client_ca, on_sni)
    registrar = _Registrar(core if core is not None else RegistrarCore(settings, now=trio.current_time()),
                           out)
    async with AsyncExitStack() as stack:  # closed after every task of the nursery has ended
        bound: list[Listen] = []
        servers: list[Callable[[], Awaitable[object]]] = []
        for listen in listens:
            try:
                address, serve = await _bind(stack, registrar, listen, context)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot listen on {listen}: {exc.strerror or exc}") from exc
            bound.append(address)
            servers.append(serve)
        async with trio.open_nursery() as nursery:
            for serve in servers:
                nursery.start_soon(serve)
            nursery.start_soon(registrar.delays.run)
            nursery.start_soon(registrar.upkeep, stats_interval)
            task_status.started(bound)
