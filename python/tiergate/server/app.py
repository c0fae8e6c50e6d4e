"""The traffic port: OpenAI and Anthropic surfaces over one request pipeline.

Phases of a request, each a named function with one job (as pingora's ``ProxyHttp``):
``read_body`` → ``parse`` (surface → canonical) → ``make_envelope`` (headers) →
planner → dispatcher → render (canonical → the caller's shape) → response headers.
Errors leave in the caller's API shape from one middleware.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import orjson
from aiohttp import web

from tiergate.envelope import ChatRequest, Envelope
from tiergate.errors import DispatchError, RequestError
from tiergate.providers.base import StreamEnd
from tiergate.routing.dispatch import Attempt
from tiergate.server.parse_anthropic import parse_anthropic_request
from tiergate.server.parse_openai import parse_openai_request
from tiergate.server.render_anthropic import (
    AnthropicStreamRenderer,
    anthropic_error_body,
    render_anthropic_message,
)
from tiergate.server.render_openai import (
    OpenAIStreamRenderer,
    openai_error_body,
    render_openai_completion,
)
from tiergate.server.state import Gateway

__all__ = ["GATEWAY", "make_app"]

log = logging.getLogger("tiergate.server")

GATEWAY: web.AppKey[Gateway] = web.AppKey("gateway", Gateway)
Surface = Literal["openai", "anthropic"]
JSON = "application/json"

# Seconds a streamed response may go without a chunk from the provider.
INTER_CHUNK_TIMEOUT_S = 30.0


def _surface(request: web.Request) -> Surface:
    return "anthropic" if request.path.startswith("/v1/messages") else "openai"


def error_response(surface: Surface, exc: RequestError | DispatchError) -> web.Response:
    body = anthropic_error_body(exc) if surface == "anthropic" else openai_error_body(exc)
    headers = {}
    if isinstance(exc, DispatchError) and exc.last is not None and exc.last.retry_after_s:
        headers["retry-after"] = str(max(1, round(exc.last.retry_after_s)))
    return web.Response(body=orjson.dumps(body), status=exc.status, content_type=JSON, headers=headers)


@web.middleware
async def errors_in_caller_shape(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    surface = _surface(request)
    try:
        return await handler(request)
    except (RequestError, DispatchError) as exc:
        return error_response(surface, exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kind = "not_found_error" if exc.status == 404 else "invalid_request_error"
        err = RequestError(f"{request.method} {request.path}: {exc.reason}", status=exc.status, type=kind)
        return error_response(surface, err)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        err = DispatchError("internal error in tiergate", status=500, type="server_error", code="internal_error")
        return error_response(surface, err)


async def read_body(request: web.Request, limit: int, timeout_s: float) -> bytes:
    """The whole body, refusing more than ``limit`` bytes or a client slower than ``timeout_s``."""
    length = request.content_length
    if length is not None and length > limit:
        raise RequestError(f"request body of {length} bytes exceeds the limit of {limit} bytes", status=413, code="request_too_large")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise RequestError(
                        f"request body exceeds the limit of {limit} bytes", status=413, code="request_too_large"
                    )
                chunks.append(chunk)
    except TimeoutError:
        raise RequestError(
            f"the request body did not arrive within {timeout_s:g} s", status=408, code="request_timeout"
        ) from None
    return b"".join(chunks)


def parse_json(raw: bytes) -> Any:
    if not raw:
        raise RequestError("the request body is empty; expected a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as uexc:
            raise RequestError(f"the request body is not valid UTF-8 (byte {uexc.start})") from None
        raise RequestError(f"the request body is not valid JSON: {exc.msg} at position {exc.pos}") from None


def _header_number(request: web.Request, name: str, low: float, high: float) -> float | None:
    value = request.headers.get(name)
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        raise RequestError(f"header `{name}` must be a number; got {value!r}", param=name) from None
    if not low <= number <= high:
        raise RequestError(f"header `{name}` must be between {low:g} and {high:g}", param=name)
    return number


def make_envelope(request: web.Request, chat: ChatRequest, surface: Surface) -> Envelope:
    inf = float("inf")
    return Envelope(
        surface=surface,
        route=chat.model,
        tenant=request.headers.get("x-tiergate-tenant", ""),
        latency_budget_ms=_header_number(request, "x-tiergate-latency-budget-ms", 1, inf),
        max_cost_usd=_header_number(request, "x-tiergate-max-cost-usd", 0, inf),
        min_quality=_header_number(request, "x-tiergate-min-quality", 0, 1),
        timeout_ms=_header_number(request, "x-tiergate-timeout-ms", 1, inf),
        idempotency_key=request.headers.get("idempotency-key"),
        request_id=os.urandom(12).hex(),
    )


def _headers(envelope: Envelope, deployment: str, attempts: list[Attempt], decision_us: float, relaxed: list[str]) -> dict[str, str]:
    headers = {
        "x-request-id": envelope.request_id,
        "x-tiergate-deployment": deployment,
        "x-tiergate-attempts": str(len(attempts)),
        "x-tiergate-decision-us": f"{decision_us:.1f}",
    }
    if relaxed:
        headers["x-tiergate-relaxed"] = ",".join(relaxed)
    return headers


async def _chat(request: web.Request, surface: Surface) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    server = gateway.config.server
    raw = await read_body(request, server.max_body_bytes, server.client_timeout_s)
    body = parse_json(raw)
    parse = parse_anthropic_request if surface == "anthropic" else parse_openai_request
    chat = parse(body, raw)
    envelope = make_envelope(request, chat, surface)
    plan = gateway.planner.plan(chat, envelope)
    if chat.stream:
        return await _stream(request, gateway, chat, envelope, plan.decision_us, plan.relaxed, plan)
    outcome = await gateway.dispatcher.complete(plan, chat, envelope)
    headers = _headers(envelope, outcome.deployment, outcome.attempts, plan.decision_us, plan.relaxed)
    c = outcome.completion
    if surface == "anthropic":
        payload = render_anthropic_message(c, f"msg_{envelope.request_id}", c.model)
    else:
        payload = render_openai_completion(c, f"chatcmpl-{envelope.request_id}", c.model)
    return web.Response(body=orjson.dumps(payload), content_type=JSON, headers=headers)


async def _stream(
    request: web.Request,
    gateway: Gateway,
    chat: ChatRequest,
    envelope: Envelope,
    decision_us: float,
    relaxed: list[str],
    plan: Any,
) -> web.StreamResponse:
    outcome = await gateway.dispatcher.stream(plan, chat, envelope)
    model = gateway.config.deployments[outcome.deployment].model
    renderer: OpenAIStreamRenderer | AnthropicStreamRenderer
    if envelope.surface == "anthropic":
        renderer = AnthropicStreamRenderer(f"msg_{envelope.request_id}", model)
    else:
        renderer = OpenAIStreamRenderer(f"chatcmpl-{envelope.request_id}", model, chat.include_usage)
    headers = _headers(envelope, outcome.deployment, outcome.attempts, decision_us, relaxed)
    headers["cache-control"] = "no-cache"
    response = web.StreamResponse(headers=headers)
    response.content_type = "text/event-stream"
    await response.prepare(request)
    await response.write(renderer.render(outcome.first))
    if isinstance(outcome.first, StreamEnd):
        await response.write_eof()
        return response
    loop = asyncio.get_running_loop()
    try:
        while True:
            remaining = outcome.deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            async with asyncio.timeout(min(remaining, INTER_CHUNK_TIMEOUT_S)):
                event = await anext(outcome.rest)
            await response.write(renderer.render(event))
            if isinstance(event, StreamEnd):
                break
    except (StopAsyncIteration, TimeoutError, Exception) as exc:
        if isinstance(exc, ConnectionResetError):
            raise
        reason = {
            StopAsyncIteration: "the provider's stream ended before completion",
            TimeoutError: "the provider's stream stalled",
        }.get(type(exc), f"the provider's stream failed: {exc}")
        log.warning("stream of %s on %s ended in error: %s", envelope.request_id, outcome.deployment, reason)
        close = getattr(outcome.rest, "aclose", None)
        if close is not None:
            await close()
        code = "stream_stalled" if isinstance(exc, TimeoutError) else "stream_interrupted"
        frame = AnthropicStreamRenderer.error(reason) if envelope.surface == "anthropic" else OpenAIStreamRenderer.error(reason, code)
        await response.write(frame)
    await response.write_eof()
    return response


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _chat(request, "openai")


async def messages(request: web.Request) -> web.StreamResponse:
    return await _chat(request, "anthropic")


async def list_models(request: web.Request) -> web.Response:
    config = request.app[GATEWAY].config
    data = [{"id": name, "object": "model", "created": 0, "owned_by": "tiergate"} for name in config.route_names()]
    return web.Response(body=orjson.dumps({"object": "list", "data": data}), content_type=JSON)


def make_app(gateway: Gateway) -> web.Application:
    # The body limit is enforced by read_body with an error in the caller's shape.
    app = web.Application(middlewares=[errors_in_caller_shape], client_max_size=2**62)
    app[GATEWAY] = gateway
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/chat/completions", chat_completions)
    app.router.add_post("/v1/messages", messages)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/models", list_models)
    return app
