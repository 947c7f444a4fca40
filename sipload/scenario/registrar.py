"""`[registrar]`: the embedded registrar's own `RegistrarSettings`, read from the scenario.

`RegistrarConfig` *is* a `sipload.registrar.settings.RegistrarSettings` (a subclass that adds where the
registrar listens and the users file it read, and restates the defaults a scenario sets differently), so
the engine hands it to the registrar as it is. `Delay` is likewise the registrar's `DelaySpec`, spelled
with the scenario's names (``distribution``, ``value``, ``low``/``high``, ``mean``); its ``sample`` is
DelaySpec's. The section's own checks come first and word the errors; the settings' validation then runs
on construction, and anything it still rejects is reported against ``registrar``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from sipload.durations import format_duration
from sipload.registrar.settings import USER_PLACEHOLDER, DelayKind, DelaySpec, RegistrarSettings
from sipload.scenario.endpoints import CsvMode
from sipload.scenario.reader import MISSING, Ctx, Table, read_lines, render, show
from sipload.scenario.target import Target, check_host, check_port, split_hostport
from sipload.sip.digest import Algorithm


class DelayDistribution(enum.StrEnum):
    FIXED = "fixed"
    UNIFORM = "uniform"
    EXPONENTIAL = "exponential"


_KINDS = {DelayKind.UNIFORM: DelayDistribution.UNIFORM, DelayKind.EXPONENTIAL: DelayDistribution.EXPONENTIAL}


class Delay(DelaySpec):
    """A response delay as a scenario writes it: ``Delay(DelayDistribution.UNIFORM, low=0.001, high=0.005)``.

    A fixed delay of 0 is no delay. ``value`` is the fixed delay, ``low``/``high`` the uniform bounds and
    ``mean`` the exponential mean (each 0.0 for the other distributions).
    """

    __slots__ = ()

    def __init__(
        self,
        distribution: DelayDistribution = DelayDistribution.FIXED,
        value: float = 0.0,
        low: float = 0.0,
        high: float = 0.0,
        mean: float = 0.0,
    ) -> None:
        distribution = DelayDistribution(distribution)
        if distribution is DelayDistribution.UNIFORM:
            super().__init__(DelayKind.UNIFORM, low, high)
        elif distribution is DelayDistribution.EXPONENTIAL:
            super().__init__(DelayKind.EXPONENTIAL, mean)
        else:
            super().__init__(DelayKind.FIXED if value > 0 else DelayKind.NONE, value)

    @property
    def distribution(self) -> DelayDistribution:
        return _KINDS.get(self.kind, DelayDistribution.FIXED)

    @property
    def value(self) -> float:
        return self.a if self.kind is DelayKind.FIXED else 0.0

    @property
    def low(self) -> float:
        return self.a if self.kind is DelayKind.UNIFORM else 0.0

    @property
    def high(self) -> float:
        return self.b if self.kind is DelayKind.UNIFORM else 0.0

    @property
    def mean(self) -> float:
        return self.a if self.kind is DelayKind.EXPONENTIAL else 0.0


_NO_DELAY = Delay()


@dataclass(frozen=True)
class RegistrarConfig(RegistrarSettings):
    """The embedded registrar's settings (``password_template``, ``users``, ``algorithms``, ...) plus where it
    listens; ``seed`` is the scenario's."""

    realm: str = "sipload.test"
    min_expires: int = 1
    delay: Delay = _NO_DELAY
    listen_host: str = "127.0.0.1"
    listen_port: int = 0  # 0 = any free port
    users_csv: Path | None = None  # where `users` came from


REGISTRAR_KEYS = tuple(
    "listen realm password users_csv algorithms default_expires min_expires max_expires "
    "nonce_lifetime drop delay error_503 retry_after".split()
)


def _delay(t: Table) -> Delay:
    value = t.data.get("delay", 0)
    if not isinstance(value, dict):
        return Delay(value=t.duration("delay", 0.0))
    kinds = ("uniform", "exponential")
    kind = value.get("distribution")
    if kind not in kinds:
        raise t.ctx.error(
            "registrar.delay.distribution", f"must be one of {', '.join(map(repr, kinds))}, got {show(kind)}"
        )
    if kind == "uniform":
        d = t.table("delay", ("distribution", "min", "max"))
        low, high = d.duration("min"), d.duration("max")
        if high < low:
            raise d.fail("max", f"must not be less than registrar.delay.min ({format_duration(low)})")
        return Delay(DelayDistribution.UNIFORM, low=low, high=high)
    d = t.table("delay", ("distribution", "mean"))
    return Delay(DelayDistribution.EXPONENTIAL, mean=d.duration("mean"))


def _users_csv(t: Table, path: Path) -> dict[str, str]:
    """``user;password`` lines (SIPp's mode line, blank lines and //, # comments skipped; the last one wins)."""
    users: dict[str, str] = {}
    for number, line in enumerate(read_lines(t, "users_csv", path), start=1):
        if not line.strip() or line.lstrip().startswith(("//", "#")) or line.strip().upper() in CsvMode.__members__:
            continue
        user, sep, rest = line.partition(";")
        if not sep or not user:
            raise t.ctx.error("registrar.users_csv", f"{path}:{number}: expected user;password")  # no value shown
        users[user] = rest.split(";")[0]
    if not users:
        raise t.ctx.error("registrar.users_csv", f"{path}: no users")
    return users


def read_registrar(ctx: Ctx, data: object, target: Target, seed: int | None) -> RegistrarConfig | None:
    if not target.embedded:
        if data is not MISSING:
            raise ctx.error(
                "registrar", f"only allowed when target.registrar is 'embedded' (it is {target.registrar!r})"
            )
        return None
    t = Table(ctx, "registrar", {} if data is MISSING else data, REGISTRAR_KEYS)
    listen = t.text("listen", "127.0.0.1:0")
    try:
        host, port = split_hostport(listen)
        host = check_host(host)
        if port is None:
            raise ValueError(listen)
        port_number = check_port(port, allow_zero=True)
    except ValueError:
        raise t.fail("listen", "must be host:port such as '127.0.0.1:0' (port 0 = any free port)") from None
    users_csv = t.path("users_csv")
    if users_csv is not None and t.given("password"):
        raise t.fail("password", "not allowed with registrar.users_csv")
    password = t.text("password", "pw-{user}")
    render(t, "password", password, user="user1")
    if USER_PLACEHOLDER not in password:
        raise t.fail("password", "must contain {user} (the digest username)")
    realm = t.text("realm", target.domain, nonempty=True)
    if '"' in realm or "\\" in realm:
        raise t.fail("realm", "must not contain '\"' or '\\'")
    min_expires, max_expires = (
        t.integer("min_expires", 1, minimum=1),
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
    try:
        return RegistrarConfig(
            listen_host=host,
            listen_port=port_number,
            realm=realm,
            password_template=password,
            users_csv=users_csv,
            users=None if users_csv is None else _users_csv(t, users_csv),
            algorithms=t.algorithms("algorithms", (Algorithm.MD5,)),
            default_expires=default_expires,
            min_expires=min_expires,
            max_expires=max_expires,
            nonce_lifetime=t.duration("nonce_lifetime", 300.0, positive=True),
            drop=t.number("drop", 0.0, ge=0, le=1),
            delay=_delay(t),
            error_503=t.number("error_503", 0.0, ge=0, le=1),
            retry_after=t.integer("retry_after", 5, minimum=0),
            seed=seed,
        )
    except ValueError as exc:  # a rule of RegistrarSettings that the checks above do not word
        raise ctx.error("registrar", str(exc)) from None
