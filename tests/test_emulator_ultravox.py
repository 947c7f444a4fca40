"""The Ultravox emulator read by sipload's Ultravox client: creating a registration makes the emulator
REGISTER (digest and all) to the embedded registrar given as `proxy`; `successful` shows how it went.
Real UDP and HTTP on 127.0.0.1; MockClock for the SIP timers and waits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest
import trio
import trio.testing

from sipload.emulators import ApiKeys, ApiKnobs, serve_api
from sipload.emulators.ultravox_agent import split_hostport
from sipload.providers.errors import ProviderAuthError, ProviderHttpError, ProviderNotFound
from sipload.providers.status import ProviderState
from sipload.providers.ultravox_client import SipRegistration, UltravoxClient
from sipload.registrar.bindings import UserState
from sipload.registrar.core import RegistrarCore
from sipload.registrar.listen import Listen
from sipload.registrar.server import serve_registrar
from sipload.registrar.settings import RegistrarSettings

KEY = "uv-key-TOPSECRET"


@dataclass
class Rig:
    core: RegistrarCore
    proxy: str
    client: UltravoxClient
    base: str


@asynccontextmanager
async def rig(knobs: ApiKnobs | None = None, *, allow_user_mismatch: bool = False) -> AsyncIterator[Rig]:
    settings = RegistrarSettings(realm="sipload.test", password_template="pw-{user}",
                                 allow_user_mismatch=allow_user_mismatch)
    core = RegistrarCore(settings, now=trio.current_time())
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(lambda task_status: serve_registrar(
            settings, [Listen("udp", "127.0.0.1", 0)], core=core, out=lambda _: None, task_status=task_status))
        port = await nursery.start(lambda task_status: serve_api(
            core.store, "127.0.0.1", 0, knobs=knobs or ApiKnobs(), keys=ApiKeys(ultravox=KEY),
            task_status=task_status))
        base = f"http://127.0.0.1:{port}"
        async with UltravoxClient(KEY, base) as client:
            yield Rig(core, f"{bound[0].host}:{bound[0].port}", client, base)
        nursery.cancel_scope.cancel()


async def settled(client: UltravoxClient, registration_id: str) -> SipRegistration:
    for _ in range(100):
        reg = await client.get(registration_id)
        if reg.successful is not None:
            return reg
        await trio.sleep(0.1)
    raise AssertionError("successful never became known")


async def test_create_registers_to_the_proxy_and_successful_says_so(autojump_clock: trio.testing.MockClock) -> None:
    async with rig() as r:
        created = await r.client.create(username="user1", password="pw-user1", proxy=r.proxy)
        assert created.successful is None and created.state is ProviderState.UNKNOWN
        assert len(created.registration_id) == 36 and created.created is not None
        reg = await settled(r.client, created.registration_id)
        assert reg.successful is True and reg.to_status().state is ProviderState.REGISTERED
        assert r.core.store.user_state("user1", trio.current_time()).state is UserState.LIVE
        aor, bindings = next(iter(r.core.store.aors(trio.current_time())))
        assert aor == f"sip:user1@{r.proxy}" and bindings[0].user_agent == "Ultravox"
        bad = await r.client.create(username="user2", password="wrong", proxy=f"sip:{r.proxy};transport=udp")
        failed = await settled(r.client, bad.registration_id)
        assert failed.successful is False and failed.state is ProviderState.FAILED
        assert r.core.store.user_state("user2", trio.current_time()).state is UserState.REJECTED
        await trio.sleep(600)  # refreshes keep user1 registered (Expires 300)
        assert (await r.client.get(created.registration_id)).successful is True
        assert r.core.store.user_state("user1", trio.current_time()).state is UserState.LIVE


async def test_auth_user_and_outbound_proxy_are_used(autojump_clock: trio.testing.MockClock) -> None:
    async with rig(allow_user_mismatch=True) as r:
        reg = await r.client.create(username="frontdesk", password="pw-auth7", proxy="pbx.sipload.test",
                                    outbound_proxy=r.proxy, auth_user="auth7")
        assert (reg.proxy, reg.outbound_proxy, reg.auth_user) == ("pbx.sipload.test", r.proxy, "auth7")
        assert (await settled(r.client, reg.registration_id)).successful is True
        aors = dict(r.core.store.aors(trio.current_time()))
        assert list(aors) == ["sip:frontdesk@pbx.sipload.test"]


async def test_delete_unregisters_and_answers_204(autojump_clock: trio.testing.MockClock) -> None:
    async with rig() as r:
        reg = await r.client.create(username="user3", password="pw-user3", proxy=r.proxy)
        await settled(r.client, reg.registration_id)
        await r.client.delete(reg.registration_id)
        await trio.sleep(1)
        assert r.core.store.user_state("user3", trio.current_time()).state is UserState.UNREGISTERED
        with pytest.raises(ProviderNotFound, match=r"Ultravox GET /api/sip/registrations/.*: HTTP 404 Not Found: Not"):
            await r.client.get(reg.registration_id)
        assert await r.client.list_registrations() == []


async def test_cursor_pagination_newest_first(autojump_clock: trio.testing.MockClock) -> None:
    async with rig() as r:
        for i in range(5):
            await r.client.create(username=f"user{i}", password=f"pw-user{i}", proxy=r.proxy)
            await trio.sleep(0.01)
        items, cursor, total = await r.client.list_page(page_size=2)
        assert [x.username for x in items] == ["user4", "user3"] and total == 5 and cursor
        everything = await r.client.list_registrations(page_size=2)
        assert [x.username for x in everything] == ["user4", "user3", "user2", "user1", "user0"]
        async with httpx.AsyncClient() as http:
            page = (await http.get(f"{r.base}/api/sip/registrations", params={"pageSize": 2},
                                   headers={"X-API-Key": KEY})).json()
            assert page["next"].startswith(f"{r.base}/api/sip/registrations?") and page["previous"] is None
            second = (await http.get(page["next"], headers={"X-API-Key": KEY})).json()
            assert second["previous"] is not None and "password" not in second["results"][0]
            bad = await http.get(f"{r.base}/api/sip/registrations", params={"cursor": "!!"},
                                 headers={"X-API-Key": KEY})
            assert (bad.status_code, bad.json()) == (404, {"detail": "Invalid cursor"})


async def test_errors_validation_auth_and_secrets(autojump_clock: trio.testing.MockClock) -> None:
    async with rig() as r:
        with pytest.raises(ProviderHttpError) as invalid:
            await r.client.create(username="x" * 61, password="", proxy=r.proxy)
        text = str(invalid.value)
        assert text.startswith("Ultravox POST /api/sip/registrations: HTTP 400 Bad Request: ")
        assert "username: Ensure this field has no more than 60 characters." in text
        assert "password: This field may not be blank." in text
        async with UltravoxClient("nope", r.base) as wrong:
            with pytest.raises(ProviderAuthError) as unauth:
                await wrong.list_registrations()
        assert "HTTP 401 Unauthorized: Invalid API key. (check the API key in ULTRAVOX_API_KEY)" in str(unauth.value)
        async with httpx.AsyncClient() as http:
            missing = await http.get(f"{r.base}/api/sip/registrations")
        assert missing.status_code == 401
        reg = await r.client.create(username="user9", password="pw-user9-SECRET", proxy=r.proxy)
        async with httpx.AsyncClient() as http:
            raw = (await http.get(f"{r.base}/api/sip/registrations/{reg.registration_id}",
                                  headers={"X-API-Key": KEY})).text
        assert "pw-user9-SECRET" not in raw and "password" not in raw
        assert KEY not in repr(r.client)


async def test_429_then_success_and_a_silent_proxy(autojump_clock: trio.testing.MockClock) -> None:
    async with rig(ApiKnobs(rate_limit_every=2, retry_after=2)) as r:
        started = trio.current_time()
        await r.client.list_registrations()          # request 1: ok
        await r.client.list_registrations()          # request 2: 429, retried after 2 s
        assert trio.current_time() - started >= 1.99 and r.client.api.rate_limited == 1
        with trio.socket.socket(type=trio.socket.SOCK_DGRAM) as sock:  # a port nobody answers on
            await sock.bind(("127.0.0.1", 0))
            silent = f"127.0.0.1:{sock.getsockname()[1]}"
            reg = await r.client.create(username="user5", password="pw-user5", proxy=silent)
            for _ in range(10):
                await trio.sleep(60)  # Timer F (32 s) per attempt, 3 retries with backoff
                reg = await r.client.get(reg.registration_id)
                if reg.successful is not None:
                    break
        assert reg.successful is False


def test_split_hostport() -> None:
    assert split_hostport("sip:pbx.example.com;transport=udp") == ("pbx.example.com", 5060)
    assert split_hostport("127.0.0.1:5062") == ("127.0.0.1", 5062)
    assert split_hostport("[::1]:5070") == ("::1", 5070)
    assert split_hostport("sip:alice@10.0.0.1:5080") == ("10.0.0.1", 5080)
    with pytest.raises(ValueError):
        split_hostport("host:99999")
