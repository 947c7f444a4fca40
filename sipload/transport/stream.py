"""TCP and TLS connections on trio, framed with the SIP core's StreamFramer.

A `StreamChannel` is one connection to the registrar, shared by many endpoints or owned by one.
Sends never await: `send()` appends to an outgoing buffer and wakes the channel's writer task,
which connects on first use (and again after a failure), writes whole batches, and reports a
failed connection to its owner so the endpoints' transactions fail fast with a transport error
instead of waiting for Timer F. Received bytes are cut into messages by the framer and handed to
the owner; CRLFCRLF keep-alive pings from the server are answered with a CRLF pong.

With `keepalive=SECONDS` the channel pings the registrar itself (RFC 5626 §4.4.1): every
interval of a connection's life it sends CRLFCRLF and expects a CRLF pong within `pong_timeout`
(10 s). `keepalive_pings`, `keepalive_pongs` and `keepalive_missed` count them. A missed pong is a
flow failure: the connection is closed and reported through `on_failure`, like any transport
failure, so that the endpoints on it register again (on a new connection).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trio

from sipload.sip.errors import ParseError
from sipload.sip.message import Request, Response
from sipload.sip.parser import StreamFramer

MessageHandler = Callable[[Request | Response], None]
FailureHandler = Callable[[str], None]

READ_CHUNK = 65536
KEEPALIVE_PONG_TIMEOUT = 10.0   # RFC 5626 §4.4.1: a pong not received within 10 s is a flow failure
PING = b"\r\n\r\n"
_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, ParseError)


@dataclass(frozen=True, slots=True)
class TlsOptions:
    verify: bool = True
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None      # SNI and the name checked; default: the target host

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_file is not None:
            ctx.load_cert_chain(str(self.cert_file), str(self.key_file) if self.key_file else None)
        return ctx


class StreamChannel:
    """One TCP or TLS connection to `host:port`, opened lazily by its writer task."""

    def __init__(
        self,
        host: str,
        port: int,
        on_message: MessageHandler,
        on_failure: FailureHandler,
        *,
        tls: TlsOptions | None = None,
        local_host: str | None = None,
        keepalive: float | None = None,
        pong_timeout: float = KEEPALIVE_PONG_TIMEOUT,
    ) -> None:
        if keepalive is not None and not (keepalive > 0 and pong_timeout > 0):
            raise ValueError(f"keepalive: interval and pong timeout must be > 0, got {keepalive}, {pong_timeout}")
        self.host = host
        self.port = port
        self.on_message = on_message
        self.on_failure = on_failure
        self.tls = tls
        self.local_host = local_host
        self.local: tuple[str, int] = (local_host or "127.0.0.1", 0)
        self.connects = 0
        self.failures = 0
        self.pings_answered = 0           # the registrar's pings we answered
        self.keepalive = keepalive
        self.pong_timeout = pong_timeout
        self.keepalive_pings = 0          # our pings, their pongs, and pongs that never came
        self.keepalive_pongs = 0
        self.keepalive_missed = 0
        self._pong: trio.Event | None = None  # set when a pong arrives for the ping in flight
        self._ssl_context = tls.context() if tls is not None else None
        self._out: list[bytes] = []
        self._wake = trio.Event()
        self._stream: trio.abc.Stream | None = None
        self._closed = False

    def send(self, data: bytes) -> bool:
        if self._closed:
            return False
        self._out.append(data)
        self._wake.set()
        return True

    async def connect(self) -> None:
        """Open the connection now (so that `local` is known before endpoints are built)."""
        await self._connect()

    async def _connect(self) -> trio.abc.Stream:
        if self._stream is not None:
            return self._stream
        local = (self.local_host, 0) if self.local_host else None
        tcp = await _open_tcp(self.host, self.port, local)
        sockname = tcp.socket.getsockname()
        self.local = (str(sockname[0]), int(sockname[1]))
        stream: trio.abc.Stream = tcp
        if self._ssl_context is not None:
            name = (self.tls.server_name if self.tls else None) or self.host
            ssl_stream = trio.SSLStream(tcp, self._ssl_context, server_hostname=name)
            await ssl_stream.do_handshake()
            stream = ssl_stream
        self._stream = stream
        self.connects += 1
        return stream

    async def run(self) -> None:
        """Writer and reader for the life of the channel (reconnecting after failures)."""
        while not self._closed:
            if not self._out and (self._stream is None or self.keepalive is None):  # keep-alives: read at once
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            try:
                stream = await self._connect()
            except _ERRORS as exc:
                await self._fail(describe_error(exc))
                continue
            failure = await self._session(stream)
            if failure is not None and not self._closed:
                await self._fail(failure)

    async def _session(self, stream: trio.abc.Stream) -> str | None:
        """Read and write until either side fails; the reason, or None when closed by us."""
        failure: str | None = None
        async with trio.open_nursery() as nursery:

            async def read() -> None:
                nonlocal failure
                try:
                    await self._reader(stream)
                except _ERRORS as exc:
                    failure = failure or describe_error(exc)
                nursery.cancel_scope.cancel()

            nursery.start_soon(read)
            if self.keepalive is not None:
                interval = self.keepalive

                async def ping() -> None:
                    nonlocal failure
                    missed = await self._keepalive(interval)
                    failure = failure or missed
                    nursery.cancel_scope.cancel()

                nursery.start_soon(ping)
            try:
                await self._writer(stream)
            except _ERRORS as exc:
                failure = failure or describe_error(exc)
            nursery.cancel_scope.cancel()
        return failure

    async def _writer(self, stream: trio.abc.Stream) -> None:
        while not self._closed:
            if self._out:
                batch, self._out = b"".join(self._out), []
                await stream.send_all(batch)
                continue
            await self._wake.wait()
            self._wake = trio.Event()

    async def _reader(self, stream: trio.abc.Stream) -> None:
        framer = StreamFramer()
        while True:
            data = await stream.receive_some(READ_CHUNK)
            if not data:
                raise trio.BrokenResourceError("connection closed by the registrar")
            pings, pongs = framer.pings, framer.pongs
            for msg in framer.feed(bytes(data)):
                self.on_message(msg)
            if self._pong is not None and (framer.pongs > pongs or framer.take_lone_pong()):
                self.keepalive_pongs += 1
                self._pong.set()
                self._pong = None
            if framer.pings > pings:
                self.pings_answered += framer.pings - pings
                self.send(b"\r\n" * (framer.pings - pings))

    async def _keepalive(self, interval: float) -> str:
        """Ping every `interval`; return the failure when a pong does not come in time."""
        while True:
            await trio.sleep(interval)
            pong = self._pong = trio.Event()
            self.keepalive_pings += 1
            self.send(PING)
            with trio.move_on_after(self.pong_timeout):
                await pong.wait()
                continue
            self._pong = None
            self.keepalive_missed += 1
            return f"no keep-alive pong within {self.pong_timeout:g} s (RFC 5626 flow failure)"

    async def _fail(self, reason: str) -> None:
        self.failures += 1
        stream, self._stream = self._stream, None
        self._out = []
        if stream is not None:
            with trio.move_on_after(1):
                await stream.aclose()
        self.on_failure(f"{self.host}:{self.port}: {reason}")

    async def aclose(self) -> None:
        self._closed = True
        self._wake.set()
        if self._stream is not None:
            with trio.move_on_after(1):
                await self._stream.aclose()
            self._stream = None


async def _open_tcp(host: str, port: int, local: tuple[str, int] | None) -> trio.SocketStream:
    if local is None:
        return await trio.open_tcp_stream(host, port)
    family = trio.socket.AF_INET6 if ":" in host else trio.socket.AF_INET
    sock = trio.socket.socket(family, trio.socket.SOCK_STREAM)
    try:
        await sock.bind(local)
        await sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ is not None:
        return describe_error(exc.__cause__)   # trio wraps TLS failures
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, ParseError):
        return f"unparseable data from the registrar: {exc}"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc) or type(exc).__name__
