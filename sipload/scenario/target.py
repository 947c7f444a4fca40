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


@dataclass(frozen=True, slots=True)
class SipUri:
    """A registrar or proxy URI: ``sip:host[:port][;params]`` or ``sips:...`` (no user part)."""

    scheme: str  # "sip" | "sips"
    host: str  # without brackets for IPv6
    port: int | None = None
    params: tuple[tuple[str, str | None], ...] = ()

    @property
    def transport(self) -> Transport:
        """From ``;transport=`` and the scheme (sips -> tls), else udp."""
        if self.scheme == "sips":
            return Transport.TLS
        value = dict(self.params).get("transport")
        return Transport(value) if value else Transport.UDP

    @property
    def host_text(self) -> str:
        """The host as written in a URI (IPv6 in brackets)."""
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return 5061 if self.transport is Transport.TLS else 5060

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
    if "transport" in dict(uri.params) and transport not in ("udp", "tcp", "tls"):
        raise ValueError(f"transport {transport!r} is not supported (udp, tcp, tls)")
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

    @property
    def embedded(self) -> bool:
        return self.uri is None


TARGET_KEYS = tuple("registrar domain transport outbound_proxy tls_verify tls_ca tls_cert tls_key".split())
_DOMAIN_HINT = "must be a host name or IP address, optionally with :port"


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
    registrar = t.text("registrar", "embedded", nonempty=True)
    uri: SipUri | None = None
    if registrar != "embedded":
        try:
            uri = parse_sip_uri(registrar)
        except ValueError as exc:
            raise t.fail("registrar", f"must be 'embedded' or a SIP URI such as 'sip:127.0.0.1:5070' ({exc})") from None
    domain = _domain(t, "sipload.test" if uri is None else uri.host_text)
    transport = Transport(t.choice("transport", uri.transport if uri else "udp", [m.value for m in Transport]))
    if uri is None and transport is not Transport.UDP:
        raise t.fail("transport", "the embedded registrar listens on udp only")
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
        if t.given(key) and transport is not Transport.TLS:
            raise t.fail(key, f"only allowed with transport 'tls' (the transport is {transport.value!r})")
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
    )
