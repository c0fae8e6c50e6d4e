"""The simulator application: every provider protocol plus ``/_sim/*`` on one address.

Control endpoints:

- ``GET /_sim/stats`` → ``{model_id: {"calls", "input_tokens", "output_tokens",
  "cost_usd", "errors", "correct", "dataset_answers", "rate_limited", "streams",
  "by_protocol"}}`` (see :mod:`tiergate.sim.state`); ``DELETE /_sim/stats`` resets.
- ``POST /_sim/faults`` with ``{"model", "kind", "rate", "status", "factor",
  "retry_after_s", "duration_s", "error_type"}`` adds a fault (see
  :mod:`tiergate.sim.faults`) and answers it with its ``id``; ``GET /_sim/faults`` lists
  the active ones; ``DELETE /_sim/faults`` clears them (``?model=`` only that model's).
- ``GET /_sim/health`` → ``{"ok": true, "models": [...]}``.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from tiergate.config import Config, ProviderConfig, SimConfig
from tiergate.sim import anthropic, bedrock, gemini, openai, sagemaker
from tiergate.sim.faults import Fault
from tiergate.sim.http import json_response
from tiergate.sim.state import SimState

__all__ = ["SimServer", "build_app", "sim_config_for"]

_STATE = web.AppKey("state", SimState)


def _control(state: SimState) -> list[web.RouteDef]:
    async def get_stats(request: web.Request) -> web.Response:
        return json_response(state.stats_json())

    async def reset_stats(request: web.Request) -> web.Response:
        state.stats.clear()
        return json_response(state.stats_json())

    async def add_fault(request: web.Request) -> web.Response:
        try:
            body: Any = orjson.loads(await request.read())
            fault = Fault.parse(body)
        except (orjson.JSONDecodeError, ValueError) as exc:
            return json_response({"error": str(exc)}, 400)
        if fault.model != "*" and fault.model not in state.models:
            return json_response({"error": f"model: unknown model {fault.model!r}"}, 404)
        state.faults.add(fault)
        return json_response(fault.to_json(), 201)

    async def list_faults(request: web.Request) -> web.Response:
        return json_response([f.to_json() for f in state.faults.list()])

    async def clear_faults(request: web.Request) -> web.Response:
        return json_response({"cleared": state.faults.clear(request.query.get("model"))})

    async def health(request: web.Request) -> web.Response:
        return json_response({"ok": True, "models": list(state.models)})

    return [
        web.get("/_sim/stats", get_stats),
        web.delete("/_sim/stats", reset_stats),
        web.post("/_sim/faults", add_fault),
        web.get("/_sim/faults", list_faults),
        web.delete("/_sim/faults", clear_faults),
        web.get("/_sim/health", health),
    ]


def build_app(state: SimState) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[_STATE] = state
    app.add_routes(_control(state))
    for module in (openai, anthropic, gemini, bedrock, sagemaker):
        app.add_routes(module.routes(state))
    return app


def _split(control: str) -> tuple[str, int]:
    host, _, port = control.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


class SimServer:
    """A running simulator. ``await SimServer.start(config)``; ``await server.stop()``."""

    __slots__ = ("_runner", "host", "port", "state", "url")

    def __init__(self, state: SimState, runner: web.AppRunner, host: str, port: int) -> None:
        self.state = state
        self._runner = runner
        self.host = host
        self.port = port
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}"

    @classmethod
    async def start(
        cls, config: Config, host: str | None = None, port: int | None = None
    ) -> SimServer:
        """Serve on ``host:port`` (defaults from ``config.sim.control``; port 0 = ephemeral)."""
        default_host, default_port = _split((config.sim or SimConfig()).control)
        host = host if host is not None else default_host
        port = port if port is not None else default_port
        state = SimState(config)
        runner = web.AppRunner(build_app(state), access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        bound = port
        for addr in runner.addresses:
            if isinstance(addr, tuple) and len(addr) >= 2:
                bound = int(addr[1])
                break
        return cls(state, runner, host, bound)

    async def stop(self) -> None:
        """End stalls and pending answers at once, then close every connection."""
        self.state.closing.set()
        await self._runner.cleanup()


def sim_config_for(config: Config, url: str) -> Config:
    """A copy of ``config`` with every provider's base_url pointed at the simulator at ``url``."""
    url = url.rstrip("/")
    providers: dict[str, ProviderConfig] = {}
    for name, p in config.providers.items():
        base = f"{url}/v1" if p.kind in ("openai", "openai_compatible") else url
        providers[name] = p.model_copy(update={"base_url": base})
    return config.model_copy(update={"providers": providers})
