"""A UDP relay for a test host: a lossy hop (netem is not in this machine's kernel) and a wire tap.

    python tests/udp_relay.py --listen 198.18.5.20:5060 --to 198.18.5.10:5060 --drop-every 5 --stats FILE

Every datagram a client sends to the listen address goes on to `--to` from an upstream socket of that
client's own (so the registrar sees one source per client, as behind a NAT); what the registrar
answers goes back to the client from the listen address. The relay drops datagram number k (counted
over both directions, from 1) when k % drop_every == 0: a deterministic share, 1/drop_every. It also
notes, for each client, the source address it saw and the Via sent-by and Contact of that client's
first REGISTER, and the top Via of the first response (with the registrar's received/rport).

It prints "relaying" once bound; on SIGTERM / SIGINT it writes its counts as JSON to `--stats` and exits.
Standard library only: it runs under `ip netns exec` with any Python.
"""

from __future__ import annotations

import argparse
import json
import re
import selectors
import signal
import socket
import sys
from pathlib import Path

_HEADER = re.compile(rb"^(via|v|contact|m)[ \t]*:[ \t]*(.*?)\r?$", re.IGNORECASE | re.MULTILINE)


def _first(data: bytes, names: tuple[bytes, ...]) -> str | None:
    for m in _HEADER.finditer(data):
        if m.group(1).lower() in names:
            return m.group(2).decode(errors="replace").strip()
    return None


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True)
    parser.add_argument("--to", required=True)
    parser.add_argument("--drop-every", type=int, default=0)
    parser.add_argument("--stats", required=True)
    args = parser.parse_args(argv)
    listen, upstream = _address(args.listen), _address(args.to)
    family = socket.AF_INET6 if ":" in listen[0] else socket.AF_INET
    front = socket.socket(family, socket.SOCK_DGRAM)
    front.bind(listen)
    sel = selectors.DefaultSelector()
    sel.register(front, selectors.EVENT_READ, None)
    backs: dict[tuple[str, int], socket.socket] = {}    # client -> its upstream socket
    stats: dict[str, object] = {"forwarded_up": 0, "forwarded_down": 0, "dropped_up": 0, "dropped_down": 0,
                                "clients": {}}
    clients: dict[str, dict[str, object]] = {}
    stats["clients"] = clients
    seen = 0
    running = True

    def finish(*_: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, finish)
    signal.signal(signal.SIGINT, finish)

    def drop() -> bool:
        nonlocal seen
        seen += 1
        return args.drop_every > 0 and seen % args.drop_every == 0

    print("relaying", flush=True)
    while running:
        for key, _ in sel.select(timeout=0.2):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data, addr = sock.recvfrom(65535)
            except OSError:
                continue
            if key.data is None:    # from a client
                client = (str(addr[0]), int(addr[1]))
                note = clients.setdefault(f"{client[0]}|{client[1]}", {"source": list(client)})
                if data.startswith(b"REGISTER ") and "via" not in note:
                    note["via"] = _first(data, (b"via", b"v"))
                    note["contact"] = _first(data, (b"contact", b"m"))
                if drop():
                    stats["dropped_up"] = int(stats["dropped_up"]) + 1  # type: ignore[call-overload]
                    continue
                back = backs.get(client)
                if back is None:
                    back = socket.socket(family, socket.SOCK_DGRAM)
                    back.bind((listen[0], 0))
                    backs[client] = back
                    sel.register(back, selectors.EVENT_READ, client)
                back.sendto(data, upstream)
                stats["forwarded_up"] = int(stats["forwarded_up"]) + 1  # type: ignore[call-overload]
            else:                   # from the registrar, for client key.data
                client = key.data
                note = clients.setdefault(f"{client[0]}|{client[1]}", {"source": list(client)})
                if data.startswith(b"SIP/2.0 ") and "response_via" not in note:
                    note["response_via"] = _first(data, (b"via", b"v"))
                if drop():
                    stats["dropped_down"] = int(stats["dropped_down"]) + 1  # type: ignore[call-overload]
                    continue
                front.sendto(data, client)
                stats["forwarded_down"] = int(stats["forwarded_down"]) + 1  # type: ignore[call-overload]
    Path(args.stats).write_text(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
