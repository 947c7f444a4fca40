"""One worker: a trio loop driving a shard of endpoints against one registrar.

Theory of operation
-------------------
Endpoints are not tasks. A worker has exactly two kinds of task: one reader per socket (it
drains the socket and hands each response to the endpoint that owns its Call-ID) and one
scheduler. The scheduler keeps a heap of (deadline, endpoint index) built from each machine's
`next_timer()`, and the open-loop arrival schedule (each registration has an intended start
time; a late start is measured, never hidden). It sleeps in a cancel scope whose deadline is the
earliest thing due, and anyone who makes something earlier due moves that deadline.

At the end of the run (its duration, or a stop request such as Ctrl-C) arrivals stop and every
endpoint is told to stop: the bound ones unregister, paced so that the unregister burst does not
overflow socket buffers, within the unregister timeout. Every `interval` the worker hands an
`IntervalSnapshot` to its sink (the parent's aggregate, in process or over a pipe).

Fleets [issue 8]: the scenario's device groups (`sipload.scenario.groups`) each get a Profile; the
worker opens channels for every transport its groups use, each to every destination of that
transport (an ordered list: an endpoint starts on the first and moves to the next when an operation
fails in a way that may pass, RFC 3263 §4.3). Behaviours run on the same scheduler, in virtual time
when the clock is mocked: a second heap holds the behaviour events (churn: vanish / return; flap:
unregister / register again; avalanche: a whole group registers again), and re-registrations queue
like arrivals (max_in_flight applies and their lag is measured from their intended time).

NAT keep-alives, outbound and GRUU [issue 8]: a group's Profile carries `outbound` / `gruu`, and each
device a `+sip.instance` that is a pure function of the scenario's name and the device's index
(`instance_for`), so a device that churns, flaps or avalanches comes back as the same instance. A
stream group with `keepalive` gets channels that send CRLF pings at that interval (the smallest one
of the groups sharing a channel; over WS a WebSocket ping frame); a missed pong is a flow failure
and the endpoints on that channel register again (`Registration.flow_failed`). A UDP group with
`keepalive` gives each device an `OptionsKeepalive` (sans-IO): it starts at the device's first 200,
stops when the device unregisters, fails or vanishes, and starts again when it is registered again.
Its answers are found by their Call-ID in a second map, looked up only when the registration map
misses, and its timers live on a third heap: endpoints of the other groups do no new work per
message (their Endpoint class is the plain one; FlowEndpoint is the subclass with these parts).
"""

from __future__ import annotations

import enum
import heapq
import math
import random
import ssl
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import trio

from sipload.engine.endpoint import Endpoint, FlowEndpoint, Tally
from sipload.metrics.phases import Phase
from sipload.metrics.recorder import IntervalSnapshot, Recorder
from sipload.report.result import EndpointState
from sipload.scenario import Scenario, SocketMode
from sipload.scenario.endpoints import AddressRange
from sipload.scenario.groups import FleetPlan, Group, Role, plan_fleet
from sipload.sip.digest import Algorithm, DigestClient
from sipload.sip.errors import ParseError
from sipload.sip.failures import FailureReason
from sipload.sip.ids import IdSource
from sipload.sip.keepalive import OptionsKeepalive, ReflexiveChanged
from sipload.sip.message import Request, Response
from sipload.sip.parser import parse_message
from sipload.sip.registration import Profile, Registration, RegState
from sipload.sip.transaction import Timers
from sipload.transport.channels import MessageChannel, open_stream_channel
from sipload.transport.memory import MemoryNetwork
from sipload.transport.stream import TlsOptions, describe_error
from sipload.transport.udp import Address, UdpSocket

Sink = Callable[[IntervalSnapshot], None]
# [issue 8] where requests go, per transport (upper case: UDP, TCP, TLS...), in failover order
Destinations = Mapping[str, Sequence[Address]]


class WorkerError(Exception):
    """The worker could not start (e.g. no connection to the registrar): a message for the user."""


@dataclass(frozen=True, slots=True)
class Channel:
    """How an endpoint sends: its local address (for Via and Contact) and a send function."""

    local: tuple[str, int]
    send: Callable[[bytes], object]
    key: int = -1     # a stream channel's number (its failures reach the endpoints on it); -1 for UDP


@dataclass(frozen=True, slots=True)
class Shard:
    """Which endpoints a worker drives: every `workers`-th one, starting at `worker`."""

    worker: int = 0
    workers: int = 1

    def indices(self, count: int) -> range:
        return range(self.worker, count, self.workers)


@dataclass(slots=True)
class WorkerReport:
    endpoints: list[EndpointState] = field(default_factory=list)
    first_arrival: float | None = None   # this worker's clock: compare only within one worker
    last_arrival: float | None = None
    arrival_period: float = 0.0          # last_arrival - first_arrival
    arrivals_started: int = 0
    stray: int = 0
    unparseable: int = 0
    send_errors: int = 0
    transport_failures: int = 0
    last_transport_error: str = ""
    left_bound: int = 0          # endpoints that may still be registered at the end
    unregister_timed_out: int = 0
    foreign: int = 0             # [issue 9] datagrams from another address than the registrar's (dropped)
    internal_errors: int = 0     # [issue 9] responses whose handling raised (a bug): counted, the run goes on
    last_internal_error: str = ""
    # [issue 8] CRLF keep-alives of the stream channels: [pings, pongs, missed] per group name (a channel
    # shared by several groups counts in each of them) and over all channels (each counted once)
    stream_keepalives: dict[str, list[int]] = field(default_factory=dict)
    stream_keepalive_total: list[int] = field(default_factory=lambda: [0, 0, 0])


def build_profile(scenario: Scenario, transport: str = "UDP", group: Group | None = None) -> Profile:
    t = scenario.timers
    ep = scenario.endpoints if group is None else group.endpoints
    target = scenario.target
    route = f"<{target.outbound_proxy};lr>" if target.outbound_proxy is not None else None
    return Profile(
        domain=target.domain,
        registrar_uri=f"sip:{target.domain}",
        transport=transport,
        expires=ep.expires,
        refresh_at=ep.refresh_at,
        refresh_jitter=ep.refresh_jitter,
        refresh_margin=ep.refresh_margin,
        user_agent=ep.user_agent or "sipload",
        timers=Timers(t1=t.t1, t2=t.t2, t4=t.t4),
        max_retries=t.max_retries,
        retry_backoff=t.retry_backoff,
        retry_backoff_max=t.retry_backoff_max,
        route=route,
        outbound=group is not None and group.outbound,
        gruu=group is not None and group.gruu,
    )


# [issue 8] the namespace of the devices' +sip.instance URNs (uuid5 of "scenario name/endpoint index")
INSTANCE_NAMESPACE = uuid.UUID("5b7d0c3e-2f4a-5d61-9c1e-8a0b7f3d2e14")


def instance_for(scenario_name: str, index: int) -> str:
    """The +sip.instance of device `index`: the same on every run of the scenario and every re-creation."""
    return f"urn:uuid:{uuid.uuid5(INSTANCE_NAMESPACE, f'{scenario_name}/{index}')}"


def _preference(names: tuple[str, ...] | None) -> list[Algorithm] | None:
    if names is None:
        return None
    out = [a for a in (Algorithm.parse(n) for n in names) if a is not None]
    return out or None


_NOT_BOUND = (RegState.IDLE, RegState.UNREGISTERING, RegState.UNREGISTERED, RegState.FAILED)


class _Act(enum.IntEnum):
    """Behaviour events on the worker's second heap."""

    VANISH = 0      # churn: the device drops off the network without unregistering
    RETURN = 1      # churn: it comes back and registers afresh (new Call-ID, CSeq 1)
    FLAP_DOWN = 2   # flap: unregister
    FLAP_UP = 3     # flap: register again
    AVALANCHE = 4   # every device of a group registers again at once (the index is the group's)


class Worker:
    def __init__(
        self,
        scenario: Scenario,
        destination: Address | Destinations,
        *,
        shard: Shard = Shard(),
        sink: Sink | None = None,
        seed: int | None = None,
        network: MemoryNetwork | None = None,
    ) -> None:
        self.scenario = scenario
        self.network = network
        self._destinations: Destinations = (
            {"*": (destination,)} if isinstance(destination, tuple) else destination
        )
        first = next(iter(self._destinations.values()), ())
        if not first:
            raise WorkerError("no destination to send to")
        primary = next(iter(first))
        self.destination: Address = (str(primary[0]), int(primary[1]))  # the first of the first transport
        self._peers = {tuple(a) for addrs in self._destinations.values() for a in addrs}
        self.shard = shard
        self.sink = sink
        seed = seed if seed is not None else scenario.seed
        self._seed = seed
        self.ids = IdSource(random.Random(None if seed is None else seed * 7919 + shard.worker))
        self.recorder = Recorder(0.0)
        self.tally = Tally()
        self.report = WorkerReport()
        self.endpoints: list[Endpoint] = []
        self._by_call_id: dict[str, Endpoint] = {}
        self._by_ka_call_id: dict[str, FlowEndpoint] = {}   # [issue 8] OPTIONS keep-alives' Call-IDs
        self._flows: dict[int, FlowEndpoint] = {}
        self._ka_heap: list[tuple[float, int]] = []          # keep-alive deadlines (deadline, endpoint index)
        self._channel_groups: dict[int, set[int]] = {}       # stream channel key -> groups on it
        self._by_index: dict[int, Endpoint] = {}
        self._heap: list[tuple[float, int]] = []
        self._scope: trio.CancelScope | None = None
        self._sockets: list[UdpSocket] = []
        self._streams: list[MessageChannel] = []
        self._udp_pool: dict[tuple[str, ...], list[UdpSocket]] = {}
        self._stream_pool: dict[tuple[str, tuple[str, ...]], list[list[Channel]]] = {}
        self.plan: FleetPlan = plan_fleet(scenario.fleet, scenario.endpoints.count, scenario.seed)
        self.transport = scenario.target.transport.value.upper()  # the default group's
        self._stop_requested = False
        self._max_in_flight = scenario.load.max_in_flight
        # [issue 8] behaviours: (due, seq, act, endpoint or group index); re-registrations (intended, seq, index)
        self._acts: list[tuple[float, int, int, int]] = []
        self._rearrivals: list[tuple[float, int, int]] = []
        self._seq = 0
        self._rngs: dict[int, random.Random] = {}
        # called once at the end of the hold, before unregistering; the schedule keeps running meanwhile
        self.hold_hook: Callable[[list[EndpointState]], Awaitable[None]] | None = None
        self._hook_done = False

    # --- set-up --------------------------------------------------------------------------------
    def destinations_for(self, transport: str) -> tuple[Address, ...]:
        """The destinations of a transport (upper case), in failover order."""
        found = self._destinations.get(transport) or self._destinations.get("*")
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

    def _open_udp(self, count: int, group: Group | None = None) -> list[list[Channel]]:
        """Slots (socket) x destinations: ``slots[s][d]`` sends from socket s to destination d."""
        dests = self.destinations_for("UDP")
        sources = self._group_sources(group) if group is not None else None
        hosts = self._source_hosts(sources, dests[0])
        per_endpoint = (group.endpoints if group is not None else self.scenario.endpoints).socket
        if per_endpoint is SocketMode.PER_ENDPOINT:
            small = 256 * 1024
            socks = [UdpSocket(hosts[i % len(hosts)], 0, buffer_bytes=small) for i in range(count)]
            self._sockets.extend(socks)
        else:
            key = tuple(hosts)
            socks = self._udp_pool.get(key, [])
            if not socks:
                socks = [UdpSocket(h, 0) for h in hosts[: max(1, min(len(hosts), count))]]
                self._udp_pool[key] = socks
                self._sockets.extend(socks)
        return [[Channel(sock.local, _udp_sender(sock, d)) for d in dests] for sock in socks]

    def _stream_pool_key(self, group: Group, transport: str) -> tuple[str, tuple[str, ...]] | None:
        """The key under which a group's connections are shared (None: one per endpoint)."""
        if group.endpoints.socket is SocketMode.PER_ENDPOINT:
            return None
        return (transport, tuple(self._source_hosts(self._group_sources(group), self.destinations_for(transport)[0])))

    async def _open_streams(self, count: int, group: Group | None = None,
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
                key = len(self._streams)
                stream = open_stream_channel(
                    transport, dest[0], dest[1], self._on_message,
                    self._on_stream_failure_for(key), tls=tls, local_host=hosts[k % len(hosts)],
                    ws_path=target.ws_path, keepalive=keepalive,
                )
                try:
                    await stream.connect()
                except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
                    problem = problem or f"{dest[0]}:{dest[1]}: {describe_error(exc)}"
                    continue
                self._streams.append(stream)
                routes.append(Channel(stream.local, stream.send, key))
            if not routes:
                for s in self._streams:
                    await s.aclose()
                where = problem if len(dests) == 1 else f"any of {len(dests)} destinations ({problem})"
                raise WorkerError(f"cannot connect over {transport} to {where}")
            slots.append(routes)
        if shared:
            self._stream_pool[pool_key] = slots
        return slots

    def _on_stream_failure_for(self, key: int) -> Callable[[str], None]:
        def failed(reason: str) -> None:
            self.report.transport_failures += 1
            self.report.last_transport_error = reason
            now = trio.current_time()
            for endpoint in self.endpoints:
                if endpoint.routes[endpoint.route].key == key:
                    # [issue 8] RFC 5626 §4.4.1: a request in flight fails; an idle binding registers again
                    endpoint.reg.flow_failed(now)
                    self._after_input(endpoint)

        return failed

    async def _open_all(self, mine: Sequence[int]) -> dict[int, list[list[Channel]]]:
        """The channel slots of every group with endpoints in this shard."""
        if self.network is not None:
            net = [[Channel(self.network.client, self.network.send)]]
            return dict.fromkeys(range(len(self.plan.groups)), net)
        counts = [0] * len(self.plan.groups)
        for i in mine:
            counts[self.plan.group[i]] += 1
        # [issue 8] a shared connection pings at the smallest keep-alive interval of the groups on it
        intervals: dict[object, float] = {}
        for g, group in enumerate(self.plan.groups):
            transport = group.transport.value.upper()
            if counts[g] and transport != "UDP" and group.keepalive > 0:
                where = self._stream_pool_key(group, transport) or g
                intervals[where] = min(intervals.get(where, math.inf), group.keepalive)
        slots: dict[int, list[list[Channel]]] = {}
        for g, group in enumerate(self.plan.groups):
            if not counts[g]:
                continue
            transport = group.transport.value.upper()
            if transport == "UDP":
                slots[g] = self._open_udp(counts[g], group)
            else:
                keepalive = intervals.get(self._stream_pool_key(group, transport) or g)
                slots[g] = await self._open_streams(counts[g], group, transport, keepalive)
                for routes in slots[g]:
                    for channel in routes:
                        self._channel_groups.setdefault(channel.key, set()).add(g)
        return slots

    def _create_endpoints(self, slots: dict[int, list[list[Channel]]]) -> None:
        sc = self.scenario
        plan = self.plan
        profiles = {g: build_profile(sc, grp.transport.value.upper(), grp) for g, grp in enumerate(plan.groups)}
        preferences = {g: _preference(grp.endpoints.digest_preference) for g, grp in enumerate(plan.groups)}
        placed = [0] * len(plan.groups)
        for i in self.shard.indices(sc.endpoints.count):
            g = plan.group[i]
            group = plan.groups[g]
            cred = group.endpoints.credentials(i)
            password = cred.password
            if plan.role[i] == Role.WRONG_PASSWORD:
                password = f"{password}-wrong"  # [issue 8] deterministic: the plan chose this device
            group_slots = slots[g]
            routes = group_slots[placed[g] % len(group_slots)]
            placed[g] += 1
            host, port = routes[0].local
            sent_by = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            auth = DigestClient(cred.auth_user, password, cnonce=self.ids.cnonce, preference=preferences[g])
            profile = profiles[g]
            reg = Registration(
                profile,
                user=cred.username,
                contact=f"sip:{cred.username}@{sent_by};transport={group.transport.value}",
                sent_by=sent_by,
                auth=auth,
                ids=self.ids,
                instance=instance_for(sc.name, i) if profile.outbound or profile.gruu else None,
            )
            endpoint: Endpoint
            pings = group.keepalive > 0 and group.transport.value.upper() == "UDP"  # (streams: the channel's)
            if pings or profile.outbound or profile.gruu:  # [issue 8]
                ka = OptionsKeepalive(target_uri=profile.registrar_uri, aor=reg.aor, sent_by=reg.sent_by,
                                      ids=self.ids, interval=group.keepalive,
                                      timeout=min(group.keepalive, 64 * profile.timers.t1),  # Timer F at most
                                      user_agent=profile.user_agent, timers=profile.timers) if pings else None
                flow = FlowEndpoint(i, cred.username, reg, routes[0].send, self._after_flow, ka)
                if ka is not None:
                    self._by_ka_call_id[ka.call_id] = flow
                self._flows[i] = endpoint = flow
            else:
                endpoint = Endpoint(i, cred.username, reg, routes[0].send)
            endpoint.group = g
            endpoint.auth = auth
            endpoint.routes = routes
            self.endpoints.append(endpoint)
            self._by_index[i] = endpoint
            self._by_call_id[reg.call_id] = endpoint

    # --- the hot path: responses -------------------------------------------------------------------
    def _on_datagram(self, data: bytes, addr: Address) -> None:
        if addr not in self._peers:  # [issue 9] RFC 3581: a registrar answers from where it was asked
            self.report.foreign += 1
            return
        try:
            msg = parse_message(data)
        except ParseError:
            self.report.unparseable += 1
            return
        try:
            self._on_message(msg)
        except Exception as exc:  # [issue 9] a bug must not end a run: counted, shown in the notes
            self.report.internal_errors += 1
            self.report.last_internal_error = f"{type(exc).__name__}: {exc}"[:300]

    def _on_message(self, msg: Request | Response) -> None:
        now = trio.current_time()
        call_id = msg.headers.get("call-id")
        if not isinstance(msg, Response) or call_id is None:
            self.report.stray += 1
            return
        endpoint = self._by_call_id.get(call_id.strip())
        if endpoint is None or not endpoint.reg.receive(msg, now):
            if not (self._by_ka_call_id and self._on_keepalive_answer(msg, call_id.strip(), now)):
                self.report.stray += 1
            return
        self.recorder.response(msg.status)
        if msg.status >= 200:
            endpoint.last_status = msg.status
        self._after_input(endpoint)

    def _after_input(self, endpoint: Endpoint) -> None:
        in_flight = self.tally.in_flight
        endpoint.flush(self.recorder, self.tally)
        deadline = endpoint.reg.next_timer()
        if deadline != endpoint.deadline:
            endpoint.deadline = deadline
            if deadline is not None:
                heapq.heappush(self._heap, (deadline, endpoint.index))
                self._wake_at(deadline)
        if self.tally.in_flight < in_flight and in_flight >= self._max_in_flight:
            # A slot opened for an arrival that max_in_flight held back. Below the cap the scheduler
            # already sleeps until the next arrival: waking it on every answer cost a cancel-scope
            # expiry (a raised Cancelled, ~20 µs) per registration.
            self._wake_at(-math.inf)

    # --- keep-alives, outbound, GRUU [issue 8] -------------------------------------------------------
    def _on_keepalive_answer(self, msg: Response, call_id: str, now: float) -> bool:
        """A response that no registration took: an answer to a device's OPTIONS ping? (Counted in the
        keep-alive counters, not in the responses by status code, which are the REGISTERs'.)"""
        endpoint = self._by_ka_call_id.get(call_id)
        if endpoint is None or endpoint.ka is None or not endpoint.ka.receive(msg, now):
            return False
        self._ka_flush(endpoint, now)
        return True

    def _after_flow(self, endpoint: FlowEndpoint) -> None:
        """After a FlowEndpoint's flush: its OPTIONS pings run while it is registered (and present)."""
        ka = endpoint.ka
        if ka is None:
            return
        state = endpoint.reg.state
        now = trio.current_time()
        if endpoint.ka_on:
            if state in _NOT_BOUND or endpoint.away:
                endpoint.ka_on = False
                ka.stop(now)
                self._ka_flush(endpoint, now)
        elif state is RegState.REGISTERED and not endpoint.away:  # its first 200 (again, after a renewal)
            endpoint.ka_on = True
            ka.sent_by = endpoint.reg.sent_by
            ka.start(now)
            self._ka_flush(endpoint, now)

    def _ka_flush(self, endpoint: FlowEndpoint, now: float) -> None:
        ka = endpoint.ka
        assert ka is not None
        for data in ka.take_outgoing():
            endpoint.send(data)   # the endpoint's current route: a failover moves the pings too
        for event in ka.take_events():
            if isinstance(event, ReflexiveChanged) and endpoint.reg.profile.outbound:
                endpoint.reg.flow_failed(now)   # RFC 5626 §4.4.2: the NAT rebound us; register the new flow
                self._after_input(endpoint)
        deadline = ka.next_timer()
        if deadline != endpoint.ka_deadline:
            endpoint.ka_deadline = deadline
            if deadline is not None:
                heapq.heappush(self._ka_heap, (deadline, endpoint.index))
                self._wake_at(deadline)

    def _ka_timers(self, now: float) -> None:
        heap = self._ka_heap
        while heap and heap[0][0] <= now:
            deadline, index = heapq.heappop(heap)
            endpoint = self._flows[index]
            if endpoint.ka_deadline != deadline or endpoint.ka is None:
                continue  # superseded
            endpoint.ka_deadline = None
            endpoint.ka.handle_timer(now)
            self._ka_flush(endpoint, now)

    def _stream_keepalive_counts(self) -> None:
        """The stream channels' CRLF keep-alive counters into the report, per group and in total."""
        total = [0, 0, 0]
        per_group: dict[str, list[int]] = {}
        for key, stream in enumerate(self._streams):
            counts = (stream.keepalive_pings, stream.keepalive_pongs, stream.keepalive_missed)
            total = [a + b for a, b in zip(total, counts, strict=True)]
            for g in sorted(self._channel_groups.get(key, ())):
                name = self.plan.groups[g].name
                per_group[name] = [a + b for a, b in zip(per_group.get(name, [0, 0, 0]), counts, strict=True)]
        self.report.stream_keepalives = per_group
        self.report.stream_keepalive_total = total

    def _wake_at(self, when: float) -> None:
        scope = self._scope
        if scope is not None and when < scope.deadline:
            scope.deadline = when

    def request_stop(self) -> None:
        """Stop arrivals and unregister (Ctrl-C, SIGTERM, the parent asking)."""
        self._stop_requested = True
        self._wake_at(-math.inf)

    # --- the scheduler -------------------------------------------------------------------------
    async def run(self, ready: Callable[[], None] | None = None, go: trio.Event | None = None) -> WorkerReport:
        """Build the endpoints, report `ready`, wait for `go`, then run the schedule to its end."""
        try:
            self._create_endpoints(await self._open_all(self.shard.indices(self.scenario.endpoints.count)))
            by_index = self._by_index
            async with trio.open_nursery() as nursery:
                for sock in self._sockets:
                    nursery.start_soon(sock.serve, self._on_datagram)
                if self.network is not None:
                    nursery.start_soon(self.network.run, self._on_datagram)
                for stream in self._streams:
                    nursery.start_soon(stream.run)
                if ready is not None:
                    ready()  # sockets bound, endpoints built: the parent starts every worker at once
                if go is not None:
                    await go.wait()
                await self._schedule(by_index, nursery)
                for stream in self._streams:
                    await stream.aclose()
                nursery.cancel_scope.cancel()
        finally:
            now = trio.current_time()
            for sock in self._sockets:
                self.report.send_errors += sock.send_errors
            self._emit(now)
            for sock in self._sockets:
                sock.close()
            self._stream_keepalive_counts()
            self.report.left_bound = sum(1 for e in self.endpoints if e.bound(now))
            if self.report.first_arrival is not None and self.report.last_arrival is not None:
                self.report.arrival_period = self.report.last_arrival - self.report.first_arrival
            self.report.endpoints = [_record(e, self.plan.groups[e.group].name) for e in self.endpoints]
        return self.report

    def _arrivals(self, start: float) -> Iterator[tuple[float, Endpoint]]:
        times = self.scenario.load.arrival_times(self.scenario.endpoints.count)
        mine = iter(self.endpoints)
        nxt = next(mine, None)
        for i, t in enumerate(times):
            if nxt is None:
                return
            if i == nxt.index:
                yield start + t, nxt
                nxt = next(mine, None)

    async def _hold_end(self) -> None:
        """Run the hold hook (e.g. a cross-check while every endpoint is still registered)."""
        assert self.hold_hook is not None
        try:
            await self.hold_hook([_record(e, self.plan.groups[e.group].name) for e in self.endpoints])
        finally:
            self._hook_done = True
            self._wake_at(-math.inf)

    async def _schedule(self, by_index: dict[int, Endpoint], nursery: trio.Nursery) -> None:
        load = self.scenario.load
        start = trio.current_time()
        hook_started = False
        run_until = start + load.duration
        next_interval = start + load.interval
        arrivals = self._arrivals(start)
        pending = next(arrivals, None)
        heap = self._heap
        ka_heap = self._ka_heap
        acts = self._acts
        rearrivals = self._rearrivals
        for g, group in enumerate(self.plan.groups):
            for at in group.avalanche:
                if at < load.duration:
                    self._act(start + at, _Act.AVALANCHE, g)
        stopping = False
        stop_queue: deque[Endpoint] = deque()
        stop_started = stop_deadline = next_check = math.inf
        stop_rate = 1.0
        stop_sent = 0
        while True:
            now = trio.current_time()
            if not stopping and now >= run_until and self.hold_hook is not None and not hook_started:
                hook_started = True
                nursery.start_soon(self._hold_end)
            hold_over = now >= run_until and (self.hold_hook is None or self._hook_done)
            if not stopping and (hold_over or self._stop_requested):
                stopping = True
                pending = None
                acts.clear()
                rearrivals.clear()
                if not load.unregister:
                    break
                for endpoint in self.endpoints:
                    if endpoint.reg.state is RegState.IDLE:
                        endpoint.reg.stop(now)  # never started (or away): nothing to undo
                    else:
                        stop_queue.append(endpoint)
                stop_started = next_check = now
                stop_deadline = now + load.unregister_timeout
                # pace the unregister burst over at most half the timeout, never slower than arrivals
                spread = max(0.5 * load.unregister_timeout, 1e-3)
                stop_rate = max(load.rate_at(load.duration), len(stop_queue) / spread)
            # [issue 8] behaviours due (churn, flap, avalanche), in virtual time
            while acts and acts[0][0] <= now:
                _, _, act, which = heapq.heappop(acts)
                self._behave(_Act(act), which, now)
            # arrivals (open loop; max_in_flight holds them back, and the lag is measured), then
            # re-registrations of behaviours, in order of their intended times
            while self.tally.in_flight < load.max_in_flight:
                due_arrival = pending[0] if pending is not None else math.inf
                due_again = rearrivals[0][0] if rearrivals else math.inf
                if min(due_arrival, due_again) > now:
                    break
                if due_arrival <= due_again:
                    assert pending is not None
                    intended, endpoint = pending
                    endpoint.intended = intended
                    if self.report.first_arrival is None:
                        self.report.first_arrival = now
                    self.report.last_arrival = now
                    self.report.arrivals_started += 1
                    endpoint.reg.start(now)
                    self._after_input(endpoint)
                    self._arrived(endpoint, intended)
                    pending = next(arrivals, None)
                else:
                    intended, _, index = heapq.heappop(rearrivals)
                    endpoint = by_index[index]
                    if endpoint.away or endpoint.reg.state is not RegState.IDLE:
                        continue  # vanished again (or already going) meanwhile
                    endpoint.intended = intended
                    endpoint.reg.start(now)
                    self._after_input(endpoint)
            while stop_queue and stop_started + stop_sent / stop_rate <= now:
                endpoint = stop_queue.popleft()
                endpoint.reg.stop(now)
                self._after_input(endpoint)
                stop_sent += 1
            # timers
            while heap and heap[0][0] <= now:
                deadline, index = heapq.heappop(heap)
                endpoint = by_index[index]
                if endpoint.deadline != deadline:
                    continue  # superseded by a newer deadline
                endpoint.deadline = None
                endpoint.reg.handle_timer(now)
                self._after_input(endpoint)
            if ka_heap and ka_heap[0][0] <= now:  # [issue 8] OPTIONS keep-alives
                self._ka_timers(now)
            if now >= next_interval:
                self._emit(now)
                next_interval = now + load.interval
            if stopping and not stop_queue:
                if now >= next_check:
                    if all(e.reg.finished for e in self.endpoints):
                        break
                    next_check = now + 0.05
                if now >= stop_deadline:
                    self._abandon(now)
                    break
            wake = min(next_interval, stop_deadline, next_check if stopping and not stop_queue else math.inf)
            if not stopping and not hook_started:
                wake = min(wake, run_until)
            if heap:
                wake = min(wake, heap[0][0])
            if ka_heap:
                wake = min(wake, ka_heap[0][0])
            if acts:
                wake = min(wake, acts[0][0])
            if self.tally.in_flight < load.max_in_flight:
                if pending is not None:
                    wake = min(wake, pending[0])
                if rearrivals:
                    wake = min(wake, rearrivals[0][0])
            if stop_queue:
                wake = min(wake, stop_started + stop_sent / stop_rate)
            if self._stop_requested and not stopping:
                wake = now
            with trio.move_on_at(wake) as scope:
                self._scope = scope
                await trio.sleep_forever()
            self._scope = None

    # --- behaviours [issue 8] ------------------------------------------------------------------
    def _act(self, when: float, act: _Act, which: int) -> None:
        self._seq += 1
        heapq.heappush(self._acts, (when, self._seq, int(act), which))
        self._wake_at(when)

    def _again(self, endpoint: Endpoint, intended: float) -> None:
        """Queue a fresh registration of the endpoint (it already has a new, idle Registration)."""
        self._seq += 1
        heapq.heappush(self._rearrivals, (intended, self._seq, endpoint.index))
        self._wake_at(intended)

    def _rng(self, index: int) -> random.Random:
        rng = self._rngs.get(index)
        if rng is None:  # per device, from the scenario's seed: the same draws whatever the sharding
            rng = self._rngs[index] = random.Random(f"{0 if self._seed is None else self._seed}:behaviour:{index}")
        return rng

    def _arrived(self, endpoint: Endpoint, intended: float) -> None:
        """An endpoint made its first registration: schedule its behaviour."""
        role = self.plan.role[endpoint.index]
        group = self.plan.groups[endpoint.group]
        if role == Role.CHURN and group.churn is not None:
            self._act(intended + group.churn.every * self._rng(endpoint.index).uniform(0.5, 1.5),
                      _Act.VANISH, endpoint.index)
        elif role == Role.FLAP and group.flap is not None:
            self._act(intended + group.flap.period, _Act.FLAP_DOWN, endpoint.index)

    def _renew(self, endpoint: Endpoint, *, first_route: bool = False) -> None:
        """Drop what the endpoint had (no request, no unregistration) and give it a fresh, idle
        Registration: a new Call-ID and From tag, CSeq from 1, like a rebooted device."""
        old = endpoint.reg
        if endpoint.registering:
            endpoint.registering = False
            self.tally.in_flight -= 1
        self._by_call_id.pop(old.call_id, None)
        if first_route and endpoint.route:
            endpoint.move_to(0)
        reg = Registration(old.profile, user=old.user, contact=endpoint.contact_for(endpoint.route, old),
                           sent_by=endpoint.sent_by_for(endpoint.route), auth=endpoint.auth, ids=self.ids,
                           instance=old.instance)  # [issue 8] the same device: the same +sip.instance
        endpoint.reg = reg
        endpoint.deadline = None
        self._by_call_id[reg.call_id] = endpoint
        if isinstance(endpoint, FlowEndpoint) and endpoint.ka is not None and endpoint.ka_on:
            endpoint.ka_on = False   # off the network (or rebooting): no pings until it is registered again
            endpoint.ka.stop(trio.current_time())
            endpoint.ka_deadline = None

    def _behave(self, act: _Act, which: int, now: float) -> None:
        if act is _Act.AVALANCHE:
            for endpoint in self.endpoints:
                if endpoint.group != which or endpoint.away or endpoint.reg.state is RegState.IDLE:
                    continue  # not arrived yet, or off the network
                endpoint.avalanches += 1
                self._renew(endpoint)
                self._again(endpoint, now)
            return
        endpoint = self._by_index[which]
        group = self.plan.groups[endpoint.group]
        if act is _Act.VANISH and group.churn is not None:
            if endpoint.reg.state not in (RegState.IDLE, RegState.UNREGISTERED) and not endpoint.away:
                endpoint.vanished += 1
                endpoint.away = True
                self._renew(endpoint, first_route=True)
                self._act(now + group.churn.away, _Act.RETURN, which)
            else:
                self._act(now + group.churn.every * self._rng(which).uniform(0.5, 1.5), _Act.VANISH, which)
        elif act is _Act.RETURN and group.churn is not None:
            endpoint.away = False
            endpoint.returned += 1
            self._again(endpoint, now)
            self._act(now + group.churn.every * self._rng(which).uniform(0.5, 1.5), _Act.VANISH, which)
        elif act is _Act.FLAP_DOWN and group.flap is not None:
            if endpoint.reg.state is RegState.REGISTERED:
                endpoint.flaps += 1
                endpoint.reg.stop(now)
                self._after_input(endpoint)
                self._act(now + group.flap.period / 2, _Act.FLAP_UP, which)
            self._act(now + group.flap.period, _Act.FLAP_DOWN, which)
        elif act is _Act.FLAP_UP:
            if endpoint.reg.state is RegState.UNREGISTERED:  # the unregistration was answered
                self._renew(endpoint)
                self._again(endpoint, now)

    def _abandon(self, now: float) -> None:
        """The unregister timeout passed: count what did not finish."""
        for endpoint in self.endpoints:
            reg = endpoint.reg
            if reg.state is RegState.UNREGISTERING:
                self.report.unregister_timed_out += 1
                self.recorder.failure(Phase.UNREGISTER, FailureReason.INTERRUPTED)
            elif reg.state in (RegState.REGISTERING, RegState.REFRESHING, RegState.BACKOFF):
                phase = Phase.REGISTER if reg.state is RegState.REGISTERING else Phase.REFRESH
                self.recorder.failure(phase, FailureReason.INTERRUPTED)

    def _emit(self, now: float) -> None:
        rec = self.recorder
        rec.set_gauge("registered", sum(1 for e in self.endpoints if e.bound(now)))
        rec.set_gauge("in_flight", self.tally.in_flight)
        rec.set_gauge("retries", self.tally.retries)
        rec.set_gauge("kernel_drops", sum(s.kernel_drops() for s in self._sockets[:64]))
        rec.set_gauge("stray", self.report.stray + self.report.unparseable)
        rec.set_gauge("send_errors", sum(s.send_errors for s in self._sockets))
        snap = rec.take_interval(now)
        if self.sink is not None:
            self.sink(snap)


def _udp_sender(sock: UdpSocket, dest: Address) -> Callable[[bytes], object]:
    def send(data: bytes) -> bool:
        return sock.send(data, dest)

    return send


def _record(e: Endpoint, group: str = "default") -> EndpointState:
    flow = e if isinstance(e, FlowEndpoint) else None
    ka = flow.ka if flow is not None else None
    return EndpointState(
        index=e.index,
        username=e.username,
        state=e.state,
        last_status=e.last_status,
        failure_reason=e.failure.value if e.failure is not None else "",
        registrations=e.registrations,
        refreshes=e.refreshes,
        contact=e.reg.contact,
        call_id=e.reg.call_id,
        group=group,
        vanished=e.vanished,
        returned=e.returned,
        flaps=e.flaps,
        avalanches=e.avalanches,
        failovers=e.failovers,
        keepalive_pings=ka.sent if ka is not None else 0,
        keepalive_answered=ka.answered if ka is not None else 0,
        keepalive_unanswered=ka.unanswered if ka is not None else 0,
        outbound_required=flow.outbound_required if flow is not None else 0,
        pub_gruu=flow is not None and flow.pub_gruu,
    )
