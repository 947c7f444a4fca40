"""The Telnyx emulator, read by the official SDK (`telnyx.AsyncTelnyx` with `base_url`): the proof of
fidelity. Bindings are put in the registrar's real BindingStore (and, once, by a real REGISTER
through the embedded registrar); time runs on trio's MockClock, so expiry and 429 waits take no time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest
import telnyx
import trio
import trio.testing

from sipload.emulators import ApiKeys, ApiKnobs, Emulators, serve_api
from sipload.emulators.ultravox_agent import SipAgent
from sipload.registrar.bindings import BindingStore, ContactChange, RequestInfo
from sipload.registrar.core import RegistrarCore
from sipload.registrar.listen import Listen
from sipload.registrar.server import serve_registrar
from sipload.registrar.settings import RegistrarSettings

KEY = "KEYtelnyx-test-0123456789"


@dataclass
class Api:
    port: int
    store: BindingStore
    emulators: Emulators

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v2"

    def sdk(self, key: str = KEY, **kwargs: object) -> telnyx.AsyncTelnyx:
        return telnyx.AsyncTelnyx(api_key=key, base_url=self.base, **kwargs)  # type: ignore[arg-type]


@asynccontextmanager
async def running_api(store: BindingStore | None = None, knobs: ApiKnobs | None = None) -> AsyncIterator[Api]:
    store = store if store is not None else BindingStore()
    ready: list[Emulators] = []
    async with trio.open_nursery() as nursery:
        port = await nursery.start(lambda task_status: serve_api(
            store, "127.0.0.1", 0, knobs=knobs or ApiKnobs(), keys=ApiKeys(telnyx=KEY, forbidden=frozenset({"ro"})),
            on_ready=ready.append, task_status=task_status))
        yield Api(port, store, ready[0])
        nursery.cancel_scope.cancel()


def register(store: BindingStore, user: str, expires: int = 60, *, port: int = 5080, ua: str = "sipload") -> None:
    now = trio.current_time()
    store.register(f"sip:{user}@sipload.test", user, [ContactChange(f"sip:{user}@127.0.0.1:{port}", expires)],
                   RequestInfo(f"cid-{user}-{now}", int(now * 1000) + 1, ("127.0.0.1", port), "udp", ua), now)


def unregister(store: BindingStore, user: str, port: int = 5080) -> None:
    now = trio.current_time()
    store.register(f"sip:{user}@sipload.test", user, [ContactChange(f"sip:{user}@127.0.0.1:{port}", 0)],
                   RequestInfo(f"cid-unreg-{user}", 1, ("127.0.0.1", port), "udp"), now)


async def statuses(client: telnyx.AsyncTelnyx) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    async for conn in client.credential_connections.list():
        assert conn.id is not None and conn.user_name is not None
        answer = await client.credential_connections.actions.check_registration_status(conn.id)
        assert answer.data is not None
        out[conn.user_name] = answer.data.status
    return out


async def test_sdk_reads_every_status_of_the_documented_mapping(autojump_clock: trio.testing.MockClock) -> None:
    store = BindingStore()
    register(store, "live1", ua="Yealink T46S")
    register(store, "gone1", expires=10)
    register(store, "unreg1")
    unregister(store, "unreg1")
    store.mark_rejected("bad1", trio.current_time())
    async with running_api(store) as api, api.sdk() as client:
        await trio.sleep(11)  # gone1's binding expires
        await client.credential_connections.create(connection_name="never", user_name="never1", password="secret-pw1")
        assert await statuses(client) == {
            "live1": "Registered", "gone1": "Expired", "unreg1": "Unregistered", "bad1": "Failed",
            "never1": "Not Registered",
        }
        conn = next(c for c in (await client.credential_connections.list()).data if c.user_name == "live1")
        assert conn.record_type == "credential_connection" and conn.id is not None and conn.id.isdigit()
        assert len(conn.id) == 19 and conn.password is None  # never the SIP password
        data = (await client.credential_connections.actions.check_registration_status(conn.id)).data
        assert data is not None
        assert (data.record_type, data.sip_username, data.ip_address, data.port, data.transport, data.user_agent) == (
            "registration_status", "live1", "127.0.0.1", 5080, "UDP", "Yealink T46S")
        assert data.last_registration is not None and data.last_registration.endswith("Z")


async def test_sdk_paginates_every_connection_with_meta(autojump_clock: trio.testing.MockClock) -> None:
    store = BindingStore()
    for i in range(7):
        register(store, f"user{i}")
    async with running_api(store) as api, api.sdk() as client:
        names = [c.user_name async for c in client.credential_connections.list(page_size=3, sort="connection_name")]
        assert names == [f"user{i}" for i in range(7)]
        page = await client.credential_connections.list(page_size=3, page_number=3)
        assert page.meta is not None
        assert (page.meta.page_number, page.meta.total_pages, getattr(page.meta, "total_results", None)) == (3, 3, 7)
        assert [c.user_name for c in page.data] == ["user0"]  # default sort: -created_at, newest first
        filtered = await client.credential_connections.list(filter={"connection_name": {"contains": "ER5"}})
        assert [c.user_name for c in filtered.data] == ["user5"]
        newest_first = [c.user_name or "" async for c in client.credential_connections.list()]
        assert sorted(newest_first) == names
        # the brackets arrive URL-encoded, as the SDK sends them; out of range -> 400 with the pointer
        async with httpx.AsyncClient() as http:
            r = await http.get(f"{api.base}/credential_connections", params={"page[size]": "251"},
                               headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 400
        assert r.json()["errors"][0]["code"] == "10015"
        assert r.json()["errors"][0]["source"]["pointer"] == "/page/size"


async def test_sdk_errors_404_401_403_and_422_in_telnyx_envelope(autojump_clock: trio.testing.MockClock) -> None:
    async with running_api() as api, api.sdk() as client:
        with pytest.raises(telnyx.NotFoundError) as not_found:
            await client.credential_connections.actions.check_registration_status("1234567890123456789")
        assert not_found.value.status_code == 404
        assert not_found.value.body == {"errors": [{
            "code": "10005", "title": "Resource not found",
            "detail": "The requested resource or URL could not be found.", "source": {"pointer": "/"},
            "meta": {"url": "https://developers.telnyx.com/docs/overview/errors/10005"}}]}
        with pytest.raises(telnyx.UnprocessableEntityError) as invalid:
            await client.credential_connections.create(connection_name="x", user_name="12345678", password="short")
        pointers = {e["source"]["pointer"] for e in invalid.value.body["errors"]}  # type: ignore[index]
        assert pointers == {"/user_name", "/password"}
        async with api.sdk(key="wrong-key", max_retries=0) as wrong:
            with pytest.raises(telnyx.AuthenticationError) as unauth:
                await wrong.credential_connections.list()
        assert unauth.value.body["errors"][0]["code"] == "10009"  # type: ignore[index]
        assert "wrong-key" not in str(unauth.value) and KEY not in str(unauth.value)
        async with api.sdk(key="ro", max_retries=0) as readonly:
            with pytest.raises(telnyx.PermissionDeniedError) as forbidden:
                await readonly.credential_connections.list()
        assert forbidden.value.body["errors"][0]["code"] == "10010"  # type: ignore[index]


async def test_sdk_retries_injected_429s_after_retry_after(autojump_clock: trio.testing.MockClock) -> None:
    store = BindingStore()
    register(store, "alice")
    knobs = ApiKnobs(rate_limit_first=2, retry_after=3)
    async with running_api(store, knobs) as api, api.sdk(max_retries=2) as client:
        started = trio.current_time()
        conns = (await client.credential_connections.list()).data
        waited = trio.current_time() - started
        gate = api.emulators.telnyx.gate
        assert gate.counters.rate_limited == 2 and gate.counters.requests == 3
        assert waited >= 6  # twice the 3 s of Retry-After (MockClock: no real wait)
        assert [c.user_name for c in conns] == ["alice"]
    async with running_api(store, ApiKnobs(rate_limit_first=5, retry_after=1)) as api, \
            api.sdk(max_retries=1) as client:
        with pytest.raises(telnyx.RateLimitError) as limited:
            await client.credential_connections.list()
        headers = limited.value.response.headers
        wait = (headers["retry-after"], headers["x-ratelimit-reset"], headers["x-ratelimit-remaining"])
        assert wait == ("1", "1", "0")
        assert limited.value.body["errors"][0]["code"] == "10011"  # type: ignore[index]


async def test_stale_answers_lag_behind_the_store(autojump_clock: trio.testing.MockClock) -> None:
    store = BindingStore()
    async with running_api(store, ApiKnobs(stale_lag=30)) as api, api.sdk() as client:
        register(store, "alice", expires=3600)
        assert await statuses(client) == {"alice": "Not Registered"}  # not visible yet
        await trio.sleep(31)
        assert await statuses(client) == {"alice": "Registered"}
        unregister(store, "alice")
        assert await statuses(client) == {"alice": "Registered"}     # still shown registered
        await trio.sleep(31)
        assert await statuses(client) == {"alice": "Unregistered"}


async def test_connections_for_users_of_a_users_file_and_deleted_ones_stay_deleted(
        autojump_clock: trio.testing.MockClock) -> None:
    store = BindingStore()
    settings = RegistrarSettings(users={"carol": "pw-carol-1"})
    async with trio.open_nursery() as nursery:
        port = await nursery.start(lambda task_status: serve_api(
            store, "127.0.0.1", 0, keys=ApiKeys(telnyx=KEY), registrar_settings=settings, task_status=task_status))
        async with telnyx.AsyncTelnyx(api_key=KEY, base_url=f"http://127.0.0.1:{port}/v2") as client:
            assert await statuses(client) == {"carol": "Not Registered"}
            register(store, "dave")
            conns = {c.user_name: c.id async for c in client.credential_connections.list()}
            assert set(conns) == {"carol", "dave"}
            dave = conns["dave"]
            assert dave is not None
            deleted = await client.credential_connections.delete(dave)
            assert deleted.data is not None and deleted.data.user_name == "dave"
            assert [c.user_name async for c in client.credential_connections.list()] == ["carol"]
            with pytest.raises(telnyx.NotFoundError):
                await client.credential_connections.retrieve(dave)
        nursery.cancel_scope.cancel()


async def test_done_when_sdk_reads_registered_after_a_real_register_and_not_registered_for_a_stranger(
        autojump_clock: trio.testing.MockClock) -> None:
    """A real REGISTER (digest and all) through the embedded registrar, then the SDK through the API."""
    settings = RegistrarSettings(realm="sipload.test", password_template="pw-{user}")
    core = RegistrarCore(settings, now=trio.current_time())
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(lambda task_status: serve_registrar(
            settings, [Listen("udp", "127.0.0.1", 0)], core=core, out=lambda _: None, task_status=task_status))
        registrar = (bound[0].host, bound[0].port)
        api_port = await nursery.start(lambda task_status: serve_api(
            core.store, "127.0.0.1", 0, keys=ApiKeys(telnyx=KEY), task_status=task_status))
        agent = SipAgent("127.0.0.1", expires=300)
        await nursery.start(agent.run)
        proxy = f"{registrar[0]}:{registrar[1]}"
        entry = agent.start("r1", username="user1", password="pw-user1", proxy=proxy, outbound_proxy=None,
                            auth_user=None, destination=registrar)
        while entry.successful is None:
            await trio.sleep(0.01)
        assert entry.successful is True
        async with telnyx.AsyncTelnyx(api_key=KEY, base_url=f"http://127.0.0.1:{api_port}/v2") as client:
            await client.credential_connections.create(connection_name="ghost", user_name="user2", password="pw-user2!")
            assert await statuses(client) == {"user1": "Registered", "user2": "Not Registered"}
        nursery.cancel_scope.cancel()


async def test_a_taken_port_is_a_plain_oserror() -> None:
    with trio.socket.socket() as taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match="in use"):
            await serve_api(BindingStore(), "127.0.0.1", taken.getsockname()[1])
