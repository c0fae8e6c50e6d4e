"""``tiergate sim --config FILE``: run the simulators until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys

import uvloop

from tiergate.config import Config, load_config
from tiergate.errors import ConfigError
from tiergate.sim.server import SimServer

__all__ = ["sim_main"]


async def _run(config: Config) -> None:
    server = await SimServer.start(config)
    print(f"tiergate sim: serving {len(server.state.models)} models on {server.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()
        print("tiergate sim: stopped", flush=True)


def sim_main(config_path: str) -> int:
    try:
        config = load_config(config_path)
        uvloop.run(_run(config))
    except ConfigError as exc:
        print(f"tiergate sim: {exc}", file=sys.stderr)
        return 2
    except (OSError, FileNotFoundError) as exc:
        print(f"tiergate sim: {exc}", file=sys.stderr)
        return 1
    return 0
