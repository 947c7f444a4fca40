"""`CrossCheckConfig`: what the `[crosscheck]` scenario section and `sipload check` say.

The API key comes from the environment variable `api_key_env` (default per provider:
TELNYX_API_KEY, AUDIAN_AUTH_TOKEN, ULTRAVOX_API_KEY) or, discouraged, from `api_key` in the
scenario; it is `repr=False` and no error message ever quotes it. Kamailio needs no key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from sipload.durations import DurationError, parse_duration
from sipload.hostport import parse_host_port
from sipload.providers.status import ProviderError

PROVIDERS = ("telnyx", "audian", "ultravox", "kamailio")
DEFAULT_URLS = {
    "telnyx": "https://api.telnyx.com/v2",
    "audian": "https://api.audian.com:8443/v2",
    "ultravox": "https://api.ultravox.ai",
    "kamailio": "http://127.0.0.1:5071/RPC",
}
KEY_ENVS = {"telnyx": "TELNYX_API_KEY", "audian": "AUDIAN_AUTH_TOKEN", "ultravox": "ULTRAVOX_API_KEY"}
_TEXT_KEYS = ("provider", "base_url", "account_id", "api_key_env", "api_key", "events_listen", "events_url")
_DURATION_KEYS = ("timeout", "poll_interval", "poll_limit", "events_wait")
_INT_KEYS = ("concurrency", "max_retries", "max_listed")
_BOOL_KEYS = ("events",)
SECTION_KEYS = (*_TEXT_KEYS, *_DURATION_KEYS, *_INT_KEYS, *_BOOL_KEYS, "min_agreement")
EVENT_PROVIDERS = ("audian",)           # the providers whose webhooks sipload can watch


@dataclass(frozen=True)
class CrossCheckConfig:
    """Validated on construction: ValueError names the field."""

    provider: str
    base_url: str | None = None          # None: the provider's public API (or Kamailio's default RPC URL)
    account_id: str | None = None        # Audian only (required there)
    api_key_env: str | None = None       # None: the provider's usual variable
    api_key: str | None = field(default=None, repr=False)
    concurrency: int = 8                 # requests in flight at once
    timeout: float = 10.0                # seconds per request
    poll_interval: float = 0.5           # seconds between polls of users not yet shown registered
    poll_limit: float = 0.0              # seconds to keep polling them (0: ask once)
    max_retries: int = 3                 # retries after a 429
    max_listed: int = 1000               # disagreements / errors listed in full (all are counted)
    min_agreement: float | None = None   # gate: agreement rate in % that must be reached
    events: bool = False                 # watch the provider's webhooks (Audian): event latency, missing, ...
    events_listen: str = "127.0.0.1:0"   # where sipload's webhook receiver listens (port 0: any)
    events_url: str | None = None        # the URL the provider is given (None: http://<events_listen>/...)
    events_wait: float = 5.0             # after the run, wait this long at most for the last events

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise ValueError(f"provider: must be one of {', '.join(PROVIDERS)}, got {self.provider!r}")
        if self.provider == "audian" and not self.account_id:
            raise ValueError("account_id: Audian needs the account id (/accounts/{accountId}/...)")
        if self.concurrency < 1:
            raise ValueError(f"concurrency: must be >= 1, got {self.concurrency}")
        for name in ("timeout", "poll_interval"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: must be > 0 seconds, got {value}")
        if not (math.isfinite(self.poll_limit) and self.poll_limit >= 0):
            raise ValueError(f"poll_limit: must be >= 0 seconds, got {self.poll_limit}")
        if self.max_retries < 0 or self.max_listed < 0:
            raise ValueError("max_retries and max_listed: must be >= 0")
        if self.events and self.provider not in EVENT_PROVIDERS:
            raise ValueError(f"events: webhooks are watched for {', '.join(EVENT_PROVIDERS)} only, "
                             f"not {self.provider}")
        try:
            parse_host_port(self.events_listen)
        except ValueError as exc:
            raise ValueError(f"events_listen: {exc}") from None
        if self.events_url is not None and not self.events_url.startswith(("http://", "https://")):
            raise ValueError(f"events_url: must be an http:// or https:// URL, got {self.events_url!r}")
        if not (math.isfinite(self.events_wait) and self.events_wait >= 0):
            raise ValueError(f"events_wait: must be >= 0 seconds, got {self.events_wait}")
        if self.min_agreement is not None and not 0 <= self.min_agreement <= 100:
            raise ValueError(f"min_agreement: must be a percentage 0-100, got {self.min_agreement}")

    def url(self) -> str:
        return self.base_url or DEFAULT_URLS[self.provider]

    def key_env(self) -> str | None:
        return self.api_key_env or KEY_ENVS.get(self.provider)

    def key(self, env: Mapping[str, str]) -> str:
        """The API key; ProviderError naming the variable (never a value) when there is none."""
        if self.api_key:
            return self.api_key
        var = self.key_env()
        value = env.get(var) if var else None
        if not value:
            raise ProviderError(f"{self.provider}: no API key: set the environment variable {var}")
        return value


def config_from_mapping(data: Mapping[str, object], where: str = "crosscheck") -> CrossCheckConfig:
    """A `[crosscheck]` table -> CrossCheckConfig. ValueError names `where.key` (never a key's value).

    Durations accept what scenario files do ("500ms", "2s", numbers of seconds); `min_agreement` a
    number or "99.5%"."""
    unknown = sorted(set(data) - set(SECTION_KEYS))
    if unknown:
        raise ValueError(f"{where}.{unknown[0]}: unknown key; expected one of {', '.join(SECTION_KEYS)}")
    kwargs: dict[str, object] = {}
    for key, value in data.items():
        if key in _TEXT_KEYS:
            if not isinstance(value, str) or not value:
                shown = "a secret" if key == "api_key" else repr(value)
                raise ValueError(f"{where}.{key}: must be a non-empty string, got {shown}")
            kwargs[key] = value
        elif key in _DURATION_KEYS:
            try:
                kwargs[key] = parse_duration(value)
            except DurationError as exc:
                raise ValueError(f"{where}.{key}: {exc}") from None
        elif key in _BOOL_KEYS:
            if not isinstance(value, bool):
                raise ValueError(f"{where}.{key}: must be true or false, got {value!r}")
            kwargs[key] = value
        elif key in _INT_KEYS:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{where}.{key}: must be an integer, got {value!r}")
            kwargs[key] = value
        else:
            text = value.strip().removesuffix("%") if isinstance(value, str) else value
            try:
                kwargs[key] = float(text) if not isinstance(text, bool) else None  # type: ignore[arg-type]
            except (TypeError, ValueError):
                kwargs[key] = None
            if kwargs[key] is None:
                raise ValueError(f"{where}.{key}: must be a percentage such as 99.5 or '99.5%', got {value!r}")
    if "provider" not in kwargs:
        raise ValueError(f"{where}.provider: required ({', '.join(PROVIDERS)})")
    try:
        return CrossCheckConfig(**kwargs)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ValueError(f"{where}.{exc}") from None
