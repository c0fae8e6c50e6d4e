"""Amazon SageMaker real-time endpoints: InvokeEndpoint and
InvokeEndpointWithResponseStream through aiobotocore. ``EndpointName`` is the
deployment's ``model``.

Two payload formats, chosen per deployment (``payload_format``):

- ``openai_messages``: the container speaks OpenAI chat completions (vLLM, LMI, TGI's
  Messages API). The body is the OpenAI request without ``model`` (the endpoint decides
  the model) and with ``max_tokens``; streamed answers are SSE lines inside PayloadPart
  bytes, which split lines anywhere.
- ``tgi``: Text Generation Inference's native ``{"inputs", "parameters"}``. The prompt
  is rendered in the chat template the endpoint name suggests (Llama 3, Mistral,
  ChatML), else as a plain ``System:``/``User:``/``Assistant:`` transcript. JSON answers use
  TGI's ``grammar``. Tools cannot be expressed and are refused (bad_request). TGI
  reports no prompt token count unless asked for the whole prefill, so
  ``usage.input_tokens`` stays 0 (the caller estimates it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson

from tiergate.config import DeploymentConfig
from tiergate.envelope import ChatRequest
from tiergate.errors import ErrorClass, ProviderError
from tiergate.providers._aws import AWS_ERRORS, AwsAdapter, aws_error
from tiergate.providers._http import StreamParser, translate_sse
from tiergate.providers.base import Completion, StreamEnd, StreamEvent, TextDelta, Usage
from tiergate.providers.normalise import (
    SSEEvent,
    check_json_completion,
    cut_stream,
    finish_reason,
    malformed,
    reads_answer,
    scrub,
)
from tiergate.providers.openai import (
    OpenAIStreamParser,
    build_openai_request,
    parse_openai_response,
)

__all__ = [
    "SageMakerAdapter",
    "TGIStreamParser",
    "build_sagemaker_body",
    "build_tgi_request",
    "parse_sagemaker_response",
    "parse_tgi_response",
    "render_prompt",
]

_ROLE_TAGS = {"system": "System", "user": "User", "assistant": "Assistant", "tool": "Tool"}


def _llama3(request: ChatRequest) -> str:
    out = ["<|begin_of_text|>"]
    for m in request.messages:
        role = "ipython" if m.role == "tool" else m.role
        out.append(f"<|start_header_id|>{role}<|end_header_id|>\n\n{m.text}<|eot_id|>")
    out.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
    return "".join(out)


def _mistral(request: ChatRequest) -> str:
    system = request.system_text
    out = ["<s>"]
    for m in request.messages:
        if m.role == "system":
            continue
        if m.role == "assistant":
            out.append(f" {m.text}</s>")
        else:
            text = m.text if m.role == "user" else f"Tool result: {m.text}"
            if system:
                text, system = f"{system}\n\n{text}", ""
            out.append(f"[INST] {text} [/INST]")
    return "".join(out)


def _chatml(request: ChatRequest) -> str:
    out = [f"<|im_start|>{m.role}\n{m.text}<|im_end|>\n" for m in request.messages]
    out.append("<|im_start|>assistant\n")
    return "".join(out)


def _plain(request: ChatRequest) -> str:
    lines = [f"{_ROLE_TAGS[m.role]}: {m.text}" for m in request.messages]
    lines.append("Assistant:")
    return "\n\n".join(lines)


def render_prompt(request: ChatRequest, model: str = "") -> str:
    """The conversation in the chat template the endpoint name suggests (Llama 3,
    Mistral ``[INST]``, ChatML for Qwen), else a plain role-tagged transcript; it ends
    where the assistant speaks next."""
    name = model.lower()
    if "llama-3" in name or "llama3" in name:
        return _llama3(request)
    if "mistral" in name or "mixtral" in name:
        return _mistral(request)
    if "qwen" in name or "chatml" in name:
        return _chatml(request)
    return _plain(request)


def build_tgi_request(request: ChatRequest, deployment: DeploymentConfig) -> dict[str, Any]:
    if request.tools and request.tool_choice != "none":
        raise ProviderError(ErrorClass.BAD_REQUEST, "the tgi payload format cannot carry tools")
    params: dict[str, Any] = {
        "max_new_tokens": request.max_tokens or deployment.max_output_tokens,
        "details": True,
        "return_full_text": False,
    }
    if request.temperature is not None:
        if request.temperature > 0:
            params["temperature"] = request.temperature
            params["do_sample"] = True
        else:
            params["do_sample"] = False  # TGI wants temperature > 0: greedy instead
    if request.top_p is not None and 0 < request.top_p < 1:
        params["top_p"] = request.top_p
    if request.stop:
        params["stop"] = request.stop
    if request.seed is not None:
        params["seed"] = request.seed
    rf = request.response_format
    if rf.kind == "json_schema" and rf.schema:
        params["grammar"] = {"type": "json", "value": rf.schema}
    elif rf.kind != "text":
        params["grammar"] = {"type": "json", "value": {"type": "object"}}
    body: dict[str, Any] = {
        "inputs": render_prompt(request, deployment.model),
        "parameters": params,
    }
    if request.stream:
        body["stream"] = True
    return body


def build_sagemaker_body(request: ChatRequest, deployment: DeploymentConfig) -> dict[str, Any]:
    """The endpoint payload for ``deployment.payload_format``."""
    if deployment.payload_format == "tgi":
        return build_tgi_request(request, deployment)
    body = build_openai_request(request, deployment, compatible=True)
    del body["model"]
    return body


@reads_answer("response")
def parse_tgi_response(doc: Any, *, model: str = "", provider: str = "") -> Completion:
    item = doc[0] if isinstance(doc, list) and doc else doc
    if not isinstance(item, dict) or not isinstance(item.get("generated_text"), str):
        raise malformed("TGI response (no generated_text)", provider)
    details = item.get("details") or {}
    prefill = details.get("prefill")
    return Completion(
        text=item["generated_text"],
        finish_reason=finish_reason(details.get("finish_reason")),
        usage=Usage(
            input_tokens=len(prefill) if isinstance(prefill, list) else 0,
            output_tokens=details.get("generated_tokens") or 0,
        ),
        model=model,
    )


@reads_answer("response")
def parse_sagemaker_response(
    raw: bytes, deployment: DeploymentConfig, *, provider: str = ""
) -> Completion:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise malformed("endpoint response (not JSON)", provider) from None
    if deployment.payload_format == "tgi":
        return parse_tgi_response(doc, model=deployment.model, provider=provider)
    completion = parse_openai_response(doc, provider=provider)
    completion.model = completion.model or deployment.model
    return completion


class TGIStreamParser:
    """TGI token stream: ``data:{"token": {...}, "generated_text": null, "details": null}``;
    the event whose ``generated_text`` is set is terminal."""

    __slots__ = ("_model", "_tokens", "done", "provider")

    def __init__(self, provider: str = "", model: str = "") -> None:
        self.provider = provider
        self.done = False
        self._model = model
        self._tokens = 0

    def feed(self, event: SSEEvent) -> list[StreamEvent]:
        try:
            doc = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            raise malformed("stream chunk (not JSON)", self.provider) from None
        if not isinstance(doc, dict):
            raise malformed("stream chunk (not an object)", self.provider)
        if "error" in doc:
            message = str(doc.get("error") or "")
            raise ProviderError(
                ErrorClass.SERVER_ERROR,
                f"{doc.get('error_type') or 'error'} in stream: {scrub(message)}",
                provider=self.provider,
            )
        out: list[StreamEvent] = []
        token = doc.get("token") or {}
        self._tokens += 1
        text = token.get("text")
        if text and not token.get("special"):
            out.append(TextDelta(text))
        if doc.get("generated_text") is not None:
            details = doc.get("details") or {}
            self.done = True
            out.append(
                StreamEnd(
                    finish_reason=finish_reason(details.get("finish_reason")),
                    usage=Usage(output_tokens=details.get("generated_tokens") or self._tokens),
                    model=self._model,
                )
            )
        return out

    def finish(self) -> list[StreamEvent]:
        raise cut_stream(self.provider)


class SageMakerAdapter(AwsAdapter):
    """``sagemaker-runtime`` InvokeEndpoint / InvokeEndpointWithResponseStream."""

    __slots__ = ()

    service = "sagemaker-runtime"

    async def complete(
        self, request: ChatRequest, deployment: DeploymentConfig, timeout_s: float
    ) -> Completion:
        body = build_sagemaker_body(request, deployment)
        body.pop("stream", None)
        body.pop("stream_options", None)
        client = self._require_client()
        try:
            async with asyncio.timeout(timeout_s):
                resp = await client.invoke_endpoint(
                    EndpointName=deployment.model,
                    Body=orjson.dumps(body),
                    ContentType="application/json",
                    Accept="application/json",
                )
                async with resp["Body"] as stream:
                    raw = await stream.read()
        except AWS_ERRORS as exc:
            raise aws_error(exc, self.name) from None
        completion = parse_sagemaker_response(raw, deployment, provider=self.name)
        check_json_completion(completion, request.response_format, self.name)
        return completion

    def stream(
        self, request: ChatRequest, deployment: DeploymentConfig, timeout_s: float
    ) -> AsyncIterator[StreamEvent]:
        body = build_sagemaker_body(request, deployment)
        body["stream"] = True
        parser: StreamParser
        if deployment.payload_format == "tgi":
            parser = TGIStreamParser(self.name, deployment.model)
        else:
            body["stream_options"] = {"include_usage": True}
            parser = OpenAIStreamParser(self.name, deployment.model)
        params = {
            "EndpointName": deployment.model,
            "Body": orjson.dumps(body),
            "ContentType": "application/json",
            "Accept": "text/event-stream",
        }

        async def payload_bytes(stream: Any) -> AsyncGenerator[bytes, None]:
            async for event in stream:
                part = event.get("PayloadPart")
                if part is not None:
                    yield part.get("Bytes") or b""

        def translate(stream: Any) -> AsyncGenerator[StreamEvent, None]:
            return translate_sse(payload_bytes(stream), parser)

        return self._stream(
            "invoke_endpoint_with_response_stream", params, "Body", timeout_s, translate
        )
