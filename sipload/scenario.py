"""Scenario files: a TOML document validated into frozen configuration.

Theory of operation: ``load_scenario`` reads the file and ``_build`` walks the document one section at a
time with a ``_Table`` reader. A ``_Table`` rejects unknown keys before anything else and turns every type
or range problem into a ScenarioError whose message names the file, the dotted field and the offending
value (``scenarios/x.toml: endpoints.count: must be a positive integer, got -5``). Cross-field rules (the
run is long enough for every arrival, a [registrar] section only for the embedded registrar, ...) are
checked once the sections are built. ``Scenario.with_overrides`` edits a copy of the document and builds it
again, so that command-line flags get exactly the same validation; errors about an overridden field name
the flag instead of the file. Besides the scenario, the only files read are the CSV files it names (and
the TLS files it names, checked for existence).

The arrival schedule (``Load.arrival_times``) is open loop: the k-th registration (0-based) starts when
the integral of the rate from 0 reaches k. Each time is computed directly from k and exact (Fraction)
segment boundaries (rounded once to float), never by adding 1/rate repeatedly, so there is no accumulated drift.
"""

from __future__ import annotations

import copy
import enum
import ipaddress
import math
import random
import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sipload.durations import DURATION_HINT, DurationError, format_duration, parse_duration
from sipload.providers.settings import CrossCheckConfig, config_from_mapping
from sipload.thresholds import Threshold, ThresholdError, parse_threshold


class ScenarioError(Exception):
    """An invalid scenario file or override; the message names the file (or flag), the field and the value."""


class Transport(enum.StrEnum):
    UDP = "udp"
    TCP = "tcp"
    TLS = "tls"


class SocketMode(enum.StrEnum):
    SHARED = "shared"  # one socket per worker, demultiplexed
    PER_ENDPOINT = "per-endpoint"  # one socket (source port) per endpoint


class CsvMode(enum.StrEnum):
    SEQUENTIAL = "SEQUENTIAL"
    RANDOM = "RANDOM"
    USER = "USER"


class LoadShape(enum.StrEnum):
    CONSTANT = "constant"
    STEPS = "steps"
    RAMP = "ramp"


class DelayDistribution(enum.StrEnum):
    FIXED = "fixed"
    UNIFORM = "uniform"
    EXPONENTIAL = "exponential"


DIGEST_ALGORITHMS = ("MD5", "SHA-256")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# ----------------------------------------------------------------------------------------------- SIP URIs


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
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+", re.ASCII)


def _check_host(host: str) -> str:
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


def _split_hostport(text: str) -> tuple[str, str | None]:
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


def _check_port(port: str, *, allow_zero: bool = False) -> int:
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
    host, port = _split_hostport(hostport)
    params: list[tuple[str, str | None]] = []
    for param in raw_params:
        name, eq, value = param.partition("=")
        if not _TOKEN.fullmatch(name) or (eq and not _TOKEN.fullmatch(value)):
            raise ValueError(f"invalid parameter {param!r}")
        name = name.lower()
        params.append((name, (value.lower() if name == "transport" else value) if eq else None))
    uri = SipUri(scheme.lower(), _check_host(host), None if port is None else _check_port(port), tuple(params))
    transport = dict(uri.params).get("transport", "")
    if "transport" in dict(uri.params) and transport not in ("udp", "tcp", "tls"):
        raise ValueError(f"transport {transport!r} is not supported (udp, tcp, tls)")
    if uri.scheme == "sips" and transport == "udp":
        raise ValueError("sips: needs TLS, not transport=udp")
    return uri


# ------------------------------------------------------------------------------------------ config classes


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


@dataclass(frozen=True, slots=True)
class Credential:
    username: str
    password: str
    auth_user: str


@dataclass(frozen=True, slots=True)
class AddressRange:
    """Source addresses ``first``..``last`` inclusive; indexing wraps around."""

    first: IPAddress
    last: IPAddress

    def __len__(self) -> int:
        return int(self.last) - int(self.first) + 1

    def __getitem__(self, i: int) -> str:
        return str(type(self.first)(int(self.first) + i % len(self)))


@dataclass(frozen=True, slots=True)
class Endpoints:
    count: int
    first: int = 1
    username: str = "user{n}"  # templates (python format): n; password and auth_user also username
    password: str = "pw-{username}"
    auth_user: str = "{username}"
    csv: Path | None = None  # a SIPp injection file, instead of the templates
    csv_mode: CsvMode | None = None
    csv_rows: tuple[Credential, ...] = ()
    csv_order: tuple[int, ...] = ()  # RANDOM: a seeded permutation of the rows
    expires: int = 3600
    refresh_at: float = 0.5
    refresh_jitter: float = 0.05
    refresh_margin: float = 2.0
    user_agent: str = "sipload/0.1"  # "" = no User-Agent header
    socket: SocketMode = SocketMode.SHARED
    source_addresses: AddressRange | None = None
    digest_preference: tuple[str, ...] | None = None

    def credentials(self, i: int) -> Credential:
        """Credentials of the i-th endpoint (0-based); CSV rows wrap around."""
        if i < 0:
            raise IndexError(f"endpoint index must be >= 0, got {i}")
        if self.csv_rows:
            row = i % len(self.csv_rows)
            return self.csv_rows[self.csv_order[row] if self.csv_order else row]
        n = self.first + i
        username = self.username.format(n=n)
        return Credential(
            username,
            self.password.format(n=n, username=username),
            self.auth_user.format(n=n, username=username),
        )

    def refresh_delay(self, granted: float, jitter: float = 0.0) -> float:
        """Seconds after a registration granted ``granted`` seconds to refresh it.

        ``jitter`` in [-1, 1] is the caller's random draw: the delay is ``granted * (refresh_at +
        jitter * refresh_jitter)``, at least ``refresh_margin`` before expiry, never negative.
        """
        delay = granted * (self.refresh_at + jitter * self.refresh_jitter)
        return max(0.0, min(delay, granted - self.refresh_margin))


@dataclass(frozen=True, slots=True)
class Step:
    rate: float  # per second (0 = a pause)
    duration: float  # seconds


@dataclass(frozen=True, slots=True)
class Ramp:
    start_rate: float  # "from"
    end_rate: float  # "to"; kept after the ramp
    duration: float


@dataclass(frozen=True, slots=True)
class _Segment:
    t0: float  # start time
    t1: float  # end time (inf for the last)
    c0: float  # arrivals due before t0 (the integral of the rate up to t0, rounded once from a Fraction)
    k_end: float  # first arrival index after this segment (inf for the last)
    rate: float  # constant segments
    slope: float  # ramp segment: rate(t) = rate + slope * t, starting at t0 = 0


@dataclass(frozen=True, slots=True)
class Load:
    rate: float | None = None  # constant rate; exactly one of rate, steps, ramp is set
    steps: tuple[Step, ...] = ()  # after the last step its rate continues
    ramp: Ramp | None = None  # after the ramp its end rate continues
    duration: float = 0.0  # from the first arrival until unregistering starts
    max_in_flight: int = 1000
    unregister: bool = True
    unregister_timeout: float = 10.0
    interval: float = 1.0

    @property
    def shape(self) -> LoadShape:
        if self.steps:
            return LoadShape.STEPS
        return LoadShape.RAMP if self.ramp is not None else LoadShape.CONSTANT

    def rate_at(self, t: float) -> float:
        """The intended arrival rate (per second) at ``t`` seconds from the start."""
        t = max(t, 0.0)
        if self.ramp is not None:
            r = self.ramp
            return r.start_rate + (r.end_rate - r.start_rate) * t / r.duration if t < r.duration else r.end_rate
        if self.steps:
            end = Fraction(0)
            for step in self.steps:
                end += Fraction(step.duration)
                if t < end:
                    return step.rate
            return self.steps[-1].rate
        assert self.rate is not None
        return self.rate

    def _segments(self) -> list[_Segment]:
        inf = math.inf
        if self.ramp is not None:
            r = self.ramp
            slope = (r.end_rate - r.start_rate) / r.duration
            c1 = (Fraction(r.start_rate) + Fraction(r.end_rate)) * Fraction(r.duration) / 2
            return [
                _Segment(0.0, r.duration, 0.0, math.ceil(c1), r.start_rate, slope),
                _Segment(r.duration, inf, float(c1), inf, r.end_rate, 0.0),
            ]
        if not self.steps:
            assert self.rate is not None
            return [_Segment(0.0, inf, 0.0, inf, self.rate, 0.0)]
        segments, t0, c0 = [], Fraction(0), Fraction(0)
        for i, step in enumerate(self.steps):
            last = i == len(self.steps) - 1
            t1, c1 = t0 + Fraction(step.duration), c0 + Fraction(step.rate) * Fraction(step.duration)
            segments.append(
                _Segment(
                    float(t0), inf if last else float(t1), float(c0), inf if last else math.ceil(c1), step.rate, 0.0
                )
            )
            t0, c0 = t1, c1
        return [s for s in segments if s.rate > 0 or s.slope != 0]

    @staticmethod
    def _time(seg: _Segment, k: int) -> float:
        if seg.slope != 0:  # the ramp, from t = 0: solve rate*t + slope*t^2/2 = k (stable form)
            t = 0.0 if k == 0 else 2 * k / (seg.rate + math.sqrt(max(seg.rate**2 + 2 * seg.slope * k, 0.0)))
        else:
            t = seg.t0 + (k - seg.c0) / seg.rate
        return min(max(t, seg.t0), seg.t1)

    def arrival_times(self, count: int) -> Iterator[float]:
        """Intended start times (seconds from the run start) of the first ``count`` registrations."""
        segments, index, previous = self._segments(), 0, 0.0
        for k in range(count):
            while k >= segments[index].k_end:
                index += 1
            previous = max(previous, self._time(segments[index], k))
            yield previous

    def arrival_time(self, k: int) -> float:
        """The intended start time of the k-th registration (0-based)."""
        seg = next(s for s in self._segments() if k < s.k_end)
        return self._time(seg, k)


@dataclass(frozen=True, slots=True)
class TimerConfig:
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    max_retries: int = 3  # retries after a timeout / 503 before giving up on an endpoint
    retry_backoff: float = 1.0  # first backoff, doubling ...
    retry_backoff_max: float = 30.0  # ... capped here


@dataclass(frozen=True, slots=True)
class Delay:
    distribution: DelayDistribution = DelayDistribution.FIXED
    value: float = 0.0  # fixed
    low: float = 0.0  # uniform
    high: float = 0.0
    mean: float = 0.0  # exponential

    def sample(self, rng: random.Random) -> float:
        if self.distribution is DelayDistribution.UNIFORM:
            return rng.uniform(self.low, self.high)
        if self.distribution is DelayDistribution.EXPONENTIAL:
            return rng.expovariate(1 / self.mean) if self.mean > 0 else 0.0
        return self.value


@dataclass(frozen=True, slots=True)
class RegistrarConfig:
    listen_host: str = "127.0.0.1"
    listen_port: int = 0  # 0 = any free port
    realm: str = "sipload.test"
    password: str = "pw-{user}"  # template; {user} is the digest username
    users_csv: Path | None = None
    users: Mapping[str, str] | None = None  # from users_csv: user -> password
    algorithms: tuple[str, ...] = ("MD5",)
    default_expires: int = 3600
    min_expires: int = 1
    max_expires: int = 7200
    nonce_lifetime: float = 300.0
    drop: float = 0.0  # share of requests dropped
    delay: Delay = Delay()
    error_503: float = 0.0  # share answered 503
    retry_after: int = 5

    def password_for(self, user: str) -> str | None:
        """The password of a digest username, None for a user not in users_csv."""
        if self.users is not None:
            return self.users.get(user)
        return self.password.format(user=user)


@dataclass(frozen=True, slots=True)
class Scenario:
    path: Path
    name: str
    description: str
    seed: int | None  # None: not reproducible (Call-IDs differ between runs)
    target: Target
    endpoints: Endpoints
    load: Load
    timers: TimerConfig
    registrar: RegistrarConfig | None  # None unless target.registrar = "embedded"
    thresholds: tuple[Threshold, ...]
    document: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)  # the TOML as read
    crosscheck: CrossCheck | None = None

    def with_overrides(
        self,
        *,
        target: str | None = None,
        endpoints: int | None = None,
        rate: float | None = None,
        duration: float | None = None,
    ) -> Scenario:
        """The scenario with command-line overrides applied and validated again.

        ``target`` replaces the registrar ("embedded" or a URI; the transport then comes from the URI,
        target.domain and outbound_proxy are kept); ``rate`` replaces the load shape with a constant rate.
        """
        doc: dict[str, Any] = copy.deepcopy(dict(self.document))
        flags: dict[str, str] = {}
        notes: list[str] = []

        def section(name: str) -> dict[str, Any]:
            value = doc.setdefault(name, {})
            return value if isinstance(value, dict) else {}

        if target is not None:
            if not isinstance(target, str):
                raise ScenarioError(f"--target: must be 'embedded' or a SIP URI, got {_show(target)}")
            old = section("target")
            new: dict[str, Any] = {"registrar": target}
            new.update({k: old[k] for k in ("domain", "outbound_proxy") if k in old})
            if target != "embedded":
                try:
                    uri = parse_sip_uri(target)
                except ValueError as exc:
                    raise ScenarioError(f"--target: {exc}, got {target!r}") from None
                doc.pop("registrar", None)
                if uri.transport is Transport.TLS:
                    new.update({k: v for k, v in old.items() if k.startswith("tls_")})
            doc["target"] = new
            flags["target.registrar"] = "--target"
            notes.append(f"--target {target}")
        if endpoints is not None:
            if isinstance(endpoints, bool) or not isinstance(endpoints, int) or endpoints < 1:
                raise ScenarioError(f"--endpoints: must be a positive integer, got {_show(endpoints)}")
            section("endpoints")["count"] = endpoints
            flags["endpoints.count"] = "--endpoints"
            notes.append(f"--endpoints {endpoints}")
        if rate is not None:
            if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate < math.inf:
                raise ScenarioError(f"--rate: must be > 0, got {_show(rate)}")
            load = section("load")
            for key in ("steps", "ramp"):
                load.pop(key, None)
            load["rate"] = rate
            flags["load.rate"] = "--rate"
            notes.append(f"--rate {rate:g}")
        if duration is not None:
            if isinstance(duration, bool) or not isinstance(duration, int | float) or not 0 < duration < math.inf:
                raise ScenarioError(f"--duration: must be > 0, got {_show(duration)}")
            section("load")["duration"] = duration
            flags["load.duration"] = "--duration"
            notes.append(f"--duration {format_duration(duration)}")
        note = f" (with {', '.join(notes)})" if notes else ""
        return _build(doc, self.path, _Ctx(str(self.path), self.path.parent, flags, note))


# ---------------------------------------------------------------------------------------- reading helpers


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


@dataclass(frozen=True, slots=True)
class _Ctx:
    file: str
    base: Path  # relative paths in the scenario are relative to this directory
    flags: Mapping[str, str]  # field -> the command-line flag that set it
    note: str  # appended to other messages when overrides are in effect

    def error(self, where: str, message: str) -> ScenarioError:
        flag = self.flags.get(where)
        if flag is not None:
            return ScenarioError(f"{flag}: {message}")
        return ScenarioError(f"{self.file}: {where + ': ' if where else ''}{message}{self.note}")


class _Missing:
    pass


_MISSING = _Missing()


class _Table:
    """One TOML table: unknown keys rejected on construction, typed getters with defaults."""

    def __init__(self, ctx: _Ctx, prefix: str, data: object, known: Sequence[str]) -> None:
        if not isinstance(data, dict):
            raise ctx.error(prefix, f"must be a table, got {_show(data)}")
        for key in data:
            if key not in known:
                hint = ""
                if prefix and "." not in prefix and key in _TOP_KEYS:
                    hint = f"; top-level keys such as {key!r} must come before the first [section]"
                raise ctx.error(prefix, f"unknown key {key!r} (known: {', '.join(known)}){hint}")
        self.ctx, self.prefix, self.data = ctx, prefix, data

    def name(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def given(self, key: str) -> bool:
        return key in self.data

    def fail(self, key: str, message: str, value: object = _MISSING) -> ScenarioError:
        shown = _show(self.data.get(key) if value is _MISSING else value)
        return self.ctx.error(self.name(key), f"{message}, got {shown}")

    def _get(self, key: str, default: object) -> object:
        value = self.data.get(key, default)
        if value is _MISSING:
            raise self.ctx.error(self.name(key), "required")
        return value

    def text(
        self, key: str, default: str | _Missing = _MISSING, *, nonempty: bool = False, multiline: bool = False
    ) -> str:
        value = self._get(key, default)
        if not isinstance(value, str) or (nonempty and not value):
            raise self.fail(key, "must be a non-empty string" if nonempty else "must be a string")
        if not multiline and any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise self.fail(key, "must not contain control characters")
        return value

    def integer(self, key: str, default: int | _Missing = _MISSING, *, minimum: int | None = None) -> int:
        value = self._get(key, default)
        ok = isinstance(value, int) and not isinstance(value, bool) and (minimum is None or value >= minimum)
        if not ok:
            what = {None: "an integer", 0: "an integer >= 0", 1: "a positive integer"}.get(
                minimum, f"an integer >= {minimum}"
            )
            raise self.fail(key, f"must be {what}")
        assert isinstance(value, int)
        return value

    def number(
        self,
        key: str,
        default: float | _Missing = _MISSING,
        *,
        gt: float | None = None,
        ge: float | None = None,
        lt: float | None = None,
        le: float | None = None,
    ) -> float:
        value = self._get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not -1e300 < value < 1e300
            or (gt is not None and not value > gt)
            or (ge is not None and not value >= ge)
            or (lt is not None and not value < lt)
            or (le is not None and not value <= le)
        ):
            bounds = [f"{op} {b:g}" for op, b in ((">", gt), (">=", ge), ("<", lt), ("<=", le)) if b is not None]
            raise self.fail(key, "must be a number" + (" " + " and ".join(bounds) if bounds else ""))
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, "must be true or false")
        return value

    def duration(self, key: str, default: float | _Missing = _MISSING, *, positive: bool = False) -> float:
        value = self._get(key, default)
        try:
            seconds = parse_duration(value)
        except DurationError:
            raise self.fail(key, f"must be {DURATION_HINT}" + (" > 0" if positive else "")) from None
        if positive and seconds == 0:
            raise self.fail(key, "must be a duration > 0")
        return seconds

    def choice(self, key: str, default: str, choices: Sequence[str]) -> str:
        value = self._get(key, default)
        if value not in choices:
            raise self.fail(key, f"must be one of {', '.join(repr(c) for c in choices)}")
        assert isinstance(value, str)
        return value

    def algorithms(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self._get(key, list(default))
        canonical = {a.upper(): a for a in DIGEST_ALGORITHMS}
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(v, str) and v.upper() in canonical for v in value)
        ):
            raise self.fail(key, f"must be a non-empty list of {', '.join(repr(a) for a in DIGEST_ALGORITHMS)}")
        result = tuple(canonical[v.upper()] for v in value)
        if len(set(result)) != len(result):
            raise self.fail(key, "must not repeat an algorithm")
        return result

    def path(self, key: str) -> Path | None:
        if key not in self.data:
            return None
        value = self.text(key, nonempty=True)
        path = self.ctx.base / value
        try:
            found = path.is_file()
        except (OSError, ValueError):
            found = False
        if not found:
            raise self.ctx.error(self.name(key), f"file not found: {str(path)!r}")
        return path

    def table(self, key: str, known: Sequence[str]) -> _Table:
        return _Table(self.ctx, self.name(key), self.data.get(key, {}), known)


# --------------------------------------------------------------------------------------------- sections

_TOP_KEYS = tuple("name description seed target endpoints load timers registrar thresholds crosscheck".split())
_TARGET_KEYS = tuple("registrar domain transport outbound_proxy tls_verify tls_ca tls_cert tls_key".split())
_ENDPOINT_KEYS = tuple(
    "count first username password auth_user csv csv_fields expires refresh_at "
    "refresh_jitter refresh_margin user_agent socket source_addresses digest_preference".split()
)
_LOAD_KEYS = tuple("rate steps ramp max_in_flight duration unregister unregister_timeout interval".split())
_TIMER_KEYS = ("t1", "t2", "t4", "max_retries", "retry_backoff", "retry_backoff_max")
_REGISTRAR_KEYS = tuple(
    "listen realm password users_csv algorithms default_expires min_expires max_expires "
    "nonce_lifetime drop delay error_503 retry_after".split()
)
_SIP_USER = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+", re.ASCII)
_DOMAIN_HINT = "must be a host name or IP address, optionally with :port"


def _domain(t: _Table, default: str) -> str:
    domain = t.text("domain", default, nonempty=True)
    try:
        host, port = _split_hostport(domain)
        _check_host(host)
        if port is not None:
            _check_port(port)
    except ValueError:
        raise t.fail("domain", _DOMAIN_HINT) from None
    return domain


def _target(ctx: _Ctx, data: object) -> Target:
    t = _Table(ctx, "target", data, _TARGET_KEYS)
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


def _render(t: _Table, key: str, template: str, **fields: object) -> str:
    try:
        return template.format(**fields)
    except KeyError as exc:
        reason = f"unknown field {{{exc.args[0]}}} (fields: {', '.join('{' + f + '}' for f in fields)})"
    except (IndexError, ValueError, AttributeError, TypeError) as exc:
        reason = str(exc)
    raise t.fail(key, f"template cannot be rendered: {reason}")


def _check_user(t: _Table, key: str, username: str, where: str) -> None:
    if not _SIP_USER.fullmatch(username):
        raise t.fail(key, f"{where}gives the username {username!r}, which is not a valid SIP user part")


def _read_lines(t: _Table, key: str, path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise t.ctx.error(t.name(key), f"{str(path)!r} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise t.ctx.error(t.name(key), f"cannot read {str(path)!r}: {exc.strerror}") from None


def _csv_rows(t: _Table, path: Path, fields: tuple[str, ...]) -> tuple[CsvMode, list[Credential]]:
    lines = _read_lines(t, "csv", path)
    header = lines[0].strip() if lines else ""
    mode_text, _, options = header.partition(",")
    if mode_text.strip().upper() not in CsvMode.__members__ or options.strip():
        raise t.ctx.error(
            "endpoints.csv",
            f"{path}:1: the first line must be SEQUENTIAL, RANDOM or USER (no options), got {header!r}",
        )
    rows: list[Credential] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip() or line.lstrip().startswith("//"):
            continue
        values = line.split(";")
        if len(values) > 1 and values[-1] == "":
            values.pop()  # SIPp style: every field ends with ';'
        if len(values) < len(fields):
            raise t.ctx.error(
                "endpoints.csv",
                f"{path}:{number}: {len(values)} field(s), expected {len(fields)} ({', '.join(fields)}): {line!r}",
            )
        row = dict(zip(fields, values, strict=False))
        if not _SIP_USER.fullmatch(row["username"]):
            raise t.ctx.error("endpoints.csv", f"{path}:{number}: invalid username {row['username']!r}")
        rows.append(Credential(row["username"], row["password"], row.get("auth_user") or row["username"]))
    if not rows:
        raise t.ctx.error("endpoints.csv", f"{path}: no users after the first line")
    return CsvMode(mode_text.strip().upper()), rows


def _address_range(t: _Table) -> AddressRange | None:
    if not t.given("source_addresses"):
        return None
    text = t.text("source_addresses")
    try:
        first_text, sep, last_text = text.partition("-")
        first = ipaddress.ip_address(first_text.strip())
        last = ipaddress.ip_address(last_text.strip()) if sep else first
    except ValueError:
        raise t.fail("source_addresses", "must be an IP address or a range such as '127.0.0.2-127.0.0.250'") from None
    if first.version != last.version or int(last) < int(first):
        raise t.fail("source_addresses", "the range must go from a lower to a higher address of the same family")
    return AddressRange(first, last)


def _endpoints(ctx: _Ctx, data: object, seed: int | None) -> Endpoints:
    t = _Table(ctx, "endpoints", data, _ENDPOINT_KEYS)
    csv = t.path("csv")
    csv_mode: CsvMode | None = None
    rows: list[Credential] = []
    order: tuple[int, ...] = ()
    if csv is not None:
        for key in ("first", "username", "password", "auth_user"):
            if t.given(key):
                raise t.fail(key, "not allowed with endpoints.csv (the CSV gives the users)")
        raw_fields = t.data.get("csv_fields", ["username", "password"])
        known = ("username", "password", "auth_user", "_")
        if not isinstance(raw_fields, list) or not all(isinstance(f, str) and f in known for f in raw_fields):
            raise t.fail("csv_fields", f"must be a list of {', '.join(map(repr, known))} ('_' skips a column)")
        fields = tuple(raw_fields)
        if any(fields.count(f) != 1 for f in ("username", "password")) or fields.count("auth_user") > 1:
            raise t.fail("csv_fields", "must name username and password once (and auth_user at most once)")
        csv_mode, rows = _csv_rows(t, csv, fields)
        count = t.integer("count", len(rows), minimum=1)
        if count > len(rows):
            raise t.fail("count", f"must not exceed the {len(rows)} user(s) in {str(csv)!r}")
        if csv_mode is CsvMode.RANDOM:
            shuffled = list(range(len(rows)))
            random.Random(0 if seed is None else seed).shuffle(shuffled)
            order = tuple(shuffled)
        first, username, password, auth_user = 1, "", "", ""
    else:
        if t.given("csv_fields"):
            raise t.fail("csv_fields", "only allowed with endpoints.csv")
        count = t.integer("count", minimum=1)
        first = t.integer("first", 1, minimum=0)
        username = t.text("username", "user{n}", nonempty=True)
        password = t.text("password", "pw-{username}")
        auth_user = t.text("auth_user", "{username}", nonempty=True)
        for n, where in ((first, "the first endpoint "), (first + count - 1, "the last endpoint ")):
            name = _render(t, "username", username, n=n)
            _check_user(t, "username", name, f"{where}(n={n}) ")
            _render(t, "password", password, n=n, username=name)
            auth = _render(t, "auth_user", auth_user, n=n, username=name)
            if any(c in auth for c in '"\\'):
                raise t.fail("auth_user", f"gives {auth!r}: a digest username cannot contain '\"' or '\\'")
        if count > 1 and _render(t, "username", username, n=first) == _render(t, "username", username, n=first + 1):
            raise t.fail("username", "must use {n} so that every endpoint has its own username")
    refresh_at = t.number("refresh_at", 0.5, gt=0, lt=1)
    jitter = t.number("refresh_jitter", 0.05, ge=0, lt=1)
    if not (0 < refresh_at - jitter and refresh_at + jitter < 1):
        raise t.fail("refresh_jitter", f"must keep refresh_at ({refresh_at:g}) +- jitter between 0 and 1", jitter)
    prefs = t.algorithms("digest_preference", DIGEST_ALGORITHMS) if t.given("digest_preference") else None
    return Endpoints(
        count=count,
        first=first,
        username=username,
        password=password,
        auth_user=auth_user,
        csv=csv,
        csv_mode=csv_mode,
        csv_rows=tuple(rows),
        csv_order=order,
        expires=t.integer("expires", 3600, minimum=0),
        refresh_at=refresh_at,
        refresh_jitter=jitter,
        refresh_margin=t.duration("refresh_margin", 2.0),
        user_agent=t.text("user_agent", "sipload/0.1"),
        socket=SocketMode(t.choice("socket", "shared", [m.value for m in SocketMode])),
        source_addresses=_address_range(t),
        digest_preference=prefs,
    )


def _load(ctx: _Ctx, data: object, count: int) -> Load:
    t = _Table(ctx, "load", data, _LOAD_KEYS)
    shapes = [k for k in ("rate", "steps", "ramp") if t.given(k)]
    if len(shapes) != 1:
        raise ctx.error(
            "load",
            "one of rate, steps or ramp is required"
            if not shapes
            else f"give only one of rate, steps or ramp, got {' and '.join(shapes)}",
        )
    rate: float | None = None
    steps: tuple[Step, ...] = ()
    ramp: Ramp | None = None
    if shapes == ["rate"]:
        rate = t.number("rate", gt=0)
    elif shapes == ["steps"]:
        raw = t.data["steps"]
        if not isinstance(raw, list) or not raw:
            raise t.fail("steps", "must be a non-empty list of { rate = ..., duration = ... }")
        tables = [_Table(ctx, f"load.steps[{i}]", s, ("rate", "duration")) for i, s in enumerate(raw)]
        steps = tuple(Step(s.number("rate", ge=0), s.duration("duration", positive=True)) for s in tables)
        if steps[-1].rate == 0:
            raise tables[-1].fail("rate", "the last step must have a rate > 0 (it continues after its duration)")
    else:
        r = t.table("ramp", ("from", "to", "duration"))
        ramp = Ramp(r.number("from", ge=0), r.number("to", gt=0), r.duration("duration", positive=True))
    load = Load(
        rate=rate,
        steps=steps,
        ramp=ramp,
        max_in_flight=t.integer("max_in_flight", 1000, minimum=1),
        unregister=t.boolean("unregister", True),
        unregister_timeout=t.duration("unregister_timeout", 10.0, positive=True),
        interval=t.duration("interval", 1.0, positive=True),
    )
    needed = load.arrival_time(count - 1)
    if not needed < 1e300:
        raise ctx.error("load", f"the rate is too low: {count} endpoints would never all arrive")
    duration = t.duration("duration", needed)
    if duration < needed:
        how = {LoadShape.STEPS: "with the load steps", LoadShape.RAMP: "on the load ramp"}.get(
            load.shape, f"at {load.rate_at(0):g}/s"
        )
        raise ctx.error(
            "load.duration",
            f"{format_duration(duration)} is shorter than the {format_duration(needed)} "
            f"that {count} endpoints need to arrive {how}",
        )
    return Load(
        rate,
        steps,
        ramp,
        duration,
        load.max_in_flight,
        load.unregister,
        load.unregister_timeout,
        load.interval,
    )


def _timers(ctx: _Ctx, data: object) -> TimerConfig:
    t = _Table(ctx, "timers", data, _TIMER_KEYS)
    timers = TimerConfig(
        t.duration("t1", 0.5, positive=True),
        t.duration("t2", 4.0, positive=True),
        t.duration("t4", 5.0, positive=True),
        t.integer("max_retries", 3, minimum=0),
        t.duration("retry_backoff", 1.0),
        t.duration("retry_backoff_max", 30.0),
    )
    if timers.t2 < timers.t1:
        raise t.fail("t2", f"must not be shorter than timers.t1 ({format_duration(timers.t1)})")
    if timers.retry_backoff_max < timers.retry_backoff:
        raise t.fail(
            "retry_backoff_max",
            f"must not be shorter than timers.retry_backoff ({format_duration(timers.retry_backoff)})",
        )
    return timers


def _delay(t: _Table) -> Delay:
    value = t.data.get("delay", 0)
    if not isinstance(value, dict):
        return Delay(value=t.duration("delay", 0.0))
    kinds = ("uniform", "exponential")
    kind = value.get("distribution")
    if kind not in kinds:
        raise t.ctx.error(
            "registrar.delay.distribution", f"must be one of {', '.join(map(repr, kinds))}, got {_show(kind)}"
        )
    if kind == "uniform":
        d = t.table("delay", ("distribution", "min", "max"))
        low, high = d.duration("min"), d.duration("max")
        if high < low:
            raise d.fail("max", f"must not be less than registrar.delay.min ({format_duration(low)})")
        return Delay(DelayDistribution.UNIFORM, low=low, high=high)
    d = t.table("delay", ("distribution", "mean"))
    return Delay(DelayDistribution.EXPONENTIAL, mean=d.duration("mean"))


def _users_csv(t: _Table, path: Path) -> Mapping[str, str]:
    users: dict[str, str] = {}
    for number, line in enumerate(_read_lines(t, "users_csv", path), start=1):
        if not line.strip() or line.lstrip().startswith(("//", "#")) or line.strip().upper() in CsvMode.__members__:
            continue
        user, sep, rest = line.partition(";")
        if not sep or not user:
            raise t.ctx.error("registrar.users_csv", f"{path}:{number}: expected user;password, got {line!r}")
        users[user] = rest.split(";")[0]
    if not users:
        raise t.ctx.error("registrar.users_csv", f"{path}: no users")
    return MappingProxyType(users)


def _registrar(ctx: _Ctx, data: object, target: Target) -> RegistrarConfig | None:
    if not target.embedded:
        if data is not _MISSING:
            raise ctx.error(
                "registrar", f"only allowed when target.registrar is 'embedded' (it is {target.registrar!r})"
            )
        return None
    t = _Table(ctx, "registrar", {} if data is _MISSING else data, _REGISTRAR_KEYS)
    listen = t.text("listen", "127.0.0.1:0")
    try:
        host, port = _split_hostport(listen)
        host = _check_host(host)
        if port is None:
            raise ValueError(listen)
        port_number = _check_port(port, allow_zero=True)
    except ValueError:
        raise t.fail("listen", "must be host:port such as '127.0.0.1:0' (port 0 = any free port)") from None
    users_csv = t.path("users_csv")
    if users_csv is not None and t.given("password"):
        raise t.fail("password", "not allowed with registrar.users_csv")
    password = t.text("password", "pw-{user}")
    _render(t, "password", password, user="user1")
    realm = t.text("realm", target.domain, nonempty=True)
    if '"' in realm or "\\" in realm:
        raise t.fail("realm", "must not contain '\"' or '\\'")
    min_expires, max_expires = (
        t.integer("min_expires", 1, minimum=0),
        t.integer("max_expires", 7200, minimum=0),
    )
    if max_expires < min_expires:
        raise t.fail("max_expires", f"must not be less than registrar.min_expires ({min_expires})")
    default_expires = t.integer("default_expires", min(max(3600, min_expires), max_expires), minimum=0)
    if not min_expires <= default_expires <= max_expires:
        raise t.fail(
            "default_expires",
            f"must be between registrar.min_expires ({min_expires}) and registrar.max_expires ({max_expires})",
        )
    return RegistrarConfig(
        listen_host=host,
        listen_port=port_number,
        realm=realm,
        password=password,
        users_csv=users_csv,
        users=None if users_csv is None else _users_csv(t, users_csv),
        algorithms=t.algorithms("algorithms", ("MD5",)),
        default_expires=default_expires,
        min_expires=min_expires,
        max_expires=max_expires,
        nonce_lifetime=t.duration("nonce_lifetime", 300.0, positive=True),
        drop=t.number("drop", 0.0, ge=0, le=1),
        delay=_delay(t),
        error_503=t.number("error_503", 0.0, ge=0, le=1),
        retry_after=t.integer("retry_after", 5, minimum=0),
    )


def _thresholds(ctx: _Ctx, data: object) -> tuple[Threshold, ...]:
    if not isinstance(data, list):
        raise ctx.error("thresholds", f"must be a list of strings such as 'register.p99 < 200ms', got {_show(data)}")
    result = []
    for i, expr in enumerate(data):
        if not isinstance(expr, str):
            raise ctx.error(f"thresholds[{i}]", f"must be a string such as 'register.p99 < 200ms', got {_show(expr)}")
        try:
            result.append(parse_threshold(expr))
        except ThresholdError as exc:
            raise ctx.error(f"thresholds[{i}]", str(exc)) from None
    return tuple(result)


def _build(document: Mapping[str, Any], path: Path, ctx: _Ctx) -> Scenario:
    top = _Table(ctx, "", document, _TOP_KEYS)
    seed = top.integer("seed") if top.given("seed") else None
    target = _target(ctx, document.get("target", {}))
    endpoints = _endpoints(ctx, document.get("endpoints", {}), seed)
    return Scenario(
        path=path,
        name=top.text("name", path.stem, nonempty=True),
        description=top.text("description", "", multiline=True),
        seed=seed,
        target=target,
        endpoints=endpoints,
        load=_load(ctx, document.get("load", {}), endpoints.count),
        timers=_timers(ctx, document.get("timers", {})),
        registrar=_registrar(ctx, document.get("registrar", _MISSING), target),
        thresholds=_thresholds(ctx, document.get("thresholds", [])),
        document=document,
        crosscheck=_crosscheck(ctx, document.get("crosscheck", _MISSING)),
    )


@dataclass(frozen=True, slots=True)
class CrossCheck:
    """`[crosscheck]`: ask a provider about every endpoint, after the run or while it holds."""

    config: CrossCheckConfig
    when: str = "after"          # "after": final states; "holding": at the end of the hold, before unregistering


def _crosscheck(ctx: _Ctx, data: object) -> CrossCheck | None:
    if data is _MISSING:
        return None
    if not isinstance(data, Mapping):
        raise ctx.error("crosscheck", f"must be a table, got {_show(data)}")
    table = dict(data)
    when = table.pop("when", "after")
    if when not in ("after", "holding"):
        raise ctx.error("crosscheck.when", f"must be 'after' or 'holding', got {_show(when)}")
    try:
        config = config_from_mapping(table, where="crosscheck")
    except ValueError as exc:
        raise ScenarioError(f"{ctx.file}: {exc}{ctx.note}") from None
    return CrossCheck(config, str(when))


# ---------------------------------------------------------------------------------------------- loading


def parse_scenario(text: str, path: str | Path = "<scenario>") -> Scenario:
    """A scenario from TOML text; ``path`` names it in messages and anchors relative paths."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", message, re.DOTALL)
        where = f" at line {match.group(2)}, column {match.group(3)}" if match else ""
        reason = match.group(1) if match else message.replace(" (at end of document)", "")
        raise ScenarioError(f"{path}: invalid TOML{where}: {reason}") from None
    p = Path(path)
    return _build(document, p, _Ctx(str(path), p.parent, {}, ""))


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; every problem is a ScenarioError naming the file and field."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ScenarioError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ScenarioError(f"{path}: is a directory, not a scenario file") from None
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return parse_scenario(text, p)
