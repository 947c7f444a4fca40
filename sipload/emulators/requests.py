"""Small readers of an emulator's HTTP request: query integers and JSON bodies, without raising."""

from __future__ import annotations

import json

from starlette.requests import Request


def int_param(text: str | None, default: int) -> int | None:
    """A query parameter as an int: `default` when absent, None when it is not a number."""
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        return None


async def json_body(request: Request, empty: object = None) -> object:
    """The request's JSON body: `empty` when there is none, None when it is not JSON."""
    raw = await request.body()
    if not raw:
        return empty
    try:
        value: object = json.loads(raw)
    except ValueError:
        return None
    return value
