"""Small typed field checks shared by the OpenAI and Anthropic parsers.

Each raises :class:`~tiergate.errors.RequestError` naming the field; ``bool`` is never
accepted where a number is expected (in Python ``True`` is an ``int``).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from typing import Any, NoReturn

from tiergate.errors import RequestError
from tiergate.providers.normalise import SchemaInvalid, schema_validator

_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def bad(param: str, problem: str) -> NoReturn:
    raise RequestError(f"invalid `{param}`: {problem}", param=param)


def check_schema(schema: Any, param: str) -> dict[str, Any]:
    """``schema`` when it is a valid JSON Schema (an object its draft's meta-schema
    accepts): answers are checked against it and adapters convert it, so one that is not
    is the caller's 400 here rather than a failure later."""
    if not isinstance(schema, dict):
        bad(param, "must be a JSON Schema object")
    try:
        schema_validator(schema)
    except SchemaInvalid as exc:
        bad(param, f"is not a valid JSON Schema ({exc})")
    return schema


def req_str(body: dict[str, Any], key: str, param: str) -> str:
    value = body.get(key)
    if value is None:
        raise RequestError(f"missing required parameter: `{param}`", param=param)
    if not isinstance(value, str) or not value:
        bad(param, "must be a non-empty string")
    return value


def opt_bool(body: dict[str, Any], key: str, param: str) -> bool | None:
    value = body.get(key)
    if value is None or isinstance(value, bool):
        return value
    bad(param, "must be a boolean")


def opt_int(body: dict[str, Any], key: str, param: str, minimum: int | None = None) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        bad(param, "must be an integer")
    if isinstance(value, float):
        if not value.is_integer():
            bad(param, "must be an integer")
        value = int(value)
    if minimum is not None and value < minimum:
        bad(param, f"must be at least {minimum}")
    if not -(2**63) <= value < 2**63:  # no API takes more; the core reads 64 bits
        bad(param, "must fit in 64 bits")
    return value


def opt_number(body: dict[str, Any], key: str, param: str, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        bad(param, "must be a number")
    if not low <= value <= high:
        bad(param, f"must be between {low:g} and {high:g}")
    return float(value)


def stop_list(value: Any, param: str, limit: int) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        bad(param, "must be a string or an array of strings")
    if len(value) > limit:
        bad(param, f"accepts at most {limit} sequences")
    return [s for s in value if s]


def check_tool_name(value: Any, param: str) -> str:
    if not isinstance(value, str) or not _TOOL_NAME.match(value):
        bad(param, "must be 1-64 characters of letters, digits, '_' or '-'")
    return value


def parse_data_url(url: str, param: str) -> tuple[str, str]:
    """Split ``data:<media>;base64,<payload>``; checks the payload is base64."""
    head, sep, payload = url.partition(",")
    if not sep or not head.endswith(";base64"):
        bad(param, "data URLs must be base64 encoded (data:<type>;base64,...)")
    media_type = head[5:-7] or "application/octet-stream"
    if not media_type.startswith("image/"):
        bad(param, f"unsupported media type {media_type!r}; expected an image")
    try:
        base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        bad(param, "the base64 payload is invalid")
    return media_type, payload
