"""``tiergate serve``: load the config, open provider sessions, serve until signalled.

Readiness turns on once every provider session is open. SIGHUP or a change of the
config file reloads it whole (a broken file is rejected and the running config stays).
Shutdown drains: the listening sockets close first, in-flight requests get
``server.shutdown_timeout_s`` to finish, then provider sessions close.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import uvloop
from aiohttp import web

from tiergate.config import Config, load_config
from tiergate.errors import ConfigError
from tiergate.server.admin import make_admin_app
from tiergate.server.app import make_handler
from tiergate.server.state import Gateway, Runtime
from tiergate.telemetry.http import add_admin_routes
from tiergate.telemetry.hub import Telemetry

__all__ = ["RunningServer", "serve_main", "start_server"]

log = logging.getLogger("tiergate")


@dataclass(slots=True)
class RunningServer:
    runtime: Runtime
    telemetry: Telemetry
    runner: web.ServerRunner
    admin_runner: web.AppRunner
    url: str
    admin_url: str

    async def stop(self) -> None:
        await self.runner.cleanup()
        await self.admin_runner.cleanup()
        await self.runtime.close()
        await self.telemetry.stop()


def _bound_port(runner: web.BaseRunner) -> int:
    for site in runner.sites:
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            return int(server.sockets[0].getsockname()[1])
    raise RuntimeError("site is not listening")


async def start_server(
    config: Config,
    port: int | None = None,
    admin_port: int | None = None,
    config_path: Path | None = None,
    telemetry: Telemetry | None = None,
) -> RunningServer:
    """Start both ports (0 = ephemeral); readiness turns on once providers are open."""
    runtime = Runtime(Gateway(config), config_path)
    if telemetry is None:
        telemetry = Telemetry.from_config(config)
    await telemetry.start()
    runtime.on_reload.append(telemetry.reconfigure)
    host = config.server.host
    timeout = config.server.shutdown_timeout_s
    admin_app = make_admin_app(runtime)
    if config.telemetry.prometheus:
        add_admin_routes(admin_app, telemetry)
    admin_runner = web.AppRunner(admin_app, shutdown_timeout=timeout, access_log=None)
    await admin_runner.setup()
    await web.TCPSite(
        admin_runner, host, config.server.admin_port if admin_port is None else admin_port
    ).start()
    runner = web.ServerRunner(
        web.Server(
            make_handler(runtime, telemetry),
            access_log=None,
            keepalive_timeout=config.server.keepalive_timeout_s,
        ),
        shutdown_timeout=timeout,
    )
    await runner.setup()
    await web.TCPSite(
        runner, host, config.server.port if port is None else port, backlog=1024
    ).start()
    await runtime.current.open()
    return RunningServer(
        runtime,
        telemetry,
        runner,
        admin_runner,
        f"http://{host}:{_bound_port(runner)}",
        f"http://{host}:{_bound_port(admin_runner)}",
    )


async def _serve(config: Config, path: Path, port: int | None, admin_port: int | None) -> None:
    server = await start_server(config, port, admin_port, config_path=path)
    server.runtime.install()
    # Everything loaded so far lives as long as the process: keep it out of the cyclic
    # collector's way, and collect the young generation less often (the request path
    # allocates many short-lived objects and few cycles).
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    print(f"tiergate listening on {server.url} (admin {server.admin_url})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: draining in-flight requests")
    await server.stop()


def serve_main(config_path: str, port: int | None, admin_port: int | None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"tiergate: {exc}", file=sys.stderr)
        return 2
    uvloop.run(_serve(config, Path(config_path), port, admin_port))
    return 0
