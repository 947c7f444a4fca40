"""One JSON-over-HTTP API as the httpx clients (Audian, Ultravox) talk to it.

`JsonApi.call(method, path)` sends one request with the provider's auth header and returns the
decoded JSON (None for 204). Around it:

* concurrency is bounded by a limiter shared by every call of the client;
* a 429 is retried up to `RetryPolicy.max_retries` times after the wait the server asked for
  (`ratelimit.retry_wait`); while one call waits, the others wait too (the limit is per key);
* every failure is a `ProviderError` naming the provider and endpoint: HTTP errors with the
  provider's own message (`describe` reads its error body), timeouts, connection failures and
  answers that are not JSON. The key is never part of a message or a repr.

Works under trio and asyncio (anyio); `sleep` and `clock` (Unix time) are injectable for tests.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Self

import anyio
import httpx

from sipload.providers.errors import ProviderHttpError, connect_reason, http_error, snippet
from sipload.providers.ratelimit import RetryPolicy, retry_wait
from sipload.providers.status import ProviderError

Sleep = Callable[[float], Awaitable[None]]
Describe = Callable[[object], str | None]
Params = Mapping[str, str | int]


def checked_url(provider: str, base_url: str) -> tuple[httpx.URL, str]:
    """(URL, the form shown in messages: without userinfo). ProviderError when it is not http(s)."""
    try:
        url = httpx.URL(base_url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ProviderError(f"{provider}: invalid base URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ProviderError(f"{provider}: base URL must be http(s)://HOST[:PORT]/..., got scheme {url.scheme!r}")
    shown = str(url.copy_with(username=None, password=None, query=None, fragment=None)).rstrip("/")
    return url, shown


class JsonApi:
    def __init__(
        self,
        provider: str,
        base_url: str,
        auth_headers: Mapping[str, str],
        *,
        describe: Describe,
        key_env: str | None = None,
        timeout: float = 10.0,
        concurrency: int = 8,
        retry: RetryPolicy | None = None,
        sleep: Sleep | None = None,
        clock: Callable[[], float] = time.time,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency: must be >= 1")
        self.provider = provider
        url, self.url = checked_url(provider, base_url)
        self._base = url.copy_with(username=None, password=None)
        self._headers = dict(auth_headers)
        self._describe = describe
        self._key_env = key_env
        self._timeout = timeout
        self._limiter = anyio.CapacityLimiter(concurrency)
        self._retry = retry if retry is not None else RetryPolicy()
        self._sleep: Sleep = sleep if sleep is not None else anyio.sleep
        self._clock = clock
        self._own_client = client is None
        self._client = client if client is not None else httpx.AsyncClient(timeout=timeout)
        self._resume_at = 0.0
        self.requests = 0
        self.rate_limited = 0

    def __repr__(self) -> str:
        return f"<JsonApi {self.provider} {self.url}>"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_client:
            await self._client.aclose()

    def absolute(self, path: str) -> httpx.URL:
        return self._base.copy_with(path=self._base.path.rstrip("/") + path)

    async def call(self, method: str, path: str, *, params: Params | None = None, body: object = None,
                   ok: tuple[int, ...] = (200, 201, 204)) -> Any:
        """One request -> its decoded JSON (None when the answer has no body)."""
        where = f"{self.provider} {method} {path}"
        attempt = 0
        while True:
            wait = self._resume_at - self._clock()
            if wait > 0:
                await self._sleep(wait)
            response = await self._send(method, path, where, params, body)
            if response.status_code != 429 or attempt >= self._retry.max_retries:
                break
            attempt += 1
            self.rate_limited += 1
            delay = retry_wait(response.headers, attempt, self._retry, self._clock())
            self._resume_at = max(self._resume_at, self._clock() + delay)
        return self._decode(response, where, ok)

    async def _send(self, method: str, path: str, where: str, params: Params | None, body: object) -> httpx.Response:
        kwargs: dict[str, Any] = {"headers": self._headers, "timeout": self._timeout}
        if params:
            kwargs["params"] = {k: str(v) for k, v in params.items()}
        if body is not None:
            kwargs["json"] = body
        async with self._limiter:
            self.requests += 1
            try:
                return await self._client.request(method, self.absolute(path), **kwargs)
            except httpx.TimeoutException as exc:
                raise ProviderHttpError(f"{where}: no answer within {self._timeout:g} s ({type(exc).__name__})",
                                        endpoint=where) from None
            except httpx.ConnectError as exc:
                raise ProviderHttpError(f"{where}: cannot connect to {self.url} ({connect_reason(exc)})",
                                        endpoint=where) from None
            except httpx.HTTPError as exc:
                raise ProviderHttpError(f"{where}: HTTP transport error: {type(exc).__name__}",
                                        endpoint=where) from None

    def _decode(self, response: httpx.Response, where: str, ok: tuple[int, ...]) -> Any:
        raw = response.content
        decoded: object = None
        valid = True
        if raw.strip():
            try:
                decoded = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                valid = False
        if response.status_code not in ok:
            message = self._describe(decoded) if valid else None
            if message is None and raw.strip():
                message = repr(snippet(raw.decode("utf-8", "replace")))
            raise http_error(where, response.status_code, response.reason_phrase, message, self._key_env)
        if not valid:
            text = snippet(raw.decode("utf-8", "replace"))
            raise ProviderHttpError(f"{where}: malformed JSON in answer (HTTP {response.status_code}): {text!r}",
                                    endpoint=where, status=response.status_code)
        return decoded
