"""Which local address a socket binds toward a destination, and how an address is written in SIP.

A registrar on another host is reached from the address the kernel routes from toward it, never from
loopback: `routed_source` asks the kernel (a UDP socket `connect`ed to the destination sends nothing,
yet its `getsockname()` is the source address the routing table chose). A loopback destination is
routed from loopback, so runs on one host keep binding 127.0.0.1 / ::1.

`hostport` is the one place an address and port become SIP text (Via sent-by, Contact): IPv6 in
brackets (RFC 3261 §25.1). `check_local` says whether this host has an address (for
`source_addresses`: binding one it does not have fails with EADDRNOTAVAIL).
"""

from __future__ import annotations

import errno
import socket

Address = tuple[str, int]


class AddressError(Exception):
    """An address this host cannot send from (a message for the user)."""


def family_of(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def hostport(host: str, port: int) -> str:
    """'198.18.0.1', 5080 -> '198.18.0.1:5080'; '2001:db8::1', 5080 -> '[2001:db8::1]:5080'."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def routed_source(destination: Address) -> str:
    """The local address the kernel sends from toward `destination` (no packet is sent)."""
    host, port = destination
    with socket.socket(family_of(host), socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((host, port or 5060))
        except OSError as exc:
            raise AddressError(f"no route from this host to {hostport(host, port)}: "
                               f"{exc.strerror or exc}") from None
        return str(sock.getsockname()[0])


def check_local(host: str) -> str | None:
    """None when this host has address `host`; else why it cannot be bound."""
    with socket.socket(family_of(host), socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((host, 0))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                return "this host has no such address"
            return exc.strerror or str(exc)
    return None
