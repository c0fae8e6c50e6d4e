"""A caller that stops reading a stream is cut off after the client timeout, as one that
stalls while sending its request is: its provider stream is stopped and the request is
logged as the caller's doing, instead of both waiting on a full socket for ever."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from harness import REPO, Loop, logged_line, serve
from tiergate.config import load_config
from tiergate.server.main import RunningServer, start_server

# A delta of 64 KiB: the stream fills the socket buffers between the sidecar and a caller
# that reads nothing within a few hundred of them.
_DELTA = orjson.dumps(
    {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": "x" * 65536}, "finish_reason": None}],
    }
)


class Endless:
    """An OpenAI-compatible upstream whose streams never end (until their reader goes)."""

    def __init__(self) -> None:
        self.open_streams = 0
        self.ended = asyncio.Event()

    async def chat(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        self.open_streams += 1
        try:
            for _ in range(100_000):  # 6 GB: never reached in a test
                await resp.write(b"data: " + _DELTA + b"\n\n")
        except (ConnectionError, asyncio.CancelledError):
            pass  # the sidecar stopped reading: the stream is over
        finally:
            self.open_streams -= 1
            self.ended.set()
        return resp


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Endless, Path]]:
    background = Loop()
    upstream = Endless()
    runner, port = background.run(serve(upstream.chat))
    monkeypatch.setenv("UPSTREAM_URL", f"http://127.0.0.1:{port}/v1")
    config = load_config(REPO / "examples" / "overhead.yaml")
    log = tmp_path / "requests.jsonl"
    config = config.model_copy(
        update={
            "server": config.server.model_copy(update={"client_timeout_s": 1.0}),
            "telemetry": config.telemetry.model_copy(update={"log": str(log)}),
        }
    )
    server: RunningServer = background.run(start_server(config, port=0, admin_port=0))
    try:
        yield server, upstream, log
    finally:
        background.run(server.stop())
        background.run(runner.cleanup())
        background.close()


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_a_caller_that_stops_reading_is_cut_off_and_its_stream_stopped(
    served: tuple[RunningServer, Endless, Path], path: str, caplog: pytest.LogCaptureFixture
) -> None:
    server, upstream, log = served
    host, port = server.url.removeprefix("http://").split(":")
    body = orjson.dumps(
        {
            "model": "auto",
            "max_tokens": 100,
            "stream": True,
            "messages": [{"role": "user", "content": "Go on for ever."}],
        }
    )
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting
    sock.settimeout(10)
    try:
        sock.connect((host, int(port)))
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = sock.recv(4096).split(b"\r\n\r\n")[0].decode().lower()
        assert " 200 " in head.splitlines()[0]
        rid = next(h.split(": ")[1] for h in head.splitlines() if h.startswith("x-request-id"))
        # Read nothing more. Within the client timeout (1 s) and some slack, the sidecar
        # gives up on this caller: the provider's stream is stopped, the log says why.
        deadline = time.monotonic() + 8
        while upstream.open_streams and time.monotonic() < deadline:
            time.sleep(0.05)
        assert upstream.open_streams == 0, "the provider's stream is still being read"
        line = logged_line(log, rid)
        assert line["status"] == 499 and line["stream_error"] == "caller stopped reading"
        (attempt,) = line["attempts"]
        assert attempt["cancelled"] is True
        # The connection was closed: what the caller reads now ends.
        sock.settimeout(5)
        while sock.recv(1 << 20):
            pass
        # The caller's doing, not a server error.
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    finally:
        sock.close()


def test_the_bound_spares_a_caller_that_reads(
    served: tuple[RunningServer, Endless, Path],
) -> None:
    # A reader slower than the provider but steady is never cut off: only a send that
    # waits longer than the client timeout is.
    server, upstream, _ = served
    host, port = server.url.removeprefix("http://").split(":")
    body = orjson.dumps(
        {"model": "auto", "stream": True, "messages": [{"role": "user", "content": "Go."}]}
    )
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            f"\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        got = 0
        until = time.monotonic() + 2.5  # longer than the client timeout
        while time.monotonic() < until:
            piece = sock.recv(256 * 1024)
            assert piece, "the sidecar cut off a caller that reads"
            got += len(piece)
            time.sleep(0.05)  # about 5 MB a second at most
        assert got > 1_000_000
        assert upstream.open_streams == 1
