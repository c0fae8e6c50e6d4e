"""What the HTTP adapters share: one pooled keep-alive session, JSON POST, SSE streams,
and the mapping of transport failures to error classes."""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import Any, Protocol, TypeVar

import aiohttp
import orjson
from aiohttp.hdrs import CONTENT_ENCODING

from tiergate.config import ProviderConfig
from tiergate.deadline import Deadline
from tiergate.errors import ErrorClass, ProviderError
from tiergate.providers.base import AdapterBase, StreamEnd, StreamEvent
from tiergate.providers.normalise import (
    MAX_ANSWER_BYTES,
    SHAPE_ERRORS,
    SSEEvent,
    SSEParser,
    cut_stream,
    malformed,
    provider_error_from_body,
)

__all__ = [
    "FOLLOW_REDIRECTS",
    "KEEPALIVE_S",
    "MAX_ERROR_BODY",
    "TRANSPORT_ERRORS",
    "HttpAdapter",
    "StreamParser",
    "client_timeout",
    "json_body",
    "release",
    "translate_sse",
    "transport_error",
]

T = TypeVar("T")

# Idle keep-alive connections are kept this long (providers close theirs after ~60-90 s).
KEEPALIVE_S = 30.0
# An error body is read up to this many bytes.
MAX_ERROR_BODY = 64 * 1024
# Provider calls never follow a redirect: following one
# would send the key to wherever it points (aiohttp drops Authorization across origins,
# not x-api-key or x-goog-api-key), and an API that moved is this deployment's
# misconfiguration, so a 3xx is a failed attempt (server_error: a sibling may serve).
FOLLOW_REDIRECTS = False


class StreamParser(Protocol):
    """Incremental translation of one provider's stream into canonical events."""

    done: bool

    def feed(self, event: SSEEvent) -> list[StreamEvent]:
        """Events completed by this SSE event; sets ``done`` at the terminal event."""
        ...

    def finish(self) -> list[StreamEvent]:
        """The body ended: the StreamEnd if the stream was complete, else raise cut."""
        ...


def json_body(raw: bytes, provider: str) -> Any:
    """A response body's JSON; a body that is not JSON is a malformed answer."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise malformed("response body (not JSON)", provider) from None


def transport_error(exc: BaseException, provider: str, *, started: bool) -> ProviderError:
    """A ProviderError for an exception raised by the transport (aiohttp, asyncio).

    ``started``: the response had begun (headers received), so a dropped connection is a
    cut stream rather than a failure to connect.
    """
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ProviderError(ErrorClass.CONNECT, "connect timed out", provider=provider)
    if isinstance(exc, TimeoutError):
        return ProviderError(ErrorClass.TIMEOUT, "timed out", provider=provider)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ProviderError(
            ErrorClass.CONNECT, f"cannot connect: {exc.os_error.strerror or exc}", provider=provider
        )
    if isinstance(exc, (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError)) and started:
        return cut_stream(provider)
    if isinstance(exc, (aiohttp.ClientConnectionError, OSError)):
        what = type(exc).__name__
        if started:
            return ProviderError(
                ErrorClass.SERVER_ERROR, f"connection lost ({what})", provider=provider
            )
        return ProviderError(ErrorClass.CONNECT, f"connection failed ({what})", provider=provider)
    return ProviderError(
        ErrorClass.SERVER_ERROR, f"transport error ({type(exc).__name__})", provider=provider
    )


TRANSPORT_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)


# Building an aiohttp.ClientTimeout (an attrs class) costs about as much as routing the
# request, so they are interned per whole millisecond, rounded down (never later than
# the deadline; but at least 1 ms, as aiohttp reads 0 as no timeout at all). An attempt's time mostly equals its provider's fixed ceiling, so few
# distinct values occur; the table is emptied when it grows past a bound.
_TIMEOUTS: dict[tuple[int, bool], aiohttp.ClientTimeout] = {}
_MAX_TIMEOUTS = 4096


async def read_bounded(content: aiohttp.StreamReader, length: int | None, provider: str) -> bytes:
    """A body of unknown, large or compressed size (``length``: its Content-Length),
    refused (malformed) once it passes MAX_ANSWER_BYTES: counted as it arrives,
    decompressed, never held whole first."""
    if length is not None and length > MAX_ANSWER_BYTES:
        raise malformed(f"answer (over {MAX_ANSWER_BYTES} bytes)", provider)
    chunks: list[bytes] = []
    size = 0
    async for chunk in content.iter_any():
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise malformed(f"answer (over {MAX_ANSWER_BYTES} bytes)", provider)
        chunks.append(chunk)
    return b"".join(chunks)


def client_timeout(seconds: float, *, connect_only: bool = False) -> aiohttp.ClientTimeout:
    """``ClientTimeout(total=seconds)``, or with ``connect_only`` one bounding only the
    socket connect, from the interned table."""
    key = (int(seconds * 1000), connect_only)
    found = _TIMEOUTS.get(key)
    if found is None:
        if len(_TIMEOUTS) >= _MAX_TIMEOUTS:
            _TIMEOUTS.clear()
        ms = max(key[0], 1) / 1000
        found = _TIMEOUTS[key] = (
            aiohttp.ClientTimeout(total=None, sock_connect=ms)
            if connect_only
            else aiohttp.ClientTimeout(total=ms)
        )
    return found


# How long the rest of a body whose stream has ended may take to arrive (its last chunk)
# before the connection is closed rather than pooled.
BODY_END_GRACE_S = 1.0


def release(resp: aiohttp.ClientResponse, *, ended: bool) -> None:
    """Let a streamed response's connection go: back to the pool once the body was read
    to its end, else closed.

    A provider that flushes its stream's last event and the body's end (the chunked
    encoding's last chunk) in two writes ends the stream (``ended``) before the body:
    releasing the response then would close the connection, and every stream would
    open a new one (TCP and TLS). aiohttp pools the connection itself when the body's
    end arrives; a timer closes it if that end is late.
    """
    if resp.closed:
        return  # the body's end came: aiohttp pooled the connection then
    if ended:
        asyncio.get_running_loop().call_later(BODY_END_GRACE_S, resp.release)
    else:
        resp.release()


class HttpAdapter(AdapterBase):
    """Base of the adapters that speak JSON over HTTP (OpenAI, Anthropic, Gemini).

    Subclasses set the request-independent headers in :meth:`_auth_headers` and
    implement :meth:`complete` / :meth:`stream` through :meth:`_post_json` and
    :meth:`_stream`.
    """

    __slots__ = ("_secrets", "_session", "config", "name")

    default_base_url = ""

    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        self.config = config
        self._session: aiohttp.ClientSession | None = None
        self._secrets: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, kind={self.config.kind!r})"

    @property
    def base_url(self) -> str:
        return (self.config.base_url or self.default_base_url).rstrip("/")

    @abstractmethod
    def _auth_headers(self, key: str | None) -> dict[str, str]:
        """Implemented by each provider's adapter."""

    async def open(self) -> None:
        if self._session is not None:
            return
        key = self.config.api_key.read() if self.config.api_key is not None else None
        self._secrets = (key,) if key else ()
        headers = {"content-type": "application/json", **self._auth_headers(key)}
        headers.update(self.config.headers)
        connector = aiohttp.TCPConnector(
            # One host per provider: a per-host limit would repeat this one, at a cost
            # on every call (aiohttp keeps a set of connections per host for it).
            limit=self.config.pool_size,
            keepalive_timeout=KEEPALIVE_S,
            ttl_dns_cache=300,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=True,
            raise_for_status=False,
            # No cookies kept: one session calls for every tenant, and what a provider
            # sets during one caller's call must not go back with another's.
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _require_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise ProviderError(ErrorClass.CONNECT, "adapter is not open", provider=self.name)
        return self._session

    def _error(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProviderError:
        return provider_error_from_body(
            status, body, headers, provider=self.name, secrets=self._secrets
        )

    async def _post_json(
        self,
        url: str,
        body: dict[str, Any],
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """POST ``body`` and return the parsed JSON answer, or raise ProviderError."""
        return json_body(await self._post_raw(url, body, timeout_s, headers), self.name)

    async def _post_raw(
        self,
        url: str,
        body: dict[str, Any] | bytes,
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
    ) -> bytes:
        """POST ``body`` (a dict, or its JSON already written) and return the successful
        answer's bytes, or raise ProviderError."""
        # _require_session inline: on every non-streamed call, where a Python call
        # costs about as much as its work.
        session = self._session
        if session is None:
            session = self._require_session()  # raises
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        # The whole call under a Deadline, as a stream's first item is (aiohttp's total
        # timeout is a timer of its own per call, twice the instructions); aiohttp times
        # only the connect, so that a connect that hangs is told apart.
        connect = client_timeout(timeout_s, connect_only=True)
        guard = Deadline(timeout_s)
        started = False
        try:
            async with session.post(
                url, data=data, headers=headers, timeout=connect, allow_redirects=FOLLOW_REDIRECTS
            ) as resp:
                started = True
                if resp.status >= 300:  # a redirect included: see FOLLOW_REDIRECTS
                    raw = await resp.content.read(MAX_ERROR_BODY)
                    raise self._error(resp.status, raw, resp.headers)
                length = resp.content_length
                if (
                    length is not None
                    and length <= MAX_ANSWER_BYTES
                    and CONTENT_ENCODING not in resp.headers
                ):
                    return await resp.read()  # the usual answer: its size known, bounded
                return await read_bounded(resp.content, length, self.name)
        except asyncio.CancelledError:
            try:
                guard.check()  # TimeoutError when the deadline passed
            except TimeoutError as exc:
                raise transport_error(exc, self.name, started=started) from None
            raise
        except TRANSPORT_ERRORS as exc:
            raise transport_error(exc, self.name, started=started) from None
        finally:
            guard.cancel()

    def _stream(
        self,
        url: str,
        body: dict[str, Any] | bytes,
        timeout_s: float,
        parser: StreamParser,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """POST ``body`` and translate the SSE answer with ``parser``.

        ``timeout_s`` bounds everything up to the first canonical event; later gaps
        are the caller's to bound.
        """
        return self._open_stream(
            url, body, timeout_s, lambda chunks: translate_sse(chunks, parser), headers
        )

    async def _open_stream(
        self,
        url: str,
        body: dict[str, Any] | bytes,
        timeout_s: float,
        translate: Callable[[AsyncIterator[bytes]], AsyncGenerator[T, None]],
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[T]:
        """POST ``body`` and yield what ``translate`` makes of the body's bytes.

        ``timeout_s`` bounds everything up to the first item; later gaps are the
        caller's to bound.
        """
        session = self._require_session()
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        resp: aiohttp.ClientResponse | None = None
        events: AsyncGenerator[T, None] | None = None
        last: T | None = None
        try:
            guard = Deadline(timeout_s)
            try:
                resp = await session.post(
                    url,
                    data=data,
                    headers=headers,
                    timeout=client_timeout(timeout_s, connect_only=True),
                    allow_redirects=FOLLOW_REDIRECTS,
                )
                if resp.status >= 300:  # a redirect included: see FOLLOW_REDIRECTS
                    raw = await resp.content.read(MAX_ERROR_BODY)
                    raise self._error(resp.status, raw, resp.headers)
                events = translate(resp.content.iter_any())
                # normalise.first_event, inline: a coroutine fewer per stream.
                first = await anext(events)
            except StopAsyncIteration:
                raise cut_stream(self.name) from None
            except asyncio.CancelledError:
                guard.check()  # TimeoutError when the deadline cancelled the wait
                raise
            finally:
                guard.cancel()
            last = first
            yield first
            async for event in events:
                last = event
                yield event
        except ProviderError as exc:
            exc.provider = exc.provider or self.name
            raise
        except TRANSPORT_ERRORS as exc:
            raise transport_error(exc, self.name, started=resp is not None) from None
        finally:
            if events is not None:
                await events.aclose()
            if resp is not None:
                release(resp, ended=isinstance(last, StreamEnd))


async def translate_sse(
    chunks: AsyncIterator[bytes], parser: StreamParser
) -> AsyncGenerator[StreamEvent, None]:
    """Bytes of an SSE body, split anywhere → canonical events through ``parser``.

    Stops reading at the parser's terminal event; a body that ends before it raises
    the cut-stream error.
    """
    sse = SSEParser()
    try:
        async for chunk in chunks:
            for event in sse.feed(chunk):
                for out in _feed(parser, event):
                    yield out
                if parser.done:
                    return
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    for event in sse.finish():
        for out in _feed(parser, event):
            yield out
        if parser.done:
            return
    for out in parser.finish():
        yield out
    if not parser.done:
        raise cut_stream()


def _feed(parser: StreamParser, event: SSEEvent) -> list[StreamEvent]:
    """``parser.feed(event)``; an event of a shape it cannot read is a malformed one."""
    try:
        return parser.feed(event)
    except SHAPE_ERRORS:
        raise malformed("stream event") from None
