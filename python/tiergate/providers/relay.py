"""An OpenAI chat-completions stream relayed to either surface through the core.

When the provider speaks OpenAI chat completions, the canonical deltas between it and
the caller are only a waypoint: :class:`tiergate._core.OpenAIRelay` parses the
provider's SSE body and renders the caller's frames in one pass, with the results of
``OpenAIStreamParser`` and ``OpenAIStreamRenderer`` (the OpenAI surface) or
``AnthropicStreamRenderer`` (the Anthropic surface): about a fifth of the instructions
of building, yielding and rendering a Python object per delta. The stream yields the
relay itself whenever a network chunk completed at least one delta; the server renders
what it holds. Failures are the ProviderErrors the parser would raise, after the deltas
parsed before them.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import orjson

from tiergate import _core
from tiergate.deadline import Deadline
from tiergate.errors import ProviderError
from tiergate.providers._http import (
    FOLLOW_REDIRECTS,
    MAX_ERROR_BODY,
    TRANSPORT_ERRORS,
    client_timeout,
    release,
    transport_error,
)
from tiergate.providers.normalise import cut_stream, in_stream_error, malformed

if TYPE_CHECKING:
    import aiohttp

    from tiergate.providers._http import HttpAdapter

__all__ = ["RelayStream", "relay_error"]


def relay_error(failure: tuple[int, str], provider: str) -> ProviderError:
    """The ProviderError of a relay's ``failure``, as the Python parser raises it."""
    code, detail = failure
    if code == _core.RELAY_FAIL_ERROR_OBJECT:
        return in_stream_error(orjson.loads(detail)["error"], ("code", "type"), provider)
    if code == _core.RELAY_FAIL_NOT_JSON:
        return malformed("stream chunk (not JSON)", provider)
    if code == _core.RELAY_FAIL_NOT_OBJECT:
        return malformed("stream chunk (not an object)", provider)
    if code == _core.RELAY_FAIL_SHAPE:
        return malformed(f"stream chunk (`{detail}` of an unexpected type)", provider)
    if code == _core.RELAY_FAIL_TOO_LARGE:
        return malformed(f"stream event (over {_core.RELAY_MAX_EVENT_BYTES} bytes)", provider)
    return cut_stream(provider)


class RelayStream:
    """POST ``body`` and feed the answer's body to ``relay`` as it arrives; each item is
    the relay itself, holding the deltas parsed since the last item.

    ``timeout_s`` bounds everything up to the first item; later gaps are the caller's
    to bound. The body ending before the stream's end raises the cut-stream error.

    One object rather than async generators stacked on the body's iterator (the
    general ``_open_stream`` over ``translate``): a step is one coroutine, not three
    frames resumed in turn, and closing it is a call, not a chain of ``aclose``.
    """

    __slots__ = ("_adapter", "_body", "_content", "_relay", "_resp", "_timeout_s", "_url")

    def __init__(
        self,
        adapter: HttpAdapter,
        url: str,
        body: bytes,
        timeout_s: float,
        relay: _core.OpenAIRelay,
    ) -> None:
        self._adapter = adapter
        self._url = url
        self._body = body
        self._timeout_s = timeout_s
        self._relay = relay
        self._resp: aiohttp.ClientResponse | None = None
        self._content: aiohttp.StreamReader | None = None

    def __aiter__(self) -> RelayStream:
        return self

    async def __anext__(self) -> _core.OpenAIRelay:
        relay = self._relay
        content = self._content
        try:
            guard = Deadline(self._timeout_s) if content is None else None
            try:
                if content is None:
                    # The request, inline: a coroutine fewer on every resume of the wait.
                    adapter = self._adapter
                    resp = self._resp = await adapter._require_session().post(
                        self._url,
                        data=self._body,
                        timeout=client_timeout(self._timeout_s, connect_only=True),
                        allow_redirects=FOLLOW_REDIRECTS,
                    )
                    if resp.status >= 300:  # a redirect included: see FOLLOW_REDIRECTS
                        raw = await resp.content.read(MAX_ERROR_BODY)
                        raise adapter._error(resp.status, raw, resp.headers)
                    content = self._content = resp.content
                while not relay.stopped:
                    chunk = await content.readany()
                    if not chunk:
                        if relay.finish():
                            return relay
                        break
                    if relay.feed(chunk):
                        return relay
            except asyncio.CancelledError:
                if guard is not None:
                    guard.check()  # TimeoutError when the deadline cancelled the wait
                raise
            finally:
                if guard is not None:
                    guard.cancel()
            failure = relay.failure
            if failure is not None:
                raise relay_error(failure, self._adapter.name)
            raise StopAsyncIteration
        except ProviderError as exc:
            self.close()
            exc.provider = exc.provider or self._adapter.name
            raise
        except TRANSPORT_ERRORS as exc:
            started = self._resp is not None
            self.close()
            raise transport_error(exc, self._adapter.name, started=started) from None
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Let the connection go: back to the pool once the body was read to its end
        (when the stream's end came first, :func:`release` waits for the body's)."""
        resp, relay = self._resp, self._relay
        if resp is not None:
            self._resp = None  # once: the end and the caller's close both come here
            release(resp, ended=relay.stopped and relay.failure is None)

    async def aclose(self) -> None:
        self.close()
