"""What the AWS adapters (Bedrock, SageMaker) share: one aiobotocore client per provider
and the mapping of botocore failures to error classes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.eventstream import ParserError as EventStreamParserError
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from tiergate.config import ProviderConfig
from tiergate.errors import ErrorClass, ProviderError
from tiergate.providers._http import transport_error
from tiergate.providers.base import AdapterBase, StreamEvent
from tiergate.providers.normalise import (
    classify_error_type,
    classify_http_error,
    cut_stream,
    first_event,
    malformed,
    parse_retry_after,
    scrub,
)

__all__ = ["AWS_ERRORS", "AwsAdapter", "aws_error"]

# What the AWS adapters catch and hand to aws_error().
AWS_ERRORS = (
    ClientError,
    BotoCoreError,
    EventStreamParserError,
    aiohttp.ClientError,
    OSError,
    TimeoutError,
)


def aws_error(exc: BaseException, provider: str, *, started: bool = False) -> ProviderError:
    """A ProviderError for a botocore/aiobotocore failure.

    ClientError codes map through the normaliser's table (throttling → rate_limited,
    not-ready/unavailable → overloaded, model timeout → timeout, internal/stream
    errors → server_error, access denied → auth, validation → context_length by wording
    else bad_request). SageMaker's ModelError is classified by the container's own
    ``OriginalStatusCode``.
    """
    if isinstance(exc, ClientError):
        resp: dict[str, Any] = exc.response or {}
        err = resp.get("Error") or {}
        code = str(err.get("Code") or "")
        message = str(err.get("Message") or "")
        meta = resp.get("ResponseMetadata") or {}
        status = meta.get("HTTPStatusCode")
        retry_after = parse_retry_after(meta.get("HTTPHeaders") or {})
        if code == "ModelError":
            original = resp.get("OriginalStatusCode")
            message = str(resp.get("OriginalMessage") or message)
            if isinstance(original, int):
                cls = classify_http_error(original, (), message)
                status = original
            else:
                cls = ErrorClass.SERVER_ERROR
        elif code == "ModelStreamError" and err.get("ErrorCode") == "ModelInvocationTimeExceeded":
            cls = ErrorClass.TIMEOUT
        else:
            found = classify_error_type((code,), message)
            if found is not None:
                cls = found
            elif isinstance(status, int) and status >= 400:
                cls = classify_http_error(status, (), message)
            else:
                cls = ErrorClass.SERVER_ERROR
        if cls is ErrorClass.AUTH:
            text = f"{code or 'error'}: authentication failed"
        else:
            text = f"{code or 'error'}: {scrub(message)}" if message else code or "error"
        return ProviderError(
            cls,
            text,
            status=status if isinstance(status, int) else None,
            retry_after_s=retry_after,
            provider=provider,
        )
    if isinstance(exc, NoCredentialsError):
        return ProviderError(ErrorClass.AUTH, "no AWS credentials", provider=provider)
    if isinstance(exc, (ReadTimeoutError, TimeoutError)):
        return ProviderError(ErrorClass.TIMEOUT, "timed out", provider=provider)
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError)):
        return ProviderError(ErrorClass.CONNECT, "cannot connect", provider=provider)
    if isinstance(exc, (ResponseStreamingError, ConnectionClosedError)):
        return (
            cut_stream(provider)
            if started
            else ProviderError(ErrorClass.CONNECT, "connection failed", provider=provider)
        )
    if isinstance(exc, EventStreamParserError):
        return malformed("event stream frame", provider)
    if isinstance(exc, BotoCoreError):
        return ProviderError(
            ErrorClass.SERVER_ERROR, f"AWS client error ({type(exc).__name__})", provider=provider
        )
    return transport_error(exc, provider, started=started)


class AwsAdapter(AdapterBase):
    """One aiobotocore client for one provider, opened in :meth:`open`."""

    __slots__ = ("_client", "_context", "config", "name")

    service = ""

    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        self.config = config
        self._context: Any = None
        self._client: Any = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, region={self.config.region!r})"

    async def open(self) -> None:
        if self._client is not None:
            return
        cfg = self.config
        kwargs: dict[str, Any] = {
            "region_name": cfg.region,
            "endpoint_url": cfg.base_url or None,
            "config": AioConfig(
                max_pool_connections=cfg.pool_size,
                retries={"max_attempts": 0, "mode": "standard"},
                connect_timeout=min(cfg.timeout_s, 10.0),
                read_timeout=cfg.timeout_s,
                tcp_keepalive=True,
            ),
        }
        if cfg.aws_access_key_id is not None and cfg.aws_secret_access_key is not None:
            kwargs["aws_access_key_id"] = cfg.aws_access_key_id.read()
            kwargs["aws_secret_access_key"] = cfg.aws_secret_access_key.read()
        context = AioSession().create_client(self.service, **kwargs)
        self._client = await context.__aenter__()
        self._context = context

    async def close(self) -> None:
        context, self._context, self._client = self._context, None, None
        if context is not None:
            await context.__aexit__(None, None, None)

    def _require_client(self) -> Any:
        if self._client is None:
            raise ProviderError(ErrorClass.CONNECT, "adapter is not open", provider=self.name)
        return self._client

    async def _call(self, method: str, params: dict[str, Any], timeout_s: float) -> Any:
        """One non-streaming API call bounded by ``timeout_s``; botocore errors mapped."""
        client = self._require_client()
        try:
            async with asyncio.timeout(timeout_s):
                return await getattr(client, method)(**params)
        except AWS_ERRORS as exc:
            raise aws_error(exc, self.name) from None

    async def _stream(
        self,
        method: str,
        params: dict[str, Any],
        key: str,
        timeout_s: float,
        translate: Callable[[Any], AsyncGenerator[StreamEvent, None]],
    ) -> AsyncIterator[StreamEvent]:
        """Call a streaming operation; ``translate`` turns ``response[key]`` (the event
        stream) into canonical events. ``timeout_s`` bounds the time to the first one."""
        client = self._require_client()
        deadline = asyncio.get_running_loop().time() + timeout_s
        stream: Any = None
        events: AsyncGenerator[StreamEvent, None] | None = None
        try:
            async with asyncio.timeout_at(deadline):
                response = await getattr(client, method)(**params)
                stream = response[key]
                events = translate(stream)
                first = await first_event(events, self.name)
            yield first
            async for event in events:
                yield event
        except ProviderError as exc:
            exc.provider = exc.provider or self.name
            raise
        except AWS_ERRORS as exc:
            raise aws_error(exc, self.name, started=stream is not None) from None
        finally:
            if events is not None:
                await events.aclose()
            if stream is not None:
                stream.close()
