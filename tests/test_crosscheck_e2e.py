"""End to end, offline: the embedded registrar with its provider emulators, a real `sipload run` against it,
then the cross-check of the run's endpoints.csv through each provider's client: 100 % agreement, and the
disagreements when the emulators give stale answers. Real clock (short runs), real sockets on 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from sipload.emulators import ApiKeys, ApiKnobs, serve_api
from sipload.emulators.views import share_of
from sipload.engine.run import run_scenario
from sipload.providers.crosscheck import CrossCheckResult, OurEndpoint, run_crosscheck
from sipload.providers.run_endpoints import load_endpoints
from sipload.providers.settings import CrossCheckConfig
from sipload.providers.sources import open_source
from sipload.providers.ultravox_client import UltravoxClient
from sipload.registrar.core import RegistrarCore
from sipload.registrar.listen import Listen
from sipload.registrar.server import serve_registrar
from sipload.registrar.settings import RegistrarSettings
from sipload.scenario import load_scenario

KEY = "e2e-SECRET"
ENV = {"TELNYX_API_KEY": KEY, "AUDIAN_AUTH_TOKEN": KEY, "ULTRAVOX_API_KEY": KEY}
COUNT = 12

SCENARIO = """
name = "xcheck"
[target]
registrar = "sip:127.0.0.1:{port}"
domain = "sipload.test"
[endpoints]
count = {count}
username = "user{{n}}"
password = "pw-user{{n}}"
expires = 60
[load]
rate = 100
duration = "500ms"
unregister = {unregister}
unregister_timeout = "3s"
"""


@dataclass
class Offline:
    sip_port: int
    api_port: int
    core: RegistrarCore

    def config(self, provider: str, poll_interval: float = 0.5, poll_limit: float = 0.0) -> CrossCheckConfig:
        base = {"telnyx": "/v2", "audian": "/v1", "ultravox": ""}[provider]
        account = "acc_e2e" if provider == "audian" else None
        return CrossCheckConfig(provider, f"http://127.0.0.1:{self.api_port}{base}", account,
                                poll_interval=poll_interval, poll_limit=poll_limit)


@asynccontextmanager
async def offline(knobs: ApiKnobs | None = None) -> AsyncIterator[Offline]:
    """What `sipload registrar --listen udp:127.0.0.1:0 --password 'pw-{user}' --api 127.0.0.1:0` runs."""
    settings = RegistrarSettings(realm="sipload.test", password_template="pw-{user}", min_expires=1)
    core = RegistrarCore(settings, now=trio.current_time())
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(lambda task_status: serve_registrar(
            settings, [Listen("udp", "127.0.0.1", 0)], core=core, out=lambda _: None, task_status=task_status))
        api_port = await nursery.start(lambda task_status: serve_api(
            core.store, "127.0.0.1", 0, knobs=knobs or ApiKnobs(), keys=ApiKeys(telnyx=KEY, audian=KEY, ultravox=KEY),
            registrar_settings=settings, task_status=task_status))
        yield Offline(bound[0].port, api_port, core)
        nursery.cancel_scope.cancel()


async def sipload_run(rig: Offline, tmp_path: Path, *, unregister: bool) -> list[OurEndpoint]:
    path = tmp_path / f"xcheck-{unregister}.toml"
    path.write_text(SCENARIO.format(port=rig.sip_port, count=COUNT, unregister=str(unregister).lower()))
    outcome = await run_scenario(load_scenario(path), tmp_path / f"out-{unregister}", progress=lambda _: None,
                                 handle_signals=False, probe=False)
    assert outcome.result.registrations.succeeded == COUNT
    return load_endpoints(outcome.out_dir)


async def crosscheck(rig: Offline, provider: str, endpoints: list[OurEndpoint], poll_interval: float = 0.5,
                     poll_limit: float = 0.0) -> CrossCheckResult:
    config = rig.config(provider, poll_interval, poll_limit)
    source = open_source(config, env=ENV)
    try:
        return await run_crosscheck(endpoints, source, config)
    finally:
        await source.aclose()


async def test_a_held_run_agrees_100_percent_with_telnyx_and_audian(tmp_path: Path) -> None:
    async with offline() as rig:
        endpoints = await sipload_run(rig, tmp_path, unregister=False)
        assert {e.state for e in endpoints} == {"registered"}
        for provider in ("telnyx", "audian"):
            result = await crosscheck(rig, provider, endpoints)
            assert result.matrix == {"registered": {"registered": COUNT}}, (provider, result.to_dict())
            assert result.agreement_pct == 100.0 and result.passed(100)


async def test_an_unregistered_run_agrees_too(tmp_path: Path) -> None:
    async with offline() as rig:
        endpoints = await sipload_run(rig, tmp_path, unregister=True)
        assert {e.state for e in endpoints} == {"unregistered"}
        telnyx = await crosscheck(rig, "telnyx", endpoints)
        audian = await crosscheck(rig, "audian", endpoints)
    assert telnyx.matrix == audian.matrix == {"unregistered": {"unregistered": COUNT}}
    assert telnyx.agreement_pct == audian.agreement_pct == 100.0


async def test_ultravox_registers_to_the_registrar_and_agrees(tmp_path: Path) -> None:
    """Ultravox is a SIP client: its registrations go to our registrar, and `successful` is polled."""
    async with offline() as rig:
        async with UltravoxClient(KEY, f"http://127.0.0.1:{rig.api_port}") as client:
            for n in range(1, 6):
                password = "not-it" if n == 5 else f"pw-uv{n}"
                await client.create(username=f"uv{n}", password=password, proxy=f"127.0.0.1:{rig.sip_port}")
        ours = [OurEndpoint(f"uv{n}", "registered") for n in range(1, 6)]
        result = await crosscheck(rig, "ultravox", ours, poll_interval=0.05, poll_limit=5)
        # and the registrar's other face agrees: Telnyx shows the same four registered, uv5 failed
        telnyx = await crosscheck(rig, "telnyx", ours)
    assert result.matrix == {"registered": {"registered": 4, "failed": 1}}
    assert [(d.username, d.theirs) for d in result.disagreements] == [("uv5", "failed")]
    assert telnyx.matrix == {"registered": {"registered": 4, "failed": 1}}


async def test_stale_answers_show_up_as_disagreements(tmp_path: Path) -> None:
    async with offline(ApiKnobs(stale_lag=3600, stale_share=0.5)) as rig:
        endpoints = await sipload_run(rig, tmp_path, unregister=False)
        result = await crosscheck(rig, "telnyx", endpoints)
        audian = await crosscheck(rig, "audian", endpoints)
    stale = {e.username for e in endpoints if share_of(e.username) < 0.5}
    assert 0 < len(stale) < COUNT
    assert {d.username for d in result.disagreements} == stale
    assert result.matrix == {"registered": {"registered": COUNT - len(stale), "not_registered": len(stale)}}
    assert not result.passed(100) and result.agreement_pct == 100.0 * (COUNT - len(stale)) / COUNT
    assert {d.username for d in audian.disagreements} == stale
    assert audian.to_dict()["matrix"] == {"registered": {"registered": COUNT - len(stale),
                                                         "unregistered": len(stale)}}
