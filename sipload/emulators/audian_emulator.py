"""Audian emulator (mounted at `/v1` and `/v2`, under `/accounts/{accountId}`): device registration.

Theory of operation
-------------------
Every user the registrar has seen is a device (`deviceId` "dev_sip_<user>", `name` <user>, type
"sip"); `PUT /accounts/{accountId}/devices` (Kazoo style, `{"data":{"name","sip":{"username",
"password"}}}`) adds more. Statuses come from `views.AUDIAN_STATUS`. The shapes are PROVIDERS.md's:
flat camelCase for the registration endpoints, Kazoo's envelope for errors
(`{"data":{"message"},"error":"404","message":"bad_identifier","status":"error"}`).

* bulk status: `status` / `type` filters, `limit` (1-1000, default 100) and `offset`; the
  `pagination` counts cover the whole filtered set (unregistered = every status but registered
  and offline);
* renew: a live device answers "registered" with its binding's expiry; otherwise its status;
* DELETE: removes the user's bindings from the registrar's store (the device is unregistered until
  it registers again);
* the account: `ApiKnobs.audian_account` when set (another id -> 404), else any.

Webhooks (`webhooks.py` delivers): `POST .../webhooks` `{"url", "events"}` -> 201 with the
subscription (`webhookId`, `url`, `events`, `createdAt`, `status`, and its delivery counters);
`GET .../webhooks` -> `{"data": [...]}`; `GET|DELETE .../webhooks/{webhookId}`. A url must be
absolute http(s); events a non-empty list of device.registered / device.unregistered /
device.offline; at most `MAX_SUBSCRIPTIONS` per account.

Troubleshooting, from the embedded registrar (`RegistrarCore`, when the emulator has one):
`GET .../devices/{deviceId}/credentials` -> `{deviceId, username, realm}` (never the password);
`GET .../devices/{deviceId}/logs?lines=N` (1-1000, default 50) -> `{deviceId, lines, logs:
[{timestamp, event, message}]}` from the registrar's own record (`devicelog.py`);
`PATCH .../devices/{deviceId}` `{"settings": {"registrationExpiry": N}}` (N 30-86400 s) -> the
device's settings; the registrar grants N to that device's next REGISTERs.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sipload.emulators.gate import FORBIDDEN, RATE_LIMITED, UNAUTHENTICATED, Gate
from sipload.emulators.requests import int_param, json_body
from sipload.emulators.views import AUDIAN_STATUS, StoreView, UserView, iso_z
from sipload.emulators.webhooks import EVENTS, MAX_SUBSCRIPTIONS, WebhookHub
from sipload.registrar.bindings import UserState
from sipload.registrar.core import RegistrarCore

STATUSES = ("registered", "unregistered", "expired", "invalid", "offline", "provisioning")
TYPES = ("sip", "softphone", "webrtc")
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
DEVICE_PREFIX = "dev_sip_"
DEFAULT_LOG_LINES = 50
MAX_LOG_LINES = 1000
EXPIRY_RANGE = (30, 86_400)
DOCUMENTED_SETTINGS = {"keepaliveInterval": 30, "retryInterval": 30, "maxContacts": 1}  # the seed page's defaults
_ERRORS: dict[str, tuple[str, str]] = {  # kind -> (message, data.message)
    UNAUTHENTICATED: ("unauthorized", "invalid credentials"),
    FORBIDDEN: ("forbidden", "forbidden"),
    "not_found": ("bad_identifier", "bad identifier"),
    RATE_LIMITED: ("too_many_requests", "too many requests"),
    "invalid": ("invalid data", "invalid data"),
}


def audian_error(status: int, kind: str, detail: str | None = None) -> JSONResponse:
    message, data_message = _ERRORS.get(kind, _ERRORS["invalid"])
    return JSONResponse({"data": {"message": detail or data_message}, "error": str(status), "message": message,
                         "status": "error"}, status)


def read_token(request: Request) -> str | None:
    return request.headers.get("x-auth-token") or None


class AudianEmulator:
    def __init__(self, view: StoreView, gate: Gate, account_id: str | None = None,
                 wall: Callable[[], float] = time.time, *, registrar: RegistrarCore | None = None) -> None:
        self.view = view
        self.gate = gate
        self.account_id = account_id
        self._wall = wall
        self._created: dict[str, tuple[str, str]] = {}   # deviceId -> (user, name): created through the API
        self.registrar = registrar
        self.hub = WebhookHub(view, view.knobs, device_id=lambda user: DEVICE_PREFIX + user, wall=wall)

    def routes(self, prefix: str) -> list[BaseRoute]:
        g = self.gate.guard
        base = f"{prefix}/accounts/{{account}}/devices"
        return [
            Route(f"{base}/registration/status", g(self.bulk_status), methods=["GET"]),
            Route(f"{base}/registration/dashboard", g(self.dashboard), methods=["GET"]),
            Route(f"{base}/registration/analytics", g(self.analytics), methods=["GET"]),
            Route(f"{base}/{{device}}/registration", g(self.registration), methods=["GET"]),
            Route(f"{base}/{{device}}/registration", g(self.unregister), methods=["DELETE"]),
            Route(f"{base}/{{device}}/registration/renew", g(self.renew), methods=["POST"]),
            Route(f"{base}/{{device}}/credentials", g(self.credentials), methods=["GET"]),
            Route(f"{base}/{{device}}/logs", g(self.logs), methods=["GET"]),
            Route(f"{base}/{{device}}", g(self.settings), methods=["PATCH"]),
            Route(base, g(self.create_device), methods=["PUT"]),
            Route(f"{prefix}/accounts/{{account}}/webhooks", g(self.subscribe), methods=["POST"]),
            Route(f"{prefix}/accounts/{{account}}/webhooks", g(self.subscriptions), methods=["GET"]),
            Route(f"{prefix}/accounts/{{account}}/webhooks/{{webhook}}", g(self.subscription), methods=["GET"]),
            Route(f"{prefix}/accounts/{{account}}/webhooks/{{webhook}}", g(self.unsubscribe), methods=["DELETE"]),
            Route(f"{prefix}/accounts/{{path:path}}", g(self.not_found),
                  methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        ]

    # --- the devices ----------------------------------------------------------------------------
    def provision(self, username: str, name: str | None = None) -> str:
        """Add a device for a SIP user (as `PUT .../devices` does); returns its deviceId."""
        device_id = DEVICE_PREFIX + username
        self._created[device_id] = (username, name or username)
        return device_id

    def _user_of(self, device_id: str) -> str | None:
        if device_id in self._created:
            return self._created[device_id][0]
        if device_id.startswith(DEVICE_PREFIX):
            user = device_id.removeprefix(DEVICE_PREFIX)
            if self.view.store.user_state(user, self.view.now()).state is not UserState.NEVER_SEEN:
                return user
        return None

    def _devices(self) -> list[tuple[str, str, str]]:
        """(deviceId, user, name) for every device, seen users first (oldest change first)."""
        created = self._created
        seen = [(DEVICE_PREFIX + user, user, created.get(DEVICE_PREFIX + user, ("", user))[1])
                for user in self.view.users()]
        known = {d for d, _, _ in seen}
        return seen + [(d, u, n) for d, (u, n) in created.items() if d not in known]

    def _status(self, user: UserView) -> str:
        return AUDIAN_STATUS[user.state]

    def _account_error(self, request: Request) -> Response | None:
        if self.account_id is not None and request.path_params["account"] != self.account_id:
            return audian_error(404, "not_found", "account not found")
        return None

    def _device(self, request: Request) -> tuple[str, str] | Response:
        problem = self._account_error(request)
        if problem is not None:
            return problem
        device_id = request.path_params["device"]
        user = self._user_of(device_id)
        if user is None:
            return audian_error(404, "not_found", f"device {device_id} not found")
        return device_id, user

    def _times(self, user: UserView) -> dict[str, Any]:
        b = user.binding
        if b is None or user.stale:
            return {"registeredAt": None, "expiresAt": None, "ipAddress": None, "port": None}
        unix = self.view.unix
        return {"registeredAt": iso_z(unix(b.registered_at), millis=False),
                "expiresAt": iso_z(unix(b.expires_at), millis=False),
                "ipAddress": b.source[0], "port": b.source[1]}

    # --- endpoints ------------------------------------------------------------------------------
    async def not_found(self, request: Request) -> Response:
        return audian_error(404, "not_found")

    async def registration(self, request: Request) -> Response:
        found = self._device(request)
        if isinstance(found, Response):
            return found
        device_id, name = found
        user = self.view.view(name, "audian")
        body: dict[str, Any] = {"deviceId": device_id, "status": self._status(user)}
        body.update(self._times(user))
        b = user.binding if not user.stale else None
        body.update({
            "registrationExpiry": round(b.expires_at - b.last_refresh) if b else None,
            "transportProtocol": b.transport.upper() if b else None,
            "userAgent": b.user_agent if b else None,
            "contactUri": b.contact if b else None,
            "lastActivity": iso_z(self.view.unix(b.last_refresh), millis=False) if b else None,
            "callsActive": 0,
            "callsQueued": 0,
        })
        return JSONResponse(body)

    async def bulk_status(self, request: Request) -> Response:
        problem = self._account_error(request)
        if problem is not None:
            return problem
        q = request.query_params
        status, kind = q.get("status"), q.get("type")
        if status is not None and status not in STATUSES:
            return audian_error(400, "invalid", f"status must be one of {', '.join(STATUSES)}")
        if kind is not None and kind not in TYPES:
            return audian_error(400, "invalid", f"type must be one of {', '.join(TYPES)}")
        limit, offset = int_param(q.get("limit"), DEFAULT_LIMIT), int_param(q.get("offset"), 0)
        if limit is None or not 1 <= limit <= MAX_LIMIT:
            return audian_error(400, "invalid", f"limit must be an integer 1-{MAX_LIMIT}")
        if offset is None or offset < 0:
            return audian_error(400, "invalid", "offset must be an integer >= 0")
        rows: list[dict[str, Any]] = []
        if kind in (None, "sip"):
            for device_id, username, name in self._devices():
                user = self.view.view(username, "audian")
                row: dict[str, Any] = {"deviceId": device_id, "name": name, "status": self._status(user)}
                if status is None or row["status"] == status:
                    row.update(self._times(user))
                    rows.append(row)
        counts = Counter(r["status"] for r in rows)
        return JSONResponse({
            "data": rows[offset:offset + limit],
            "pagination": {"total": len(rows), "registered": counts["registered"],
                           "unregistered": len(rows) - counts["registered"] - counts["offline"],
                           "offline": counts["offline"]},
        })

    async def renew(self, request: Request) -> Response:
        found = self._device(request)
        if isinstance(found, Response):
            return found
        device_id, name = found
        user = self.view.view(name, "audian")
        status = self._status(user)
        registered = status == "registered" and user.binding is not None
        return JSONResponse({
            "deviceId": device_id,
            "status": status,
            "renewedAt": iso_z(self._wall(), millis=False) if registered else None,
            "expiresAt": self._times(user)["expiresAt"],
            "message": "Registration renewed successfully" if registered
            else "Device is not registered; it renews when it registers again",
        })

    async def unregister(self, request: Request) -> Response:
        found = self._device(request)
        if isinstance(found, Response):
            return found
        device_id, name = found
        self.view.unregister(name)
        return JSONResponse({"deviceId": device_id, "status": "unregistered",
                             "unregisteredAt": iso_z(self._wall(), millis=False),
                             "message": "Device unregistered successfully"})

    async def dashboard(self, request: Request) -> Response:
        problem = self._account_error(request)
        if problem is not None:
            return problem
        counts: Counter[str] = Counter()
        alerts: list[dict[str, str]] = []
        for device_id, username, name in self._devices():
            status = self._status(self.view.view(username, "audian"))
            counts[status] += 1
            if status == "invalid" and len(alerts) < 100:
                alerts.append({"severity": "warning", "message": f"Device registration invalid: {name}",
                               "deviceId": device_id})
        total = sum(counts.values())
        unregistered = total - counts["registered"] - counts["offline"] - counts["provisioning"]
        return JSONResponse({
            "timestamp": iso_z(self._wall(), millis=False),
            "summary": {"total": total, "registered": counts["registered"], "unregistered": unregistered,
                        "offline": counts["offline"], "provisioning": counts["provisioning"]},
            "byType": {"sip": {"total": total, "registered": counts["registered"], "unregistered": unregistered},
                       "softphone": {"total": 0, "registered": 0, "unregistered": 0},
                       "webrtc": {"total": 0, "registered": 0, "offline": 0}},
            "alerts": alerts,
        })

    async def analytics(self, request: Request) -> Response:
        """One data point (now): the emulator keeps no history."""
        problem = self._account_error(request)
        if problem is not None:
            return problem
        counts = Counter(self._status(self.view.view(name, "audian")) for _, name, _ in self._devices())
        registered = counts["registered"]
        total = sum(counts.values())
        return JSONResponse({
            "period": request.query_params.get("period", "24h"),
            "data": [{"timestamp": iso_z(self._wall(), millis=False), "registered": registered,
                      "unregistered": total - registered - counts["offline"], "offline": counts["offline"]}],
            "averageUptime": round(100.0 * registered / total, 1) if total else 0.0,
            "peakRegistrations": registered,
            "lowestRegistrations": registered,
        })

    async def create_device(self, request: Request) -> Response:
        problem = self._account_error(request)
        if problem is not None:
            return problem
        body = await json_body(request)
        data = body.get("data") if isinstance(body, dict) else None
        sip = data.get("sip") if isinstance(data, dict) else None
        username = sip.get("username") if isinstance(sip, dict) else None
        if not isinstance(data, dict) or not isinstance(username, str) or not username:
            return audian_error(400, "invalid", "data.sip.username is required")
        name = data.get("name") if isinstance(data.get("name"), str) else username
        device_id = self.provision(username, name)
        return JSONResponse({"auth_token": "", "request_id": f"req-{len(self._created)}", "status": "success",
                             "data": {"id": device_id, "name": name, "device_type": "sip_device",
                                      "sip": {"username": username}, "enabled": True}}, 201)

    # --- webhooks -------------------------------------------------------------------------------
    async def subscribe(self, request: Request) -> Response:
        problem = self._account_error(request)
        if problem is not None:
            return problem
        body = await json_body(request)
        if not isinstance(body, dict):
            return audian_error(400, "invalid", "the body must be a JSON object with url and events")
        url, events = body.get("url"), body.get("events")
        if not isinstance(url, str) or not _http_url(url):
            return audian_error(400, "invalid", "url must be an absolute http:// or https:// URL")
        if (not isinstance(events, list) or not events
                or not all(isinstance(e, str) and e in EVENTS for e in events)):
            return audian_error(400, "invalid", f"events must be a non-empty list of {', '.join(EVENTS)}")
        account = request.path_params["account"]
        if len(self.hub.of_account(account)) >= MAX_SUBSCRIPTIONS:
            return audian_error(400, "invalid", f"at most {MAX_SUBSCRIPTIONS} webhooks per account")
        sub = self.hub.subscribe(account, url, tuple(dict.fromkeys(events)))
        return JSONResponse(sub.shape(), 201)

    async def subscriptions(self, request: Request) -> Response:
        problem = self._account_error(request)
        if problem is not None:
            return problem
        subs = self.hub.of_account(request.path_params["account"])
        return JSONResponse({"data": [s.shape() for s in subs], "pagination": {"total": len(subs)}})

    def _subscription(self, request: Request) -> str | Response:
        problem = self._account_error(request)
        if problem is not None:
            return problem
        webhook_id = str(request.path_params["webhook"])
        sub = self.hub.subscriptions.get(webhook_id)
        if sub is None or sub.account != request.path_params["account"]:
            return audian_error(404, "not_found", f"webhook {webhook_id} not found")
        return webhook_id

    async def subscription(self, request: Request) -> Response:
        found = self._subscription(request)
        if isinstance(found, Response):
            return found
        return JSONResponse(self.hub.subscriptions[found].shape())

    async def unsubscribe(self, request: Request) -> Response:
        found = self._subscription(request)
        if isinstance(found, Response):
            return found
        self.hub.unsubscribe(found)
        return JSONResponse({"webhookId": found, "status": "deleted",
                             "deletedAt": iso_z(self._wall(), millis=False),
                             "message": "Webhook deleted successfully"})

    # --- troubleshooting ------------------------------------------------------------------------
    async def credentials(self, request: Request) -> Response:
        found = self._device(request)
        if isinstance(found, Response):
            return found
        device_id, user = found
        realm = self.registrar.settings.realm if self.registrar is not None else None
        return JSONResponse({"deviceId": device_id, "username": user, "realm": realm})

    async def logs(self, request: Request) -> Response:
        found = self._device(request)
        if isinstance(found, Response):
            return found
        device_id, user = found
        lines = int_param(request.query_params.get("lines"), DEFAULT_LOG_LINES)
        if lines is None or not 1 <= lines <= MAX_LOG_LINES:
            return audian_error(400, "invalid", f"lines must be an integer 1-{MAX_LOG_LINES}")
        log = self.registrar.device_log if self.registrar is not None else None
        unix = self.view.unix
        entries = [{"timestamp": iso_z(unix(line.at)), "event": line.kind, "message": line.text}
                   for line in (log.lines(user, lines) if log is not None else [])]
        return JSONResponse({"deviceId": device_id, "lines": len(entries), "logs": entries})

    async def settings(self, request: Request) -> Response:
        found = self._device(request)
        if isinstance(found, Response):
            return found
        device_id, user = found
        if self.registrar is None:
            return audian_error(400, "invalid", "device settings need the embedded registrar")
        body = await json_body(request)
        settings = body.get("settings") if isinstance(body, dict) else None
        expiry = settings.get("registrationExpiry") if isinstance(settings, dict) else None
        low, high = EXPIRY_RANGE
        if (not isinstance(settings, dict) or set(settings) - {"registrationExpiry"}
                or isinstance(expiry, bool) or not isinstance(expiry, int) or not low <= expiry <= high):
            return audian_error(400, "invalid", f"settings.registrationExpiry must be an integer {low}-{high} "
                                                "(the only setting the emulator applies)")
        self.registrar.expiry_overrides[user] = expiry
        return JSONResponse({"deviceId": device_id,
                             "settings": {"registrationExpiry": expiry, **DOCUMENTED_SETTINGS},
                             "updatedAt": iso_z(self._wall(), millis=False)})


def _http_url(text: str) -> bool:
    parts = urlsplit(text)
    return parts.scheme in ("http", "https") and bool(parts.hostname)
