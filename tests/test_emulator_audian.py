"""The Audian emulator read by sipload's Audian client (httpx), error paths included: 401, 404,
429 (Retry-After honoured, then exhausted), timeouts, malformed JSON. MockClock: no real waiting.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import trio
import trio.testing

from sipload.emulators import ApiKeys, ApiKnobs, serve_api
from sipload.providers.audian_client import AudianClient
from sipload.providers.errors import ProviderAuthError, ProviderHttpError, ProviderNotFound, ProviderRateLimited
from sipload.providers.ratelimit import RetryPolicy
from sipload.providers.status import ProviderState
from sipload.registrar.bindings import BindingStore, ContactChange, RequestInfo, UserState
from sipload.registrar.settings import parse_delay

TOKEN = "audian-token-SECRET-42"
ACCOUNT = "acc_1234567890"


class FakeTime:
    """Unix clock + sleep that only advance when slept on."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def register(store: BindingStore, user: str, expires: int = 60) -> None:
    now = trio.current_time()
    store.register(f"sip:{user}@sipload.test", user, [ContactChange(f"sip:{user}@127.0.0.1:5090", expires)],
                   RequestInfo(f"cid-{user}", 1, ("127.0.0.1", 5090), "udp", "Yealink"), now)


@asynccontextmanager
async def audian(store: BindingStore, knobs: ApiKnobs | None = None, *, prefix: str = "/v2",
                 **client_args: object) -> AsyncIterator[AudianClient]:
    knobs = knobs or ApiKnobs(audian_account=ACCOUNT)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(lambda task_status: serve_api(
            store, "127.0.0.1", 0, knobs=knobs, keys=ApiKeys(audian=TOKEN), task_status=task_status))
        args: dict[str, object] = {"token": TOKEN, "account_id": ACCOUNT, "base_url": f"http://127.0.0.1:{port}{prefix}"}
        args.update(client_args)
        async with AudianClient(**args) as client:  # type: ignore[arg-type]
            yield client
        nursery.cancel_scope.cancel()


async def test_single_device_and_bulk_pages(autojump_clock: trio.testing.MockClock) -> None:
    store = BindingStore()
    for i in range(7):
        register(store, f"user{i}", expires=10 if i == 6 else 60)
    store.mark_rejected("intruder", trio.current_time())
    async with audian(store) as client:
        await trio.sleep(11)  # user6 expired
        one = await client.device_registration("dev_sip_user1")
        assert (one.device_id, one.status, one.state, one.ip_address, one.port) == (
            "dev_sip_user1", "registered", ProviderState.REGISTERED, "127.0.0.1", 5090)
        assert (one.transport, one.user_agent, one.contact_uri) == ("UDP", "Yealink", "sip:user1@127.0.0.1:5090")
        assert one.registration_expiry == 60 and one.expires_at is not None and one.expires_at.endswith("Z")
        devices = await client.all_devices(page_size=3)
        assert {d.name: d.status for d in devices} == {
            **{f"user{i}": "registered" for i in range(6)}, "user6": "expired", "intruder": "invalid"}
        page = await client.bulk_status(status="registered", limit=4, offset=4)
        assert (len(page.devices), page.total, page.registered, page.unregistered) == (2, 6, 6, 0)
        everything = await client.bulk_status(limit=1)
        assert (everything.total, everything.registered, everything.unregistered, everything.offline) == (8, 6, 2, 0)
        assert (await client.bulk_status(type="webrtc")).total == 0
        assert devices[-1].to_status("intruder").state is ProviderState.FAILED


async def test_renew_unregister_and_dashboard_act_on_the_real_store(autojump_clock: trio.testing.MockClock) -> None:
    store = BindingStore()
    register(store, "alice")
    register(store, "bob")
    store.mark_rejected("mallory", trio.current_time())
    async with audian(store, prefix="/v1") as client:
        renewed = await client.renew("dev_sip_alice")
        assert renewed["status"] == "registered" and renewed["message"] == "Registration renewed successfully"
        gone = await client.unregister("dev_sip_bob")
        assert (gone["deviceId"], gone["status"]) == ("dev_sip_bob", "unregistered")
        assert store.user_state("bob", trio.current_time()).state is UserState.UNREGISTERED
        assert (await client.device_registration("dev_sip_bob")).state is ProviderState.UNREGISTERED
        board = await client.dashboard()
        assert board.summary == {"total": 3, "registered": 1, "unregistered": 2, "offline": 0, "provisioning": 0}
        assert board.by_type["sip"] == {"total": 3, "registered": 1, "unregistered": 2}
        assert board.alerts == [{"severity": "warning", "message": "Device registration invalid: mallory",
                                 "deviceId": "dev_sip_mallory"}]


async def test_error_paths_name_the_endpoint_never_the_token(autojump_clock: trio.testing.MockClock,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    store = BindingStore()
    register(store, "alice")
    async with audian(store) as client:
        with pytest.raises(ProviderNotFound) as missing:
            await client.device_registration("dev_sip_nobody")
        assert str(missing.value) == (f"Audian GET /accounts/{ACCOUNT}/devices/dev_sip_nobody/registration: "
                                      "HTTP 404 Not Found: bad_identifier: device dev_sip_nobody not found")
        other = AudianClient(TOKEN, "acc_other", client.api.url)
        with pytest.raises(ProviderNotFound, match="account not found"):
            await other.dashboard()
        await other.close()
        wrong = AudianClient("not-the-token", ACCOUNT, client.api.url)
        with pytest.raises(ProviderAuthError) as unauth:
            await wrong.device_registration("dev_sip_alice")
        await wrong.close()
        assert "HTTP 401 Unauthorized: unauthorized: invalid credentials" in str(unauth.value)
        assert "AUDIAN_AUTH_TOKEN" in str(unauth.value) and "not-the-token" not in str(unauth.value)
        assert TOKEN not in repr(client) and TOKEN not in repr(client.api)
    assert TOKEN not in caplog.text and "not-the-token" not in caplog.text


async def test_429_waits_as_asked_then_gives_up_clearly(autojump_clock: trio.testing.MockClock) -> None:
    store = BindingStore()
    register(store, "alice")
    fake = FakeTime()
    knobs = ApiKnobs(audian_account=ACCOUNT, rate_limit_first=2, retry_after=7)
    async with audian(store, knobs, sleep=fake.sleep, clock=fake.clock) as client:
        assert (await client.device_registration("dev_sip_alice")).state is ProviderState.REGISTERED
        assert fake.slept == [7, 7] and client.api.rate_limited == 2
    fake = FakeTime()
    async with audian(store, knobs, sleep=fake.sleep, clock=fake.clock, retry=RetryPolicy(max_retries=1)) as client:
        with pytest.raises(ProviderRateLimited) as limited:
            await client.device_registration("dev_sip_alice")
        assert "HTTP 429 Too Many Requests: too_many_requests" in str(limited.value)
        assert fake.slept == [7]


async def test_timeouts_and_malformed_json_are_clear_errors(autojump_clock: trio.testing.MockClock) -> None:
    store = BindingStore()
    register(store, "alice")
    slow = ApiKnobs(audian_account=ACCOUNT, latency=parse_delay("30s"))
    async with audian(store, slow, timeout=2.0) as client:
        with pytest.raises(ProviderHttpError, match=r"registration: no answer within 2 s \(ReadTimeout\)"):
            await client.device_registration("dev_sip_alice")
    broken = ApiKnobs(audian_account=ACCOUNT, malformed_every=1)
    async with audian(store, broken) as client:
        with pytest.raises(ProviderHttpError, match=r"malformed JSON in answer \(HTTP 200\)"):
            await client.bulk_status()


async def test_connection_refused_is_a_clear_error() -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with AudianClient(TOKEN, ACCOUNT, f"http://user:pw@127.0.0.1:{port}/v2", timeout=2) as client:
        with pytest.raises(ProviderHttpError) as refused:
            await client.dashboard()
    assert "cannot connect to http://127.0.0.1:" in str(refused.value)
    assert "Connection refused" in str(refused.value) and "pw@" not in str(refused.value)


async def test_httpx_mock_transport_shapes_outside_the_emulator() -> None:
    """A bulk page whose data is not a list is malformed; a Kazoo error body is quoted."""
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/status"):
            return httpx.Response(200, json={"data": "nope", "pagination": {}})
        return httpx.Response(403, json={"data": {"message": "forbidden"}, "error": "403", "message": "forbidden",
                                         "status": "error"})
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = AudianClient(TOKEN, ACCOUNT, "http://audian.invalid/v2", client=http)
        with pytest.raises(ProviderHttpError, match="malformed answer"):
            await client.bulk_status()
        with pytest.raises(ProviderAuthError, match="HTTP 403 Forbidden: forbidden: forbidden"):
            await client.renew("dev_sip_x")
