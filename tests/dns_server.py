"""A DNS server on loopback for tests: dnspython's message encoding on a UDP socket, answering from a zone.

    zone = {
        "registrar.test": [("NAPTR", '10 50 "s" "SIP+D2U" "" _sip._udp.registrar.test.')],
        "_sip._udp.registrar.test": [("SRV", "10 0 5070 a.registrar.test.")],
        "a.registrar.test": [("A", "127.0.0.1"), ("AAAA", "::1")],
    }
    server = DnsServer(zone)
    port = await nursery.start(server.serve)        # 127.0.0.1:port, until cancelled

A name in the zone answers NOERROR with its records of the asked type (none: an empty answer); a name not
in the zone answers NXDOMAIN. Records go out in the zone's order (dnspython would shuffle them, as BIND
rotates them; `shuffle=True` does). `drop = True` makes it swallow every query (a nameserver that does not
answer: timeouts). `queries` lists what was asked, as (name, type), so a test can show that no DNS was
used, or that NAPTR was skipped. It runs as a trio task in the test's own loop, which keeps it usable
with the autojump clock (a datagram on loopback is ready as soon as it is sent).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import trio

Zone = Mapping[str, Sequence[tuple[str, str]]]  # name -> [(type, rdata text)]


def _key(name: str) -> str:
    return name.lower().rstrip(".")


class DnsServer:
    def __init__(self, zone: Zone, *, ttl: int = 60, shuffle: bool = False) -> None:
        self.zone = {_key(name): list(records) for name, records in zone.items()}
        self.ttl = ttl
        self.shuffle = shuffle
        self.drop = False
        self.queries: list[tuple[str, str]] = []

    def answer(self, wire: bytes) -> bytes | None:
        """The response to one query datagram (None to stay silent)."""
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return None
        response = dns.message.make_response(query)
        for question in query.question:
            name, rdtype = _key(question.name.to_text()), dns.rdatatype.to_text(question.rdtype)
            self.queries.append((name, rdtype))
            if name not in self.zone:
                response.set_rcode(dns.rcode.NXDOMAIN)
                continue
            rdatas = [text for kind, text in self.zone[name] if kind.upper() == rdtype]
            if rdatas:
                response.answer.append(
                    dns.rrset.from_text(question.name, self.ttl, dns.rdataclass.IN, rdtype, *rdatas)
                )
        if self.drop:
            return None
        return response.to_wire(want_shuffle=self.shuffle)

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Answer on 127.0.0.1 (a free port, given to `nursery.start`) until cancelled."""
        with trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM) as sock:
            await sock.bind(("127.0.0.1", 0))
            task_status.started(sock.getsockname()[1])
            while True:
                data, peer = await sock.recvfrom(65535)
                reply = self.answer(data)
                if reply is not None:
                    await sock.sendto(reply, peer)
