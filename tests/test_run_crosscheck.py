"""A run with a [crosscheck] section: the provider emulators answer from the registrar's own store."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import trio

from sipload.emulators.app import serve_api
from sipload.emulators.knobs import NO_FAULTS, ApiKeys, ApiKnobs
from sipload.engine.run import ExitCode, RunError, RunOutcome, run_scenario
from sipload.registrar.core import RegistrarCore
from sipload.registrar.listen import Listen
from sipload.registrar.server import serve_registrar
from sipload.registrar.settings import RegistrarSettings
from sipload.scenario import ScenarioError, parse_scenario

SCENARIO = """
name = "xc"
seed = 5
thresholds = ["crosscheck.agreement == 100%", "register.success_rate == 100%"]
[target]
registrar = "sip:127.0.0.1:{sip_port}"
domain = "sipload.test"
[endpoints]
count = 15
expires = 60
[load]
rate = 50
duration = "1s"
interval = "500ms"
[crosscheck]
provider = "telnyx"
base_url = "http://127.0.0.1:{api_port}/v2"
api_key_env = "SIPLOAD_TEST_TELNYX_KEY"
when = "{when}"
"""


async def run_with_emulators(tmp_path: Path, when: str, knobs: ApiKnobs = NO_FAULTS, base: str = "/v2") -> RunOutcome:
    settings = RegistrarSettings(realm="sipload.test", min_expires=1)
    core = RegistrarCore(settings, now=trio.current_time())
    async with trio.open_nursery() as nursery:
        listens = await nursery.start(partial(serve_registrar, settings, [Listen("udp", "127.0.0.1", 0)], core=core))
        api_port = await nursery.start(partial(serve_api, core.store, "127.0.0.1", 0, knobs=knobs,
                                               keys=ApiKeys(telnyx="key-123")))
        text = SCENARIO.format(sip_port=listens[0].port, api_port=api_port, when=when).replace("/v2", base)
        sc = parse_scenario(text, tmp_path / "xc.toml")
        with trio.fail_after(60):
            outcome = await run_scenario(sc, tmp_path / "out", progress=lambda _: None, handle_signals=False)
        nursery.cancel_scope.cancel()
    return outcome


async def test_a_wrong_base_url_stops_the_run_before_its_load(tmp_path: Path) -> None:
    with pytest.raises(ExceptionGroup) as raised:  # through the emulators' nursery
        await run_with_emulators(tmp_path, "after", base="/v3")
    assert raised.group_contains(RunError)
    message = str(raised.value.exceptions[0])
    assert message.startswith("crosscheck: telnyx: GET /credential_connections at http://127.0.0.1:")
    assert "/v3 answered 404 Not Found: that is not Telnyx's API; check the base URL" in message
    assert "\n" not in message and not (tmp_path / "out").exists()  # no load ran, no results left


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIPLOAD_TEST_TELNYX_KEY", "key-123")


@pytest.mark.parametrize(("when", "ours", "theirs"), [("holding", "registered", "registered"),
                                                        ("after", "unregistered", "unregistered")])
async def test_crosscheck_agrees_fully(tmp_path: Path, when: str, ours: str, theirs: str) -> None:
    outcome = await run_with_emulators(tmp_path, when)
    assert outcome.exit_code is ExitCode.OK, (outcome.result.notes, outcome.result.thresholds)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    cc = summary["crosscheck"]
    assert cc["agreement_pct"] == 100.0
    assert cc["matrix"] == {ours: {theirs: 15}}
    assert "key-123" not in (tmp_path / "out" / "summary.json").read_text()


async def test_stale_provider_answers_show_as_disagreements_and_fail_the_gate(tmp_path: Path) -> None:
    outcome = await run_with_emulators(tmp_path, "holding", ApiKnobs(stale_lag=3600.0, stale_share=1.0))
    assert outcome.exit_code is ExitCode.THRESHOLD_FAILED
    cc = outcome.result.crosscheck
    assert cc is not None and cc["agreement_pct"] < 100.0 and cc["disagreements_total"] == 15
    failed = [t.expr for t in outcome.result.thresholds if not t.passed]
    assert failed == ["crosscheck.agreement == 100%"]


def test_crosscheck_section_errors_name_the_field(tmp_path: Path) -> None:
    text = SCENARIO.format(sip_port=5060, api_port=8089, when="sometimes")
    with pytest.raises(ScenarioError, match=r"xc\.toml: crosscheck\.when: must be 'after' or 'holding'"):
        parse_scenario(text, tmp_path / "xc.toml")
    text = SCENARIO.format(sip_port=5060, api_port=8089, when="after").replace('provider = "telnyx"',
                                                                                 'provider = "nope"')
    with pytest.raises(ScenarioError, match=r"crosscheck\.provider"):
        parse_scenario(text, tmp_path / "xc.toml")
