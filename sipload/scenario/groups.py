"""`[[groups]]`: a fleet of device groups, each with its share, transport, per-device settings and behaviours.

Without `[[groups]]` a scenario has one implicit group, "default", made of `[endpoints]` and the target's
transport, and behaves exactly as before. With groups, each `[[groups]]` table has a ``name``, a ``share``
(fractions summing to 1) or an explicit ``count`` (summing to ``endpoints.count``), any of the per-device
keys of `[endpoints]` overriding it for the group, and behaviour keys:

* ``wrong_passwords = 0.05``: that share of the group's devices sends a wrong password;
* ``churn = { share = 0.2, every = "60s", away = "30s" }``: devices vanish without unregistering about once
  per ``every`` during the hold and come back ``away`` later with a fresh registration;
* ``flap = { share = 0.1, period = "10s" }``: devices unregister every ``period`` and register again half a
  period later;
* ``avalanche = ["30s"]``: at each time (from the run start) every device of the group re-registers at once;
* ``keepalive`` (duration, 0 = off: RFC 5626 OPTIONS pings per UDP device, CRLF pings per TCP/TLS connection,
  ping frames per WS connection), ``outbound`` (RFC 5626 +sip.instance and reg-id) and ``gruu`` (RFC 5627).

Shares are rounded by largest remainder, so the counts add up to ``endpoints.count`` exactly. `plan_fleet`
is the one place that decides which endpoint belongs to which group and which behaviour a device has: a
pure function of the scenario (its groups, count and seed), so every worker process agrees on it.
Groups are interleaved by a smooth weighted round-robin (a mixed fleet arrives mixed), and within a group
the behaviours are given to a seeded random choice of devices, at most one behaviour per device.
"""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from sipload.durations import DURATION_HINT, DurationError, parse_duration
from sipload.scenario.endpoints import (
    Endpoints,
    SocketMode,
    address_range,
    advertised_address,
    check_refresh,
    check_templates,
)
from sipload.scenario.reader import DIGEST_ALGORITHMS, MISSING, Ctx, Table, show
from sipload.scenario.target import EMBEDDED_TRANSPORTS, Target, Transport

if TYPE_CHECKING:
    from collections.abc import Sequence


DEVICE_KEYS = tuple(
    "transport expires refresh_at refresh_jitter refresh_margin user_agent username password auth_user "
    "socket source_addresses advertised_address digest_preference".split()
)
BEHAVIOUR_KEYS = ("wrong_passwords", "churn", "flap", "avalanche", "keepalive", "outbound", "gruu")
GROUP_KEYS = ("name", "share", "count", *DEVICE_KEYS, *BEHAVIOUR_KEYS)
DEFAULT_GROUP = "default"


@dataclass(frozen=True, slots=True)
class Churn:
    share: float      # of the group's devices
    every: float      # seconds: about once per this a churning device vanishes
    away: float       # seconds it stays away before registering afresh


@dataclass(frozen=True, slots=True)
class Flap:
    share: float
    period: float     # seconds between two unregistrations of a flapping device


class Role(enum.IntEnum):
    """The behaviour of one device (at most one)."""

    NORMAL = 0
    WRONG_PASSWORD = 1
    CHURN = 2
    FLAP = 3


@dataclass(frozen=True, slots=True)
class Group:
    name: str
    count: int                       # devices in the group
    endpoints: Endpoints             # [endpoints] with the group's overrides (count: the whole fleet's)
    transport: Transport
    own_sources: bool = False        # source_addresses given by the group (else [endpoints]' apply)
    wrong_passwords: float = 0.0
    churn: Churn | None = None
    flap: Flap | None = None
    avalanche: tuple[float, ...] = ()
    keepalive: float = 0.0           # seconds, 0 = off (RFC 5626 keep-alives)
    outbound: bool = False           # RFC 5626: +sip.instance, reg-id, Supported: outbound
    gruu: bool = False               # RFC 5627: +sip.instance, Supported: gruu


def default_group(endpoints: Endpoints, target: Target) -> Group:
    return Group(DEFAULT_GROUP, endpoints.count, endpoints, target.transport)


def largest_remainder(shares: Sequence[float], total: int) -> list[int]:
    """Integer counts proportional to ``shares`` (summing to 1) that add up to ``total`` exactly."""
    raw = [s * total for s in shares]
    counts = [math.floor(r) for r in raw]
    missing = total - sum(counts)
    order = sorted(range(len(shares)), key=lambda k: (-(raw[k] - counts[k]), k))
    for k in order[:max(0, missing)]:
        counts[k] += 1
    return counts


def _fraction(t: Table, key: str) -> float:
    return t.number(key, 0.0, ge=0, le=1)


def _behaviour_table(t: Table, key: str, known: tuple[str, ...]) -> Table | None:
    if not t.given(key):
        return None
    if not isinstance(t.data[key], dict):
        raise t.fail(key, "must be a table such as { " + ", ".join(f"{k} = ..." for k in known) + " }")
    return t.table(key, known)


def _read_group(ctx: Ctx, i: int, data: object, base: Endpoints, target: Target, seen: set[str]) -> tuple[
        Group, float | None, int | None]:
    t = Table(ctx, f"groups[{i}]", data, GROUP_KEYS)
    name = t.text("name", nonempty=True)
    if name in seen:
        raise t.fail("name", "must be unique among the groups")
    seen.add(name)
    if t.given("share") and t.given("count"):
        raise t.fail("count", "give share or count, not both")
    share = t.number("share", gt=0, le=1) if t.given("share") else None
    count = t.integer("count", minimum=0) if t.given("count") else None
    if share is None and count is None:
        raise ctx.error(f"groups[{i}]", "needs a share (a fraction of endpoints.count) or a count")
    transports = [m.value for m in Transport]
    transport = Transport(t.choice("transport", target.transport.value, transports))
    if target.embedded and transport.value not in EMBEDDED_TRANSPORTS:
        served = ", ".join(x for x in EMBEDDED_TRANSPORTS if x in transports)
        raise t.fail("transport", f"the embedded registrar serves {served} (tls needs a certificate: run "
                                  f"'sipload registrar' with one and name it as target.registrar)")
    changes: dict[str, object] = {}
    if t.given("expires"):
        changes["expires"] = t.integer("expires", minimum=0)
    refresh_at = t.number("refresh_at", base.refresh_at, gt=0, lt=1)
    jitter = t.number("refresh_jitter", base.refresh_jitter, ge=0, lt=1)
    check_refresh(t, refresh_at, jitter)
    changes.update(refresh_at=refresh_at, refresh_jitter=jitter)
    if t.given("refresh_margin"):
        changes["refresh_margin"] = t.duration("refresh_margin")
    if t.given("user_agent"):
        changes["user_agent"] = t.text("user_agent")
    templates = [k for k in ("username", "password", "auth_user") if t.given(k)]
    if templates:
        if base.csv is not None:
            raise t.fail(templates[0], "not allowed with endpoints.csv (the CSV gives the users)")
        username = t.text("username", base.username, nonempty=True)
        password = t.text("password", base.password)
        auth_user = t.text("auth_user", base.auth_user, nonempty=True)
        check_templates(t, base.first, base.count, username, password, auth_user)
        changes.update(username=username, password=password, auth_user=auth_user)
    if t.given("socket"):
        changes["socket"] = SocketMode(t.choice("socket", "shared", [m.value for m in SocketMode]))
    if t.given("source_addresses"):
        changes["source_addresses"] = address_range(t)
    if t.given("advertised_address"):
        changes["advertised_address"] = advertised_address(t)
    if t.given("digest_preference"):
        changes["digest_preference"] = t.algorithms("digest_preference", DIGEST_ALGORITHMS)
    wrong = _fraction(t, "wrong_passwords")
    churn: Churn | None = None
    c = _behaviour_table(t, "churn", ("share", "every", "away"))
    if c is not None:
        churn = Churn(c.number("share", gt=0, le=1), c.duration("every", positive=True),
                      c.duration("away", positive=True))
    flap: Flap | None = None
    f = _behaviour_table(t, "flap", ("share", "period"))
    if f is not None:
        flap = Flap(f.number("share", gt=0, le=1), f.duration("period", positive=True))
    total_share = wrong + (churn.share if churn else 0.0) + (flap.share if flap else 0.0)
    if total_share > 1 + 1e-9:
        raise ctx.error(f"groups[{i}]", "wrong_passwords, churn.share and flap.share add up to "
                        f"{total_share:g}: a device has one behaviour at most, so they must add up to 1 or less")
    avalanche: list[float] = []
    if t.given("avalanche"):
        raw = t.data["avalanche"]
        if not isinstance(raw, list) or not raw:
            raise t.fail("avalanche", "must be a non-empty list of times from the run start, such as ['30s']")
        for k, value in enumerate(raw):
            try:
                avalanche.append(parse_duration(value))
            except DurationError:
                raise ctx.error(f"groups[{i}].avalanche[{k}]", f"must be {DURATION_HINT}, got {show(value)}") from None
    group = Group(
        name=name,
        count=0,
        endpoints=replace(base, **changes),  # type: ignore[arg-type]
        transport=transport,
        own_sources="source_addresses" in changes,
        wrong_passwords=wrong,
        churn=churn,
        flap=flap,
        avalanche=tuple(sorted(avalanche)),
        keepalive=t.duration("keepalive", 0.0),
        outbound=t.boolean("outbound", False),
        gruu=t.boolean("gruu", False),
    )
    return group, share, count


def read_groups(ctx: Ctx, data: object, endpoints: Endpoints, target: Target) -> tuple[Group, ...]:
    """The scenario's groups; one implicit "default" group when the document has none."""
    if data is MISSING:
        return (default_group(endpoints, target),)
    if not isinstance(data, list) or not data:
        raise ctx.error("groups", f"must be a non-empty list of [[groups]] tables, got {show(data)}")
    seen: set[str] = set()
    read = [_read_group(ctx, i, d, endpoints, target, seen) for i, d in enumerate(data)]
    shares = [s for _, s, _ in read]
    counts = [c for _, _, c in read]
    total = endpoints.count
    if all(s is not None for s in shares):
        total_share = sum(s for s in shares if s is not None)
        if abs(total_share - 1.0) > 1e-6:
            raise ctx.error(f"groups[{len(read) - 1}].share", f"the shares must add up to 1, got {total_share:g}")
        sizes = largest_remainder([s or 0.0 for s in shares], total)
    elif all(c is not None for c in counts):
        sizes = [c or 0 for c in counts]
        if sum(sizes) != total:
            raise ctx.error(f"groups[{len(read) - 1}].count",
                            f"the groups' counts add up to {sum(sizes)}, endpoints.count is {total}")
    else:
        k = next(k for k, s in enumerate(shares) if s is None) if shares[0] is not None else \
            next(k for k, c in enumerate(counts) if c is None)
        raise ctx.error(f"groups[{k}]", "give every group a share or every group a count, not a mix")
    return tuple(replace(g, count=n) for (g, _, _), n in zip(read, sizes, strict=True))


# ------------------------------------------------------------------------------------------------ the plan


@dataclass(frozen=True, slots=True)
class FleetPlan:
    """Which group each endpoint belongs to (``group[i]``) and its behaviour (``role[i]``, a Role)."""

    groups: tuple[Group, ...]
    group: bytes
    role: bytes

    def group_of(self, i: int) -> Group:
        return self.groups[self.group[i]]

    def role_of(self, i: int) -> Role:
        return Role(self.role[i])


def interleave(counts: Sequence[int]) -> bytes:
    """Smooth weighted round-robin: group k appears exactly counts[k] times, spread evenly."""
    total = sum(counts)
    if len(counts) == 1:
        return bytes(total)
    current = [0] * len(counts)
    out = bytearray(total)
    for i in range(total):
        for k, c in enumerate(counts):
            current[k] += c
        best = max(range(len(counts)), key=lambda k: (current[k], -k))
        current[best] -= total
        out[i] = best
    return bytes(out)


def plan_fleet(groups: Sequence[Group], count: int, seed: int | None) -> FleetPlan:
    """The fleet plan: a pure function of the groups, the endpoint count and the seed."""
    if len(groups) > 255:
        raise ValueError("at most 255 groups")
    assignment = interleave([g.count for g in groups])
    assert len(assignment) == count
    role = bytearray(count)
    members: list[list[int]] = [[] for _ in groups]
    for i, k in enumerate(assignment):
        members[k].append(i)
    for k, g in enumerate(groups):
        wanted = [(Role.WRONG_PASSWORD, g.wrong_passwords), (Role.CHURN, g.churn.share if g.churn else 0.0),
                  (Role.FLAP, g.flap.share if g.flap else 0.0)]
        if not any(share for _, share in wanted):
            continue
        chosen = list(members[k])
        random.Random(f"{0 if seed is None else seed}:fleet:{g.name}").shuffle(chosen)
        at = 0
        for r, share in wanted:
            n = round(share * g.count)
            for i in chosen[at:at + n]:
                role[i] = r
            at += n
    return FleetPlan(tuple(groups), assignment, bytes(role))
