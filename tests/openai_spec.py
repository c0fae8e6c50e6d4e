"""Validate payloads against OpenAI's published OpenAPI description (../shared/specs)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012


def _nullable(node: Any) -> Any:
    """OpenAI's 3.1 document still marks nullability the 3.0 way (``nullable: true``),
    which JSON Schema ignores: translate it to a ``null`` alternative."""
    if isinstance(node, list):
        return [_nullable(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _nullable(v) for k, v in node.items()}
    if out.pop("nullable", False) is True:
        return {"anyOf": [out, {"type": "null"}]}
    return out


@functools.cache
def _validators(spec_path: Path) -> tuple[Registry, dict[str, Any]]:
    spec = _nullable(json.loads(spec_path.read_text()))
    resource = Resource.from_contents(spec, default_specification=DRAFT202012)
    return Registry().with_resource("urn:openai", resource), spec


def validate(spec_path: Path, schema_name: str, payload: Any) -> None:
    """Raise jsonschema.ValidationError when payload does not match the named schema."""
    registry, _ = _validators(spec_path)
    schema = {"$ref": f"urn:openai#/components/schemas/{schema_name}"}
    Draft202012Validator(schema, registry=registry).validate(payload)
