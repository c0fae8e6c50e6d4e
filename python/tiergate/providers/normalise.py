"""The normaliser: every provider's dialect mapped onto one set of canonical values.

One place for each mapping, so that adapters stay translations and never make policy:

- :data:`FINISH_REASONS` — every provider's stop reason → canonical ``finish_reason``;
- :func:`classify_http_error` — HTTP status, provider error type/code and wording →
  :class:`~tiergate.errors.ErrorClass`; :func:`parse_retry_after` for the cool-down;
- :func:`validate_json_output` — the answer against the requested response format;
- tool-argument shape conversion (:func:`args_to_object`, :func:`args_to_json`);
- usage normalisation (``usage_*``): canonical ``input_tokens`` counts every prompt token,
  cached ones included; ``output_tokens`` every generated token, reasoning included;
- :class:`SSEParser` — Server-Sent Events over arbitrary chunk boundaries;
- :class:`StreamCollector` — folds stream events into a :class:`Completion`.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar, cast

import orjson

from tiergate import _core
from tiergate.envelope import ChatRequest, ResponseFormat, ToolCall
from tiergate.errors import ErrorClass, ProviderError
from tiergate.providers.base import (
    Completion,
    FinishReason,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
)

__all__ = [
    "FINISH_REASONS",
    "JSON_OBJECT_INSTRUCTION",
    "MAX_ANSWER_BYTES",
    "SHAPE_ERRORS",
    "SSEEvent",
    "SSEParser",
    "SchemaInvalid",
    "StreamCollector",
    "args_to_json",
    "args_to_object",
    "check_json_completion",
    "classify_error_type",
    "classify_http_error",
    "cut_stream",
    "extract_json_text",
    "finish_reason",
    "first_event",
    "in_stream_error",
    "json_tool_answer",
    "json_tool_name",
    "json_tool_schema",
    "malformed",
    "parse_duration",
    "parse_retry_after",
    "provider_error_from_body",
    "reads_answer",
    "schema_validator",
    "scrub",
    "unwrap_answer",
    "usage_anthropic",
    "usage_bedrock",
    "usage_gemini",
    "usage_openai",
    "validate_json_output",
]

# The most bytes of a provider's answer kept in memory: a non-streamed body (after
# decompression) or one streamed event. Past it the answer is malformed (a sibling may
# serve) rather than the sidecar's memory the provider's to fill. Answers run to a few
# MB at most (an image in base64). The core's relay holds streams to the same bound.
MAX_ANSWER_BYTES: int = _core.RELAY_MAX_EVENT_BYTES

T = TypeVar("T")

# --------------------------------------------------------------------------------------
# Stop reasons: one table for every provider (names do not collide across dialects).

FINISH_REASONS: dict[str, FinishReason] = {
    # OpenAI (and OpenAI-compatible servers, SageMaker openai_messages)
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    # Anthropic Messages and Bedrock Converse
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
    # Gemini
    "STOP": "stop",
    "FINISH_REASON_UNSPECIFIED": "stop",
    "OTHER": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "LANGUAGE": "content_filter",
    # TGI (SageMaker tgi payloads)
    "eos_token": "stop",
}


def finish_reason(raw: str | None) -> FinishReason:
    """Canonical finish reason; an unknown or absent one counts as a normal stop."""
    if raw is None:
        return "stop"
    return FINISH_REASONS.get(raw, "stop")


# --------------------------------------------------------------------------------------
# Errors

_CONTEXT_WORDING = re.compile(
    r"context[_ ]length|context window|maximum context|prompt is too long|input is too long"
    r"|too many (?:input )?tokens|too long|exceeds? the maximum number of tokens"
    r"|input token count|reduce the length",
    re.IGNORECASE,
)
_POLICY_WORDING = re.compile(
    r"content[_ ]policy|content[_ ]filter|content management policy|responsible ai"
    r"|safety (?:system|filter)|flagged as",
    re.IGNORECASE,
)
# Provider error types/codes (OpenAI `error.type`/`error.code`, Anthropic `error.type`,
# Gemini `error.status`, AWS error codes) that decide the class whatever the status.
# Generic ones ("server_error", "api_error", "INTERNAL") are left out on purpose: they
# say less than the status (a 503 "server_error" is overloaded, not a plain 5xx).
_ERROR_TYPES: dict[str, ErrorClass] = {
    # OpenAI
    "context_length_exceeded": ErrorClass.CONTEXT_LENGTH,
    "string_above_max_length": ErrorClass.CONTEXT_LENGTH,
    "content_policy_violation": ErrorClass.CONTENT_POLICY,
    "content_filter": ErrorClass.CONTENT_POLICY,
    "rate_limit_exceeded": ErrorClass.RATE_LIMITED,
    "insufficient_quota": ErrorClass.RATE_LIMITED,
    "invalid_api_key": ErrorClass.AUTH,
    # Anthropic
    "overloaded_error": ErrorClass.OVERLOADED,
    "rate_limit_error": ErrorClass.RATE_LIMITED,
    "authentication_error": ErrorClass.AUTH,
    "permission_error": ErrorClass.AUTH,
    "request_too_large": ErrorClass.CONTEXT_LENGTH,
    "timeout_error": ErrorClass.TIMEOUT,
    # Gemini (google.rpc status names)
    "RESOURCE_EXHAUSTED": ErrorClass.RATE_LIMITED,
    "UNAVAILABLE": ErrorClass.OVERLOADED,
    "DEADLINE_EXCEEDED": ErrorClass.TIMEOUT,
    "UNAUTHENTICATED": ErrorClass.AUTH,
    "PERMISSION_DENIED": ErrorClass.AUTH,
    # AWS (Bedrock, SageMaker)
    "ThrottlingException": ErrorClass.RATE_LIMITED,
    "ServiceQuotaExceededException": ErrorClass.RATE_LIMITED,
    "TooManyRequestsException": ErrorClass.RATE_LIMITED,
    "ModelNotReadyException": ErrorClass.OVERLOADED,
    "ServiceUnavailableException": ErrorClass.OVERLOADED,
    "ServiceUnavailable": ErrorClass.OVERLOADED,
    "ModelTimeoutException": ErrorClass.TIMEOUT,
    "InternalServerException": ErrorClass.SERVER_ERROR,
    "InternalFailure": ErrorClass.SERVER_ERROR,
    "InternalDependencyException": ErrorClass.SERVER_ERROR,
    "ModelStreamErrorException": ErrorClass.SERVER_ERROR,
    "ModelStreamError": ErrorClass.SERVER_ERROR,
    "InternalStreamFailure": ErrorClass.SERVER_ERROR,
    "AccessDeniedException": ErrorClass.AUTH,
    "UnrecognizedClientException": ErrorClass.AUTH,
    "InvalidSignatureException": ErrorClass.AUTH,
    "ExpiredTokenException": ErrorClass.AUTH,
    "ResourceNotFoundException": ErrorClass.SERVER_ERROR,
}
# Types whose class depends on the wording (context length, content policy, or else).
_BAD_REQUEST_TYPES = frozenset(
    {
        "invalid_request_error",
        "INVALID_ARGUMENT",
        "FAILED_PRECONDITION",
        "ValidationException",
        "ValidationError",
    }
)


def _by_wording(message: str, default: ErrorClass) -> ErrorClass:
    if _CONTEXT_WORDING.search(message):
        return ErrorClass.CONTEXT_LENGTH
    if _POLICY_WORDING.search(message):
        return ErrorClass.CONTENT_POLICY
    return default


def classify_error_type(kinds: Iterable[str | None], message: str = "") -> ErrorClass | None:
    """The class named by a provider error type/code, or None when none is known."""
    for kind in kinds:
        if not kind:
            continue
        cls = _ERROR_TYPES.get(kind)
        if cls is not None:
            return cls
        if kind in _BAD_REQUEST_TYPES:
            return _by_wording(message, ErrorClass.BAD_REQUEST)
    return None


def classify_http_error(
    status: int, kinds: Iterable[str | None] = (), message: str = ""
) -> ErrorClass:
    """Map an upstream HTTP failure to its class.

    408/504 → timeout; 429 → rate_limited; 503/529 → overloaded; other 5xx →
    server_error; 401/403 → auth; 404 and 3xx → server_error (we chose the URL and
    model, so a missing or moved one is this deployment's fault, not the caller's; a
    redirect is not followed: see ``_http.FOLLOW_REDIRECTS``); 413 → context_length;
    other 4xx → context_length or content_policy by wording, else bad_request. A known
    provider error type/code (``kinds``) wins over the status.
    """
    by_type = classify_error_type(kinds, message)
    if by_type is not None:
        return by_type
    if status in (408, 504):
        return ErrorClass.TIMEOUT
    if status == 429:
        return ErrorClass.RATE_LIMITED
    if status in (503, 529):
        return ErrorClass.OVERLOADED
    if status >= 500:
        return ErrorClass.SERVER_ERROR
    if status in (401, 403):
        return ErrorClass.AUTH
    if status == 404 or 300 <= status < 400:
        return ErrorClass.SERVER_ERROR
    if status == 413:
        return ErrorClass.CONTEXT_LENGTH
    return _by_wording(message, ErrorClass.BAD_REQUEST)


_SECRET_SHAPES = re.compile(r"(sk-[A-Za-z0-9_\-*]{6,}|AIza[0-9A-Za-z_\-]{20,}|AKIA[0-9A-Z]{12,})")


def scrub(message: str, secrets: Iterable[str] = ()) -> str:
    """A provider message made safe to log: our secrets and key-shaped strings removed."""
    for secret in secrets:
        if secret and secret in message:
            message = message.replace(secret, "***")
    message = _SECRET_SHAPES.sub("***", message)
    return message if len(message) <= 500 else message[:500] + "…"


def in_stream_error(err: Any, type_keys: tuple[str, ...], provider: str = "") -> ProviderError:
    """An error object a provider sent inside a stream. ``type_keys`` name the fields
    holding its error type (OpenAI ``code``/``type``, Anthropic ``type``, Gemini
    ``status``); the first one present labels the message."""
    if not isinstance(err, dict):
        return ProviderError(ErrorClass.SERVER_ERROR, "error in stream", provider=provider)
    message = str(err.get("message") or "")
    kinds = tuple(v if isinstance(v := err.get(k), str) else None for k in type_keys)
    cls = classify_error_type(kinds, message) or ErrorClass.SERVER_ERROR
    label = next((k for k in kinds if k), "error")
    return ProviderError(cls, f"{label} in stream: {scrub(message)}", provider=provider)


def provider_error_from_body(
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    provider: str,
    secrets: Iterable[str] = (),
) -> ProviderError:
    """A ProviderError from an HTTP error response of any of the JSON providers.

    Reads OpenAI ``{"error": {message, type, code}}``, Anthropic ``{"type": "error",
    "error": {type, message}}`` and Gemini ``{"error": {code, message, status,
    details}}`` bodies; anything else is classified by status alone.
    """
    err_type: str | None = None
    err_code: str | None = None
    message = ""
    retry_after = parse_retry_after(headers)
    try:
        doc = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, list) and doc and isinstance(doc[0], dict):
        doc = doc[0]  # Gemini sometimes wraps the error in a list
    if isinstance(doc, dict):
        err = doc.get("error", doc)
        if isinstance(err, dict):
            message = str(err.get("message") or "")
            t = err.get("type")
            err_type = t if isinstance(t, str) else None
            c = err.get("code")
            err_code = c if isinstance(c, str) else None
            s = err.get("status")
            if isinstance(s, str):
                err_code = err_code or s
            if retry_after is None:
                retry_after = _google_retry_delay(err.get("details"))
        elif isinstance(err, str):
            message = err
    elif body:
        message = body[:200].decode("utf-8", "replace")
    cls = classify_http_error(status, (err_code, err_type), message)
    if cls is ErrorClass.AUTH:
        text = f"authentication failed ({status})"  # never echo what the provider saw
    else:
        label = err_code or err_type or "error"
        text = f"{status} {label}: {scrub(message, secrets)}" if message else f"{status} {label}"
    return ProviderError(cls, text, status=status, retry_after_s=retry_after, provider=provider)


def _google_retry_delay(details: Any) -> float | None:
    if not isinstance(details, list):
        return None
    for item in details:
        if isinstance(item, dict) and str(item.get("@type", "")).endswith("RetryInfo"):
            delay = item.get("retryDelay")
            if isinstance(delay, str):
                return parse_duration(delay)
    return None


def malformed(what: str, provider: str = "") -> ProviderError:
    """The provider answered with something that is not the protocol (retryable)."""
    return ProviderError(ErrorClass.INVALID_OUTPUT, f"malformed {what}", provider=provider)


# What reading a document of an unexpected shape raises (a field of another type, a
# missing key, an empty list where one item was expected).
SHAPE_ERRORS = (TypeError, AttributeError, KeyError, IndexError, ValueError)

F = TypeVar("F", bound=Callable[..., Any])


def reads_answer(what: str) -> Callable[[F], F]:
    """Mark a parser of a provider's answer: an answer of a shape it cannot read is a
    malformed answer (a sibling may serve), never the caller's 500. ``provider`` is
    taken from the call's keyword of that name."""

    def mark(parse: F) -> F:
        @functools.wraps(parse)
        def parsed(*args: Any, **kwargs: Any) -> Any:
            try:
                return parse(*args, **kwargs)
            except SHAPE_ERRORS:
                raise malformed(what, kwargs.get("provider", "")) from None

        return cast(F, parsed)

    return mark


def cut_stream(provider: str = "") -> ProviderError:
    """A stream ended without its terminal event: never reported as success."""
    return ProviderError(
        ErrorClass.SERVER_ERROR, "stream ended before completion", provider=provider
    )


async def first_event(events: AsyncIterator[T], provider: str) -> T:
    """The stream's first event; a stream that ends before one is a cut stream."""
    try:
        return await anext(events)
    except StopAsyncIteration:
        raise cut_stream(provider) from None


# --------------------------------------------------------------------------------------
# Retry-After

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(text: str) -> float | None:
    """Go-style durations as OpenAI and Google send them: ``"1s"``, ``"6m0s"``, ``"20ms"``,
    ``"1h2m3.5s"``, ``"30s"``, ``"0.5s"``; a bare number is seconds."""
    text = text.strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    total = 0.0
    pos = 0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            return None
        value = float(m.group(1))
        unit = m.group(2)
        total += value * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]
        pos = m.end()
    return total if pos == len(text) else None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """``name`` is lower case; aiohttp's multidicts match any case, plain dicts are scanned."""
    value = headers.get(name)
    if value is not None or not isinstance(headers, dict):
        return value
    for k, v in headers.items():
        if k.lower() == name:
            return str(v)
    return None


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds until the provider accepts requests again, or None when it does not say.

    Order: ``retry-after-ms``; ``retry-after`` (seconds or an HTTP date); OpenAI's
    ``x-ratelimit-reset-requests``/``-tokens`` (the exhausted one when
    ``x-ratelimit-remaining-*`` says which, else the later).
    """
    ms = _header(headers, "retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    ra = _header(headers, "retry-after")
    if ra is not None:
        ra = ra.strip()
        try:
            return max(0.0, float(ra))
        except ValueError:
            try:
                when = parsedate_to_datetime(ra).timestamp()
            except (TypeError, ValueError, IndexError):
                when = None
            if when is not None:
                return max(0.0, when - (time.time() if now is None else now))
    resets: list[float] = []
    for kind in ("requests", "tokens"):
        raw = _header(headers, f"x-ratelimit-reset-{kind}")
        if raw is None:
            continue
        value = parse_duration(raw)
        if value is None:
            continue
        if _header(headers, f"x-ratelimit-remaining-{kind}") == "0":
            return value
        resets.append(value)
    return max(resets) if resets else None


# --------------------------------------------------------------------------------------
# JSON output


# Validators of the schemas seen lately, by the schema's canonical JSON (bounded).
_VALIDATORS: dict[bytes, Any] = {}


class SchemaInvalid(ValueError):
    """A caller's JSON Schema that is not one (its draft's meta-schema refuses it)."""


def schema_validator(schema: dict[str, Any]) -> Any:
    """The jsonschema validator of ``schema`` (its ``$schema`` draft, else 2020-12), made
    once per distinct schema; raises SchemaInvalid when ``schema`` is not a valid one."""
    # Keyed as written (not sorted: a caller sends its schemas the same way each time,
    # and sorting cost as much as the rest of a request's checks).
    try:
        key = orjson.dumps(schema)
    except TypeError:  # integers past 64 bits: valid JSON, which json writes
        key = json.dumps(schema).encode()
    validator = _VALIDATORS.get(key)
    if validator is None:
        # Imported on first use: jsonschema costs a tenth of a second of start-up.
        import jsonschema  # type: ignore[import-untyped]

        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        try:
            cls.check_schema(schema)
        except jsonschema.exceptions.SchemaError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "<root>"
            raise SchemaInvalid(f"at {where}: {exc.message[:200]}") from None
        if len(_VALIDATORS) >= 256:
            _VALIDATORS.clear()
        validator = _VALIDATORS[key] = cls(schema, format_checker=None)
    return validator


_FENCE = re.compile(r"^\s*```(?:json)?\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)


def extract_json_text(text: str) -> str:
    """The JSON document inside a model's answer (strips Markdown fences and stray prose
    around one top-level object), for providers that cannot be forced to answer JSON."""
    m = _FENCE.match(text)
    if m:
        return m.group(1).strip()
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        return stripped
    start, end = stripped.find("{"), stripped.rfind("}")
    if 0 <= start < end:
        return stripped[start : end + 1]
    return stripped


def validate_json_output(text: str | None, response_format: ResponseFormat) -> None:
    """Raise ProviderError(INVALID_OUTPUT) when ``text`` does not satisfy the format.

    ``text`` formats pass. ``json_object`` needs a JSON object; ``json_schema`` needs
    JSON valid against the schema. Adapters call this for non-streaming answers; the
    dispatcher calls it on a stream's accumulated text.
    """
    if response_format.kind == "text":
        return
    if text is None:
        raise ProviderError(ErrorClass.INVALID_OUTPUT, "no JSON answer (empty content)")
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ProviderError(
            ErrorClass.INVALID_OUTPUT, f"answer is not valid JSON ({exc.msg})"
        ) from None
    if response_format.kind == "json_object" or response_format.schema is None:
        if not isinstance(value, dict):
            raise ProviderError(ErrorClass.INVALID_OUTPUT, "answer is not a JSON object")
        return
    validator = schema_validator(response_format.schema)  # checked when the request was read
    from jsonschema.exceptions import best_match  # type: ignore[import-untyped]

    error = best_match(validator.iter_errors(value))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "<root>"
        raise ProviderError(
            ErrorClass.INVALID_OUTPUT,
            f"answer fails the response schema at {where}: {error.message[:200]}",
        )


def check_json_completion(
    completion: Completion, response_format: ResponseFormat, provider: str = ""
) -> None:
    """What adapters call on a non-streaming answer when JSON was asked for.

    Skipped when the answer is a tool call, a refusal, or did not stop normally
    (``length``, ``content_filter``): those reach the caller as they are, with their
    finish reason, as the provider's own API would return them.
    """
    if response_format.kind == "text" or completion.tool_calls or completion.refusal is not None:
        return
    if completion.finish_reason != "stop":
        return
    try:
        validate_json_output(completion.text, response_format)
    except ProviderError as exc:
        exc.provider = provider
        raise


# --------------------------------------------------------------------------------------
# JSON answers by tool forcing (Anthropic, Bedrock): a synthetic tool whose input schema
# is the response schema; its input is the answer.

_TOOL_NAME = re.compile(r"[^A-Za-z0-9_-]")


def json_tool_name(request: ChatRequest) -> str | None:
    """Name of the synthetic answer tool for a json_schema request, else None.

    The schema's name made tool-safe, prefixed when it collides with a caller's tool.
    """
    rf = request.response_format
    if rf.kind != "json_schema":
        return None
    name = _TOOL_NAME.sub("_", rf.name or "response")[:48] or "response"
    if any(t.name == name for t in request.tools):
        name = f"tiergate_{name}"
    return name


def json_tool_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Tool inputs are objects: a non-object answer schema is wrapped as ``{"value": …}``."""
    if schema.get("type") == "object":
        return schema
    return {"type": "object", "properties": {"value": schema}, "required": ["value"]}


def json_tool_answer(schema: dict[str, Any] | None, value: Any) -> str:
    """The answer text from the synthetic tool's input (unwrapping a wrapped schema)."""
    if schema is not None and schema.get("type") != "object" and isinstance(value, dict):
        value = value.get("value")
    return args_to_json(value)


def unwrap_answer(streamed_input: str, provider: str = "") -> str:
    """The answer text from a streamed ``{"value": …}`` input (held until complete)."""
    try:
        value = orjson.loads(streamed_input)
    except orjson.JSONDecodeError:
        raise malformed("streamed JSON answer", provider) from None
    if not isinstance(value, dict):
        raise malformed("streamed JSON answer (not an object)", provider)
    return orjson.dumps(value.get("value")).decode()


JSON_OBJECT_INSTRUCTION = (
    "Answer with a single JSON object and nothing else: no prose, no Markdown fences."
)


# --------------------------------------------------------------------------------------
# Tool arguments


def args_to_object(arguments: str) -> dict[str, Any]:
    """Canonical JSON-text arguments → the object Anthropic, Gemini and Bedrock expect.

    Empty text is ``{}``; text that is not a JSON object is the caller's history at
    fault (400).
    """
    if not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise ProviderError(
            ErrorClass.BAD_REQUEST, "tool call arguments in the conversation are not a JSON object"
        )
    return value


def args_to_json(value: Any) -> str:
    """Provider argument object → canonical JSON text."""
    if value is None:
        return "{}"
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


# --------------------------------------------------------------------------------------
# Usage


def _int(d: Mapping[str, Any], key: str) -> int:
    v = d.get(key)
    return v if isinstance(v, int) else 0


def usage_openai(u: Mapping[str, Any] | None) -> Usage:
    """``prompt_tokens`` already includes cached ones; ``completion_tokens`` reasoning."""
    if not u:
        return Usage()
    pd = u.get("prompt_tokens_details") or {}
    cd = u.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=_int(u, "prompt_tokens"),
        output_tokens=_int(u, "completion_tokens"),
        cached_tokens=_int(pd, "cached_tokens"),
        reasoning_tokens=_int(cd, "reasoning_tokens"),
    )


def usage_anthropic(u: Mapping[str, Any] | None, into: Usage | None = None) -> Usage:
    """Anthropic's ``input_tokens`` excludes cache reads and writes: add them back.

    With ``into``, fields present in ``u`` overwrite (message_delta usage is cumulative).
    """
    out = into if into is not None else Usage()
    if not u:
        return out
    if "input_tokens" in u or "cache_read_input_tokens" in u:
        read = _int(u, "cache_read_input_tokens")
        out.input_tokens = _int(u, "input_tokens") + read + _int(u, "cache_creation_input_tokens")
        out.cached_tokens = read
    if "output_tokens" in u:
        out.output_tokens = _int(u, "output_tokens")
    return out


def usage_gemini(u: Mapping[str, Any] | None) -> Usage:
    """``promptTokenCount`` includes cached tokens; thoughts are counted apart from
    ``candidatesTokenCount`` and added to output here."""
    if not u:
        return Usage()
    thoughts = _int(u, "thoughtsTokenCount")
    return Usage(
        input_tokens=_int(u, "promptTokenCount") + _int(u, "toolUsePromptTokenCount"),
        output_tokens=_int(u, "candidatesTokenCount") + thoughts,
        cached_tokens=_int(u, "cachedContentTokenCount"),
        reasoning_tokens=thoughts,
    )


def usage_bedrock(u: Mapping[str, Any] | None) -> Usage:
    """Converse's ``inputTokens`` excludes cache reads and writes: add them back."""
    if not u:
        return Usage()
    read = _int(u, "cacheReadInputTokens")
    return Usage(
        input_tokens=_int(u, "inputTokens") + read + _int(u, "cacheWriteInputTokens"),
        output_tokens=_int(u, "outputTokens"),
        cached_tokens=read,
    )


# --------------------------------------------------------------------------------------
# Server-Sent Events


class SSEEvent:
    __slots__ = ("data", "event")

    def __init__(self, event: str, data: str) -> None:
        self.event = event
        self.data = data

    def __repr__(self) -> str:
        return f"SSEEvent({self.event!r}, {self.data[:60]!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SSEEvent) and self.event == other.event and self.data == other.data

    __hash__ = None  # type: ignore[assignment]


class SSEParser:
    """Incremental Server-Sent Events parser (WHATWG rules, the fields LLM APIs use).

    Feed it bytes as they arrive, split anywhere (even inside a UTF-8 sequence or a
    CRLF); it returns the events completed so far. ``event:`` names the event
    (``"message"`` when absent), ``data:`` lines join with ``\\n``, ``:`` lines are
    comments, ``id:``/``retry:`` are ignored. An event is dispatched on a blank line.
    """

    __slots__ = ("_buf", "_data", "_event", "_held", "_skip_lf")

    def __init__(self) -> None:
        self._buf = b""
        self._event = ""
        self._data: list[str] = []
        self._held = 0  # characters in _data: with _buf, bounded by MAX_ANSWER_BYTES
        self._skip_lf = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if self._buf or self._skip_lf or self._data or self._event or b"\r" in chunk:
            return self._feed_lines(chunk)
        # The common case: a clean state and LF-only whole events, mostly a single
        # `data:` line each. Split on blank lines; anything else in a block, and what
        # follows the last blank line, takes the general path (same result).
        blocks = chunk.split(b"\n\n")
        rest = blocks.pop()
        out: list[SSEEvent] = []
        for block in blocks:
            if block[:5] == b"data:" and b"\n" not in block:
                value = block[6:] if block[5:6] == b" " else block[5:]
                out.append(SSEEvent("message", value.decode("utf-8", "replace")))
            else:
                for line in block.split(b"\n"):
                    self._line(line, out)
                self._line(b"", out)
        if rest:
            out += self._feed_lines(rest)
        return out

    def _feed_lines(self, chunk: bytes) -> list[SSEEvent]:
        out: list[SSEEvent] = []
        if self._skip_lf and chunk:
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
            self._skip_lf = False
        buf = self._buf + chunk if self._buf else chunk
        start = 0
        n = len(buf)
        while start < n:
            cr = buf.find(b"\r", start)
            lf = buf.find(b"\n", start)
            if cr < 0 and lf < 0:
                break
            if lf < 0 or (0 <= cr < lf):
                end = cr
                if end + 1 < n:
                    nxt = end + 2 if buf[end + 1 : end + 2] == b"\n" else end + 1
                else:
                    nxt = end + 1
                    self._skip_lf = True
            else:
                end = lf
                nxt = lf + 1
            self._line(buf[start:end], out)
            start = nxt
        self._buf = buf[start:]
        if len(self._buf) + self._held > MAX_ANSWER_BYTES:  # a line or event never ends
            raise malformed(f"stream event (over {MAX_ANSWER_BYTES} bytes)")
        return out

    def finish(self) -> list[SSEEvent]:
        """End of the body. As the SSE standard says, an event not yet closed by a blank
        line is incomplete and discarded (a body cut mid-event is a cut, not garbage)."""
        self._buf = b""
        self._event = ""
        self._data = []
        self._held = 0
        return []

    def _line(self, raw: bytes, out: list[SSEEvent]) -> None:
        if not raw:
            if self._data or self._event:
                if self._data:
                    out.append(SSEEvent(self._event or "message", "\n".join(self._data)))
                self._event = ""
                self._data = []
                self._held = 0
            return
        if raw[:1] == b":":
            return
        line = raw.decode("utf-8", "replace")
        name, sep, value = line.partition(":")
        if sep and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._held += len(value)
        elif name == "event":
            self._event = value


# --------------------------------------------------------------------------------------
# Stream collection


class StreamCollector:
    """Folds a stream's events into what a non-streaming call would have returned.

    The dispatcher can feed every event it forwards and, at the end, call
    :meth:`validate` (JSON answers) or :meth:`completion` (replay records, logs).
    """

    __slots__ = ("_calls", "_text", "end")

    def __init__(self) -> None:
        self._text: list[str] = []
        self._calls: dict[int, list[str]] = {}  # index -> [id, name, args...]
        self.end: StreamEnd | None = None

    def add(self, event: StreamEvent) -> None:
        if isinstance(event, TextDelta):
            self._text.append(event.text)
        elif isinstance(event, ToolCallDelta):
            call = self._calls.get(event.index)
            if call is None:
                call = self._calls[event.index] = ["", ""]
            if event.id:
                call[0] = event.id
            if event.name:
                call[1] = event.name
            if event.arguments:
                call.append(event.arguments)
        else:
            self.end = event

    @property
    def text(self) -> str:
        return "".join(self._text)

    def tool_calls(self) -> list[ToolCall]:
        return [
            ToolCall(id=c[0], name=c[1], arguments="".join(c[2:]))
            for _, c in sorted(self._calls.items())
        ]

    def validate(self, response_format: ResponseFormat) -> None:
        validate_json_output(self.text, response_format)

    def completion(self) -> Completion:
        if self.end is None:
            raise cut_stream()
        return Completion(
            text=self.text if self._text else None,
            finish_reason=self.end.finish_reason,
            usage=self.end.usage,
            model=self.end.model,
            tool_calls=self.tool_calls(),
            refusal=self.end.refusal,
        )
