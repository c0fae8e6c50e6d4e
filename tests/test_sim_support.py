"""Shared fixtures for the simulator tests (imported by the other test_sim_* files)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tiergate.config import Config, parse_config
from tiergate.sim.server import SimServer

OPENAI_MODEL = "gpt-4o-mini-2024-07-18"
ANTHROPIC_MODEL = "claude-haiku-4-5-20251001"
GEMINI_MODEL = "gemini-1.5-flash-002"
BEDROCK_MODEL = "meta.llama3-1-70b-instruct-v1:0"
SM_OPENAI = "llama-3-1-8b-instruct"
SM_TGI = "mistral-7b-tgi"

FAST = {"ttft_ms": 5, "tokens_per_s": 5000, "sigma": 0.0}


def sim_dict(**sim: Any) -> dict[str, Any]:
    price = {"input": 1.0, "output": 2.0}
    models = {
        m: dict(FAST)
        for m in (OPENAI_MODEL, ANTHROPIC_MODEL, GEMINI_MODEL, BEDROCK_MODEL, SM_OPENAI, SM_TGI)
    }
    models.update(sim.pop("models", {}))
    return {
        "providers": {
            "openai": {"kind": "openai"},
            "anthropic": {"kind": "anthropic"},
            "gemini": {"kind": "gemini"},
            "bedrock": {"kind": "bedrock"},
            "sagemaker": {"kind": "sagemaker"},
        },
        "tiers": ["small", "large"],
        "deployments": {
            "oa": {"provider": "openai", "model": OPENAI_MODEL, "tier": "small", "price": price},
            "an": {
                "provider": "anthropic",
                "model": ANTHROPIC_MODEL,
                "tier": "large",
                "price": price,
            },
            "ge": {"provider": "gemini", "model": GEMINI_MODEL, "tier": "small", "price": price},
            "br": {"provider": "bedrock", "model": BEDROCK_MODEL, "tier": "large", "price": price},
            "sm": {"provider": "sagemaker", "model": SM_OPENAI, "tier": "small", "price": price},
            "tgi": {
                "provider": "sagemaker",
                "model": SM_TGI,
                "tier": "small",
                "price": price,
                "payload_format": "tgi",
            },
        },
        "sim": {"control": "127.0.0.1:0", "seed": 7, "models": models, **sim},
    }


def sim_config(**sim: Any) -> Config:
    return parse_config(sim_dict(**sim))


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    server = await SimServer.start(sim_config(), port=0)
    try:
        yield server
    finally:
        await server.stop()


async def add_fault(server: SimServer, **fault: Any) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.post(f"{server.url}/_sim/faults", json=fault) as r:
        assert r.status == 201, await r.text()
        body: dict[str, Any] = await r.json()
        return body


async def stats(server: SimServer) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.get(f"{server.url}/_sim/stats") as r:
        body: dict[str, Any] = await r.json()
        return body
