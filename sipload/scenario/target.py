"""`[target]`: the registrar URI (or the embedded registrar), the AoR domain, transport, proxy and TLS files.

`parse_sip_uri` is a validator for URIs that a user writes as a target, stricter than the wire parser
`sipload.sip.headers.parse_uri`: no user part, no headers, a host that is an IP address or a DNS name,
a port 1-65535, token parameters, a supported transport. Each failure is a ValueError with a short reason
that the scenario quotes after the field name. The host and port helpers also check `target.domain` and
`registrar.listen`.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from sipload.scenario.reader import Ctx, Table
from sipload.sip.headers import is_token


class Transport(enum.StrEnum):
    UDP = "udp"
    TCP = "tcp"
    TLS = "tls"
    WS = "ws"     # SIP over WebSocket (RFC 7118)
    WSS = "wss"


@dataclass(frozen=True, slots=True)
class SipUri:
    """A registrar or proxy URI: ``sip:host[:port][;params]`` or ``sips:...`` (no user part)."""

    scheme: str  # "sip" | "sips"
    host: str  # without brackets for IPv6
    port: int | None = None
    params: tuple[tuple[str, str | None], ...] = ()

    @property
    def transport(self) -> Transport:
        """From ``;transport=`` and the scheme (sips -> tls, or wss with transport=ws|wss), else udp."""
        value = dict(self.params).get("transport")
        if self.scheme == "sips":
            return Transport.WSS if value in ("ws", "wss") else Transport.TLS
        return Transport(value) if value else Transport.UDP

    @property
    def host_text(self) -> str:
        """The host as written in a URI (IPv6 in brackets)."""
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        # WS and WSS: the HTTP ports of RFC 6455 §3 (RFC 7118 names no SIP default port for them)
        return {Transport.TLS: 5061, Transport.WS: 80, Transport.WSS: 443}.get(self.transport, 5060)

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params)
        return f"{self.scheme}:{self.host_text}{port}{params}"


_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?", re.ASCII)


def check_host(host: str) -> str:
    """The host without brackets; raises ValueError unless it is an IP address or a host name."""
    if host.startswith("[") and host.endswith("]"):
        try:
            return str(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            raise ValueError(f"invalid IPv6 address {host!r}") from None
    if re.fullmatch(r"[0-9.]+", host):
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise ValueError(f"invalid IPv4 address {host!r}") from None
    if len(host) > 253 or not _HOSTNAME.fullmatch(host):
        raise ValueError(f"invalid host {host!r}")
    return host


def split_hostport(text: str) -> tuple[str, str | None]:
    """'host[:port]' or '[v6][:port]' -> (host as written, port text or None); no checks on either."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"unclosed '[' in {text!r}")
        rest = text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"unexpected {rest!r} after the IPv6 address")
        return text[: end + 1], rest[1:] if rest else None
    host, sep, port = text.partition(":")
    return host, port if sep else None


def check_port(port: str, *, allow_zero: bool = False) -> int:
    if not port.isascii() or not port.isdigit() or not (0 if allow_zero else 1) <= int(port) <= 65535:
        raise ValueError(f"invalid port {port!r}")
    return int(port)


def parse_sip_uri(text: str) -> SipUri:
    """Parse a registrar/proxy URI; raises ValueError with a short reason."""
    scheme, sep, rest = text.partition(":")
    if not sep or scheme.lower() not in ("sip", "sips"):
        raise ValueError("must start with sip: or sips:")
    if "@" in rest:
        raise ValueError("must not have a user part")
    if "?" in rest:
        raise ValueError("must not have headers")
    hostport, *raw_params = rest.split(";")
    host, port = split_hostport(hostport)
    params: list[tuple[str, str | None]] = []
    for param in raw_params:
        name, eq, value = param.partition("=")
        if not is_token(name) or (eq and not is_token(value)):
            raise ValueError(f"invalid parameter {param!r}")
        name = name.lower()
        params.append((name, (value.lower() if name == "transport" else value) if eq else None))
    uri = SipUri(scheme.lower(), check_host(host), None if port is None else check_port(port), tuple(params))
    transport = dict(uri.params).get("transport", "")
    if "transport" in dict(uri.params) and transport not in ("udp", "tcp", "tls", "ws", "wss"):
        raise ValueError(f"transport {transport!r} is not supported (udp, tcp, tls, ws, wss)")
    if uri.scheme == "sips" and transport == "udp":
        raise ValueError("sips: needs TLS, not transport=udp")
    return uri


@dataclass(frozen=True, slots=True)
class Target:
    registrar: str  # "embedded" or the registrar URI as written
    uri: SipUri | None  # None for the embedded registrar
    domain: str  # AoR domain: From/To/request-URI host
    transport: Transport = Transport.UDP
    outbound_proxy: SipUri | None = None
    tls_verify: bool = True
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    uris: tuple[SipUri, ...] = ()  # every registrar URI in order (failover); uris[0] is uri
    dns: tuple[str, int] | None = None  # nameserver (IP, port) for RFC 3263 lookups; None: the system's
    ws_path: str = "/"  # ws/wss: the resource of the WebSocket handshake (e.g. "/ws")
    probe: bool = True  # before the run: is anything answering at a UDP target? (engine/probe.py)

    @property
    def registrars(self) -> tuple[SipUri, ...]:
        """The registrar URIs in failover order (empty for the embedded registrar)."""
        return self.uris or ((self.uri,) if self.uri is not None else ())

    @property
    def embedded(self) -> bool:
        return self.uri is None


TARGET_KEYS = tuple(
    "registrar domain transport outbound_proxy tls_verify tls_ca tls_cert tls_key dns ws_path probe".split())
_DOMAIN_HINT = "must be a host name or IP address, optionally with :port"
EMBEDDED_TRANSPORTS = ("udp", "tcp", "ws")  # what the embedded registrar serves (tls needs a certificate)


def _domain(t: Table, default: str) -> str:
    domain = t.text("domain", default, nonempty=True)
    try:
        host, port = split_hostport(domain)
        check_host(host)
        if port is not None:
            check_port(port)
    except ValueError:
        raise t.fail("domain", _DOMAIN_HINT) from None
    return domain


def read_target(ctx: Ctx, data: object) -> Target:
    t = Table(ctx, "target", data, TARGET_KEYS)
    uris: list[SipUri] = []
    if isinstance(t.data.get("registrar"), list):  # several registrars, tried in order
        listed = t.data["registrar"]
        if not listed:
            raise t.fail("registrar", "must be 'embedded', a SIP URI or a non-empty list of SIP URIs")
        for k, item in enumerate(listed):
            try:
                if not isinstance(item, str):
                    raise ValueError("not a string")
                uris.append(parse_sip_uri(item))
            except ValueError as exc:
                raise ctx.error(f"target.registrar[{k}]", f"must be a SIP URI such as 'sip:127.0.0.1:5070' "
                                f"({exc}), got {item!r}") from None
        registrar = ", ".join(str(u) for u in listed)
    else:
        registrar = t.text("registrar", "embedded", nonempty=True)
    uri: SipUri | None = uris[0] if uris else None
    if registrar != "embedded" and not uris:
        try:
            uri = parse_sip_uri(registrar)
        except ValueError as exc:
            raise t.fail("registrar", f"must be 'embedded' or a SIP URI such as 'sip:127.0.0.1:5070' ({exc})") from None
    domain = _domain(t, "sipload.test" if uri is None else uri.host_text)
    transport = Transport(t.choice("transport", uri.transport if uri else "udp", [m.value for m in Transport]))
    if uri is None and transport.value not in EMBEDDED_TRANSPORTS:
        served = ", ".join(x for x in EMBEDDED_TRANSPORTS if x in [m.value for m in Transport])
        raise t.fail("transport", f"the embedded registrar serves {served} (tls needs a certificate: run "
                                  f"'sipload registrar' with one and name it as target.registrar)")
    # Items of a list may name other transports (';transport=ws'): a group of that transport uses them
    # (engine/run.resolve_destinations), the others use the items that name none.
    uri_says = uri is not None and (uri.scheme == "sips" or "transport" in dict(uri.params))
    if uri is not None and uri_says and transport is not uri.transport:
        raise t.fail("transport", f"contradicts the registrar URI {registrar!r} ({uri.transport})")
    proxy = None
    if t.given("outbound_proxy"):
        try:
            proxy = parse_sip_uri(t.text("outbound_proxy"))
        except ValueError as exc:
            raise t.fail("outbound_proxy", f"must be a SIP URI such as 'sip:127.0.0.1:5070' ({exc})") from None
    for key in ("tls_verify", "tls_ca", "tls_cert", "tls_key"):
        if t.given(key) and transport not in (Transport.TLS, Transport.WSS):
            raise t.fail(key, f"only allowed with transport 'tls' or 'wss' (the transport is {transport.value!r})")
    ws_path = t.text("ws_path", "/", nonempty=True)
    if t.given("ws_path") and transport not in (Transport.WS, Transport.WSS):
        raise t.fail("ws_path", f"only allowed with transport 'ws' or 'wss' (the transport is {transport.value!r})")
    if not ws_path.startswith("/") or not ws_path.isascii() or not ws_path.isprintable() or " " in ws_path:
        raise t.fail("ws_path", "must be a URL path starting with '/', such as '/ws'")
    if t.given("tls_key") and not t.given("tls_cert"):
        raise t.fail("tls_key", "needs target.tls_cert too")
    return Target(
        registrar,
        uri,
        domain,
        transport,
        proxy,
        t.boolean("tls_verify", True),
        t.path("tls_ca"),
        t.path("tls_cert"),
        t.path("tls_key"),
        tuple(uris),
        dns=_nameserver(t, uri is None),
        ws_path=ws_path,
        probe=t.boolean("probe", True),
    )


def parse_nameserver(text: str) -> tuple[str, int]:
    """'IP[:port]' or '[IPv6][:port]' -> (IP, port), port 53 by default; raises ValueError."""
    if text.count(":") > 1 and not text.startswith("["):
        raise ValueError("an IPv6 nameserver goes in brackets, such as '[::1]:5353'")
    host, port = split_hostport(text)
    ip = check_host(host)
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None
    return ip, 53 if port is None else check_port(port)


def _nameserver(t: Table, embedded: bool) -> tuple[str, int] | None:
    """`target.dns`: the nameserver asked for the registrar's NAPTR/SRV/A/AAAA records."""
    if not t.given("dns"):
        return None
    text = t.text("dns", nonempty=True)
    if embedded:
        raise t.fail("dns", "only used with a registrar URI (the embedded registrar is not looked up)")
    try:
        return parse_nameserver(text)
    except ValueError as exc:
        raise t.fail("dns", f"must be a nameserver IP address with an optional port, such as '127.0.0.1:5353' "
                            f"({exc})") from None
