"""RFC 3263 §4: where the requests for a SIP URI go (NAPTR -> SRV -> A/AAAA), resolved once at run start.

Theory of operation: `resolve_target` turns the target URI(s) into an ordered list of `Destination`s
(transport, IP address, port), the first the one to use and the rest the failover order:

- a numeric IP host is used as it is (no DNS), with the URI's port or the transport's default port;
- a host name with a port: A and AAAA records only (IPv4 addresses first);
- a host name without a port: the NAPTR records of the name (services SIP+D2U, SIP+D2T, SIPS+D2T and, when
  `Transport` has WebSocket members, SIP+D2W / SIPS+D2W of RFC 7118; flag "s"), kept when the client
  supports their transport and ordered by order then preference; each one's replacement is an SRV name.
  Without usable NAPTR records, or when the URI names its transport (``;transport=``), the SRV names
  ``_sip._udp``, ``_sip._tcp``, ``_sips._tcp`` (``_sip._ws``, ``_sips._ws``) of the supported transports.
  SRV records are ordered by priority and, within a priority, by the weighted random draw of RFC 2782 from
  a `random.Random(seed)`: with the scenario's seed a run resolves to the same order every time. Each SRV
  target's A/AAAA records give the addresses. Without any SRV record: the name's A/AAAA records with the
  transport's default port (UDP for sip:, TLS for sips:, unless the client supports neither).

The addresses are looked up once, when the run starts; records' TTLs are not followed during a run (a run
that must follow a DNS change is started again). With a nameserver given (``target.dns``) every query goes
to it and any failure is an error. Without one, NAPTR and SRV are asked of the system's resolver
(/etc/resolv.conf) and, when that cannot answer (timeout, no such name, no resolver configured), the
host's address comes from the operating system (`getaddrinfo`: /etc/hosts, nsswitch) as it did before
DNS resolution existed; ``localhost`` names never go to DNS (RFC 6761). Every failure is a `ResolveError`
whose message names the host and the reason (``cannot resolve 'x.test': NXDOMAIN``, ``cannot resolve
'x.test': timed out after 2 s asking 127.0.0.1:5353``).

The ordering helpers (`order_naptr`, `order_srv`) are pure functions, tested without a network.
"""

from __future__ import annotations

import ipaddress
import itertools
import random
import socket
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.rdtypes.IN.NAPTR
import dns.rdtypes.IN.SRV
import dns.resolver
import trio

from sipload.scenario import SipUri, Transport

DEFAULT_TIMEOUT = 2.0  # seconds for one DNS query

# NAPTR service -> transport value, SRV service name; WebSocket entries only once `Transport` has them.
_SERVICES = {
    "SIP+D2U": ("udp", "_sip._udp"),
    "SIP+D2T": ("tcp", "_sip._tcp"),
    "SIPS+D2T": ("tls", "_sips._tcp"),
    "SIP+D2W": ("ws", "_sip._ws"),
    "SIPS+D2W": ("wss", "_sips._ws"),
}
_SECURE = frozenset({"tls", "wss"})
_DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061, "ws": 80, "wss": 443}
_PREFERENCE = ("udp", "tcp", "tls", "ws", "wss")  # order of SRV queries without NAPTR


def _transport(value: str) -> Transport | None:
    try:
        return Transport(value)
    except ValueError:
        return None


def _srv_service(transport: Transport) -> str | None:
    for value, service in _SERVICES.values():
        if value == transport.value:
            return service
    return None


def _default_port(transport: Transport) -> int:
    return _DEFAULT_PORTS.get(transport.value, 5060)


class ResolveError(Exception):
    """A target could not be resolved: the message names the host and the reason (NXDOMAIN, timeout...)."""


@dataclass(frozen=True, slots=True)
class Destination:
    """One place to send requests: transport, IP address, port; `name` is the host name it came from."""

    transport: Transport
    host: str  # an IP address (IPv6 without brackets)
    port: int
    name: str = ""  # the SRV target or URI host name; "" when the URI named an IP address

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport.value} {host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Naptr:
    order: int
    preference: int
    flags: str
    service: str
    replacement: str  # the SRV name, without the trailing dot


@dataclass(frozen=True, slots=True)
class Srv:
    priority: int
    weight: int
    port: int
    target: str  # host name without the trailing dot; "" for "." (service not offered)


def order_naptr(records: Sequence[Naptr], transports: Collection[Transport], *, secure: bool) -> list[
        tuple[Transport, str]]:
    """(transport, SRV name) of the usable NAPTR records, by order then preference (RFC 3263 §4.1).

    Usable: flag "s", a SIP service whose transport is in `transports` (only SIPS services when `secure`),
    a replacement other than ".".
    """
    usable: list[tuple[int, int, Transport, str]] = []
    for r in records:
        known = _SERVICES.get(r.service.upper())
        transport = _transport(known[0]) if known else None
        if r.flags.lower() != "s" or transport is None or transport not in transports or not r.replacement:
            continue
        if secure and transport.value not in _SECURE:
            continue
        usable.append((r.order, r.preference, transport, r.replacement))
    usable.sort(key=lambda u: (u[0], u[1]))
    return [(transport, name) for _, _, transport, name in usable]


def order_srv(records: Sequence[Srv], rng: random.Random) -> list[Srv]:
    """SRV records by priority, weighted-random within a priority (RFC 2782's selection algorithm).

    Within a priority, the zero-weight records go first, then repeatedly: a number drawn uniformly from
    0..sum of the remaining weights picks the first record whose running sum of weights reaches it.
    Records whose target is "." (service not offered) are dropped. The records are put in a canonical order
    first, so the outcome depends on the set of records and `rng` only, not on how a server rotated them.
    """
    result: list[Srv] = []
    offered = sorted((r for r in records if r.target), key=lambda r: (r.priority, r.weight, r.target, r.port))
    for priority in sorted({r.priority for r in offered}):
        group = sorted((r for r in offered if r.priority == priority), key=lambda r: r.weight != 0)
        while group:
            pick = rng.randint(0, sum(r.weight for r in group))
            running = list(itertools.accumulate(r.weight for r in group))
            result.append(group.pop(next(i for i, total in enumerate(running) if total >= pick)))
    return result


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_localhost(host: str) -> bool:
    name = host.rstrip(".").lower()
    return name == "localhost" or name.endswith(".localhost")


class _Timeout(ResolveError):
    pass


class _NoSuchName(ResolveError):
    pass


class _Dns:
    """The queries of one resolution: one nameserver (or the system's), one timeout per query."""

    def __init__(self, nameserver: tuple[str, int] | None, timeout: float) -> None:
        self.timeout = timeout
        self.strict = nameserver is not None
        self.failed = False  # the system's resolver failed once: ask it no more (getaddrinfo does the rest)
        self.resolver: dns.asyncresolver.Resolver | None
        if nameserver is not None:
            self.resolver = dns.asyncresolver.Resolver(configure=False)
            self.resolver.nameservers = [dns.nameserver.Do53Nameserver(nameserver[0], nameserver[1])]
            host = f"[{nameserver[0]}]" if ":" in nameserver[0] else nameserver[0]
            self.asking = f"{host}:{nameserver[1]}"
        else:
            try:
                self.resolver = dns.asyncresolver.Resolver()
            except dns.exception.DNSException:  # no /etc/resolv.conf, or no nameserver in it
                self.resolver = None
            names = [str(ns) for ns in self.resolver.nameservers] if self.resolver else []
            self.asking = ", ".join(names) or "the system resolver"
        if self.resolver is not None:
            self.resolver.timeout = timeout
            self.resolver.lifetime = timeout

    async def query(self, name: str, rdtype: dns.rdatatype.RdataType) -> list[object]:
        """The records of one type ([] when the name has none); NXDOMAIN, timeouts... raise ResolveError."""
        try:
            return await self._query(name, rdtype)
        except _NoSuchName:
            raise
        except ResolveError:
            self.failed = not self.strict
            raise

    async def _query(self, name: str, rdtype: dns.rdatatype.RdataType) -> list[object]:
        if self.resolver is None or self.failed:
            raise ResolveError(f"cannot resolve {name!r}: no DNS resolver configured, or it failed")
        try:
            with trio.fail_after(self.timeout):
                answer = await self.resolver.resolve(dns.name.from_text(name), rdtype, search=False,
                                                     raise_on_no_answer=False)
        except (trio.TooSlowError, dns.exception.Timeout):
            raise _Timeout(f"cannot resolve {name!r}: timed out after {self.timeout:g} s asking {self.asking}") \
                from None
        except dns.resolver.NXDOMAIN:
            raise _NoSuchName(f"cannot resolve {name!r}: NXDOMAIN") from None
        except dns.resolver.NoNameservers as exc:  # SERVFAIL, REFUSED, unreachable
            raise ResolveError(f"cannot resolve {name!r}: {self.asking} did not answer ({exc.msg})") from None
        except dns.exception.DNSException as exc:
            raise ResolveError(f"cannot resolve {name!r}: {exc} (asking {self.asking})") from None
        return list(answer.rrset) if answer.rrset is not None else []

    async def addresses(self, name: str, port: int) -> list[str]:
        """IP addresses of a host name: A then AAAA from the nameserver, or getaddrinfo without one."""
        if not self.strict or _is_localhost(name):
            try:
                infos = await trio.socket.getaddrinfo(name, port, type=socket.SOCK_DGRAM)
            except socket.gaierror as exc:
                raise ResolveError(f"cannot resolve {name!r}: {exc.strerror or exc}") from None
            return list(dict.fromkeys(str(info[4][0]) for info in infos))
        found = [str(r) for r in await self.query(name, dns.rdatatype.A)]
        found += [str(r) for r in await self.query(name, dns.rdatatype.AAAA)]
        if not found:
            raise ResolveError(f"cannot resolve {name!r}: no A or AAAA record")
        return found

    async def naptr(self, name: str) -> list[Naptr]:
        return [
            Naptr(r.order, r.preference, r.flags.decode(errors="replace"), r.service.decode(errors="replace"),
                  r.replacement.to_text(omit_final_dot=True) if r.replacement != dns.name.root else "")
            for r in await self.query(name, dns.rdatatype.NAPTR)
            if isinstance(r, dns.rdtypes.IN.NAPTR.NAPTR)
        ]

    async def srv(self, name: str) -> list[Srv]:
        try:
            records = await self.query(name, dns.rdatatype.SRV)
        except _NoSuchName:
            return []
        except ResolveError:
            if self.strict:
                raise
            return []  # the system's resolver cannot answer: the host's own address will do
        return [
            Srv(r.priority, r.weight, r.port, r.target.to_text(omit_final_dot=True) if r.target != dns.name.root
                else "")
            for r in records
            if isinstance(r, dns.rdtypes.IN.SRV.SRV)
        ]


def _fallback_transport(uri: SipUri, transports: Sequence[Transport]) -> Transport:
    """RFC 3263 §4.1 with no transport named: UDP for sip:, TLS for sips:, else the first the client has."""
    preferred = "tls" if uri.scheme == "sips" else "udp"
    for transport in transports:
        if transport.value == preferred:
            return transport
    secure = [t for t in transports if t.value in _SECURE]
    return (secure if uri.scheme == "sips" and secure else list(transports))[0]


async def _resolve_one(uri: SipUri, transports: Sequence[Transport], lookup: _Dns, rng: random.Random) -> list[
        Destination]:
    value = dict(uri.params).get("transport")
    named = _transport(value) if value else None
    if named is not None and uri.scheme == "sips":
        named = uri.transport  # sips:...;transport=tcp is TLS, ;transport=ws is WSS
    transport = named or _fallback_transport(uri, transports)
    host = uri.host
    if _is_ip(host):
        return [Destination(transport, host, uri.port or _default_port(transport))]
    if uri.port is not None or _is_localhost(host):
        port = uri.port or _default_port(transport)
        return [Destination(transport, ip, port, host) for ip in await lookup.addresses(host, port)]
    secure = uri.scheme == "sips"
    srv_names: list[tuple[Transport, str]] = []
    if named is None:
        try:
            srv_names = order_naptr(await lookup.naptr(host), transports, secure=secure)
        except ResolveError:
            if lookup.strict:
                raise
            return [Destination(transport, ip, _default_port(transport), host)  # the system resolver failed
                    for ip in await lookup.addresses(host, _default_port(transport))]
    if not srv_names:
        wanted = [named] if named is not None else sorted(
            transports, key=lambda t: _PREFERENCE.index(t.value) if t.value in _PREFERENCE else len(_PREFERENCE))
        for t in wanted:
            service = _srv_service(t)
            if service is not None and (not secure or t.value in _SECURE):
                srv_names.append((t, f"{service}.{host.rstrip('.')}"))
    result: list[Destination] = []
    problems: list[ResolveError] = []
    for t, name in srv_names:
        for record in order_srv(await lookup.srv(name), rng):
            try:
                ips = await lookup.addresses(record.target, record.port)
            except _Timeout:
                raise
            except ResolveError as exc:  # one SRV target missing: the others may do
                problems.append(exc)
                continue
            result += [Destination(t, ip, record.port, record.target) for ip in ips]
    if result:
        return result
    if problems:
        raise problems[0]
    port = _default_port(transport)  # no NAPTR, no SRV: the name's own addresses
    return [Destination(transport, ip, port, host) for ip in await lookup.addresses(host, port)]


async def resolve_target(
    uris: SipUri | Sequence[SipUri],
    transports: Sequence[Transport] = (Transport.UDP, Transport.TCP, Transport.TLS),
    *,
    nameserver: tuple[str, int] | None = None,
    seed: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[Destination]:
    """The ordered destinations of the URI(s), per RFC 3263 §4 (see the module docstring); no duplicates.

    `transports` are the transports the client can use: NAPTR and SRV records of others are ignored, and a
    URI's ``;transport=`` wins over them. `nameserver` is (IP, port), None for the system's resolver; `seed`
    makes the weighted SRV order reproducible; `timeout` bounds each DNS query. Called once at run start.
    Raises ResolveError.
    """
    if not transports:
        raise ValueError("resolve_target: no transport")
    lookup = _Dns(nameserver, timeout)
    rng = random.Random(seed)
    result: dict[Destination, None] = {}
    for uri in [uris] if isinstance(uris, SipUri) else uris:
        for destination in await _resolve_one(uri, transports, lookup, rng):
            result.setdefault(destination)
    return list(result)
