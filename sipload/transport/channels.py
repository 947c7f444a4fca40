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
) -> MessageChannel:
    """A not yet connected channel for `transport` (upper case: TCP, TLS, WS, WSS) to `host:port`.

    `tls` is used for TLS and WSS (WSS without it: verification on, the system's CAs); `ws_path`
    is the resource of the WebSocket handshake (RFC 7118: WS and WSS).
    """
    if transport not in STREAM_TRANSPORTS:
        raise ValueError(f"not a connection-oriented transport: {transport!r}")
    if transport in ("WS", "WSS"):
        return WebSocketChannel(host, port, on_message, on_failure, local_host=local_host, path=ws_path,
                                tls=(tls or TlsOptions()) if transport == "WSS" else None)
    return StreamChannel(host, port, on_message, on_failure, tls=tls if transport == "TLS" else None,
                         local_host=local_host)
