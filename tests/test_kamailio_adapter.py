"""Kamailio status adapter: the pure mapping on answers recorded from the real Kamailio 5.6.3, the
client's error handling (httpx MockTransport, silent sockets), and interop with a real Kamailio
registrar filled by SIPp (peers/kamailio/start, peers/sipp/register-digest.xml).

User ranges used against the shared session Kamailio: 9000-9049, 9060, 9070 (each test unregisters
what it registered).
"""

from __future__ import annotations

import functools
import json
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from peers import (
    KamailioPeer,
    PeerError,
    SippResult,
    free_port,
    require_peer,
    run_sipp,
    start_kamailio,
    stop_kamailio,
)
from sipload.providers.kamailio import (
    KamailioFault,
    KamailioRpc,
    aors_from_dump,
    registered_users_from_stats,
    status_from_lookup,
)
from sipload.providers.status import ContactInfo, ProviderError, ProviderState, RegistrationStatus

# ---------------------------------------------------------------------------------------------
# Answers recorded from Kamailio 5.6.3 (Debian 12) running peers/kamailio/kamailio.cfg, verbatim.
# REGISTERED: SIPp registered user9000 (Expires: 3600) from 127.0.0.1:5080. PERMANENT: `ul.add` with
# expires 0. NOCONTACTS: `ul.add` with expires 1, asked 1.5 s later (before the usrloc timer purge).
# DUMP_EXPIRED_CONTACT: that contact as `ul.dump` (full) showed it.
# ---------------------------------------------------------------------------------------------

REC_REGISTERED = """{
	"jsonrpc":	"2.0",
	"result":	{
		"AoR":	"user9000",
		"Contacts":	[{
				"Contact":	{
					"Address":	"sip:user9000@127.0.0.1:5080;transport=UDP",
					"Expires":	3600,
					"Q":	-1,
					"Call-ID":	"1-11604@127.0.0.1",
					"CSeq":	2,
					"User-Agent":	"sipp-bench",
					"Received":	"[not set]",
					"Path":	"[not set]",
					"State":	"CS_NEW",
					"Flags":	0,
					"CFlags":	0,
					"Socket":	"udp:127.0.0.1:5070",
					"Methods":	4294967295,
					"Ruid":	"uloc-6b04582e-1e89-1",
					"Instance":	"[not set]",
					"Reg-Id":	0,
					"Server-Id":	0,
					"Tcpconn-Id":	-1,
					"Keepalive":	0,
					"Last-Keepalive":	1795446929,
					"KA-Roundtrip":	0,
					"Last-Modified":	1795446929
				}
			}]
	},
	"id":	1
}"""

REC_PERMANENT = """{
	"jsonrpc":	"2.0",
	"result":	{
		"AoR":	"user8000",
		"Contacts":	[{
				"Contact":	{
					"Address":	"sip:user8000@127.0.0.1:5999",
					"Expires":	"permanent",
					"Q":	1,
					"Call-ID":	"dfjrewr12386fd6-343@kamailio.rpc",
					"CSeq":	1,
					"User-Agent":	"kamailio SIP Router - RPC Server",
					"Received":	"[not set]",
					"Path":	"[not set]",
					"State":	"CS_NEW",
					"Flags":	0,
					"CFlags":	0,
					"Socket":	"[not set]",
					"Methods":	0,
					"Ruid":	"ulcx-6b04582e-1e93-1",
					"Instance":	"[not set]",
					"Reg-Id":	0,
					"Server-Id":	0,
					"Tcpconn-Id":	-1,
					"Keepalive":	0,
					"Last-Keepalive":	1795446929,
					"KA-Roundtrip":	0,
					"Last-Modified":	0
				}
			}]
	},
	"id":	1
}"""

REC_NOTFOUND = """{
	"jsonrpc":	"2.0",
	"error":	{
		"code":	500,
		"message":	"AOR not found in location table"
	},
	"id":	1
}"""

REC_NOCONTACTS = """{
	"jsonrpc":	"2.0",
	"error":	{
		"code":	500,
		"message":	"AOR has no contacts"
	},
	"id":	1
}"""

REC_NODOMAIN = """{
	"jsonrpc":	"2.0",
	"error":	{
		"code":	500,
		"message":	"Domain table not found"
	},
	"id":	1
}"""

REC_STATS = """{
	"jsonrpc":	"2.0",
	"result":	["usrloc:location_contacts = 2", "usrloc:location_expires = 1", "usrloc:location_users = 2", "usrloc:registered_users = 2"],
	"id":	1
}"""  # noqa: E501

REC_DUMPBRIEF = """{
	"jsonrpc":	"2.0",
	"result":	{
		"Domains":	[{
				"Domain":	{
					"Domain":	"location",
					"Size":	16384,
					"AoRs":	[{
							"AoR":	"user9000"
						}, {
							"AoR":	"user8000"
						}],
					"Stats":	{
						"Records":	2,
						"Max-Slots":	1
					}
				}
			}]
	},
	"id":	1
}"""

REC_VERSION = """{
	"jsonrpc":	"2.0",
	"result":	"kamailio 5.6.3 (x86_64/linux) ",
	"id":	1
}"""

REC_DUMP_EXPIRED_CONTACT: dict[str, Any] = {
    "Contact": {
        "Address": "sip:user8001@127.0.0.1:5999",
        "Expires": "expired",
        "Q": 0.5,
        "Call-ID": "dfjrewr12386fd6-343@kamailio.rpc",
        "CSeq": 1,
        "User-Agent": "kamailio SIP Router - RPC Server",
        "Received": "[not set]",
        "Path": "[not set]",
        "State": "CS_NEW",
        "Flags": 0,
        "CFlags": 0,
        "Socket": "[not set]",
        "Methods": 0,
        "Ruid": "ulcx-6b04582e-1e92-1",
        "Instance": "[not set]",
        "Reg-Id": 0,
        "Server-Id": 0,
        "Tcpconn-Id": -1,
        "Keepalive": 0,
        "Last-Keepalive": 1795446933,
        "KA-Roundtrip": 0,
        "Last-Modified": 0,
    }
}


def lookup_answer(*contacts: dict[str, Any], aor: str = "user1") -> dict[str, Any]:
    return {"jsonrpc": "2.0", "result": {"AoR": aor, "Contacts": [{"Contact": c} for c in contacts]}, "id": 1}


def contact_with(**changes: Any) -> dict[str, Any]:
    contact = dict(REC_DUMP_EXPIRED_CONTACT["Contact"])
    contact.update(changes)
    return contact


# ---------------------------------------------------------------------------------------------
# Pure mapping
# ---------------------------------------------------------------------------------------------


def test_recorded_registered_answer_maps_every_field() -> None:
    status = status_from_lookup("user9000", json.loads(REC_REGISTERED))
    assert status == RegistrationStatus(
        user="user9000",
        state=ProviderState.REGISTERED,
        contacts=(
            ContactInfo(
                address="sip:user9000@127.0.0.1:5080;transport=UDP",
                expires_in=3600,
                call_id="1-11604@127.0.0.1",
                cseq=2,
                user_agent="sipp-bench",
                received=None,
                instance=None,
                reg_id=None,
                raw_expires="3600",
            ),
        ),
    )


def test_recorded_permanent_contact_is_registered_without_expiry() -> None:
    status = status_from_lookup("user8000", json.loads(REC_PERMANENT))
    assert status.state is ProviderState.REGISTERED
    [contact] = status.contacts
    assert (contact.address, contact.expires_in, contact.raw_expires) == (
        "sip:user8000@127.0.0.1:5999",
        None,
        "permanent",
    )
    assert contact.user_agent == "kamailio SIP Router - RPC Server" and contact.cseq == 1


def test_recorded_aor_not_found_fault_is_not_registered() -> None:
    status = status_from_lookup("nobody", json.loads(REC_NOTFOUND))
    assert status == RegistrationStatus("nobody", ProviderState.NOT_REGISTERED, (), "AOR not found in location table")


def test_recorded_aor_has_no_contacts_fault_is_expired() -> None:
    status = status_from_lookup("user8001", json.loads(REC_NOCONTACTS))
    assert status == RegistrationStatus("user8001", ProviderState.EXPIRED, (), "AOR has no contacts")


def test_recorded_other_fault_is_a_provider_error_naming_it() -> None:
    with pytest.raises(KamailioFault) as info:
        status_from_lookup("user1", json.loads(REC_NODOMAIN), source="Kamailio JSON-RPC at http://x/RPC")
    assert isinstance(info.value, ProviderError)
    assert info.value.code == 500 and info.value.fault_message == "Domain table not found"
    assert str(info.value) == ("Kamailio JSON-RPC at http://x/RPC: ul.lookup failed: fault 500: Domain table not found")


def test_recorded_dump_contact_expired_maps_to_expired() -> None:
    status = status_from_lookup("user8001", lookup_answer(REC_DUMP_EXPIRED_CONTACT["Contact"], aor="user8001"))
    assert status.state is ProviderState.EXPIRED
    [contact] = status.contacts
    assert (contact.expires_in, contact.raw_expires, contact.address) == (
        0,
        "expired",
        "sip:user8001@127.0.0.1:5999",
    )


@pytest.mark.parametrize(
    ("expires_values", "state"),
    [
        ([3599], ProviderState.REGISTERED),
        (["permanent"], ProviderState.REGISTERED),
        (["expired"], ProviderState.EXPIRED),
        (["deleted"], ProviderState.UNREGISTERED),
        (["expired", "deleted"], ProviderState.EXPIRED),
        (["deleted", 12], ProviderState.REGISTERED),
        (["expired", "permanent"], ProviderState.REGISTERED),
        ([0], ProviderState.EXPIRED),
        (["[not set]"], ProviderState.UNKNOWN),
        (["[not set]", "deleted"], ProviderState.UNREGISTERED),
        ([], ProviderState.NOT_REGISTERED),
    ],
)
def test_state_from_mixed_type_expires(expires_values: list[Any], state: ProviderState) -> None:
    answer = lookup_answer(
        *(contact_with(Expires=e, Address=f"sip:u@127.0.0.{i}") for i, e in enumerate(expires_values))
    )
    status = status_from_lookup("user1", answer)
    assert status.state is state
    assert [c.raw_expires for c in status.contacts] == [str(e) for e in expires_values]


def test_raw_expires_and_expires_in_per_kind() -> None:
    answer = lookup_answer(*(contact_with(Expires=e) for e in (42, "permanent", "expired", "deleted", "[not set]")))
    got = [(c.expires_in, c.raw_expires) for c in status_from_lookup("user1", answer).contacts]
    assert got == [(42, "42"), (None, "permanent"), (0, "expired"), (0, "deleted"), (None, "[not set]")]


def test_outbound_fields_are_kept_and_not_set_becomes_none() -> None:
    answer = lookup_answer(
        contact_with(
            Expires=60,
            Instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>",
            **{
                "Reg-Id": 1,
                "Received": "sip:127.0.0.2:5062",
                "User-Agent": "[not set]",
                "Call-ID": "[not set]",
            },
        )
    )
    [contact] = status_from_lookup("user1", answer).contacts
    assert contact.instance == "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"
    assert (contact.reg_id, contact.received, contact.user_agent, contact.call_id) == (
        1,
        "sip:127.0.0.2:5062",
        None,
        None,
    )


@pytest.mark.parametrize(
    "answer",
    [
        [],
        "AOR not found",
        {"jsonrpc": "2.0", "id": 1},
        {"result": []},
        {"result": {"AoR": "u", "Contacts": {}}},
        {"result": {"Contacts": [{"Contact": {}}]}},
        {"result": {"Contacts": [{"nope": {}}]}},
        {"result": {"Contacts": [{"Contact": {"Address": "sip:u@h", "Expires": True}}]}},
        {"result": {"Contacts": [{"Contact": {"Address": "sip:u@h", "Expires": [1]}}]}},
        {"error": "boom"},
        {"error": {"code": 500, "message": "Internal error creating contact struct"}},
    ],
)
def test_malformed_or_unexpected_answers_raise_provider_error(answer: Any) -> None:
    with pytest.raises(ProviderError):
        status_from_lookup("user1", answer)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
EXPIRES = st.one_of(st.integers(-5, 10**6), st.sampled_from(["permanent", "expired", "deleted", "[not set]", ""]), JSON)
CONTACT = st.fixed_dictionaries(
    {"Address": st.one_of(st.just("sip:u@127.0.0.1"), JSON), "Expires": EXPIRES},
    optional={"Call-ID": JSON, "CSeq": JSON, "Reg-Id": JSON, "Instance": JSON, "Received": JSON},
)
ANSWERS = st.one_of(
    JSON,
    st.lists(st.one_of(CONTACT.map(lambda c: {"Contact": c}), JSON), max_size=4).map(
        lambda cs: {"jsonrpc": "2.0", "result": {"AoR": "u", "Contacts": cs}, "id": 1}
    ),
)


@settings(max_examples=150, deadline=None)
@given(answer=ANSWERS)
def test_any_answer_maps_or_raises_provider_error(answer: Any) -> None:
    try:
        status = status_from_lookup("user1", answer)
    except ProviderError:
        return
    assert status.user == "user1"
    active = [c for c in status.contacts if (c.expires_in or 0) > 0 or c.raw_expires == "permanent"]
    assert (status.state is ProviderState.REGISTERED) == bool(active)


def test_recorded_statistics_give_registered_users() -> None:
    assert registered_users_from_stats(json.loads(REC_STATS)["result"]) == 2
    with pytest.raises(ProviderError, match="no usrloc:registered_users"):
        registered_users_from_stats(["usrloc:location_users = 2"])
    with pytest.raises(ProviderError):
        registered_users_from_stats({"usrloc:registered_users": 2})


def test_recorded_brief_dump_gives_aors() -> None:
    result = json.loads(REC_DUMPBRIEF)["result"]
    assert aors_from_dump(result) == ["user9000", "user8000"]
    assert aors_from_dump(result, table="other") == []
    with pytest.raises(ProviderError):
        aors_from_dump({"Domains": [{"Domain": {"Domain": "location", "AoRs": [{"x": 1}]}}]})


# ---------------------------------------------------------------------------------------------
# Client I/O without Kamailio: httpx MockTransport, a silent socket, a closed port
# ---------------------------------------------------------------------------------------------

URL = "http://127.0.0.1:5071/RPC"


def mock_rpc(handler: Any) -> KamailioRpc:
    return KamailioRpc(URL, timeout=1.0, client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))


async def test_client_posts_jsonrpc_and_reads_faults_sent_with_http_500() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(500, content=REC_NOTFOUND.encode(), headers={"Content-Type": "application/json"})

    async with mock_rpc(handler) as rpc:
        status = await rpc.lookup("alice")
        await rpc.lookup("bob")
    assert status.state is ProviderState.NOT_REGISTERED
    assert seen[0] == {"jsonrpc": "2.0", "method": "ul.lookup", "params": ["location", "alice"], "id": 1}
    assert seen[1]["id"] == 2 and seen[1]["params"] == ["location", "bob"]


async def test_client_registered_users_dump_and_version_from_recorded_answers() -> None:
    answers = {"stats.get_statistics": REC_STATS, "ul.dump": REC_DUMPBRIEF, "core.version": REC_VERSION}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=answers[json.loads(request.content)["method"]].encode())

    async with mock_rpc(handler) as rpc:
        assert await rpc.registered_users() == 2
        assert await rpc.dump_aors() == ["user9000", "user8000"]
        assert await rpc.version() == "kamailio 5.6.3 (x86_64/linux)"


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (
            httpx.Response(404, text="not found\n"),
            f"Kamailio JSON-RPC at {URL}: ul.lookup: HTTP 404 Not Found: 'not found\\n'",
        ),
        (httpx.Response(200, text="{not json"), "malformed JSON in answer (HTTP 200 OK): '{not json'"),
        (httpx.Response(200, json=[1, 2]), "not a JSON-RPC answer (HTTP 200 OK)"),
        (httpx.Response(200, json={"jsonrpc": "2.0", "result": {"Contacts": 3}}), "'Contacts' not a list"),
        (
            httpx.Response(500, json={"jsonrpc": "2.0", "error": {"code": 500, "message": "Domain table not found"}}),
            "ul.lookup failed: fault 500: Domain table not found",
        ),
    ],
)
async def test_client_http_and_answer_errors_are_clear_provider_errors(response: httpx.Response, expected: str) -> None:
    async with mock_rpc(lambda request: response) as rpc:
        with pytest.raises(ProviderError) as info:
            await rpc.lookup("user1")
    assert expected in str(info.value)
    assert URL in str(info.value)


async def test_client_transport_timeout_is_provider_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    async with mock_rpc(handler) as rpc:
        with pytest.raises(
            ProviderError,
            match=r"^Kamailio JSON-RPC at http://127\.0\.0\.1:5071/RPC: stats\.get_statistics: "
            r"no answer within 1 s \(ReadTimeout\)$",
        ):
            await rpc.registered_users()


async def test_error_messages_never_show_url_credentials() -> None:
    port = free_port()
    async with KamailioRpc(f"http://admin:s3cret@127.0.0.1:{port}/RPC", timeout=2.0) as rpc:
        with pytest.raises(ProviderError) as info:
            await rpc.lookup("user1")
    assert "s3cret" not in str(info.value) and "admin" not in str(info.value)
    assert f"http://127.0.0.1:{port}/RPC" in str(info.value)


def test_invalid_urls_are_rejected_clearly() -> None:
    with pytest.raises(ProviderError, match="http"):
        KamailioRpc("ftp://127.0.0.1:5071/RPC")


async def test_shared_client_is_not_closed_own_client_is() -> None:
    shared = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(200, text=REC_VERSION)))
    async with KamailioRpc(URL, client=shared) as rpc:
        assert await rpc.version() == "kamailio 5.6.3 (x86_64/linux)"
    assert not shared.is_closed
    await shared.aclose()
    own = KamailioRpc(URL)
    await own.close()
    assert own._client.is_closed


async def test_closed_port_gives_provider_error_not_a_hang() -> None:
    port = free_port()  # nothing listens there
    url = f"http://127.0.0.1:{port}/RPC"
    with trio.fail_after(5):
        async with KamailioRpc(url, timeout=2.0) as rpc:
            with pytest.raises(ProviderError) as info:
                await rpc.lookup("user1")
    assert str(info.value).startswith(f"Kamailio JSON-RPC at {url}: ul.lookup: cannot connect (")
    assert "refused" in str(info.value).lower()


async def test_silent_server_gives_timeout_provider_error() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    accepted: list[trio.SocketStream] = []

    async def accept_and_say_nothing() -> None:
        accepted.append(await listeners[0].accept())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept_and_say_nothing)
        with trio.fail_after(5):
            async with KamailioRpc(f"http://127.0.0.1:{port}/RPC", timeout=0.3) as rpc:
                with pytest.raises(ProviderError, match=r"no answer within 0.3 s \(ReadTimeout\)"):
                    await rpc.lookup("user1")
    assert len(accepted) == 1
    for stream in accepted:
        await stream.aclose()
    await listeners[0].aclose()


# ---------------------------------------------------------------------------------------------
# Interop: real Kamailio (peers/kamailio/start) filled by real SIPp
# ---------------------------------------------------------------------------------------------


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


async def sipp_register(
    target: str, users: range, expires: int = 3600, transport: str = "u1", local_port: int | None = None
) -> SippResult:
    """SIPp registers `users` once each (500/s); unregister with expires=0 and the same local_port."""
    result: SippResult = await trio.to_thread.run_sync(
        functools.partial(
            run_sipp,
            target,
            users,
            500,
            len(users),
            expires=expires,
            transport=transport,
            local_port=local_port,
            timeout=30,
        )
    )
    return result


@pytest.mark.interop
async def test_sipp_registrations_and_unregistrations_are_visible_through_the_adapter(
    kamailio: KamailioPeer, sipp: str
) -> None:
    users = range(9000, 9050)
    async with KamailioRpc(kamailio.rpc_url) as rpc:
        assert (await rpc.lookup("user9000")).state is ProviderState.NOT_REGISTERED
        before = await rpc.registered_users()
        result = await sipp_register(kamailio.target, users)
        try:
            assert (result.successful, result.failed, result.created) == (50, 0, 50), result.output_tail
            assert result.retransmissions == 0
            assert await rpc.registered_users() == before + 50
            for n in users:
                status = await rpc.lookup(f"user{n}")
                assert status.state is ProviderState.REGISTERED, status
                [contact] = status.contacts
                assert contact.address == f"sip:user{n}@127.0.0.1:{result.local_port};transport=UDP"
                assert contact.user_agent == "sipp-bench" and contact.cseq == 2
                assert contact.expires_in is not None and 3590 <= contact.expires_in <= 3600
                assert contact.call_id is not None and contact.call_id.endswith("@127.0.0.1")
            assert {f"user{n}" for n in users} <= set(await rpc.dump_aors())
        finally:
            unregistered = await sipp_register(kamailio.target, users, expires=0, local_port=result.local_port)
        assert unregistered.successful == 50, unregistered.output_tail
        # usrloc db_mode=0 deletes an unregistered AoR at once: Kamailio then says "not found".
        assert (await rpc.lookup("user9000")).state is ProviderState.NOT_REGISTERED
        assert await rpc.registered_users() == before


@pytest.mark.interop
async def test_short_expiry_is_honoured_not_raised_to_min_expires(kamailio: KamailioPeer, sipp: str) -> None:
    async with KamailioRpc(kamailio.rpc_url) as rpc:
        result = await sipp_register(kamailio.target, range(9060, 9061), expires=10)
        try:
            assert result.successful == 1, result.output_tail
            [contact] = (await rpc.lookup("user9060")).contacts
            assert contact.expires_in is not None and 1 <= contact.expires_in <= 10
        finally:
            await sipp_register(kamailio.target, range(9060, 9061), expires=0, local_port=result.local_port)
        assert (await rpc.lookup("user9060")).state is ProviderState.NOT_REGISTERED


@pytest.mark.interop
async def test_tcp_registration_is_visible(kamailio: KamailioPeer, sipp: str) -> None:
    async with KamailioRpc(kamailio.rpc_url) as rpc:
        result = await sipp_register(kamailio.target, range(9070, 9071), transport="t1")
        try:
            assert result.successful == 1, result.output_tail
            status = await rpc.lookup("user9070")
            assert status.state is ProviderState.REGISTERED
            assert status.contacts[0].address == f"sip:user9070@127.0.0.1:{result.local_port};transport=TCP"
        finally:
            await sipp_register(
                kamailio.target, range(9070, 9071), expires=0, transport="t1", local_port=result.local_port
            )
        assert (await rpc.lookup("user9070")).state is ProviderState.NOT_REGISTERED


def test_require_peer_fails_in_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    require_peer("kamailio", True, "run peers/install")  # available: nothing happens
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"peer nope is not available: run peers/install \(CI=true"):
        require_peer("nope", False, "run peers/install")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="peer nope is not available: run peers/install"):
        require_peer("nope", False, "run peers/install")


@pytest.mark.interop
def test_start_refuses_a_busy_port_clearly(kamailio: KamailioPeer, tmp_path_factory: pytest.TempPathFactory) -> None:
    rundir = tmp_path_factory.mktemp("kambusy")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        rpc_port = busy.getsockname()[1]
        with pytest.raises(PeerError, match=f"port {kamailio.port} or {rpc_port} already in use"):
            start_kamailio(rundir, kamailio.port, rpc_port)


def test_run_sipp_refuses_non_loopback_targets() -> None:
    with pytest.raises(ValueError, match="only loopback"):
        run_sipp("192.0.2.1:5060", [1], 1, 1)
    with pytest.raises(ValueError, match="host:port"):
        run_sipp("127.0.0.1", [1], 1, 1)


@pytest.mark.interop
async def test_unknown_user_is_not_registered(kamailio: KamailioPeer) -> None:
    async with KamailioRpc(kamailio.rpc_url) as rpc:
        status = await rpc.lookup("user9999")
    assert status == RegistrationStatus("user9999", ProviderState.NOT_REGISTERED, (), "AOR not found in location table")


@pytest.mark.interop
async def test_real_faults_and_wrong_paths_are_provider_errors(kamailio: KamailioPeer) -> None:
    async with KamailioRpc(kamailio.rpc_url, table="nosuch") as rpc:
        with pytest.raises(KamailioFault, match="fault 500: Domain table not found"):
            await rpc.lookup("user1")
        with pytest.raises(KamailioFault, match="fault 500: Method Not Found"):
            await rpc.call("no.such.method")
    wrong_path = kamailio.rpc_url.replace("/RPC", "/nope")
    async with KamailioRpc(wrong_path) as rpc:
        with pytest.raises(ProviderError, match="HTTP 404 Not Found"):
            await rpc.version()


@pytest.mark.interop
async def test_stopped_kamailio_gives_provider_error_and_scripts_are_idempotent(
    kamailio: KamailioPeer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # A second instance on its own ports and run dir; the session one is left alone.
    rundir = tmp_path_factory.mktemp("kam")
    sip_port, rpc_port = free_port(), free_port()
    first = await trio.to_thread.run_sync(functools.partial(start_kamailio, rundir, sip_port, rpc_port))
    try:
        assert (first.port, first.rpc_url) == (sip_port, f"http://127.0.0.1:{rpc_port}/RPC")
        async with KamailioRpc(first.rpc_url) as rpc:
            assert (await rpc.version()).startswith("kamailio 5.")
            await rpc.call("ul.add", ["location", "user1", "sip:user1@127.0.0.1:5999", 0, 1.0, "0", 0, 0, 0])
            assert (await rpc.lookup("user1")).state is ProviderState.REGISTERED
        # start again = stop + fresh start: new pid, empty usrloc
        second = await trio.to_thread.run_sync(functools.partial(start_kamailio, rundir, sip_port, rpc_port))
        assert second.pid != first.pid and not alive(first.pid)
        async with KamailioRpc(second.rpc_url) as rpc:
            assert (await rpc.lookup("user1")).state is ProviderState.NOT_REGISTERED
    finally:
        stopped = await trio.to_thread.run_sync(functools.partial(stop_kamailio, rundir))
    assert stopped == f"kamailio: stopped pid {second.pid} (rundir {rundir.resolve()})"
    assert not alive(second.pid)
    assert await trio.to_thread.run_sync(functools.partial(stop_kamailio, rundir)) == (
        f"kamailio: not running (rundir {rundir.resolve()})"
    )
    with trio.fail_after(10):
        async with KamailioRpc(second.rpc_url, timeout=2.0) as rpc:
            with pytest.raises(ProviderError, match="cannot connect"):
                await rpc.lookup("user1")
    # the session instance is untouched
    async with KamailioRpc(kamailio.rpc_url) as rpc:
        assert (await rpc.version()).startswith("kamailio 5.")
