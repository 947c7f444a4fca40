"""What a run was: sipload's version, the host, the workers, the engine and the effective load parameters.

It goes into summary.json as ``run`` so that two results can be compared knowing whether they measured
the same thing (`sipload compare` says, a line each, where they differ) and so that a report can name
what it shows. Nothing here is a secret: no password template, no credential, no API key.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from typing import Any

from sipload import __version__
from sipload.scenario import Scenario


@dataclass(frozen=True, slots=True)
class HostInfo:
    name: str
    cores: int  # usable by this process (its CPU affinity)
    system: str
    kernel: str
    machine: str
    python: str


@dataclass(frozen=True, slots=True)
class LoadParameters:
    """The scenario's load after the command-line overrides (--endpoints, --rate, --duration)."""

    endpoints: int
    shape: str  # constant, steps or ramp
    rate: float | None  # the constant rate; None for steps or a ramp
    steps: list[dict[str, float]] | None  # [{"rate": /s, "duration_s": s}]
    ramp: dict[str, float] | None  # {"from": /s, "to": /s, "duration_s": s}
    max_in_flight: int
    expires_s: int
    refresh_at: float
    duration_s: float
    unregister: bool
    groups: list[str]
    seed: int | None


@dataclass(frozen=True, slots=True)
class RunInfo:
    sipload_version: str
    workers: int  # worker processes (or cluster shards) that shared the load; 1: in-process
    placement: str  # "in-process", "processes" or "dask:ADDRESS"
    engine: str  # what ran: "native", "python" (load.engine after auto was decided)
    engine_requested: str  # --engine or load.engine: auto, native or python
    host: HostInfo
    parameters: LoadParameters

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def host_info() -> HostInfo:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return HostInfo(name=platform.node(), cores=cores, system=platform.system(), kernel=platform.release(),
                    machine=platform.machine(), python=platform.python_version())


def load_parameters(scenario: Scenario) -> LoadParameters:
    load, ep = scenario.load, scenario.endpoints
    return LoadParameters(
        endpoints=ep.count,
        shape=str(load.shape),
        rate=load.rate,
        steps=[{"rate": s.rate, "duration_s": s.duration} for s in load.steps] or None,
        ramp=None if load.ramp is None else {"from": load.ramp.start_rate, "to": load.ramp.end_rate,
                                              "duration_s": load.ramp.duration},
        max_in_flight=load.max_in_flight,
        expires_s=ep.expires,
        refresh_at=ep.refresh_at,
        duration_s=load.duration,
        unregister=load.unregister,
        groups=[g.name for g in scenario.fleet],
        seed=scenario.seed,
    )


def run_info(scenario: Scenario, *, workers: int, placement: str, engine_requested: str) -> RunInfo:
    """``scenario``: as it ran (its load.engine already decided, native or python)."""
    return RunInfo(sipload_version=__version__, workers=workers, placement=placement,
                   engine="native" if scenario.load.engine == "native" else "python",
                   engine_requested=engine_requested, host=host_info(),
                   parameters=load_parameters(scenario))


_TOP = ("sipload_version", "workers", "placement", "engine")
_HOST = ("name", "cores", "kernel", "python")
_PARAMETERS = ("endpoints", "shape", "rate", "steps", "ramp", "max_in_flight", "expires_s", "refresh_at",
               "duration_s", "unregister", "groups")


def differences(base: object, new: object) -> list[str]:
    """'workers: 1 in BASE, 2 in NEW' for each way two summaries' ``run`` objects differ ([] unless both have one)."""
    if not isinstance(base, dict) or not isinstance(new, dict):
        return []
    out = [f"{key}: {_show(base.get(key))} in BASE, {_show(new.get(key))} in NEW"
           for key in _TOP if base.get(key) != new.get(key)]
    bh, nh = _dict(base.get("host")), _dict(new.get("host"))
    out += [f"host {key}: {_show(bh.get(key))} in BASE, {_show(nh.get(key))} in NEW"
            for key in _HOST if bh.get(key) != nh.get(key)]
    bp, np_ = _dict(base.get("parameters")), _dict(new.get("parameters"))
    out += [f"{key}: {_show(bp.get(key))} in BASE, {_show(np_.get(key))} in NEW"
            for key in _PARAMETERS if bp.get(key) != np_.get(key)]
    return out


def missing(base: object, new: object) -> str | None:
    """A sentence when only one of the two summaries records its run (an older sipload wrote the other)."""
    if isinstance(base, dict) == isinstance(new, dict):
        return None
    which = "NEW" if isinstance(base, dict) else "BASE"
    return (f"{which} does not record its run context (written by an older sipload): cannot tell whether "
            f"workers, host or load parameters differ")


def describe_load(parameters: object) -> str:
    """The offered load of a run's ``parameters`` in words: "100/s", "steps: 50/s for 5 s, ...", "ramp: ..."."""
    p = _dict(parameters)
    if p.get("steps"):
        return "steps: " + _show(p["steps"])
    if p.get("ramp"):
        return "ramp: " + _show(p["ramp"])
    return "–" if p.get("rate") is None else f"constant {_show(p['rate'])}/s"


def _dict(x: object) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def _show(x: object) -> str:
    if x is None:
        return "none"
    if isinstance(x, list) and all(isinstance(s, dict) and set(s) == {"rate", "duration_s"} for s in x):
        return ", ".join(f"{s['rate']:g}/s for {s['duration_s']:g} s" for s in x)
    if isinstance(x, dict) and set(x) == {"from", "to", "duration_s"}:
        return f"{x['from']:g}/s to {x['to']:g}/s over {x['duration_s']:g} s"
    if isinstance(x, list):
        return ", ".join(map(str, x))
    if isinstance(x, float):
        return f"{x:g}"
    return str(x)
