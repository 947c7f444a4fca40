"""One worker: a trio loop driving a shard of endpoints against one registrar.

Theory of operation
-------------------
Endpoints are not tasks. A worker has exactly two kinds of task: one reader per socket (it
drains the socket and hands each response to the endpoint that owns its Call-ID) and one
scheduler. The scheduler keeps a heap of (deadline, endpoint index) built from each machine's
`next_timer()`, and the open-loop arrival schedule (each registration has an intended start
time; a late start is measured, never hidden). It sleeps in a cancel scope whose deadline is the
earliest thing due, and anyone who makes something earlier due moves that deadline, but never to less
than one `load.tick` after its last wake-up: what falls due within a tick goes out together
(every timed wake-up in trio is a raised Cancelled), each request stamped when it leaves. Answers are
handled as they arrive, and timed by the kernel's receive timestamp where the socket has one.

At the end of the run (its duration, or a stop request such as Ctrl-C) arrivals stop and every
endpoint is told to stop: the bound ones unregister, paced so that the unregister burst does not
overflow socket buffers, within the unregister timeout. Every `interval` the worker hands an
`IntervalSnapshot` to its sink (the parent's aggregate, in process or over a pipe).

Fleets: the scenario's device groups (`sipload.scenario.groups`) each get a Profile. The
worker's parts, each in its own module:
- `routes.Routes`: its sockets and connections, for every transport its groups use, each to every
  destination of that transport in failover order (RFC 3263 §4.3);
- `behaviours.Behaviours`: churn, flap and avalanche, a second heap on this scheduler, whose
  re-registrations queue like arrivals (max_in_flight applies and their lag is measured);
- `keepalives.Keepalives`: the per-device OPTIONS keep-alives of UDP groups (and `FlowEndpoint`, the
  endpoint of a group with keep-alives, outbound or GRUU), on a third heap. Their answers are looked
  up only when the registration map misses: endpoints of the other groups do no new work per message.
A device's `+sip.instance` is a pure function of the scenario's name and its index (`instance_for`), so
a device that churns, flaps or avalanches comes back as the same instance. A missed pong on a stream
channel's keep-alive is a flow failure: the endpoints on that channel register again
(`Registration.flow_failed`).
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field

import trio

from sipload.engine.behaviours import Behaviours
from sipload.engine.devices import build_endpoints, build_profile, instance_for, record
from sipload.engine.endpoint import Endpoint, Tally
from sipload.engine.flows import FlowEndpoint, Keepalives
from sipload.engine.limits import check_resources
from sipload.engine.network import Network
from sipload.engine.routes import Channel, Destinations, Routes, WorkerError
from sipload.engine.transitions import Transitions
from sipload.gcpolicy import hold_long_lived
from sipload.metrics.phases import Phase
from sipload.metrics.recorder import IntervalSnapshot, Recorder
from sipload.report.result import EndpointState
from sipload.scenario import Scenario
from sipload.scenario.groups import FleetPlan, Group, plan_fleet
from sipload.sip.errors import ParseError
from sipload.sip.failures import FailureReason
from sipload.sip.ids import IdSource
from sipload.sip.message import Request, Response
from sipload.sip.parser import parse_message
from sipload.sip.registration import Registration, RegState
from sipload.transport.udp import Address

__all__ = ["Destinations", "Shard", "Sink", "Worker", "WorkerError", "WorkerReport", "build_profile", "instance_for",
           "merge_reports"]

Sink = Callable[[IntervalSnapshot], None]


@dataclass(frozen=True, slots=True)
class Shard:
    """Which endpoints a worker drives: every `workers`-th one, starting at `worker`; of those, only the
    device groups named in `groups` when it is set (a worker's groups split between two engines)."""

    worker: int = 0
    workers: int = 1
    groups: frozenset[str] | None = None
    cap: int | None = None  # this shard's own max_in_flight, when set (the halves of a split worker)

    def indices(self, count: int) -> range:
        return range(self.worker, count, self.workers)

    def share(self, total: int) -> int:
        """This shard's part of a run-wide cap (max_in_flight): the parts of all shards sum to ``total``
        (the run is one load, whatever the number of processes); at least 1, so run no more shards than
        ``total``."""
        if self.cap is not None:
            return self.cap
        return max(1, total // self.workers + (1 if self.worker < total % self.workers else 0))

    def mine(self, plan: FleetPlan, count: int) -> list[int]:
        """The scenario indices of this shard's endpoints, in order."""
        if self.groups is None:
            return list(self.indices(count))
        names = [g.name in self.groups for g in plan.groups]
        return [i for i in self.indices(count) if names[plan.group[i]]]

    def of_groups(self, groups: frozenset[str], cap: int | None = None) -> Shard:
        return Shard(self.worker, self.workers, groups, cap)


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
    foreign: int = 0             # datagrams from another address than the registrar's (dropped)
    internal_errors: int = 0     # responses whose handling raised (a bug): counted, the run goes on
    last_internal_error: str = ""
    # CRLF keep-alives of the stream channels: [pings, pongs, missed] per group name (a channel
    # shared by several groups counts in each of them) and over all channels (each counted once)
    stream_keepalives: dict[str, list[int]] = field(default_factory=dict)
    stream_keepalive_total: list[int] = field(default_factory=lambda: [0, 0, 0])


def merge_reports(reports: list[WorkerReport]) -> WorkerReport:
    merged = WorkerReport()
    for r in reports:
        merged.endpoints.extend(r.endpoints)
        merged.arrivals_started += r.arrivals_started
        merged.stray += r.stray
        merged.unparseable += r.unparseable
        merged.send_errors += r.send_errors
        merged.transport_failures += r.transport_failures
        merged.last_transport_error = r.last_transport_error or merged.last_transport_error
        merged.left_bound += r.left_bound
        merged.unregister_timed_out += r.unregister_timed_out
        merged.foreign += r.foreign
        merged.internal_errors += r.internal_errors
        merged.last_internal_error = r.last_internal_error or merged.last_internal_error
        merged.arrival_period = max(merged.arrival_period, r.arrival_period)
        for name, counts in r.stream_keepalives.items():
            have = merged.stream_keepalives.get(name, [0, 0, 0])
            merged.stream_keepalives[name] = [a + b for a, b in zip(have, counts, strict=True)]
        merged.stream_keepalive_total = [a + b for a, b in zip(merged.stream_keepalive_total,
                                                               r.stream_keepalive_total, strict=True)]
    merged.endpoints.sort(key=lambda e: e.index)
    return merged



class Worker:
    def __init__(
        self,
        scenario: Scenario,
        destination: Address | Destinations,
        *,
        shard: Shard = Shard(),
        sink: Sink | None = None,
        seed: int | None = None,
        network: Network | None = None,
    ) -> None:
        self.scenario = scenario
        self.network = network
        self.routes = Routes(scenario, destination, self._on_stream_message, self._on_stream_failure)
        self.destination: Address = self.routes.destination  # the first of the first transport
        self._peers = self.routes.peers
        self._sockets = self.routes.sockets
        self._streams = self.routes.streams
        self.shard = shard
        self.sink = sink
        seed = seed if seed is not None else scenario.seed
        self.ids = IdSource(random.Random(None if seed is None else seed * 7919 + shard.worker))
        self.recorder = Recorder(0.0)
        self.tally = Tally()
        self.report = WorkerReport()
        self.endpoints: list[Endpoint] = []
        self._by_call_id: dict[str, Endpoint] = {}
        self._by_index: dict[int, Endpoint] = {}
        self._heap: list[tuple[float, int]] = []
        self._scope: trio.CancelScope | None = None
        self._tick = scenario.load.tick
        self._not_before = -math.inf  # the scheduler's next wake-up, not earlier than this
        self.plan: FleetPlan = plan_fleet(scenario.fleet, scenario.endpoints.count, scenario.seed)
        self.transport = self.routes.transport  # the default group's
        self._stop_requested = False
        self._max_in_flight = shard.share(scenario.load.max_in_flight)  # the run-wide cap, split
        # OPTIONS keep-alives (their Call-IDs: looked up when the registration map misses)
        self.keepalives = Keepalives(self._after_input, self._wake_at)
        self._by_ka_call_id = self.keepalives.by_call_id
        # behaviours: churn, flap, avalanche and their re-registrations
        self.behaviours = Behaviours(self.plan, seed, self.endpoints, self._by_index, renew=self._renew,
                                     after_input=self._after_input, wake_at=self._wake_at)
        # called once at the end of the hold, before unregistering; the schedule keeps running meanwhile
        self.hold_hook: Callable[[list[EndpointState]], Awaitable[None]] | None = None
        self._hook_done = False
        # provider events watched ([crosscheck] events): each endpoint keeps its transitions, in Unix time
        self._traced = scenario.crosscheck is not None and scenario.crosscheck.config.events
        self._unix_offset = 0.0

    # --- set-up --------------------------------------------------------------------------------
    def destinations_for(self, transport: str) -> tuple[Address, ...]:
        """The destinations of a transport (upper case), in failover order."""
        return self.routes.destinations_for(transport)

    def _open_udp(self, count: int, group: Group | None = None) -> list[list[Channel]]:
        return self.routes.open_udp(count, group)

    async def _open_all(self, mine: Sequence[int]) -> dict[int, list[list[Channel]]]:
        """The channel slots of every group with endpoints in this shard."""
        if self.network is not None:
            net = [[Channel(self.network.client, self.network.send)]]
            return dict.fromkeys(range(len(self.plan.groups)), net)
        return await self.routes.open_all(self.plan, mine)

    def _on_stream_failure(self, key: int, reason: str) -> None:
        """Stream channel `key` failed: the endpoints on it learn it."""
        self.report.transport_failures += 1
        self.report.last_transport_error = reason
        now = trio.current_time()
        for endpoint in self.endpoints:
            if endpoint.routes[endpoint.route].key == key:
                # RFC 5626 §4.4.1: a request in flight fails; an idle binding registers again
                endpoint.reg.flow_failed(now)
                self._after_input(endpoint)

    def _create_endpoints(self, slots: dict[int, list[list[Channel]]]) -> None:
        indices = self.shard.mine(self.plan, self.scenario.endpoints.count)
        after_flush = self.keepalives.after_flush
        for endpoint in build_endpoints(self.scenario, self.plan, indices, slots, self.ids, after_flush):
            if isinstance(endpoint, FlowEndpoint):
                self.keepalives.add(endpoint)
            if self._traced:
                endpoint.trace = Transitions()
            self.endpoints.append(endpoint)
            self._by_index[endpoint.index] = endpoint
            self._by_call_id[endpoint.reg.call_id] = endpoint

    # --- the hot path: responses -------------------------------------------------------------------
    def _on_datagram(self, data: bytes, addr: Address, waited: float = 0.0) -> None:
        """A datagram that arrived `waited` seconds ago (the kernel's timestamp; 0 without one)."""
        if addr not in self._peers:  # RFC 3581: a registrar answers from where it was asked
            self.report.foreign += 1
            return
        try:
            msg = parse_message(data)
        except ParseError:
            self.report.unparseable += 1
            return
        try:
            now = trio.current_time()
            self._on_message(msg, now, now - waited)
        except Exception as exc:  # a bug must not end a run: counted, shown in the notes
            self._internal_error(exc)

    def _on_stream_message(self, msg: Request | Response) -> None:
        """A message a TCP/TLS/WS channel framed: the same guard as for datagrams."""
        try:
            now = trio.current_time()
            self._on_message(msg, now, now)
        except Exception as exc:
            self._internal_error(exc)

    def _internal_error(self, exc: Exception) -> None:
        self.report.internal_errors += 1
        self.report.last_internal_error = f"{type(exc).__name__}: {exc}"[:300]

    def _on_message(self, msg: Request | Response, now: float, arrived: float) -> None:
        call_id = msg.headers.get("call-id")
        if not isinstance(msg, Response) or call_id is None:
            self.report.stray += 1
            return
        endpoint = self._by_call_id.get(call_id.strip())
        if endpoint is None or not endpoint.reg.receive(msg, now, arrived):
            if not (self._by_ka_call_id and self.keepalives.answer(msg, call_id.strip(), now)):
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
            # expiry (a raised Cancelled, ~20 µs) per registration. At the next tick: a generator held
            # back by the cap is saturated, and a wake-up per answer would cost it more.
            self._wake_at(self._not_before)

    def _wake_at(self, when: float) -> None:
        scope = self._scope
        if scope is not None and when < scope.deadline:
            if when > -math.inf:  # a forced wake-up (a stop request) is never put off
                when = max(when, self._not_before)
            scope.deadline = min(scope.deadline, when)

    def request_stop(self) -> None:
        """Stop arrivals and unregister (Ctrl-C, SIGTERM, the parent asking)."""
        self._stop_requested = True
        self._wake_at(-math.inf)

    # --- the scheduler -------------------------------------------------------------------------
    async def run(self, ready: Callable[[], None] | None = None, go: trio.Event | None = None) -> WorkerReport:
        """Build the endpoints, report `ready`, wait for `go`, then run the schedule to its end."""
        release_gc: Callable[[], None] | None = None
        try:
            if self.network is None:
                # the descriptors and ports of this process (a remote cluster's load host: the client could not
                # check them); raises the soft limit where the hard one allows
                problem = check_resources(self.scenario, self.shard.workers)
                if problem is not None:
                    raise WorkerError(problem)
            self._unix_offset = time.time() - trio.current_time()
            self._create_endpoints(await self._open_all(self.shard.mine(self.plan, self.scenario.endpoints.count)))
            # the endpoints just built live for the whole run: out of the collector's passes, a full
            # collection no longer walks them (max pause 84 -> 30 ms at 24,000 endpoints, one worker)
            release_gc = hold_long_lived()
            by_index = self._by_index
            async with trio.open_nursery() as nursery:
                for sock in self._sockets:
                    sock.enable_timestamps()  # a latency ends when its answer arrived
                    nursery.start_soon(sock.serve_waited, self._on_datagram)
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
            if release_gc is not None:
                release_gc()
            now = trio.current_time()
            for sock in self._sockets:
                self.report.send_errors += sock.send_errors
            self._emit(now)
            for sock in self._sockets:
                sock.close()
            self.report.stream_keepalives, self.report.stream_keepalive_total = (
                self.routes.stream_keepalive_counts(self.plan))
            self.report.left_bound = sum(1 for e in self.endpoints if e.bound(now))
            if self.report.first_arrival is not None and self.report.last_arrival is not None:
                self.report.arrival_period = self.report.last_arrival - self.report.first_arrival
            offset = self._unix_offset
            self.report.endpoints = [record(e, self.plan.groups[e.group].name, offset) for e in self.endpoints]
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
            await self.hold_hook([record(e, self.plan.groups[e.group].name, self._unix_offset) for e in self.endpoints])
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
        ka_heap = self.keepalives.heap
        behaviours = self.behaviours
        acts = behaviours.acts
        rearrivals = behaviours.rearrivals
        behaviours.start(start, load.duration)
        stopping = False
        stop_queue: deque[Endpoint] = deque()
        stop_started = stop_deadline = next_check = math.inf
        stop_rate = 1.0
        stop_sent = 0
        clock = trio.current_time
        while True:
            now = trio.current_time()
            if not stopping and now >= run_until and self.hold_hook is not None and not hook_started:
                hook_started = True
                nursery.start_soon(self._hold_end)
            hold_over = now >= run_until and (self.hold_hook is None or self._hook_done)
            if not stopping and (hold_over or self._stop_requested):
                stopping = True
                pending = None
                behaviours.clear()
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
            # behaviours due (churn, flap, avalanche), in virtual time
            if acts and acts[0][0] <= now:
                behaviours.due(now)
            # arrivals (open loop; max_in_flight holds them back, and the lag is measured), then
            # re-registrations of behaviours, in order of their intended times
            while self.tally.in_flight < self._max_in_flight:
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
                    endpoint.reg.start(clock())  # when it leaves, not when the batch began
                    self._after_input(endpoint)
                    behaviours.arrived(endpoint, intended)
                    pending = next(arrivals, None)
                else:
                    intended, _, index = heapq.heappop(rearrivals)
                    endpoint = by_index[index]
                    if endpoint.away or endpoint.reg.state is not RegState.IDLE:
                        continue  # vanished again (or already going) meanwhile
                    endpoint.intended = intended
                    endpoint.reg.start(clock())
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
                endpoint.reg.handle_timer(clock())
                self._after_input(endpoint)
            if ka_heap and ka_heap[0][0] <= now:  # OPTIONS keep-alives
                self.keepalives.timers(now)
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
            if self.tally.in_flight < self._max_in_flight:
                if pending is not None:
                    wake = min(wake, pending[0])
                if rearrivals:
                    wake = min(wake, rearrivals[0][0])
            if stop_queue:
                wake = min(wake, stop_started + stop_sent / stop_rate)
            if self._stop_requested and not stopping:
                wake = now
            # one wake-up per tick at most: what falls due within it goes out in one batch (every
            # timed wake-up is a cancel-scope expiry, a raised Cancelled: the dearest thing per arrival)
            self._not_before = now + self._tick
            if now < wake < self._not_before:
                wake = self._not_before
            with trio.move_on_at(wake) as scope:
                self._scope = scope
                await trio.sleep_forever()
            self._scope = None

    # --- behaviours ------------------------------------------------------------------
    def _renew(self, endpoint: Endpoint, first_route: bool = False) -> None:
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
                           instance=old.instance)  # the same device: the same +sip.instance
        endpoint.reg = reg
        endpoint.deadline = None
        self._by_call_id[reg.call_id] = endpoint
        self.keepalives.silence(endpoint)  # off the network (or rebooting): no pings until registered again

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
