"""What a simulated model answers, and how many tokens that costs.

Every protocol parses into :class:`tiergate.envelope.ChatRequest` and renders an
:class:`Answer`. The answer depends only on (``sim.seed``, model id, request content);
``max_tokens`` and stop sequences only truncate it, as they would a sampled answer.

Rules, first match wins:

1. The last message is a tool result → text that quotes the result.
2. A tool is required (OpenAI ``required``/named function, Anthropic ``any``/``tool``,
   Gemini ``ANY``, Bedrock ``any``/``tool``) → a call of the named tool, else of the
   first tool whose name the last user message mentions, else of a tool picked by the
   content hash; arguments valid for the tool's JSON schema.
3. A JSON schema was asked for → a valid instance; ``json_object`` → a small object.
4. The model has a ``dataset_model`` and the last user message text equals a data-set
   prompt → the recorded response, cost and correctness.
5. Tool choice ``auto`` with tools, the last message is the user's and its text
   mentions a tool's name (case-insensitive substring) → a call of every mentioned tool
   (of the first one when parallel calls are off).
6. Plausible text whose length is drawn from the content hash.

Directives in the last user message, for tests and demos: ``[[sim:refuse]]`` answers a
refusal (OpenAI ``refusal``, Anthropic ``refusal``, Gemini ``SAFETY``, Bedrock
``content_filtered``); ``[[sim:block]]`` blocks the prompt (Gemini
``promptFeedback.blockReason``, Bedrock ``guardrail_intervened``, OpenAI
``content_filter``); ``[[sim:len=N]]`` makes the plain-text answer N tokens long.

Tokens: input = ceil(characters / 4) over every message's text, tool-call names and
arguments, tool results and tool definitions (name, description, JSON schema), plus 85
per image; output = the number of emitted tokens, where text is split into pieces of at
most four non-space characters (with their leading whitespace) by :func:`split_tokens`.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from typing import Literal

import orjson

from tiergate.envelope import ChatRequest, ImagePart, ToolCall
from tiergate.sim.dataset import Record
from tiergate.sim.latency import stable_seed
from tiergate.sim.schema import instance

__all__ = [
    "Answer",
    "Finish",
    "count_input_tokens",
    "decide",
    "last_user_text",
    "split_tokens",
]

Finish = Literal["stop", "length", "tool_calls", "stop_sequence", "refusal", "blocked"]

IMAGE_TOKENS = 85
_TOKEN = re.compile(r"\s*\S{1,4}|\s+")
_LEN = re.compile(r"\[\[sim:len=(\d+)\]\]")

_SENTENCES = (
    "The short answer is that it depends on the constraints you care about most.",
    "In practice the simplest approach is usually the right place to start.",
    "A smaller model handles most routine requests quickly and cheaply.",
    "Harder questions benefit from a larger model that reasons over several steps.",
    "It helps to measure latency and cost together rather than one at a time.",
    "Here is a concise summary of the main points.",
    "First, state the goal clearly and list what must not change.",
    "Second, compare the options against that goal and note the trade-offs.",
    "Finally, pick the option that meets every hard requirement at the lowest cost.",
    "If the inputs change, the recommendation may change as well.",
    "You can verify this by running a small experiment with realistic data.",
    "Keep an eye on tail latency, since averages hide the slow requests.",
    "Caching repeated work is often the cheapest improvement available.",
    "When in doubt, prefer the option that is easier to explain and to undo.",
    "This should give you a reasonable starting point.",
    "Let me know if you would like a more detailed walkthrough.",
    "There are a few caveats worth mentioning.",
    "Errors should be handled explicitly rather than silently ignored.",
    "The same reasoning applies to larger systems with more moving parts.",
    "Most of the benefit comes from getting the defaults right.",
)


def split_tokens(text: str) -> list[str]:
    """~4-character tokens whose concatenation is exactly ``text``."""
    return _TOKEN.findall(text)


@dataclass(slots=True)
class Answer:
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish: Finish = "stop"
    stop_sequence: str | None = None
    input_tokens: int = 0
    # Text pieces as streamed; ``"".join(text_tokens) == text``.
    text_tokens: list[str] = field(default_factory=list)
    # Per tool call, its argument JSON split into stream fragments.
    arg_tokens: list[list[str]] = field(default_factory=list)
    record: Record | None = None
    # Of input_tokens: read from / written to the simulated prompt cache.
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def output_tokens(self) -> int:
        return len(self.text_tokens) + sum(len(a) for a in self.arg_tokens)


def last_user_text(req: ChatRequest) -> str:
    for m in reversed(req.messages):
        if m.role == "user":
            return m.text
    return ""


def count_input_tokens(req: ChatRequest) -> int:
    chars = 0
    images = 0
    for m in req.messages:
        for p in m.parts:
            if isinstance(p, ImagePart):
                images += 1
            else:
                chars += len(p.text)
        for tc in m.tool_calls:
            chars += len(tc.name) + len(tc.arguments)
    for t in req.tools:
        chars += len(t.name) + len(t.description) + len(orjson.dumps(t.parameters))
    if req.response_format.schema is not None:
        chars += len(orjson.dumps(req.response_format.schema))
    return max(1, math.ceil(chars / 4)) + IMAGE_TOKENS * images


def _content_key(req: ChatRequest) -> bytes:
    """What the answer may depend on (not max_tokens, stop, stream or sampling knobs)."""
    return orjson.dumps(
        {
            "m": [
                [
                    m.role,
                    m.text,
                    [[c.name, c.arguments] for c in m.tool_calls],
                    m.tool_call_id,
                    sum(isinstance(p, ImagePart) for p in m.parts),
                ]
                for m in req.messages
            ],
            "t": [[t.name, t.parameters] for t in req.tools],
            "c": [req.tool_choice, req.tool_choice_name],
            "f": [req.response_format.kind, req.response_format.schema],
        },
        option=orjson.OPT_SORT_KEYS,
    )


def _sentences(rng: random.Random, n_tokens: int, opening: str) -> str:
    text = opening
    while len(split_tokens(text)) < n_tokens:
        sentence = rng.choice(_SENTENCES)
        text = f"{text} {sentence}" if text else sentence
    return text


def _tool_call(req: ChatRequest, name: str, rng: random.Random, i: int) -> ToolCall:
    tool = next(t for t in req.tools if t.name == name)
    args = orjson.dumps(instance(tool.parameters or {"type": "object"}, rng)).decode()
    call_id = f"call_{stable_seed('id', rng.random(), i):016x}"[:29]
    return ToolCall(id=call_id, name=name, arguments=args)


def _mentioned(req: ChatRequest, text: str) -> list[str]:
    low = text.lower()
    hits = [(low.find(t.name.lower()), t.name) for t in req.tools if t.name.lower() in low]
    return [name for _, name in sorted(hits)]


def _tool_result_text(req: ChatRequest) -> str:
    last = req.messages[-1]
    names = {c.id: c.name for m in req.messages for c in m.tool_calls}
    name = last.name or names.get(last.tool_call_id or "", "the tool")
    result = last.text.strip().replace("\n", " ")
    if len(result) > 300:
        result = result[:300] + "…"
    results = [m for m in req.messages if m.role == "tool"]
    more = f" ({len(results)} tool results in total)" if len(results) > 1 else ""
    return f"According to {name}, the result is: {result}{more}."


def decide(
    req: ChatRequest,
    *,
    seed: int,
    model: str,
    max_tokens: int,
    record_for: Record | None = None,
) -> Answer:
    """The answer of ``model`` to ``req`` (see the module docstring for the rules)."""
    rng = random.Random(stable_seed("answer", seed, model, _content_key(req)))
    user = last_user_text(req)
    ans = Answer(input_tokens=count_input_tokens(req))
    last = req.messages[-1] if req.messages else None
    tools_on = bool(req.tools) and req.tool_choice != "none"
    if "[[sim:block]]" in user:
        ans.finish = "blocked"
        return ans
    if "[[sim:refuse]]" in user:
        ans.text = "I'm sorry, but I can't help with that request."
        ans.finish = "refusal"
        ans.text_tokens = split_tokens(ans.text)
        return ans

    text: str | None = None
    if last is not None and last.role == "tool":
        text = _tool_result_text(req)
    elif tools_on and req.tool_choice in ("required", "function"):
        if req.tool_choice == "function" and req.tool_choice_name:
            name = req.tool_choice_name
        else:
            named = _mentioned(req, user)
            name = named[0] if named else req.tools[rng.randrange(len(req.tools))].name
        ans.tool_calls = [_tool_call(req, name, rng, 0)]
    elif req.response_format.kind == "json_schema" and req.response_format.schema is not None:
        text = orjson.dumps(instance(req.response_format.schema, rng)).decode()
    elif req.response_format.kind == "json_object":
        text = orjson.dumps(
            {"answer": _sentences(rng, 8, ""), "confidence": round(rng.uniform(0.5, 1.0), 2)}
        ).decode()
    elif record_for is not None:
        text = record_for.response
        ans.record = record_for
    elif tools_on and last is not None and last.role == "user" and _mentioned(req, user):
        named = _mentioned(req, user)
        if not req.parallel_tool_calls:
            named = named[:1]
        ans.tool_calls = [_tool_call(req, n, rng, i) for i, n in enumerate(named)]

    if ans.tool_calls:
        ans.finish = "tool_calls"
        ans.arg_tokens = [split_tokens(c.arguments) for c in ans.tool_calls]
        return ans
    if text is None:
        forced = _LEN.search(user)
        n = (
            int(forced.group(1))
            if forced
            else max(3, min(600, int(rng.lognormvariate(math.log(60), 0.6))))
        )
        topic = " ".join(user.split()[:6]).strip(" .?!:;,")
        opening = f"About “{topic}”:" if topic and not forced else ""
        text = _sentences(rng, n, opening)
        if forced:
            text = "".join(split_tokens(text)[:n])
    return _truncate(ans, text, req.stop, max_tokens)


def _truncate(ans: Answer, text: str, stop: list[str], max_tokens: int) -> Answer:
    cut = min(((text.find(s), s) for s in stop if s and s in text), default=None)
    if cut is not None:
        text = text[: cut[0]]
        ans.finish = "stop_sequence"
        ans.stop_sequence = cut[1]
    tokens = split_tokens(text)
    if len(tokens) > max_tokens:
        tokens = tokens[:max_tokens]
        ans.finish = "length"
        ans.stop_sequence = None
    ans.text_tokens = tokens
    ans.text = "".join(tokens)
    return ans
