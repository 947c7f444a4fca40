"""Telnyx emulator (mounted at `/v2`): credential connections and their registration status.

Theory of operation
-------------------
`TelnyxDirectory` holds the credential connections. Every user the registrar has seen gets one
(synced from the store on every list, get and check), and `POST /credential_connections` adds
more (so a never-seen user can be checked: "Not Registered"). A connection's id is a 19-digit
numeric string derived from its user_name (stable across restarts). A deleted connection stays
deleted even if the registrar sees its user again.

`POST /credential_connections/{id}/actions/check_registration_status` answers the user's state
through `views.TELNYX_STATUS`; an inactive connection is "Not Applicable". The connection object
has no status field (as on Telnyx) and never carries the SIP password.

Shapes, errors (`{"errors":[{code,title,detail,source,meta}]}` with codes 10015/10009/10010/
10005/10011), pagination (`page[number]`, `page[size]` 1-250, `meta`), filters and sort follow
PROVIDERS.md; the official SDK (`AsyncTelnyx(base_url=".../v2")`) is the proof.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sipload.emulators.gate import FORBIDDEN, RATE_LIMITED, UNAUTHENTICATED, Gate
from sipload.emulators.requests import int_param, json_body
from sipload.emulators.views import TELNYX_STATUS, StoreView, iso_z

MAX_PAGE_SIZE = 250
SORT_FIELDS = ("created_at", "connection_name", "active")
_USER_NAME = re.compile(r"^[A-Za-z0-9]{4,32}$")
_ERRORS: dict[str, tuple[str, str, str]] = {  # kind -> (code, title, detail)
    "bad_request": ("10015", "Bad Request", "The request failed because it was not well-formed."),
    UNAUTHENTICATED: ("10009", "Authentication failed", "Could not understand the provided credentials."),
    FORBIDDEN: ("10010", "Not authorized", "You are not authorized to access the requested resource."),
    "not_found": ("10005", "Resource not found", "The requested resource or URL could not be found."),
    RATE_LIMITED: ("10011", "Too many requests", "Too many requests. Please retry later."),
}


def telnyx_error(status: int, kind: str, detail: str | None = None, pointer: str | None = "/") -> JSONResponse:
    code, title, default = _ERRORS.get(kind, _ERRORS["bad_request"])
    error: dict[str, Any] = {"code": code, "title": title, "detail": detail or default,
                             "meta": {"url": f"https://developers.telnyx.com/docs/overview/errors/{code}"}}
    if pointer is not None:
        error["source"] = {"pointer": pointer}
    return JSONResponse({"errors": [error]}, status)


def telnyx_gate_error(status: int, kind: str) -> Response:
    return telnyx_error(status, kind, pointer=None if kind == UNAUTHENTICATED else "/")


def read_bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def connection_id(user_name: str) -> str:
    """A stable 19-digit numeric id, like Telnyx's ("1293384261075731499")."""
    value = int.from_bytes(hashlib.blake2b(user_name.encode(), digest_size=8).digest(), "big")
    return str(10**18 + value % (9 * 10**18))


@dataclass
class Connection:
    id: str
    user_name: str
    connection_name: str
    created_at: float
    updated_at: float
    seq: int
    active: bool = True
    tags: list[str] = field(default_factory=list)
    sip_uri_calling_preference: str = "disabled"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "record_type": "credential_connection",
            "active": self.active,
            "connection_name": self.connection_name,
            "user_name": self.user_name,
            "sip_uri_calling_preference": self.sip_uri_calling_preference,
            "anchorsite_override": "Latency",
            "default_on_hold_comfort_noise_enabled": False,
            "dtmf_type": "RFC 2833",
            "encode_contact_header_enabled": False,
            "onnet_t38_passthrough_enabled": False,
            "webhook_api_version": "1",
            "webhook_event_url": None,
            "webhook_event_failover_url": None,
            "webhook_timeout_secs": None,
            "tags": list(self.tags),
            "created_at": iso_z(self.created_at),
            "updated_at": iso_z(self.updated_at),
        }


class TelnyxDirectory:
    """The credential connections (see the module docstring)."""

    def __init__(self, view: StoreView, wall: Callable[[], float] = time.time) -> None:
        self._view = view
        self._wall = wall
        self._by_id: dict[str, Connection] = {}
        self._by_user: dict[str, Connection] = {}
        self._deleted: set[str] = set()
        self._seq = 0
        self._version = 0     # bumped on every change: invalidates the cached listing
        self._listed: tuple[tuple[str | None, str, int], list[Connection]] | None = None

    def sync(self) -> None:
        for user in self._view.users():
            if user not in self._by_user and user not in self._deleted:
                self._add(user, user)

    def create(self, user_name: str, connection_name: str, active: bool, tags: list[str]) -> Connection:
        self._deleted.discard(user_name)
        conn = self._add(user_name, connection_name)
        conn.active = active
        conn.tags = tags
        self._version += 1
        return conn

    def exists(self, user_name: str) -> bool:
        return user_name in self._by_user

    def get(self, conn_id: str) -> Connection | None:
        conn = self._by_id.get(conn_id)
        if conn is None:  # perhaps a user seen since the last sync
            self.sync()
            conn = self._by_id.get(conn_id)
        return conn

    def delete(self, conn_id: str) -> Connection | None:
        conn = self.get(conn_id)
        if conn is not None:
            del self._by_id[conn.id]
            del self._by_user[conn.user_name]
            self._deleted.add(conn.user_name)
            self._version += 1
        return conn

    def touch(self, conn: Connection) -> None:
        conn.updated_at = self._wall()
        self._version += 1

    def listing(self, contains: str | None, sort: str) -> list[Connection]:
        """The connections filtered and sorted; cached while nothing changes (pages of one listing)."""
        self.sync()
        key = (contains, sort, self._version)
        if self._listed is not None and self._listed[0] == key:
            return self._listed[1]
        items = self._sorted(contains, sort)
        self._listed = (key, items)
        return items

    def _sorted(self, contains: str | None, sort: str) -> list[Connection]:
        items = list(self._by_id.values())
        if contains:
            needle = contains.lower()
            items = [c for c in items if needle in c.connection_name.lower()]
        descending = sort.startswith("-")
        name = sort.lstrip("-")
        key: Callable[[Connection], Any]
        if name == "connection_name":
            key = lambda c: (c.connection_name, c.seq)  # noqa: E731
        elif name == "active":
            key = lambda c: (c.active, c.seq)  # noqa: E731
        else:
            key = lambda c: (c.created_at, c.seq)  # noqa: E731
        return sorted(items, key=key, reverse=descending)

    def _add(self, user_name: str, connection_name: str) -> Connection:
        conn_id = connection_id(user_name)
        while conn_id in self._by_id:  # a hash collision: next free number
            conn_id = str(int(conn_id) + 1)
        self._seq += 1
        now = self._wall()
        conn = Connection(conn_id, user_name, connection_name, now, now, self._seq)
        self._by_id[conn_id] = conn
        self._by_user[user_name] = conn
        self._version += 1
        return conn


class TelnyxEmulator:
    def __init__(self, view: StoreView, gate: Gate, wall: Callable[[], float] = time.time) -> None:
        self.view = view
        self.gate = gate
        self.directory = TelnyxDirectory(view, wall)

    def routes(self, prefix: str = "/v2") -> list[BaseRoute]:
        g = self.gate.guard
        return [
            Route(f"{prefix}/credential_connections", g(self.list_connections), methods=["GET"]),
            Route(f"{prefix}/credential_connections", g(self.create_connection), methods=["POST"]),
            Route(f"{prefix}/credential_connections/{{id}}", g(self.get_connection), methods=["GET"]),
            Route(f"{prefix}/credential_connections/{{id}}", g(self.update_connection), methods=["PATCH"]),
            Route(f"{prefix}/credential_connections/{{id}}", g(self.delete_connection), methods=["DELETE"]),
            Route(f"{prefix}/credential_connections/{{id}}/actions/check_registration_status",
                  g(self.check_registration_status), methods=["POST"]),
            Route(prefix + "/{path:path}", g(self.not_found), methods=["GET", "POST", "PATCH", "PUT", "DELETE"]),
        ]

    async def not_found(self, request: Request) -> Response:
        return telnyx_error(404, "not_found")

    async def list_connections(self, request: Request) -> Response:
        q = request.query_params
        number = int_param(q.get("page[number]"), 1)
        size = int_param(q.get("page[size]"), MAX_PAGE_SIZE)
        if number is None or number < 1:
            return telnyx_error(400, "bad_request", "page[number] must be an integer >= 1", "/page/number")
        if size is None or not 1 <= size <= MAX_PAGE_SIZE:
            return telnyx_error(400, "bad_request", f"page[size] must be an integer 1-{MAX_PAGE_SIZE}", "/page/size")
        sort = q.get("sort", "-created_at")
        if sort.lstrip("-") not in SORT_FIELDS:
            return telnyx_error(400, "bad_request", f"sort must be one of {', '.join(SORT_FIELDS)}", "/sort")
        contains = q.get("filter[connection_name][contains]")
        items = self.directory.listing(contains, sort)
        start = (number - 1) * size
        return JSONResponse({
            "data": [c.to_json() for c in items[start:start + size]],
            "meta": {"page_number": number, "page_size": size, "total_pages": math.ceil(len(items) / size),
                     "total_results": len(items)},
        })

    async def create_connection(self, request: Request) -> Response:
        body = await json_body(request, {})
        if not isinstance(body, dict):
            return telnyx_error(400, "bad_request", "The request body must be a JSON object.")
        problems: list[tuple[str, str]] = []
        name = body.get("connection_name")
        user = body.get("user_name")
        password = body.get("password")
        if not isinstance(name, str) or not name:
            problems.append(("/connection_name", "connection_name is required"))
        if not isinstance(user, str) or not _USER_NAME.match(user) or not any(ch.isalpha() for ch in user[:5]):
            problems.append(("/user_name", "user_name must be 4-32 letters or digits, with a letter in the first 5"))
        elif self.directory.exists(user):
            problems.append(("/user_name", "user_name has already been taken"))
        if not isinstance(password, str) or not 8 <= len(password) <= 128:
            problems.append(("/password", "password must be 8-128 characters"))
        tags = body.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            problems.append(("/tags", "tags must be a list of strings"))
        if problems:
            return JSONResponse({"errors": [
                {"code": "10015", "title": "Bad Request", "detail": detail, "source": {"pointer": pointer},
                 "meta": {"url": "https://developers.telnyx.com/docs/overview/errors/10015"}}
                for pointer, detail in problems]}, 422)
        assert isinstance(name, str) and isinstance(user, str)
        conn = self.directory.create(user, name, bool(body.get("active", True)), list(tags))
        return JSONResponse({"data": conn.to_json()}, 201)

    async def get_connection(self, request: Request) -> Response:
        conn = self.directory.get(request.path_params["id"])
        if conn is None:
            return telnyx_error(404, "not_found")
        return JSONResponse({"data": conn.to_json()})

    async def update_connection(self, request: Request) -> Response:
        conn = self.directory.get(request.path_params["id"])
        if conn is None:
            return telnyx_error(404, "not_found")
        body = await json_body(request, {})
        if not isinstance(body, dict):
            return telnyx_error(400, "bad_request", "The request body must be a JSON object.")
        if "connection_name" in body:
            if not isinstance(body["connection_name"], str) or not body["connection_name"]:
                return telnyx_error(422, "bad_request", "connection_name must be a string", "/connection_name")
            conn.connection_name = body["connection_name"]
        if "active" in body:
            conn.active = bool(body["active"])
        if "tags" in body and isinstance(body["tags"], list):
            conn.tags = [str(t) for t in body["tags"]]
        self.directory.touch(conn)
        return JSONResponse({"data": conn.to_json()})

    async def delete_connection(self, request: Request) -> Response:
        conn = self.directory.delete(request.path_params["id"])
        if conn is None:
            return telnyx_error(404, "not_found")
        return JSONResponse({"data": conn.to_json()})

    async def check_registration_status(self, request: Request) -> Response:
        conn = self.directory.get(request.path_params["id"])
        if conn is None:
            return telnyx_error(404, "not_found")
        user = self.view.view(conn.user_name, "telnyx")
        data: dict[str, Any] = {
            "record_type": "registration_status",
            "status": TELNYX_STATUS[user.state] if conn.active else "Not Applicable",
            "sip_username": conn.user_name,
        }
        binding = user.binding if not user.stale else None
        if binding is not None:
            data.update({
                "ip_address": binding.source[0],
                "port": binding.source[1],
                "transport": binding.transport.upper(),
                "user_agent": binding.user_agent or "",
                "last_registration": iso_z(self.view.unix(binding.last_refresh)),
            })
        elif user.since is not None:
            data["last_registration"] = iso_z(self.view.unix(user.since))
        return JSONResponse({"data": data})
