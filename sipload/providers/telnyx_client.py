"""Telnyx status client through the official SDK (`telnyx.AsyncTelnyx`, httpx + anyio: runs under trio).

* `list_connections()`: every credential connection, page by page (`page[number]` / `page[size]`,
  until `meta.total_pages`), each page its own request so a 429 retries just that page;
* `check_registration_status(id)`: `POST /credential_connections/{id}/actions/check_registration_status`.

The SDK's own retries are off (`max_retries=0`): this client retries 429s itself so that it
honours `x-ratelimit-reset` (Telnyx's header) as well as `Retry-After`, shares the wait between
concurrent calls and uses an injectable sleep. SDK errors become `ProviderError`s naming the
endpoint; the key never appears in them (it is only in the SDK's Authorization header).

Status mapping: Registered -> REGISTERED, Not Registered -> NOT_REGISTERED, Expired -> EXPIRED,
Unregistered -> UNREGISTERED, Failed -> FAILED, Not Applicable (and anything else) -> UNKNOWN.
`last_registration` comes both as "2021-09-28T15:11:02" (no zone: UTC) and "2018-02-02T22:25:27.521Z".
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import anyio
import httpx
import telnyx
from telnyx.pagination import AsyncDefaultFlatPagination
from telnyx.types import CredentialConnection

from sipload.providers.errors import (
    ProviderHttpError,
    connect_reason,
    http_error,
    snippet,
)
from sipload.providers.http_api import Sleep, checked_url
from sipload.providers.ratelimit import RetryPolicy, retry_wait
from sipload.providers.status import ContactInfo, ProviderState, RegistrationStatus

DEFAULT_BASE_URL = "https://api.telnyx.com/v2"
KEY_ENV = "TELNYX_API_KEY"
MAX_PAGE_SIZE = 250
STATES: dict[str, ProviderState] = {
    "Registered": ProviderState.REGISTERED,
    "Not Registered": ProviderState.NOT_REGISTERED,
    "Expired": ProviderState.EXPIRED,
    "Unregistered": ProviderState.UNREGISTERED,
    "Failed": ProviderState.FAILED,
    "Not Applicable": ProviderState.UNKNOWN,
}
T = TypeVar("T")


def describe_error(body: object) -> str | None:
    """`{"errors":[{"code","title","detail",...}]}` -> "title: detail (code 10005)"."""
    errors = body.get("errors") if isinstance(body, Mapping) else None
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], Mapping):
        return None
    first = errors[0]
    parts = [p for p in (first.get("title"), first.get("detail")) if isinstance(p, str) and p]
    text = ": ".join(parts)
    code = first.get("code")
    if code is not None:
        text += f" (code {code})"
    pointer = first.get("source", {}).get("pointer") if isinstance(first.get("source"), Mapping) else None
    if isinstance(pointer, str) and pointer not in ("", "/"):
        text += f" at {pointer}"
    return text or None


def parse_telnyx_time(text: str | None) -> datetime | None:
    """Both forms Telnyx sends (with or without zone / milliseconds); None when absent or unreadable."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class TelnyxConnection:
    id: str
    user_name: str | None
    connection_name: str | None
    active: bool | None


@dataclass(frozen=True, slots=True)
class TelnyxRegistration:
    connection_id: str
    status: str
    sip_username: str | None
    ip_address: str | None
    port: int | None
    transport: str | None
    user_agent: str | None
    last_registration: datetime | None

    @property
    def state(self) -> ProviderState:
        return STATES.get(self.status, ProviderState.UNKNOWN)

    def to_status(self, user: str) -> RegistrationStatus:
        contacts: tuple[ContactInfo, ...] = ()
        if self.state is ProviderState.REGISTERED and self.ip_address:
            received = f"{self.ip_address}:{self.port}" if self.port else self.ip_address
            contacts = (ContactInfo(f"sip:{self.sip_username or user}@{received}", None, None, None,
                                    self.user_agent, received, None, None, ""),)
        detail = None if self.status in STATES and self.status != "Not Applicable" else f"Telnyx status {self.status!r}"
        return RegistrationStatus(user, self.state, contacts, detail)


class TelnyxClient:
    """Use `async with` (the SDK's own close is asyncio-only in `__del__`)."""

    def __init__(self, api_key: str, base_url: str = DEFAULT_BASE_URL, *, timeout: float = 10.0,
                 concurrency: int = 8, retry: RetryPolicy | None = None, sleep: Sleep | None = None,
                 clock: Callable[[], float] = time.time, http_client: httpx.AsyncClient | None = None) -> None:
        if concurrency < 1:
            raise ValueError("concurrency: must be >= 1")
        _, self.url = checked_url("Telnyx", base_url)
        self._timeout = timeout
        self._sdk = telnyx.AsyncTelnyx(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0,
                                       http_client=http_client)
        self._limiter = anyio.CapacityLimiter(concurrency)
        self._retry = retry if retry is not None else RetryPolicy()
        self._sleep: Sleep = sleep if sleep is not None else anyio.sleep
        self._clock = clock
        self._resume_at = 0.0
        self.requests = 0
        self.rate_limited = 0

    def __repr__(self) -> str:
        return f"<TelnyxClient {self.url}>"

    async def __aenter__(self) -> TelnyxClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._sdk.close()

    async def list_connections(self, page_size: int = MAX_PAGE_SIZE) -> list[TelnyxConnection]:
        where = "Telnyx GET /credential_connections"
        out: list[TelnyxConnection] = []
        number = 1
        while True:
            page = await self._call(where, partial(self._page, number, page_size))
            for item in page.data or []:
                if not isinstance(getattr(item, "id", None), str):
                    raise ProviderHttpError(f"{where}: malformed connection (no id): {snippet(repr(item))}",
                                            endpoint=where)
                out.append(TelnyxConnection(item.id or "", _opt_str(item.user_name), _opt_str(item.connection_name),
                                            item.active if isinstance(item.active, bool) else None))
            meta = page.meta
            total = getattr(meta, "total_pages", None) if meta is not None else None
            if not page.data or not isinstance(total, int) or number >= total:
                return out
            number += 1

    async def first_connections(self) -> None:
        """One connection's page: raises what listing them would (ProviderNotFound at a wrong base URL)."""
        await self._call("Telnyx GET /credential_connections", partial(self._page, 1, 1))

    async def _page(self, number: int, size: int) -> AsyncDefaultFlatPagination[CredentialConnection]:
        return await self._sdk.credential_connections.list(page_number=number, page_size=size)

    async def check_registration_status(self, connection_id: str) -> TelnyxRegistration:
        where = f"Telnyx POST /credential_connections/{connection_id}/actions/check_registration_status"
        answer = await self._call(
            where, lambda: self._sdk.credential_connections.actions.check_registration_status(connection_id))
        data = answer.data
        status = getattr(data, "status", None)
        if data is None or not isinstance(status, str):
            raise ProviderHttpError(f"{where}: malformed answer (no data.status): {snippet(repr(answer))}",
                                    endpoint=where)
        port = data.port
        return TelnyxRegistration(
            connection_id, status, _opt_str(data.sip_username), _opt_str(data.ip_address),
            port if isinstance(port, int) and not isinstance(port, bool) else None, _opt_str(data.transport),
            _opt_str(data.user_agent), parse_telnyx_time(_opt_str(data.last_registration)),
        )

    async def create_connection(self, *, connection_name: str, user_name: str, password: str) -> TelnyxConnection:
        where = "Telnyx POST /credential_connections"
        answer = await self._call(where, lambda: self._sdk.credential_connections.create(
            connection_name=connection_name, user_name=user_name, password=password))
        data = answer.data
        if data is None or not isinstance(data.id, str):
            raise ProviderHttpError(f"{where}: malformed answer (no data.id)", endpoint=where)
        return TelnyxConnection(data.id, _opt_str(data.user_name), _opt_str(data.connection_name),
                                data.active if isinstance(data.active, bool) else None)

    async def _call(self, where: str, request: Callable[[], Awaitable[T]]) -> T:
        attempt = 0
        while True:
            wait = self._resume_at - self._clock()
            if wait > 0:
                await self._sleep(wait)
            try:
                async with self._limiter:
                    self.requests += 1
                    return await request()
            except telnyx.RateLimitError as exc:
                if attempt >= self._retry.max_retries:
                    raise self._status_error(where, exc) from None
                attempt += 1
                self.rate_limited += 1
                delay = retry_wait(exc.response.headers, attempt, self._retry, self._clock())
                self._resume_at = max(self._resume_at, self._clock() + delay)
            except telnyx.APIStatusError as exc:
                raise self._status_error(where, exc) from None
            except telnyx.APITimeoutError:
                raise ProviderHttpError(f"{where}: no answer within {self._timeout:g} s", endpoint=where) from None
            except telnyx.APIConnectionError as exc:
                raise ProviderHttpError(f"{where}: cannot connect to {self.url} ({connect_reason(exc)})",
                                        endpoint=where) from None
            except (telnyx.APIResponseValidationError, ValueError) as exc:
                raise ProviderHttpError(f"{where}: malformed JSON in answer ({type(exc).__name__})",
                                        endpoint=where) from None

    def _status_error(self, where: str, exc: telnyx.APIStatusError) -> ProviderHttpError:
        body: Any = exc.body
        message = describe_error(body)
        if message is None and body is not None:
            message = repr(snippet(body if isinstance(body, str) else repr(body)))
        return http_error(where, exc.status_code, exc.response.reason_phrase, message, KEY_ENV)


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) else None
