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
"""

from __future__ import annotations

import heapq
import math
import random
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import trio

from sipload.engine.endpoint import Endpoint, Tally
from sipload.metrics.phases import Phase
from sipload.metrics.recorder import IntervalSnapshot, Recorder
from sipload.report.result import EndpointState
from sipload.scenario import Scenario, SocketMode
from sipload.sip.digest import Algorithm, DigestClient
from sipload.sip.errors import ParseError
from sipload.sip.failures import FailureReason
from sipload.sip.ids import IdSource
from sipload.sip.message import Request, Response
from sipload.sip.parser import parse_message
from sipload.sip.registration import Profile, Registration, RegState
from sipload.sip.transaction import Timers
from sipload.transport.channels import MessageChannel, open_stream_channel
from sipload.transport.memory import MemoryNetwork
from sipload.transport.stream import TlsOptions, describe_error
from sipload.transport.udp import Address, UdpSocket

Sink = Callable[[IntervalSnapshot], None]


class WorkerError(Exception):
    """The worker could not start (e.g. no connection to the registrar): a message for the user."""


@dataclass(frozen=True, slots=True)
class Channel:
    """How an endpoint sends: its local address (for Via and Contact) and a send function."""

    local: tuple[str, int]
    send: Callable[[bytes], object]


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


def build_profile(scenario: Scenario, transport: str = "UDP") -> Profile:
    t = scenario.timers
    ep = scenario.endpoints
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
    )


def _preference(names: tuple[str, ...] | None) -> list[Algorithm] | None:
    if names is None:
        return None
    out = [a for a in (Algorithm.parse(n) for n in names) if a is not None]
    return out or None


class Worker:
    def __init__(
        self,
        scenario: Scenario,
        destination: Address,
        *,
        shard: Shard = Shard(),
        sink: Sink | None = None,
        seed: int | None = None,
        network: MemoryNetwork | None = None,
    ) -> None:
        self.scenario = scenario
        self.network = network
        self.destination = destination
        self.shard = shard
        self.sink = sink
        seed = seed if seed is not None else scenario.seed
        self.ids = IdSource(random.Random(None if seed is None else seed * 7919 + shard.worker))
        self.recorder = Recorder(0.0)
        self.tally = Tally()
        self.report = WorkerReport()
        self.endpoints: list[Endpoint] = []
        self._by_call_id: dict[str, Endpoint] = {}
        self._heap: list[tuple[float, int]] = []
        self._scope: trio.CancelScope | None = None
        self._sockets: list[UdpSocket] = []
        self._streams: list[MessageChannel] = []
        self._channel_endpoints: dict[int, list[Endpoint]] = {}
        self.transport = scenario.target.transport.value.upper()
        self._stop_requested = False
        self._max_in_flight = scenario.load.max_in_flight
        # called once at the end of the hold, before unregistering; the schedule keeps running meanwhile
        self.hold_hook: Callable[[list[EndpointState]], Awaitable[None]] | None = None
        self._hook_done = False

    # --- set-up --------------------------------------------------------------------------------
    def _source_hosts(self) -> list[str]:
        ep = self.scenario.endpoints
        if ep.source_addresses is not None:
            return [ep.source_addresses[i] for i in range(len(ep.source_addresses))]
        return ["::1" if ":" in self.destination[0] else "127.0.0.1"]

    def _open_udp(self, count: int) -> list[Channel]:
        hosts = self._source_hosts()
        if self.scenario.endpoints.socket is SocketMode.PER_ENDPOINT:
            small = 256 * 1024
            self._sockets = [UdpSocket(hosts[i % len(hosts)], 0, buffer_bytes=small) for i in range(count)]
        else:
            self._sockets = [UdpSocket(h, 0) for h in hosts[: max(1, min(len(hosts), count))]]
        dest = self.destination
        return [Channel(sock.local, _udp_sender(sock, dest)) for sock in self._sockets]


    async def _open_streams(self, count: int) -> list[Channel]:
        target = self.scenario.target
        tls: TlsOptions | None = None
        if self.transport == "TLS":
            uri = target.outbound_proxy or target.uri
            tls = TlsOptions(verify=target.tls_verify, ca_file=target.tls_ca, cert_file=target.tls_cert,
                             key_file=target.tls_key, server_name=uri.host if uri is not None else None)
        hosts = self._source_hosts()
        n = count if self.scenario.endpoints.socket is SocketMode.PER_ENDPOINT else min(len(hosts), count)
        channels: list[Channel] = []
        for k in range(max(1, n)):
            stream = open_stream_channel(
                self.transport, self.destination[0], self.destination[1], self._on_message,
                self._on_stream_failure_for(k), tls=tls, local_host=hosts[k % len(hosts)],
            )
            try:
                await stream.connect()
            except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
                for s in self._streams:
                    await s.aclose()
                raise WorkerError(
                    f"cannot connect over {self.transport} to {self.destination[0]}:{self.destination[1]}: "
                    f"{describe_error(exc)}"
                ) from None
            self._streams.append(stream)
            channels.append(Channel(stream.local, stream.send))
        return channels

    def _on_stream_failure_for(self, k: int) -> Callable[[str], None]:
        def failed(reason: str) -> None:
            self.report.transport_failures += 1
            self.report.last_transport_error = reason
            now = trio.current_time()
            for endpoint in self._channel_endpoints.get(k, ()):
                endpoint.reg.transport_error(now)
                self._after_input(endpoint)

        return failed

    def _create_endpoints(self, channels: list[Channel]) -> None:
        sc = self.scenario
        profile = build_profile(sc, self.transport)
        preference = _preference(sc.endpoints.digest_preference)
        param = self.transport.lower()
        for k, i in enumerate(self.shard.indices(sc.endpoints.count)):
            cred = sc.endpoints.credentials(i)
            which = k % len(channels)
            channel = channels[which]
            host, port = channel.local
            sent_by = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            auth = DigestClient(cred.auth_user, cred.password, cnonce=self.ids.cnonce, preference=preference)
            reg = Registration(
                profile,
                user=cred.username,
                contact=f"sip:{cred.username}@{sent_by};transport={param}",
                sent_by=sent_by,
                auth=auth,
                ids=self.ids,
            )
            endpoint = Endpoint(i, cred.username, reg, channel.send)
            self.endpoints.append(endpoint)
            self._by_call_id[reg.call_id] = endpoint
            self._channel_endpoints.setdefault(which, []).append(endpoint)

    # --- the hot path: responses -------------------------------------------------------------------
    def _on_datagram(self, data: bytes, addr: Address) -> None:
        if addr != self.destination:  # [issue 9] RFC 3581: a registrar answers from where it was asked
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
        count = len(self.shard.indices(self.scenario.endpoints.count))
        try:
            if self.network is not None:
                channels = [Channel(self.network.client, self.network.send)]
            elif self.transport == "UDP":
                channels = self._open_udp(count)
            else:
                channels = await self._open_streams(count)
            self._create_endpoints(channels)
            by_index = {e.index: e for e in self.endpoints}
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
            self.report.left_bound = sum(1 for e in self.endpoints if e.bound(now))
            if self.report.first_arrival is not None and self.report.last_arrival is not None:
                self.report.arrival_period = self.report.last_arrival - self.report.first_arrival
            self.report.endpoints = [_record(e) for e in self.endpoints]
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
            await self.hold_hook([_record(e) for e in self.endpoints])
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
                if not load.unregister:
                    break
                for endpoint in self.endpoints:
                    if endpoint.reg.state is RegState.IDLE:
                        endpoint.reg.stop(now)  # never started: nothing to undo
                    else:
                        stop_queue.append(endpoint)
                stop_started = next_check = now
                stop_deadline = now + load.unregister_timeout
                # pace the unregister burst over at most half the timeout, never slower than arrivals
                spread = max(0.5 * load.unregister_timeout, 1e-3)
                stop_rate = max(load.rate_at(load.duration), len(stop_queue) / spread)
            # arrivals (open loop; max_in_flight holds them back, and the lag is measured)
            while pending is not None and pending[0] <= now and self.tally.in_flight < load.max_in_flight:
                intended, endpoint = pending
                endpoint.intended = intended
                if self.report.first_arrival is None:
                    self.report.first_arrival = now
                self.report.last_arrival = now
                self.report.arrivals_started += 1
                endpoint.reg.start(now)
                self._after_input(endpoint)
                pending = next(arrivals, None)
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
            if pending is not None and self.tally.in_flight < load.max_in_flight:
                wake = min(wake, pending[0])
            if stop_queue:
                wake = min(wake, stop_started + stop_sent / stop_rate)
            if self._stop_requested and not stopping:
                wake = now
            with trio.move_on_at(wake) as scope:
                self._scope = scope
                await trio.sleep_forever()
            self._scope = None

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


def _record(e: Endpoint) -> EndpointState:
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
    )
