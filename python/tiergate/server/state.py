"""The gateway: one loaded configuration with its open provider sessions and phases.

Everything here is built once at load and again, whole, on reload; the request path
only reads it. A request takes the current :class:`Gateway` when it arrives and keeps
it to the end, so a reload never changes a request mid-way. What must outlive a reload
carries over by name: provider sessions whose config did not change, latency windows,
health and rate-limit state of unchanged deployments, tenants' spend, the idempotency
store and the hedge budget.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

from tiergate.config import Config, load_config
from tiergate.envelope import ChatRequest
from tiergate.errors import ConfigError
from tiergate.providers.base import Adapter
from tiergate.routing.dispatch import Dispatcher, HedgeBudget
from tiergate.routing.idempotency import Idempotency, MemoryStore
from tiergate.routing.planner import Planner
from tiergate.routing.tenants import Tenants

__all__ = ["Gateway", "Runtime"]

log = logging.getLogger("tiergate.reload")


class Gateway:
    __slots__ = (
        "adapters",
        "body_limit",
        "client_timeout_s",
        "config",
        "dispatcher",
        "hedges",
        "idempotency",
        "inflight",
        "inter_chunk_timeout_s",
        "planner",
        "ready",
        "tenants",
        "tiers",
    )

    def __init__(self, config: Config, previous: Gateway | None = None) -> None:
        from tiergate.providers.registry import make_adapter

        self.config = config
        # Read per request; a read through the pydantic config costs about three of these.
        self.body_limit = config.server.max_body_bytes
        self.client_timeout_s = config.server.client_timeout_s
        self.inter_chunk_timeout_s = config.routing.inter_chunk_timeout_s
        self.tiers = {name: dep.tier for name, dep in config.deployments.items()}
        self.adapters: dict[str, Adapter] = {}
        for name, provider in config.providers.items():
            old = previous.adapters.get(name) if previous is not None else None
            if (
                old is not None
                and previous is not None
                and previous.config.providers[name] == provider
            ):
                self.adapters[name] = old
            else:
                self.adapters[name] = make_adapter(name, provider)
        self.planner: Planner = Planner(config, previous.planner if previous is not None else None)
        self.tenants: Tenants = Tenants(
            config, self.planner.index, previous.tenants if previous is not None else None
        )
        routing = config.routing
        self.hedges: HedgeBudget = (
            previous.hedges if previous is not None else HedgeBudget(routing.hedge_budget)
        )
        self.hedges.share = routing.hedge_budget
        self.dispatcher = Dispatcher(config, self.adapters, self.planner, self.hedges)
        if previous is not None:
            self.idempotency: Idempotency = previous.idempotency
            self.idempotency.ttl_s = routing.idempotency_ttl_s
        else:
            self.idempotency = Idempotency(
                MemoryStore(routing.idempotency_max_bytes), routing.idempotency_ttl_s
            )
        self.inflight = 0
        self.ready = False

    async def open(self, previous: Gateway | None = None) -> None:
        reused = set(previous.adapters.values()) if previous is not None else set()
        await asyncio.gather(*(a.open() for a in self.adapters.values() if a not in reused))
        self.ready = True

    async def call_text(self, deployment: str, chat: ChatRequest) -> str:
        """One direct call, off the request path (shadow evaluation): the answer's text."""
        dep = self.config.deployments[deployment]
        adapter = self.adapters[dep.provider]
        c = await adapter.complete(chat, dep, self.config.providers[dep.provider].timeout_s)
        if c.text is not None:
            return c.text
        return c.tool_calls[0].arguments if c.tool_calls else ""

    async def close(self, keep: set[Adapter] | None = None) -> None:
        self.ready = False
        closing = [a.close() for a in self.adapters.values() if keep is None or a not in keep]
        await asyncio.gather(*closing, return_exceptions=True)


class Runtime:
    """Holds the current gateway and swaps it whole on SIGHUP or a config file change."""

    __slots__ = ("_mtime", "_path", "_watch", "current", "on_reload", "reloads")

    def __init__(self, gateway: Gateway, path: Path | None = None) -> None:
        self.current = gateway
        # Called with each newly loaded config (telemetry takes its safety policies from it).
        self.on_reload: list[Callable[[Config], None]] = []
        self._path = path
        self._mtime = _mtime(path)
        self._watch: asyncio.Task[None] | None = None
        self.reloads = 0

    async def reload(self, config: Config | None = None) -> list[str]:
        """Load the file (or ``config``) and swap; on error keep the old one and return the problems."""
        if config is None:
            if self._path is None:
                return ["no config file to reload from"]
            try:
                config = load_config(self._path)
            except ConfigError as exc:
                log.error("reload rejected, keeping the running config: %s", exc)
                return exc.problems
        old = self.current
        try:
            new = Gateway(config, old)
            await new.open(old)
        except ConfigError as exc:
            log.error("reload rejected, keeping the running config: %s", exc)
            return exc.problems
        self.current = new
        self.reloads += 1
        for hook in self.on_reload:
            hook(config)
        log.info("config reloaded (%d deployments)", len(config.deployments))
        asyncio.get_running_loop().create_task(self._retire(old, set(new.adapters.values())))
        return []

    async def _retire(self, old: Gateway, keep: set[Adapter]) -> None:
        """Close what the new gateway dropped once the old one's requests finished."""
        deadline = (
            asyncio.get_running_loop().time() + max(old.config.server.shutdown_timeout_s, 1.0) * 6
        )
        while old.inflight > 0 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        await old.close(keep)

    def install(self, poll_s: float = 1.0) -> None:
        """SIGHUP reloads; the config file is polled for changes every ``poll_s``."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload()))
        if self._path is not None:
            self._watch = loop.create_task(self._poll(poll_s))

    async def _poll(self, poll_s: float) -> None:
        while True:
            await asyncio.sleep(poll_s)
            mtime = _mtime(self._path)
            if mtime != self._mtime:
                self._mtime = mtime
                await self.reload()

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        await self.current.close()


def _mtime(path: Path | None) -> tuple[float, int] | None:
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime, st.st_size)
