"""Where a worker's requests go: its sockets and connections, one route per destination.

Theory of operation
-------------------
A worker is given its destinations per transport (upper case: UDP, TCP, TLS..., or "*" for any),
each an ordered list (RFC 3263 §4.3: an endpoint starts on the first and moves to the next when an
operation fails in a way that may pass; the move itself is `Endpoint.move_to`). `Routes` opens,
for every device group with endpoints in the worker's shard, a list of *slots*: ``slots[s][d]`` is
the `Channel` that sends from local socket / connection s to destination d. Endpoints are placed
on the slots round robin, so each gets one route per destination.

Sockets bind, by default, the address the kernel routes from toward each destination (a registrar on
another host is reached from the load host's own address, a loopback one from loopback; a failover list
across networks gets a socket per network); `source_addresses` gives a range of the host's addresses
instead. Via sent-by and Contact carry each socket's real address and port (`Channel.sent_by`), or the
group's `advertised_address` with the real port, whatever is bound.

UDP groups share one socket per source address (or get one per endpoint, `socket = "per-endpoint"`);
stream groups (TCP, TLS, WS, WSS) share connections the same way, keyed by transport and source
addresses. A destination that refuses a connection is left out of the slot's routes; when every one
refuses, the worker cannot start (`WorkerError`). A stream group with `keepalive` gets
channels that ping at that interval (the smallest one of the groups sharing a channel), and
`channel_groups` remembers which groups are on each stream channel for the per-group counters.

Nothing here runs per message: the channels' send functions are what endpoints call, and the
worker's reader tasks serve `sockets` and `streams`.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import trio

from sipload.scenario import Scenario, SocketMode
from sipload.scenario.endpoints import AddressRange
from sipload.scenario.groups import FleetPlan, Group
from sipload.sip.message import Request, Response
from sipload.transport.addresses import AddressError, hostport, routed_source
from sipload.transport.channels import MessageChannel, open_stream_channel
from sipload.transport.stream import TlsOptions, describe_error
from sipload.transport.udp import Address, UdpSocket

# where requests go, per transport (upper case: UDP, TCP, TLS...), in failover order
Destinations = Mapping[str, Sequence[Address]]


class WorkerError(Exception):
    """The worker could not start (e.g. no connection to the registrar): a message for the user."""


@dataclass(frozen=True, slots=True)
class Channel:
    """How an endpoint sends: its local address, a send function, and what Via and Contact say of it."""

    local: tuple[str, int]
    send: Callable[[bytes], object]
    key: int = -1     # a stream channel's number (its failures reach the endpoints on it); -1 for UDP
    sent_by: str = ""  # host:port for Via sent-by and Contact (advertised_address or the bound address)

    def __post_init__(self) -> None:
        if not self.sent_by:
            object.__setattr__(self, "sent_by", hostport(*self.local))


class Routes:
    """A worker's sockets and connections to its destinations (see the module docstring)."""

    def __init__(
        self,
        scenario: Scenario,
        destination: Address | Destinations,
        on_message: Callable[[Request | Response], None],
        on_failure: Callable[[int, str], None],
    ) -> None:
        self.scenario = scenario
        self.destinations: Destinations = (
            {"*": (destination,)} if isinstance(destination, tuple) else destination
        )
        first = next(iter(self.destinations.values()), ())
        if not first:
            raise WorkerError("no destination to send to")
        primary = next(iter(first))
        self.destination: Address = (str(primary[0]), int(primary[1]))  # the first of the first transport
        self.peers = {tuple(a) for addrs in self.destinations.values() for a in addrs}
        self.transport = scenario.target.transport.value.upper()  # the default group's
        self._on_message = on_message      # what a stream channel does with a message it framed
        self._on_failure = on_failure      # (channel key, reason): a stream channel failed
        self.sockets: list[UdpSocket] = []
        self.streams: list[MessageChannel] = []
        self.channel_groups: dict[int, set[int]] = {}       # stream channel key -> groups on it
        self._udp_pool: dict[tuple[tuple[str, ...], ...], dict[str, UdpSocket]] = {}   # shared: by address
        self._stream_pool: dict[tuple[object, ...], list[list[Channel]]] = {}
        self._routed: dict[str, str] = {}   # destination host -> the local address routed toward it

    def destinations_for(self, transport: str) -> tuple[Address, ...]:
        """The destinations of a transport (upper case), in failover order."""
        found = self.destinations.get(transport) or self.destinations.get("*")
        if not found:
            raise WorkerError(f"no destination for {transport} (the registrar does not serve it)")
        return tuple(found)

    def _source_hosts(self, sources: AddressRange | None, destination: Address) -> list[str]:
        """The local addresses to send from toward `destination`: the range given, else the routed one."""
        if sources is not None:
            return [sources[i] for i in range(len(sources))]
        host = self._routed.get(destination[0])
        if host is None:
            try:
                host = routed_source(destination)
            except AddressError as exc:
                raise WorkerError(str(exc)) from None
            self._routed[destination[0]] = host
        return [host]

    def _group_sources(self, group: Group | None) -> AddressRange | None:
        # a group's own source_addresses, else [endpoints]' (which a cluster shard may have sliced)
        if group is not None and group.own_sources:
            return group.endpoints.source_addresses
        return self.scenario.endpoints.source_addresses

    def _hosts(self, group: Group | None, dests: Sequence[Address]) -> list[list[str]]:
        """Per destination, the local addresses to send from (all of the same length)."""
        sources = self._group_sources(group)
        return [self._source_hosts(sources, d) for d in dests]

    def _channel(self, local: tuple[str, int], send: Callable[[bytes], object], group: Group | None,
                 key: int = -1) -> Channel:
        return Channel(local, send, key, hostport(self._advertised(group) or local[0], local[1]))

    def _advertised(self, group: Group | None) -> str | None:
        return (group.endpoints if group is not None else self.scenario.endpoints).advertised_address

    def open_udp(self, count: int, group: Group | None = None) -> list[list[Channel]]:
        """Slots (socket) x destinations: ``slots[s][d]`` sends from slot s's socket toward destination d
        (bound to the address routed toward d, so a failover list across networks has a socket per network)."""
        dests = self.destinations_for("UDP")
        hosts = self._hosts(group, dests)
        per_endpoint = (group.endpoints if group is not None else self.scenario.endpoints).socket
        if per_endpoint is SocketMode.PER_ENDPOINT:
            small = 256 * 1024
            slots = []
            for i in range(count):
                mine: dict[str, UdpSocket] = {}
                for h in hosts:
                    host = h[i % len(h)]
                    if host not in mine:
                        mine[host] = UdpSocket(host, 0, buffer_bytes=small)
                        self.sockets.append(mine[host])
                slots.append([mine[h[i % len(h)]] for h in hosts])
        else:
            key = tuple(tuple(h) for h in hosts)
            pool = self._udp_pool.setdefault(key, {})
            slots = []
            for i in range(max(1, min(len(hosts[0]), count))):
                row = []
                for h in hosts:
                    host = h[i % len(h)]
                    if host not in pool:
                        pool[host] = UdpSocket(host, 0)
                        self.sockets.append(pool[host])
                    row.append(pool[host])
                slots.append(row)
        return [[self._channel(sock.local, _udp_sender(sock, d), group) for sock, d in zip(row, dests, strict=True)]
                for row in slots]

    def _stream_pool_key(self, group: Group, transport: str) -> tuple[object, ...] | None:
        """The key under which a group's connections are shared (None: one per endpoint)."""
        if group.endpoints.socket is SocketMode.PER_ENDPOINT:
            return None
        hosts = self._hosts(group, self.destinations_for(transport))
        return (transport, tuple(tuple(h) for h in hosts), self._advertised(group))

    async def open_streams(self, count: int, group: Group | None = None,
                           transport: str | None = None, keepalive: float | None = None) -> list[list[Channel]]:
        """Slots x destinations of connections; a destination that refuses is left out of the slot's routes."""
        target = self.scenario.target
        transport = transport or self.transport
        dests = self.destinations_for(transport)
        tls: TlsOptions | None = None
        if transport in ("TLS", "WSS"):
            uri = target.outbound_proxy or target.uri
            tls = TlsOptions(verify=target.tls_verify, ca_file=target.tls_ca, cert_file=target.tls_cert,
                             key_file=target.tls_key, server_name=uri.host if uri is not None else None)
        ep = group.endpoints if group is not None else self.scenario.endpoints
        hosts = self._hosts(group, dests)
        shared = ep.socket is not SocketMode.PER_ENDPOINT
        pool_key = (transport, tuple(tuple(h) for h in hosts), self._advertised(group))
        if shared and pool_key in self._stream_pool:
            return self._stream_pool[pool_key]
        n = count if not shared else min(len(hosts[0]), count)
        slots: list[list[Channel]] = []
        for k in range(max(1, n)):
            routes: list[Channel] = []
            problem = ""
            for dest, h in zip(dests, hosts, strict=True):
                key = len(self.streams)
                stream = open_stream_channel(
                    transport, dest[0], dest[1], self._on_message,
                    self._on_failure_for(key), tls=tls, local_host=h[k % len(h)],
                    ws_path=target.ws_path, keepalive=keepalive,
                )
                try:
                    await stream.connect()
                except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
                    problem = problem or f"{hostport(*dest)}: {describe_error(exc)}"
                    continue
                self.streams.append(stream)
                routes.append(self._channel(stream.local, stream.send, group, key))
            if not routes:
                for s in self.streams:
                    await s.aclose()
                where = problem if len(dests) == 1 else f"any of {len(dests)} destinations ({problem})"
                raise WorkerError(f"cannot connect over {transport} to {where}")
            slots.append(routes)
        if shared:
            self._stream_pool[pool_key] = slots
        return slots

    def _on_failure_for(self, key: int) -> Callable[[str], None]:
        on_failure = self._on_failure

        def failed(reason: str) -> None:
            on_failure(key, reason)

        return failed

    async def open_all(self, plan: FleetPlan, mine: Sequence[int]) -> dict[int, list[list[Channel]]]:
        """The channel slots of every group with endpoints in this shard."""
        counts = [0] * len(plan.groups)
        for i in mine:
            counts[plan.group[i]] += 1
        # a shared connection pings at the smallest keep-alive interval of the groups on it
        intervals: dict[object, float] = {}
        for g, group in enumerate(plan.groups):
            transport = group.transport.value.upper()
            if counts[g] and transport != "UDP" and group.keepalive > 0:
                where = self._stream_pool_key(group, transport) or g
                intervals[where] = min(intervals.get(where, math.inf), group.keepalive)
        slots: dict[int, list[list[Channel]]] = {}
        for g, group in enumerate(plan.groups):
            if not counts[g]:
                continue
            transport = group.transport.value.upper()
            if transport == "UDP":
                slots[g] = self.open_udp(counts[g], group)
            else:
                keepalive = intervals.get(self._stream_pool_key(group, transport) or g)
                slots[g] = await self.open_streams(counts[g], group, transport, keepalive)
                for routes in slots[g]:
                    for channel in routes:
                        self.channel_groups.setdefault(channel.key, set()).add(g)
        return slots

    def stream_keepalive_counts(self, plan: FleetPlan) -> tuple[dict[str, list[int]], list[int]]:
        """The stream channels' CRLF keep-alive counters [pings, pongs, missed], per group name (a channel
        shared by several groups counts in each of them) and over all channels (each counted once)."""
        total = [0, 0, 0]
        per_group: dict[str, list[int]] = {}
        for key, stream in enumerate(self.streams):
            counts = (stream.keepalive_pings, stream.keepalive_pongs, stream.keepalive_missed)
            total = [a + b for a, b in zip(total, counts, strict=True)]
            for g in sorted(self.channel_groups.get(key, ())):
                name = plan.groups[g].name
                per_group[name] = [a + b for a, b in zip(per_group.get(name, [0, 0, 0]), counts, strict=True)]
        return per_group, total


def _udp_sender(sock: UdpSocket, dest: Address) -> Callable[[bytes], object]:
    def send(data: bytes) -> bool:
        return sock.send(data, dest)

    return send
