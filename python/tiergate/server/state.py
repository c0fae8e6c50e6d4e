"""The gateway: one loaded configuration with its open provider sessions and phases.

Everything here is built once at load (and again, whole, on reload); the request path
only reads it.
"""

from __future__ import annotations

import asyncio

from tiergate.config import Config
from tiergate.providers.base import Adapter
from tiergate.routing.dispatch import Dispatcher
from tiergate.routing.planner import Planner

__all__ = ["Gateway"]


class Gateway:
    __slots__ = ("adapters", "config", "dispatcher", "planner", "ready")

    def __init__(self, config: Config) -> None:
        from tiergate.providers.registry import make_adapter

        self.config = config
        self.adapters: dict[str, Adapter] = {
            name: make_adapter(name, provider) for name, provider in config.providers.items()
        }
        self.planner = Planner(config)
        self.dispatcher = Dispatcher(config, self.adapters)
        self.ready = False

    async def open(self) -> None:
        await asyncio.gather(*(a.open() for a in self.adapters.values()))
        self.ready = True

    async def close(self) -> None:
        self.ready = False
        await asyncio.gather(*(a.close() for a in self.adapters.values()), return_exceptions=True)
