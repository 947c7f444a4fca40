"""The embedded registrar of a scenario whose target is `embedded`, started in the run's nursery."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import trio

from sipload.registrar.listen import Listen
from sipload.registrar.server import serve_registrar
from sipload.registrar.settings import RegistrarSettings
from sipload.scenario import RegistrarConfig, Scenario
from sipload.transport.udp import Address


def registrar_settings(config: RegistrarConfig, seed: int | None) -> RegistrarSettings:
    """The scenario's `[registrar]` (already a RegistrarSettings) with the given seed."""
    return replace(config, seed=seed)


async def start_embedded_registrar(nursery: trio.Nursery, scenario: Scenario) -> Address:
    """Start the in-process registrar (UDP) and return the address it bound."""
    config = scenario.registrar or RegistrarConfig(realm=scenario.target.domain, seed=scenario.seed)
    listen = Listen("udp", config.listen_host, config.listen_port)
    bound: list[Listen] = await nursery.start(partial(serve_registrar, config, [listen]))
    return (bound[0].host, bound[0].port)
