"""The embedded registrar of a scenario whose target is `embedded`, started in the run's nursery."""

from __future__ import annotations

from functools import partial

import trio

from sipload.registrar.listen import Listen
from sipload.registrar.server import serve_registrar
from sipload.registrar.settings import DelayKind, DelaySpec, RegistrarSettings
from sipload.scenario import DelayDistribution, RegistrarConfig, Scenario
from sipload.sip.digest import Algorithm
from sipload.transport.udp import Address

_DELAY_KINDS = {
    DelayDistribution.FIXED: DelayKind.FIXED,
    DelayDistribution.UNIFORM: DelayKind.UNIFORM,
    DelayDistribution.EXPONENTIAL: DelayKind.EXPONENTIAL,
}


def registrar_settings(config: RegistrarConfig, seed: int | None) -> RegistrarSettings:
    d = config.delay
    if d.distribution is DelayDistribution.FIXED:
        delay = DelaySpec(DelayKind.FIXED, d.value) if d.value > 0 else DelaySpec()
    elif d.distribution is DelayDistribution.UNIFORM:
        delay = DelaySpec(DelayKind.UNIFORM, d.low, d.high)
    else:
        delay = DelaySpec(_DELAY_KINDS[d.distribution], d.mean)
    algorithms = tuple(a for a in (Algorithm.parse(n) for n in config.algorithms) if a is not None)
    return RegistrarSettings(
        realm=config.realm,
        password_template=config.password,
        users=dict(config.users) if config.users is not None else None,
        algorithms=algorithms or (Algorithm.MD5,),
        default_expires=config.default_expires,
        min_expires=config.min_expires,
        max_expires=config.max_expires,
        nonce_lifetime=config.nonce_lifetime,
        drop=config.drop,
        delay=delay,
        error_503=config.error_503,
        retry_after=config.retry_after,
        seed=seed,
    )


async def start_embedded_registrar(nursery: trio.Nursery, scenario: Scenario) -> Address:
    """Start the in-process registrar (UDP) and return the address it bound."""
    config = scenario.registrar or RegistrarConfig(realm=scenario.target.domain)
    settings = registrar_settings(config, scenario.seed)
    listen = Listen("udp", config.listen_host, config.listen_port)
    bound: list[Listen] = await nursery.start(partial(serve_registrar, settings, [listen]))
    return (bound[0].host, bound[0].port)
