"""The SIP side of the Ultravox emulator: it REGISTERs the way Ultravox does for each SIP registration.

Theory of operation
-------------------
Ultravox is a SIP *client*: a registration tells it to REGISTER `username` (digest user `authUser`
or `username`) to `proxy`, through `outboundProxy` when given. `SipAgent` runs every such
registration with sipload's own sans-IO `Registration` machine over a `UdpSocket` per local address:
the one the kernel routes from toward the registration's destination (a registrar on another host is
reached from this host's own address, a loopback one from loopback), or `host` when given. Via and
Contact carry that socket's address and port.

* one task per socket drains it and feeds each response to the registration with its Call-ID;
* one task sleeps until the earliest `next_timer()` (or until woken by a new registration or a
  response) and calls `handle_timer(now)`: retransmissions, timeouts, refreshes;
* after each input the registration's outgoing bytes go to its destination and its events set
  `successful`: True on `Registered`, False on a final `Failed` of a REGISTER or refresh, None
  until the first outcome (as Ultravox's read-only field).

`stop(id)` unregisters (REGISTER Expires: 0) and the registration is dropped once that ends.
Only UDP is spoken; time is `trio.current_time()` (MockClock in tests).
"""

from __future__ import annotations

import math
import socket
from dataclasses import dataclass

import trio

from sipload.sip.digest import DigestClient
from sipload.sip.errors import ParseError
from sipload.sip.ids import IdSource
from sipload.sip.message import Response
from sipload.sip.parser import parse_message
from sipload.sip.registration import Failed, Op, Profile, Registered, Registration, Unregistered
from sipload.transport.addresses import hostport, routed_source
from sipload.transport.udp import Address, UdpSocket

DEFAULT_SIP_PORT = 5060


def split_hostport(text: str) -> tuple[str, int]:
    """'sip:host:5062;transport=udp' | 'host' | '[::1]:5060' -> (host, port). ValueError when empty."""
    value = text.strip()
    if value.lower().startswith("sip:"):
        value = value[4:]
    value = value.split(";", 1)[0].rpartition("@")[2]
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif value.count(":") == 1:
        host, _, port_text = value.partition(":")
    else:
        host, port_text = value, ""
    if not host:
        raise ValueError(f"no host in {text!r}")
    if port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536):
        raise ValueError(f"invalid port in {text!r}")
    return host, int(port_text) if port_text else DEFAULT_SIP_PORT


async def resolve(text: str) -> Address:
    host, port = split_hostport(text)
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    if not infos:
        raise OSError(f"cannot resolve {host!r}")
    addr = infos[0][4]
    return str(addr[0]), int(addr[1])


@dataclass
class AgentEntry:
    reg: Registration
    destination: Address
    sock: UdpSocket
    successful: bool | None = None
    detail: str = ""
    stopping: bool = False


class SipAgent:
    def __init__(self, host: str | None = None, *, expires: int = 300, ids: IdSource | None = None) -> None:
        self.host = host            # None: the address routed toward each destination
        self.expires = expires
        self._ids = ids if ids is not None else IdSource()
        self._sockets: dict[str, UdpSocket] = {}   # local address -> its socket
        self._nursery: trio.Nursery | None = None
        self._entries: dict[str, AgentEntry] = {}   # registration id -> entry
        self._by_call_id: dict[str, AgentEntry] = {}
        self._wake = trio.Event()

    def local_for(self, destination: Address) -> Address:
        """The local address and port the agent sends from toward `destination` (its socket opened if new)."""
        return self._socket_for(destination).local

    def _socket_for(self, destination: Address) -> UdpSocket:
        if self._nursery is None:
            raise RuntimeError("SipAgent is not running")
        host = self.host or routed_source(destination)
        sock = self._sockets.get(host)
        if sock is None:
            sock = UdpSocket(host, 0)
            self._sockets[host] = sock
            self._nursery.start_soon(sock.serve, self._on_datagram)
        return sock

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._timers)
                task_status.started()
        finally:
            self._nursery = None
            for sock in self._sockets.values():
                sock.close()
            self._sockets.clear()

    def start(self, reg_id: str, *, username: str, password: str, proxy: str, outbound_proxy: str | None,
              auth_user: str | None, destination: Address) -> AgentEntry:
        """Begin registering (the caller resolved `destination`: outboundProxy, else proxy). AddressError when
        this host has no route toward it."""
        sock = self._socket_for(destination)
        sent_by = hostport(sock.host, sock.port)
        domain = proxy.removeprefix("sip:").split(";", 1)[0]
        profile = Profile(
            domain=domain, registrar_uri=f"sip:{domain}", expires=self.expires, user_agent="Ultravox",
            route=f"<sip:{outbound_proxy.removeprefix('sip:')};lr>" if outbound_proxy else None,
        )
        auth = DigestClient(auth_user or username, password, cnonce=self._ids.cnonce)
        reg = Registration(profile, user=username, contact=f"sip:{username}@{sent_by};transport=udp",
                           sent_by=sent_by, auth=auth, ids=self._ids)
        entry = AgentEntry(reg, destination, sock)
        self.stop(reg_id)
        self._entries[reg_id] = entry
        self._by_call_id[reg.call_id] = entry
        reg.start(trio.current_time())
        self._flush(entry)
        return entry

    def stop(self, reg_id: str) -> None:
        entry = self._entries.pop(reg_id, None)
        if entry is None:
            return
        entry.stopping = True
        entry.reg.stop(trio.current_time())
        self._flush(entry)

    def outcome(self, reg_id: str) -> bool | None:
        entry = self._entries.get(reg_id)
        return None if entry is None else entry.successful

    def entry(self, reg_id: str) -> AgentEntry | None:
        return self._entries.get(reg_id)

    def _on_datagram(self, data: bytes, addr: Address) -> None:
        try:
            message = parse_message(data)
        except ParseError:
            return
        if not isinstance(message, Response):
            return
        entry = self._by_call_id.get(message.headers.get("call-id") or "")
        if entry is None:
            return
        entry.reg.receive(message, trio.current_time())
        self._flush(entry)

    async def _timers(self) -> None:
        while True:
            deadline = min((t for e in self._by_call_id.values() if (t := e.reg.next_timer()) is not None),
                           default=math.inf)
            with trio.move_on_at(deadline):
                await self._wake.wait()
            self._wake = trio.Event()
            now = trio.current_time()
            for entry in list(self._by_call_id.values()):
                due = entry.reg.next_timer()
                if due is not None and due <= now:
                    entry.reg.handle_timer(now)
                    self._flush(entry)

    def _flush(self, entry: AgentEntry) -> None:
        reg = entry.reg
        sock = entry.sock if self._nursery is not None else None
        for data in reg.take_outgoing():
            if sock is not None:
                sock.send(data, entry.destination)
        for event in reg.take_events():
            if isinstance(event, Registered):
                entry.successful = True
                entry.detail = ""
            elif isinstance(event, Failed) and event.final and event.op is not Op.UNREGISTER:
                entry.successful = False
                entry.detail = f"{event.reason.value}{': ' + event.detail if event.detail else ''}"
            elif isinstance(event, Unregistered):
                entry.successful = None
        if reg.finished and entry.stopping:
            self._by_call_id.pop(reg.call_id, None)
        self._wake.set()
