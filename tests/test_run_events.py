"""A run with `[crosscheck] events = true` against the embedded registrar and its Audian emulator, over real
sockets on 127.0.0.1: sipload subscribes its own webhook receiver, every registration and unregistration
is matched to its event (latency per type in summary.json and thresholds), loss and delay injected on the
emulator's deliveries show as missing events and longer latencies, and the subscription is deleted at the
end, also when the run is stopped. Real clock, runs of about a second.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import jsonschema
import pytest
import trio

from sipload.emulators import ApiKeys, ApiKnobs, serve_api
from sipload.emulators.app import Emulators
from sipload.engine.run import ExitCode, RunOutcome, run_scenario
from sipload.registrar.core import RegistrarCore
from sipload.registrar.listen import Listen
from sipload.registrar.server import serve_registrar
from sipload.registrar.settings import RegistrarSettings, parse_delay
from sipload.report.schema import summary_schema
from sipload.scenario import ScenarioError, parse_scenario

TOKEN = "events-SECRET-token"
SCENARIO = """
name = "events"
seed = 7
thresholds = ["webhook.registered.p99 < 2s", "webhook.unregistered.p99 < 2s", "webhook.missing == 0",
              "webhook.duplicates == 0", "webhook.unknown_device == 0"]
[target]
registrar = "sip:127.0.0.1:{sip_port}"
domain = "sipload.test"
[endpoints]
count = 20
expires = 60
[load]
rate = 40
duration = "1s"
interval = "500ms"
[crosscheck]
provider = "audian"
account_id = "acc_events"
base_url = "http://127.0.0.1:{api_port}/v2"
api_key_env = "SIPLOAD_TEST_AUDIAN_TOKEN"
events = true
events_wait = "{wait}"
"""


@dataclass
class Rig:
    sip_port: int
    api_port: int
    emulators: list[Emulators]

    def scenario(self, tmp_path: Path, wait: str = "3s", extra: str = "") -> str:
        return SCENARIO.format(sip_port=self.sip_port, api_port=self.api_port, wait=wait) + extra


@asynccontextmanager
async def rig(knobs: ApiKnobs | None = None) -> AsyncIterator[Rig]:
    settings = RegistrarSettings(realm="sipload.test", min_expires=1)
    core = RegistrarCore(settings, now=trio.current_time())
    ready: list[Emulators] = []
    async with trio.open_nursery() as nursery:
        listens = await nursery.start(partial(serve_registrar, settings, [Listen("udp", "127.0.0.1", 0)], core=core,
                                              out=lambda _: None))
        api_port = await nursery.start(partial(serve_api, core.store, "127.0.0.1", 0,
                                               knobs=knobs or ApiKnobs(audian_account="acc_events"),
                                               keys=ApiKeys(audian=TOKEN), registrar=core, on_ready=ready.append))
        yield Rig(listens[0].port, api_port, ready)
        nursery.cancel_scope.cancel()


async def run(text: str, tmp_path: Path, stop: trio.Event | None = None) -> RunOutcome:
    sc = parse_scenario(text, tmp_path / "events.toml")
    with trio.fail_after(60):
        return await run_scenario(sc, tmp_path / "out", progress=lambda _: None, handle_signals=False, stop=stop)


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIPLOAD_TEST_AUDIAN_TOKEN", TOKEN)


async def test_every_registration_and_unregistration_is_matched_to_its_event(tmp_path: Path) -> None:
    async with rig() as r:
        outcome = await run(r.scenario(tmp_path), tmp_path)
        hub = r.emulators[0].audian.hub
        assert hub.subscriptions == {}        # deleted at the end
    assert outcome.exit_code is ExitCode.OK, ([t for t in outcome.result.thresholds if not t.passed],
                                              outcome.result.notes)
    text = (tmp_path / "out" / "summary.json").read_text()
    summary = json.loads(text)
    jsonschema.validate(summary, summary_schema())
    events = summary["events"]
    for kind in ("registered", "unregistered"):
        tally = events["events"][kind]
        assert (tally["expected"], tally["matched"], tally["missing"]) == (20, 20, 0), tally
        assert 0 < tally["latency_ms"]["p50"] <= tally["latency_ms"]["p99"] < 2000
    assert events["events"]["offline"]["expected"] == 0 and events["received"] == 40
    assert [events[k] for k in ("duplicates", "unexpected", "out_of_order", "unknown_device")] == [0, 0, 0, 0]
    assert summary["engines"] == {"default": "python"}
    assert any("crosscheck.events needs each endpoint's 200 OK times" in n for n in summary["notes"])
    assert TOKEN not in text and TOKEN not in (tmp_path / "out" / "report.html").read_text()
    assert "Provider events" in (tmp_path / "out" / "report.html").read_text()


async def test_lost_events_are_missing_and_fail_the_gate(tmp_path: Path) -> None:
    async with rig(ApiKnobs(audian_account="acc_events", webhook_loss=0.3, seed=1)) as r:
        outcome = await run(r.scenario(tmp_path, wait="1s"), tmp_path)
    events = outcome.result.events
    assert events is not None and events["missing"] > 0
    assert events["missing"] == 40 - events["received"]
    assert outcome.exit_code is ExitCode.THRESHOLD_FAILED
    failed = [t.expr for t in outcome.result.thresholds if not t.passed]
    assert failed == ["webhook.missing == 0"]


async def test_delayed_deliveries_show_in_the_latency(tmp_path: Path) -> None:
    async with rig(ApiKnobs(audian_account="acc_events", webhook_delay=parse_delay("150ms"))) as r:
        outcome = await run(r.scenario(tmp_path), tmp_path)
    events = outcome.result.events
    assert events is not None and events["missing"] == 0
    assert events["events"]["registered"]["latency_ms"]["p50"] >= 150.0


async def test_a_stopped_run_still_deletes_its_subscription(tmp_path: Path) -> None:
    stop = trio.Event()
    async with rig() as r:
        async with trio.open_nursery() as nursery:
            outcome_box: list[RunOutcome] = []

            async def go() -> None:
                outcome_box.append(await run(r.scenario(tmp_path).replace('duration = "1s"', 'duration = "30s"'),
                                             tmp_path, stop))

            nursery.start_soon(go)
            with trio.fail_after(10):
                while not r.emulators or not r.emulators[0].audian.hub.subscriptions:
                    await trio.sleep(0.01)
            await trio.sleep(0.3)
            stop.set()
        assert r.emulators[0].audian.hub.subscriptions == {}
    outcome = outcome_box[0]
    assert outcome.exit_code is ExitCode.INTERRUPTED and outcome.result.events is not None
    assert outcome.result.events["events"]["registered"]["matched"] > 0


async def test_a_subscription_refused_is_a_note_and_the_run_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    ) -> None:
    monkeypatch.setenv("SIPLOAD_TEST_AUDIAN_TOKEN", "wrong")
    async with rig() as r:
        outcome = await run(r.scenario(tmp_path), tmp_path)
    assert outcome.result.events is None
    assert any(n.startswith("webhooks of audian not watched:") for n in outcome.result.notes)
    assert "wrong" not in " ".join(outcome.result.notes)
    why = {t.expr: t.why for t in outcome.result.thresholds}
    assert outcome.exit_code is ExitCode.THRESHOLD_FAILED and why["webhook.missing == 0"]


def test_events_keys_are_checked_naming_the_field(tmp_path: Path) -> None:
    text = SCENARIO.format(sip_port=5060, api_port=8089, wait="3s")
    with pytest.raises(ScenarioError, match=r"crosscheck\.events: must be true or false"):
        parse_scenario(text.replace("events = true", 'events = "yes"'), tmp_path / "events.toml")
    with pytest.raises(ScenarioError, match=r"crosscheck\.events_listen: 'here': expected HOST:PORT"):
        parse_scenario(text + 'events_listen = "here"\n', tmp_path / "events.toml")
    with pytest.raises(ScenarioError, match=r"crosscheck\.events: webhooks are watched for audian only"):
        parse_scenario(text.replace('provider = "audian"', 'provider = "telnyx"'), tmp_path / "events.toml")


async def test_a_device_that_goes_away_is_announced_offline_when_its_binding_expires(tmp_path: Path) -> None:
    churn = """
[[groups]]
name = "mobiles"
share = 1.0
expires = 2
churn = { share = 1.0, every = "1s", away = "30s" }
"""
    async with rig() as r:
        text = r.scenario(tmp_path, wait="4s", extra=churn).replace('duration = "1s"', 'duration = "2s"')
        outcome = await run(text, tmp_path)
    events = outcome.result.events
    assert events is not None, outcome.result.notes
    offline = events["events"]["offline"]
    vanished = sum(s.vanished for s in outcome.result.endpoint_states)
    assert vanished > 0 and offline["expected"] == vanished
    assert offline["matched"] == vanished and offline["missing"] == 0
    assert 0 < offline["latency_ms"]["p50"] <= 2100           # the rest of its expiry, 2 s at most
    assert events["events"]["registered"]["matched"] == 20 and events["unexpected"] == 0
