"""What the provider emulators are told: the API keys they accept and the faults they inject.

Keys (`ApiKeys`) are secrets: `repr=False`, never logged, never echoed in an answer. A provider
whose key is None accepts any non-empty value in its auth header (the header is still required).

Faults (`ApiKnobs`) let tests exercise the clients' handling without waiting on a real service:

* `rate_limit_first` / `rate_limit_every`: the first N requests, and every Nth request after them,
  are answered 429 in the provider's own shape with `Retry-After` (and Telnyx's
  `x-ratelimit-*` headers; `retry_after_header=False` leaves only `x-ratelimit-reset`).
* `latency`: a delay (the registrar's DelaySpec: fixed, uniform, exponential) before each answer.
* `malformed_every`: every Nth answer's body is replaced by text that is not JSON.
* `stale_lag` / `stale_share`: for that share of users (chosen by a stable hash of the name),
  a registration change becomes visible only `stale_lag` seconds after it happened; until then
  the emulator answers the state from before the change (see `views.py`). With a large lag the
  answers stay stale: that is how the cross-check's disagreements are shown.
* `providers`: which emulators the faults apply to (all by default).
* `webhook_loss` / `webhook_delay` / `webhook_queue`: Audian's webhook deliveries (`webhooks.py`):
  that share of events is never sent; each event sent that long after its change; the bound of
  each subscription's queue (a full queue drops its oldest event).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from sipload.durations import DurationError, parse_duration
from sipload.registrar.settings import NO_DELAY, DelaySpec, parse_delay

PROVIDERS = ("telnyx", "audian", "ultravox")
KEY_ENV = {"telnyx": "TELNYX_API_KEY", "audian": "AUDIAN_AUTH_TOKEN", "ultravox": "ULTRAVOX_API_KEY"}


@dataclass(frozen=True)
class ApiKeys:
    """The key each emulator accepts (None: any non-empty value). `forbidden` keys authenticate but
    are not authorized (403), for testing that path."""

    telnyx: str | None = field(default=None, repr=False)
    audian: str | None = field(default=None, repr=False)
    ultravox: str | None = field(default=None, repr=False)
    forbidden: frozenset[str] = field(default=frozenset(), repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ApiKeys:
        """Keys from TELNYX_API_KEY, AUDIAN_AUTH_TOKEN and ULTRAVOX_API_KEY (unset: any key)."""
        source = os.environ if env is None else env
        telnyx, audian, ultravox = (source.get(KEY_ENV[name]) or None for name in PROVIDERS)
        return cls(telnyx=telnyx, audian=audian, ultravox=ultravox)

    def expected(self, provider: str) -> str | None:
        key: str | None = getattr(self, provider)
        return key


@dataclass(frozen=True)
class ApiKnobs:
    rate_limit_first: int = 0
    rate_limit_every: int = 0
    retry_after: float = 1.0           # seconds, in Retry-After and x-ratelimit-reset
    retry_after_header: bool = True
    latency: DelaySpec = NO_DELAY
    malformed_every: int = 0
    stale_lag: float = 0.0
    stale_share: float = 1.0
    providers: frozenset[str] = frozenset(PROVIDERS)
    seed: int | None = None            # for latency draws
    audian_account: str | None = None  # the only Audian accountId accepted (None: any)
    ultravox_sip_host: str | None = None  # where its SIP agent binds (None: routed toward each proxy; port: any)
    ultravox_expires: int = 300        # Expires its REGISTERs ask for
    webhook_loss: float = 0.0          # share of webhook events never sent
    webhook_delay: DelaySpec = NO_DELAY  # each webhook event sent this long after its change
    webhook_queue: int = 10_000        # events queued per subscription (the oldest go when full)

    def __post_init__(self) -> None:
        for name in ("rate_limit_first", "rate_limit_every", "malformed_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0")
        if not (math.isfinite(self.retry_after) and self.retry_after >= 0):
            raise ValueError(f"retry_after: must be a finite number of seconds >= 0, got {self.retry_after}")
        if not (self.stale_lag >= 0 and not math.isnan(self.stale_lag)):
            raise ValueError(f"stale_lag: must be >= 0 seconds, got {self.stale_lag}")
        if not 0.0 <= self.stale_share <= 1.0:
            raise ValueError(f"stale_share: must be a share between 0 and 1, got {self.stale_share}")
        unknown = set(self.providers) - set(PROVIDERS)
        if unknown:
            raise ValueError(f"providers: unknown {sorted(unknown)}; expected some of {list(PROVIDERS)}")
        object.__setattr__(self, "providers", frozenset(self.providers))
        if self.ultravox_expires < 1:
            raise ValueError("ultravox_expires: must be >= 1 second")
        if not 0.0 <= self.webhook_loss <= 1.0:
            raise ValueError(f"webhook_loss: must be a share between 0 and 1, got {self.webhook_loss}")
        if self.webhook_queue < 1:
            raise ValueError(f"webhook_queue: must be >= 1, got {self.webhook_queue}")

    def applies_to(self, provider: str) -> bool:
        return provider in self.providers


NO_FAULTS = ApiKnobs()


KNOBS_HINT = ("comma-separated key=value: rate_limit_first=N, rate_limit_every=N, retry_after=1s, "
              "retry_after_header=false, latency=5ms|uniform:1ms:10ms|exp:2ms, malformed_every=N, stale_lag=2s, "
              "stale_share=0.5, providers=telnyx+audian, seed=N, audian_account=ID, ultravox_expires=300, "
              "webhook_loss=0.1, webhook_delay=50ms|uniform:..., webhook_queue=N")


def parse_knobs(text: str) -> ApiKnobs:
    """'rate_limit_every=5,latency=10ms,stale_lag=2s' -> ApiKnobs; ValueError naming the key otherwise."""
    values: dict[str, object] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, raw = part.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep:
            raise ValueError(f"{part!r}: expected key=value; {KNOBS_HINT}")
        try:
            if key in ("rate_limit_first", "rate_limit_every", "malformed_every", "seed", "ultravox_expires",
                       "webhook_queue"):
                values[key] = int(raw)
            elif key in ("retry_after", "stale_lag"):
                values[key] = parse_duration(raw)
            elif key in ("stale_share", "webhook_loss"):
                values[key] = float(raw)
            elif key == "retry_after_header":
                if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError("expected true or false")
                values[key] = raw.lower() in ("true", "1", "yes")
            elif key in ("latency", "webhook_delay"):
                values[key] = parse_delay(raw)
            elif key == "providers":
                values[key] = frozenset(p.strip() for p in raw.split("+") if p.strip())
            elif key in ("audian_account", "ultravox_sip_host"):
                values[key] = raw
            else:
                raise ValueError(f"unknown knob; {KNOBS_HINT}")
        except (ValueError, DurationError) as exc:
            raise ValueError(f"{key}: {exc}") from None
    return ApiKnobs(**values)  # type: ignore[arg-type]
