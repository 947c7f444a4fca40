"""Ultravox emulator (mounted at `/api/sip/registrations`): SIP registrations that really REGISTER.

Theory of operation
-------------------
Each SipRegistration lives here (the password in memory only: write-only, never in an answer or a
repr). Creating one starts a REGISTER in `SipAgent` to `outboundProxy` (else `proxy`); `successful`
is the agent's outcome (None until known). PATCH restarts it with the new fields; DELETE
unregisters it and answers 204.

List: DRF cursor pagination, newest first: `?cursor=&pageSize=` (1-1000, default 100) ->
`{"next": url|null, "previous": url|null, "results": [...], "total": n}`; `next`/`previous` are
full URLs carrying `cursor` (base64 of the offset). Errors are DRF's: `{"detail": "..."}`, and 400
`{"field": ["message"]}` for invalid bodies. Auth: `X-API-Key`.
"""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sipload.emulators.gate import FORBIDDEN, RATE_LIMITED, UNAUTHENTICATED, Gate
from sipload.emulators.requests import json_body
from sipload.emulators.ultravox_agent import SipAgent, resolve, split_hostport
from sipload.emulators.views import iso_z
from sipload.transport.addresses import AddressError

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
_LIMITS = {"username": 60, "proxy": 100, "outboundProxy": 100, "authUser": 60}
_DETAILS = {
    UNAUTHENTICATED: "Invalid API key.",
    FORBIDDEN: "You do not have permission to perform this action.",
    "not_found": "Not found.",
    RATE_LIMITED: "Request was throttled.",
}


def ultravox_error(status: int, kind: str, detail: str | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail or _DETAILS.get(kind, "Bad request.")}, status)


def read_api_key(request: Request) -> str | None:
    return request.headers.get("x-api-key") or None


@dataclass
class SipRegistration:
    registration_id: str
    created: float
    username: str
    proxy: str
    outbound_proxy: str | None
    auth_user: str | None
    password: str = field(repr=False)
    problem: str | None = None      # set when the proxy could not be resolved (successful: false)


class UltravoxEmulator:
    def __init__(self, agent: SipAgent, gate: Gate, wall: Callable[[], float] = time.time) -> None:
        self.agent = agent
        self.gate = gate
        self._wall = wall
        self._registrations: dict[str, SipRegistration] = {}  # in creation order

    def routes(self, base: str = "/api/sip/registrations") -> list[BaseRoute]:
        g = self.gate.guard
        return [
            Route(base, g(self.list_registrations), methods=["GET"]),
            Route(base, g(self.create), methods=["POST"]),
            Route(f"{base}/{{id}}", g(self.get), methods=["GET"]),
            Route(f"{base}/{{id}}", g(self.update), methods=["PATCH"]),
            Route(f"{base}/{{id}}", g(self.delete), methods=["DELETE"]),
            Route("/api/{path:path}", g(self.not_found), methods=["GET", "POST", "PATCH", "PUT", "DELETE"]),
        ]

    def to_json(self, reg: SipRegistration) -> dict[str, Any]:
        successful = False if reg.problem is not None else self.agent.outcome(reg.registration_id)
        return {
            "registrationId": reg.registration_id,
            "created": iso_z(reg.created),
            "username": reg.username,
            "proxy": reg.proxy,
            "outboundProxy": reg.outbound_proxy,
            "authUser": reg.auth_user,
            "successful": successful,
        }

    async def not_found(self, request: Request) -> Response:
        return ultravox_error(404, "not_found")

    async def list_registrations(self, request: Request) -> Response:
        q = request.query_params
        size_text = q.get("pageSize")
        try:
            size = int(size_text) if size_text else DEFAULT_PAGE_SIZE
        except ValueError:
            size = -1
        if not 1 <= size <= MAX_PAGE_SIZE:
            return JSONResponse({"pageSize": [f"Ensure this value is between 1 and {MAX_PAGE_SIZE}."]}, 400)
        cursor = q.get("cursor")
        offset = _decode_cursor(cursor) if cursor else 0
        if offset is None:
            return ultravox_error(404, "not_found", "Invalid cursor")
        items = list(reversed(self._registrations.values()))  # newest first
        page = items[offset:offset + size]

        def link(at: int) -> str:
            return str(request.url.include_query_params(cursor=_encode_cursor(at), pageSize=size))

        return JSONResponse({
            "next": link(offset + size) if offset + size < len(items) else None,
            "previous": link(max(0, offset - size)) if offset > 0 else None,
            "results": [self.to_json(r) for r in page],
            "total": len(items),
        })

    async def create(self, request: Request) -> Response:
        body = await json_body(request)
        problems = _validate(body, partial=False)
        if problems:
            return JSONResponse(problems, 400)
        assert isinstance(body, dict)
        reg = SipRegistration(str(uuid.uuid4()), self._wall(), body["username"], body["proxy"],
                              body.get("outboundProxy") or None, body.get("authUser") or None,
                              password=body["password"])
        self._registrations[reg.registration_id] = reg
        await self._start(reg)
        return JSONResponse(self.to_json(reg), 201)

    async def get(self, request: Request) -> Response:
        reg = self._registrations.get(request.path_params["id"])
        if reg is None:
            return ultravox_error(404, "not_found")
        return JSONResponse(self.to_json(reg))

    async def update(self, request: Request) -> Response:
        reg = self._registrations.get(request.path_params["id"])
        if reg is None:
            return ultravox_error(404, "not_found")
        body = await json_body(request)
        problems = _validate(body, partial=True)
        if problems:
            return JSONResponse(problems, 400)
        assert isinstance(body, dict)
        reg.username = body.get("username", reg.username)
        reg.proxy = body.get("proxy", reg.proxy)
        reg.password = body.get("password", reg.password)
        if "outboundProxy" in body:
            reg.outbound_proxy = body["outboundProxy"] or None
        if "authUser" in body:
            reg.auth_user = body["authUser"] or None
        await self._start(reg)
        return JSONResponse(self.to_json(reg))

    async def delete(self, request: Request) -> Response:
        reg = self._registrations.pop(request.path_params["id"], None)
        if reg is None:
            return ultravox_error(404, "not_found")
        self.agent.stop(reg.registration_id)
        return Response(status_code=204)

    async def _start(self, reg: SipRegistration) -> None:
        self.agent.stop(reg.registration_id)
        try:
            destination = await resolve(reg.outbound_proxy or reg.proxy)
        except (OSError, ValueError) as exc:
            reg.problem = f"cannot resolve the proxy: {exc}"
            return
        reg.problem = None
        try:
            self.agent.start(reg.registration_id, username=reg.username, password=reg.password, proxy=reg.proxy,
                             outbound_proxy=reg.outbound_proxy, auth_user=reg.auth_user, destination=destination)
        except (AddressError, OSError) as exc:
            reg.problem = f"cannot send to the proxy: {exc}"


def _validate(body: object, *, partial: bool) -> dict[str, list[str]]:
    if not isinstance(body, dict):
        return {"non_field_errors": ["Invalid data. Expected a dictionary."]}
    problems: dict[str, list[str]] = {}
    for name in ("username", "password", "proxy"):
        if name not in body and not partial:
            problems[name] = ["This field is required."]
        elif name in body and (not isinstance(body[name], str) or not body[name]):
            problems[name] = ["This field may not be blank."]
    for name in ("outboundProxy", "authUser"):
        if body.get(name) is not None and not isinstance(body[name], str):
            problems[name] = ["Not a valid string."]
    for name, limit in _LIMITS.items():
        value = body.get(name)
        if isinstance(value, str) and len(value) > limit:
            problems.setdefault(name, []).append(f"Ensure this field has no more than {limit} characters.")
    for name in ("proxy", "outboundProxy"):
        value = body.get(name)
        if isinstance(value, str) and value and name not in problems:
            try:
                split_hostport(value)
            except ValueError as exc:
                problems[name] = [str(exc)]
    return problems


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o={offset}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int | None:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    key, _, value = text.partition("=")
    if key != "o" or not value.isdigit():
        return None
    return int(value)
