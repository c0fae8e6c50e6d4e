"""HTTP handlers telemetry adds to the sidecar: ``GET /metrics`` (admin) and ``POST /v1/feedback``."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from tiergate.telemetry.hub import Telemetry

__all__ = [
    "TELEMETRY",
    "add_admin_routes",
    "feedback_handler",
    "metrics_handler",
]

TELEMETRY: web.AppKey[Telemetry] = web.AppKey("telemetry", Telemetry)


async def metrics_handler(request: web.Request) -> web.Response:
    body = request.app[TELEMETRY].metrics.exposition()
    return web.Response(body=body, headers={"content-type": CONTENT_TYPE_LATEST})


def _error(
    message: str, param: str | None, status: int = 400, code: str | None = None
) -> web.Response:
    body: dict[str, Any] = {
        "error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    }
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def feedback_handler(
    telemetry: Telemetry, read: Callable[[web.BaseRequest], Awaitable[bytes]]
) -> Handler:
    """``POST /v1/feedback`` for ``telemetry``, its body taken by ``read`` (the traffic
    port's reader: its size limit and slow-client timeout)."""

    async def feedback(request: web.BaseRequest) -> web.Response:
        """``{"request_id": str, "score": number in [0, 1]}`` → 200 ``{"status": "recorded"}``.

        404 ``unknown_request_id`` when the id is not (or no longer) remembered.
        """
        try:
            body = orjson.loads(await read(request))
        except orjson.JSONDecodeError:
            return _error("the request body is not valid JSON", None)
        if not isinstance(body, dict):
            return _error("the request body must be a JSON object", None)
        rid = body.get("request_id")
        if not isinstance(rid, str) or not rid:
            return _error("`request_id` is required and must be a non-empty string", "request_id")
        score = body.get("score")
        if (
            isinstance(score, bool)
            or not isinstance(score, int | float)
            or not math.isfinite(score)
            or not 0 <= score <= 1
        ):
            return _error("`score` is required and must be a number between 0 and 1", "score")
        if not telemetry.add_feedback(rid, float(score)):
            return _error(
                "no recent request has this `request_id`", "request_id", 404, "unknown_request_id"
            )
        return web.Response(body=b'{"status":"recorded"}', content_type="application/json")

    return feedback


def add_admin_routes(app: web.Application, telemetry: Telemetry) -> None:
    """Mount ``GET /metrics`` on the admin app."""
    app[TELEMETRY] = telemetry
    app.router.add_get("/metrics", metrics_handler)
