"""Contract of the Rust extension ``tiergate._core`` (checked by ``mypy.stubtest``).

Every function here takes microseconds and holds the GIL. Errors: a rejected input
raises ``ValueError`` with the reason; a candidate index past the end raises
``IndexError``. ``now`` arguments are seconds on ``time.monotonic()``'s clock; ``None``
reads that clock.
"""

from collections.abc import Iterable, Sequence
from typing import Any, Final, Literal, final

__version__: str
__all__ = [
    "CAP_JSON_SCHEMA",
    "CAP_STREAMING",
    "CAP_TOOLS",
    "CAP_VISION",
    "FLAG_ALLOW_QUALITY_RELAX",
    "MAX_CANDIDATES",
    "QUALITY_MODEL_VERSION",
    "REFUSAL_WINDOW",
    "RELAX_COST",
    "RELAX_LATENCY",
    "RELAX_QUALITY",
    "RELAY_FAIL_CUT",
    "RELAY_FAIL_ERROR_OBJECT",
    "RELAY_FAIL_NOT_JSON",
    "RELAY_FAIL_NOT_OBJECT",
    "RELAY_FAIL_SHAPE",
    "RELAY_FAIL_TOO_LARGE",
    "RELAY_MAX_EVENT_BYTES",
    "SAFETY_KINDS",
    "SIG_CODE",
    "SIG_HARD",
    "STRUCTURE_FEATURES",
    "TALLY_ATTEMPTS",
    "TALLY_COST",
    "TALLY_DECISION",
    "TALLY_DURATION",
    "TALLY_FALLBACKS",
    "TALLY_HEDGES",
    "TALLY_IDEMPOTENCY",
    "TALLY_REQUESTS",
    "TALLY_TOKENS",
    "TALLY_TTFT",
    "TRANSPORT_FIELDS",
    "V_CAPABILITY",
    "V_CONTEXT",
    "V_COST",
    "V_LATENCY",
    "V_NOT_ALLOWED",
    "V_QUALITY",
    "V_UNAVAILABLE",
    "WINDOW_MAX_VALUE_MS",
    "WINDOW_MIN_VALUE_MS",
    "WINDOW_RELATIVE_ACCURACY",
    "LatencyWindow",
    "OpenAIRelay",
    "PlanRequest",
    "QualityModel",
    "RequestTally",
    "Router",
    "__version__",
    "_noop",
    "canonical_request",
    "classifier_text",
    "estimate_anthropic_tokens",
    "estimate_text_tokens",
    "estimate_tokens",
    "feature_config",
    "features_batch",
    "finish_reason",
    "held_len",
    "ingest_anthropic_request",
    "ingest_chat_request",
    "openai_chat_body",
    "openai_completion_with_head",
    "openai_turn_body",
    "read_openai_completion",
    "refusal_possible",
    "render_anthropic_message",
    "render_openai_completion",
    "request_key",
    "request_log_lines",
    "scan_any",
    "scan_text",
    "scan_texts_any",
    "text_signals",
]

# ----------------------------------------------------------------- request key
TRANSPORT_FIELDS: Final[tuple[str, ...]]
"""Top-level fields dropped from the canonical form: ``stream``, ``stream_options``,
``user``, ``metadata``, ``store``, ``service_tier``, ``timeout``, ``request_id``,
``idempotency_key``, ``prompt_cache_key``, ``safety_identifier``. ``stream`` is here
because a streamed and a non-streamed answer are the same answer; the idempotency layer
keys the stream flag separately where it replays in the caller's shape."""

def request_key(body: bytes, tenant: str = "") -> bytes:
    """16-byte xxh3-128 of ``len(tenant) as u64 LE ‖ tenant ‖ canonical_request(body)``
    (big-endian digest, as ``xxhash.xxh3_128_digest``).

    Canonical form of an OpenAI chat-completions body:

    * JSON object required (``ValueError`` for invalid JSON or UTF-8, a non-object, a
      number overflowing f64, nesting deeper than 128);
    * top-level ``null`` values and ``TRANSPORT_FIELDS`` dropped;
    * top-level defaults dropped: ``temperature`` 1, ``top_p`` 1, ``n`` 1,
      ``presence_penalty`` 0, ``frequency_penalty`` 0, ``logprobs`` false,
      ``parallel_tool_calls`` true, ``response_format`` ``{"type": "text"}``,
      ``tools`` / ``functions`` / ``stop`` ``[]``, ``logit_bias`` ``{}``, ``tool_choice``
      ``"auto"`` when ``tools`` is non-empty else ``"none"``; a string ``stop`` becomes a
      one-element list;
    * in each message: ``null`` values dropped; content ``[{"type": "text", "text": s}]``
      (exactly those keys) becomes ``s``;
    * serialised compactly with keys sorted by UTF-8 bytes, strings escaped as serde_json
      does, integral numbers in [-2^63, 2^63) as integers (``1.0`` → ``1``, ``-0.0`` →
      ``0``), other numbers as the hex bits of their f64 (``0.7`` → ``0x3fe6666666666666``).

    ``model`` is part of the key."""

def canonical_request(body: bytes) -> bytes:
    """The canonical bytes ``request_key`` hashes (without the tenant prefix)."""

# ---------------------------------------------------------------------- tokens
def estimate_tokens(body: bytes) -> int:
    """Approximate cl100k_base prompt tokens of a chat-completions body: 3 priming, per
    message 3 + role + content text (string or text parts; image parts 85) + name (+1),
    per tool call 3 + name + arguments, per tool 8 + name + description + parameters,
    plus ``response_format.json_schema``. ``ValueError`` on invalid JSON / non-object."""

def estimate_anthropic_tokens(body: bytes) -> int:
    """``estimate_tokens`` of the chat-completions body an Anthropic Messages body would
    be, as ``parse_anthropic_request`` reads it: ``system`` (a string or blocks; none
    when empty) the first message, of role ``system``; per turn, a ``tool`` message per
    ``tool_result`` block (its ``content``, a string or blocks, as the message's), then
    the turn's own message of its role with its other blocks as parts (text blocks their
    ``text``, image blocks 85, thinking blocks nothing) and its ``tool_use`` blocks as
    tool calls (``name``, and ``orjson.dumps(input)`` as ``arguments``; ``{}`` when
    absent), left out for a user turn of tool results alone; per tool, ``name``,
    ``description`` and ``input_schema`` as the function's; a structured output's
    schema (``output_config.format``, else ``output_format``) as ``response_format``'s
    ``json_schema`` ``{"name": "response", "schema": ..., "strict": true}``. The
    parser's rewording of a tool result (texts joined, ``Error: ``) is not applied.
    ``ValueError`` on invalid JSON / non-object."""

def estimate_text_tokens(text: str) -> int:
    """Approximate cl100k_base tokens of one text (no message overhead)."""

def held_len(frames: tuple[bytes, ...], headers: tuple[tuple[str, str], ...]) -> int:
    """``sum(map(len, frames))`` plus the ``len`` of every name and value in ``headers``:
    what a replay record holds beyond its fixed overheads. ``TypeError`` when a header
    is not a tuple or an item has no length."""

SIG_CODE: Final[int]
SIG_HARD: Final[int]

def text_signals(text: str) -> int:
    """Difficulty signals of one prompt text: ``SIG_CODE`` (a code fence, ``def `` or
    ``function ``) | ``SIG_HARD`` (prove, step by step, derive, optimi-, analy-; ASCII
    case-insensitive). A lone surrogate is read as U+FFFD."""

# ---------------------------------------------------------------------- safety
SAFETY_KINDS: Final[tuple[str, ...]]
"""Finding kinds by code: ``email`` 0, ``phone`` 1, ``card`` 2, ``national_id`` 3,
``aws_key`` 4, ``api_key`` 5, ``private_key`` 6, ``bearer_token`` 7, ``injection`` 8
(the order of ``tiergate.safety.INPUT_KINDS``)."""

def scan_text(text: str, injection: bool = True) -> list[tuple[int, int, int]]:
    """Every PII, secret and (with ``injection``) prompt-injection finding in ``text`` as
    ``(kind code, start, end)``: byte offsets into ``text.encode("utf-8")``, sorted and
    disjoint (overlaps merged into the earlier span). Spans start and end on ASCII bytes
    or the end, so slicing the encoded text never splits a character. The same spans as
    the pure-Python ``tiergate.safety.detectors.find_spans_reference``. A text with lone
    surrogates raises ``UnicodeEncodeError``."""

def scan_any(raw: bytes) -> bool:
    """Whether ``raw`` (a request body, say) holds any finding at all, injection markers
    included: one pass over the bytes where the texts inside would each take a call."""

def scan_texts_any(texts: Sequence[tuple[str, str]]) -> bool:
    """Whether any text of ``texts`` (``(role, text)`` pairs: a plain request's messages)
    holds a finding, injection markers included: ``scan_text`` of each, the long texts
    answered from the memo when seen lately."""

REFUSAL_WINDOW: Final[int]
"""How many characters of an answer the output scan's refusal pattern reads (300)."""

def refusal_possible(text: str) -> bool:
    """Whether the output scan's refusal pattern (``safety/scan.py``) could match
    ``text``: ``False`` only when its first ``REFUSAL_WINDOW`` characters hold no ``I``
    (as ``re.IGNORECASE`` reads it: ``I``, ``i``, ``İ``, ``ı``) followed by whitespace (as
    ``\\s`` reads it), which every match holds. ``True`` for a text with lone surrogates."""

# ----------------------------------------------------------------------- relay
RELAY_FAIL_NOT_JSON: Final[int]  # 1: an event's data was not JSON
RELAY_FAIL_NOT_OBJECT: Final[int]  # 2: ... was JSON but not an object
RELAY_FAIL_ERROR_OBJECT: Final[int]  # 3: ... was an {"error": ...} object (detail: its text)
RELAY_FAIL_CUT: Final[int]  # 4: the stream ended without its end
RELAY_FAIL_SHAPE: Final[int]  # 5: a field had a type the protocol does not allow (detail: its name)
RELAY_FAIL_TOO_LARGE: Final[int]  # 6: one event grew past RELAY_MAX_EVENT_BYTES
RELAY_MAX_EVENT_BYTES: Final[int]  # the most bytes one streamed event may hold

def finish_reason(raw: str) -> str:
    """The canonical finish reason of any provider's stop reason (the table of
    ``providers.normalise.FINISH_REASONS``); unknown ones are ``"stop"``."""

def openai_chat_body(
    model: str,
    messages: Sequence[tuple[str, str]],
    limit_key: str,
    limit: int,
    rest: bytes | None,
) -> bytes:
    """``orjson.dumps`` of ``{"model": model, "messages": [{"role": role, "content":
    text}, ...], limit_key: limit, **orjson.loads(rest)}``, keys in that order, written
    by the core: the chat body a provider is sent when every message is plain text
    (``rest``, the members after the output bound as orjson wrote them, ``None`` for
    none). ``ValueError`` for a ``rest`` that is not a JSON object or a text that is not
    UTF-8 (a lone surrogate); ``OverflowError`` for a ``limit`` outside 64 bits."""

def openai_turn_body(
    model: str,
    messages: Sequence[tuple[str, str | None, Sequence[tuple[str, str, str]] | None, str | None]],
    limit_key: str,
    limit: int,
    rest: bytes | None,
) -> bytes:
    """:func:`openai_chat_body` of an agent's turn, its messages ``(role, text, [(id,
    name, arguments)] or None, tool_call_id)`` as :func:`ingest_chat_request` gives them:
    each written as ``build_openai_messages`` builds it (a tool result with its
    ``tool_call_id`` and its text or ``""``; an assistant's tool calls after its text or
    ``null``) and orjson writes it. Errors as :func:`openai_chat_body`'s."""

def openai_completion_with_head(response_id: str, created: int | None, tail: bytes) -> bytes:
    """``{"id": response_id, "object": "chat.completion", "created": created`` written
    in front of ``tail`` (from :func:`read_openai_completion`): the whole body
    :func:`render_openai_completion` writes. ``created=None``: ``int(time.time())``,
    read by the core's binding."""

def ingest_chat_request(
    body: bytes, scope: str | None
) -> (
    tuple[
        str,
        list[tuple[Literal["system", "user", "assistant"], str]],
        int | None,
        bool,
        bytes | None,
        int,
        int,
        tuple[
            list[
                tuple[
                    Literal["system", "user", "assistant", "tool"],
                    str | None,
                    list[tuple[str, str, str]] | None,
                    str | None,
                ]
            ],
            tuple[int, int] | None,
            tuple[int, int] | None,
            bool | None,
            tuple[int, int] | None,
        ]
        | None,
        tuple[float | None, float | None, list[str], int | None, bool],
    ]
    | None
):
    """``(model, [(role, text)], max_tokens, stream, key, prompt_tokens, required_caps,
    turn, sampling)`` of the usual chat-completions body: a non-empty ``model``;
    ``messages``, each exactly ``{"role", "content"}`` with a system, developer (read as
    system), user or assistant role and non-empty text (a string, or an array of one
    ``{"type": "text", "text"}`` part); ``max_completion_tokens`` (else ``max_tokens``)
    an integer of at least 1 or absent; ``stream`` a boolean or absent; the sampling
    options ``temperature``, ``top_p``, ``stop``, ``seed``, ``n`` (1) and
    ``stream_options`` as ``parse_openai_request`` reads them, given as ``sampling =
    (temperature, top_p, stop, seed, include_usage)``; no
    other field ``parse_openai_request`` reads. ``turn`` is ``None`` then.

    An agent's turn (``tools``, ``tool_choice``, ``parallel_tool_calls``,
    ``response_format``; assistant messages with ``tool_calls``, ``tool`` messages) comes
    with no plain messages and ``turn = (messages, tools, tool_choice,
    parallel_tool_calls, response_format)``: each message ``(role, text or None, [(id,
    name, arguments)] or None, tool_call_id)`` as ``parse_openai_request`` reads it (an
    empty ``arguments`` as ``"{}"``), and the ``tools``, ``tool_choice`` and
    ``response_format`` members' values as ``(start, end)`` byte ranges of the body, for
    the caller to read (``None``: absent); its sampling options as a plain body's. A
    message with ``name``, content parts, or a member read for another role gives
    ``None``. ``prompt_tokens`` counts a response format's schema; ``CAP_JSON_SCHEMA`` is
    the caller's to add.

    ``None`` for any other body (``parse_openai_request`` decides what it is), and for one
    ``request_key`` refuses.

    ``key`` is ``request_key(body, scope + ("s" if stream else "n"))``, ``None`` when
    ``scope`` is; ``prompt_tokens`` is ``estimate_tokens(body)``; ``required_caps`` the
    ``CAP_*`` bits the core knows the request needs (``CAP_STREAMING`` when streamed;
    ``CAP_TOOLS`` is the caller's to add, from the tools and tool choice it reads)."""

def ingest_anthropic_request(
    body: bytes, scope: str | None
) -> (
    tuple[
        str,
        list[tuple[Literal["system", "user", "assistant"], str]],
        list[int] | None,
        int,
        float | None,
        float | None,
        list[str],
        bool,
        bytes | None,
        int,
        int,
        tuple[
            list[
                tuple[
                    Literal["system", "user", "assistant", "tool"],
                    str | None,
                    list[tuple[str, str, str]] | None,
                    str | None,
                ]
            ],
            tuple[int, int] | None,
            tuple[int, int] | None,
        ]
        | None,
    ]
    | None
):
    """``(model, [(role, text)], sizes, max_tokens, temperature, top_p, stop, stream,
    key, prompt_tokens, required_caps, turn)`` of the usual Anthropic Messages body, as
    ``parse_anthropic_request`` reads it: a non-empty ``model``; ``max_tokens`` an integer
    of at least 1; ``system`` absent, a string or an array of text blocks; ``messages``,
    each exactly ``{"role", "content"}`` with a user or assistant role and a non-empty
    string or non-empty array of text blocks (``{"type": "text", "text"}``, perhaps with
    ``cache_control``, dropped), an assistant's with some text; ``temperature`` and
    ``top_p`` numbers in [0, 1] or absent; ``stop_sequences`` a string or at most 16
    strings (the non-empty ones given) or absent; ``stream`` a boolean or absent; no
    ``tools``, ``tool_choice``, ``output_config`` or ``output_format``. Other fields
    are ignored, as the parser ignores them.

    ``[(role, text)]``: every text of the canonical messages in order with its message's
    role, the system prompt's (one ``system`` message, none when empty) first.
    ``sizes``: the number of texts of each message, ``None`` when each is one text (then
    the list is the messages). ``turn`` is ``None`` then.

    An agent's turn (``tools``, ``tool_choice``; ``tool_use``, ``tool_result`` and
    thinking blocks; members of turns and blocks the parser ignores) comes with no texts,
    ``sizes`` ``None`` and ``turn = (messages, tools, tool_choice)``: each message
    ``(role, text or None, [(id, name, arguments)] or None, tool_call_id)`` as
    ``parse_anthropic_request`` builds it (a ``tool_result`` a ``tool`` message, a
    ``tool_use`` a call whose arguments are ``orjson.dumps`` of its ``input``; the
    thinking blocks dropped), and the ``tools`` and ``tool_choice`` members' values as
    ``(start, end)`` byte ranges of the body, for the caller to read (``None``: absent or
    ``null``). A message of several text parts or an image, a structured output
    (``output_config`` or ``output_format`` not ``null``) give ``None``.

    ``None`` for any other body (``parse_anthropic_request`` decides what it is), and for
    one ``request_key`` refuses.

    ``key`` is ``request_key(body, scope + ("s" if stream else "n"))``, ``None`` when
    ``scope`` is; ``prompt_tokens`` is ``estimate_anthropic_tokens(body)``;
    ``required_caps`` is ``CAP_STREAMING`` when streamed, else 0 (``CAP_TOOLS`` is the
    caller's to add, from the tools and tool choice it reads)."""

def render_anthropic_message(
    message_id: str,
    model: str,
    text: str | None,
    stop_reason: str,
    input_tokens: int,
    output_tokens: int,
    cached_tokens: int,
) -> bytes:
    """``orjson.dumps(render_anthropic_message(c, message_id, model))`` of an answer of
    text alone (``server/render_anthropic.py``): a text block when ``text`` is not empty,
    ``input_tokens`` less ``cached_tokens`` (at least 0) and ``cache_read_input_tokens``
    ``cached_tokens``. ``TypeError`` for a count that is not an ``int`` (a ``bool``
    too), ``OverflowError`` past 64 bits, ``ValueError`` for a text ``orjson`` refuses:
    the caller then writes it in Python."""

def read_openai_completion(
    body: bytes,
) -> (
    tuple[
        str | None,
        Literal["stop", "length", "tool_calls", "content_filter"],
        int,
        int,
        int,
        int,
        str,
        list[tuple[str, str, str]],
        str | None,
        str,
        bytes | None,
    ]
    | None
):
    """An OpenAI chat-completion body read as ``parse_openai_response`` reads it:
    ``(text, canonical finish reason, input, output, cached, reasoning tokens, model,
    [(call id, name, arguments)], refusal, id)``, then the OpenAI surface's body for them
    (named by the answer's model) from ``,"model":`` on: what
    :func:`render_openai_completion` writes after ``"created"``, or ``None`` in its place
    when that function would refuse the counts. ``None`` for the whole when the body is
    not JSON or not in the usual shape (an error, a field of another type, arguments not
    a string): the Python parser decides what such a body is."""

def render_openai_completion(
    response_id: str,
    model: str,
    created: int,
    text: str | None,
    refusal: str | None,
    tool_calls: list[tuple[str, str, str]],
    finish_reason: str,
    input_tokens: int,
    output_tokens: int,
    cached_tokens: int,
    reasoning_tokens: int,
) -> bytes:
    """``orjson.dumps(render_openai_completion(...))`` of ``server/render_openai.py``
    for these fields. ``TypeError`` for a count that is not an ``int`` (a ``bool``),
    ``OverflowError`` for one past 64 bits, ``ValueError`` for a total ``orjson`` would
    refuse to write."""

@final
class OpenAIRelay:
    """An OpenAI chat-completions stream relayed to a caller in one pass: parsed as
    ``OpenAIStreamParser`` parses (SSE over any split, choice 0's text and tool-call
    deltas, refusal, finish reason, usage, model; ``[DONE]``, or the body's end after a
    finish reason and usage, ends it), rendered as ``OpenAIStreamRenderer`` renders
    (after ``begin``) or as ``AnthropicStreamRenderer`` does (after
    ``begin_anthropic``). One task uses it at a time."""

    def __new__(cls, model: str) -> OpenAIRelay:
        """``model``: the deployment's model id, the end's model unless the provider
        names one."""

    def feed(self, chunk: bytes) -> int:
        """Parse one piece of the body (nothing once ``stopped``); the number of
        deltas waiting to be rendered."""

    def finish(self) -> int:
        """The body ended: the end if a finish reason and usage were seen, else the
        ``RELAY_FAIL_CUT`` failure. The number of deltas waiting to be rendered."""

    @property
    def stopped(self) -> bool:
        """The end was parsed or the stream failed: nothing more is read."""

    @property
    def failure(self) -> tuple[int, str] | None:
        """``(RELAY_FAIL_* code, detail)`` once failed; deltas parsed before the
        failing event are still rendered."""

    def begin(self, response_id: str, model: str, created: int | None, include_usage: bool) -> None:
        """The caller's stream: its id, model, ``created`` time (``None``: now, as
        ``int(time.time())``), and whether the last chunk reports usage. Before the
        first ``render``."""

    def begin_anthropic(self, message_id: str, model: str) -> None:
        """The caller's stream is an Anthropic Messages stream with this message id and
        model: ``render`` writes its events (``message_start`` and ``ping`` before the
        first delta, a content block per text run and per tool call, the refusal as a
        last text run, ``message_delta`` and ``message_stop`` for the end). Before the
        first ``render``; instead of ``begin``."""

    def render(self, _item: object = None, /) -> bytes:
        """The frames of every delta parsed since the last call (the role chunk before
        the first; refusal, finish, usage and ``[DONE]`` for the end; or the Anthropic
        events after ``begin_anthropic``). ``ValueError`` before either begin. ``_item`` is not read: the server's stream loop passes each
        item it renders, and a relay's items are the relay itself."""

    @property
    def ended(self) -> bool:
        """The end's frames were rendered."""

    @property
    def delivered(self) -> int:
        """Text deltas rendered so far."""

    @property
    def text(self) -> str:
        """The text rendered so far."""

    @property
    def end(
        self,
    ) -> (
        tuple[Literal["stop", "length", "tool_calls", "content_filter"], int, int, int, int, str]
        | None
    ):
        """Once ended: ``(canonical finish reason, input, output, cached, reasoning
        tokens, model)``."""

# ---------------------------------------------------------------------- window
WINDOW_RELATIVE_ACCURACY: Final[float]
"""Relative error bound of every quantile (0.005) for values in [min, max]."""
WINDOW_MIN_VALUE_MS: Final[float]
"""Values below this (0.01 ms) are reported as 0.0."""
WINDOW_MAX_VALUE_MS: Final[float]
"""Values above this (3 600 000 ms) are clamped to it."""

@final
class LatencyWindow:
    """Sliding window of latencies: ``buckets`` sub-windows of ``window_s / buckets``
    seconds; a sample counts while its sub-window is one of the ``buckets`` most recent
    (so for between ``window_s - window_s/buckets`` and ``window_s`` seconds). Time never
    goes backwards: an earlier ``now`` is taken as the latest seen. Memory is bounded
    whatever the number of samples."""

    def __new__(cls, window_s: float = 300.0, buckets: int = 30) -> LatencyWindow: ...
    @property
    def window_s(self) -> float: ...
    @property
    def buckets(self) -> int: ...
    def record(self, value_ms: float, now: float | None = None) -> None:
        """Add a sample; ``ValueError`` when ``value_ms`` is NaN, infinite or negative."""

    def quantile(self, q: float, now: float | None = None) -> float | None:
        """The sample at rank ``floor(q * (n - 1))`` of the sorted in-window samples,
        within ``WINDOW_RELATIVE_ACCURACY``; ``None`` when empty; ``ValueError`` unless
        ``0 <= q <= 1``."""

    def count(self, now: float | None = None) -> int:
        """Samples in the window."""

# ---------------------------------------------------------------------- router
CAP_TOOLS: Final[int]  # 1
CAP_JSON_SCHEMA: Final[int]  # 2
CAP_VISION: Final[int]  # 4
CAP_STREAMING: Final[int]  # 8
FLAG_ALLOW_QUALITY_RELAX: Final[int]  # 1
RELAX_LATENCY: Final[int]  # 1
RELAX_COST: Final[int]  # 2
RELAX_QUALITY: Final[int]  # 4
V_CAPABILITY: Final[int]  # 1
V_CONTEXT: Final[int]  # 2
V_UNAVAILABLE: Final[int]  # 4
V_NOT_ALLOWED: Final[int]  # 8
V_LATENCY: Final[int]  # 16
V_COST: Final[int]  # 32
V_QUALITY: Final[int]  # 64
MAX_CANDIDATES: Final[int]  # 64

@final
class PlanRequest:
    """The feature record of one request as :meth:`Router.request` built it (frozen;
    equal when every field is)."""

    @property
    def required_caps(self) -> int: ...
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def max_output_tokens(self) -> int: ...
    @property
    def expected_output_tokens(self) -> int: ...
    @property
    def latency_budget_ms(self) -> float: ...
    @property
    def max_cost_usd(self) -> float: ...
    @property
    def min_quality(self) -> float: ...
    @property
    def allowed_mask(self) -> int: ...
    @property
    def unavailable_mask(self) -> int: ...
    @property
    def flags(self) -> int: ...
    def args(self) -> tuple[int, int, int, int, float, float, float, int, int, int]:
        """The fields in :meth:`Router.plan`'s positional order."""

@final
class Router:
    """A candidate table compiled once; ``plan`` ranks it per request (DESIGN.md §3).

    Each candidate is ``(name, tier_rank, price_in_per_mtok, price_out_per_mtok,
    price_cached_per_mtok, context_window, capabilities_bitmask, ttft_prior_ms,
    tpot_prior_ms, quality_prior)``; tier 0 is the smallest. At most 64 candidates,
    names unique, prices and priors finite and >= 0 (``ValueError`` otherwise).
    ``previous`` shares its latency windows by candidate name when ``window_s`` is the
    same, so a reload keeps what was measured.

    ``routes``: the route scopes the planner asks by index, each ``(name, allowed mask,
    first mask, latency_budget_ms, max_cost_usd, min_quality, pinned candidate)`` with
    ``None`` for a setting the route does not make; their output means are taken from
    ``previous`` by route name (also of routes ``previous`` carried without having
    them). ``flags`` (``FLAG_*``) go into every :meth:`request`'s record. A mask naming
    a candidate beyond the table, a NaN setting or a duplicate name is a ``ValueError``,
    a pinned index out of range an ``IndexError``."""

    def __new__(
        cls,
        candidates: Sequence[tuple[str, int, float, float, float, int, int, float, float, float]],
        window_s: float = 300.0,
        min_samples: int = 20,
        previous: Router | None = None,
        routes: Sequence[
            tuple[str, int, int, float | None, float | None, float | None, int | None]
        ] = ...,
        flags: int = 0,
    ) -> Router: ...
    def __len__(self) -> int: ...
    @property
    def names(self) -> tuple[str, ...]: ...
    @property
    def window_s(self) -> float: ...
    @property
    def min_samples(self) -> int: ...
    def record(
        self, idx: int, ttft_ms: float, tpot_ms: float, total_ms: float, now: float | None = None
    ) -> None:
        """Record an attempt. ``tpot_ms`` NaN or negative means unknown (skipped);
        ``ttft_ms`` / ``total_ms`` must be finite and >= 0."""

    def predicted_latency(
        self, idx: int, expected_output_tokens: int = 0, now: float | None = None
    ) -> float:
        """p95 TTFT + ``expected_output_tokens`` × p50 TPOT, each from its window once
        it holds ``min_samples`` samples, else the prior (ms)."""

    def plan(
        self,
        required_caps: int,
        prompt_tokens: int,
        max_output_tokens: int,
        expected_output_tokens: int,
        latency_budget_ms: float,
        max_cost_usd: float,
        min_quality: float,
        allowed_mask: int,
        unavailable_mask: int,
        flags: int = 0,
        qualities: Sequence[float] | None = None,
        now: float | None = None,
    ) -> tuple[tuple[int, ...], int]:
        """``(candidate indices best first, RELAX_* bits)``.

        Budget / ceiling <= 0 or infinite and ``min_quality`` <= 0 are no constraint
        (NaN is a ``ValueError``). Candidates meeting every constraint come first by
        (expected cost, predicted latency, index); then the primary's same-tier siblings
        and each higher tier in ascending rank, filtered by capability, context, allowed,
        available and the quality floor, sorted the same way. With nothing feasible,
        latency is relaxed, then cost, then quality only with
        ``FLAG_ALLOW_QUALITY_RELAX``; otherwise the plan is empty and the bits say what
        was tried. ``qualities`` (one per candidate) overrides the quality priors."""

    def heuristic_qualities(
        self, prompt_tokens: int, text: str | None, tools: bool, json_schema: bool
    ) -> list[float]:
        """The heuristic quality of each candidate for one request: its prior raised to
        ``1 + difficulty``, difficulty in [0, 1] from the prompt tokens (up to 0.4), code
        (+0.2) and multi-step wording (+0.2) in ``text`` (the last message; ``None``: no
        message; a lone surrogate reads as U+FFFD), tools (+0.1) and a JSON schema
        (+0.1)."""

    def request(
        self,
        scope: int,
        required_caps: int,
        prompt_tokens: int,
        max_tokens: int | None,
        latency_budget_ms: float | None,
        tenant_latency_budget_ms: float | None,
        max_cost_usd: float | None,
        tenant_max_cost_usd: float | None,
        min_quality: float | None,
        tenant_min_quality: float | None,
        allowed_mask: int,
        unavailable_mask: int = 0,
        now: float | None = None,
    ) -> PlanRequest:
        """The feature record of one request on route ``scope`` (its index in
        ``routes``): each of budget, ceiling and floor is the header's (first of a pair),
        else the tenant's, else the route's (none: an infinite budget or ceiling, a floor
        of 0); expected output is the route's rolling mean (256 before any answer) capped
        by ``max_tokens``, rounded up, and ``max_output_tokens`` is ``max_tokens`` or
        that; allowed is the route's mask and the tenant's ``allowed_mask``;
        unavailable is every candidate held after ``now`` (:meth:`hold`) and
        ``unavailable_mask``; flags are the router's. ``IndexError`` for an unknown
        scope."""

    def route(
        self,
        scope: int,
        request: PlanRequest,
        qualities: Sequence[float] | None = None,
        min_quality: float | None = None,
        now: float | None = None,
    ) -> tuple[list[str], list[str], PlanRequest]:
        """:meth:`plan` of ``request`` (its floor replaced by ``min_quality`` when given)
        ordered by route ``scope``: its own tier (or pinned deployment) first, wider
        tiers after, each in the plan's order; a pinned deployment the plan left out
        leads when it is not held. ``(deployment names best first, relaxed labels of
        "latency" / "cost" / "quality", the record planned)``."""

    def route_heuristic(
        self,
        scope: int,
        required_caps: int,
        prompt_tokens: int,
        max_tokens: int | None,
        latency_budget_ms: float | None,
        tenant_latency_budget_ms: float | None,
        max_cost_usd: float | None,
        tenant_max_cost_usd: float | None,
        min_quality: float | None,
        tenant_min_quality: float | None,
        allowed_mask: int,
        unavailable_mask: int,
        text: str | None,
        tools: bool,
        json_schema: bool,
        now: float | None = None,
    ) -> tuple[list[str], list[str], list[float], PlanRequest]:
        """:meth:`request` and :meth:`route` in one call with the qualities of
        :meth:`heuristic_qualities`: ``(deployment names best first, relaxed labels,
        qualities, the record planned)``."""

    def expected_output(self, scope: int, max_tokens: int | None = None) -> float:
        """Output tokens expected on route ``scope``: its rolling mean, capped by
        ``max_tokens`` when given."""

    def output_mean(self, scope: int) -> float:
        """Route ``scope``'s rolling mean of output tokens."""

    def hold(self, idx: int, until: float) -> None:
        """Leave candidate ``idx`` out of every plan until ``until`` (``time.monotonic()``
        seconds); a later call replaces the time."""

    def held_mask(self, now: float | None = None) -> int:
        """Bit i set when candidate i is held after ``now``."""

    def observe(
        self,
        route: str,
        idx: int,
        ttft_ms: float | None,
        total_ms: float,
        output_tokens: int,
        streamed: bool,
        now: float | None = None,
    ) -> None:
        """After a successful answer: record candidate ``idx``'s windows and move
        ``route``'s output mean by 0.05 of the way to ``output_tokens``. A stream's
        ``ttft_ms`` gives its time per token ``(total − ttft) / (output − 1)`` (unknown
        for one token); a whole answer (or no ``ttft_ms``) has its first token at
        ``max(total − output × prior time per token, total / 10)`` and no time per token.
        ``ValueError`` for an unknown route or bad times, ``IndexError`` for ``idx``."""

    def explain(
        self,
        required_caps: int,
        prompt_tokens: int,
        max_output_tokens: int,
        expected_output_tokens: int,
        latency_budget_ms: float,
        max_cost_usd: float,
        min_quality: float,
        allowed_mask: int,
        unavailable_mask: int,
        flags: int = 0,
        qualities: Sequence[float] | None = None,
        now: float | None = None,
    ) -> list[tuple[int, int, float, float, float]]:
        """Per candidate ``(idx, V_* bits of failed constraints, predicted latency ms,
        expected cost USD, quality)``; no relaxation applied."""

def _noop() -> None:
    """Does nothing: the baseline of the boundary benchmark."""

# ------------------------------------------------------------------ classifier
STRUCTURE_FEATURES: Final[tuple[str, ...]]
"""Names of the structure features, at indices ``dim .. dim + 12`` after the hashed
buckets (see ``rust/tiergate-core/src/features.rs`` for each value)."""
QUALITY_MODEL_VERSION: Final[int]
"""The newest model-file version this core reads (3; versions 1 and 2 still load)."""

def features_batch(items: Iterable[str | bytes], config: str) -> tuple[bytes, bytes, bytes]:
    """CSR arrays of the classifier's features, one row per item (``str``: a prompt text,
    ``bytes``: a chat-completions body): ``(indices int32, values float32, indptr int64)``,
    little-endian bytes for ``numpy.frombuffer``; width ``dim + len(STRUCTURE_FEATURES)``.
    ``config`` is the model file's ``features`` object as JSON (``"{}"`` = defaults).
    ``ValueError`` for a bad config or body."""

def feature_config(config: str = "{}") -> str:
    """The feature config with every default filled in, as JSON."""

def classifier_text(body: bytes) -> str:
    """The text the classifier reads of a chat-completions body: message texts, then
    each tool's name and description, joined with ``\\n``."""

@final
class QualityModel:
    """A loaded quality model (``tiergate classifier train``): immutable; a reload builds
    a new one. ``ValueError`` from ``from_json`` names the field at fault."""

    @staticmethod
    def from_json(data: bytes) -> QualityModel: ...
    @property
    def families(self) -> tuple[str, ...]: ...
    @property
    def feature_config(self) -> str: ...
    @property
    def operating_points(self) -> list[tuple[float, float]]:
        """``(floor, offset)`` (threshold rule) or ``(floor, λ)`` (utility rule) rows."""

    @property
    def rule(self) -> str:
        """``"threshold"`` (version-1 files) or ``"utility"`` (versions 2 to 4)."""

    @property
    def version(self) -> int:
        """The model file's version (1 to 4)."""

    @property
    def costs(self) -> list[float]:
        """Mean cost per call per family (utility rule; empty for version 1)."""

    def cost_weight(self, floor: float) -> float:
        """``λ(floor)`` of the utility rule (interpolated, clamped); 0 for version 1."""

    def utility_choice(
        self, floor: float, qualities: list[float], costs: list[float]
    ) -> int | None:
        """Index maximising ``q − λ(floor) · c`` (first on ties); cheapest when
        ``floor <= 0``; ``None`` for no candidate."""

    def __len__(self) -> int: ...
    def predict(self, item: str | bytes) -> list[float]:
        """Calibrated probability of a correct answer per family, for a body or a text."""

    def predict_costs(self, item: str | bytes) -> tuple[list[float], list[float]]:
        """``(predict(item), costs)`` from one pass: per family the cost per call the
        utility rule prices it at for this request — version 4: predicted from the
        cluster gate and the text's length (``operating_points.cost_model``); versions
        2 and 3: the mean cost (``costs``); version 1: empty."""

    def logits(self, item: str | bytes) -> list[float]:
        """Uncalibrated scores per family (before the Platt calibration)."""

    def latent(self, item: str | bytes) -> list[float]:
        """The scores the n-gram pass accumulates: the latent layer of a version-3
        model (its ``latent.names`` order), the families' logits before."""

    def offset(self, floor: float) -> float:
        """Threshold rule: the offset for ``floor`` (interpolated, clamped); 0 for the
        utility rule."""

    def min_quality(self, floor: float, best: float) -> float:
        """``clamp(floor · best − offset(floor), 0, best)``; 0 when ``floor <= 0``."""

# The families of RequestTally.drain, each an instrument of tiergate.telemetry.metrics.
TALLY_REQUESTS: Final[int]
TALLY_DURATION: Final[int]
TALLY_TOKENS: Final[int]
TALLY_TTFT: Final[int]
TALLY_COST: Final[int]
TALLY_FALLBACKS: Final[int]
TALLY_ATTEMPTS: Final[int]
TALLY_HEDGES: Final[int]
TALLY_IDEMPOTENCY: Final[int]
TALLY_DECISION: Final[int]

@final
class RequestTally:
    """The metrics finished requests feed (``RequestRecord``s), per series, with label
    values bounded as ``Metrics`` bounds them (routes, deployments and tenants not
    named here are ``other``). Each cell keeps its running totals, added in the order
    the requests came, as ``Metrics._observe_each`` adds them."""

    def __new__(
        cls,
        routes: list[str],
        deployments: list[str],
        tenants: list[str],
        duration_s: list[float],
        tokens: list[float],
        ttft_s: list[float],
        decision_s: list[float],
    ) -> RequestTally: ...
    def observe(self, records: list[Any]) -> None:
        """Count ``records``; ``TypeError`` naming the field when a record cannot be
        read (a str that is not one, an int beyond 64 bits), and then none is counted."""

    def drain(self) -> list[tuple[int, tuple[str, ...], list[Any]]]:
        """``(family, labels, values)`` for each cell changed since the last drain, in
        the order the cells first changed: ``values`` is ``[total]`` for a counter,
        the count of each bucket (+Inf last) then the sum for a histogram."""

def request_log_lines(records: list[Any], tally: RequestTally | None = None) -> bytes:
    """The request log line of each ``RequestRecord`` (``tiergate.telemetry.record``)
    with its newline, in order: ``orjson.dumps(record_line(r))`` byte for byte, without
    prompt or completion text; given ``tally``, the records are counted in it too (each
    read once for both). ``TypeError`` naming the field when a record holds what JSON
    cannot (a value that is not a scalar, an integer beyond 64 bits, a ``start_ns``
    that is not an ``i64``) or the tally cannot count, and then nothing is written or
    counted."""
