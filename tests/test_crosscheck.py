"""The cross-check core: matrix, agreement, disagreements, errors that do not stop it, propagation delay by
polling (fake clock, and the Telnyx emulator with a stale lag on trio's MockClock), and `sipload check`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import trio
import trio.testing
from click.testing import CliRunner

from sipload.cli.check import check
from sipload.emulators import ApiKeys, ApiKnobs, serve_api
from sipload.emulators.views import share_of
from sipload.providers.agreement import agrees, expected
from sipload.providers.crosscheck import CrossCheckResult, OurEndpoint, measure_propagation, run_crosscheck
from sipload.providers.crosscheck_text import result_lines
from sipload.providers.errors import NotProvisioned, ProviderHttpError
from sipload.providers.settings import CrossCheckConfig
from sipload.providers.sources import Answer, gather_bounded, open_source
from sipload.providers.status import ProviderError, ProviderState, RegistrationStatus
from sipload.registrar.bindings import BindingStore, ContactChange, RequestInfo
from sipload.registrar.core import RegistrarCore
from sipload.registrar.listen import Listen
from sipload.registrar.server import serve_registrar
from sipload.registrar.settings import RegistrarSettings

NOW = 1_700_000_000.0
KEY = "xcheck-SECRET-key"
R, NR, UNREG, EXP, FAIL, UNK = (ProviderState.REGISTERED, ProviderState.NOT_REGISTERED, ProviderState.UNREGISTERED,
                                ProviderState.EXPIRED, ProviderState.FAILED, ProviderState.UNKNOWN)


class FakeTime:
    def __init__(self) -> None:
        self.now = NOW

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


class ScriptedSource:
    """Answers from a script per user: one entry per call, the last one repeated."""

    name = "scripted"

    def __init__(self, script: dict[str, list[ProviderState | ProviderError]]) -> None:
        self.script = script
        self.calls: list[list[str]] = []

    async def statuses(self, users: Sequence[str]) -> dict[str, Answer]:
        self.calls.append(list(users))
        out: dict[str, Answer] = {}
        for user in users:
            steps = self.script[user]
            step = steps.pop(0) if len(steps) > 1 else steps[0]
            out[user] = RegistrationStatus(user, step, detail="from script") if isinstance(step, ProviderState) \
                else step
        return out

    async def aclose(self) -> None:
        return None


def test_agreement_table() -> None:
    assert agrees("registered", "registered") and agrees("refreshing", "registered")
    assert not agrees("registered", "expired") and not agrees("registered", "missing")
    assert agrees("unregistered", "not_registered") and agrees("unregistered", "unregistered")
    assert not agrees("unregistered", "registered") and not agrees("unregistered", "expired")
    assert expected("failed:auth_rejected") == expected("failed:timeout") == expected("idle")
    assert agrees("failed:auth_rejected", "failed") and not agrees("failed:auth_rejected", "registered")
    assert agrees("registering", "registered") and agrees("registering", "not_registered")
    assert not agrees("registering", "error")


async def test_matrix_disagreements_and_errors_that_do_not_stop_the_check() -> None:
    endpoints = [
        OurEndpoint("u1", "registered"), OurEndpoint("u2", "registered"), OurEndpoint("u3", "unregistered"),
        OurEndpoint("u4", "failed:auth_rejected"), OurEndpoint("u5", "registered"), OurEndpoint("u6", "registered"),
    ]
    source = ScriptedSource({
        "u1": [R], "u2": [EXP], "u3": [UNREG], "u4": [FAIL],
        "u5": [ProviderHttpError("fake GET /x: no answer within 1 s", endpoint="fake GET /x")],
        "u6": [NotProvisioned("fake: no device named 'u6'")],
    })
    result = await run_crosscheck(endpoints, source, CrossCheckConfig("kamailio", min_agreement=50))
    assert result.matrix == {"registered": {"registered": 1, "expired": 1, "error": 1, "missing": 1},
                             "unregistered": {"unregistered": 1}, "failed:auth_rejected": {"failed": 1}}
    assert (result.checked, result.agreed, round(result.agreement_pct, 1)) == (6, 3, 50.0)
    assert result.passed() and not result.passed(100)
    assert [(d.username, d.ours, d.theirs) for d in result.disagreements] == [
        ("u2", "registered", "expired"), ("u5", "registered", "error"), ("u6", "registered", "missing")]
    assert result.disagreements[0].detail == "from script"
    assert [(e.username, e.message) for e in result.errors] == [("u5", "fake GET /x: no answer within 1 s")]
    d = json.loads(json.dumps(result.to_dict()))
    assert d["agreement_pct"] == 50.0 and d["disagreements_total"] == 3 and d["errors_total"] == 1
    assert d["propagation_ms"] == {"count": 0} and d["passed"] is True
    text = "\n".join(result_lines(result))
    assert "cross-check with scripted: 3/6 agree (50.0 %)" in text
    assert "u2: sipload registered, provider expired: from script" in text
    assert len(source.calls) == 1  # no polling by default


async def test_propagation_by_polling_with_a_fake_clock() -> None:
    fake = FakeTime()
    endpoints = [OurEndpoint("fast", "registered", NOW), OurEndpoint("slow", "registered", NOW - 0.2),
                 OurEndpoint("never", "registered", NOW), OurEndpoint("old", "registered", NOW - 3600),
                 OurEndpoint("off", "unregistered", NOW)]
    source = ScriptedSource({"fast": [R], "slow": [NR, NR, NR, R], "never": [NR], "old": [R], "off": [NR]})
    config = CrossCheckConfig("kamailio", poll_interval=0.5, poll_limit=5)
    result = await run_crosscheck(endpoints, source, config, clock=fake.clock, sleep=fake.sleep)
    # fast: first answer at once (0 ms); slow: shown at the 3rd poll (1.5 s + 0.2 s); old: its age says nothing
    assert sorted(result.propagation_ms) == pytest.approx([0.0, 1700.0])
    assert result.not_propagated == 1 and result.disagreements[0].username == "never"
    assert source.calls[1] == ["slow", "never"] and source.calls[-1] == ["never"]
    assert fake.now - NOW == pytest.approx(5.0)  # polled until the limit, not beyond
    summary = result.propagation_summary()
    assert summary["count"] == 2 and summary["max"] == pytest.approx(1700.0)
    delay = await measure_propagation(ScriptedSource({"x": [NR, NR, R]}), "x", fake.now, interval=0.25, limit=5,
                                      clock=fake.clock, sleep=fake.sleep)
    assert delay == pytest.approx(500.0)  # shown registered at the third ask
    assert await measure_propagation(ScriptedSource({"x": [NR]}), "x", fake.now, interval=1, limit=3,
                                     clock=fake.clock, sleep=fake.sleep) is None


async def test_lists_are_capped_but_everything_is_counted() -> None:
    endpoints = [OurEndpoint(f"u{i}", "registered") for i in range(50)]
    result = await run_crosscheck(endpoints, ScriptedSource({f"u{i}": [NR] for i in range(50)}),
                                  CrossCheckConfig("kamailio", max_listed=5))
    assert len(result.disagreements) == 5 and result.disagreements_total == 50 and result.agreement_pct == 0.0


async def test_gather_bounded_keeps_going_after_errors() -> None:
    running = 0
    peak = 0

    async def ask(user: str) -> RegistrationStatus:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await trio.sleep(0)
        running -= 1
        if user.endswith("3"):
            raise ProviderError(f"boom {user}")
        return RegistrationStatus(user, R)

    out = await gather_bounded([f"u{i}" for i in range(10)], ask, 4)
    assert peak <= 4 and str(out["u3"]) == "boom u3"
    assert sum(isinstance(a, RegistrationStatus) for a in out.values()) == 9


def _register(store: BindingStore, user: str) -> None:
    now = trio.current_time()
    store.register(f"sip:{user}@sipload.test", user, [ContactChange(f"sip:{user}@127.0.0.1:5060", 3600)],
                   RequestInfo(f"cid-{user}", 1, ("127.0.0.1", 5060), "udp"), now)


async def test_propagation_through_the_telnyx_emulator_with_a_lag(autojump_clock: trio.testing.MockClock) -> None:
    """The emulator shows registrations 2 s late: polling every 250 ms measures 2.0-2.25 s."""
    store = BindingStore()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(lambda task_status: serve_api(
            store, "127.0.0.1", 0, knobs=ApiKnobs(stale_lag=2.0), keys=ApiKeys(telnyx=KEY), task_status=task_status))
        ok_at = trio.current_time()
        for i in range(5):
            _register(store, f"user{i}")
        endpoints = [OurEndpoint(f"user{i}", "registered", ok_at) for i in range(5)]
        config = CrossCheckConfig("telnyx", f"http://127.0.0.1:{port}/v2", poll_interval=0.25, poll_limit=10)
        source = open_source(config, env={"TELNYX_API_KEY": KEY}, clock=trio.current_time, sleep=trio.sleep)
        try:
            result = await run_crosscheck(endpoints, source, config, clock=trio.current_time, sleep=trio.sleep)
        finally:
            await source.aclose()
        nursery.cancel_scope.cancel()
    assert result.agreement_pct == 100.0 and result.not_propagated == 0
    assert len(result.propagation_ms) == 5
    assert all(2000.0 <= d <= 2250.0 for d in result.propagation_ms), result.propagation_ms


# --- the command ---------------------------------------------------------------------------------------
class ApiThread:
    """The emulators in a thread of their own (the command runs trio.run itself)."""

    def __init__(self, users: Sequence[str], knobs: ApiKnobs) -> None:
        self.port = 0
        self.sip_port = 0
        self._ready = threading.Event()
        self._stop: trio.Event | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._users = users
        self._knobs = knobs
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    async def _main(self) -> None:
        settings = RegistrarSettings(realm="sipload.test", password_template="pw-{user}")
        core = RegistrarCore(settings, now=trio.current_time())
        for user in self._users:
            _register(core.store, user)
        self._stop = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(lambda task_status: serve_registrar(
                settings, [Listen("udp", "127.0.0.1", 0)], core=core, out=lambda _: None, task_status=task_status))
            self.sip_port = bound[0].port
            self.port = await nursery.start(lambda task_status: serve_api(
                core.store, "127.0.0.1", 0, knobs=self._knobs, keys=ApiKeys(telnyx=KEY, audian=KEY, ultravox=KEY),
                task_status=task_status))
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def __enter__(self) -> ApiThread:
        self._thread.start()
        assert self._ready.wait(30), "the emulators did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._token is not None and self._stop is not None
        trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(30)


@pytest.fixture
def api() -> Iterator[ApiThread]:
    with ApiThread([f"user{n}" for n in range(1, 6)], ApiKnobs()) as running:
        yield running


def test_check_command_exit_codes(api: ApiThread, tmp_path: Path) -> None:
    runner = CliRunner()
    base = f"http://127.0.0.1:{api.port}"
    env = {"TELNYX_API_KEY": KEY, "AUDIAN_AUTH_TOKEN": KEY}
    ok = runner.invoke(check, ["--provider", "telnyx", "--base-url", f"{base}/v2", "--users", "user{n}",
                               "--count", "5", "--json", str(tmp_path / "x.json")], env=env)
    assert ok.exit_code == 0, ok.output
    assert "cross-check with telnyx: 5/5 agree (100.0 %)" in ok.output and "PASS" in ok.output
    assert json.loads((tmp_path / "x.json").read_text())["matrix"] == {"registered": {"registered": 5}}
    six = runner.invoke(check, ["--provider", "audian", "--account-id", "acc_1", "--base-url", f"{base}/v1",
                                "--count", "6"], env=env)
    assert six.exit_code == 1, six.output
    assert "user6: sipload registered, provider missing: Audian: no device named 'user6'" in six.output
    assert "FAIL: agreement 83.3 % (wanted >= 100 %)" in six.output
    lenient = runner.invoke(check, ["--provider", "audian", "--account-id", "acc_1", "--base-url", f"{base}/v2",
                                    "--count", "6", "--min-agreement", "80"], env=env)
    assert lenient.exit_code == 0, lenient.output
    no_key = runner.invoke(check, ["--provider", "telnyx", "--base-url", f"{base}/v2", "--count", "5"], env={
        "TELNYX_API_KEY": ""})
    assert no_key.exit_code == 2 and "set the environment variable TELNYX_API_KEY" in no_key.output
    wrong_key = runner.invoke(check, ["--provider", "telnyx", "--base-url", f"{base}/v2", "--count", "2"], env={
        "TELNYX_API_KEY": "WRONG-secret"})
    assert wrong_key.exit_code == 1 and "HTTP 401 Unauthorized" in wrong_key.output
    assert "WRONG-secret" not in wrong_key.output and KEY not in ok.output
    assert runner.invoke(check, ["--provider", "telnyx"], env=env).exit_code == 2          # no --count
    assert runner.invoke(check, ["--provider", "audian", "--count", "1"], env=env).exit_code == 2  # no account
    assert runner.invoke(check, ["--provider", "nope", "--count", "1"]).exit_code == 2
    bad_csv = tmp_path / "endpoints.csv"
    bad_csv.write_text("index,user\n1,x\n")
    result = runner.invoke(check, ["--provider", "telnyx", "--results", str(tmp_path)], env=env)
    assert result.exit_code == 2 and "missing column(s) state, username" in result.output


@pytest.mark.parametrize(("provider", "extra"), [("telnyx", []), ("audian", ["--account-id", "acc_1"]),
                                               ("ultravox", ["--create-registrations", "127.0.0.1:9"])])
def test_a_base_url_answering_404_is_one_line_and_exit_2(api: ApiThread, provider: str, extra: list[str]) -> None:
    wrong = f"http://127.0.0.1:{api.port}/nothing-here"
    env = {"TELNYX_API_KEY": KEY, "AUDIAN_AUTH_TOKEN": KEY, "ULTRAVOX_API_KEY": KEY}
    out = CliRunner().invoke(check, ["--provider", provider, "--base-url", wrong, "--count", "40", *extra], env=env)
    assert out.exit_code == 2, out.output
    (line,) = out.output.splitlines()
    assert line.startswith(f"sipload check: {provider}: GET /") and f"at {wrong} answered 404 Not Found" in line
    assert "check the base URL (expected " in line and KEY not in line


def test_check_command_shows_stale_disagreements(tmp_path: Path) -> None:
    users = [f"user{n}" for n in range(1, 21)]
    stale = {u for u in users if share_of(u) < 0.5}
    assert 0 < len(stale) < 20
    with ApiThread(users, ApiKnobs(stale_lag=3600, stale_share=0.5)) as running:
        out = CliRunner().invoke(check, ["--provider", "telnyx", "--base-url", f"http://127.0.0.1:{running.port}/v2",
                                         "--count", "20", "--show", "50"], env={"TELNYX_API_KEY": KEY})
    assert out.exit_code == 1
    shown = {line.split(":")[0].strip() for line in out.output.splitlines() if "provider not_registered" in line}
    assert shown == stale
    assert f"{20 - len(stale)}/20 agree" in out.output


def test_check_command_creates_ultravox_registrations_and_deletes_them(api: ApiThread) -> None:
    runner = CliRunner()
    args = ["--provider", "ultravox", "--base-url", f"http://127.0.0.1:{api.port}", "--users", "uv{n}", "--count",
            "3", "--create-registrations", f"127.0.0.1:{api.sip_port}", "--poll-limit", "10s",
            "--poll-interval", "50ms"]
    ok = runner.invoke(check, args, env={"ULTRAVOX_API_KEY": KEY})
    assert ok.exit_code == 0, ok.output
    assert "cross-check with ultravox: 3/3 agree (100.0 %)" in ok.output
    bad = runner.invoke(check, [*args[:-4], "--password", "nope-{user}", "--poll-limit", "1s"],
                        env={"ULTRAVOX_API_KEY": KEY})
    assert bad.exit_code == 1 and "uv1: sipload registered, provider failed" in bad.output
    assert "nope-uv1" not in bad.output
    after = runner.invoke(check, ["--provider", "ultravox", "--base-url", f"http://127.0.0.1:{api.port}",
                                  "--users", "uv{n}", "--count", "1"], env={"ULTRAVOX_API_KEY": KEY})
    assert "provider missing" in after.output  # deleted after the check
    misuse = runner.invoke(check, ["--provider", "telnyx", "--count", "1", "--create-registrations", "x:5060"])
    assert misuse.exit_code == 2


def test_result_of_an_empty_check_is_vacuously_full() -> None:
    assert CrossCheckResult("telnyx").agreement_pct == 100.0
