"""The admin port: liveness and readiness (metrics join it with telemetry)."""

from __future__ import annotations

import orjson
from aiohttp import web

from tiergate.server.state import Runtime

__all__ = ["make_admin_app"]

ADMIN_RUNTIME: web.AppKey[Runtime] = web.AppKey("admin_runtime", Runtime)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


async def readyz(request: web.Request) -> web.Response:
    """200 only once the config is loaded and every provider session is open."""
    gateway = request.app[ADMIN_RUNTIME].current
    if not gateway.ready:
        return web.Response(
            body=b'{"status":"starting"}', status=503, content_type="application/json"
        )
    body = {"status": "ready", "deployments": len(gateway.config.deployments)}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def reload(request: web.Request) -> web.Response:
    """Reload the config file now; 422 with the problems when it is rejected."""
    problems = await request.app[ADMIN_RUNTIME].reload()
    if problems:
        return web.Response(
            body=orjson.dumps({"status": "rejected", "problems": problems}),
            status=422,
            content_type="application/json",
        )
    return web.Response(body=b'{"status":"reloaded"}', content_type="application/json")


def make_admin_app(runtime: Runtime) -> web.Application:
    app = web.Application()
    app[ADMIN_RUNTIME] = runtime
    app.router.add_post("/reload", reload)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
