"""sipload's Telnyx client (official SDK inside) against the Telnyx emulator, and the pieces every client
shares: 429 waits from Retry-After / x-ratelimit-reset / retry-after-ms, timestamps, secrets kept out
of messages, reprs and logs.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import httpx
import pytest
import trio
import trio.testing

from sipload.emulators import ApiKeys, ApiKnobs, serve_api
from sipload.providers.audian_client import AudianClient
from sipload.providers.errors import ProviderAuthError, ProviderHttpError, ProviderNotFound, ProviderRateLimited
from sipload.providers.ratelimit import RetryPolicy, retry_wait, server_wait
from sipload.providers.settings import CrossCheckConfig, config_from_mapping
from sipload.providers.sources import open_source
from sipload.providers.status import ProviderError, ProviderState
from sipload.providers.telnyx_client import TelnyxClient, parse_telnyx_time
from sipload.registrar.bindings import BindingStore, ContactChange, RequestInfo
from sipload.registrar.settings import parse_delay

KEY = "KEY0123-telnyx-SECRET"
NOW = 1_700_000_000.0


class FakeTime:
    def __init__(self) -> None:
        self.now = NOW
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


def register(store: BindingStore, user: str, expires: int = 60) -> None:
    now = trio.current_time()
    store.register(f"sip:{user}@sipload.test", user, [ContactChange(f"sip:{user}@127.0.0.1:5070", expires)],
                   RequestInfo(f"cid-{user}", 1, ("127.0.0.1", 5070), "udp", "sipload"), now)


@asynccontextmanager
async def telnyx_api(store: BindingStore, knobs: ApiKnobs | None = None) -> AsyncIterator[str]:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(lambda task_status: serve_api(
            store, "127.0.0.1", 0, knobs=knobs or ApiKnobs(), keys=ApiKeys(telnyx=KEY), task_status=task_status))
        yield f"http://127.0.0.1:{port}/v2"
        nursery.cancel_scope.cancel()


# --- 429 waits -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("headers", "wanted"), [
    ({"Retry-After": "7"}, 7.0),
    ({"retry-after": "1.5"}, 1.5),
    ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),
    ({"Retry-After": "Tue, 14 Nov 2023 22:13:40 GMT"}, 20.0),      # an HTTP date, 20 s after NOW
    ({"x-ratelimit-reset": "12"}, 12.0),                            # Telnyx: seconds to the reset
    ({"x-ratelimit-reset": str(NOW + 30)}, 30.0),                   # a Unix time
    ({"Retry-After": "soon"}, None),
    ({}, None),
])
def test_server_wait(headers: dict[str, str], wanted: float | None) -> None:
    assert server_wait(headers, NOW) == wanted


def test_retry_wait_backs_off_without_headers_and_is_capped() -> None:
    policy = RetryPolicy(base=0.5, max_wait=60)
    assert [retry_wait({}, n, policy, NOW) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert retry_wait({"Retry-After": "3600"}, 1, policy, NOW) == 60


def test_telnyx_times_in_both_forms() -> None:
    assert parse_telnyx_time("2021-09-28T15:11:02") == datetime(2021, 9, 28, 15, 11, 2, tzinfo=UTC)
    assert parse_telnyx_time("2018-02-02T22:25:27.521Z") == datetime(2018, 2, 2, 22, 25, 27, 521000, tzinfo=UTC)
    assert parse_telnyx_time("yesterday") is None and parse_telnyx_time(None) is None


# --- the Telnyx client (SDK inside) against the emulator ----------------------------------------------
async def test_lists_every_page_and_maps_statuses(autojump_clock: trio.testing.MockClock) -> None:
    store = BindingStore()
    for i in range(5):
        register(store, f"user{i}")
    store.mark_rejected("bad1", trio.current_time())
    async with telnyx_api(store) as base, TelnyxClient(KEY, base) as client:
        conns = await client.list_connections(page_size=2)
        assert sorted(c.user_name or "" for c in conns) == ["bad1", *[f"user{i}" for i in range(5)]]
        assert client.requests == 3
        by_user = {c.user_name: c.id for c in conns}
        live = await client.check_registration_status(by_user["user3"])
        assert (live.status, live.state, live.ip_address, live.port, live.transport) == (
            "Registered", ProviderState.REGISTERED, "127.0.0.1", 5070, "UDP")
        assert live.last_registration is not None and live.last_registration.tzinfo is UTC
        status = live.to_status("user3")
        assert status.contacts[0].received == "127.0.0.1:5070"
        failed = await client.check_registration_status(by_user["bad1"])
        assert failed.to_status("bad1").state is ProviderState.FAILED


async def test_404_and_401_are_clear_errors_without_the_key(autojump_clock: trio.testing.MockClock,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with telnyx_api(BindingStore()) as base:
        async with TelnyxClient(KEY, base) as client:
            with pytest.raises(ProviderNotFound) as missing:
                await client.check_registration_status("42")
            assert str(missing.value) == (
                "Telnyx POST /credential_connections/42/actions/check_registration_status: HTTP 404 Not Found: "
                "Resource not found: The requested resource or URL could not be found. (code 10005)")
            assert KEY not in repr(client)
        async with TelnyxClient("wrong-SECRET", base) as wrong:
            with pytest.raises(ProviderAuthError) as unauth:
                await wrong.list_connections()
        assert str(unauth.value) == (
            "Telnyx GET /credential_connections: HTTP 401 Unauthorized: Authentication failed: Could not understand "
            "the provided credentials. (code 10009) (check the API key in TELNYX_API_KEY)")
    assert KEY not in caplog.text and "wrong-SECRET" not in caplog.text


async def test_429_honours_x_ratelimit_reset_then_gives_up(autojump_clock: trio.testing.MockClock) -> None:
    store = BindingStore()
    register(store, "alice")
    knobs = ApiKnobs(rate_limit_first=2, retry_after=4, retry_after_header=False)  # only x-ratelimit-reset
    fake = FakeTime()
    async with telnyx_api(store, knobs) as base, TelnyxClient(KEY, base, sleep=fake.sleep, clock=fake.clock) as c:
        assert [x.user_name for x in await c.list_connections()] == ["alice"]
        assert fake.slept == [4, 4] and c.rate_limited == 2
    fake = FakeTime()
    async with telnyx_api(store, knobs) as base, TelnyxClient(
            KEY, base, sleep=fake.sleep, clock=fake.clock, retry=RetryPolicy(max_retries=1)) as c:
        with pytest.raises(ProviderRateLimited, match=r"HTTP 429 Too Many Requests: Too many requests.*\(code 10011\)"):
            await c.list_connections()


async def test_timeout_malformed_json_and_refused_connection(autojump_clock: trio.testing.MockClock) -> None:
    store = BindingStore()
    register(store, "alice")
    async with telnyx_api(store, ApiKnobs(latency=parse_delay("30s"))) as base, \
            TelnyxClient(KEY, base, timeout=3) as client:
        with pytest.raises(ProviderHttpError, match=r"^Telnyx GET /credential_connections: no answer within 3 s$"):
            await client.list_connections()
    async with telnyx_api(store, ApiKnobs(malformed_every=2)) as base, TelnyxClient(KEY, base) as client:
        conns = await client.list_connections()          # answer 1: fine
        with pytest.raises(ProviderHttpError, match=r"check_registration_status: malformed JSON in answer"):
            await client.check_registration_status(conns[0].id)   # answer 2: not JSON
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with TelnyxClient(KEY, f"http://127.0.0.1:{port}/v2", timeout=2) as client:
        refused = r"cannot connect to http://127\.0\.0\.1:\d+/v2 \(Connection refused\)"
        with pytest.raises(ProviderHttpError, match=refused):
            await client.list_connections()


async def test_odd_shapes_through_the_sdk_are_malformed_not_crashes() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("check_registration_status"):
            return httpx.Response(200, json={"data": {"status": 7}})
        return httpx.Response(200, json={"data": [{"user_name": "x"}], "meta": {"total_pages": 1}})
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http, \
            TelnyxClient(KEY, "http://telnyx.invalid/v2", http_client=http) as client:
        with pytest.raises(ProviderHttpError, match="malformed connection"):
            await client.list_connections()
        with pytest.raises(ProviderHttpError, match=r"malformed answer \(no data.status\)"):
            await client.check_registration_status("1")


def test_missing_key_names_the_variable_and_config_hides_the_key() -> None:
    config = CrossCheckConfig("telnyx", "http://127.0.0.1:1/v2")
    with pytest.raises(ProviderError, match="set the environment variable TELNYX_API_KEY"):
        open_source(config, env={})
    custom = CrossCheckConfig("ultravox", api_key_env="MY_UV_KEY")
    with pytest.raises(ProviderError, match="MY_UV_KEY"):
        open_source(custom, env={"ULTRAVOX_API_KEY": "other"})
    inline = CrossCheckConfig("audian", account_id="acc_1", api_key="inline-SECRET")
    assert "inline-SECRET" not in repr(inline)
    with pytest.raises(ValueError, match="account_id"):
        CrossCheckConfig("audian")
    with pytest.raises(ValueError, match="provider"):
        CrossCheckConfig("twilio")


def test_crosscheck_section_from_a_scenario_table() -> None:
    config = config_from_mapping({"provider": "audian", "account_id": "acc_1", "base_url": "http://127.0.0.1:8089/v2",
                                  "poll_interval": "200ms", "poll_limit": 5, "min_agreement": "99.5%",
                                  "concurrency": 16, "api_key": "scenario-SECRET"})
    assert (config.poll_interval, config.poll_limit, config.min_agreement, config.concurrency) == (0.2, 5.0, 99.5, 16)
    assert config.key({}) == "scenario-SECRET" and "scenario-SECRET" not in repr(config)
    for table, message in [
        ({"provider": "telnyx", "colour": 1}, "crosscheck.colour: unknown key"),
        ({}, "crosscheck.provider: required"),
        ({"provider": "telnyx", "timeout": "soon"}, "crosscheck.timeout: "),
        ({"provider": "telnyx", "concurrency": "8"}, "crosscheck.concurrency: must be an integer"),
        ({"provider": "telnyx", "min_agreement": "most"}, "crosscheck.min_agreement: must be a percentage"),
        ({"provider": "telnyx", "min_agreement": 120}, "crosscheck.min_agreement: must be a percentage 0-100"),
        ({"provider": "audian"}, "crosscheck.account_id: Audian needs"),
        ({"provider": "telnyx", "api_key": 42}, "crosscheck.api_key: must be a non-empty string, got a secret"),
    ]:
        with pytest.raises(ValueError, match=message):
            config_from_mapping(table)


async def test_concurrency_is_bounded_per_client() -> None:
    running = peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await trio.sleep(0.01)
        running -= 1
        return httpx.Response(200, json={"deviceId": request.url.path.split("/")[-2], "status": "registered"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = AudianClient(KEY, "acc_1", "http://audian.invalid/v2", client=http, concurrency=3)
        async with trio.open_nursery() as nursery:
            for i in range(12):
                nursery.start_soon(client.device_registration, f"dev{i}")
    assert peak == 3 and client.api.requests == 12
