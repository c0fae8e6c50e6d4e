"""Text detectors. Found spans never leave this module as text: callers keep kind and location.

The scan runs in the Rust core (``rust/tiergate-core/src/safety.rs``, ``_core.scan_text``);
the Python implementation below is its reference, kept for the tests (and for text that
is not valid UTF-8). Both work the same way.

Python's ``re`` tries every alternative at every position, which costs hundreds of µs per
KB for a combined pattern. So the scan works in two steps:

1. *anchors*: cheap whole-text passes that find where a match could start: a
   ``bytes.translate`` to a character-class mask followed by a literal search (long
   tokens for keys, digit runs for numbers), ``bytes.find`` for ``@``, ``-----BEGIN``,
   ``earer`` and the few words every injection marker contains;
2. *confirm*: the precise (bytes) pattern runs only in a small window around each anchor.

The text is scanned as UTF-8 bytes. Every pattern matches ASCII only, so a span never
splits a multi-byte character and redaction can work on bytes and decode afterwards.
``benches/bench_safety.py`` measures the cost per KB of both (budget: 20 µs/KB).

Kinds (the stable names used in findings, metrics and block messages):

================  =====================================================
``email``         e-mail addresses
``phone``         phone numbers (E.164 and North-American forms)
``card``          payment card numbers passing the Luhn check
``national_id``   US SSN (dashed), UK National Insurance number
``aws_key``       AWS access key ids and ``aws_secret_access_key = …``
``api_key``       provider API keys: ``sk-…``, ``sk-ant-…``, ``AIza…``, GitHub, Slack
``private_key``   PEM private key blocks
``bearer_token``  ``Bearer …`` credentials and JWTs
``injection``     prompt-injection markers ("ignore previous instructions", template tokens)
================  =====================================================
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

from tiergate._core import SAFETY_KINDS
from tiergate._core import scan_text as _scan_text

__all__ = [
    "INPUT_KINDS",
    "Span",
    "find_spans",
    "find_spans_reference",
    "luhn_ok",
    "redact_spans",
    "redact_text",
]

INPUT_KINDS: Final = (
    "email",
    "phone",
    "card",
    "national_id",
    "aws_key",
    "api_key",
    "private_key",
    "bearer_token",
    "injection",
)
_KIND_NAMES: Final = SAFETY_KINDS
assert tuple(SAFETY_KINDS) == INPUT_KINDS, "core and Python kind tables differ"


class Span(NamedTuple):
    kind: str
    start: int  # byte offsets into the UTF-8 encoding of the text
    end: int


def luhn_ok(digits: bytes | str) -> bool:
    """The Luhn checksum of a string of ASCII digits."""
    raw = digits.encode() if isinstance(digits, str) else digits
    total = 0
    for i, ch in enumerate(reversed(raw)):
        d = ch - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _table(classes: dict[bytes, bytes], default: bytes) -> bytes:
    out = bytearray(default * 256)
    for chars, to in classes.items():
        for c in chars:
            out[c] = to[0]
    return bytes(out)


_ALNUM = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
# Keys: runs of [A-Za-z0-9_-] become "a"; a key is a run of at least 16.
_TOKEN_MASK = _table({_ALNUM + b"_-": b"a"}, b" ")
_LONG_TOKEN = b"a" * 16
# Numbers: digits become "0", separators ".", a full stop "d" (so decimals and IP
# addresses do not make runs); a candidate is a whole run 0[0.]{7,} (the shortest pattern, a spaced UK NINO, is 8) or a dotted phone.
_NUMBER_MASK = _table({b"0123456789": b"0", b" -()+/": b".", b".": b"d"}, b" ")
_NUMBER_RUN = re.compile(
    rb"0(?<![0d]0)(?:00d000d0000(?![0d])|[0.]{7,})"
)  # literal first: fast scan

# Confirmed at the start of a long token.
_KEY_AT = re.compile(
    rb"(?P<aws_key>(?:AKIA|ASIA|ABIA|ACCA|AIDA|AROA)[0-9A-Z]{16}(?![A-Za-z0-9])"
    rb"|(?i:aws_secret_access_key)[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9/+=]{40})"
    rb"|(?P<api_key>sk-ant-[A-Za-z0-9_-]{16,}"
    rb"|sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"
    rb"|AIza[0-9A-Za-z_-]{35}"
    rb"|gh[pousr]_[A-Za-z0-9]{36,}"
    rb"|github_pat_[A-Za-z0-9_]{40,}"
    rb"|xox[abprs]-[A-Za-z0-9-]{10,})"
    rb"|(?P<bearer_token>eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})"
)
_BEARER = re.compile(rb"(?<![A-Za-z0-9])[Bb]earer\s+[A-Za-z0-9._~+/=-]{16,}")
_PRIVATE_KEY = re.compile(
    rb"-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY-----[\s\S]*?(?:-----END (?:[A-Z0-9]+ ){0,3}PRIVATE KEY-----|\Z)"
)

_NUMBERS = re.compile(
    rb"(?P<national_id>(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])"
    rb"|(?<![A-Za-z0-9])(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D](?![A-Za-z0-9]))"
    rb"|(?P<card>(?<![\d.])\d(?:[ -]?\d){12,18}(?![\d.]))"
    rb"|(?P<phone>(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{3}\)[ .-]?|\d{3}[ .-])\d{3}[ .-]\d{4}(?!\d)"
    rb"|(?<![\w+])\+\d{1,3}[ .-]?\d{2,4}(?:[ .-]?\d{2,4}){2,4}(?!\d))"
)

_NUMBERS_NO_CARD = re.compile(
    _NUMBERS.pattern.replace(rb"|(?P<card>(?<![\d.])\d(?:[ -]?\d){12,18}(?![\d.]))", b"")
)
assert _NUMBERS_NO_CARD.pattern != _NUMBERS.pattern

_EMAIL = re.compile(
    rb"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}(?![A-Za-z0-9-])"
)

_INJECTION = re.compile(
    rb"(?i:\b(?:ignore|disregard|forget|override)\s+(?:(?:all|any|the|your|of|my)\s+)*"
    rb"(?:previous|prior|above|earlier|preceding|system|original)\s+"
    rb"(?:instructions?|prompts?|rules|messages?)"
    rb"|\b(?:reveal|print|show|repeat|output)\s+(?:me\s+)?(?:your|the)\s+(?:system\s+prompt|hidden\s+instructions|initial\s+instructions)"
    rb"|\byou\s+are\s+now\s+(?:in\s+)?(?:DAN|developer\s+mode|jailbroken|unrestricted)\b"
    rb"|\bdo\s+anything\s+now\b"
    rb"|\bnew\s+system\s+prompt\s*:"
    rb"|<\|im_start\|>|<\|im_end\|>|<\|system\|>|\[/?INST\]|<<SYS>>|<\|begin_of_text\|>)"
)
# Every injection marker contains one of these (in the lowercased text). The noun anchors
# only count when the word before them is one of _NOUN_LEADS, checked before any regex runs.
_NOUN_ANCHORS: Final = (b"instruction", b"prompt", b"rules", b"message")
_NOUN_LEADS: Final = frozenset(
    (
        b"previous",
        b"prior",
        b"above",
        b"earlier",
        b"preceding",
        b"system",
        b"original",
        b"hidden",
        b"initial",
    )
)
_NOW_LEADS: Final = frozenset((b"are", b"anything"))  # "you are now …", "do anything now"
_TEMPLATE_NEXT: Final = frozenset(b"|<")  # "<|im_start|>", "<<SYS>>"
_LEAD_CHECKED: Final = (*((a, _NOUN_LEADS) for a in _NOUN_ANCHORS), (b" now", _NOW_LEADS))
_INJECTION_REACH = 120  # bytes before an anchor the confirming pattern may span


def _windows(
    hay: bytes, needle: bytes, before: int, after: int, out: list[tuple[int, int]]
) -> None:
    i = hay.find(needle)
    n = len(hay)
    while i >= 0:
        out.append((max(0, i - before), min(n, i + len(needle) + after)))
        i = hay.find(needle, i + len(needle))


def _merge(windows: list[tuple[int, int]]) -> list[tuple[int, int]]:
    windows.sort()
    merged: list[tuple[int, int]] = []
    for lo, hi in windows:
        if merged and lo <= merged[-1][1]:
            if hi > merged[-1][1]:
                merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return merged


def _scan(raw: bytes, injection: bool) -> list[Span]:
    spans: list[Span] = []
    n = len(raw)
    # Keys and tokens.
    mask = raw.translate(_TOKEN_MASK)
    i = mask.find(_LONG_TOKEN)
    while i >= 0:
        end = mask.find(b" ", i)
        if end < 0:
            end = n
        m = _KEY_AT.match(raw, i)
        if m is not None:
            spans.append(Span(m.lastgroup or "api_key", i, m.end()))
        i = mask.find(_LONG_TOKEN, end)
    i = raw.find(b"earer")
    while i > 0:
        m = _BEARER.match(raw, i - 1)
        if m is not None:
            spans.append(Span("bearer_token", m.start(), m.end()))
        i = raw.find(b"earer", i + 5)
    if b"-----BEGIN" in raw:
        spans.extend(Span("private_key", m.start(), m.end()) for m in _PRIVATE_KEY.finditer(raw))
    # E-mail addresses.
    if b"@" in raw:
        at: list[tuple[int, int]] = []
        _windows(raw, b"@", 65, 256, at)
        for lo, hi in _merge(at):
            spans.extend(Span("email", m.start(), m.end()) for m in _EMAIL.finditer(raw, lo, hi))
    # Numbers.
    numbers = raw.translate(_NUMBER_MASK)
    for run in _NUMBER_RUN.finditer(numbers):
        rs, re_ = run.start(), run.end()
        shape = run.group()
        if shape.isdigit() and (rs == 0 or raw[rs - 1] != 43):  # digits only, no leading "+"
            # Only a card can be a bare digit run (ids, timestamps and the like are not).
            if (
                13 <= re_ - rs <= 19
                and (rs == 0 or raw[rs - 1] != 46)
                and (re_ == n or raw[re_] != 46)
            ) and luhn_ok(raw[rs:re_]):
                spans.append(Span("card", rs, re_))
            continue
        lo, hi = max(0, rs - 4), min(n, re_ + 3)
        for m in _NUMBERS.finditer(raw, lo, hi):
            kind = m.lastgroup or ""
            if kind == "card" and not luhn_ok(m.group().replace(b" ", b"").replace(b"-", b"")):
                # The greedy candidate may join a card to a neighbouring number, or be a
                # phone number run into another: look inside it for both, and for a
                # number it cut short (up to the window's end).
                spans.extend(_inside_failed_card(raw, m.start(), m.end(), hi))
                continue
            spans.append(Span(kind, m.start(), m.end()))
    # Injection markers.
    if injection:
        low = raw.lower()
        wins: list[tuple[int, int]] = []
        if b"inst]" in low:
            _windows(low, b"inst]", 2, 8, wins)
        i = low.find(b"<")
        while i >= 0:
            if i + 1 < n and low[i + 1] in _TEMPLATE_NEXT:
                wins.append((i, min(n, i + 24)))
            i = low.find(b"<", i + 1)
        for anchor, leads in _LEAD_CHECKED:
            i = low.find(anchor)
            while i >= 0:
                before = low[max(0, i - 24) : i].split()
                if before and before[-1] in leads:
                    wins.append((max(0, i - _INJECTION_REACH), min(n, i + 24)))
                i = low.find(anchor, i + len(anchor))
        for lo, hi in _merge(wins):
            spans.extend(
                Span("injection", m.start(), m.end()) for m in _INJECTION.finditer(raw, lo, hi)
            )
    if len(spans) > 1:
        spans = _disjoint(spans)
    return spans


def _inside_failed_card(raw: bytes, lo: int, hi: int, limit: int) -> list[Span]:
    """Cards among the digit groups of ``raw[lo:hi]`` (a candidate that failed Luhn) and
    the other numbers from ``lo`` to ``limit``: the candidate's greedy end may fall
    inside a phone number, which the scan that follows it would not see whole."""
    found = [
        Span(m.lastgroup or "", m.start(), m.end())
        for m in _NUMBERS_NO_CARD.finditer(raw, lo, limit)
    ]
    # Sub-candidates start and end on digit-group boundaries (separators or the edges).
    digits = [i for i in range(lo, hi) if 48 <= raw[i] <= 57]
    n = len(digits)
    starts = [k for k in range(n) if k == 0 or digits[k] != digits[k - 1] + 1]
    ends = {k for k in range(n) if k == n - 1 or digits[k + 1] != digits[k] + 1}
    for i in starts:
        for j in range(min(n - 1, i + 18), i + 11, -1):  # 13–19 digits, longest first
            if j not in ends:
                continue
            start, end = digits[i], digits[j] + 1
            if any(s.start < end and start < s.end for s in found):
                continue
            if luhn_ok(bytes(raw[k] for k in digits[i : j + 1])):
                found.append(Span("card", start, end))
                break
    return found


def find_spans(text: str, *, injection: bool = True) -> list[Span]:
    """Every detector match in ``text`` as byte spans of its UTF-8 form, sorted and disjoint.

    Runs the Rust core's one-pass port (``_core.scan_text``); a text that cannot be UTF-8
    (lone surrogates) takes the pure-Python path, which is also the tests' reference."""
    try:
        found = _scan_text(text, injection)
    except UnicodeEncodeError:
        return find_spans_reference(text, injection=injection)
    return [Span(_KIND_NAMES[k], start, end) for k, start, end in found]


def find_spans_reference(text: str, *, injection: bool = True) -> list[Span]:
    """The pure-Python detectors :func:`find_spans` must agree with (same spans, same order)."""
    return _scan(text.encode("utf-8", "surrogatepass"), injection)


def _disjoint(spans: list[Span]) -> list[Span]:
    spans.sort(key=lambda s: (s.start, -(s.end - s.start)))
    out: list[Span] = []
    end = -1
    for s in spans:
        if s.start >= end:
            out.append(s)
            end = s.end
        elif s.end > end:  # overlapping tail: widen the kept span so redaction covers both
            out[-1] = Span(out[-1].kind, out[-1].start, s.end)
            end = s.end
    return out


def redact_spans(text: str, spans: list[Span]) -> str:
    """``text`` with each span replaced by ``[REDACTED:<kind>]`` (spans from :func:`find_spans`)."""
    if not spans:
        return text
    raw = text.encode("utf-8", "surrogatepass")
    out: list[bytes] = []
    pos = 0
    for s in spans:
        out.append(raw[pos : s.start])
        out.append(b"[REDACTED:" + s.kind.encode() + b"]")
        pos = s.end
    out.append(raw[pos:])
    return b"".join(out).decode("utf-8", "surrogatepass")


def redact_text(text: str) -> str:
    """Every PII and secret match replaced (injection markers kept: they are not sensitive)."""
    return redact_spans(text, find_spans(text, injection=False))
