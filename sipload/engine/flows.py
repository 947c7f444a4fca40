"""Per-device OPTIONS keep-alives, RFC 5626 outbound and RFC 5627 GRUU on the engine side.

Theory of operation
-------------------
A `FlowEndpoint` is an endpoint of a group with NAT keep-alives, outbound or GRUU. It is a subclass
so that a plain endpoint's `flush` (the hot path) does no new work: after the plain flush it counts
what the 200s said (outbound required, a pub-gruu) and calls back `after` (`Keepalives.after_flush`).

A UDP group with `keepalive` gives each device an `OptionsKeepalive` (sans-IO, `sipload.sip.options_keepalive`).
`Keepalives` drives them for a worker: a device's pings start at its first 200, stop when it
unregisters, fails or vanishes, and start again when it is registered again. Their answers are found
by Call-ID in `by_call_id`, which the worker looks up only when its registration map misses, and
their timers live on their own heap (`heap`, (deadline, endpoint index)), which the worker's
scheduler drains with `timers(now)`. A `ReflexiveChanged` event (the NAT rebound the device) makes
an outbound device register its new flow (RFC 5626 §4.4.2). Keep-alives of stream channels (CRLF,
WebSocket pings) are the channels' own (`sipload.engine.routes`), not these.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

import trio

from sipload.engine.endpoint import Endpoint, Tally
from sipload.metrics.recorder import Recorder
from sipload.sip.message import Response
from sipload.sip.options_keepalive import OptionsKeepalive, ReflexiveChanged
from sipload.sip.registration import Registration, RegState

_NOT_BOUND = (RegState.IDLE, RegState.UNREGISTERING, RegState.UNREGISTERED, RegState.FAILED)


class FlowEndpoint(Endpoint):
    """An endpoint with a keep-alive, outbound or GRUU (see the module docstring)."""

    __slots__ = ("after", "ka", "ka_deadline", "ka_on", "outbound_required", "pub_gruu")

    def __init__(self, index: int, username: str, reg: Registration, send: Callable[[bytes], object],
                 after: Callable[[FlowEndpoint], None], ka: OptionsKeepalive | None = None) -> None:
        super().__init__(index, username, reg, send)
        self.after = after               # the worker's: keep-alive start / stop / flush
        self.ka = ka                     # OPTIONS pings (UDP groups with a keep-alive), same object across renewals
        self.ka_deadline: float | None = None
        self.ka_on = False               # pinging: registered since its last (re)start
        self.outbound_required = 0       # initial registrations whose 200 had Require: outbound
        self.pub_gruu = False            # a 200 gave our binding a pub-gruu

    def flush(self, recorder: Recorder, tally: Tally) -> None:
        registrations, refreshes = self.registrations, self.refreshes
        Endpoint.flush(self, recorder, tally)
        reg = self.reg
        if self.registrations != registrations or self.refreshes != refreshes:  # a 200 came
            if self.registrations != registrations and reg.outbound_required:
                self.outbound_required += 1
            if reg.pub_gruu is not None:
                self.pub_gruu = True
        self.after(self)


class Keepalives:
    """A worker's devices' OPTIONS keep-alives (see the module docstring)."""

    def __init__(self, after_input: Callable[[Endpoint], None], wake_at: Callable[[float], None]) -> None:
        self._after_input = after_input    # the worker's: flush an endpoint whose machine took an input
        self._wake_at = wake_at            # the worker's: make its scheduler wake by then
        self.by_call_id: dict[str, FlowEndpoint] = {}   # the OPTIONS keep-alives' Call-IDs
        self.flows: dict[int, FlowEndpoint] = {}
        self.heap: list[tuple[float, int]] = []          # keep-alive deadlines (deadline, endpoint index)

    def add(self, flow: FlowEndpoint) -> None:
        if flow.ka is not None:
            self.by_call_id[flow.ka.call_id] = flow
        self.flows[flow.index] = flow

    def answer(self, msg: Response, call_id: str, now: float) -> bool:
        """A response that no registration took: an answer to a device's OPTIONS ping? (Counted in the
        keep-alive counters, not in the responses by status code, which are the REGISTERs'.)"""
        endpoint = self.by_call_id.get(call_id)
        if endpoint is None or endpoint.ka is None or not endpoint.ka.receive(msg, now):
            return False
        self.flush(endpoint, now)
        return True

    def after_flush(self, endpoint: FlowEndpoint) -> None:
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
                self.flush(endpoint, now)
        elif state is RegState.REGISTERED and not endpoint.away:  # its first 200 (again, after a renewal)
            endpoint.ka_on = True
            ka.sent_by = endpoint.reg.sent_by
            ka.start(now)
            self.flush(endpoint, now)

    def silence(self, endpoint: Endpoint) -> None:
        """The device is renewed (off the network, or rebooting): no pings until it is registered again."""
        if isinstance(endpoint, FlowEndpoint) and endpoint.ka is not None and endpoint.ka_on:
            endpoint.ka_on = False
            endpoint.ka.stop(trio.current_time())
            endpoint.ka_deadline = None

    def flush(self, endpoint: FlowEndpoint, now: float) -> None:
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
                heapq.heappush(self.heap, (deadline, endpoint.index))
                self._wake_at(deadline)

    def timers(self, now: float) -> None:
        """Handle every keep-alive timer due by `now`."""
        heap = self.heap
        while heap and heap[0][0] <= now:
            deadline, index = heapq.heappop(heap)
            endpoint = self.flows[index]
            if endpoint.ka_deadline != deadline or endpoint.ka is None:
                continue  # superseded
            endpoint.ka_deadline = None
            endpoint.ka.handle_timer(now)
            self.flush(endpoint, now)
