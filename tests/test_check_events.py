"""`sipload check --provider audian` with the emulator of a real registrar (a thread, real sockets on
127.0.0.1): the device log of a device that disagrees is printed, and `--events-for` watches the webhooks
(subscribed, then deleted) and counts what came while it watched."""

from __future__ import annotations

import json
import threading
from functools import partial
from pathlib import Path

import trio
from audian_rig import Phone
from click.testing import CliRunner

from sipload.cli.check import check
from sipload.emulators import ApiKeys, ApiKnobs, serve_api
from sipload.emulators.app import Emulators
from sipload.registrar.bindings import ContactChange, RequestInfo
from sipload.registrar.core import RegistrarCore
from sipload.registrar.listen import Listen
from sipload.registrar.server import serve_registrar
from sipload.registrar.settings import RegistrarSettings
from sipload.sip.registration import RegState

KEY = "check-SECRET"


class Provider:
    """The registrar and its API in a thread; `alice` registered, `bob` refused (wrong password); `late`
    registers `late_after` seconds after start."""

    def __init__(self, late_after: float) -> None:
        self.port = 0
        self.emulators: list[Emulators] = []
        self._late_after = late_after
        self._ready = threading.Event()
        self._stop: trio.Event | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    async def _main(self) -> None:
        settings = RegistrarSettings(realm="sipload.test", password_template="pw-{user}", seed=2)
        core = RegistrarCore(settings, now=trio.current_time())
        self._stop = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(partial(serve_registrar, settings, [Listen("udp", "127.0.0.1", 0)],
                                                core=core, out=lambda _: None))
            self.port = await nursery.start(partial(serve_api, core.store, "127.0.0.1", 0, knobs=ApiKnobs(),
                                                    keys=ApiKeys(audian=KEY), registrar=core,
                                                    on_ready=self.emulators.append))
            server = ("127.0.0.1", bound[0].port)
            with trio.socket.socket(type=trio.socket.SOCK_DGRAM) as sock:
                await sock.bind(("127.0.0.1", 0))
                assert await Phone("alice", sock, server).register() is RegState.REGISTERED
                assert await Phone("bob", sock, server, password="wrong").register() is RegState.FAILED
            self._ready.set()
            nursery.start_soon(self._late, core)
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    async def _late(self, core: RegistrarCore) -> None:
        await trio.sleep(self._late_after)
        core.store.register("sip:late@sipload.test", "late", [ContactChange("sip:late@127.0.0.1:5999", 60)],
                            RequestInfo("cid-late", 1, ("127.0.0.1", 5999), "udp"), trio.current_time())

    def __enter__(self) -> Provider:
        self._thread.start()
        assert self._ready.wait(30), "the provider did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._token is not None and self._stop is not None
        trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(30)


def endpoints(tmp_path: Path) -> Path:
    path = tmp_path / "endpoints.csv"
    path.write_text("username,state\nalice,registered\nbob,registered\n", encoding="utf-8")
    return path


def invoke(provider: Provider, *args: str) -> str:
    out = CliRunner().invoke(check, ["--provider", "audian", "--account-id", "acc_1",
                                     "--base-url", f"http://127.0.0.1:{provider.port}/v2", *args],
                             env={"AUDIAN_AUTH_TOKEN": KEY}, catch_exceptions=False)
    assert out.exit_code == 1 and KEY not in out.output, out.output   # bob disagrees
    return out.output


def test_the_log_of_a_device_that_disagrees_says_why(tmp_path: Path) -> None:
    with Provider(late_after=60) as provider:
        output = invoke(provider, "--results", str(endpoints(tmp_path)), "--logs", "3")
    lines = output.splitlines()
    assert "  bob: sipload registered, provider failed: Audian status 'invalid'" in lines
    at = lines.index("device log of bob (last 3 lines):")
    assert lines[at + 2].endswith("rejected: digest wrong response")
    assert lines[at + 3].endswith("challenged (401, stale=false)")
    assert not any(line.startswith("device log of alice") for line in lines)


def test_events_for_watches_the_webhooks_then_deletes_the_subscription(tmp_path: Path) -> None:
    with Provider(late_after=0.5) as provider:
        output = invoke(provider, "--results", str(endpoints(tmp_path)), "--events-for", "1500ms", "--logs", "0",
                        "--json", str(tmp_path / "check.json"))
        assert provider.emulators[0].audian.hub.subscriptions == {}
    assert "watching audian webhooks at http://127.0.0.1:" in output
    assert "webhooks: 1 events received: registered 1, unregistered 0, offline 0; of unknown devices 1" in output
    assert "device log of" not in output
    assert json.loads((tmp_path / "check.json").read_text())["events"]["unknown_devices"] == ["dev_sip_late"]
