"""RFC 3263 resolution (NAPTR -> SRV -> A/AAAA) against a DNS server on loopback (tests/dns_server.py)."""

from __future__ import annotations

import random
import socket
from collections import Counter
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from dns import asyncresolver, nameserver
from dns_server import DnsServer, Zone

import sipload.engine.run
from sipload.engine.resolve import (
    Destination,
    Naptr,
    ResolveError,
    Srv,
    order_naptr,
    order_srv,
    resolve_target,
)
from sipload.engine.run import RunError, resolve_destinations
from sipload.registrar.core import RegistrarCore
from sipload.registrar.listen import Listen
from sipload.registrar.server import serve_registrar
from sipload.registrar.settings import RegistrarSettings
from sipload.scenario import Scenario, ScenarioError, Transport, parse_scenario, parse_sip_uri

UDP, TCP, TLS = Transport.UDP, Transport.TCP, Transport.TLS
ALL = (UDP, TCP, TLS)

# registrar.test: NAPTR says TCP first (order 10), then UDP (order 20, two preferences), then TLS.
ZONE: Zone = {
    "registrar.test": [
        ("NAPTR", '20 10 "s" "SIP+D2U" "" _sip._udp.registrar.test.'),
        ("NAPTR", '10 50 "s" "SIP+D2T" "" _sip._tcp.registrar.test.'),
        ("NAPTR", '30 50 "s" "SIPS+D2T" "" _sips._tcp.registrar.test.'),
        ("NAPTR", '5 50 "s" "SIP+D2X" "" _sip._sctp.registrar.test.'),  # a service no client here has
        ("NAPTR", '6 50 "u" "E2U+sip" "!^.*$!sip:x@y!" .'),  # not an "s" record
        ("A", "127.0.0.9"),
    ],
    "_sip._udp.registrar.test": [("SRV", "10 0 5070 u1.registrar.test."), ("SRV", "20 0 5072 u2.registrar.test.")],
    "_sip._tcp.registrar.test": [("SRV", "10 0 5080 t1.registrar.test.")],
    "_sips._tcp.registrar.test": [("SRV", "10 0 5061 s1.registrar.test.")],
    "_sip._sctp.registrar.test": [("SRV", "10 0 5090 x1.registrar.test.")],
    "u1.registrar.test": [("A", "127.0.0.11")],
    "u2.registrar.test": [("A", "127.0.0.12"), ("AAAA", "::1")],
    "t1.registrar.test": [("A", "127.0.0.21")],
    "s1.registrar.test": [("A", "127.0.0.31")],
    "x1.registrar.test": [("A", "127.0.0.41")],
    # no NAPTR: SRV only, for UDP and TCP
    "srv.test": [("A", "127.0.0.8")],
    "_sip._udp.srv.test": [("SRV", "10 0 5070 u1.registrar.test.")],
    "_sip._tcp.srv.test": [("SRV", "10 0 5080 t1.registrar.test.")],
    # neither NAPTR nor SRV
    "plain.test": [("A", "127.0.0.7"), ("A", "127.0.0.6")],
    "v6only.test": [("AAAA", "::1")],
    "empty.test": [],
    # SRV targets: one that does not exist, one "." (not offered), one good
    "partial.test": [],
    "_sip._udp.partial.test": [("SRV", "1 0 5070 gone.partial.test."), ("SRV", "2 0 5071 ."),
                               ("SRV", "3 0 5072 u1.registrar.test.")],
    "lost.test": [],
    "_sip._udp.lost.test": [("SRV", "1 0 5070 gone.lost.test.")],
}


@pytest.fixture
async def dns() -> AsyncIterator[tuple[DnsServer, tuple[str, int]]]:
    server = DnsServer(ZONE)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        yield server, ("127.0.0.1", port)
        nursery.cancel_scope.cancel()


def d(transport: Transport, host: str, port: int, name: str = "") -> Destination:
    return Destination(transport, host, port, name)


# --- the ordering rules, without a network ----------------------------------------------------------------


def test_naptr_order_keeps_supported_s_records_by_order_then_preference() -> None:
    records = [
        Naptr(20, 20, "s", "SIP+D2U", "_sip._udp.b"),
        Naptr(20, 10, "S", "sip+d2u", "_sip._udp.a"),  # flags and services are case-insensitive
        Naptr(10, 99, "s", "SIP+D2T", "_sip._tcp.x"),
        Naptr(1, 1, "s", "SIPS+D2T", "_sips._tcp.x"),
        Naptr(1, 1, "u", "SIP+D2U", "_sip._udp.not-s"),
        Naptr(1, 1, "s", "SIP+D2S", "_sip._sctp.x"),  # SCTP: not supported
        Naptr(1, 1, "s", "SIP+D2U", ""),  # replacement ".": nothing there
    ]
    assert order_naptr(records, ALL, secure=False) == [
        (TLS, "_sips._tcp.x"), (TCP, "_sip._tcp.x"), (UDP, "_sip._udp.a"), (UDP, "_sip._udp.b"),
    ]
    assert order_naptr(records, (UDP,), secure=False) == [(UDP, "_sip._udp.a"), (UDP, "_sip._udp.b")]
    assert order_naptr(records, ALL, secure=True) == [(TLS, "_sips._tcp.x")]


def test_srv_order_is_by_priority_and_reproducible_with_a_seed() -> None:
    records = [Srv(20, 5, 1, "c"), Srv(10, 10, 1, "a"), Srv(10, 90, 1, "b"), Srv(30, 0, 1, ""), Srv(20, 0, 1, "d")]
    orders = {tuple(r.target for r in order_srv(records, random.Random(seed))) for seed in range(200)}
    # priority 10 before 20; "." dropped; within a priority both orders occur across seeds
    assert {o[:2] for o in orders} == {("a", "b"), ("b", "a")}
    assert {o[2:] for o in orders} == {("c", "d"), ("d", "c")}
    assert all(len(o) == 4 for o in orders)
    for seed in (1, 7, 12345):
        assert order_srv(records, random.Random(seed)) == order_srv(records, random.Random(seed))


def test_srv_weights_share_the_first_place_as_rfc_2782_says() -> None:
    # RFC 2782: a draw in 0..sum(weights) picks the first record whose running sum reaches it, so with weights
    # 0, 60, 30, 10 (zero-weight first, sum 100) the first place goes to each with probability 1/101, 60/101,
    # 30/101, 10/101.
    records = [Srv(1, 60, 1, "w60"), Srv(1, 30, 1, "w30"), Srv(1, 0, 1, "w0"), Srv(1, 10, 1, "w10")]
    n = 6000
    first = Counter(order_srv(records, random.Random(seed))[0].target for seed in range(n))
    for target, weight in (("w60", 60), ("w30", 30), ("w10", 10), ("w0", 1)):
        p = weight / 101
        sigma = (n * p * (1 - p)) ** 0.5
        assert abs(first[target] - n * p) < 5 * sigma, (target, first)
    # and every record is always somewhere in the order
    assert all(sorted(r.target for r in order_srv(records, random.Random(s))) == ["w0", "w10", "w30", "w60"]
               for s in range(50))


# --- against the DNS server -------------------------------------------------------------------------------


async def test_naptr_srv_a_chain_gives_transports_in_naptr_order(dns: tuple[DnsServer, tuple[str, int]]) -> None:
    server, ns = dns
    got = await resolve_target(parse_sip_uri("sip:registrar.test"), ALL, nameserver=ns, seed=1)
    assert got == [
        d(TCP, "127.0.0.21", 5080, "t1.registrar.test"),
        d(UDP, "127.0.0.11", 5070, "u1.registrar.test"),
        d(UDP, "127.0.0.12", 5072, "u2.registrar.test"),
        d(UDP, "::1", 5072, "u2.registrar.test"),  # A before AAAA
        d(TLS, "127.0.0.31", 5061, "s1.registrar.test"),
    ]
    assert server.queries[:2] == [("registrar.test", "NAPTR"), ("_sip._tcp.registrar.test", "SRV")]
    assert ("_sip._sctp.registrar.test", "SRV") not in server.queries


async def test_naptr_of_other_transports_is_ignored(dns: tuple[DnsServer, tuple[str, int]]) -> None:
    _, ns = dns
    got = await resolve_target(parse_sip_uri("sip:registrar.test"), (UDP,), nameserver=ns, seed=1)
    assert [str(x) for x in got] == ["udp 127.0.0.11:5070", "udp 127.0.0.12:5072", "udp [::1]:5072"]


async def test_sips_uri_uses_only_the_sips_naptr(dns: tuple[DnsServer, tuple[str, int]]) -> None:
    _, ns = dns
    got = await resolve_target(parse_sip_uri("sips:registrar.test"), ALL, nameserver=ns)
    assert got == [d(TLS, "127.0.0.31", 5061, "s1.registrar.test")]


async def test_websocket_naptr_and_srv_of_rfc_7118() -> None:
    ws, wss = Transport("ws"), Transport("wss")
    server = DnsServer({
        "web.test": [("NAPTR", '10 10 "s" "SIPS+D2W" "" _sips._ws.web.test.'),
                     ("NAPTR", '20 10 "s" "SIP+D2W" "" _sip._ws.web.test.'),
                     ("NAPTR", '30 10 "s" "SIP+D2U" "" _sip._udp.web.test.')],
        "_sips._ws.web.test": [("SRV", "10 0 8443 h.web.test.")],
        "_sip._ws.web.test": [("SRV", "10 0 8080 h.web.test.")],
        "_sip._udp.web.test": [("SRV", "10 0 5060 h.web.test.")],
        "h.web.test": [("A", "127.0.0.1")],
        "plain.web.test": [("A", "127.0.0.2")],
    })
    async with trio.open_nursery() as nursery:
        ns = ("127.0.0.1", await nursery.start(server.serve))
        got = await resolve_target(parse_sip_uri("sip:web.test"), (ws, wss), nameserver=ns)
        assert [str(x) for x in got] == ["wss 127.0.0.1:8443", "ws 127.0.0.1:8080"]
        got = await resolve_target(parse_sip_uri("sips:web.test;transport=ws"), (ws, wss), nameserver=ns)
        assert [str(x) for x in got] == ["wss 127.0.0.1:8443"]
        assert server.queries[-3][0] == "_sips._ws.web.test"
        got = await resolve_target(parse_sip_uri("sip:plain.web.test;transport=ws"), (ws,), nameserver=ns)
        assert [str(x) for x in got] == ["ws 127.0.0.2:80"]   # no SRV: the WebSocket default port
        nursery.cancel_scope.cancel()


async def test_transport_in_the_uri_skips_naptr_and_asks_that_srv(dns: tuple[DnsServer, tuple[str, int]]) -> None:
    server, ns = dns
    got = await resolve_target(parse_sip_uri("sip:registrar.test;transport=udp"), ALL, nameserver=ns, seed=3)
    assert [x.host for x in got] == ["127.0.0.11", "127.0.0.12", "::1"]
    assert {x.transport for x in got} == {UDP}
    assert ("registrar.test", "NAPTR") not in server.queries
    assert server.queries[0] == ("_sip._udp.registrar.test", "SRV")


async def test_without_naptr_srv_of_each_supported_transport(dns: tuple[DnsServer, tuple[str, int]]) -> None:
    server, ns = dns
    got = await resolve_target(parse_sip_uri("sip:srv.test"), ALL, nameserver=ns)
    assert got == [d(UDP, "127.0.0.11", 5070, "u1.registrar.test"), d(TCP, "127.0.0.21", 5080, "t1.registrar.test")]
    assert [q for q in server.queries if q[1] == "SRV"] == [
        ("_sip._udp.srv.test", "SRV"), ("_sip._tcp.srv.test", "SRV"), ("_sips._tcp.srv.test", "SRV"),
    ]


async def test_without_naptr_or_srv_the_a_records_at_the_default_port(
        dns: tuple[DnsServer, tuple[str, int]]) -> None:
    _, ns = dns
    got = await resolve_target(parse_sip_uri("sip:plain.test"), ALL, nameserver=ns)
    assert got == [d(UDP, "127.0.0.7", 5060, "plain.test"), d(UDP, "127.0.0.6", 5060, "plain.test")]
    got = await resolve_target(parse_sip_uri("sip:plain.test"), (TCP,), nameserver=ns)
    assert {(x.transport, x.port) for x in got} == {(TCP, 5060)}
    got = await resolve_target(parse_sip_uri("sips:plain.test"), ALL, nameserver=ns)
    assert {(x.transport, x.port) for x in got} == {(TLS, 5061)}


async def test_aaaa_only_host(dns: tuple[DnsServer, tuple[str, int]]) -> None:
    server, ns = dns
    got = await resolve_target(parse_sip_uri("sip:v6only.test:5070"), ALL, nameserver=ns)
    assert got == [d(UDP, "::1", 5070, "v6only.test")]
    assert server.queries == [("v6only.test", "A"), ("v6only.test", "AAAA")]


async def test_port_given_skips_naptr_and_srv(dns: tuple[DnsServer, tuple[str, int]]) -> None:
    server, ns = dns
    got = await resolve_target(parse_sip_uri("sip:registrar.test:5999;transport=tcp"), ALL, nameserver=ns)
    assert got == [d(TCP, "127.0.0.9", 5999, "registrar.test")]
    assert server.queries == [("registrar.test", "A"), ("registrar.test", "AAAA")]


async def test_numeric_ip_uses_no_dns(dns: tuple[DnsServer, tuple[str, int]]) -> None:
    server, ns = dns
    got = await resolve_target([parse_sip_uri("sip:127.0.0.5"), parse_sip_uri("sips:[::1]:5071")], ALL,
                               nameserver=ns)
    assert got == [d(UDP, "127.0.0.5", 5060), d(TLS, "::1", 5071)]
    assert server.queries == []


async def test_srv_targets_that_are_missing_are_skipped(dns: tuple[DnsServer, tuple[str, int]]) -> None:
    _, ns = dns
    got = await resolve_target(parse_sip_uri("sip:partial.test"), (UDP,), nameserver=ns)
    assert got == [d(UDP, "127.0.0.11", 5072, "u1.registrar.test")]
    with pytest.raises(ResolveError, match=r"^cannot resolve 'gone.lost.test': NXDOMAIN$"):
        await resolve_target(parse_sip_uri("sip:lost.test"), (UDP,), nameserver=ns)


async def test_nxdomain_and_no_address_are_clear_errors(dns: tuple[DnsServer, tuple[str, int]]) -> None:
    _, ns = dns
    with pytest.raises(ResolveError, match=r"^cannot resolve 'nosuch.test': NXDOMAIN$"):
        await resolve_target(parse_sip_uri("sip:nosuch.test"), ALL, nameserver=ns)
    with pytest.raises(ResolveError, match=r"^cannot resolve 'nosuch.test': NXDOMAIN$"):
        await resolve_target(parse_sip_uri("sip:nosuch.test:5060"), ALL, nameserver=ns)
    with pytest.raises(ResolveError, match=r"^cannot resolve 'empty.test': no A or AAAA record$"):
        await resolve_target(parse_sip_uri("sip:empty.test"), ALL, nameserver=ns)


async def test_a_silent_nameserver_is_a_timeout_error(autojump_clock: trio.testing.MockClock) -> None:
    server = DnsServer(ZONE)
    server.drop = True
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        start = trio.current_time()
        with pytest.raises(ResolveError) as caught:
            await resolve_target(parse_sip_uri("sip:registrar.test"), ALL, nameserver=("127.0.0.1", port))
        assert str(caught.value) == f"cannot resolve 'registrar.test': timed out after 2 s asking 127.0.0.1:{port}"
        assert trio.current_time() - start == pytest.approx(2.0)   # virtual time: the timeout, not more
        assert server.queries and server.queries[0] == ("registrar.test", "NAPTR")
        with pytest.raises(ResolveError, match=r"timed out after 0\.5 s asking 127\.0\.0\.1:"):
            await resolve_target(parse_sip_uri("sip:plain.test:5060"), ALL, nameserver=("127.0.0.1", port),
                                 timeout=0.5)
        nursery.cancel_scope.cancel()


async def test_localhost_never_asks_dns() -> None:
    # the system resolver path: "localhost" comes from the operating system (/etc/hosts), as before DNS existed
    got = await resolve_target(parse_sip_uri("sip:localhost:5070"), ALL)
    assert got and {x.port for x in got} == {5070} and {x.host for x in got} <= {"127.0.0.1", "::1"}
    got = await resolve_target(parse_sip_uri("sip:localhost"), ALL, nameserver=("127.0.0.1", 9))  # 9: discard
    assert got and {(x.transport, x.port) for x in got} == {(UDP, 5060)}


class _HostsFile(trio.abc.HostnameResolver):
    """The operating system's view of names (what getaddrinfo answers from /etc/hosts), for one trio run."""

    def __init__(self, hosts: dict[str, str]) -> None:
        self.hosts = hosts

    async def getaddrinfo(self, host: bytes | None, port: bytes | str | int | None, family: int = 0, type: int = 0,
                          proto: int = 0, flags: int = 0) -> list[tuple[Any, Any, Any, str, tuple[str, int]]]:
        name = (host or b"").decode()
        if name not in self.hosts:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_DGRAM, 17, "", (self.hosts[name], int(port or 0)))]

    async def getnameinfo(self, sockaddr: tuple[str, int] | tuple[str, int, int, int], flags: int) -> tuple[str, str]:
        raise NotImplementedError


async def test_a_failing_system_resolver_falls_back_to_the_os_as_before(
        autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch) -> None:
    # no target.dns: the system's resolver is asked for NAPTR/SRV; when it does not answer, the address comes
    # from the operating system (getaddrinfo), as it did before sipload knew DNS
    server = DnsServer(ZONE)
    server.drop = True
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)

        real = asyncresolver.Resolver

        def system_resolver() -> asyncresolver.Resolver:
            resolver = real(configure=False)
            resolver.nameservers = [nameserver.Do53Nameserver("127.0.0.1", port)]
            return resolver

        monkeypatch.setattr(asyncresolver, "Resolver", system_resolver)
        trio.socket.set_custom_hostname_resolver(_HostsFile({"registrar.test": "127.0.0.77"}))
        got = await resolve_target(parse_sip_uri("sip:registrar.test"), ALL)
        assert got == [d(UDP, "127.0.0.77", 5060, "registrar.test")]
        assert server.queries == [("registrar.test", "NAPTR")]   # asked once, then no more
        got = await resolve_target(parse_sip_uri("sip:registrar.test;transport=tcp"), ALL)
        assert got == [d(TCP, "127.0.0.77", 5060, "registrar.test")]
        with pytest.raises(ResolveError, match=r"^cannot resolve 'nosuch.test': Name or service not known$"):
            await resolve_target(parse_sip_uri("sip:nosuch.test"), ALL)
        nursery.cancel_scope.cancel()


# --- the scenario: target.dns and the engine seam ---------------------------------------------------------


def scenario(target: str, *, name: str = "dns", seed: int = 7) -> Scenario:
    text = f'name = "{name}"\nseed = {seed}\n[target]\n{target}\n[endpoints]\ncount = 10\n' \
           '[load]\nrate = 20\nduration = "2s"\ninterval = "500ms"\nunregister_timeout = "5s"\n'
    return parse_scenario(text, Path(f"{name}.toml"))


def test_target_dns_is_read_and_checked() -> None:
    sc = scenario('registrar = "sip:registrar.test"\ndns = "127.0.0.1:5353"')
    assert sc.target.dns == ("127.0.0.1", 5353) and sc.target.uri is not None
    assert sc.target.uri.host == "registrar.test" and sc.target.domain == "registrar.test"
    assert scenario('registrar = "sip:registrar.test"\ndns = "[::1]"').target.dns == ("::1", 53)
    assert scenario('registrar = "sip:registrar.test"').target.dns is None
    bad = {
        '"ns.test:53"': "'ns.test' is not an IP address",
        '"127.0.0.1:0"': "invalid port '0'",
        '"::1"': "an IPv6 nameserver goes in brackets",
        "53": "must be a non-empty string",
    }
    for value, reason in bad.items():
        with pytest.raises(ScenarioError) as caught:
            scenario(f'registrar = "sip:registrar.test"\ndns = {value}')
        message = str(caught.value)
        assert message.startswith("dns.toml: target.dns: ") and reason in message, message
        assert f"got {value.strip(chr(34))!r}" in message or value == "53", message
    with pytest.raises(ScenarioError, match=r"target\.dns: only used with a registrar URI"):
        scenario('registrar = "embedded"\ndns = "127.0.0.1:5353"')


async def test_run_destinations_of_a_scenario(dns: tuple[DnsServer, tuple[str, int]]) -> None:
    _, (host, port) = dns
    sc = scenario(f'registrar = "sip:registrar.test"\ndns = "{host}:{port}"')
    assert await resolve_destinations(sc) == {  # the transport the (implicit) group uses: udp only
        "UDP": (("127.0.0.11", 5070), ("127.0.0.12", 5072), ("::1", 5072)),
    }
    sc = scenario(f'registrar = "sip:registrar.test"\ntransport = "tcp"\ndns = "{host}:{port}"')
    assert await resolve_destinations(sc) == {"TCP": (("127.0.0.21", 5080),)}
    sc = scenario(f'registrar = ["sip:plain.test:5070", "sip:127.0.0.3:5071"]\ndns = "{host}:{port}"')
    assert await resolve_destinations(sc) == {"UDP": (("127.0.0.7", 5070), ("127.0.0.6", 5070), ("127.0.0.3", 5071))}
    sc = scenario(f'registrar = "sip:registrar.test"\noutbound_proxy = "sip:plain.test:5090"\ndns = "{host}:{port}"')
    assert await resolve_destinations(sc) == {"UDP": (("127.0.0.7", 5090), ("127.0.0.6", 5090))}
    # a list naming another transport: a group of that transport uses that item, the others the rest
    sc = scenario(f'registrar = ["sip:127.0.0.3:5071", "sip:127.0.0.3:5072;transport=tcp"]\ndns = "{host}:{port}"')
    assert await resolve_destinations(sc, ["udp", "tcp"]) == {
        "UDP": (("127.0.0.3", 5071),), "TCP": (("127.0.0.3", 5072),),
    }
    with pytest.raises(RunError, match=r"no URI for the ws transport"):
        await resolve_destinations(scenario('registrar = "sip:127.0.0.3:5071;transport=udp"'), ["ws"])
    sc = scenario(f'registrar = "sip:nosuch.test"\ndns = "{host}:{port}"')
    with pytest.raises(RunError, match=r"^target\.registrar: cannot resolve 'nosuch.test': NXDOMAIN$"):
        await resolve_destinations(sc)


async def test_same_seed_same_srv_order_through_dns() -> None:
    # five equal-priority SRV targets with weights: the order depends on the seed only, not on the order the
    # server sends them in (it shuffles them here, as BIND rotates them)
    zone: Zone = {
        "_sip._udp.w.test": [("SRV", f"10 {w} {5070 + k} h{k}.w.test.") for k, w in enumerate((5, 10, 20, 30, 35))],
        **{f"h{k}.w.test": [("A", f"127.0.1.{k}")] for k in range(5)},
        "w.test": [],
    }
    server = DnsServer(zone, shuffle=True)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        ns = ("127.0.0.1", port)
        runs = [[x.port for x in await resolve_target(parse_sip_uri("sip:w.test"), (UDP,), nameserver=ns, seed=s)]
                for s in (11, 11, 11, 12, 13, 14, 15)]
        nursery.cancel_scope.cancel()
    assert runs[0] == runs[1] == runs[2]
    assert all(sorted(r) == [5070, 5071, 5072, 5073, 5074] for r in runs)
    assert len({tuple(r) for r in runs}) > 1   # other seeds, other orders


# --- end to end: a scenario whose registrar is a name, two embedded registrars behind SRV -----------------

async def test_registrar_name_resolves_to_two_embedded_registrars_by_srv_priority(tmp_path: Path) -> None:
    settings = RegistrarSettings(realm="registrar.test", min_expires=1)
    primary = RegistrarCore(settings, now=trio.current_time())
    backup = RegistrarCore(settings, now=trio.current_time())
    async with trio.open_nursery() as nursery:
        ports = []
        for core in (primary, backup):
            listens = await nursery.start(partial(serve_registrar, settings, [Listen("udp", "127.0.0.1", 0)],
                                                  core=core, out=lambda _: None))
            ports.append(listens[0].port)
        server = DnsServer({
            "registrar.test": [("NAPTR", '10 10 "s" "SIP+D2U" "" _sip._udp.registrar.test.')],
            "_sip._udp.registrar.test": [("SRV", f"20 0 {ports[1]} backup.registrar.test."),
                                         ("SRV", f"10 0 {ports[0]} primary.registrar.test.")],
            "primary.registrar.test": [("A", "127.0.0.1")],
            "backup.registrar.test": [("A", "127.0.0.1")],
        })
        dns_port = await nursery.start(server.serve)
        sc = scenario(f'registrar = "sip:registrar.test"\ndns = "127.0.0.1:{dns_port}"', name="srv")
        assert await resolve_destinations(sc) == {"UDP": (("127.0.0.1", ports[0]), ("127.0.0.1", ports[1]))}
        with trio.fail_after(30):
            outcome = await sipload.engine.run.run_scenario(sc, tmp_path / "out", progress=lambda _: None,
                                                            handle_signals=False)
        nursery.cancel_scope.cancel()
    assert outcome.exit_code is sipload.engine.run.ExitCode.OK, (outcome.result.notes, outcome.result.failures)
    assert primary.counters.received["REGISTER"] >= 20   # 10 endpoints: challenge + credentials each
    assert backup.counters.received["REGISTER"] == 0     # priority 20: only when the primary fails
