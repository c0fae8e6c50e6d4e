"""``tiergate demo``: the simulators and the sidecar as real processes, driven by the
unchanged ``openai`` and ``anthropic`` SDKs, then a table of what served each request.

Both servers are started on free loopback ports from a copy of the config, and stopped
by PID when the scenario ends (or fails).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

from tiergate.config import Config, load_config

__all__ = ["demo_main"]

SIM_ENV = {
    "SIM_OPENAI_API_KEY": "sim-openai-key",
    "SIM_ANTHROPIC_API_KEY": "sim-anthropic-key",
    "SIM_GEMINI_API_KEY": "sim-gemini-key",
    "SIM_AWS_ACCESS_KEY_ID": "SIMACCESSKEY",
    "SIM_AWS_SECRET_ACCESS_KEY": "sim-secret",
}
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["C", "F"]},
            },
            "required": ["city"],
        },
    },
}
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
    "additionalProperties": False,
}


@dataclass
class Row:
    what: str
    sdk: str
    route: str
    deployment: str = "-"
    attempts: str = "-"
    decision_us: str = "-"
    ms: float = 0.0
    tokens: str = "-"
    cost_usd: float = 0.0
    result: str = ""


def default_config_path() -> Path:
    """The bundled examples/sim.yaml (repository checkout) or the packaged copy."""
    repo = Path(__file__).resolve().parents[2] / "examples" / "sim.yaml"
    if repo.exists():
        return repo
    return Path(str(resources.files("tiergate") / "examples" / "sim.yaml"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rewrite(path: Path, sim_port: int, port: int, admin_port: int) -> dict[str, Any]:
    """The config with every sim address and the sidecar's ports moved to free ones."""
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    old = data.get("sim", {}).get("control", "127.0.0.1:4100")
    new = f"127.0.0.1:{sim_port}"
    for provider in data["providers"].values():
        if "base_url" in provider:
            provider["base_url"] = provider["base_url"].replace(old, new)
    data.setdefault("sim", {})["control"] = new
    data.setdefault("server", {}).update(port=port, admin_port=admin_port, host="127.0.0.1")
    if data["sim"].get("dataset"):
        data["sim"]["dataset"] = str((path.parent / data["sim"]["dataset"]).resolve())
    return data


async def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{url} exited with status {proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} not ready within {timeout_s} s")


def _cost(config: Config, deployment: str, tokens_in: int, tokens_out: int) -> float:
    dep = config.deployments.get(deployment)
    if dep is None:
        return 0.0
    return (tokens_in * dep.price.input + tokens_out * dep.price.output) / 1e6


async def _scenario(config: Config, url: str, sim_url: str) -> list[Row]:
    import anthropic
    import openai

    # Typed loosely on purpose: the demo passes plain dicts as an application would.
    oai: Any = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="demo-app", max_retries=0)
    ant: Any = anthropic.AsyncAnthropic(base_url=url, api_key="demo-app", max_retries=0)
    rows: list[Row] = []

    async def run(row: Row, call: Callable[[Row], Awaitable[None]]) -> None:
        start = time.perf_counter()
        try:
            await call(row)
        except Exception as exc:  # the table shows failures instead of stopping the demo
            row.result = f"ERROR {type(exc).__name__}: {str(exc)[:60]}"
        row.ms = (time.perf_counter() - start) * 1000
        rows.append(row)

    def note(row: Row, headers: Any, tokens_in: int, tokens_out: int) -> None:
        row.deployment = headers.get("x-tiergate-deployment", "-")
        row.attempts = headers.get("x-tiergate-attempts", "-")
        row.decision_us = headers.get("x-tiergate-decision-us", "-")
        row.tokens = f"{tokens_in}/{tokens_out}"
        row.cost_usd = _cost(config, row.deployment, tokens_in, tokens_out)

    async def openai_chat(row: Row, **kwargs: Any) -> None:
        raw = await oai.chat.completions.with_raw_response.create(model=row.route, **kwargs)
        done = raw.parse()
        assert done.usage is not None
        note(row, raw.headers, done.usage.prompt_tokens, done.usage.completion_tokens)
        msg = done.choices[0].message
        if msg.tool_calls:
            call = msg.tool_calls[0]
            row.result = f"tool {call.function.name}({call.function.arguments})"
        else:
            row.result = (msg.content or "").replace("\n", " ")[:60]

    user = [{"role": "user", "content": "In two sentences, why do routers save money?"}]
    await run(Row("plain text", "openai", "auto"), lambda r: openai_chat(r, messages=user))
    weather = [{"role": "user", "content": "What's the weather in Oslo? Use get_weather."}]
    await run(
        Row("tool call", "openai", "auto"),
        lambda r: openai_chat(r, messages=weather, tools=[WEATHER_TOOL], tool_choice="required"),
    )
    result_turn = [
        *weather,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 4, "sky": "overcast"}'},
    ]
    await run(
        Row("tool result turn", "openai", "auto"),
        lambda r: openai_chat(r, messages=result_turn, tools=[WEATHER_TOOL]),
    )
    schema_format = {
        "type": "json_schema",
        "json_schema": {"name": "city", "schema": ANSWER_SCHEMA, "strict": True},
    }
    await run(
        Row("JSON schema", "openai", "fast"),
        lambda r: openai_chat(
            r,
            messages=[{"role": "user", "content": "Largest city in Norway?"}],
            response_format=schema_format,
        ),
    )

    async def openai_stream(row: Row) -> None:
        raw = await oai.chat.completions.with_raw_response.create(
            model=row.route, messages=user, stream=True, stream_options={"include_usage": True}
        )
        text, usage = [], None
        async for chunk in raw.parse():
            if chunk.choices and chunk.choices[0].delta.content:
                text.append(chunk.choices[0].delta.content)
            usage = chunk.usage or usage
        note(
            row,
            raw.headers,
            usage.prompt_tokens if usage else 0,
            usage.completion_tokens if usage else 0,
        )
        row.result = f"streamed {len(text)} chunks: " + "".join(text)[:40]

    await run(Row("streaming", "openai", "best"), openai_stream)

    async def anthropic_chat(row: Row, **kwargs: Any) -> None:
        raw = await ant.messages.with_raw_response.create(model=row.route, max_tokens=200, **kwargs)
        msg = await raw.parse()
        note(row, raw.headers, msg.usage.input_tokens, msg.usage.output_tokens)
        block = msg.content[0] if msg.content else None
        if block is not None and block.type == "tool_use":
            row.result = f"tool_use {block.name}({orjson.dumps(block.input).decode()})"
        elif block is not None and block.type == "text":
            row.result = block.text.replace("\n", " ")[:60]

    await run(Row("plain text", "anthropic", "auto"), lambda r: anthropic_chat(r, messages=user))
    tool = WEATHER_TOOL["function"]
    await run(
        Row("tool call", "anthropic", "claude-haiku"),
        lambda r: anthropic_chat(
            r,
            messages=weather,
            tools=[
                {
                    "name": tool["name"],
                    "description": tool["description"],
                    "input_schema": tool["parameters"],
                }
            ],
            tool_choice={"type": "any"},
        ),
    )

    async def anthropic_stream(row: Row) -> None:
        async with ant.messages.stream(model=row.route, max_tokens=200, messages=user) as stream:
            final = await stream.get_final_message()
            headers = stream.response.headers
        note(row, headers, final.usage.input_tokens, final.usage.output_tokens)
        row.result = "streamed: " + "".join(b.text for b in final.content if b.type == "text")[:48]

    await run(Row("streaming", "anthropic", "gemini-pro"), anthropic_stream)
    for pinned in ("gemini-flash", "llama-8b", "llama-70b", "claude-sonnet"):
        await run(Row("pinned", "openai", pinned), lambda r: openai_chat(r, messages=user))

    # Resilience: the cheapest small deployment goes down; the caller should not notice.
    async with aiohttp.ClientSession() as session:
        fault = {
            "model": config.deployments["gpt-4o-mini"].model,
            "kind": "error",
            "status": 503,
            "rate": 1.0,
        }
        async with session.post(f"{sim_url}/_sim/faults", json=fault) as resp:
            resp.raise_for_status()
        await run(
            Row("outage → fallback", "openai", "gpt-4o-mini"),
            lambda r: openai_chat(r, messages=user),
        )
        async with session.delete(f"{sim_url}/_sim/faults") as resp:
            resp.raise_for_status()
    await oai.close()
    await ant.close()
    return rows


def _table(rows: list[Row]) -> str:
    head = (
        "request",
        "sdk",
        "route",
        "served by",
        "tries",
        "decision µs",
        "ms",
        "tokens in/out",
        "cost USD",
        "answer",
    )
    body = [
        (
            r.what,
            r.sdk,
            r.route,
            r.deployment,
            r.attempts,
            r.decision_us,
            f"{r.ms:.0f}",
            r.tokens,
            f"{r.cost_usd:.6f}",
            r.result,
        )
        for r in rows
    ]
    widths = [max(len(str(x[i])) for x in [head, *body]) for i in range(len(head) - 1)]
    lines = []
    for line in [head, *body]:
        lines.append(
            "  ".join(str(v).ljust(w) for v, w in zip(line[:-1], widths, strict=True))
            + "  "
            + line[-1]
        )
    lines.insert(1, "-" * min(160, sum(widths) + 2 * len(widths) + 40))
    return "\n".join(lines)


async def _demo(config_path: Path) -> int:
    sim_port, port, admin_port = _free_port(), _free_port(), _free_port()
    data = _rewrite(config_path, sim_port, port, admin_port)
    env = {**os.environ, **{k: os.environ.get(k, v) for k, v in SIM_ENV.items()}}
    os.environ.update({k: env[k] for k in SIM_ENV})
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="tiergate-demo-") as tmp:
        cfg = Path(tmp) / "config.yaml"
        cfg.write_text(yaml.safe_dump(data))
        config = load_config(cfg)
        exe = [sys.executable, "-m", "tiergate.cli"]
        try:
            sim = subprocess.Popen(
                [*exe, "sim", "--config", str(cfg)], env=env, stdout=subprocess.DEVNULL
            )
            procs.append(sim)
            sim_url = f"http://127.0.0.1:{sim_port}"
            await _wait_ready(f"{sim_url}/_sim/stats", sim)
            started = time.perf_counter()
            side = subprocess.Popen(
                [*exe, "serve", "--config", str(cfg)], env=env, stdout=subprocess.DEVNULL
            )
            procs.append(side)
            await _wait_ready(f"http://127.0.0.1:{admin_port}/readyz", side)
            ready_ms = (time.perf_counter() - started) * 1000
            print(
                f"simulators on {sim_url}; tiergate on http://127.0.0.1:{port} (ready in {ready_ms:.0f} ms)\n"
            )
            rows = await _scenario(config, f"http://127.0.0.1:{port}", sim_url)
            print(_table(rows))
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{sim_url}/_sim/stats") as resp,
            ):
                stats = await resp.json()
            calls = ", ".join(
                f"{m}: {s['calls']}" for m, s in sorted(stats.items()) if s.get("calls")
            )
            print(f"\nupstream calls the simulators counted: {calls}")
            total = sum(r.cost_usd for r in rows)
            failed = sum(r.result.startswith("ERROR") for r in rows)
            print(f"{len(rows)} requests, {failed} failed, total cost ${total:.6f}")
            return 1 if failed else 0
        finally:
            for proc in reversed(procs):
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()


def demo_main(config_path: str | None) -> int:
    path = Path(config_path) if config_path else default_config_path()
    return asyncio.run(_demo(path))
