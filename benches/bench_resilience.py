"""What callers see when a provider fails or slows down (issue 4), against their budget.

The simulators (examples/sim.yaml's eight deployments, with model latencies scaled so a
run takes seconds) and the sidecar run in this process on loopback. Three scenarios on
the `fast` route with a latency budget: healthy, an outage of the cheapest small
deployment (every call 503), and a brownout of it (latency ×5 on 40% of calls). The
caller's p50/p95 and error count are reported against the budget, with how the
sidecar's own decision time compares to its added latency.

Run alone: ``.venv/bin/python benches/bench_resilience.py [--requests N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from tiergate.config import LatencyPrior, SimModelConfig, load_config
from tiergate.server.main import start_server
from tiergate.sim.server import SimServer, sim_config_for

REPO = Path(__file__).resolve().parents[1]
BUDGET_MS = 200.0
SIM_ENV = {
    "SIM_OPENAI_API_KEY": "sim-openai-key",
    "SIM_ANTHROPIC_API_KEY": "sim-anthropic-key",
    "SIM_GEMINI_API_KEY": "sim-gemini-key",
    "SIM_AWS_ACCESS_KEY_ID": "SIMACCESSKEY",
    "SIM_AWS_SECRET_ACCESS_KEY": "sim-secret",
}


def _config() -> Any:
    for k, v in SIM_ENV.items():
        os.environ.setdefault(k, v)
    config = load_config(REPO / "examples" / "sim.yaml")
    assert config.sim is not None
    # Real models take 0.3-0.7 s to the first token; a tenth of that keeps the run short
    # while keeping their order and spread. Priors say the same as the simulators.
    models = {
        m: SimModelConfig(ttft_ms=c.ttft_ms / 10, tokens_per_s=c.tokens_per_s * 10, sigma=0.25)
        for m, c in config.sim.models.items()
    }
    deployments = {}
    for name, dep in config.deployments.items():
        sim = models[dep.model]
        prior = LatencyPrior(ttft_ms=sim.ttft_ms, tpot_ms=1000 / sim.tokens_per_s)
        deployments[name] = dep.model_copy(update={"latency_prior": prior})
    telemetry = config.telemetry.model_copy(update={"log": None, "safety_log": None})
    routing = config.routing.model_copy(update={"min_samples": 5})
    return config.model_copy(
        update={
            "sim": config.sim.model_copy(update={"models": models}),
            "deployments": deployments,
            "telemetry": telemetry,
            "routing": routing,
        }
    )


async def _scenario(
    session: aiohttp.ClientSession, url: str, n: int, concurrency: int
) -> dict[str, Any]:
    latencies: list[float] = []
    decisions: list[float] = []
    errors = 0
    served: dict[str, int] = {}
    kinds: dict[str, int] = {}
    queue = iter(range(n))

    async def worker() -> None:
        nonlocal errors
        for _ in queue:
            body = {
                "model": "fast",
                "messages": [{"role": "user", "content": f"Summarise routing. {uuid.uuid4().hex}"}],
                "max_tokens": 60,
            }
            started = time.perf_counter()
            async with session.post(
                url, json=body, headers={"x-tiergate-latency-budget-ms": str(BUDGET_MS)}
            ) as resp:
                await resp.read()
                latencies.append((time.perf_counter() - started) * 1000)
                if resp.status != 200:
                    errors += 1
                    err = (await resp.json())["error"]
                    key = f"{resp.status} {err.get('code')}"
                    kinds[key] = kinds.get(key, 0) + 1
                    continue
                dep = resp.headers["x-tiergate-deployment"]
                served[dep] = served.get(dep, 0) + 1
                decisions.append(float(resp.headers["x-tiergate-decision-us"]))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    q = statistics.quantiles(latencies, n=20)
    return {
        "p50": statistics.median(latencies),
        "p95": q[-1],
        "errors": errors,
        "error_kinds": kinds,
        "served": served,
        "decision_us": statistics.median(decisions) if decisions else float("nan"),
    }


async def run_async(n: int) -> str:
    config = _config()
    sim = await SimServer.start(config, port=0)
    cfg = sim_config_for(config, sim.url)
    rows = []
    try:
        brownout = {"kind": "latency", "factor": 5, "rate": 0.4}
        routes = dict(cfg.routes)
        routes["fast"] = routes["fast"].model_copy(update={"hedge": True})
        hedged = cfg.model_copy(
            update={
                "routes": routes,
                "routing": cfg.routing.model_copy(update={"hedge_budget": 0.2}),
            }
        )
        for name, fault, scenario_cfg in (
            ("healthy", None, cfg),
            (
                "outage: cheapest small deployment answers 503",
                {"kind": "error", "status": 503},
                cfg,
            ),
            ("brownout: latency ×5 on 40% of its calls", brownout, cfg),
            ("brownout, route hedged (budget 20% of requests)", brownout, hedged),
        ):
            # A fresh sidecar per scenario: its windows and health start from the priors.
            server = await start_server(scenario_cfg, port=0, admin_port=0)
            try:
                async with aiohttp.ClientSession() as session:
                    explain = await (
                        await session.post(
                            f"{server.url}/v1/route/explain",
                            json={"model": "fast", "messages": [{"role": "user", "content": "x"}]},
                        )
                    ).json()
                    primary = explain["plan"][0]
                    await session.delete(f"{sim.url}/_sim/faults")
                    if fault is not None:
                        model = cfg.deployments[primary].model
                        await session.post(f"{sim.url}/_sim/faults", json={"model": model, **fault})
                    result = await _scenario(session, f"{server.url}/v1/chat/completions", n, 4)
                    await session.delete(f"{sim.url}/_sim/faults")
            finally:
                await server.stop()
            rows.append((name, primary, result))
    finally:
        await sim.stop()
    lines = [
        "## Resilience: callers' latency under outage and brownout (issue 4)",
        "",
        f"Command: `.venv/bin/python benches/bench_resilience.py --requests {n}` "
        f"(route `fast`, budget {BUDGET_MS:.0f} ms, concurrency 4, simulated latencies at a tenth of the real models').",
        "",
        "| scenario | primary | p50 ms | p95 ms | p95 within budget | errors | served by | decision µs (median) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, primary, r in rows:
        served = ", ".join(f"{k} {v}" for k, v in sorted(r["served"].items(), key=lambda x: -x[1]))
        lines.append(
            f"| {name} | {primary} | {r['p50']:.1f} | {r['p95']:.1f} | "
            f"{'yes' if r['p95'] <= BUDGET_MS else 'NO'} | {r['errors']} {r['error_kinds'] or ''} | {served} | {r['decision_us']:.0f} |"
        )
    lines.append("")
    return "\n".join(lines)


def run(n: int = 300) -> str:
    return asyncio.run(run_async(n))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    print(run(parser.parse_args().requests))
