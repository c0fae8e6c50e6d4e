"""An OpenAI chat-completions stream relayed to the OpenAI surface through the core.

When both the provider and the caller speak OpenAI chat completions, the canonical
deltas between them are only a waypoint: :class:`tiergate._core.OpenAIRelay` parses the
provider's SSE body and renders the caller's frames in one pass, with the results of
``OpenAIStreamParser`` and ``OpenAIStreamRenderer`` (about a fifth of the instructions
of building, yielding and rendering a Python object per delta). The stream yields the
relay itself whenever a network chunk completed at least one delta; the server renders
what it holds. Failures are the ProviderErrors the parser would raise, after the deltas
parsed before them.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

import orjson

from tiergate import _core
from tiergate.errors import ProviderError
from tiergate.providers.normalise import cut_stream, in_stream_error, malformed

__all__ = ["relay_error", "relay_sse"]


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
    return cut_stream(provider)


async def relay_sse(
    chunks: AsyncIterator[bytes], relay: _core.OpenAIRelay, provider: str
) -> AsyncGenerator[_core.OpenAIRelay, None]:
    """The body's bytes into ``relay``; yields it whenever deltas wait to be rendered.

    Stops reading at the end; a body that ends before it raises the cut-stream error.
    """
    try:
        async for chunk in chunks:
            if relay.feed(chunk):
                yield relay
            if relay.stopped:
                break
        else:
            if relay.finish():
                yield relay
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    failure = relay.failure
    if failure is not None:
        raise relay_error(failure, provider)
