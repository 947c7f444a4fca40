"""Where a worker's requests go: its sockets and connections, one route per destination.

Theory of operation
-------------------
A worker is given its destinations per transport (upper case: UDP, TCP, TLS..., or "*" for any),
each an ordered list (RFC 3263 §4.3: an endpoint starts on the first and moves to the next when an
operation fails in a way that may pass; the move itself is `Endpoint.move_to`). `Routes` opens,
for every device group with endpoints in the worker's shard, a list of *slots*: ``slots[s][d]`` is
the `Channel` that sends from local socket / connection s to destination d. Endpoints are placed
on the slots round robin, so each gets one route per destination.

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
from sipload.transport.channels import MessageChannel, open_stream_channel
from sipload.transport.stream import TlsOptions, describe_error
from sipload.transport.udp import Address, UdpSocket

# where requests go, per transport (upper case: UDP, TCP, TLS...), in failover order
Destinations = Mapping[str, Sequence[Address]]


class WorkerError(Exception):
    """The worker could not start (e.g. no connection to the registrar): a message for the user."""


@dataclass(frozen=True, slots=True)
class Channel:
    """How an endpoint sends: its local address (for Via and Contact) and a send function."""

    local: tuple[str, int]
    send: Callable[[bytes], object]
    key: int = -1     # a stream channel's number (its failures reach the endpoints on it); -1 for UDP


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
        self._udp_pool: dict[tuple[str, ...], list[UdpSocket]] = {}
        self._stream_pool: dict[tuple[str, tuple[str, ...]], list[list[Channel]]] = {}

    def destinations_for(self, transport: str) -> tuple[Address, ...]:
        """The destinations of a transport (upper case), in failover order."""
        found = self.destinations.get(transport) or self.destinations.get("*")
        if not found:
            raise WorkerError(f"no destination for {transport} (the registrar does not serve it)")
        return tuple(found)

    def _source_hosts(self, sources: AddressRange | None = None, destination: Address | None = None) -> list[str]:
        if sources is None:
            sources = self.scenario.endpoints.source_addresses
        if sources is not None:
            return [sources[i] for i in range(len(sources))]
        return ["::1" if ":" in (destination or self.destination)[0] else "127.0.0.1"]

    def _group_sources(self, group: Group) -> AddressRange | None:
        # a group's own source_addresses, else [endpoints]' (which a cluster shard may have sliced)
        return group.endpoints.source_addresses if group.own_sources else self.scenario.endpoints.source_addresses

    def open_udp(self, count: int, group: Group | None = None) -> list[list[Channel]]:
        """Slots (socket) x destinations: ``slots[s][d]`` sends from socket s to destination d."""
        dests = self.destinations_for("UDP")
        sources = self._group_sources(group) if group is not None else None
        hosts = self._source_hosts(sources, dests[0])
        per_endpoint = (group.endpoints if group is not None else self.scenario.endpoints).socket
        if per_endpoint is SocketMode.PER_ENDPOINT:
            small = 256 * 1024
            socks = [UdpSocket(hosts[i % len(hosts)], 0, buffer_bytes=small) for i in range(count)]
            self.sockets.extend(socks)
        else:
            key = tuple(hosts)
            socks = self._udp_pool.get(key, [])
            if not socks:
                socks = [UdpSocket(h, 0) for h in hosts[: max(1, min(len(hosts), count))]]
                self._udp_pool[key] = socks
                self.sockets.extend(socks)
        return [[Channel(sock.local, _udp_sender(sock, d)) for d in dests] for sock in socks]

    def _stream_pool_key(self, group: Group, transport: str) -> tuple[str, tuple[str, ...]] | None:
        """The key under which a group's connections are shared (None: one per endpoint)."""
        if group.endpoints.socket is SocketMode.PER_ENDPOINT:
            return None
        return (transport, tuple(self._source_hosts(self._group_sources(group), self.destinations_for(transport)[0])))

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
        hosts = self._source_hosts(self._group_sources(group) if group is not None else None, dests[0])
        shared = ep.socket is not SocketMode.PER_ENDPOINT
        pool_key = (transport, tuple(hosts))
        if shared and pool_key in self._stream_pool:
            return self._stream_pool[pool_key]
        n = count if not shared else min(len(hosts), count)
        slots: list[list[Channel]] = []
        for k in range(max(1, n)):
            routes: list[Channel] = []
            problem = ""
            for dest in dests:
                key = len(self.streams)
                stream = open_stream_channel(
                    transport, dest[0], dest[1], self._on_message,
                    self._on_failure_for(key), tls=tls, local_host=hosts[k % len(hosts)],
                    ws_path=target.ws_path, keepalive=keepalive,
                )
                try:
                    await stream.connect()
                except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
                    problem = problem or f"{dest[0]}:{dest[1]}: {describe_error(exc)}"
                    continue
                self.streams.append(stream)
                routes.append(Channel(stream.local, stream.send, key))
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
