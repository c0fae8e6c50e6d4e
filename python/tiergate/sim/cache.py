"""Prompt caching, simulated: a prefix seen before on the same model is read from cache.

Each protocol names its cacheable prefix: Anthropic blocks with ``cache_control``,
Bedrock ``cachePoint`` blocks (the prefix ends at the last marker, in the order tools,
system, messages); OpenAI caches automatically every message but the last when that
prefix is at least 1,024 tokens. The first request writes the prefix (Anthropic
``cache_creation_input_tokens``, Bedrock ``cacheWriteInputTokens``), later ones read it
(``cache_read_input_tokens``, ``cacheReadInputTokens``, OpenAI ``cached_tokens``).
Prefix tokens are ceil(characters of the prefix's JSON / 4), capped by the input tokens;
prefixes under :data:`MIN_TOKENS` are not cached, as with the real APIs.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["MIN_TOKENS", "CacheHint", "prefix_hint"]

MIN_TOKENS = 1024


@dataclass(slots=True, frozen=True)
class CacheHint:
    key: bytes
    tokens: int


def prefix_hint(elements: Iterable[tuple[Any, bool]]) -> CacheHint | None:
    """The prefix ending at the last element marked True, or None when unmarked or short."""
    h = hashlib.blake2b(digest_size=16)
    chars = 0
    best: CacheHint | None = None
    for element, marker in elements:
        data = orjson.dumps(element, option=orjson.OPT_SORT_KEYS)
        h.update(data)
        chars += len(data)
        if marker:
            best = CacheHint(h.copy().digest(), math.ceil(chars / 4))
    if best is None or best.tokens < MIN_TOKENS:
        return None
    return best
