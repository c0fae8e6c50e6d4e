"""SageMaker Runtime: ``POST /endpoints/{name}/invocations`` and
``/invocations-response-stream`` (``PayloadPart`` events carrying the container's bytes).

The endpoint name is the model id; its payload format comes from the deployment naming
it. ``openai_messages``: OpenAI chat-completions JSON in and out, streamed as SSE
``data:`` lines split across PayloadParts (as LMI/TGI messages-API containers do).
``tgi``: ``{"inputs", "parameters"}`` → ``[{"generated_text"}]``, streamed as TGI token
events. A TGI prompt in a known chat template (Llama 3, Mistral ``[INST]``, ChatML) has
its last user turn extracted, so data-set prompts are recognised.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from aiohttp import web

from tiergate.envelope import ChatRequest, Message, TextPart
from tiergate.sim import eventstream
from tiergate.sim.aws import aws_error, signed
from tiergate.sim.flow import Call, Frame, Wire, serve
from tiergate.sim.http import BadRequest, obj, read_json
from tiergate.sim.openai import chat_completion, chunks, parse_chat, sse
from tiergate.sim.state import SimState

__all__ = ["SageMakerWire", "parse_tgi", "routes"]

_TYPES = {
    400: "ValidationError",
    424: "ModelError",
    429: "ThrottlingException",
    500: "InternalFailure",
    503: "ServiceUnavailable",
    530: "InternalDependencyException",
}
_TGI_FINISH = {"length": "length", "stop_sequence": "stop_sequence"}
_TEMPLATES = (
    re.compile(r"<\|start_header_id\|>user<\|end_header_id\|>\s*(.*?)<\|eot_id\|>", re.S),
    re.compile(r"\[INST\]\s*(.*?)\s*\[/INST\]", re.S),
    re.compile(r"<\|im_start\|>user\s*(.*?)<\|im_end\|>", re.S),
)


def _last_user_turn(inputs: str) -> str:
    for pattern in _TEMPLATES:
        found = pattern.findall(inputs)
        if found:
            return str(found[-1]).strip()
    return inputs


def parse_tgi(model: str, body: Any, stream: bool) -> ChatRequest:
    body = obj(body, "body")
    inputs = body.get("inputs")
    if not isinstance(inputs, str):
        raise BadRequest("inputs: a string is required")
    params = obj(body.get("parameters") or {}, "parameters")
    stop = params.get("stop") or []
    return ChatRequest(
        model=model,
        messages=[Message("user", [TextPart(_last_user_turn(inputs))])],
        max_tokens=int(params["max_new_tokens"]) if params.get("max_new_tokens") else None,
        temperature=params.get("temperature"),
        top_p=params.get("top_p"),
        stop=[stop] if isinstance(stop, str) else [str(s) for s in stop],
        stream=stream,
    )


def _split(data: bytes) -> bytes:
    """Container bytes as two PayloadPart events cut mid-line, as real endpoints do."""
    cut = max(1, len(data) // 3)
    parts = [data[:cut], data[cut:]] if len(data) > 8 else [data]
    return b"".join(eventstream.event("PayloadPart", p, "application/octet-stream") for p in parts)


class SageMakerWire(Wire):
    name = "sagemaker"
    stream_content_type = "application/vnd.amazon.eventstream"

    def __init__(self, payload_format: str = "openai_messages", details: bool = False) -> None:
        self.payload_format = payload_format
        self.details = details

    def error(
        self,
        status: int,
        message: str,
        *,
        retry_after: float | None = None,
        error_type: str | None = None,
    ) -> web.Response:
        kind = error_type or _TYPES.get(status, "ModelError")
        if kind == "ModelError":
            original = status if status != 424 else 500
            extra: dict[str, object] = {
                "OriginalStatusCode": original,
                "OriginalMessage": orjson.dumps({"error": message, "code": original}).decode(),
                "LogStreamArn": "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/sim",
                "ErrorCode": "CLIENT_ERROR_FROM_MODEL",
            }
            msg = f'Received server error ({original}) from primary with message "{message}".'
            return aws_error(
                424, kind, msg, retry_after=retry_after, message_key="Message", extra=extra
            )
        return aws_error(status, kind, message, retry_after=retry_after, message_key="Message")

    def not_found(self, model: str) -> web.Response:
        return self.error(400, f"Endpoint {model} of account 123456789012 not found.")

    def headers(self, call: Call) -> dict[str, str]:
        h = {"x-Amzn-Invoked-Production-Variant": "AllTraffic", "x-amzn-RequestId": call.id}
        if call.req.stream:
            h["X-Amzn-SageMaker-Content-Type"] = "text/event-stream"
        return h

    def unary(self, call: Call) -> tuple[bytes, str]:
        if self.payload_format == "openai_messages":
            return orjson.dumps(chat_completion(call)), "application/json"
        a = call.answer
        out: dict[str, Any] = {"generated_text": a.text}
        if self.details:
            out["details"] = {
                "finish_reason": _TGI_FINISH.get(a.finish, "eos_token"),
                "generated_tokens": a.output_tokens,
                "seed": None,
            }
        return orjson.dumps([out]), "application/json"

    def frames(self, call: Call) -> list[Frame]:
        if self.payload_format == "openai_messages":
            out = [Frame(_split(sse(orjson.dumps(c))), n, t) for c, n, t in chunks(call)]
            out.append(Frame(_split(b"data: [DONE]\n\n"), 0, True))
            return out
        a = call.answer
        toks = a.text_tokens or [""]
        frames = []
        for i, tok in enumerate(toks):
            last = i == len(toks) - 1
            event: dict[str, Any] = {
                "index": i,
                "token": {"id": 1000 + i, "text": tok, "logprob": -0.25, "special": False},
                "generated_text": a.text if last else None,
                "details": (
                    {
                        "finish_reason": _TGI_FINISH.get(a.finish, "eos_token"),
                        "generated_tokens": a.output_tokens,
                        "seed": None,
                    }
                    if last
                    else None
                ),
            }
            frames.append(
                Frame(_split(b"data:" + orjson.dumps(event) + b"\n\n"), 1 if tok else 0, last)
            )
        return frames

    def stream_error(self, call: Call, status: int, message: str, error_type: str | None) -> bytes:
        if error_type == "InternalStreamFailure":
            return eventstream.exception(error_type, orjson.dumps({"Message": message}))
        payload = {"Message": message, "ErrorCode": f"ModelStreamError{status}"}
        return eventstream.exception(error_type or "ModelStreamError", orjson.dumps(payload))

    def malformed(self, call: Call) -> bytes:
        return eventstream.event(
            "PayloadPart", b'data: {"token": {"text": "\n\n', "application/octet-stream"
        )


def routes(state: SimState) -> list[web.RouteDef]:
    async def invoke(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        stream = request.path.endswith("/invocations-response-stream")
        spec = state.models.get(name)
        fmt = spec.payload_format if spec is not None else "openai_messages"
        if not signed(request):
            return aws_error(
                403,
                "MissingAuthenticationTokenException",
                "Missing Authentication Token",
                message_key="Message",
            )
        try:
            body = await read_json(request)
            if fmt == "tgi":
                params = obj(body, "body").get("parameters") or {}
                wire = SageMakerWire(
                    fmt, details=bool(isinstance(params, dict) and params.get("details"))
                )
                req = parse_tgi(name, body, stream)
            else:
                wire = SageMakerWire(fmt)
                req = parse_chat({"model": name, **obj(body, "body")})
                req.model = name
                req.stream = stream
        except BadRequest as exc:
            return SageMakerWire(fmt).error(400, exc.message)
        return await serve(request, state, wire, name, req)

    return [
        web.post("/endpoints/{name}/invocations", invoke),
        web.post("/endpoints/{name}/invocations-response-stream", invoke),
    ]
