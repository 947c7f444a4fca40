"""SIP over WebSocket (RFC 7118): WS and WSS connections to a registrar, on trio.

A `WebSocketChannel` has `StreamChannel`'s interface and life (lazy connect, non-blocking `send`,
a writer/reader session, reconnect after a failure reported to `on_failure`); only the framing
differs. It opens TCP (and TLS for WSS, with SNI and an optional client certificate from
`TlsOptions`), then does the WebSocket opening handshake offering the subprotocol `sip`
(RFC 7118 §4); a server that answers without it, or refuses the upgrade, is a clear error at
`connect()`. Each SIP message is one WebSocket message (RFC 7118 §5): a text frame (a binary frame
if it is not UTF-8); each received message is parsed whole (Content-Length is optional, as on UDP).
Pings are answered with pongs; a Close frame from the server ends the session like a closed TCP
connection.

Keep-alives (`keepalive=SECONDS`): over WebSocket the channel sends a WebSocket ping frame
(RFC 6455 §5.5.2, with a counter as its payload) instead of StreamChannel's CRLFCRLF, and its pong
counts like a CRLF pong (`keepalive_pings` / `keepalive_pongs` / `keepalive_missed`; no pong within
`pong_timeout` is a flow failure). CRLF is not used because RFC 7118 frames every SIP message as a
WebSocket message and defines no CRLF keep-alive: a "\r\n\r\n" text message is only skipped as
empty by our registrar (and is not a SIP message to Kamailio's websocket module), so no pong would
come; every WebSocket server must answer a ping frame with a pong (RFC 6455 §5.5.2), Kamailio's and
trio-websocket's (our registrar's) included.

The WebSocket protocol itself is wsproto's sans-IO state machine (the engine under trio-websocket,
which serves the registrar side): a client needs the handshake done inside `connect()` (before
the worker's nursery runs the channel) and sends that never await, which trio-websocket's
per-connection background task and awaited `send_message` do not allow.

Via and Contact: the worker builds them from `local` as for TCP, so a WS endpoint sends
`Via: SIP/2.0/WS 127.0.0.1:PORT` and `Contact: <sip:user@127.0.0.1:PORT;transport=ws>`: the real
address of the connection rather than the random `.invalid` host of RFC 7118 §5 that browsers use
because they cannot know theirs; both are valid and the registrar answers through the connection.
"""

from __future__ import annotations

import ssl

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import ProtocolError

from sipload.sip.errors import ParseError
from sipload.sip.parser import parse_message
from sipload.transport.stream import (
    KEEPALIVE_PONG_TIMEOUT,
    READ_CHUNK,
    FailureHandler,
    MessageHandler,
    StreamChannel,
    TlsOptions,
    _open_tcp,
    describe_error,
)

SUBPROTOCOL = "sip"
HANDSHAKE_TIMEOUT = 10.0
MAX_MESSAGE = 1 << 20        # a SIP message larger than this ends the connection


class WebSocketError(OSError):
    """The WebSocket handshake or framing failed (an OSError: callers treat it as a connection failure)."""


class WebSocketChannel(StreamChannel):
    """One WS or WSS connection to `host:port` at `path`, opened lazily by its writer task."""

    def __init__(
        self,
        host: str,
        port: int,
        on_message: MessageHandler,
        on_failure: FailureHandler,
        *,
        tls: TlsOptions | None = None,
        local_host: str | None = None,
        path: str = "/",
        keepalive: float | None = None,
        pong_timeout: float = KEEPALIVE_PONG_TIMEOUT,
    ) -> None:
        super().__init__(host, port, on_message, on_failure, tls=tls, local_host=local_host, keepalive=keepalive,
                         pong_timeout=pong_timeout)
        self.path = path or "/"
        self.unparseable = 0     # WebSocket messages that were not a SIP message (skipped: framing is intact)
        self._ws: WSConnection | None = None
        self._control: list[bytes] = []      # encoded control frames (pongs) waiting for the writer
        self._parts: list[bytes | str] = []
        self._size = 0
        self._ping_payload = b""             # of our keep-alive ping in flight

    @property
    def transport(self) -> str:
        return "WSS" if self._ssl_context is not None else "WS"

    def _host_header(self) -> str:
        name = (self.tls.server_name if self.tls else None) or self.host
        host = f"[{name}]" if ":" in name else name
        default = 443 if self._ssl_context is not None else 80
        return host if self.port == default else f"{host}:{self.port}"

    async def _connect(self) -> trio.abc.Stream:
        if self._stream is not None:
            return self._stream
        local = (self.local_host, 0) if self.local_host else None
        tcp = await _open_tcp(self.host, self.port, local)
        stream: trio.abc.Stream = tcp
        try:
            sockname = tcp.socket.getsockname()
            self.local = (str(sockname[0]), int(sockname[1]))
            if self._ssl_context is not None:
                name = (self.tls.server_name if self.tls else None) or self.host
                stream = trio.SSLStream(tcp, self._ssl_context, server_hostname=name)
                await stream.do_handshake()
            try:
                self._ws = await self._handshake(stream)
            except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
                if self._ssl_context is None or isinstance(exc, WebSocketError) or (self.tls and self.tls.cert_file):
                    raise
                # TLS 1.3: a server that wants a client certificate says so only after the handshake
                raise WebSocketError(f"{describe_error(exc)} after the TLS handshake (a registrar that requires a "
                                     f"client certificate does this: target.tls_cert and tls_key)") from exc
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        self._parts, self._size, self._control = [], 0, []
        self._stream = stream
        self.connects += 1
        return stream

    async def _handshake(self, stream: trio.abc.Stream) -> WSConnection:
        """The opening handshake (RFC 6455 §4) offering `sip`; WebSocketError unless the server agrees."""
        ws = WSConnection(ConnectionType.CLIENT)
        request = Request(host=self._host_header(), target=self.path, subprotocols=[SUBPROTOCOL])
        with trio.move_on_after(HANDSHAKE_TIMEOUT):
            await stream.send_all(ws.send(request))
            status = 0
            body = b""
            while True:
                data = await stream.receive_some(READ_CHUNK)
                if not data:
                    raise WebSocketError("connection closed during the WebSocket handshake")
                try:
                    ws.receive_data(bytes(data))
                    for event in ws.events():
                        if isinstance(event, AcceptConnection):
                            if event.subprotocol != SUBPROTOCOL:
                                raise WebSocketError(
                                    f"the server did not accept the WebSocket subprotocol {SUBPROTOCOL!r} "
                                    f"(RFC 7118; it answered {event.subprotocol or 'none'})")
                            return ws
                        if isinstance(event, RejectConnection):
                            status = event.status_code
                            if not event.has_body:
                                raise _rejected(status, body)
                        elif isinstance(event, RejectData):
                            body += event.data
                            if event.body_finished:
                                raise _rejected(status, body)
                except ProtocolError as exc:
                    raise WebSocketError(f"not a WebSocket handshake answer: {exc}") from None
        raise WebSocketError(f"no WebSocket handshake answer within {HANDSHAKE_TIMEOUT:g} s")

    async def _writer(self, stream: trio.abc.Stream) -> None:
        ws = self._ws
        assert ws is not None
        while not self._closed:
            if self._out or self._control:
                frames, self._control = self._control, []
                frames.extend(ws.send(_frame(data)) for data in self._out)
                self._out = []
                await stream.send_all(b"".join(frames))
                continue
            await self._wake.wait()
            self._wake = trio.Event()

    async def _reader(self, stream: trio.abc.Stream) -> None:
        ws = self._ws
        assert ws is not None
        data = b""   # first: the events that came with the handshake answer
        while True:
            try:
                if data:
                    ws.receive_data(data)
                for event in ws.events():
                    self._on_event(ws, event)
            except ProtocolError as exc:
                raise WebSocketError(f"WebSocket protocol error from the registrar: {exc}") from None
            data = bytes(await stream.receive_some(READ_CHUNK))
            if not data:
                raise trio.BrokenResourceError("connection closed by the registrar")

    def _on_event(self, ws: WSConnection, event: Event) -> None:
        if isinstance(event, Message):
            self._size += len(event.data)
            if self._size > MAX_MESSAGE:
                raise WebSocketError(f"WebSocket message from the registrar larger than {MAX_MESSAGE} bytes")
            self._parts.append(event.data)
            if event.message_finished:
                parts, self._parts, self._size = self._parts, [], 0
                data = b"".join(p.encode() if isinstance(p, str) else p for p in parts)
                if data.strip(b"\r\n"):
                    try:
                        message = parse_message(data)
                    except ParseError:
                        self.unparseable += 1
                        return
                    self.on_message(message)
        elif isinstance(event, Ping):
            self._control.append(ws.send(event.response()))
            self._wake.set()
        elif isinstance(event, Pong):
            if self._pong is not None and bytes(event.payload) == self._ping_payload:
                self.keepalive_pongs += 1
                self._pong.set()
                self._pong = None
        elif isinstance(event, CloseConnection):
            reason = f" ({event.reason})" if event.reason else ""
            raise trio.BrokenResourceError(f"WebSocket closed by the registrar: code {event.code}{reason}")

    async def _keepalive(self, interval: float) -> str:
        """A WebSocket ping frame every `interval`; the failure when its pong does not come in time."""
        while True:
            await trio.sleep(interval)
            ws = self._ws
            if ws is None or ws.state is not ConnectionState.OPEN:
                return "WebSocket connection not open for a keep-alive ping"
            pong = self._pong = trio.Event()
            self.keepalive_pings += 1
            self._ping_payload = str(self.keepalive_pings).encode()
            self._control.append(ws.send(Ping(payload=self._ping_payload)))
            self._wake.set()
            with trio.move_on_after(self.pong_timeout):
                await pong.wait()
                continue
            self._pong = None
            self.keepalive_missed += 1
            return f"no WebSocket keep-alive pong within {self.pong_timeout:g} s (RFC 5626 flow failure)"

    async def _fail(self, reason: str) -> None:
        self._ws = None
        self._control = []
        await super()._fail(reason)

    async def aclose(self) -> None:
        ws, stream = self._ws, self._stream
        if ws is not None and stream is not None and ws.state is ConnectionState.OPEN and not self._closed:
            with trio.move_on_after(1):
                try:
                    await stream.send_all(ws.send(CloseConnection(code=1000)))
                except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError):
                    pass
        await super().aclose()


def _frame(data: bytes) -> TextMessage | BytesMessage:
    """RFC 7118 §5: a text frame for UTF-8 (every SIP message sipload builds), else a binary frame."""
    try:
        return TextMessage(data=data.decode("utf-8"))
    except UnicodeDecodeError:
        return BytesMessage(data=data)


def _rejected(status: int, body: bytes) -> WebSocketError:
    text = body.decode("utf-8", "replace").strip()[:200]
    return WebSocketError(f"the server refused the WebSocket handshake: HTTP {status}" + (f" ({text})" if text else ""))
