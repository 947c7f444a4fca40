"""Before a run: is anything answering SIP at the target? (OPTIONS over UDP, a few retransmissions.)

A load run against a registrar that is not there would otherwise spend Timer F (32 s) times the
retries on every endpoint before saying anything useful. One OPTIONS with a short deadline turns
that into a clear message at once. The probe sends from the address routed toward the target (the
engine's sockets bind the same one), so a registrar on another host answers it where it would answer
the endpoints.
"""

from __future__ import annotations

import trio

from sipload.sip.errors import ParseError
from sipload.sip.ids import IdSource
from sipload.sip.message import Response
from sipload.sip.parser import parse_message
from sipload.transport.addresses import hostport, routed_source
from sipload.transport.udp import Address, UdpSocket


async def probe_udp(destination: Address, domain: str, *, timeout: float = 4.0) -> Response | str:
    """The first response to an OPTIONS, or a sentence saying why there is none (AddressError: no route)."""
    ids = IdSource()
    with UdpSocket(routed_source(destination), 0, buffer_bytes=65536) as sock:
        local = hostport(sock.host, sock.port)
        call_id = ids.call_id()
        request = (
            f"OPTIONS sip:{domain} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {local};branch={ids.branch()};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:probe@{domain}>;tag={ids.tag()}\r\nTo: <sip:{domain}>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        got: list[Response] = []
        done = trio.Event()

        def on_datagram(data: bytes, addr: Address) -> None:
            try:
                msg = parse_message(data)
            except ParseError:
                return
            if isinstance(msg, Response) and msg.headers.get("call-id") == call_id and msg.status >= 200:
                got.append(msg)
                done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sock.serve, on_datagram)
            interval = 0.25
            with trio.move_on_after(timeout):
                while not done.is_set():
                    sock.send(request, destination)
                    with trio.move_on_after(interval):
                        await done.wait()
                    interval = min(interval * 2, 1.0)
            nursery.cancel_scope.cancel()
        if got:
            return got[0]
        why = "connection refused (ICMP port unreachable)" if sock.last_error is not None else "no answer"
        return f"no SIP answer from udp {hostport(*destination)} within {timeout:g} s: {why}"
