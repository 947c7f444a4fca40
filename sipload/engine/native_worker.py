"""The native worker: the same job as `Worker` for plain UDP fleets, with the per-message work compiled.

Theory of operation
-------------------
`sipload._native.NativeWorker` owns the worker's UDP sockets, every endpoint's registration machine
(`sipload-core`), their timers, the arrival schedule and the recorder's counts (`sipload-engine`). Each of
its steps drains every socket with recvmmsg (answers timed by their kernel receive timestamps), runs what
is due and sends what the machines produced with sendmmsg. This module is the trio task around it, and
keeps what is not per message in Python, as `Worker` does: the run's end and the hold hook, the stop
request (Ctrl-C, SIGTERM, the parent), the interval snapshots (the native counts become an
`IntervalSnapshot` the parent merges as any other), the worker report and the endpoints' lines.

The loop runs in Rust: `run_until()` steps, waits for a datagram or the next deadline and steps again
until the next moment this task cares about (an interval's end, the run's end), the GIL released, in a
thread of trio's (`trio.to_thread.run_sync`); a stop request or the end of the hold wakes it early
through its `Waker`. Its wake-ups are paced: a quiet worker wakes at once for each datagram and each
deadline (up to `QUIET_WAKES_PER_TICK` per `load.tick`, in bursts of `WAKE_BURST`), so that a challenge is
answered without delay; a busy one (more than `BUSY_DATAGRAMS` a second in or out) once per tick, each
wake-up handling what arrived or fell due since. A wake-up costs tens of microseconds on a VM; the
answers keep their kernel receive timestamps (no latency grows by the wait) and a send the pacing delays
is measured from its intended start. `load.tick = 0`: unpaced, a wake-up for every datagram and deadline.

What it does not do yet, `native_refusal` says, and `sipload run` then keeps the Python engine for the
scenario (the notes and summary.json say which engine ran and why).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterator

import trio

from sipload.engine.devices import build_profile
from sipload.engine.limits import check_resources
from sipload.engine.routes import Destinations, Routes, WorkerError
from sipload.engine.worker import Shard, Sink, WorkerReport
from sipload.metrics.phases import Kind, Phase, encode_buckets
from sipload.metrics.recorder import IntervalSnapshot
from sipload.report.result import EndpointState
from sipload.scenario import Scenario
from sipload.scenario.endpoints import SocketMode
from sipload.scenario.groups import FleetPlan, Group, Role, plan_fleet
from sipload.scenario.schedule import LoadShape
from sipload.sip.failures import FailureReason
from sipload.transport.addresses import hostport
from sipload.transport.udp import Address

try:
    from sipload import _native
    NOT_BUILT: str | None = None
except ImportError as exc:  # a source tree whose extension was never compiled
    NOT_BUILT = f"the native extension is not built ({exc}); pip install -e . builds it"

QUIET_WAKES_PER_TICK = 4  # a quiet worker's wake-ups per load.tick at most (4,000/s at the default 1 ms)
BUSY_DATAGRAMS = 8000.0  # datagrams a second (in + out: ~2,000 registrations) from which a worker is busy
REPORT_CHUNK = 20_000  # endpoint reports fetched from the native fleet at a time
WAKE_BURST = 8.0  # wake-ups a worker may take at once before the pacing holds it


def group_refusal(group: Group) -> str | None:
    """Why the native engine cannot run this device group (None: it can)."""
    if group.transport.value.upper() != "UDP":
        return f"uses {group.transport.value.upper()} (the native engine does UDP)"
    if group.endpoints.socket is SocketMode.PER_ENDPOINT:
        return "has a socket per endpoint"
    for name, on in (("churn", group.churn is not None), ("flap", group.flap is not None),
                     ("avalanche", bool(group.avalanche)), ("keepalive", group.keepalive > 0),
                     ("outbound", group.outbound), ("gruu", group.gruu)):
        if on:
            return f"uses {name}"
    return None


def scenario_refusal(scenario: Scenario, destination: Address | Destinations) -> str | None:
    """Why the native engine cannot run any group of this scenario (None: it can run those it can)."""
    if NOT_BUILT is not None:
        return NOT_BUILT
    dests = destination if isinstance(destination, dict) else {"*": (destination,)}
    udp = dests.get("UDP") or dests.get("*") or ()
    if len(tuple(udp)) > 1:  # none: no UDP group, which the groups' refusals say
        return "the target resolves to several UDP servers (failover is done by the Python engine)"
    if scenario.target.outbound_proxy is not None:
        return "an outbound proxy is set"
    return None


def group_refusals(scenario: Scenario) -> dict[str, str]:
    """The groups (with endpoints) the native engine cannot run, and why."""
    plan = plan_fleet(scenario.fleet, scenario.endpoints.count, scenario.seed)
    return {g.name: why for g in plan.groups if g.count and (why := group_refusal(g)) is not None}


def native_refusal(scenario: Scenario, destination: Address | Destinations,
                   groups: frozenset[str] | None = None) -> str | None:
    """Why the native engine cannot run the whole scenario, or its `groups` (None: it can)."""
    refusal = scenario_refusal(scenario, destination)
    if refusal is not None:
        return refusal
    refused = [(name, why) for name, why in group_refusals(scenario).items() if groups is None or name in groups]
    if not refused:
        return None
    name, why = refused[0]
    return f"group {name!r} {why}" if len(scenario.fleet) > 1 else f"the scenario {why}"


def _schedule(scenario: Scenario) -> tuple[object, ...]:
    load = scenario.load
    if load.shape is LoadShape.RAMP and load.ramp is not None:
        return ("ramp", load.ramp.start_rate, load.ramp.end_rate, load.ramp.duration)
    if load.shape is LoadShape.STEPS:
        return ("steps", [(s.rate, s.duration) for s in load.steps])
    return ("constant", load.rate)


_PHASES = {p.value: p for p in Phase}
_KINDS = {k.value: k for k in Kind}
_REASONS = {r.value: r for r in FailureReason}


def _texts(buffer: bytes, ends: bytes) -> Iterator[str]:
    """The strings of a packed column (row i ends at ends[i], native u32), as the Python engine has them."""
    start = 0
    for end in memoryview(ends).cast("I"):
        yield buffer[start:end].decode("utf-8", "surrogateescape")
        start = end


def snapshot(counts: dict[str, object], start: float, end: float, gauges: dict[str, int]) -> IntervalSnapshot:
    """The native interval counts as the `IntervalSnapshot` the parent merges."""
    hist: dict[tuple[Phase, Kind], bytes] = {}
    for phase, kind, buckets in counts["histograms"]:  # type: ignore[attr-defined]
        hist[_PHASES[phase], _KINDS[kind]] = encode_buckets(dict(buckets))
    lag = counts["schedule_lag"]
    return IntervalSnapshot(
        start=start,
        end=end,
        histograms=hist,
        schedule_lag=encode_buckets(dict(lag)) if lag else None,  # type: ignore[call-overload]
        attempts={_PHASES[p]: n for p, n in counts["attempts"]},  # type: ignore[attr-defined]
        successes={_PHASES[p]: n for p, n in counts["successes"]},  # type: ignore[attr-defined]
        failures={(_PHASES[p], _REASONS[r]): n for p, r, n in counts["failures"]},  # type: ignore[attr-defined]
        responses=dict(counts["responses"]),  # type: ignore[call-overload]
        retransmissions=int(counts["retransmissions"]),  # type: ignore[call-overload]
        clamped=int(counts["clamped"]),  # type: ignore[call-overload]
        gauges=gauges,
    )


class NativeWorker:
    """`Worker`'s interface (run, request_stop, hold_hook, report) over the compiled loop."""

    engine = "native"

    def __init__(self, scenario: Scenario, destination: Address | Destinations, *, shard: Shard | None = None,
                 sink: Sink | None = None, seed: int | None = None) -> None:
        shard = shard or Shard()
        refusal = native_refusal(scenario, destination, shard.groups)
        if refusal is not None:
            raise WorkerError(f"the native engine cannot run this: {refusal}")
        self.scenario = scenario
        self.shard = shard
        self.sink = sink
        self.report = WorkerReport()
        self.hold_hook: Callable[[list[EndpointState]], Awaitable[None]] | None = None
        self.plan: FleetPlan = plan_fleet(scenario.fleet, scenario.endpoints.count, scenario.seed)
        self._routes = Routes(scenario, destination, lambda msg: None, lambda key, reason: None)
        self.destination: Address = self._routes.destinations_for("UDP")[0]
        seed = seed if seed is not None else scenario.seed
        self._seed = random.Random(None if seed is None else seed * 7919 + shard.worker).getrandbits(64)
        self._stop_requested = False
        self._waker: _native.Waker | None = None
        self._native: _native.NativeWorker | None = None

    def request_stop(self) -> None:
        """Stop arrivals and unregister (Ctrl-C, SIGTERM, the parent asking)."""
        self._stop_requested = True
        if self._waker is not None:
            self._waker.wake()

    def _build(self) -> _native.NativeWorker:
        sc, plan = self.scenario, self.plan
        mine = self.shard.mine(plan, sc.endpoints.count)
        used = sorted({plan.group[i] for i in mine})
        dest = self.destination
        hosts: dict[int, list[str]] = {}
        for g in used:
            hosts[g] = self._routes._hosts(plan.groups[g], [dest])[0]
        every = sorted({h for hs in hosts.values() for h in hs})
        native = _native.NativeWorker([(h, 0) for h in every], (str(dest[0]), int(dest[1])), _schedule(sc),
                                      self.shard.share(sc.load.max_in_flight), self._seed)
        locals_ = native.local_addresses()
        socket_of = {h: k for k, h in enumerate(every)}
        profiles = {}
        for g in used:
            group = plan.groups[g]
            p = build_profile(sc, "UDP", group)
            t = p.timers
            profiles[g] = native.add_profile(
                domain=p.domain, registrar_uri=p.registrar_uri, expires=p.expires, refresh_at=p.refresh_at,
                refresh_jitter=p.refresh_jitter, refresh_margin=p.refresh_margin, user_agent=p.user_agent,
                t1=t.t1, t2=t.t2, t4=t.t4, max_retries=p.max_retries, retry_backoff=p.retry_backoff,
                retry_backoff_max=p.retry_backoff_max, unregister_all=p.unregister_all, reuse_nonce=p.reuse_nonce,
                max_retry_after=p.max_retry_after,
                preference=list(group.endpoints.digest_preference) if group.endpoints.digest_preference else None)
        placed = [0] * len(plan.groups)
        for i in mine:
            g = plan.group[i]
            group = plan.groups[g]
            cred = group.endpoints.credentials(i)
            password = cred.password if plan.role[i] != Role.WRONG_PASSWORD else f"{cred.password}-wrong"
            host = hosts[g][placed[g] % len(hosts[g])]
            placed[g] += 1
            k = socket_of[host]
            advertised = group.endpoints.advertised_address
            sent_by = hostport(advertised or locals_[k][0], locals_[k][1])
            native.add_endpoint(profiles[g], i, k, cred.username, f"sip:{cred.username}@{sent_by};transport=udp",
                                sent_by, cred.auth_user, password)
        return native

    async def run(self, ready: Callable[[], None] | None = None, go: trio.Event | None = None) -> WorkerReport:
        problem = check_resources(self.scenario, self.shard.workers)
        if problem is not None:
            raise WorkerError(problem)
        try:
            native = self._native = self._build()
        except OSError as exc:
            raise WorkerError(f"cannot open the native engine's sockets: {exc}") from None
        try:
            async with trio.open_nursery() as nursery:
                if ready is not None:
                    ready()
                if go is not None:
                    await go.wait()
                await self._drive(native, nursery)
                nursery.cancel_scope.cancel()
        finally:
            self._finish(native)
        return self.report

    async def _drive(self, native: _native.NativeWorker, nursery: trio.Nursery) -> None:
        load = self.scenario.load
        if load.tick > 0:
            native.set_pacing(QUIET_WAKES_PER_TICK / load.tick, 1 / load.tick, BUSY_DATAGRAMS, WAKE_BURST)
        self._waker = native.waker()
        native.start()
        start = native.now()
        run_until = start + load.duration
        next_interval = start + load.interval
        interval_start = start
        hook: trio.Event | None = None
        stopping = False
        until = min(next_interval, run_until)
        while True:
            if not self._stop_requested or stopping:  # a stop asked before the thread starts: act at once
                _, _, _, running, _ = await trio.to_thread.run_sync(native.run_until, until)
                if not running:
                    break
            now = native.now()
            if not stopping and now >= run_until and self.hold_hook is not None and hook is None:
                hook = trio.Event()
                nursery.start_soon(self._hold, self._states(native), hook)
            hold_over = now >= run_until and (self.hold_hook is None or (hook is not None and hook.is_set()))
            if not stopping and (hold_over or self._stop_requested):
                stopping = True
                if not native.request_stop(load.unregister, load.unregister_timeout, load.rate_at(load.duration)):
                    break
            if now >= next_interval:
                self._emit(native, interval_start, now)
                interval_start, next_interval = now, now + load.interval
            until = next_interval
            if not stopping and hook is None:
                until = min(until, run_until)

    async def _hold(self, states: list[EndpointState], done: trio.Event) -> None:
        assert self.hold_hook is not None
        try:
            await self.hold_hook(states)
        finally:
            done.set()
            if self._waker is not None:
                self._waker.wake()

    def _gauges(self, native: _native.NativeWorker, now: float) -> dict[str, int]:
        return dict(native.gauges(now))

    def _emit(self, native: _native.NativeWorker, start: float, now: float) -> None:
        snap = snapshot(native.take_interval(), start, now, self._gauges(native, now))
        if self.sink is not None:
            self.sink(snap)

    def _states(self, native: _native.NativeWorker) -> list[EndpointState]:
        out = []
        plan = self.plan
        start = 0
        while chunk := native.reports(start, REPORT_CHUNK):   # a chunk at a time: a million tuples never live at once
            start += len(chunk)
            for index, state, last_status, reason, registrations, refreshes, call_id, contact in chunk:
                group = plan.groups[plan.group[index]]   # the username is made again, not kept per endpoint
                out.append(EndpointState(index=index, username=group.endpoints.credentials(index).username,
                                         state=state, last_status=last_status, failure_reason=reason,
                                         registrations=registrations, refreshes=refreshes, contact=contact,
                                         call_id=call_id, group=group.name))
        return out

    def _final_states(self, native: _native.NativeWorker) -> list[EndpointState]:
        """Every endpoint's line at the end, its machine released first: the lines of a million endpoints
        are made while only their columns are held, not the machines too."""
        t = native.take_reports()
        plan = self.plan
        names = [g.name for g in plan.groups]
        state_names, reason_names = t["state_names"], t["reason_names"]
        columns = zip(memoryview(t["index"]).cast("Q"), t["state"], memoryview(t["last_status"]).cast("H"),
                      t["reason"], memoryview(t["registrations"]).cast("I"), memoryview(t["refreshes"]).cast("I"),
                      _texts(t["users"], t["user_ends"]), _texts(t["call_ids"], t["call_id_ends"]),
                      _texts(t["contacts"], t["contact_ends"]), strict=True)
        return [EndpointState(index=i, username=user, state=state_names[state], last_status=status or None,
                              failure_reason=reason_names[reason], registrations=regs, refreshes=refs,
                              contact=contact, call_id=call_id, group=names[plan.group[i]])
                for i, state, status, reason, regs, refs, user, call_id, contact in columns]

    def _finish(self, native: _native.NativeWorker) -> None:
        now = native.now()
        self._emit(native, now, now)
        c = native.counters()
        r = self.report
        r.arrivals_started = c["arrivals_started"]
        r.first_arrival, r.last_arrival = c["first_arrival"], c["last_arrival"]
        if r.first_arrival is not None and r.last_arrival is not None:
            r.arrival_period = r.last_arrival - r.first_arrival
        r.stray, r.unparseable, r.foreign = c["stray"], c["unparseable"], c["foreign"]
        r.send_errors = c["send_errors"]
        r.unregister_timed_out = c["unregister_timed_out"]
        r.internal_errors = c["internal_errors"]
        r.last_internal_error = c["last_internal_error"]
        r.last_transport_error = c["last_error"]
        r.left_bound = native.gauges(now)["registered"]
        r.endpoints = self._final_states(native)
