"""The provider clients' errors: every one a `ProviderError` whose message names the provider, the
endpoint (method and path) and what happened, with a hint for the usual causes. No message ever
contains a credential: the key travels in a header, and URLs are shown without their userinfo.
"""

from __future__ import annotations

import json
import os
from http import HTTPStatus

from sipload.providers.status import ProviderError

SNIPPET = 200


class ProviderHttpError(ProviderError):
    """The provider answered an HTTP error (or nothing usable) for one endpoint."""

    def __init__(self, message: str, *, endpoint: str, status: int | None = None) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status = status


class ProviderAuthError(ProviderHttpError):
    """401 / 403: the key is wrong, missing or not allowed."""


class ProviderNotFound(ProviderHttpError):
    """404: no such resource (connection, device, registration, account)."""


class ProviderRateLimited(ProviderHttpError):
    """429, still after the retries allowed."""


class ProviderConfigError(ProviderError):
    """The provider's API is not where the configuration points (a base URL answering 404 to a collection
    every account has): no user's answer can mean anything, so the check stops with one line."""


def wrong_base_url(provider: str, base_url: str, exc: ProviderNotFound, expected: str) -> ProviderConfigError:
    return ProviderConfigError(
        f"{provider}: {exc.endpoint.split(' ', 1)[1]} at {base_url} answered 404 Not Found: that is not "
        f"{provider.capitalize()}'s API; check the base URL (expected {expected})")


class NotProvisioned(ProviderError):
    """The provider has nothing for this user (no credential connection, device or registration)."""


def connect_reason(exc: BaseException) -> str:
    """The OS reason behind a connect failure ("Connection refused"), else the exception's type.

    Under trio, httpcore wraps it in an OSError("all attempts ... failed") from an ExceptionGroup."""
    todo: list[BaseException] = [exc]
    seen: set[int] = set()
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno:
            return os.strerror(current.errno)
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return type(exc).__name__


def snippet(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=repr)[: SNIPPET * 2]  # bounded work
    return text if len(text) <= SNIPPET else text[:SNIPPET] + "..."


def hint(status: int, key_env: str | None) -> str:
    if status == 401:
        return f" (check the API key{' in ' + key_env if key_env else ''})"
    if status == 403:
        return " (the key is not allowed to do this)"
    if status == 429:
        return " (rate limited; retries exhausted)"
    return ""


def http_error(where: str, status: int, reason: str, message: str | None, key_env: str | None) -> ProviderHttpError:
    """The error for an HTTP error status; `message` is what the provider's error body says."""
    if not reason:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
    text = f"{where}: HTTP {status} {reason}".rstrip()
    if message:
        text += f": {message}"
    text += hint(status, key_env)
    cls: type[ProviderHttpError] = ProviderHttpError
    if status in (401, 403):
        cls = ProviderAuthError
    elif status == 404:
        cls = ProviderNotFound
    elif status == 429:
        cls = ProviderRateLimited
    return cls(text, endpoint=where, status=status)
