"""Ultravox SIP registrations client (httpx): list (cursor pagination), get, create, delete.

Base URL `https://api.ultravox.ai`, header `X-API-Key`, paths `/api/sip/registrations[/{id}]`.
Ultravox is a SIP client: a registration makes it REGISTER `username` to `proxy`; its read-only
`successful` says how that went: True -> REGISTERED, False -> FAILED, null -> UNKNOWN (not known yet).

The list's `next` is a full URL; only its `cursor` is used, sent to our own base URL, so a
`next` pointing elsewhere never receives the key. The password is write-only: sent on create,
never kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from sipload.providers.errors import ProviderHttpError, snippet
from sipload.providers.http_api import JsonApi, Sleep
from sipload.providers.ratelimit import RetryPolicy
from sipload.providers.status import ProviderState, RegistrationStatus

DEFAULT_BASE_URL = "https://api.ultravox.ai"
KEY_ENV = "ULTRAVOX_API_KEY"
PATH = "/api/sip/registrations"
MAX_PAGES = 100_000


def describe_error(body: object) -> str | None:
    """DRF: {"detail": "..."} or {"field": ["message", ...], ...}."""
    if not isinstance(body, Mapping):
        return None
    detail = body.get("detail")
    if isinstance(detail, str):
        return detail
    parts = [f"{k}: {'; '.join(str(m) for m in v)}" for k, v in body.items() if isinstance(v, list)]
    return ", ".join(parts) or None


@dataclass(frozen=True, slots=True)
class SipRegistration:
    registration_id: str
    username: str
    proxy: str
    outbound_proxy: str | None
    auth_user: str | None
    created: str | None
    successful: bool | None

    @property
    def state(self) -> ProviderState:
        if self.successful is None:
            return ProviderState.UNKNOWN
        return ProviderState.REGISTERED if self.successful else ProviderState.FAILED

    def to_status(self) -> RegistrationStatus:
        detail = None if self.successful is not None else "Ultravox does not know yet (successful: null)"
        if self.successful is False:
            detail = "Ultravox: registration not successful"
        return RegistrationStatus(self.username, self.state, (), detail)


def parse_registration(item: object, where: str) -> SipRegistration:
    if not isinstance(item, Mapping):
        raise ProviderHttpError(f"{where}: malformed registration (not an object): {snippet(item)}", endpoint=where)
    rid, username, proxy = item.get("registrationId"), item.get("username"), item.get("proxy")
    successful = item.get("successful")
    if not (isinstance(rid, str) and isinstance(username, str) and isinstance(proxy, str)) or not (
            successful is None or isinstance(successful, bool)):
        raise ProviderHttpError(f"{where}: malformed registration (registrationId, username, proxy, successful):"
                                f" {snippet(item)}", endpoint=where)

    def opt(key: str) -> str | None:
        value = item.get(key)
        return value if isinstance(value, str) else None

    return SipRegistration(rid, username, proxy, opt("outboundProxy"), opt("authUser"), opt("created"), successful)


class UltravoxClient:
    """Use `async with` (or `close()`). The key is sent in X-API-Key and kept out of reprs."""

    def __init__(self, api_key: str, base_url: str = DEFAULT_BASE_URL, *, timeout: float = 10.0,
                 concurrency: int = 8, retry: RetryPolicy | None = None, sleep: Sleep | None = None,
                 clock: Callable[[], float] = time.time, client: httpx.AsyncClient | None = None) -> None:
        self.api = JsonApi("Ultravox", base_url, {"X-API-Key": api_key}, describe=describe_error, key_env=KEY_ENV,
                           timeout=timeout, concurrency=concurrency, retry=retry, sleep=sleep, clock=clock,
                           client=client)

    def __repr__(self) -> str:
        return f"<UltravoxClient {self.api.url}>"

    async def __aenter__(self) -> UltravoxClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.api.close()

    async def list_page(self, cursor: str | None = None, page_size: int = 100,
                        ) -> tuple[list[SipRegistration], str | None, int | None]:
        """One page -> (registrations, the next page's cursor or None, total)."""
        where = f"Ultravox GET {PATH}"
        params: dict[str, str | int] = {"pageSize": page_size}
        if cursor is not None:
            params["cursor"] = cursor
        answer = await self.api.call("GET", PATH, params=params)
        if not isinstance(answer, Mapping) or not isinstance(answer.get("results"), list):
            raise ProviderHttpError(f"{where}: malformed answer (needs a 'results' list): {snippet(answer)}",
                                    endpoint=where)
        items = [parse_registration(item, where) for item in answer["results"]]
        next_url = answer.get("next")
        next_cursor: str | None = None
        if isinstance(next_url, str) and next_url:
            try:
                next_cursor = httpx.URL(next_url).params.get("cursor")
            except httpx.InvalidURL:
                next_cursor = None
            if not next_cursor:
                raise ProviderHttpError(f"{where}: 'next' has no cursor: {snippet(next_url)}", endpoint=where)
        total = answer.get("total")
        return items, next_cursor, total if isinstance(total, int) else None

    async def list_registrations(self, page_size: int = 100) -> list[SipRegistration]:
        """Every registration, following the cursors."""
        out: list[SipRegistration] = []
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            items, cursor, _total = await self.list_page(cursor, page_size)
            out.extend(items)
            if cursor is None:
                return out
            if cursor in seen:
                raise ProviderHttpError(f"Ultravox GET {PATH}: the cursors loop", endpoint=f"Ultravox GET {PATH}")
            seen.add(cursor)
        raise ProviderHttpError(f"Ultravox GET {PATH}: more than {MAX_PAGES} pages", endpoint=f"Ultravox GET {PATH}")

    async def get(self, registration_id: str) -> SipRegistration:
        path = f"{PATH}/{quote(registration_id, safe='')}"
        return parse_registration(await self.api.call("GET", path), f"Ultravox GET {path}")

    async def create(self, *, username: str, password: str, proxy: str, outbound_proxy: str | None = None,
                     auth_user: str | None = None) -> SipRegistration:
        body: dict[str, Any] = {"username": username, "password": password, "proxy": proxy}
        if outbound_proxy is not None:
            body["outboundProxy"] = outbound_proxy
        if auth_user is not None:
            body["authUser"] = auth_user
        return parse_registration(await self.api.call("POST", PATH, body=body), f"Ultravox POST {PATH}")

    async def delete(self, registration_id: str) -> None:
        await self.api.call("DELETE", f"{PATH}/{quote(registration_id, safe='')}")
