"""A `Worker` over the in-memory network against an embedded `RegistrarCore`, on trio's clock: the
set-up that tests of the engine on virtual time share (with `trio.testing.MockClock`, hours of
registrations take milliseconds).

    worker, core, wire, agg = memory_worker(scenario, delay=0.01)     # built, not started
    worker, core, wire, start = await run_memory(scenario)            # built and run to its end

`Wire` keeps every request the endpoints sent, parsed, with the (virtual) time it left.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable

import trio

from sipload.engine.embedded import registrar_settings
from sipload.engine.worker import Sink, Worker
from sipload.metrics.aggregate import Aggregate
from sipload.registrar.core import RegistrarCore
from sipload.report.result import EndpointState
from sipload.scenario import RegistrarConfig, Scenario
from sipload.sip import Request, parse_message
from sipload.testing.memory import REGISTRAR, MemoryNetwork


class Wire:
    """Every request the endpoints sent through `net`, with the virtual time it was sent at."""

    def __init__(self, net: MemoryNetwork) -> None:
        self.requests: list[tuple[float, Request]] = []
        inner = net.send

        def send(data: bytes) -> bool:
            msg = parse_message(data)
            assert isinstance(msg, Request)
            self.requests.append((trio.current_time(), msg))
            return inner(data)

        net.send = send  # type: ignore[method-assign]

    def by_user(self) -> dict[str, list[tuple[float, Request]]]:
        out: dict[str, list[tuple[float, Request]]] = defaultdict(list)
        for at, req in self.requests:
            out[(req.headers.get("to") or "").split("sip:")[1].split("@")[0]].append((at, req))
        return out


def memory_worker(sc: Scenario, *, loss: float = 0.0, delay: float = 0.0, rng: random.Random | None = None,
                  agg: Aggregate | None = None, sink: Sink | None = None,
                  ) -> tuple[Worker, RegistrarCore, Wire, Aggregate]:
    """A worker for `sc` on the in-memory network, the registrar's settings from `sc.registrar`; its
    interval snapshots go to `agg` (a new `Aggregate` if none), or to `sink` instead."""
    config = sc.registrar or RegistrarConfig()
    core = RegistrarCore(registrar_settings(config, 1), now=trio.current_time(), rng=random.Random(1))
    net = MemoryNetwork(core, loss=loss, delay=delay, rng=rng)
    wire = Wire(net)
    agg = agg if agg is not None else Aggregate(0.0)
    worker = Worker(sc, REGISTRAR, network=net, sink=sink if sink is not None else agg.add)
    return worker, core, wire, agg


async def run_memory(sc: Scenario, *, delay: float = 0.0, agg: Aggregate | None = None,
                     hold: Callable[[Worker, RegistrarCore, Wire], None] | None = None,
                     ) -> tuple[Worker, RegistrarCore, Wire, float]:
    """Run a `memory_worker` to its end; `hold(worker, core, wire)` is called at the end of the hold
    (when every endpoint should be registered). Returns the worker's start time too."""
    worker, core, wire, _agg = memory_worker(sc, delay=delay, agg=agg)
    if hold is not None:
        check = hold

        async def at_hold_end(states: list[EndpointState]) -> None:
            check(worker, core, wire)

        worker.hold_hook = at_hold_end
    start = trio.current_time()
    await worker.run()
    return worker, core, wire, start
