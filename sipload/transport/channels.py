"""The connection-oriented channels (TCP, TLS, WS, WSS) behind one interface.

The engine opens every connection-oriented channel through `open_stream_channel`, whatever the
transport: it gets an object with `StreamChannel`'s interface (`local`, `send`, `connect`, `run`,
`aclose`), so a new transport is a new class here and no change in the worker.
"""

from __future__ import annotations

from typing import Protocol

from sipload.transport.stream import FailureHandler, MessageHandler, StreamChannel, TlsOptions
from sipload.transport.websocket import WebSocketChannel

STREAM_TRANSPORTS = ("TCP", "TLS", "WS", "WSS")


class MessageChannel(Protocol):
    """What the worker needs of a connection to the registrar."""

    local: tuple[str, int]
    keepalive_pings: int      # our keep-alive pings (CRLF, or WebSocket ping frames), their pongs,
    keepalive_pongs: int      # and the pongs that never came
    keepalive_missed: int

    def send(self, data: bytes) -> bool: ...

    async def connect(self) -> None: ...

    async def run(self) -> None: ...

    async def aclose(self) -> None: ...


def open_stream_channel(
    transport: str,
    host: str,
    port: int,
    on_message: MessageHandler,
    on_failure: FailureHandler,
    *,
    tls: TlsOptions | None = None,
    local_host: str | None = None,
    ws_path: str = "/",
    keepalive: float | None = None,
) -> MessageChannel:
    """A not yet connected channel for `transport` (upper case: TCP, TLS, WS, WSS) to `host:port`.

    `tls` is used for TLS and WSS (WSS without it: verification on, the system's CAs); `ws_path`
    is the resource of the WebSocket handshake (RFC 7118: WS and WSS). `keepalive`
    (seconds; None or 0: off): the channel pings the registrar at that interval (RFC 5626 §4.4.1:
    CRLFCRLF on TCP/TLS, a WebSocket ping frame on WS/WSS) and a missed pong is a flow failure.
    """
    if transport not in STREAM_TRANSPORTS:
        raise ValueError(f"not a connection-oriented transport: {transport!r}")
    interval = keepalive or None
    if transport in ("WS", "WSS"):
        return WebSocketChannel(host, port, on_message, on_failure, local_host=local_host, path=ws_path,
                                tls=(tls or TlsOptions()) if transport == "WSS" else None, keepalive=interval)
    return StreamChannel(host, port, on_message, on_failure, tls=tls if transport == "TLS" else None,
                         local_host=local_host, keepalive=interval)
