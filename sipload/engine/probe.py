"""Before a run: is anything answering SIP at the target? (OPTIONS over UDP, then a REGISTER query.)

A load run against a registrar that is not there would otherwise spend Timer F (32 s) times the
retries on every endpoint before saying anything useful. One OPTIONS with a short deadline turns
that into a clear message at once. Many SBCs and registrars drop OPTIONS from unknown sources while
they answer REGISTER, so when OPTIONS has no answer after ``options_wait`` the probe also sends a
REGISTER without Contact (a query of the AoR's bindings, RFC 3261 10.2.4: it changes no binding, and
carries no credentials): any answer to either means the registrar is there, and the run goes on (with
a warning when only the REGISTER was answered). Neither answered within ``timeout``: the run stops.

The probe sends from the address routed toward the target (the engine's sockets bind the same one), so
a registrar on another host answers it where it would answer the endpoints.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio

from sipload.sip.errors import ParseError
from sipload.sip.ids import IdSource
from sipload.sip.message import Response
from sipload.sip.parser import parse_message
from sipload.transport.addresses import hostport, routed_source
from sipload.transport.udp import Address, UdpSocket

PROBE_TIMEOUT = 4.0  # seconds until a target that answers neither OPTIONS nor REGISTER fails the run
OPTIONS_WAIT = 1.0  # seconds of OPTIONS alone before the REGISTER query goes too


@dataclass(frozen=True, slots=True)
class ProbeOutcome:
    options: Response | None  # the final answer to OPTIONS, if any
    register: Response | None  # the answer to the REGISTER query (sent only when OPTIONS was slow)
    problem: str | None  # why nothing answered (None: something did)

    def warning(self, waited: float = OPTIONS_WAIT) -> str | None:
        """A line for a target that answered REGISTER but not OPTIONS (None otherwise)."""
        if self.options is not None or self.register is None:
            return None
        return (f"no answer to OPTIONS within {waited:g} s, but a REGISTER was answered "
                f"({self.register.status} {self.register.reason}): going on without the OPTIONS check")


async def probe_udp(destination: Address, domain: str, *, user: str = "probe", timeout: float = PROBE_TIMEOUT,
                    options_wait: float = OPTIONS_WAIT) -> ProbeOutcome:
    """OPTIONS, and after ``options_wait`` without its answer a REGISTER query for ``user@domain``."""
    ids = IdSource()
    with UdpSocket(routed_source(destination), 0, buffer_bytes=65536) as sock:
        local = hostport(sock.host, sock.port)
        options_id, register_id = ids.call_id(), ids.call_id()
        options = _request("OPTIONS", f"sip:{domain}", f"sip:probe@{domain}", f"sip:{domain}", options_id, local,
                           ids)
        register = _request("REGISTER", f"sip:{domain}", f"sip:{user}@{domain}", f"sip:{user}@{domain}",
                            register_id, local, ids)
        got: dict[str, Response] = {}
        done = trio.Event()

        def on_datagram(data: bytes, addr: Address) -> None:
            try:
                msg = parse_message(data)
            except ParseError:
                return
            if not isinstance(msg, Response):
                return
            call_id = msg.headers.get("call-id")
            if call_id == options_id and msg.status >= 200:
                got.setdefault("OPTIONS", msg)
                done.set()
            elif call_id == register_id:  # even a provisional answer shows the registrar is there
                got.setdefault("REGISTER", msg)
                done.set()

        async def send(request: bytes, after: float) -> None:
            with trio.move_on_after(after):
                await done.wait()
            interval = 0.25
            while not done.is_set():
                sock.send(request, destination)
                with trio.move_on_after(interval):
                    await done.wait()
                interval = min(interval * 2, 1.0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sock.serve, on_datagram)
            nursery.start_soon(send, options, 0.0)
            nursery.start_soon(send, register, options_wait)
            with trio.move_on_after(timeout):
                await done.wait()
            nursery.cancel_scope.cancel()
    if got:
        return ProbeOutcome(got.get("OPTIONS"), got.get("REGISTER"), None)
    why = "connection refused (ICMP port unreachable)" if sock.last_error is not None else "no answer"
    return ProbeOutcome(None, None, f"no SIP answer from udp {hostport(*destination)} within {timeout:g} s "
                                    f"(to OPTIONS nor to a REGISTER): {why}")


def _request(method: str, uri: str, from_uri: str, to_uri: str, call_id: str, local: str, ids: IdSource) -> bytes:
    return (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {local};branch={ids.branch()};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <{from_uri}>;tag={ids.tag()}\r\nTo: <{to_uri}>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    ).encode()
