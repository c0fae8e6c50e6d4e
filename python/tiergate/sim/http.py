"""Small HTTP helpers shared by the protocol modules."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

__all__ = ["BadRequest", "arr", "json_response", "obj", "read_json", "seconds"]


class BadRequest(Exception):
    """The request does not follow the protocol; rendered as that protocol's 400."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def json_response(
    obj: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(obj),
        status=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


async def read_json(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        raise BadRequest("the request body is empty")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None


def seconds(value: float) -> str:
    """A Retry-After value: whole seconds when whole, else up to milliseconds."""
    if value == int(value):
        return str(int(value))
    return f"{value:.3f}".rstrip("0")


def obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest(f"{where}: expected an object", where)
    return value


def arr(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise BadRequest(f"{where}: expected an array", where)
    return value
