"""One worker's fleet on two engines: its plain UDP groups on the native engine, the others on Python.

A scenario whose groups the native engine cannot all run (a TCP group, a churning one...) does not fall
back to Python as a whole: each worker (process or cluster shard) runs a `NativeWorker` over its endpoints
of the native groups and a `Worker` over the rest, side by side in one trio nursery, on the same arrival
schedule (arrivals are timed by their scenario index, whichever engine sends them). To the parent it is
one worker: one `run()`, one stop request for both, one hold hook called once with every endpoint's
state, one merged report; interval snapshots of each half go to the same sink, their gauges (registered,
in flight...) the sum of both halves' latest. The worker's share of `load.max_in_flight` is split between
the halves in proportion to their endpoints (at least 1 each).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace

import trio

from sipload.engine.native_worker import NativeWorker
from sipload.engine.routes import Destinations
from sipload.engine.worker import Shard, Sink, Worker, WorkerReport, merge_reports
from sipload.metrics.recorder import IntervalSnapshot
from sipload.report.result import EndpointState
from sipload.scenario import Scenario
from sipload.scenario.groups import plan_fleet
from sipload.transport.udp import Address

Half = Worker | NativeWorker


class SplitWorker:
    """`Worker`'s interface over a native half and a Python half (`load.python_groups`)."""

    engine = "native+python"

    def __init__(self, scenario: Scenario, destination: Address | Destinations, *, shard: Shard | None = None,
                 sink: Sink | None = None) -> None:
        shard = shard or Shard()
        python = frozenset(scenario.load.python_groups)
        native = frozenset(g.name for g in scenario.fleet if g.name not in python)
        plan = plan_fleet(scenario.fleet, scenario.endpoints.count, scenario.seed)
        mine = len(shard.mine(plan, scenario.endpoints.count)) or 1
        share = shard.share(scenario.load.max_in_flight)
        native_cap = max(1, round(share * len(shard.of_groups(native).mine(plan, scenario.endpoints.count)) / mine))
        python_cap = max(1, share - native_cap)
        self.sink = sink
        self._gauges: list[dict[str, int]] = [{}, {}]
        self.halves: list[Half] = [
            NativeWorker(scenario, destination, shard=shard.of_groups(native, native_cap), sink=self._sink_of(0)),
            Worker(scenario, destination, shard=shard.of_groups(python, python_cap), sink=self._sink_of(1)),
        ]
        self.report = WorkerReport()
        self.hold_hook: Callable[[list[EndpointState]], Awaitable[None]] | None = None
        self._held: list[list[EndpointState] | None] = [None, None]
        self._hold_done = trio.Event()

    def _sink_of(self, half: int) -> Sink:
        def sink(snap: IntervalSnapshot) -> None:
            self._gauges[half] = dict(snap.gauges)
            if self.sink is not None:
                total = dict(self._gauges[0])
                for key, n in self._gauges[1].items():
                    total[key] = total.get(key, 0) + n
                self.sink(replace(snap, gauges=total))
        return sink

    def request_stop(self) -> None:
        for half in self.halves:
            half.request_stop()

    def _hook_of(self, half: int) -> Callable[[list[EndpointState]], Awaitable[None]]:
        async def hook(states: list[EndpointState]) -> None:
            self._held[half] = states
            if all(h is not None for h in self._held):
                try:
                    if self.hold_hook is not None:
                        await self.hold_hook(sorted((e for h in self._held if h for e in h), key=lambda e: e.index))
                finally:
                    self._hold_done.set()
            await self._hold_done.wait()
        return hook

    async def run(self, ready: Callable[[], None] | None = None, go: trio.Event | None = None) -> WorkerReport:
        waiting = len(self.halves)

        def one_ready() -> None:
            nonlocal waiting
            waiting -= 1
            if waiting == 0 and ready is not None:
                ready()

        reports: list[WorkerReport | None] = [None, None]

        async def run_half(k: int) -> None:
            half = self.halves[k]
            if self.hold_hook is not None:
                half.hold_hook = self._hook_of(k)
            reports[k] = await half.run(ready=one_ready, go=go)

        try:
            async with trio.open_nursery() as nursery:
                for k in range(len(self.halves)):
                    nursery.start_soon(run_half, k)
        finally:
            # (first and last arrival stay unset, as in any merged report: the halves' clocks differ)
            self.report = merge_reports([r if r is not None else h.report
                                         for r, h in zip(reports, self.halves, strict=True)])
        return self.report
