"""`[endpoints]`: how many simulated endpoints, their credentials, refresh policy and source addresses.

Credentials come either from python-format templates (``user{n}``, ``pw-{username}``), checked by rendering
the first and the last endpoint's, or from a SIPp injection CSV file (first line SEQUENTIAL, RANDOM or
USER; ``csv_fields`` names the columns). RANDOM is a permutation of the rows seeded by the scenario's seed,
so a run with a seed is reproducible. `Endpoints.credentials(i)` gives the i-th endpoint's; CSV rows wrap.
"""

from __future__ import annotations

import enum
import ipaddress
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from sipload.scenario.reader import DIGEST_ALGORITHMS, Ctx, Table, read_lines, render


class SocketMode(enum.StrEnum):
    SHARED = "shared"  # one socket per worker, demultiplexed
    PER_ENDPOINT = "per-endpoint"  # one socket (source port) per endpoint


class CsvMode(enum.StrEnum):
    SEQUENTIAL = "SEQUENTIAL"
    RANDOM = "RANDOM"
    USER = "USER"


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Credential:
    username: str
    password: str = field(repr=False)  # never in a repr
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
    password: str = field(default="pw-{username}", repr=False)
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
    advertised_address: str | None = None  # written in Via sent-by and Contact instead of the bound address
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


ENDPOINT_KEYS = tuple(
    "count first username password auth_user csv csv_fields expires refresh_at "
    "refresh_jitter refresh_margin user_agent socket source_addresses advertised_address digest_preference".split()
)
_SIP_USER = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+", re.ASCII)


def _check_user(t: Table, key: str, username: str, where: str) -> None:
    if not _SIP_USER.fullmatch(username):
        raise t.fail(key, f"{where}gives the username {username!r}, which is not a valid SIP user part")


def _csv_rows(t: Table, path: Path, fields: tuple[str, ...]) -> tuple[CsvMode, list[Credential]]:
    lines = read_lines(t, "csv", path)
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
                f"{path}:{number}: {len(values)} field(s), expected {len(fields)} ({', '.join(fields)})",
            )
        row = dict(zip(fields, values, strict=False))
        if not _SIP_USER.fullmatch(row["username"]):
            raise t.ctx.error("endpoints.csv", f"{path}:{number}: invalid username {row['username']!r}")
        rows.append(Credential(row["username"], row["password"], row.get("auth_user") or row["username"]))
    if not rows:
        raise t.ctx.error("endpoints.csv", f"{path}: no users after the first line")
    return CsvMode(mode_text.strip().upper()), rows


def check_templates(t: Table, first: int, count: int, username: str, password: str, auth_user: str) -> None:
    """Render the first and the last endpoint's credentials; errors name the template's field."""
    for n, where in ((first, "the first endpoint "), (first + count - 1, "the last endpoint ")):
        name = render(t, "username", username, n=n)
        _check_user(t, "username", name, f"{where}(n={n}) ")
        render(t, "password", password, n=n, username=name)
        auth = render(t, "auth_user", auth_user, n=n, username=name)
        if any(c in auth for c in '"\\'):
            raise t.fail("auth_user", f"gives {auth!r}: a digest username cannot contain '\"' or '\\'")
    if count > 1 and render(t, "username", username, n=first) == render(t, "username", username, n=first + 1):
        raise t.fail("username", "must use {n} so that every endpoint has its own username")


def check_refresh(t: Table, refresh_at: float, jitter: float) -> None:
    if not (0 < refresh_at - jitter and refresh_at + jitter < 1):
        raise t.fail("refresh_jitter", f"must keep refresh_at ({refresh_at:g}) +- jitter between 0 and 1", jitter)


def address_range(t: Table) -> AddressRange | None:
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


_HOSTNAME = re.compile(r"(?=.{1,253}$)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
                       r"[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?", re.ASCII)


def advertised_address(t: Table) -> str | None:
    """An IP address or a host name (no port: each socket's own port is written beside it)."""
    if not t.given("advertised_address"):
        return None
    text = t.text("advertised_address").strip()
    try:
        return str(ipaddress.ip_address(text.strip("[]") if text.startswith("[") else text))
    except ValueError:
        pass
    if not _HOSTNAME.fullmatch(text):
        raise t.fail("advertised_address", "must be an IP address or a host name, such as '203.0.113.7' "
                     "(no port: each socket's own port is written beside it)")
    return text


def read_endpoints(ctx: Ctx, data: object, seed: int | None) -> Endpoints:
    t = Table(ctx, "endpoints", data, ENDPOINT_KEYS)
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
        check_templates(t, first, count, username, password, auth_user)
    refresh_at = t.number("refresh_at", 0.5, gt=0, lt=1)
    jitter = t.number("refresh_jitter", 0.05, ge=0, lt=1)
    check_refresh(t, refresh_at, jitter)
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
        source_addresses=address_range(t),
        advertised_address=advertised_address(t),
        digest_preference=prefs,
    )
