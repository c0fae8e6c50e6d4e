"""Dispatcher: runs a plan under one deadline.

- One deadline per request: ``x-tiergate-timeout-ms``, else the latency budget × the
  configured slack, else ``routing.default_timeout_s``. Every attempt gets what remains,
  never a fresh timeout; when it passes the caller gets 504.
- A retryable failure moves to the next deployment of the plan (same-tier siblings
  come before the next tier up: the planner ordered them so). A context-length error
  skips candidates whose window is not larger; a caller's error returns at once.
- Retry-After and rate limits cool a deployment down; failures feed outlier ejection.
- Hedging (opt-in per route, bounded by the hedge budget and the cost ceiling): when
  the primary has not answered by its own p95, the next candidate starts too; the first
  answer wins and the other is cancelled, its cost still counted.
- Streams fail over freely until the first event has been obtained; after that the
  caller owns the stream (see server/app.py for the terminal error event).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import NamedTuple, cast

from tiergate import _core
from tiergate.config import Config, DeploymentConfig
from tiergate.envelope import ChatRequest, Envelope
from tiergate.errors import DispatchError, ErrorClass, ProviderError
from tiergate.providers.base import Adapter, Completion, StreamEvent, Usage
from tiergate.routing.planner import Plan, Planner
from tiergate.telemetry.record import AttemptRecord, round_ms

__all__ = ["Dispatcher", "HedgeBudget", "Outcome", "StreamItem", "StreamOutcome"]

# What a stream yields: canonical events, or a relay holding parsed deltas.
StreamItem = StreamEvent | _core.OpenAIRelay


# The outcomes are tuples built with tuple.__new__: no __init__ frame per request (about
# 1k instructions each against a slotted dataclass); nothing assigns their fields.
class Outcome(NamedTuple):
    completion: Completion
    deployment: str
    attempts: list[AttemptRecord]
    hedged: bool = False


class StreamOutcome(NamedTuple):
    first: StreamItem  # a canonical event, or a relay holding parsed deltas
    rest: AsyncIterator[StreamItem]
    deployment: str
    model: str  # the deployment's model id
    attempts: list[AttemptRecord]
    deadline: float
    started: float  # monotonic start of the winning attempt
    start_ns: int  # its wall-clock start
    ttft_ms: float
    prompt_tokens: int  # estimate, for billing a stream that ends without usage


_new_outcome = cast("Callable[[type[Outcome], tuple[object, ...]], Outcome]", tuple.__new__)
_new_stream = cast(
    "Callable[[type[StreamOutcome], tuple[object, ...]], StreamOutcome]", tuple.__new__
)


class HedgeBudget:
    """At most ``share`` of requests may be hedged, plus a burst of ``burst`` hedges so a
    sidecar that has just started (or restarted its counts) can still hedge."""

    __slots__ = ("burst", "hedges", "requests", "share")

    def __init__(self, share: float, burst: int = 5) -> None:
        self.share = share
        self.burst = burst
        self.requests = 0
        self.hedges = 0

    def seen(self) -> None:
        self.requests += 1

    def take(self) -> bool:
        if self.share <= 0 or self.hedges + 1 > self.share * self.requests + self.burst:
            return False
        self.hedges += 1
        return True


class _Facts:
    """What the dispatcher reads of a deployment per attempt, read once per config (each
    read through the pydantic config was a few hundred instructions)."""

    __slots__ = (
        "cached",
        "ceiling",
        "context_window",
        "input",
        "kind",
        "model",
        "output",
    )

    def __init__(self, dep: DeploymentConfig, kind: str, ceiling: float = math.inf) -> None:
        self.ceiling = ceiling  # the provider's timeout_s: no attempt is given longer
        self.context_window = dep.context_window
        price = dep.price
        self.input = price.input
        self.cached = price.cached if price.cached is not None else price.input
        self.output = price.output
        self.kind = kind
        self.model = dep.model

    def cost(self, usage: Usage) -> float:
        """What the provider bills for one call of ``usage``: cached input tokens at the
        cached price (the input price when none is set), the rest at the input price."""
        cached = usage.cached_tokens
        fresh = usage.input_tokens - cached
        if fresh < 0:  # a conditional: max() parses its arguments (~600 instructions)
            fresh = 0
        return (fresh * self.input + cached * self.cached + usage.output_tokens * self.output) / 1e6


class Dispatcher:
    __slots__ = (
        "_config",
        "_default_timeout_s",
        "_facts",
        "_planner",
        "_slack",
        "_targets",
        "hedges",
    )

    def __init__(
        self, config: Config, adapters: Mapping[str, Adapter], planner: Planner, hedges: HedgeBudget
    ) -> None:
        self._config = config
        self._planner = planner
        self.hedges = hedges
        self._facts = {
            name: _Facts(
                dep, config.providers[dep.provider].kind, config.providers[dep.provider].timeout_s
            )
            for name, dep in config.deployments.items()
        }
        # Read per attempt: the config model's attributes cost about three of these.
        self._targets = {
            name: (dep, adapters[dep.provider], self._facts[name].ceiling)
            for name, dep in config.deployments.items()
        }
        self._default_timeout_s = config.routing.default_timeout_s
        self._slack = config.routing.timeout_slack

    def deadline(self, envelope: Envelope, plan: Plan) -> float:
        """Monotonic time by which the whole request must be answered: the header's
        timeout, else the latency budget (the header's, else the tenant's or the route's
        as the plan resolved it) × the slack, else the default timeout."""
        timeout_ms = envelope.timeout_ms
        if timeout_ms is not None:
            return time.monotonic() + timeout_ms / 1000
        ms = envelope.latency_budget_ms
        if ms is None and plan.request is not None:
            ms = plan.request.latency_budget_ms
            if math.isinf(ms):  # the record's "no budget"
                ms = None
        budget_s = self._default_timeout_s if ms is None else ms / 1000 * self._slack
        return time.monotonic() + budget_s

    def _usable(self, name: str, min_context: int) -> bool:
        return self._facts[name].context_window > min_context and self._planner.health.available(
            name
        )

    def _attempt_record(
        self,
        name: str,
        started: float,
        start_ns: int,
        status: int | None = None,
        error_class: str | None = None,
        hedge: bool = False,
        cancelled: bool = False,
        ttft_ms: float | None = None,
        usage: Usage | None = None,
        finish_reason: str | None = None,
    ) -> AttemptRecord:
        """The record of one attempt, billed at the deployment's price of ``usage`` (none
        when no usage is known). The answer's path passes every field by position: the
        record's keywords would cost it about twice as many instructions."""
        facts = self._facts[name]
        if usage is None:
            tokens_in = tokens_out = 0
            cost = 0.0
        else:
            tokens_in, tokens_out = usage.input_tokens, usage.output_tokens
            cost = facts.cost(usage)
        return AttemptRecord(
            name,
            facts.kind,
            facts.model,
            start_ns,
            round_ms((time.monotonic() - started) * 1000),
            status,
            error_class,
            hedge,
            cancelled,
            ttft_ms,
            tokens_in,
            tokens_out,
            cost,
            finish_reason,
        )

    def _failed(self, name: str, exc: ProviderError) -> None:
        self._planner.health.failure(name, exc.error_class, exc.retry_after_s)

    async def _attempt(
        self,
        name: str,
        plan: Plan,
        request: ChatRequest,
        envelope: Envelope,
        deadline: float,
        attempts: list[AttemptRecord],
        hedge: bool = False,
    ) -> Completion:
        """One call; records it, feeds health and the live windows, raises ProviderError."""
        dep, adapter, ceiling = self._targets[name]
        started, start_ns = time.monotonic(), time.time_ns()
        remaining = deadline - started
        limits = self._planner.limits
        if limits.limited:  # without a limit there is nothing to spend (nor a hint to make)
            limits.spend(name, _tokens_hint(request))
        try:
            # The adapter bounds the whole call by the time it is given: no second timer.
            # (A conditional, not min(): its argument parsing costs more than the rest.)
            completion = await adapter.complete(
                request, dep, remaining if remaining < ceiling else ceiling
            )
        except TimeoutError:
            exc = ProviderError(
                ErrorClass.TIMEOUT, "the request's deadline passed during the attempt"
            )
            attempts.append(
                self._attempt_record(
                    name, started, start_ns, error_class=exc.error_class.value, hedge=hedge
                )
            )
            self._failed(name, exc)
            raise exc from None
        except ProviderError as exc:
            attempts.append(
                self._attempt_record(
                    name,
                    started,
                    start_ns,
                    error_class=exc.error_class.value,
                    status=exc.status,
                    hedge=hedge,
                )
            )
            self._failed(name, exc)
            raise
        except asyncio.CancelledError:
            # Lost a hedge race (or the caller went away): the prompt was still sent.
            attempts.append(
                self._attempt_record(
                    name,
                    started,
                    start_ns,
                    error_class="cancelled",
                    hedge=hedge,
                    cancelled=True,
                    usage=Usage(input_tokens=_tokens_hint(request)),  # an estimate
                )
            )
            raise
        usage = completion.usage
        if not (usage.input_tokens or usage.output_tokens):
            usage = _estimated_usage(plan, request, completion)
        record = self._attempt_record(
            name,
            started,
            start_ns,
            200,
            None,
            hedge,
            False,
            None,
            usage,
            completion.finish_reason,
        )
        attempts.append(record)
        planner = self._planner
        planner.health.success(name)
        planner.observe(envelope.route, name, None, record.ms, usage.output_tokens, False)
        return completion

    async def complete(
        self, plan: Plan, request: ChatRequest, envelope: Envelope, attempts: list[AttemptRecord]
    ) -> Outcome:
        """Runs the plan; every attempt is appended to ``attempts`` (also when it raises)."""
        deadline = self.deadline(envelope, plan)
        self.hedges.seen()
        last: ProviderError | None = None
        min_context = 0
        queue = list(plan.deployments)
        hedged = False
        while queue:
            name = queue.pop(0)
            if not self._usable(name, min_context):
                continue
            if time.monotonic() >= deadline:
                break
            try:
                if plan.hedge and not hedged:
                    backup = self._hedge_partner(queue, plan, min_context)
                    if backup is not None:
                        completion, winner, hedged = await self._hedged(
                            plan, name, backup, queue, request, envelope, deadline, attempts
                        )
                        return _new_outcome(Outcome, (completion, winner, attempts, hedged))
                completion = await self._attempt(name, plan, request, envelope, deadline, attempts)
                return _new_outcome(Outcome, (completion, name, attempts, hedged))
            except ProviderError as exc:
                if not exc.retryable:
                    raise _caller_error(exc) from None
                last = exc
                if exc.error_class is ErrorClass.CONTEXT_LENGTH:
                    min_context = max(min_context, self._config.deployments[name].context_window)
        raise _exhausted(last, attempts, deadline)

    def _hedge_partner(self, queue: list[str], plan: Plan, min_context: int) -> str | None:
        r = plan.request
        for candidate in queue:
            if not self._usable(candidate, min_context):
                continue
            if r is not None and not math.isinf(r.max_cost_usd):
                # Both calls may be billed: the pair must fit under the ceiling.
                usage = Usage(r.prompt_tokens, r.expected_output_tokens)
                pair = self._facts[plan.deployments[0]].cost(usage)
                pair += self._facts[candidate].cost(usage)
                if pair > r.max_cost_usd:
                    return None
            return candidate
        return None

    async def _hedged(
        self,
        plan: Plan,
        primary: str,
        backup: str,
        queue: list[str],
        request: ChatRequest,
        envelope: Envelope,
        deadline: float,
        attempts: list[AttemptRecord],
    ) -> tuple[Completion, str, bool]:
        """Primary alone until its p95, then both; the first success wins."""
        expected = plan.request.expected_output_tokens if plan.request is not None else 0
        p95_s = (
            self._planner.router.predicted_latency(self._planner.index[primary], expected) / 1000
        )
        # Hedge at the primary's p95, and at the latest halfway to the deadline so the
        # backup always has time to answer.
        delay = max(0.0, min(p95_s, (deadline - time.monotonic()) / 2))
        first = asyncio.ensure_future(
            self._attempt(primary, plan, request, envelope, deadline, attempts)
        )
        started = [first]
        try:
            done, _ = await asyncio.wait({first}, timeout=delay)
            if first in done or not self.hedges.take():
                return await first, primary, False
            queue.remove(backup)
            second = asyncio.ensure_future(
                self._attempt(backup, plan, request, envelope, deadline, attempts, hedge=True)
            )
            started.append(second)
            pending = {first, second}
            names = {first: primary, second: backup}
            error: ProviderError | None = None
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    exc = task.exception()
                    if exc is None:
                        for other in pending:
                            other.cancel()
                        await asyncio.gather(*pending, return_exceptions=True)
                        return task.result(), names[task], True
                    if isinstance(exc, ProviderError):
                        if not exc.retryable:
                            for other in pending:
                                other.cancel()
                            await asyncio.gather(*pending, return_exceptions=True)
                        error = exc
                    else:
                        raise exc
            assert error is not None
            raise error
        finally:
            # A caller that leaves (disconnect, shutdown) must not leave its attempts
            # running: they would still be billed and hold upstream connections.
            for task in started:
                if not task.done():
                    task.cancel()

    async def stream(
        self,
        plan: Plan,
        request: ChatRequest,
        envelope: Envelope,
        attempts: list[AttemptRecord],
        relay: bool = False,
    ) -> StreamOutcome:
        """Opens the stream on the first deployment that yields an event before the deadline.

        ``relay``: an adapter that can relay its stream to the caller's surface
        (``providers/relay.py``; the core renders either surface's frames) yields its
        relay instead of events."""
        deadline = self.deadline(envelope, plan)
        self.hedges.seen()
        last: ProviderError | None = None
        min_context = 0
        for name in plan.deployments:
            if not self._usable(name, min_context):
                continue
            started = time.monotonic()
            remaining = deadline - started
            if remaining <= 0:
                break
            facts = self._facts[name]
            dep, adapter, _ = self._targets[name]
            start_ns = time.time_ns()
            hint = _tokens_hint(request)
            limits = self._planner.limits
            if limits.limited:
                limits.spend(name, hint)
            # The adapter bounds the wait for the first event by the time it is given.
            open_stream = getattr(adapter, "relay", None) if relay else None
            ceiling = facts.ceiling
            events: AsyncIterator[StreamItem] = (open_stream or adapter.stream)(
                request, dep, remaining if remaining < ceiling else ceiling
            )
            try:
                first = await events.__anext__()
            except (TimeoutError, StopAsyncIteration, ProviderError) as exc:
                await _aclose(events)
                if isinstance(exc, ProviderError):
                    error = exc
                elif isinstance(exc, TimeoutError):
                    error = ProviderError(ErrorClass.TIMEOUT, "no first event before the deadline")
                else:
                    error = ProviderError(
                        ErrorClass.SERVER_ERROR, "the stream ended before its first event"
                    )
                attempts.append(
                    self._attempt_record(
                        name,
                        started,
                        start_ns,
                        error_class=error.error_class.value,
                        status=error.status,
                    )
                )
                self._failed(name, error)
                if not error.retryable:
                    raise _caller_error(error) from None
                last = error
                if error.error_class is ErrorClass.CONTEXT_LENGTH:
                    min_context = max(min_context, dep.context_window)
                continue
            ttft = (time.monotonic() - started) * 1000
            r = plan.request
            return _new_stream(
                StreamOutcome,
                (
                    first,
                    events,
                    name,
                    facts.model,
                    attempts,
                    deadline,
                    started,
                    start_ns,
                    ttft,
                    hint if r is None else r.prompt_tokens,
                ),
            )
        raise _exhausted(last, attempts, deadline)

    def stream_finished(
        self,
        outcome: StreamOutcome,
        envelope: Envelope,
        usage: Usage | None,
        finish_reason: str | None,
        error: ProviderError | None,
        delivered: int = 0,
        caller_gone: bool = False,
    ) -> AttemptRecord:
        """Account for the winning stream once it ended: completed, failed mid-way, or
        abandoned by the caller (which says nothing about the deployment's health).

        A stream that ended without its usage (or with a provider's zeros: a compatible
        server that ignores ``stream_options.include_usage``) is billed as the prompt
        estimate plus the ``delivered`` text pieces, since the provider charged for them."""
        name = outcome.deployment
        if usage is None or not (usage.input_tokens or usage.output_tokens):
            usage = Usage(outcome.prompt_tokens, delivered)
        if caller_gone:
            error_class: str | None = "cancelled"
        else:
            error_class = None if error is None else error.error_class.value
        record = self._attempt_record(
            name,
            outcome.started,
            outcome.start_ns,
            200 if error is None else error.status,
            error_class,
            False,
            caller_gone,
            round_ms(outcome.ttft_ms),
            usage,
            finish_reason,
        )
        outcome.attempts.append(record)
        if caller_gone:
            pass
        elif error is None:
            planner = self._planner
            planner.health.success(name)
            planner.observe(
                envelope.route, name, outcome.ttft_ms, record.ms, usage.output_tokens, True
            )
        else:
            self._failed(name, error)
        return record


def _estimated_usage(plan: Plan, request: ChatRequest, completion: Completion) -> Usage:
    """What an answer that reported no usage is billed (a compatible server that leaves
    ``usage`` out reads as zeros, and no real call reads nothing): the planner's estimate
    of the prompt and the core's of the answer, its text and tool calls."""
    r = plan.request
    # The plan's estimate; a plan without one (never the planner's) the size hint, as a
    # stream's prompt_tokens is.
    prompt = _tokens_hint(request) if r is None else r.prompt_tokens
    answer = completion.text or ""
    for call in completion.tool_calls:
        answer += call.name + call.arguments
    return Usage(prompt, _core.estimate_text_tokens(answer) if answer else 0)


def _tokens_hint(request: ChatRequest) -> int:
    """A cheap size estimate for budgets (4 bytes a token); the planner has the real one."""
    return len(request.raw) // 4 + (request.max_tokens or 0)


async def _aclose(events: AsyncIterator[StreamItem]) -> None:
    close = getattr(events, "aclose", None)
    if close is not None:
        try:
            await close()
        except Exception:  # closing a failed stream must not mask the failure
            pass


def _caller_error(exc: ProviderError) -> DispatchError:
    if exc.error_class is ErrorClass.CONTENT_POLICY:
        return DispatchError(
            exc.message,
            status=400,
            type="invalid_request_error",
            code="content_policy_violation",
            last=exc,
        )
    return DispatchError(
        exc.message,
        status=exc.status or 400,
        type="invalid_request_error",
        code="provider_rejected",
        last=exc,
    )


def _exhausted(
    last: ProviderError | None, attempts: list[AttemptRecord], deadline: float
) -> DispatchError:
    if time.monotonic() >= deadline or (
        last is not None and last.error_class is ErrorClass.TIMEOUT
    ):
        return DispatchError(
            f"the request's deadline passed after {len(attempts)} attempt(s)",
            status=504,
            type="timeout_error",
            code="deadline_exceeded",
            last=last,
        )
    if not attempts:
        return DispatchError(
            "no deployment of this route is available (all ejected, cooling down or infeasible)",
            status=503,
            type="service_unavailable",
            code="no_candidate",
            last=last,
        )
    summary = ", ".join(f"{a.deployment}: {a.error_class}" for a in attempts)
    status = 429 if last is not None and last.error_class is ErrorClass.RATE_LIMITED else 502
    return DispatchError(
        f"every deployment of the plan failed ({summary})",
        status=status,
        type="rate_limit_error" if status == 429 else "upstream_error",
        code="all_attempts_failed",
        last=last,
    )
