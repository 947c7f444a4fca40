"""Configuration of the embedded registrar: one frozen `RegistrarSettings`, plus the small parsers
the command line needs (delay specifications, the `user;password` CSV file).

Passwords never appear in a repr or a log line: the fields that hold them are `repr=False`.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sipload.durations import DurationError, parse_duration
from sipload.sip.digest import Algorithm

USER_PLACEHOLDER = "{user}"


class DelayKind(enum.Enum):
    NONE = "none"
    FIXED = "fixed"              # always `a` seconds
    UNIFORM = "uniform"          # uniform in [a, b]
    EXPONENTIAL = "exp"          # exponential with mean `a`


@dataclass(frozen=True, slots=True)
class DelaySpec:
    """How long the registrar waits before sending a response (fault injection)."""

    kind: DelayKind = DelayKind.NONE
    a: float = 0.0
    b: float = 0.0

    def __post_init__(self) -> None:
        for value in (self.a, self.b):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"delay bounds must be finite and >= 0, got {self!r}")
        if self.kind is DelayKind.UNIFORM and self.b < self.a:
            raise ValueError(f"uniform delay needs min <= max, got {self.a} > {self.b}")

    def sample(self, rng: random.Random) -> float:
        """A delay in seconds (0.0 when no delay is configured)."""
        if self.kind is DelayKind.NONE:
            return 0.0
        if self.kind is DelayKind.FIXED:
            return self.a
        if self.kind is DelayKind.UNIFORM:
            return rng.uniform(self.a, self.b)
        return rng.expovariate(1.0 / self.a) if self.a > 0 else 0.0

    def __str__(self) -> str:
        if self.kind is DelayKind.NONE:
            return "none"
        if self.kind is DelayKind.FIXED:
            return f"{self.a:g}s"
        if self.kind is DelayKind.UNIFORM:
            return f"uniform:{self.a:g}s:{self.b:g}s"
        return f"exp:{self.a:g}s"


NO_DELAY = DelaySpec()
DELAY_HINT = "'5ms' (fixed), 'uniform:1ms:10ms' or 'exp:2ms' (exponential with that mean)"


def parse_delay(text: str) -> DelaySpec:
    """'5ms' | 'uniform:1ms:10ms' | 'exp:2ms' | '0' | 'none' -> DelaySpec; ValueError otherwise."""
    value = text.strip()
    try:
        if value.lower() in ("", "none", "0"):
            return NO_DELAY
        kind, sep, rest = value.partition(":")
        if not sep:
            seconds = parse_duration(value)
            return DelaySpec(DelayKind.FIXED, seconds) if seconds > 0 else NO_DELAY
        kind = kind.lower()
        if kind == "uniform":
            low, sep2, high = rest.partition(":")
            if not sep2:
                raise ValueError(f"expected uniform:MIN:MAX, got {text!r}")
            return DelaySpec(DelayKind.UNIFORM, parse_duration(low), parse_duration(high))
        if kind in ("exp", "exponential"):
            return DelaySpec(DelayKind.EXPONENTIAL, parse_duration(rest))
        raise ValueError(f"unknown delay distribution {kind!r}")
    except DurationError:
        raise ValueError(f"invalid delay {text!r}: expected {DELAY_HINT}") from None
    except ValueError as exc:
        raise ValueError(f"invalid delay {text!r}: {exc}; expected {DELAY_HINT}") from None


def load_users(path: str | Path) -> dict[str, str]:
    """Read a `user;password` file (one pair a line; blank lines and '#' comments skipped).

    Raises ValueError naming the file and line for a malformed line or a repeated user, and
    OSError when the file cannot be read. Error messages never quote a password.
    """
    users: dict[str, str] = {}
    text = Path(path).read_text(encoding="utf-8")
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(";")
        user = user.strip()
        if not sep or not user or not password:
            raise ValueError(f"{path}:{number}: expected 'user;password'")
        if user in users:
            raise ValueError(f"{path}:{number}: user {user!r} listed twice")
        users[user] = password
    if not users:
        raise ValueError(f"{path}: no 'user;password' lines")
    return users


@dataclass(frozen=True)
class RegistrarSettings:
    """Everything the registrar core needs; validated on construction (ValueError says which field).

    Passwords: `users` (user -> password) when given, else `password_template` with `{user}`
    replaced by the digest username. `allow_user_mismatch` lets a digest username register an AoR
    whose To user differs (off by default: such a REGISTER gets 403, as Kamailio's auth_check does).
    """

    realm: str = "sipload"
    password_template: str = field(default="pw-{user}", repr=False)
    users: Mapping[str, str] | None = field(default=None, repr=False)
    algorithms: tuple[Algorithm, ...] = (Algorithm.MD5,)
    default_expires: int = 3600
    min_expires: int = 60
    max_expires: int = 7200
    nonce_lifetime: float = 300.0
    allow_no_qop: bool = True
    allow_user_mismatch: bool = False
    max_contacts: int = 16                 # per AoR; more -> 403
    drop: float = 0.0                      # share of requests silently dropped
    delay: DelaySpec = NO_DELAY            # before each new response is sent
    error_503: float = 0.0                 # share of requests answered 503
    retry_after: int | None = 5            # Retry-After of injected 503s (None: no header)
    seed: int | None = None
    transaction_linger: float = 32.0       # how long a UDP response is kept for retransmissions (64*T1)
    max_transactions: int = 65_536         # bound of that cache
    max_history: int = 1_000_000           # per-user history records kept (non-live evicted first)
    challenge_rate: float = 0.0            # 401s per second per source IP (0: no limit); over it: no answer
    challenge_burst: float | None = None   # bucket size of that limit (None: 2 x challenge_rate)
    outbound: bool = True                  # RFC 5626: Require: outbound for a UA that supports it
    gruu: bool = True                      # RFC 5627: pub-gruu / temp-gruu for a UA that supports it
    flow_timeout: float = 0.0              # close a stream connection silent this long (0: never)
    ignore_options: bool = False           # OPTIONS get no answer (as SBCs that drop them from unknown sources)

    def __post_init__(self) -> None:
        if not self.realm or any(ch in self.realm for ch in '"\r\n\\'):
            raise ValueError(f"realm: must be non-empty without quotes or CR/LF, got {self.realm!r}")
        if self.users is not None:
            if not self.users:
                raise ValueError("users: empty")
            object.__setattr__(self, "users", dict(self.users))  # a private copy (a mappingproxy cannot be pickled)
        elif USER_PLACEHOLDER not in self.password_template:
            raise ValueError("password_template: must contain {user}")
        if not self.algorithms:
            raise ValueError("algorithms: at least one is needed")
        object.__setattr__(self, "algorithms", tuple(dict.fromkeys(self.algorithms)))
        if not 0 < self.min_expires <= self.default_expires <= self.max_expires:
            raise ValueError(
                f"expires: need 0 < min ({self.min_expires}) <= default ({self.default_expires})"
                f" <= max ({self.max_expires})"
            )
        for name in ("drop", "error_503"):
            share = getattr(self, name)
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"{name}: must be a share between 0 and 1, got {share}")
        if self.retry_after is not None and self.retry_after < 0:
            raise ValueError(f"retry_after: must be >= 0, got {self.retry_after}")
        for name in ("nonce_lifetime", "transaction_linger"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: must be > 0, got {value}")
        if not (math.isfinite(self.flow_timeout) and self.flow_timeout >= 0):
            raise ValueError(f"flow_timeout: must be >= 0 seconds, got {self.flow_timeout}")
        if not (math.isfinite(self.challenge_rate) and self.challenge_rate >= 0):
            raise ValueError(f"challenge_rate: must be >= 0 per second, got {self.challenge_rate}")
        if self.challenge_burst is not None and not (math.isfinite(self.challenge_burst)
                                                     and self.challenge_burst >= 1):
            raise ValueError(f"challenge_burst: must be >= 1, got {self.challenge_burst}")
        for name in ("max_contacts", "max_transactions", "max_history"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1")

    def password_for(self, user: str) -> str | None:
        """The password of a digest username, None for an unknown user."""
        if self.users is not None:
            return self.users.get(user)
        return self.password_template.replace(USER_PLACEHOLDER, user)
