"""Answers, tokens, determinism, data-set answers and the schema instance generator."""

from __future__ import annotations

import ast
import csv
import sys
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_sim_support import ANTHROPIC_MODEL, OPENAI_MODEL, sim_config, stats
from tiergate.envelope import ChatRequest, Message, TextPart, Tool
from tiergate.sim.behaviour import count_input_tokens, decide, split_tokens
from tiergate.sim.schema import instance
from tiergate.sim.server import SimServer, sim_config_for
from tiergate.sim.state import SimState

# --- tokens -------------------------------------------------------------------------


@given(st.text())
def test_split_tokens_round_trips(text: str) -> None:
    pieces = split_tokens(text)
    assert "".join(pieces) == text
    assert all(len(p.strip()) <= 4 for p in pieces)


def test_input_tokens_count_messages_and_tools() -> None:
    req = ChatRequest(model="m", messages=[Message("user", [TextPart("x" * 40)])])
    assert count_input_tokens(req) == 10
    tool = Tool("t", "d", {"type": "object"})
    with_tool = ChatRequest(model="m", messages=req.messages, tools=[tool])
    assert count_input_tokens(with_tool) == 10 + 5  # ceil((40 + 1 + 1 + 17) / 4)


def test_answer_depends_on_seed_model_and_content_only() -> None:
    req = ChatRequest(model="m", messages=[Message("user", [TextPart("hello")])])
    a = decide(req, seed=1, model="m", max_tokens=1000)
    assert a.text == decide(req, seed=1, model="m", max_tokens=1000).text
    assert a.text != decide(req, seed=2, model="m", max_tokens=1000).text
    assert a.text != decide(req, seed=1, model="n", max_tokens=1000).text
    short = decide(req, seed=1, model="m", max_tokens=3)
    assert short.finish == "length" and a.text.startswith(short.text) and short.output_tokens == 3


def test_latency_draws_are_seeded() -> None:
    one = SimState(sim_config(models={OPENAI_MODEL: {"ttft_ms": 300, "sigma": 0.5}}))
    two = SimState(sim_config(models={OPENAI_MODEL: {"ttft_ms": 300, "sigma": 0.5}}))
    draws = [one.models[OPENAI_MODEL].latency.draw() for _ in range(5)]
    assert draws == [two.models[OPENAI_MODEL].latency.draw() for _ in range(5)]
    assert len({d.ttft_s for d in draws}) == 5


async def test_same_seed_same_answers_over_http() -> None:
    texts = []
    for _ in range(2):
        server = await SimServer.start(sim_config(), port=0)
        try:
            async with openai.AsyncOpenAI(
                base_url=f"{server.url}/v1", api_key="x", max_retries=0
            ) as c:
                r = await c.chat.completions.create(
                    model=OPENAI_MODEL, messages=[{"role": "user", "content": "Determinism?"}]
                )
                texts.append(r.choices[0].message.content)
        finally:
            await server.stop()
    assert texts[0] == texts[1]


def test_sim_config_for_points_providers_at_the_sim() -> None:
    config = sim_config_for(sim_config(), "http://127.0.0.1:9999")
    assert config.providers["openai"].base_url == "http://127.0.0.1:9999/v1"
    assert config.providers["bedrock"].base_url == "http://127.0.0.1:9999"
    assert config.providers["anthropic"].base_url == "http://127.0.0.1:9999"


# --- data set -----------------------------------------------------------------------


def _first_row(directory: Path, model: str) -> dict[str, Any]:
    csv.field_size_limit(sys.maxsize)
    path = sorted((directory / "routerbench").glob("*.csv"))[0]
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row[model]:
                return {
                    "prompt": "\n".join(ast.literal_eval(row["prompt"])),
                    "response": "\n".join(ast.literal_eval(row[f"{model}|model_response"])),
                    "cost": float(row[f"{model}|total_cost"]),
                    "correct": float(row[model]),
                }
    raise AssertionError("no labelled row")


async def test_dataset_answers(routing_data: Path) -> None:
    row = _first_row(routing_data, "gpt-4-1106-preview")
    config = sim_config(
        dataset=str(routing_data),
        models={
            OPENAI_MODEL: {
                "ttft_ms": 1,
                "tokens_per_s": 100000,
                "dataset_model": "gpt-4-1106-preview",
            },
            ANTHROPIC_MODEL: {"ttft_ms": 1, "tokens_per_s": 100000, "dataset_model": "claude-v2"},
        },
    )
    server = await SimServer.start(config, port=0)
    try:
        async with openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0) as c:
            r = await c.chat.completions.create(
                model=OPENAI_MODEL, messages=[{"role": "user", "content": row["prompt"]}]
            )
            assert r.choices[0].message.content == row["response"]
            await c.chat.completions.create(  # not in the data set: generated, priced by tokens
                model=OPENAI_MODEL, messages=[{"role": "user", "content": "not a data-set prompt"}]
            )
        st_ = (await stats(server))[OPENAI_MODEL]
        assert st_["dataset_answers"] == 1 and st_["correct"] == row["correct"]
        assert st_["cost_usd"] > row["cost"] and st_["cost_usd"] < row["cost"] + 0.01
        async with aiohttp.ClientSession() as s:
            body = {
                "model": ANTHROPIC_MODEL,
                "max_tokens": 4000,
                "messages": [{"role": "user", "content": row["prompt"]}],
            }
            headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
            async with s.post(f"{server.url}/v1/messages", json=body, headers=headers) as resp:
                assert (await resp.json())["content"][0]["type"] == "text"
        assert (await stats(server))[ANTHROPIC_MODEL]["dataset_answers"] == 1
    finally:
        await server.stop()


def test_missing_dataset_directory_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"sim\.dataset"):
        SimState(sim_config(dataset=str(tmp_path / "absent")))


# --- schema instances ---------------------------------------------------------------

_leaf = st.one_of(
    st.just({"type": "string"}),
    st.builds(
        lambda lo, extra: {"type": "string", "minLength": lo, "maxLength": lo + extra},
        st.integers(0, 10),
        st.integers(0, 10),
    ),
    st.sampled_from(
        [
            {"type": "string", "format": f}
            for f in ("date-time", "date", "email", "uuid", "ipv4", "uri")
        ]
    ),
    st.builds(
        lambda lo, span, ex: {
            "type": "integer",
            "minimum": lo,
            "maximum": lo + span,
            "exclusiveMinimum": lo - 1 if ex else lo - 5,
        },
        st.integers(-1000, 1000),
        st.integers(0, 50),
        st.booleans(),
    ),
    st.builds(
        lambda lo, span: {"type": "number", "exclusiveMinimum": lo, "maximum": lo + span},
        st.floats(-1e3, 1e3),
        st.floats(0.01, 100),
    ),
    st.builds(lambda k: {"type": "integer", "multipleOf": k, "minimum": 0}, st.integers(1, 9)),
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.just({"type": ["string", "null"]}),
    st.lists(
        st.one_of(st.text(max_size=5), st.integers()), min_size=1, max_size=4, unique=True
    ).map(lambda xs: {"enum": xs}),
    st.just({"const": "fixed"}),
    st.just({"type": "STRING"}),
    st.just({"type": "INTEGER", "nullable": True}),
)


def _extend(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    names = st.text(alphabet="abcdefgh_", min_size=1, max_size=6)
    obj = st.dictionaries(names, children, max_size=4).flatmap(
        lambda props: st.builds(
            lambda req, extra: {
                "type": "object",
                "properties": props,
                "required": req,
                "additionalProperties": extra,
            },
            st.lists(st.sampled_from(sorted(props)), unique=True) if props else st.just([]),
            st.booleans(),
        )
    )
    arr = st.builds(
        lambda items, lo, span: {
            "type": "array",
            "items": items,
            "minItems": lo,
            "maxItems": lo + span,
        },
        children,
        st.integers(0, 3),
        st.integers(0, 3),
    )
    any_of = st.lists(children, min_size=1, max_size=3).map(lambda xs: {"anyOf": xs})
    return st.one_of(obj, arr, any_of)


schemas = st.recursive(_leaf, _extend, max_leaves=12)


def _lower(schema: Any) -> Any:
    """What the instance must satisfy when a schema uses Gemini's upper-case type names."""
    if isinstance(schema, dict):
        out = {k: _lower(v) for k, v in schema.items() if k != "nullable"}
        if isinstance(schema.get("type"), str):
            out["type"] = schema["type"].lower()
            if schema.get("nullable"):
                out["type"] = [out["type"], "null"]
        return out
    if isinstance(schema, list):
        return [_lower(x) for x in schema]
    return schema


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schemas, st.integers(0, 2**32))
def test_instances_validate(schema: dict[str, Any], seed: int) -> None:
    import random

    value = instance(schema, random.Random(seed))
    jsonschema.Draft202012Validator(
        _lower(schema), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(value)


def test_refs_and_all_of() -> None:
    import random

    schema = {
        "$defs": {
            "point": {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}
        },
        "type": "object",
        "properties": {
            "a": {"$ref": "#/$defs/point"},
            "b": {
                "allOf": [
                    {"$ref": "#/$defs/point"},
                    {"properties": {"y": {"type": "integer"}}, "required": ["y"]},
                ]
            },
            "c": {
                "type": "array",
                "prefixItems": [{"type": "string"}, {"type": "integer"}],
                "minItems": 2,
            },
        },
        "required": ["a", "b", "c"],
    }
    for seed in range(20):
        jsonschema.validate(instance(schema, random.Random(seed)), schema)


# --- prompt caching -----------------------------------------------------------------


async def test_prompt_cache_write_then_read() -> None:
    server = await SimServer.start(sim_config(), port=0)
    long_system = "You are a careful assistant. " * 200  # > 1,024 tokens
    body = {
        "model": ANTHROPIC_MODEL,
        "max_tokens": 50,
        "system": [{"type": "text", "text": long_system, "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "first"}],
    }
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{server.url}/v1/messages", json=body, headers=headers) as r:
                first = (await r.json())["usage"]
            body["messages"] = [{"role": "user", "content": "second, different"}]
            async with s.post(f"{server.url}/v1/messages", json=body, headers=headers) as r:
                second = (await r.json())["usage"]
        assert first["cache_creation_input_tokens"] > 1024 and first["cache_read_input_tokens"] == 0
        assert second["cache_read_input_tokens"] == first["cache_creation_input_tokens"]
        assert second["input_tokens"] < 20
        async with openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0) as c:
            history: list[Any] = [
                {"role": "system", "content": long_system},
                {"role": "user", "content": "q1"},
            ]
            r1 = await c.chat.completions.create(
                model=OPENAI_MODEL, messages=[*history, {"role": "user", "content": "a"}]
            )
            r2 = await c.chat.completions.create(
                model=OPENAI_MODEL, messages=[*history, {"role": "user", "content": "b"}]
            )
        assert r1.usage is not None and r1.usage.prompt_tokens_details is not None
        assert r1.usage.prompt_tokens_details.cached_tokens == 0
        assert r2.usage is not None and r2.usage.prompt_tokens_details is not None
        assert 1024 <= (r2.usage.prompt_tokens_details.cached_tokens or 0) <= r2.usage.prompt_tokens
        assert (await stats(server))[OPENAI_MODEL][
            "cached_input_tokens"
        ] == r2.usage.prompt_tokens_details.cached_tokens
    finally:
        await server.stop()
