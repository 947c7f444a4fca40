"""HOST:PORT as the options and scenario keys that name a listening address write it."""

from __future__ import annotations


def parse_host_port(text: str) -> tuple[str, int]:
    """'127.0.0.1:8089' | '[::1]:8089' | ':8089' (loopback) -> (host, port). ValueError otherwise."""
    value = text.strip()
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
    else:
        host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{text!r}: expected HOST:PORT such as 127.0.0.1:8089")
    return host or "127.0.0.1", int(port)
