"""Audian device registration client (httpx): single device, bulk status, renew, unregister, dashboard.

Base URL `https://api.audian.com:8443/v2` (the seed page also lists `/v1`: give that base to use
it), header `X-Auth-Token`, paths under `/accounts/{accountId}/devices`. Answers are flat camelCase;
errors are Kazoo's envelope, whose `data.message` / `message` ends up in the ProviderError.

Status mapping to sipload's model: registered -> REGISTERED, unregistered -> UNREGISTERED,
expired -> EXPIRED, invalid -> FAILED, offline and provisioning -> NOT_REGISTERED (the detail says
which), anything else -> UNKNOWN.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from sipload.providers.errors import ProviderHttpError, snippet
from sipload.providers.http_api import JsonApi, Sleep
from sipload.providers.ratelimit import RetryPolicy
from sipload.providers.status import ContactInfo, ProviderState, RegistrationStatus

DEFAULT_BASE_URL = "https://api.audian.com:8443/v2"
KEY_ENV = "AUDIAN_AUTH_TOKEN"
STATES: dict[str, ProviderState] = {
    "registered": ProviderState.REGISTERED,
    "unregistered": ProviderState.UNREGISTERED,
    "expired": ProviderState.EXPIRED,
    "invalid": ProviderState.FAILED,
    "offline": ProviderState.NOT_REGISTERED,
    "provisioning": ProviderState.NOT_REGISTERED,
}
MAX_LIMIT = 1000


def describe_error(body: object) -> str | None:
    """Kazoo: {"data":{"message":..},"error":"401","message":"unauthorized","status":"error"}."""
    if not isinstance(body, Mapping):
        return None
    data = body.get("data")
    parts = [body.get("message"), data.get("message") if isinstance(data, Mapping) else None]
    text = ": ".join(p for p in parts if isinstance(p, str) and p)
    return text or None


@dataclass(frozen=True, slots=True)
class DeviceRegistration:
    device_id: str
    status: str                      # Audian's own value
    name: str | None = None
    registered_at: str | None = None
    expires_at: str | None = None
    ip_address: str | None = None
    port: int | None = None
    transport: str | None = None
    user_agent: str | None = None
    contact_uri: str | None = None
    registration_expiry: int | None = None

    @property
    def state(self) -> ProviderState:
        return STATES.get(self.status, ProviderState.UNKNOWN)

    def to_status(self, user: str) -> RegistrationStatus:
        contacts: tuple[ContactInfo, ...] = ()
        address = self.contact_uri or (f"{self.ip_address}:{self.port}" if self.ip_address else None)
        if address is not None and self.state is ProviderState.REGISTERED:
            contacts = (ContactInfo(address, None, None, None, self.user_agent,
                                    f"{self.ip_address}:{self.port}" if self.ip_address else None,
                                    None, None, self.expires_at or ""),)
        detail = None if self.status in ("registered", "unregistered", "expired") else f"Audian status {self.status!r}"
        return RegistrationStatus(user, self.state, contacts, detail)


@dataclass(frozen=True, slots=True)
class BulkPage:
    devices: list[DeviceRegistration]
    total: int
    registered: int
    unregistered: int
    offline: int


@dataclass(frozen=True, slots=True)
class Dashboard:
    timestamp: str | None
    summary: dict[str, int]
    by_type: dict[str, dict[str, int]]
    alerts: list[dict[str, str]] = field(default_factory=list)


def _opt_str(d: Mapping[str, Any], key: str) -> str | None:
    value = d.get(key)
    return value if isinstance(value, str) else None


def _opt_int(d: Mapping[str, Any], key: str) -> int | None:
    value = d.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _object(answer: object, where: str) -> Mapping[str, Any]:
    if not isinstance(answer, Mapping):
        raise ProviderHttpError(f"{where}: malformed answer (not a JSON object): {snippet(answer)}", endpoint=where)
    return answer


def parse_device(item: object, where: str) -> DeviceRegistration:
    d = _object(item, where)
    device_id, status = d.get("deviceId"), d.get("status")
    if not isinstance(device_id, str) or not isinstance(status, str):
        raise ProviderHttpError(f"{where}: malformed device (needs string deviceId and status): {snippet(item)}",
                                endpoint=where)
    return DeviceRegistration(
        device_id, status, _opt_str(d, "name"), _opt_str(d, "registeredAt"), _opt_str(d, "expiresAt"),
        _opt_str(d, "ipAddress"), _opt_int(d, "port"), _opt_str(d, "transportProtocol"), _opt_str(d, "userAgent"),
        _opt_str(d, "contactUri"), _opt_int(d, "registrationExpiry"),
    )


class AudianClient:
    """Use `async with` (or `close()`). The token is sent in X-Auth-Token and kept out of reprs."""

    def __init__(self, token: str, account_id: str, base_url: str = DEFAULT_BASE_URL, *, timeout: float = 10.0,
                 concurrency: int = 8, retry: RetryPolicy | None = None, sleep: Sleep | None = None,
                 clock: Callable[[], float] = time.time, client: httpx.AsyncClient | None = None) -> None:
        self.account_id = account_id
        self.api = JsonApi("Audian", base_url, {"X-Auth-Token": token}, describe=describe_error, key_env=KEY_ENV,
                           timeout=timeout, concurrency=concurrency, retry=retry, sleep=sleep, clock=clock,
                           client=client)

    def __repr__(self) -> str:
        return f"<AudianClient {self.api.url} account={self.account_id}>"

    async def __aenter__(self) -> AudianClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.api.close()

    def _devices_path(self, tail: str = "") -> str:
        return f"/accounts/{quote(self.account_id, safe='')}/devices{tail}"

    def _device_path(self, device_id: str, tail: str = "") -> str:
        return self._devices_path(f"/{quote(device_id, safe='')}/registration{tail}")

    async def device_registration(self, device_id: str) -> DeviceRegistration:
        path = self._device_path(device_id)
        return parse_device(await self.api.call("GET", path), f"Audian GET {path}")

    async def bulk_status(self, *, status: str | None = None, type: str | None = None, limit: int = 100,
                          offset: int = 0) -> BulkPage:
        path = self._devices_path("/registration/status")
        where = f"Audian GET {path}"
        params: dict[str, str | int] = {"limit": limit, "offset": offset}
        if status is not None:
            params["status"] = status
        if type is not None:
            params["type"] = type
        answer = _object(await self.api.call("GET", path, params=params), where)
        data, pagination = answer.get("data"), answer.get("pagination")
        if not isinstance(data, list) or not isinstance(pagination, Mapping):
            raise ProviderHttpError(f"{where}: malformed answer (needs 'data' list and 'pagination'): "
                                    f"{snippet(answer)}", endpoint=where)
        counts = {k: _opt_int(pagination, k) or 0 for k in ("total", "registered", "unregistered", "offline")}
        return BulkPage([parse_device(item, where) for item in data], counts["total"], counts["registered"],
                        counts["unregistered"], counts["offline"])

    async def all_devices(self, *, status: str | None = None, type: str | None = None,
                          page_size: int = 500) -> list[DeviceRegistration]:
        """Every device, page by page (limit/offset) until `pagination.total` or an empty page."""
        devices: list[DeviceRegistration] = []
        while True:
            page = await self.bulk_status(status=status, type=type, limit=min(page_size, MAX_LIMIT),
                                          offset=len(devices))
            devices.extend(page.devices)
            if not page.devices or len(devices) >= page.total:
                return devices

    async def renew(self, device_id: str) -> dict[str, Any]:
        path = self._device_path(device_id, "/renew")
        return dict(_object(await self.api.call("POST", path), f"Audian POST {path}"))

    async def unregister(self, device_id: str) -> dict[str, Any]:
        path = self._device_path(device_id)
        return dict(_object(await self.api.call("DELETE", path), f"Audian DELETE {path}"))

    async def dashboard(self) -> Dashboard:
        path = self._devices_path("/registration/dashboard")
        where = f"Audian GET {path}"
        answer = _object(await self.api.call("GET", path), where)
        summary = answer.get("summary")
        if not isinstance(summary, Mapping):
            raise ProviderHttpError(f"{where}: malformed answer (no 'summary'): {snippet(answer)}", endpoint=where)
        by_type_raw = answer.get("byType")
        by_type = {
            str(k): {str(n): c for n, c in v.items() if isinstance(c, int)}
            for k, v in (by_type_raw.items() if isinstance(by_type_raw, Mapping) else ()) if isinstance(v, Mapping)
        }
        alerts_raw = answer.get("alerts")
        alerts = [{str(k): str(v) for k, v in a.items()} for a in alerts_raw if isinstance(a, Mapping)] \
            if isinstance(alerts_raw, list) else []
        return Dashboard(_opt_str(answer, "timestamp"),
                         {str(k): v for k, v in summary.items() if isinstance(v, int)}, by_type, alerts)

    # --- webhooks and troubleshooting (shapes: the emulator's, in Audian's flat camelCase) -----------------
    def _account_path(self, tail: str) -> str:
        return f"/accounts/{quote(self.account_id, safe='')}{tail}"

    async def subscribe(self, url: str, events: Sequence[str]) -> Webhook:
        """POST .../webhooks {url, events} -> the subscription."""
        path = self._account_path("/webhooks")
        answer = await self.api.call("POST", path, body={"url": url, "events": list(events)})
        return parse_webhook(answer, f"Audian POST {path}")

    async def webhooks(self) -> list[Webhook]:
        path = self._account_path("/webhooks")
        where = f"Audian GET {path}"
        data = _object(await self.api.call("GET", path), where).get("data")
        if not isinstance(data, list):
            raise ProviderHttpError(f"{where}: malformed answer (needs a 'data' list)", endpoint=where)
        return [parse_webhook(item, where) for item in data]

    async def unsubscribe(self, webhook_id: str) -> None:
        path = self._account_path(f"/webhooks/{quote(webhook_id, safe='')}")
        await self.api.call("DELETE", path)

    async def device_credentials(self, device_id: str) -> dict[str, Any]:
        path = self._devices_path(f"/{quote(device_id, safe='')}/credentials")
        return dict(_object(await self.api.call("GET", path), f"Audian GET {path}"))

    async def device_logs(self, device_id: str, lines: int = 50) -> list[DeviceLogLine]:
        """GET .../devices/{id}/logs?lines=N -> the device's last lines, oldest first."""
        path = self._devices_path(f"/{quote(device_id, safe='')}/logs")
        where = f"Audian GET {path}"
        logs = _object(await self.api.call("GET", path, params={"lines": lines}), where).get("logs")
        if not isinstance(logs, list):
            raise ProviderHttpError(f"{where}: malformed answer (needs a 'logs' list)", endpoint=where)
        return [DeviceLogLine(_opt_str(d, "timestamp") or "", _opt_str(d, "event") or "",
                              _opt_str(d, "message") or "") for d in (_object(i, where) for i in logs)]

    async def set_registration_expiry(self, device_id: str, seconds: int) -> dict[str, Any]:
        """PATCH .../devices/{id} {"settings": {"registrationExpiry": N}} -> the device's settings."""
        path = self._devices_path(f"/{quote(device_id, safe='')}")
        answer = await self.api.call("PATCH", path, body={"settings": {"registrationExpiry": seconds}})
        return dict(_object(answer, f"Audian PATCH {path}"))


@dataclass(frozen=True, slots=True)
class Webhook:
    webhook_id: str
    url: str
    events: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DeviceLogLine:
    timestamp: str
    event: str
    message: str


def parse_webhook(item: object, where: str) -> Webhook:
    d = _object(item, where)
    webhook_id, url, events = d.get("webhookId"), d.get("url"), d.get("events")
    if not isinstance(webhook_id, str) or not isinstance(url, str) or not isinstance(events, list):
        raise ProviderHttpError(f"{where}: malformed webhook (needs webhookId, url, events): {snippet(item)}",
                                endpoint=where)
    return Webhook(webhook_id, url, tuple(str(e) for e in events))
