"""The traffic port: OpenAI and Anthropic surfaces over one request pipeline.

Phases of a request, each a named function with one job (as pingora's ``ProxyHttp``):
``read_body`` → parse (surface → canonical) → ``make_envelope`` (headers) → tenant →
idempotency (replay / coalesce / lead) → planner → dispatcher → render (canonical → the
caller's shape) → ``finish`` (record for telemetry, spend). Errors leave in the
caller's API shape: the pipeline answers its own (``Pipeline.run``), the other routes
through one wrapper (``caller_shaped``), both by ``failure_response``.

The port is served by aiohttp's low-level server with a path table (``make_handler``),
not a ``web.Application``: its router, match info and request subclass cost about 20k
instructions a request, a sixth of what tiergate adds to a bare proxy.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Mapping
from typing import Any, Literal, cast

import orjson
from aiohttp import web

from tiergate import _core
from tiergate.deadline import Deadline
from tiergate.envelope import ChatRequest, Envelope
from tiergate.errors import DispatchError, ErrorClass, ProviderError, RequestError
from tiergate.providers.base import Usage
from tiergate.providers.relay import RelayStream
from tiergate.routing.dispatch import StreamItem
from tiergate.routing.idempotency import Flight, Idempotency, Recorded
from tiergate.routing.planner import Known, Plan
from tiergate.safety import SafetyPolicy, request_findings, scan_output, scan_request
from tiergate.server.parse_anthropic import (
    ingest_plain_anthropic_request,
    parse_anthropic_request,
)
from tiergate.server.parse_openai import ingest_plain_openai_request, parse_openai_request
from tiergate.server.render_anthropic import (
    AnthropicStreamRenderer,
    anthropic_error_body,
    anthropic_message_body,
)
from tiergate.server.render_openai import (
    OpenAIStreamRenderer,
    openai_completion_body,
    openai_error_body,
)
from tiergate.server.state import Gateway, Runtime
from tiergate.server.stepping import Pending, start, step
from tiergate.server.stream_frames import End, EventFrames, Frames
from tiergate.telemetry.http import Handler, feedback_handler
from tiergate.telemetry.hub import Telemetry
from tiergate.telemetry.record import AttemptRecord, RequestRecord, SafetyFinding, round_ms

__all__ = ["make_handler"]

log = logging.getLogger("tiergate.server")

Surface = Literal["openai", "anthropic"]
JSON = "application/json"
_JSON_HEADERS = (("content-type", JSON),)
_SSE_HEADERS = (("content-type", "text/event-stream"), ("cache-control", "no-cache"))


# Request ids: a random per-process prefix and a counter (unique, and no getrandom call
# per request; they name requests, they are not secrets).
_ID_PREFIX = os.urandom(4).hex()
_ID_SEQ = itertools.count(int.from_bytes(os.urandom(3), "big"))


def _new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_SEQ):016x}"


def _surface(request: web.BaseRequest) -> Surface:
    return "anthropic" if request.path.startswith("/v1/messages") else "openai"


class CallerStalled(ConnectionResetError):
    """A send to the caller waited longer than the client timeout: the caller stopped
    reading. Its connection is dropped; the request ends as a hang-up does (499)."""


def error_body(surface: Surface, exc: RequestError | DispatchError) -> bytes:
    body = anthropic_error_body(exc) if surface == "anthropic" else openai_error_body(exc)
    return orjson.dumps(body)


def error_response(surface: Surface, exc: RequestError | DispatchError) -> web.Response:
    headers = {}
    if isinstance(exc, DispatchError) and exc.last is not None and exc.last.retry_after_s:
        headers["retry-after"] = str(max(1, round(exc.last.retry_after_s)))
    return web.Response(
        body=error_body(surface, exc), status=exc.status, content_type=JSON, headers=headers
    )


def failure_response(
    exc: Exception, request: web.BaseRequest, surface: Surface | None = None
) -> web.StreamResponse:
    """What the caller gets for ``exc`` in its API shape (``surface``, or the one its path
    names); re-raises what has nobody to answer (the caller left) or is not a failure."""
    if isinstance(exc, RequestError | DispatchError):
        return error_response(surface or _surface(request), exc)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        kind = "not_found_error" if exc.status == 404 else "invalid_request_error"
        response = error_response(
            surface or _surface(request),
            RequestError(
                f"{request.method} {request.path}: {exc.reason}", status=exc.status, type=kind
            ),
        )
        if "Allow" in exc.headers:  # a 405 names the methods the path takes
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    if isinstance(exc, ConnectionResetError):
        raise exc  # the caller went away: nobody to answer
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    err = DispatchError(
        "internal error in tiergate", status=500, type="server_error", code="internal_error"
    )
    return error_response(surface or _surface(request), err)


def caller_shaped(handler: Handler, surface: Surface | None = None) -> Handler:
    """``handler`` with every failure answered in the caller's API shape (``surface``,
    or the one its path names)."""

    async def shaped(request: web.BaseRequest) -> web.StreamResponse:
        try:
            return await handler(request)
        except Exception as exc:
            return failure_response(exc, request, surface)

    return shaped


def _no_route(allowed: Mapping[str, list[str]]) -> Handler:
    """What a path or method tiergate does not serve gets: 404, or 405 (with the methods
    ``allowed`` there) for a known path."""

    async def no_route(request: web.BaseRequest) -> web.StreamResponse:
        methods = allowed.get(request.path)
        if methods is not None:
            raise web.HTTPMethodNotAllowed(request.method, methods)
        raise web.HTTPNotFound

    return no_route


async def read_body(request: web.BaseRequest, limit: int, timeout_s: float) -> bytes:
    """The whole body, refusing more than ``limit`` bytes or a client slower than ``timeout_s``."""
    length = request.content_length
    if length is not None and length > limit:
        raise RequestError(
            f"request body of {length} bytes exceeds the limit of {limit} bytes",
            status=413,
            code="request_too_large",
        )
    content = request.content
    if length is not None and content.is_eof():
        # The whole body came with the headers (the common case): no timer needed.
        return content.read_nowait()
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise RequestError(
                        f"request body exceeds the limit of {limit} bytes",
                        status=413,
                        code="request_too_large",
                    )
                chunks.append(chunk)
    except TimeoutError:
        raise RequestError(
            f"the request body did not arrive within {timeout_s:g} s",
            status=408,
            code="request_timeout",
        ) from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


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
        raise RequestError(
            f"the request body is not valid JSON: {exc.msg} at position {exc.pos}"
        ) from None


def _header_number(value: str, name: str, low: float, high: float) -> float:
    """The number a tiergate header carries, checked against its range."""
    try:
        number = float(value)
    except ValueError:
        raise RequestError(
            f"header `{name}` must be a number; got {value[:32]!r}", param=name
        ) from None
    if not low <= number <= high:
        raise RequestError(f"header `{name}` must be between {low:g} and {high:g}", param=name)
    return number


def make_envelope(
    headers: Mapping[str, str],
    chat: ChatRequest,
    surface: Surface,
    request_id: str,
    tenant: str | None,
    key: str | None,
) -> Envelope:
    """``tenant`` and ``key``: the ``x-tiergate-tenant`` and ``Idempotency-Key`` headers,
    which the pipeline reads before the body is parsed (each header is read once)."""
    inf = float("inf")
    get = headers.get
    if key is not None and not 0 < len(key) <= 256:
        raise RequestError(
            "header `Idempotency-Key` must be 1-256 characters", param="Idempotency-Key"
        )
    # Callers seldom send these: an absent one costs a lookup, not a call.
    budget = get("x-tiergate-latency-budget-ms")
    ceiling = get("x-tiergate-max-cost-usd")
    floor = get("x-tiergate-min-quality")
    timeout = get("x-tiergate-timeout-ms")
    # Positional: binding nine keywords cost about as much as building the envelope.
    return Envelope(
        surface,
        chat.model,
        tenant or "",
        None if budget is None else _header_number(budget, "x-tiergate-latency-budget-ms", 1, inf),
        None if ceiling is None else _header_number(ceiling, "x-tiergate-max-cost-usd", 0, inf),
        None if floor is None else _header_number(floor, "x-tiergate-min-quality", 0, 1),
        None if timeout is None else _header_number(timeout, "x-tiergate-timeout-ms", 1, inf),
        key,
        request_id,
    )


def _decision_headers(
    first: tuple[tuple[str, str], ...], record: RequestRecord, plan: Plan, attempts: int
) -> tuple[tuple[str, str], ...]:
    """``first`` and then the documented ``x-tiergate-*`` headers: one tuple, which the
    response takes and the replay store keeps as it is (no list to copy twice)."""
    headers = (
        *first,
        ("x-request-id", record.request_id),
        ("x-tiergate-deployment", record.deployment or ""),
        ("x-tiergate-attempts", str(attempts)),
        ("x-tiergate-decision-us", f"{plan.decision_us:.1f}"),
    )
    if plan.relaxed:
        return (*headers, ("x-tiergate-relaxed", ",".join(plan.relaxed)))
    return headers


def _account(gw: Gateway, record: RequestRecord, attempts: list[AttemptRecord]) -> None:
    """Fold the attempts into the record: who served, tokens, cost (every attempt billed)."""
    record.attempts = attempts
    w = None  # the last successful attempt
    cost = 0.0
    fallbacks = 0
    hedged = False
    for a in attempts:  # one pass, not a list and generators over the attempts
        cost += a.cost_usd
        if a.error_class is None:
            w = a
        elif not a.cancelled:
            fallbacks += 1
        if a.hedge:
            hedged = True
    record.cost_usd = cost
    record.fallbacks = fallbacks
    record.hedged = hedged
    if w is not None:
        record.deployment, record.provider = w.deployment, w.provider
        record.tier = gw.tiers[w.deployment]
        record.input_tokens, record.output_tokens = w.input_tokens, w.output_tokens
        record.finish_reason = w.finish_reason
        if w.ttft_ms is not None:
            record.ttft_ms = w.ttft_ms
    if cost:
        gw.tenants.add_spend(record.tenant, cost)


def _last_user_text(chat: ChatRequest) -> str:
    for m in reversed(chat.messages):
        if m.role == "user":
            return m.text
    return ""


class Pipeline:
    """One request's trip through the phases. Holds nothing beyond the request."""

    __slots__ = (
        "chat",
        "findings",
        "gw",
        "record",
        "request",
        "scan_later",
        "surface",
        "telemetry",
        "text",
    )

    def __init__(
        self, request: web.BaseRequest, surface: Surface, gw: Gateway, telemetry: Telemetry
    ) -> None:
        self.request = request
        self.surface = surface
        self.gw = gw
        self.telemetry = telemetry
        self.chat: ChatRequest | None = None
        self.findings: list[SafetyFinding] = []
        # A policy whose request scan only reports: run in _report, after the answer.
        self.scan_later: SafetyPolicy | None = None
        self.text: str | None = None  # the answer's text, for output checks and shadows
        # The route is set once the body is read, the traceparent first thing in _run.
        self.record = RequestRecord(_new_request_id(), time.time_ns(), surface, "")

    async def run(self) -> web.StreamResponse:
        """The request's answer, a failure's included (in the caller's API shape)."""
        gw = self.gw
        gw.inflight += 1
        started = time.perf_counter()
        try:
            return await self._run()
        except (RequestError, DispatchError) as exc:
            self.record.status = exc.status
            self.record.error_type = exc.type
            return error_response(self.surface, exc)
        except asyncio.CancelledError:
            if self.record.status < 400:
                self.record.status = 499  # the caller went away before the answer
            raise
        except ConnectionResetError:
            # A send found the caller gone. Not raised: aiohttp would log the hang-up as
            # a server error. The response returned is never sent (its connection is
            # closing; aiohttp's attempt ends quietly).
            self.record.status = 499
            return web.Response(status=499)
        except Exception as exc:
            response = failure_response(exc, self.request, self.surface)
            self.record.status = response.status
            self.record.error_type = (
                "server_error" if response.status >= 500 else "invalid_request_error"
            )
            return response
        finally:
            gw.inflight -= 1
            self.record.latency_ms = round_ms((time.perf_counter() - started) * 1000)
            self._report()

    def _report(self) -> None:
        """Everything telemetry learns from this request, handed over without blocking."""
        t, rec, chat = self.telemetry, self.record, self.chat
        findings = self.findings
        if self.scan_later is not None and chat is not None:
            findings = request_findings(chat, self.scan_later)
        if self.text is not None and chat is not None and rec.status < 400:
            findings = findings + scan_output(
                self.text, chat.response_format, t.safety_policy(rec.tenant)
            )
        rec.safety = findings
        if findings:
            t.record_safety(findings, rec.request_id, rec.tenant)
        if t.log_text and chat is not None:
            rec.prompt_text = _last_user_text(chat)
            rec.completion_text = self.text
        events = self.gw.planner.health.events
        while events:
            kind, deployment, _ = events.popleft()
            (t.ejection if kind == "ejection" else t.cooldown)(deployment)
        if rec.hedged:  # set by _account when an attempt was a hedge
            for a in rec.attempts:
                if a.hedge:
                    t.hedge(rec.route, a.deployment)
        t.record(rec)
        if t.shadow is not None and chat is not None and self.text is not None and rec.status < 400:
            t.shadow.maybe_schedule(rec, chat, self.text, self.gw.call_text)

    async def _run(self) -> web.StreamResponse:
        gw, request, record = self.gw, self.request, self.record
        h = request.headers
        get = h.get
        record.traceparent = get("traceparent")
        raw = await read_body(request, gw.body_limit, gw.client_timeout_s)
        tenant_header = get("x-tiergate-tenant")
        caller_key = get("idempotency-key")
        # The caller is authenticated before its body is parsed (as the providers' own
        # APIs do: a refused caller learns nothing about its body), so the core can key
        # the body under its tenant in the call that parses it.
        tenant = gw.tenants.resolve(get("authorization"), get("x-api-key"), tenant_header or None)
        record.tenant = tenant.name
        key: bytes | None = None
        known: Known | None = None
        ingested = None
        if self.surface == "openai":
            # No key here when the caller sent its own: Idempotency.key hashes that.
            scope = None if caller_key is not None else Idempotency.scope(tenant.name, "openai")
            ingested = ingest_plain_openai_request(raw, scope)
        elif self.surface == "anthropic":
            scope = None if caller_key is not None else Idempotency.scope(tenant.name, "anthropic")
            ingested = ingest_plain_anthropic_request(raw, scope)
        if ingested is not None:
            chat, key, known = ingested
        elif self.surface == "anthropic":
            chat = parse_anthropic_request(parse_json(raw), raw)
        else:
            chat = parse_openai_request(parse_json(raw), raw)
        envelope = make_envelope(
            h, chat, self.surface, record.request_id, tenant_header, caller_key
        )
        envelope.tenant = tenant.name
        record.route = record.request_model = envelope.route
        record.stream = chat.stream
        gw.tenants.check_spend(tenant)
        gw.planner.route(envelope.route)  # unknown routes fail before anything is shared
        # Inline safety: findings are logged, redacted before any provider sees them, or
        # the request is refused (400) — as the tenant's policy says. A policy that only
        # logs cannot change the request, so its scan runs in _report, after the answer.
        policy = self.telemetry.safety_policy(tenant.name)
        if policy.changes_requests:
            checked = scan_request(chat, policy)
            self.findings = checked.findings
            if checked.blocked:
                raise checked.error()
            chat = checked.request
        else:
            self.scan_later = policy
        self.chat = chat
        if key is None:
            key = Idempotency.key(
                raw, tenant.name, self.surface, chat.stream, envelope.idempotency_key
            )
        found = gw.idempotency.lookup_now(key)
        outcome, value = found if found is not None else await gw.idempotency.lookup(key)
        if isinstance(value, Recorded):
            record.idempotency = outcome
            record.status = value.status
            return await self._replay(value, outcome)
        record.idempotency = "miss"
        flight = value
        try:
            plan = gw.planner.plan(chat, envelope, tenant, known)
        except BaseException as exc:
            gw.idempotency.abandon(flight, self._failure(exc))
            raise
        record.decision_us = int(plan.decision_us * 10 + 0.5) / 10
        record.decision_reason = plan.reason
        record.relaxed = plan.relaxed
        if chat.stream:
            return await self._stream(chat, envelope, plan, flight)
        return await self._complete(chat, envelope, plan, flight)

    async def _send_late(self, rest: Pending[object]) -> None:
        """The rest of a send to the caller that had to wait (the socket is full: the
        caller is not reading), bounded by the client timeout as a slow request is."""
        guard = Deadline(self.gw.client_timeout_s)
        try:
            await rest
        except asyncio.CancelledError:
            try:
                guard.check()
            except TimeoutError:
                transport = self.request.transport
                if transport is not None:
                    transport.abort()
                raise CallerStalled("the caller stopped reading") from None
            raise
        finally:
            guard.cancel()

    def _failure(self, exc: BaseException) -> Recorded | None:
        """What followers of this request get when it failed; None (a follower leads a
        fresh call) when the failure was this caller leaving."""
        if isinstance(exc, asyncio.CancelledError | ConnectionResetError):
            return None
        if isinstance(exc, RequestError | DispatchError):
            return Recorded(exc.status, _JSON_HEADERS, error_body(self.surface, exc))
        err = DispatchError(
            "the shared request failed", status=502, type="upstream_error", code="shared_failure"
        )
        return Recorded(502, _JSON_HEADERS, error_body(self.surface, err))

    async def _replay(self, value: Recorded, outcome: str) -> web.StreamResponse:
        headers = [(k, v) for k, v in value.headers if k != "x-request-id"]
        headers += [("x-request-id", self.record.request_id), ("x-tiergate-idempotency", outcome)]
        if 200 <= value.status < 300:
            headers.append(("x-tiergate-replay", "true"))
        if not value.stream:
            return web.Response(body=value.body, status=value.status, headers=headers)
        response = web.StreamResponse(status=value.status, headers=headers)
        await response.prepare(self.request)
        for frame in value.frames:
            if (late := start(response.write(frame))) is not None:
                await self._send_late(late)
        if (late := start(response.write_eof())) is not None:
            await self._send_late(late)
        return response

    async def _complete(
        self, chat: ChatRequest, envelope: Envelope, plan: Plan, flight: Flight
    ) -> web.StreamResponse:
        gw, record = self.gw, self.record
        attempts: list[AttemptRecord] = []
        try:
            outcome = await gw.dispatcher.complete(plan, chat, envelope, attempts)
        except BaseException as exc:
            _account(gw, record, attempts)
            gw.idempotency.abandon(flight, self._failure(exc))
            raise
        _account(gw, record, outcome.attempts)
        c = outcome.completion
        self.text = (
            c.text if c.text is not None else (c.tool_calls[0].arguments if c.tool_calls else "")
        )
        record.response_model = c.model
        record.reasoning_tokens = c.usage.reasoning_tokens
        record.cached_tokens = c.usage.cached_tokens
        record.predicted_quality = plan.predicted_quality(gw.planner, outcome.deployment)
        if self.surface == "anthropic":
            body = anthropic_message_body(c, f"msg_{record.request_id}", c.model)
        else:
            body = openai_completion_body(c, f"chatcmpl-{record.request_id}", c.model)
        headers = _decision_headers(_JSON_HEADERS, record, plan, len(record.attempts))
        response = web.Response(body=body, headers=headers)
        # The answer leaves first; the replay store and telemetry run after it is sent.
        # A repeat of this request arriving in between waits on the flight (coalesced).
        try:
            await response.prepare(self.request)
            if (late := start(response.write_eof())) is not None:
                await self._send_late(late)
        finally:  # kept even when the caller left: it was billed; its retry replays it
            recorded = Recorded(200, headers, body)
            if not gw.idempotency.finish_now(flight, recorded):
                await gw.idempotency.finish(flight, recorded)
        return response

    async def _stream(
        self, chat: ChatRequest, envelope: Envelope, plan: Plan, flight: Flight
    ) -> web.StreamResponse:
        gw, record = self.gw, self.record
        attempts: list[AttemptRecord] = []
        try:
            # Either surface takes a relay: the core renders both surfaces' frames.
            outcome = await gw.dispatcher.stream(plan, chat, envelope, attempts, True)
        except BaseException as exc:
            _account(gw, record, attempts)
            gw.idempotency.abandon(flight, self._failure(exc))
            raise
        record.deployment = outcome.deployment
        model = outcome.model
        event = outcome.first
        rest = outcome.rest
        framer: Frames
        relayed = False
        if type(event) is _core.OpenAIRelay:
            # The relay renders what it parsed: it is its own framer.
            relayed = True
            if self.surface == "anthropic":
                event.begin_anthropic(f"msg_{record.request_id}", model)
            else:
                event.begin(f"chatcmpl-{record.request_id}", model, None, chat.include_usage)
            framer = event
        elif self.surface == "anthropic":
            framer = EventFrames(AnthropicStreamRenderer(f"msg_{record.request_id}", model))
        else:
            framer = EventFrames(
                OpenAIStreamRenderer(f"chatcmpl-{record.request_id}", model, chat.include_usage)
            )
        # Headers leave before the winning attempt is accounted: count it in (+1).
        headers = _decision_headers(_SSE_HEADERS, record, plan, len(outcome.attempts) + 1)
        response = web.StreamResponse(headers=headers)
        await response.prepare(self.request)
        frames: list[bytes] = []
        sent = 0  # frames[:sent] were written
        usage: Usage | None = None
        finish: str | None = None
        error: ProviderError | None = None
        guard: Deadline | None = None
        pending: Pending[StreamItem] | None = None  # a step begun and not yet awaited
        try:
            while True:
                frame = framer.render(event)
                frames.append(frame)
                if framer.ended:
                    break
                if not sent:
                    # The first frame leaves at once (time to first byte); later frames
                    # parsed from the same network chunk are batched into one send.
                    if (late := start(response.write(frame))) is not None:
                        await self._send_late(late)
                    sent = 1
                pending = None
                if not relayed:
                    ready, nxt = step(rest)
                    if ready:
                        # Already parsed from the same network chunk: keep batching.
                        event = cast(StreamItem, nxt)
                        continue
                    pending = cast(Pending[StreamItem], nxt)
                # The provider has nothing more yet: send what we have, then wait. (A
                # relay's item is all that its network chunk held, so the next is never
                # there yet: a step would only suspend, and cost more than the wait.)
                if sent < len(frames):
                    late = start(
                        response.write(
                            frames[sent] if len(frames) - sent == 1 else b"".join(frames[sent:])
                        )
                    )
                    if late is not None:
                        await self._send_late(late)
                    sent = len(frames)
                # The wait: the stream's gap, cut to what is left of the request's time
                # (conditionals: min and max parse their arguments as keywords, about
                # 600 instructions an event).
                wait = outcome.deadline - time.monotonic()
                if wait > gw.inter_chunk_timeout_s:
                    wait = gw.inter_chunk_timeout_s
                elif wait < 0.0:
                    wait = 0.0
                # One deadline for the stream's waits, re-armed for each (a heap entry
                # per wait cost a third of what the loop spends on a chunk).
                if guard is None:
                    guard = Deadline(wait)
                else:
                    guard.rearm(wait)
                try:
                    # A relay's step starts here, after the sends (which may raise).
                    event = await (rest.__anext__() if pending is None else pending)
                    pending = None
                except asyncio.CancelledError:
                    guard.check()  # TimeoutError: the stream stalled
                    raise
                finally:
                    guard.cancel()
            # The end reached the caller before any bookkeeping below.
            late = start(
                response.write_eof(
                    frames[sent] if len(frames) - sent == 1 else b"".join(frames[sent:])
                )
            )
            if late is not None:
                await self._send_late(late)
            sent = len(frames)
            # The provider's stream is done: close it here, which returns its connection
            # to the pool, rather than leave it to the event loop's async-generator
            # finalizer (a thread-safe wake-up and a task per stream). A relayed stream
            # closes with a plain call (no coroutine to run).
            if type(rest) is RelayStream:
                rest.close()
            else:
                await _aclose(rest)
            end = framer.end
            assert end is not None
            finish, usage, record.response_model = _end_facts(end)
        except (StopAsyncIteration, TimeoutError, ProviderError) as exc:
            if isinstance(exc, ProviderError):
                error = exc
            elif isinstance(exc, TimeoutError):
                error = ProviderError(ErrorClass.TIMEOUT, "the provider's stream stalled")
            else:
                error = ProviderError(
                    ErrorClass.SERVER_ERROR, "the provider's stream ended before completion"
                )
        except (ConnectionResetError, asyncio.CancelledError) as exc:
            # The caller went away (or stopped reading: CallerStalled): stop the upstream
            # stream; nothing is kept. The usage is the provider's when the stream had
            # ended (the caller left at the last send), else an estimate from what was
            # delivered. A step the hang-up interrupted is ended first: the iterator
            # cannot close while it runs.
            if pending is not None:
                await _aclose(pending)
            await _aclose(rest)
            end = framer.end
            if end is not None:
                finish, usage, record.response_model = _end_facts(end)
            gw.dispatcher.stream_finished(
                outcome, envelope, usage, finish, None, framer.delivered, True
            )
            _account(gw, record, outcome.attempts)
            stalled = isinstance(exc, CallerStalled)
            record.stream_error = "caller stopped reading" if stalled else "caller disconnected"
            gw.idempotency.abandon(flight, None)
            raise
        self.text = framer.text
        attempt = gw.dispatcher.stream_finished(
            outcome, envelope, usage, finish, error, framer.delivered
        )
        _account(gw, record, outcome.attempts)  # sets record.ttft_ms when the stream ended well
        record.predicted_quality = plan.predicted_quality(gw.planner, outcome.deployment)
        if error is not None:
            record.ttft_ms = attempt.ttft_ms
            await _aclose(rest)
            reason = error.message
            record.stream_error = reason
            record.status = 502
            log.warning(
                "stream %s on %s failed after its first byte: %s",
                record.request_id,
                outcome.deployment,
                reason,
            )
            code = (
                "stream_stalled"
                if error.error_class is ErrorClass.TIMEOUT
                else "stream_interrupted"
            )
            if self.surface == "anthropic":
                terminal = AnthropicStreamRenderer.error(reason)
            else:
                terminal = OpenAIStreamRenderer.error(reason, code)
            gw.idempotency.abandon(flight, self._failure(RuntimeError()))
            # What was rendered and not yet sent, then the end.
            if (late := start(response.write(b"".join(frames[sent:]) + terminal))) is not None:
                await self._send_late(late)
            if (late := start(response.write_eof())) is not None:
                await self._send_late(late)
            return response
        # The end was written above (write_eof): only the replay store is left.
        recorded = Recorded(200, headers, b"", tuple(frames), True)  # by position: cheaper
        if not gw.idempotency.finish_now(flight, recorded):
            await gw.idempotency.finish(flight, recorded)
        return response


def _end_facts(end: End) -> tuple[str, Usage, str]:
    """A stream's end as accounting takes it: finish reason, usage, model."""
    finish, tokens_in, tokens_out, cached, reasoning, model = end
    return finish, Usage(tokens_in, tokens_out, cached, reasoning), model


async def _aclose(events: Any) -> None:
    close = getattr(events, "aclose", None)
    if close is not None:
        try:
            await close()
        except Exception:
            pass


def explain(runtime: Runtime, surface: Surface) -> Handler:
    """``POST /v1/route/explain`` (a chat-completions body) or, on the Anthropic surface,
    ``POST /v1/messages/route/explain`` (a Messages body)."""
    parse = parse_anthropic_request if surface == "anthropic" else parse_openai_request

    async def explained(request: web.BaseRequest) -> web.Response:
        """The routing decision for a body, without calling any provider."""
        gw = runtime.current
        raw = await read_body(request, gw.body_limit, gw.client_timeout_s)
        chat = parse(parse_json(raw), raw)
        h = request.headers
        envelope = make_envelope(
            h,
            chat,
            surface,
            os.urandom(12).hex(),
            h.get("x-tiergate-tenant"),
            h.get("idempotency-key"),
        )
        tenant = gw.tenants.resolve(
            h.get("authorization"), h.get("x-api-key"), envelope.tenant or None
        )
        envelope.tenant = tenant.name
        return web.Response(
            body=orjson.dumps(gw.planner.explain(chat, envelope, tenant)), content_type=JSON
        )

    return explained


def list_models(runtime: Runtime) -> Handler:
    async def models(request: web.BaseRequest) -> web.Response:
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "tiergate"}
            for name in runtime.current.config.route_names()
        ]
        return web.Response(body=orjson.dumps({"object": "list", "data": data}), content_type=JSON)

    return models


def make_handler(runtime: Runtime, telemetry: Telemetry) -> Handler:
    """The traffic port's handler for ``web.Server``: each path's methods in a table, any
    other path (404) or method (405, with Allow) answered in the caller's shape."""

    # The surfaces return the pipeline's coroutine, which answers its own failures: no
    # wrapper and no coroutine of their own on the path every request takes.
    def chat_completions(request: web.BaseRequest) -> Awaitable[web.StreamResponse]:
        return Pipeline(request, "openai", runtime.current, telemetry).run()

    def messages(request: web.BaseRequest) -> Awaitable[web.StreamResponse]:
        return Pipeline(request, "anthropic", runtime.current, telemetry).run()

    async def read(request: web.BaseRequest) -> bytes:
        gw = runtime.current
        return await read_body(request, gw.body_limit, gw.client_timeout_s)

    models = caller_shaped(list_models(runtime))
    feedback = caller_shaped(feedback_handler(telemetry, read))
    table: dict[str, dict[str, Handler]] = {
        "/v1/chat/completions": {"POST": chat_completions},
        "/chat/completions": {"POST": chat_completions},
        "/v1/messages": {"POST": messages},
        "/v1/route/explain": {"POST": caller_shaped(explain(runtime, "openai"), "openai")},
        "/v1/messages/route/explain": {
            "POST": caller_shaped(explain(runtime, "anthropic"), "anthropic")
        },
        "/v1/models": {"GET": models, "HEAD": models},
        "/models": {"GET": models, "HEAD": models},
        "/v1/feedback": {"POST": feedback},
        "/feedback": {"POST": feedback},
    }
    no_route = caller_shaped(_no_route({path: list(m) for path, m in table.items()}))

    def handle(request: web.BaseRequest) -> Awaitable[web.StreamResponse]:
        try:
            methods = table.get(request.path)
            if methods is not None:
                handler = methods.get(request.method)
                if handler is not None:
                    return handler(request)
            return no_route(request)
        except Exception as exc:  # raised before a coroutine began (a handler's set-up)
            return _answered(failure_response(exc, request))

    return handle


async def _answered(response: web.StreamResponse) -> web.StreamResponse:
    return response
