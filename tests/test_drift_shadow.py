"""Shadow evaluation: deterministic sampling, comparators, agreement into the aggregates and metrics."""

from __future__ import annotations

import asyncio
import io

from telemetry_helpers import config, record
from tiergate.drift.shadow import compare_exact, compare_json, sampled
from tiergate.envelope import ChatRequest, Message, TextPart
from tiergate.telemetry import Telemetry

CHAT = ChatRequest(model="chat", messages=[Message("user", [TextPart("2+2?")])])


def test_sampling_is_deterministic_and_near_the_share() -> None:
    ids = [f"req-{i}" for i in range(20_000)]
    share = sum(sampled(i, 0.1) for i in ids) / len(ids)
    assert 0.09 < share < 0.11
    assert [sampled(i, 0.1) for i in ids[:100]] == [sampled(i, 0.1) for i in ids[:100]]
    assert not any(sampled(i, 0.0) for i in ids[:1000]) and all(sampled(i, 1.0) for i in ids[:1000])


def test_comparators() -> None:
    assert compare_exact(" 4\n", "4") and not compare_exact("4", "four")
    assert compare_json('{"a": 1, "b": [2]}', '{"b":[2],"a":1}') and not compare_json(
        '{"a":1}', '{"a":2}'
    )
    assert not compare_json("not json", "not json")


def _telemetry(comparator: str = "exact", **extra: object) -> Telemetry:
    shadow = {"chat": {"reference": "large", "sample": 1.0, "comparator": comparator, **extra}}
    return Telemetry.from_config(
        config(drift={"shadow": shadow}), log_stream=io.BytesIO(), safety_stream=io.BytesIO()
    )


async def test_agreement_goes_into_the_serving_deployments_aggregate() -> None:
    tel = _telemetry()
    await tel.start()
    answers = {"large": "4"}
    calls: list[str] = []

    async def call(deployment: str, chat: ChatRequest) -> str:
        calls.append(deployment)
        return answers[deployment]

    shadow = tel.shadow
    assert shadow is not None
    r1, r2 = record("a"), record("b")
    tel.record(r1)
    tel.record(r2)
    assert shadow.maybe_schedule(r1, CHAT, "4", call)
    assert shadow.maybe_schedule(r2, CHAT, "5", call)
    assert not shadow.maybe_schedule(record("c", route="other"), CHAT, "4", call)  # not opted in
    assert not shadow.maybe_schedule(
        record("d", deployment="large"), CHAT, "4", call
    )  # is the reference
    assert not shadow.maybe_schedule(record("e", status=502), CHAT, "4", call)
    await asyncio.sleep(0.05)
    await tel.stop()
    assert calls == ["large", "large"]
    (row,) = tel.drift.rows()
    assert (row["deployment"], row["shadow_n"], row["shadow_agree"]) == ("small", 2, 1)
    text = tel.metrics.exposition().decode()
    assert 'tiergate_shadow_total{outcome="agree",route="chat"} 1.0' in text
    assert 'tiergate_shadow_total{outcome="disagree",route="chat"} 1.0' in text


async def test_judge_comparator_and_failures_and_bound() -> None:
    tel = _telemetry("judge", judge="large", max_in_flight=1)
    await tel.start()
    gate = asyncio.Event()
    prompts: list[ChatRequest] = []

    async def call(deployment: str, chat: ChatRequest) -> str:
        prompts.append(chat)
        await gate.wait()
        return "AGREE" if len(prompts) > 1 else "4"

    shadow = tel.shadow
    assert shadow is not None
    assert shadow.maybe_schedule(record("a"), CHAT, "4", call)
    assert not shadow.maybe_schedule(record("b"), CHAT, "4", call)  # bound: one in flight
    gate.set()
    await asyncio.sleep(0.05)

    async def failing(deployment: str, chat: ChatRequest) -> str:
        raise ConnectionError("down")

    assert shadow.maybe_schedule(record("c"), CHAT, "4", failing)
    await asyncio.sleep(0.05)
    await tel.stop()
    assert "Answer A:\n4" in prompts[1].messages[1].text
    text = tel.metrics.exposition().decode()
    for outcome in ("agree", "skipped", "error"):
        assert f'tiergate_shadow_total{{outcome="{outcome}",route="chat"}} 1.0' in text
