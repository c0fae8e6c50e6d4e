"""One request through a simulated model, the same for every wire protocol.

admission (known model, rate limit, faults) → answer → latency → unary or streamed
response → statistics. A :class:`Wire` renders what is protocol-specific: errors,
the unary body and the stream's frames.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass

from aiohttp import web

from tiergate.envelope import ChatRequest
from tiergate.sim.behaviour import Answer, decide, last_user_text
from tiergate.sim.cache import CacheHint
from tiergate.sim.faults import STALL_MAX_S, Fault
from tiergate.sim.latency import Latency
from tiergate.sim.state import ModelSpec, SimState

__all__ = ["Call", "Frame", "Wire", "serve"]


@dataclass(slots=True)
class Frame:
    data: bytes
    # Output tokens this frame carries (drives the token-rate pacing).
    tokens: int = 0
    # Part of the closing sequence, never sent by a cut stream.
    terminal: bool = False


@dataclass(slots=True)
class Call:
    protocol: str
    model: str
    spec: ModelSpec
    req: ChatRequest
    answer: Answer
    id: str
    created: int
    latency: Latency

    @property
    def latency_ms(self) -> int:
        return round(self.latency.total_s(self.answer.output_tokens) * 1000)


class Wire(ABC):
    """The protocol-specific half of a request."""

    name: str = ""
    stream_content_type: str = "text/event-stream"

    @abstractmethod
    def error(
        self,
        status: int,
        message: str,
        *,
        retry_after: float | None = None,
        error_type: str | None = None,
    ) -> web.Response: ...

    @abstractmethod
    def not_found(self, model: str) -> web.Response: ...

    @abstractmethod
    def unary(self, call: Call) -> tuple[bytes, str]:
        """(body, content type) of a whole answer."""

    @abstractmethod
    def frames(self, call: Call) -> list[Frame]: ...

    @abstractmethod
    def malformed(self, call: Call) -> bytes:
        """A stream chunk whose JSON does not parse."""

    @abstractmethod
    def stream_error(self, call: Call, status: int, message: str, error_type: str | None) -> bytes:
        """The protocol's in-stream error event."""

    def headers(self, call: Call) -> dict[str, str]:
        return {}


_MESSAGES = {
    400: "Invalid request (simulated).",
    408: "The model timed out (simulated).",
    429: "Rate limit exceeded, retry later (simulated).",
    500: "Internal server error (simulated).",
    502: "Bad gateway (simulated).",
    503: "The service is temporarily unavailable (simulated).",
    504: "The model timed out (simulated).",
    529: "Overloaded (simulated).",
}


def fault_message(status: int) -> str:
    return _MESSAGES.get(status, f"Simulated error {status}.")


def _gone(request: web.Request) -> bool:
    t = request.transport
    return t is None or t.is_closing()


def _close(request: web.Request) -> None:
    t = request.transport
    if t is not None:
        t.close()


async def _stall(request: web.Request, state: SimState) -> None:
    """Silence until the client goes away, the server stops, or STALL_MAX_S pass."""
    end = time.monotonic() + STALL_MAX_S
    while not _gone(request) and time.monotonic() < end:
        if not await state.pause(0.05):
            return


async def serve(
    request: web.Request,
    state: SimState,
    wire: Wire,
    model: str,
    req: ChatRequest,
    cache: CacheHint | None = None,
) -> web.StreamResponse:
    spec = state.models.get(model)
    if spec is None:
        return wire.not_found(model)
    st = state.stats_for(model)
    st.calls += 1
    st.by_protocol[wire.name] = st.by_protocol.get(wire.name, 0) + 1
    if req.stream:
        st.streams += 1
    wait = spec.limiter.admit() if spec.limiter is not None else None
    if wait is not None:
        st.errors += 1
        st.rate_limited += 1
        return wire.error(429, fault_message(429), retry_after=wait)
    fault, factor = state.faults.draw(model)
    if fault is not None and (
        fault.kind in ("error", "ratelimit") or (fault.kind == "stream_error" and not req.stream)
    ):
        st.errors += 1
        if fault.kind == "ratelimit":
            st.rate_limited += 1
        retry = (
            fault.retry_after_s
            if fault.kind == "ratelimit" or fault.status in (429, 503, 529)
            else None
        )
        return wire.error(
            fault.status,
            fault_message(fault.status),
            retry_after=retry,
            error_type=fault.error_type,
        )
    record = None
    if state.dataset is not None and spec.dataset_model is not None:
        record = state.dataset.lookup(last_user_text(req), spec.dataset_model)
    answer = decide(
        req,
        seed=state.seed,
        model=model,
        max_tokens=req.max_tokens or spec.max_output_tokens,
        record_for=record,
    )
    if cache is not None:
        seen = state.caches.setdefault(model, {})
        if cache.key in seen:
            answer.cache_read_tokens = min(seen[cache.key], answer.input_tokens)
        else:
            answer.cache_write_tokens = seen[cache.key] = min(cache.tokens, answer.input_tokens)
    call = Call(
        protocol=wire.name,
        model=model,
        spec=spec,
        req=req,
        answer=answer,
        id=uuid.uuid4().hex[:24],
        created=int(time.time()),
        latency=spec.latency.draw().scaled(factor),
    )
    runner = _stream if req.stream else _unary
    resp, served = await runner(request, state, wire, call, fault)
    if served:
        st.input_tokens += answer.input_tokens
        st.output_tokens += answer.output_tokens
        if answer.record is not None:
            st.cost_usd += answer.record.cost_usd
            st.correct += answer.record.correct
            st.dataset_answers += 1
        else:
            cached = spec.price.cached if spec.price.cached is not None else spec.price.input
            fresh = answer.input_tokens - answer.cache_read_tokens
            st.cost_usd += (
                fresh * spec.price.input
                + answer.cache_read_tokens * cached
                + answer.output_tokens * spec.price.output
            ) / 1e6
        st.cached_input_tokens += answer.cache_read_tokens
    else:
        st.errors += 1
    return resp


async def _unary(
    request: web.Request, state: SimState, wire: Wire, call: Call, fault: Fault | None
) -> tuple[web.StreamResponse, bool]:
    body, ctype = wire.unary(call)
    kind = fault.kind if fault is not None else None
    if kind == "stall":
        await _stall(request, state)
        _close(request)
        return web.Response(), False
    if not await state.pause(call.latency.total_s(call.answer.output_tokens)) or _gone(request):
        _close(request)
        return web.Response(), False
    headers = {"Content-Type": ctype, **wire.headers(call)}
    if kind == "malformed":
        return web.Response(
            body=body[: len(body) // 2] + b"\x00<!-- not json", headers=headers
        ), False
    if kind == "cut":
        resp = web.StreamResponse(headers=headers)
        resp.content_length = len(body)
        await resp.prepare(request)
        await resp.write(body[: len(body) // 2])
        _close(request)
        return resp, False
    return web.Response(body=body, headers=headers), True


async def _stream(
    request: web.Request, state: SimState, wire: Wire, call: Call, fault: Fault | None
) -> tuple[web.StreamResponse, bool]:
    frames = wire.frames(call)
    kind = fault.kind if fault is not None else None
    resp = web.StreamResponse(
        headers={
            "Content-Type": wire.stream_content_type,
            "Cache-Control": "no-cache",
            **wire.headers(call),
        }
    )
    resp.enable_chunked_encoding()
    loop = asyncio.get_running_loop()
    start = loop.time()
    await resp.prepare(request)
    body = [f for f in frames if not f.terminal]
    first_token = next((i for i, f in enumerate(frames) if f.tokens), 0)
    if kind == "stall":
        frames = frames[: first_token + 1]
    elif kind in ("cut", "malformed", "stream_error"):
        frames = body[: max(first_token + 1, len(body) // 2)]
    lat = call.latency
    emitted = 0
    try:
        for f in frames:
            due = start + lat.ttft_s + emitted / lat.tokens_per_s
            if not await state.pause(due - loop.time()):
                _close(request)
                return resp, False
            await resp.write(f.data)
            emitted += f.tokens
        if kind == "stall":
            await _stall(request, state)
            _close(request)
            return resp, False
        if kind == "cut":
            _close(request)
            return resp, False
        if kind == "malformed":
            await resp.write(wire.malformed(call))
            await resp.write_eof()
            return resp, False
        if kind == "stream_error" and fault is not None:
            message = fault_message(fault.status)
            await resp.write(wire.stream_error(call, fault.status, message, fault.error_type))
            await resp.write_eof()
            return resp, False
        await resp.write_eof()
    except ConnectionError:
        return resp, False
    return resp, True
