"""What Bedrock and SageMaker share: SigV4 presence check and AWS JSON errors."""

from __future__ import annotations

from aiohttp import web

from tiergate.sim.http import json_response, seconds

__all__ = ["aws_error", "signed"]


def signed(request: web.Request) -> bool:
    """An ``Authorization: AWS4-HMAC-SHA256 …`` header is present (not verified)."""
    return request.headers.get("Authorization", "").startswith("AWS4-HMAC-SHA256 ")


def aws_error(
    status: int,
    error_type: str,
    message: str,
    *,
    retry_after: float | None = None,
    message_key: str = "message",
    extra: dict[str, object] | None = None,
) -> web.Response:
    headers = {
        "x-amzn-ErrorType": f"{error_type}:http://internal.amazon.com/coral/com.amazon.bedrock/",
        "x-amzn-RequestId": "00000000-0000-4000-8000-000000000000",
    }
    if retry_after is not None:
        headers["Retry-After"] = seconds(retry_after)
    return json_response({message_key: message, **(extra or {})}, status, headers)
