"""The embedded registrar of a scenario whose target is `embedded`, started in the run's nursery.

It listens on every transport the scenario's device groups use (udp, tcp, and ws once the
registrar serves it); TLS and WSS need a certificate the scenario does not give it, so the scenario
refuses them for the embedded registrar (run `sipload registrar` with one and name it as the target).
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import trio

from sipload.registrar.core import RegistrarCore
from sipload.registrar.listen import Listen
from sipload.registrar.server import serve_registrar
from sipload.registrar.settings import RegistrarSettings
from sipload.registrar.stats import too_brief_text
from sipload.scenario import RegistrarConfig, Scenario
from sipload.transport.udp import Address


def registrar_settings(config: RegistrarConfig, seed: int | None) -> RegistrarSettings:
    """The scenario's `[registrar]` (already a RegistrarSettings) with the given seed."""
    return replace(config, seed=seed)


def scenario_transports(scenario: Scenario) -> list[str]:
    """The transports (lower case) the scenario's groups use, in the order the groups name them."""
    found: list[str] = []
    for group in scenario.fleet:
        if group.count and group.transport.value not in found:
            found.append(group.transport.value)
    return found or [scenario.target.transport.value]


def _config(scenario: Scenario) -> RegistrarConfig:
    return scenario.registrar or RegistrarConfig(realm=scenario.target.domain, seed=scenario.seed)


def embedded_core(scenario: Scenario) -> RegistrarCore:
    """The registrar a scenario's `[registrar]` describes (its binding store and counters), to start with
    `start_embedded` and read afterwards."""
    return RegistrarCore(_config(scenario), now=trio.current_time())


def too_brief_note(core: RegistrarCore) -> str | None:
    """A note for the results when the registrar answered 423 because endpoints asked too short an expiry."""
    text = too_brief_text(core.counters, core.settings.min_expires)
    return None if text is None else (f"the embedded registrar {text}; [registrar] min_expires sets the limit, "
                                      "endpoints.expires what the endpoints ask")


async def start_embedded(nursery: trio.Nursery, scenario: Scenario,
                         core: RegistrarCore | None = None) -> dict[str, Address]:
    """Start the in-process registrar on every transport the groups use; the bound address of each
    (upper-case transport -> address). The port of `[registrar] listen` is used for every transport
    (0: a free port each)."""
    config = _config(scenario)
    listens = [Listen(t, config.listen_host, config.listen_port) for t in scenario_transports(scenario)]
    bound: list[Listen] = await nursery.start(partial(serve_registrar, config, listens, core=core))
    return {b.transport.upper(): (b.host, b.port) for b in bound}


async def start_embedded_registrar(nursery: trio.Nursery, scenario: Scenario) -> Address:
    """Start the in-process registrar and return the address of its first listen (udp for most scenarios)."""
    return next(iter((await start_embedded(nursery, scenario)).values()))
