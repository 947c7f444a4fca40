"""Where the registrar listens: `udp:127.0.0.1:5062`, `tcp:[::1]:5062`, `tls:127.0.0.1:5063`,
`ws:127.0.0.1:8080`, `wss:127.0.0.1:8443` (SIP over WebSocket, RFC 7118)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss")
TLS_TRANSPORTS = ("tls", "wss")   # need a certificate
LISTEN_HINT = "expected TRANSPORT:HOST:PORT with TRANSPORT udp, tcp, tls, ws or wss, e.g. udp:127.0.0.1:5062"


@dataclass(frozen=True, slots=True)
class Listen:
    transport: str   # "udp" | "tcp" | "tls" | "ws" | "wss"
    host: str        # an IP address (IPv6 without brackets)
    port: int        # 0: any free port (the server reports the real one)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Listen:
        """Parse `TRANSPORT:HOST:PORT`; ValueError with a clear message otherwise."""
        transport, sep, rest = text.strip().partition(":")
        transport = transport.lower()
        if not sep or transport not in TRANSPORTS:
            raise ValueError(f"{text!r}: unknown transport {transport!r}; {LISTEN_HINT}")
        if rest.startswith("["):
            host, sep, port_text = rest[1:].partition("]:")
        else:
            host, sep, port_text = rest.rpartition(":")
        if not sep or not host:
            raise ValueError(f"{text!r}: missing host or port; {LISTEN_HINT}")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{text!r}: host {host!r} is not an IP address; {LISTEN_HINT}") from None
        if not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
            raise ValueError(f"{text!r}: port {port_text!r} is not a number 0-65535; {LISTEN_HINT}")
        return cls(transport, host, int(port_text))
