"""What every emulated request goes through: injected latency, the provider's auth header, injected
429s, and (on the way out) injected malformed bodies. Each provider has its own `Gate` (own counters)
and passes its own error shape, so every answer looks like that provider's.
"""

from __future__ import annotations

import hmac
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio
from starlette.requests import Request
from starlette.responses import Response

from sipload.emulators.knobs import ApiKeys, ApiKnobs

Handler = Callable[[Request], Awaitable[Response]]
ErrorMaker = Callable[[int, str], Response]   # (HTTP status, kind) -> the provider's error answer
KeyReader = Callable[[Request], str | None]   # the key the request carries, None when absent

MALFORMED_BODY = b'{"data": [ this is not JSON'
UNAUTHENTICATED = "unauthenticated"          # no key, or a wrong one
FORBIDDEN = "forbidden"
RATE_LIMITED = "rate_limited"


@dataclass
class GateCounters:
    requests: int = 0
    rate_limited: int = 0
    unauthenticated: int = 0
    forbidden: int = 0
    answers: int = 0
    malformed: int = 0


class Gate:
    def __init__(self, provider: str, keys: ApiKeys, knobs: ApiKnobs, read_key: KeyReader,
                 error: ErrorMaker) -> None:
        self.provider = provider
        self._expected = keys.expected(provider)
        self._forbidden = keys.forbidden
        self._knobs = knobs
        self._faults = knobs.applies_to(provider)
        self._read_key = read_key
        self._error = error
        self._rng = random.Random(knobs.seed)
        self.counters = GateCounters()

    def guard(self, handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            early = await self.enter(request)
            if early is not None:
                return early
            return self.leave(await handler(request))

        return guarded

    async def enter(self, request: Request) -> Response | None:
        counters = self.counters
        counters.requests += 1
        knobs = self._knobs
        if self._faults:
            delay = knobs.latency.sample(self._rng)
            if delay > 0:
                await trio.sleep(delay)
        key = self._read_key(request)
        if not key or (self._expected is not None and not hmac.compare_digest(key.encode(), self._expected.encode())
                       and key not in self._forbidden):
            counters.unauthenticated += 1
            return self._error(401, UNAUTHENTICATED)
        if key in self._forbidden:
            counters.forbidden += 1
            return self._error(403, FORBIDDEN)
        if self._faults and self._rate_limited(counters.requests):
            counters.rate_limited += 1
            return self._too_many()
        return None

    def leave(self, response: Response) -> Response:
        counters = self.counters
        counters.answers += 1
        every = self._knobs.malformed_every
        if self._faults and every and counters.answers % every == 0 and response.status_code != 204:
            counters.malformed += 1
            return Response(MALFORMED_BODY, response.status_code, media_type="application/json")
        return response

    def _rate_limited(self, n: int) -> bool:
        knobs = self._knobs
        if n <= knobs.rate_limit_first:
            return True
        every = knobs.rate_limit_every
        return bool(every) and (n - knobs.rate_limit_first) % every == 0

    def _too_many(self) -> Response:
        response = self._error(429, RATE_LIMITED)
        wait = self._knobs.retry_after
        if self._knobs.retry_after_header:
            response.headers["Retry-After"] = _seconds(wait)
        if self.provider == "telnyx":
            response.headers["x-ratelimit-limit"] = "100"
            response.headers["x-ratelimit-remaining"] = "0"
            response.headers["x-ratelimit-reset"] = _seconds(wait)
        return response


def _seconds(value: float) -> str:
    """Whole seconds when whole (as the header is usually written), else the exact decimal."""
    return str(int(value)) if value == math.floor(value) else f"{value:g}"
