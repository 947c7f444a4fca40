"""Which engine runs which device group, and the worker that runs them.

`choose_engine` settles `load.engine` ("native" or "python") and, when the native engine can run some
groups but not all, `load.python_groups`: the groups the Python engine runs beside it (`SplitWorker`).
`make_worker` builds the worker the settled scenario asks for; `engines_of` is summary.json's `engines`.
"""

from __future__ import annotations

from dataclasses import replace

import trio
import trio.testing

from sipload.engine.native_worker import NativeWorker, group_refusals, native_refusal, scenario_refusal
from sipload.engine.routes import Destinations, WorkerError
from sipload.engine.split_worker import SplitWorker
from sipload.engine.worker import Shard, Sink, Worker
from sipload.scenario import Scenario
from sipload.scenario.groups import plan_fleet
from sipload.transport.udp import Address

__all__ = ["choose_engine", "engines_of", "make_worker", "native_refusal"]


VIRTUAL_CLOCK = "trio runs on a virtual clock (the native engine keeps the system's time)"


def _virtual_clock() -> bool:
    """Whether this trio run's clock is a test's virtual one."""
    try:
        return isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)
    except RuntimeError:  # outside trio
        return False


def _settled(scenario: Scenario, engine: str, python_groups: tuple[str, ...] = ()) -> Scenario:
    return replace(scenario, load=replace(scenario.load, engine=engine, python_groups=python_groups))


def choose_engine(scenario: Scenario, destination: Address | Destinations) -> tuple[Scenario, str | None]:
    """The scenario with its engines settled, and why auto kept Python for some or all of it (if it did).

    Raises WorkerError when "native" was asked for a scenario the native engine cannot run whole."""
    asked = scenario.load.engine
    if asked == "python":
        return _settled(scenario, "python"), None
    refusal = VIRTUAL_CLOCK if _virtual_clock() else native_refusal(scenario, destination)
    if refusal is None:
        return _settled(scenario, "native"), None
    if asked == "native":
        raise WorkerError(f"--engine native: {refusal}; run it with --engine python (or auto)")
    whole = refusal if refusal == VIRTUAL_CLOCK else scenario_refusal(scenario, destination)
    refused = group_refusals(scenario)
    plan = plan_fleet(scenario.fleet, scenario.endpoints.count, scenario.seed)
    if whole is not None or all(g.name in refused for g in plan.groups if g.count):
        return _settled(scenario, "python"), f"the Python engine ran: {refusal}"
    why = "; ".join(f"group {name!r} {reason}" for name, reason in refused.items())
    return _settled(scenario, "native", tuple(refused)), (
        f"the Python engine ran {', '.join(repr(n) for n in refused)} beside the native one: {why}")


def make_worker(scenario: Scenario, destination: Address | Destinations, *, shard: Shard | None = None,
                sink: Sink | None = None) -> Worker | NativeWorker | SplitWorker:
    """The worker of the engines the scenario settled on (`choose_engine`)."""
    if scenario.load.engine == "native" and scenario.load.python_groups:
        return SplitWorker(scenario, destination, shard=shard, sink=sink)
    if scenario.load.engine == "native":
        return NativeWorker(scenario, destination, shard=shard, sink=sink)
    return Worker(scenario, destination, shard=shard or Shard(), sink=sink)


def engines_of(scenario: Scenario) -> dict[str, str]:
    """Which engine ran each device group (summary.json's `engines`)."""
    native = scenario.load.engine == "native"
    plan = plan_fleet(scenario.fleet, scenario.endpoints.count, scenario.seed)
    return {g.name: "native" if native and g.name not in scenario.load.python_groups else "python"
            for g in plan.groups}
