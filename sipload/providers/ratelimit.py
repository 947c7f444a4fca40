"""How long a 429 asks the client to wait, from the headers providers send.

Read in order: `retry-after-ms` (milliseconds), `Retry-After` (seconds, or an HTTP date),
`x-ratelimit-reset` (Telnyx: seconds until the window resets; a value that looks like a Unix time,
above 10^9, is taken as the reset moment). With none of them: exponential backoff from `base`.
Every wait is capped at `max_wait` so a confused server cannot park the check for an hour.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Mapping
from dataclasses import dataclass

_EPOCH_THRESHOLD = 1e9


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 3          # retries of one request after a 429 (then the 429 is an error)
    base: float = 1.0             # backoff when the server says nothing: base, 2*base, 4*base...
    max_wait: float = 60.0        # cap of one wait

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries: must be >= 0")
        if not (self.base >= 0 and self.max_wait >= 0):
            raise ValueError("base and max_wait: must be >= 0")


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def server_wait(headers: Mapping[str, str], now: float) -> float | None:
    """The wait the server asked for, in seconds (None when it did not say). `now`: Unix time."""
    lower = {k.lower(): v for k, v in headers.items()}
    ms = _number(lower.get("retry-after-ms"))
    if ms is not None:
        return ms / 1000.0
    retry_after = lower.get("retry-after")
    seconds = _number(retry_after)
    if seconds is not None:
        return seconds
    if retry_after:
        try:
            moment = email.utils.parsedate_to_datetime(retry_after)
        except (TypeError, ValueError, IndexError):
            moment = None
        if moment is not None and moment.tzinfo is not None:
            return max(0.0, moment.timestamp() - now)
    reset = _number(lower.get("x-ratelimit-reset"))
    if reset is not None:
        return max(0.0, reset - now) if reset > _EPOCH_THRESHOLD else reset
    return None


def retry_wait(headers: Mapping[str, str], attempt: int, policy: RetryPolicy, now: float) -> float:
    """Seconds to wait before retry number `attempt` (1-based) after a 429."""
    wait = server_wait(headers, now)
    if wait is None:
        wait = policy.base * 2 ** (attempt - 1)
    return min(wait, policy.max_wait)
