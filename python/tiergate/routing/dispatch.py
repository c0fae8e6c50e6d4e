"""Dispatcher: runs a plan under one deadline.

Every attempt gets the time that remains of the request's deadline, never a fresh
timeout. A retryable failure moves to the next deployment of the plan; a caller's error
returns at once. For streams, failover is free until the first event has been obtained;
after that the caller owns the stream and a failure is its terminal error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

from tiergate.config import Config
from tiergate.envelope import ChatRequest, Envelope
from tiergate.errors import DispatchError, ErrorClass, ProviderError
from tiergate.providers.base import Adapter, Completion, StreamEvent
from tiergate.routing.planner import Plan

__all__ = ["Attempt", "Dispatcher", "Outcome", "StreamOutcome"]

# Deadline when neither the caller nor the route gives one.
DEFAULT_TIMEOUT_S = 120.0
# Deadline = latency budget × this slack, when only a budget is known.
BUDGET_SLACK = 2.0


@dataclass(slots=True)
class Attempt:
    deployment: str
    ms: float
    error_class: str | None = None  # None = success
    status: int | None = None


@dataclass(slots=True)
class Outcome:
    completion: Completion
    deployment: str
    attempts: list[Attempt]


@dataclass(slots=True)
class StreamOutcome:
    first: StreamEvent
    rest: AsyncIterator[StreamEvent]
    deployment: str
    attempts: list[Attempt] = field(default_factory=list)
    deadline: float = 0.0


class Dispatcher:
    __slots__ = ("_adapters", "_config")

    def __init__(self, config: Config, adapters: Mapping[str, Adapter]) -> None:
        self._config = config
        self._adapters = adapters

    def deadline(self, envelope: Envelope) -> float:
        """Monotonic time by which the whole request must be answered."""
        if envelope.timeout_ms is not None:
            budget_s = envelope.timeout_ms / 1000
        elif envelope.latency_budget_ms is not None:
            budget_s = envelope.latency_budget_ms / 1000 * BUDGET_SLACK
        else:
            budget_s = DEFAULT_TIMEOUT_S
        return time.monotonic() + budget_s

    def _adapter(self, deployment: str) -> tuple[Adapter, float]:
        dep = self._config.deployments[deployment]
        return self._adapters[dep.provider], self._config.providers[dep.provider].timeout_s

    async def complete(self, plan: Plan, request: ChatRequest, envelope: Envelope) -> Outcome:
        deadline = self.deadline(envelope)
        attempts: list[Attempt] = []
        last: ProviderError | None = None
        for name in plan.deployments:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            adapter, ceiling = self._adapter(name)
            dep = self._config.deployments[name]
            started = time.monotonic()
            try:
                async with asyncio.timeout(remaining):
                    completion = await adapter.complete(request, dep, min(remaining, ceiling))
            except TimeoutError:
                last = ProviderError(ErrorClass.TIMEOUT, "deadline reached during the attempt")
                attempts.append(Attempt(name, _ms(started), last.error_class.value))
                continue
            except ProviderError as exc:
                attempts.append(Attempt(name, _ms(started), exc.error_class.value, exc.status))
                if not exc.retryable:
                    raise _caller_error(exc) from None
                last = exc
                continue
            attempts.append(Attempt(name, _ms(started)))
            return Outcome(completion, name, attempts)
        raise _exhausted(last, attempts, deadline)

    async def stream(self, plan: Plan, request: ChatRequest, envelope: Envelope) -> StreamOutcome:
        """Opens the stream on the first deployment that yields an event before the deadline."""
        deadline = self.deadline(envelope)
        attempts: list[Attempt] = []
        last: ProviderError | None = None
        for name in plan.deployments:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            adapter, ceiling = self._adapter(name)
            dep = self._config.deployments[name]
            started = time.monotonic()
            events = adapter.stream(request, dep, min(remaining, ceiling))
            try:
                async with asyncio.timeout(remaining):
                    first = await anext(events)
            except (TimeoutError, StopAsyncIteration) as exc:
                await _aclose(events)
                kind = ErrorClass.TIMEOUT if isinstance(exc, TimeoutError) else ErrorClass.SERVER_ERROR
                last = ProviderError(kind, "no first event from the provider")
                attempts.append(Attempt(name, _ms(started), kind.value))
                continue
            except ProviderError as exc:
                await _aclose(events)
                attempts.append(Attempt(name, _ms(started), exc.error_class.value, exc.status))
                if not exc.retryable:
                    raise _caller_error(exc) from None
                last = exc
                continue
            attempts.append(Attempt(name, _ms(started)))
            return StreamOutcome(first, events, name, attempts, deadline)
        raise _exhausted(last, attempts, deadline)


async def _aclose(events: AsyncIterator[StreamEvent]) -> None:
    close = getattr(events, "aclose", None)
    if close is not None:
        await close()


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 3)


def _caller_error(exc: ProviderError) -> DispatchError:
    if exc.error_class is ErrorClass.CONTENT_POLICY:
        return DispatchError(
            exc.message, status=400, type="invalid_request_error", code="content_policy_violation", last=exc
        )
    return DispatchError(exc.message, status=exc.status or 400, type="invalid_request_error", code="provider_rejected", last=exc)


def _exhausted(last: ProviderError | None, attempts: list[Attempt], deadline: float) -> DispatchError:
    if time.monotonic() >= deadline or (last is not None and last.error_class is ErrorClass.TIMEOUT):
        return DispatchError(
            f"the request's deadline passed after {len(attempts)} attempt(s)",
            status=504,
            type="timeout_error",
            code="deadline_exceeded",
            last=last,
        )
    if not attempts:
        return DispatchError(
            "no deployment of this route is available", status=503, type="service_unavailable", code="no_candidate"
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
