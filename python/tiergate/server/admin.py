"""The admin port: liveness and readiness (metrics join it with telemetry)."""

from __future__ import annotations

import orjson
from aiohttp import web

from tiergate.server.state import Gateway

__all__ = ["make_admin_app"]

ADMIN_GATEWAY: web.AppKey[Gateway] = web.AppKey("admin_gateway", Gateway)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


async def readyz(request: web.Request) -> web.Response:
    """200 only once the config is loaded and every provider session is open."""
    gateway = request.app[ADMIN_GATEWAY]
    if not gateway.ready:
        return web.Response(body=b'{"status":"starting"}', status=503, content_type="application/json")
    body = {"status": "ready", "deployments": len(gateway.config.deployments)}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def make_admin_app(gateway: Gateway) -> web.Application:
    app = web.Application()
    app[ADMIN_GATEWAY] = gateway
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
