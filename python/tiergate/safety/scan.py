"""Inline safety: scan the canonical request before the provider sees it, and the answer after.

Per tenant the policy says, per kind, what a finding does:

* ``off``    not scanned for;
* ``log``    reported (findings event stream, metrics), the request goes through unchanged;
* ``redact`` the match is replaced by ``[REDACTED:<kind>]`` in a copy of the request, which
  is what the provider sees (``ChatRequest.raw`` keeps the original bytes for hashing only:
  no adapter forwards it);
* ``block``  the caller gets HTTP 400 ``content_blocked`` naming the kinds, never the text.

Findings carry kind, side, action and location (``messages[1].parts[0]``), never the
matched text.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, Final, Literal

import orjson

from tiergate import _core
from tiergate.envelope import ChatRequest, Message, ResponseFormat, TextPart, ToolCall
from tiergate.errors import RequestError
from tiergate.providers.normalise import schema_validator
from tiergate.safety.detectors import Span, find_spans, redact_spans
from tiergate.telemetry.record import SafetyFinding

__all__ = [
    "OUTPUT_KINDS",
    "Action",
    "SafetyPolicy",
    "SafetyResult",
    "enforce",
    "scan_output",
    "scan_request",
]

Action = Literal["off", "log", "redact", "block"]
OUTPUT_KINDS: Final = ("refusal", "schema_invalid")
_RANK: Final[dict[str, int]] = {"off": 0, "log": 1, "redact": 2, "block": 3}


@dataclasses.dataclass(slots=True, frozen=True)
class SafetyPolicy:
    """What each kind of finding does. Built once per tenant at config load."""

    default: Action = "log"
    kinds: Mapping[str, Action] = dataclasses.field(default_factory=dict)
    # Injection markers are looked for in these roles only (the app's own system prompt is trusted).
    injection_roles: frozenset[str] = frozenset({"user", "tool"})
    # Derived from the above once, at construction (read per request).
    enabled: bool = dataclasses.field(init=False, repr=False, compare=False)
    """Whether any kind is scanned for."""
    wants_injection: bool = dataclasses.field(init=False, repr=False, compare=False)
    """Whether injection markers are scanned for."""
    changes_requests: bool = dataclasses.field(init=False, repr=False, compare=False)
    """Whether a finding can change what happens to a request (redact or block).

    When it cannot, the request scan only reports, so it may run after the answer."""
    checks_refusal: bool = dataclasses.field(init=False, repr=False, compare=False)
    """Whether answers are checked for refusals."""
    checks_schema: bool = dataclasses.field(init=False, repr=False, compare=False)
    """Whether JSON answers are checked against the requested format."""

    def __post_init__(self) -> None:
        actions = (self.default, *self.kinds.values())
        object.__setattr__(self, "enabled", any(a != "off" for a in actions))
        object.__setattr__(self, "wants_injection", self.action("injection") != "off")
        object.__setattr__(self, "changes_requests", any(_RANK[a] > _RANK["log"] for a in actions))
        object.__setattr__(self, "checks_refusal", self.action("refusal") != "off")
        object.__setattr__(self, "checks_schema", self.action("schema_invalid") != "off")

    def action(self, kind: str) -> Action:
        return self.kinds.get(kind, self.default)


@dataclasses.dataclass(slots=True)
class SafetyResult:
    findings: list[SafetyFinding]
    blocked: bool
    request: ChatRequest  # the redacted copy, or the original when nothing was redacted

    def error(self) -> RequestError:
        """The 400 a blocked request gets; names the kinds, never the text."""
        kinds = sorted({f.kind for f in self.findings if f.action == "block"})
        where = sorted({f.location for f in self.findings if f.action == "block" and f.location})
        return RequestError(
            f"the request was blocked by the content policy: found {', '.join(kinds)}"
            + (f" in {', '.join(where)}" if where else ""),
            param=where[0] if where else None,
            status=400,
            type="invalid_request_error",
            code="content_blocked",
        )


def _scan_text(
    text: str,
    where: tuple[int, str, int],
    policy: SafetyPolicy,
    injection: bool,
    findings: list[SafetyFinding],
) -> tuple[str, bool]:
    """Record findings for ``text``; return (possibly redacted text, blocked).

    ``where`` is (message index, "parts" or "tool_calls", index): the location is
    spelled out only when there is something to report."""
    spans = find_spans(text, injection=injection)
    if not spans:
        return text, False
    mi, field, i = where
    location = (
        f"messages[{mi}].parts[{i}]"
        if field == "parts"
        else f"messages[{mi}].tool_calls[{i}].arguments"
    )
    redact: list[Span] = []
    blocked = False
    seen: set[str] = set()
    for s in spans:
        action = policy.action(s.kind)
        if action == "off":
            continue
        if s.kind not in seen:  # one finding per kind and location
            seen.add(s.kind)
            findings.append(SafetyFinding(s.kind, "input", action, location))
        if action == "redact":
            redact.append(s)
        elif action == "block":
            blocked = True
    return (redact_spans(text, redact) if redact else text), blocked


def scan_request(chat: ChatRequest, policy: SafetyPolicy) -> SafetyResult:
    """Scan every text part and tool-call argument of every message."""
    findings: list[SafetyFinding] = []
    if not policy.enabled:
        return SafetyResult(findings, False, chat)
    blocked = False
    new_messages: list[Message] | None = None
    wants_injection = policy.wants_injection
    for mi, msg in enumerate(chat.messages):
        injection = wants_injection and msg.role in policy.injection_roles
        parts = msg.parts
        new_parts: list[Any] | None = None
        for pi, part in enumerate(parts):
            if not isinstance(part, TextPart) or not part.text:
                continue
            text, b = _scan_text(part.text, (mi, "parts", pi), policy, injection, findings)
            blocked |= b
            if text is not part.text:
                if new_parts is None:
                    new_parts = list(parts)
                new_parts[pi] = TextPart(text)
        new_calls: list[ToolCall] | None = None
        for ci, call in enumerate(msg.tool_calls):
            text, b = _scan_text(call.arguments, (mi, "tool_calls", ci), policy, False, findings)
            blocked |= b
            if text is not call.arguments:
                if new_calls is None:
                    new_calls = list(msg.tool_calls)
                new_calls[ci] = dataclasses.replace(call, arguments=text)
        if new_parts is not None or new_calls is not None:
            if new_messages is None:
                new_messages = list(chat.messages)
            new_messages[mi] = dataclasses.replace(
                msg,
                parts=new_parts if new_parts is not None else list(msg.parts),
                tool_calls=new_calls if new_calls is not None else list(msg.tool_calls),
            )
    out = chat if new_messages is None else dataclasses.replace(chat, messages=new_messages)
    return SafetyResult(findings, blocked, out)


# Bodies up to this size are scanned whole first (one call) before text by text: past
# it, a body is mostly images or files the per-text scan skips.
_CLEAN_BODY_MAX = 64 * 1024


def _texts_clean(chat: ChatRequest) -> bool:
    """Whether no text the loop of :func:`request_findings` reads holds a finding, in one
    call to the core (each text scanned for every kind, injection too: more than the
    loop looks for; texts seen lately answered from the core's memo), where the loop
    cost a call per text. False when the core cannot tell (lone surrogates)."""
    texts = [("", p.text) for m in chat.messages for p in m.parts if isinstance(p, TextPart)]
    texts += [("", c.arguments) for m in chat.messages for c in m.tool_calls]
    try:
        return not _core.scan_texts_any(texts)
    except UnicodeEncodeError:
        return False


def request_findings(chat: ChatRequest, policy: SafetyPolicy) -> list[SafetyFinding]:
    """:func:`scan_request`'s findings alone, for a policy that only logs (nothing to
    redact or block, so no copy of the request is built): the scan that runs after the
    answer. A text without a match costs one call to the core."""
    findings: list[SafetyFinding] = []
    if not policy.enabled:
        return findings
    plain = chat.scan_texts
    if plain is not None:
        # The core's reading of the messages' texts (tool-call arguments among them):
        # one call, texts seen lately (a system prompt, earlier turns) answered from
        # the core's memo. Each text is scanned for every kind, injection too, so
        # no match there means none in the loop below.
        if not _core.scan_texts_any(plain):
            return findings
    else:
        raw = chat.raw
        if raw and len(raw) <= _CLEAN_BODY_MAX and b"\\" not in raw:
            # A body with no escapes holds each text's bytes as they are, between JSON's
            # quotes (which, like a text's ends, are neither word, digit nor sign to the
            # patterns): no finding in the whole body means none in any text of it.
            if not _core.scan_any(raw):
                return findings
        elif _texts_clean(chat):
            return findings
    wants_injection = policy.wants_injection
    roles = policy.injection_roles
    scan = _core.scan_text
    for mi, msg in enumerate(chat.messages):
        injection = wants_injection and msg.role in roles
        for pi, part in enumerate(msg.parts):
            if isinstance(part, TextPart) and part.text:
                try:
                    if not scan(part.text, injection):
                        continue
                except UnicodeEncodeError:
                    pass  # lone surrogates: find_spans takes its reference path
                _scan_text(part.text, (mi, "parts", pi), policy, injection, findings)
        for ci, call in enumerate(msg.tool_calls):
            _scan_text(call.arguments, (mi, "tool_calls", ci), policy, False, findings)
    return findings


def enforce(chat: ChatRequest, policy: SafetyPolicy) -> SafetyResult:
    """:func:`scan_request`, raising the caller's 400 when the policy blocks."""
    result = scan_request(chat, policy)
    if result.blocked:
        raise result.error()
    return result


# Refusals: an answer that opens by declining. Checked on the first 300 characters only.
_REFUSAL = re.compile(
    r"^\W*(?:I'?m\s+(?:sorry|afraid)|I\s+am\s+(?:sorry|afraid)|sorry|unfortunately|as\s+an\s+ai)?[^.!?\n]{0,60}?"
    r"\b(?:I\s+(?:can(?:no|')t|cannot|won'?t|will\s+not|am\s+(?:not\s+able|unable)|'m\s+(?:not\s+able|unable))"
    r"\s+(?:help|assist|provide|comply|do\s+that|fulfil|support|answer|create|generate|write)"
    r"|I\s+must\s+(?:decline|refuse))",
    re.IGNORECASE,
)


_DEFAULT_POLICY = SafetyPolicy()


def scan_output(
    text: str, response_format: ResponseFormat | None = None, policy: SafetyPolicy | None = None
) -> list[SafetyFinding]:
    """Refusal and schema checks on the provider's answer (``where="output"``; action is log)."""
    policy = policy or _DEFAULT_POLICY
    findings: list[SafetyFinding] = []
    # match, not search: the pattern is anchored (``^``, no MULTILINE), so a search can
    # only succeed where a match does, and would first fail at each of the other 299
    # positions (about 1.5 µs on an ordinary answer). Even the match costs several µs on
    # a long answer; the core tells first whether it could match at all.
    if (
        policy.checks_refusal
        and _core.refusal_possible(text)
        and _REFUSAL.match(text, 0, _core.REFUSAL_WINDOW) is not None
    ):
        findings.append(SafetyFinding("refusal", "output", "log", "choices[0].message.content"))
    fmt = response_format
    if fmt is not None and fmt.kind != "text" and policy.checks_schema:
        ok = True
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError:
            ok = False
        else:
            if fmt.kind == "json_object":
                ok = isinstance(doc, dict)
            elif fmt.schema is not None:
                ok = schema_validator(fmt.schema).is_valid(doc)
        if not ok:
            findings.append(
                SafetyFinding("schema_invalid", "output", "log", "choices[0].message.content")
            )
    return findings
