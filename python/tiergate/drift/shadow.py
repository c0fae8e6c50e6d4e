"""Shadow evaluation: a sampled share of a route's answers is compared with a reference deployment.

Opt-in per route (``drift.shadow.<route>``). After the caller has its answer, the server
calls :meth:`ShadowEvaluator.maybe_schedule`; when the request is sampled, a task off the
request path asks the reference deployment the same request (through the ``call`` the
server gives, i.e. the dispatcher), compares, and folds agreement into the serving
deployment's hourly aggregate (``shadow_n``/``shadow_agree``) and
``tiergate_shadow_total{route,outcome}``.

Comparators: ``exact`` (whitespace-trimmed text), ``json`` (equal after parsing), ``judge``
(the judge deployment answers AGREE/DISAGREE to a fixed prompt).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

import orjson
import xxhash

from tiergate.config import ShadowConfig
from tiergate.drift.aggregate import DriftAggregator, hour_of
from tiergate.envelope import ChatRequest, Message, TextPart
from tiergate.telemetry.record import RequestRecord

if TYPE_CHECKING:
    from tiergate.telemetry.metrics import Metrics

__all__ = ["Call", "ShadowEvaluator", "compare_exact", "compare_json", "judge_request", "sampled"]

log = logging.getLogger("tiergate.drift.shadow")

# (deployment, request) → the deployment's answer text.
Call = Callable[[str, ChatRequest], Awaitable[str]]


def sampled(request_id: str, share: float) -> bool:
    """Deterministic in the request id, so replays and pods agree on what is shadowed."""
    if share <= 0:
        return False
    return xxhash.xxh64_intdigest(request_id.encode()) < share * 2**64


def compare_exact(a: str, b: str) -> bool:
    return a.strip() == b.strip()


def compare_json(a: str, b: str) -> bool:
    try:
        return bool(orjson.loads(a) == orjson.loads(b))
    except orjson.JSONDecodeError:
        return False


_JUDGE_SYSTEM = (
    "You compare two answers to the same request. Reply with exactly one word: AGREE if they "
    "are equivalent in substance and correctness, DISAGREE otherwise."
)


def judge_request(chat: ChatRequest, answer: str, reference: str, model: str) -> ChatRequest:
    question = "\n\n".join(f"[{m.role}] {m.text}" for m in chat.messages)
    prompt = f"Request:\n{question}\n\nAnswer A:\n{answer}\n\nAnswer B:\n{reference}"
    return ChatRequest(
        model=model,
        messages=[
            Message("system", [TextPart(_JUDGE_SYSTEM)]),
            Message("user", [TextPart(prompt)]),
        ],
        max_tokens=4,
        temperature=0.0,
    )


class ShadowEvaluator:
    def __init__(
        self, routes: Mapping[str, ShadowConfig], drift: DriftAggregator, metrics: Metrics | None
    ) -> None:
        self._routes = dict(routes)
        self._drift = drift
        self._metrics = metrics
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight: dict[str, int] = {}

    def _count(self, route: str, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.shadow.add(1, self._metrics.route(route), outcome)

    def maybe_schedule(
        self, record: RequestRecord, chat: ChatRequest, completion_text: str, call: Call
    ) -> bool:
        """Hook for the server after a successful response. O(1); True when a shadow task started."""
        cfg = self._routes.get(record.route)
        if cfg is None or record.deployment is None or record.status >= 400:
            return False
        if record.deployment == cfg.reference or not sampled(record.request_id, cfg.sample):
            return False
        if self._in_flight.get(record.route, 0) >= cfg.max_in_flight:
            self._count(record.route, "skipped")
            return False
        self._in_flight[record.route] = self._in_flight.get(record.route, 0) + 1
        task = asyncio.create_task(
            self._run(cfg, record, chat, completion_text, call), name="tiergate-shadow"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _run(
        self, cfg: ShadowConfig, rec: RequestRecord, chat: ChatRequest, answer: str, call: Call
    ) -> None:
        assert rec.deployment is not None
        try:
            reference = await call(cfg.reference, chat)
            if cfg.comparator == "exact":
                agreed = compare_exact(answer, reference)
            elif cfg.comparator == "json":
                agreed = compare_json(answer, reference)
            else:
                assert cfg.judge is not None
                verdict = await call(cfg.judge, judge_request(chat, answer, reference, cfg.judge))
                agreed = verdict.strip().upper().startswith("AGREE")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info("shadow evaluation on %s failed: %s", cfg.reference, type(exc).__name__)
            self._count(rec.route, "error")
            return
        finally:
            self._in_flight[rec.route] -= 1
        self._drift.add_shadow(rec.deployment, hour_of(rec.start_ns), agreed)
        self._count(rec.route, "agree" if agreed else "disagree")

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
