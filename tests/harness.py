"""A simulator and a sidecar on ephemeral loopback ports, in a background event loop.

Tests drive them with the official SDKs (sync or async) exactly as an application
would. ``Stack.faults``/``Stack.stats`` talk to the simulator's control endpoint.
"""

from __future__ import annotations

import asyncio
import gc
import os
import re
import socket
import threading
import time
import warnings
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import orjson
import urllib3
from aiohttp import web

from tiergate.config import Config, LatencyPrior, SimModelConfig, load_config
from tiergate.server.main import RunningServer, start_server
from tiergate.sim.server import SimServer, sim_config_for

REPO = Path(__file__).resolve().parents[1]
SIM_ENV = {
    "SIM_OPENAI_API_KEY": "sim-openai-key",
    "SIM_ANTHROPIC_API_KEY": "sim-anthropic-key",
    "SIM_GEMINI_API_KEY": "sim-gemini-key",
    "SIM_AWS_ACCESS_KEY_ID": "SIMACCESSKEY",
    "SIM_AWS_SECRET_ACCESS_KEY": "sim-secret",
}
T = TypeVar("T")


async def serve(
    handler: Any, path: str | None = "/v1/chat/completions"
) -> tuple[web.AppRunner, int]:
    """A stand-in upstream on 127.0.0.1 answering POST ``path`` (any method and path when
    ``path`` is None) with ``handler``: its runner (to clean up) and its port."""
    app = web.Application()
    if path is None:
        app.router.add_route("*", "/{tail:.*}", handler)
    else:
        app.router.add_post(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


@contextmanager
def sidecar_before(handler: Any, config: str, folder: Path) -> Iterator[str]:
    """tiergate started from the YAML ``config``, whose ``PORT`` is that of a stand-in
    upstream on 127.0.0.1 answering every method and path with ``handler``: the
    sidecar's URL, both stopped on exit. The config file is written to ``folder``."""
    background = Loop()
    runner, port = background.run(serve(handler, None))
    try:
        path = folder / "tiergate.yaml"
        path.write_text(config.replace("PORT", str(port)))
        server: RunningServer = background.run(
            start_server(load_config(path), port=0, admin_port=0)
        )
        try:
            yield server.url
        finally:
            background.run(server.stop())
    finally:
        background.run(runner.cleanup())
        background.close()


def assert_honest(resp: Any, surface: str) -> None:
    """What any request must get, whatever it sent and whatever failed behind it: an
    answer or an error in the caller's API shape (a 5xx only as the providers' failure,
    never the sidecar's 500); a stream ends with its terminal or an error event."""
    assert resp.status != 500, resp.data[:400]
    if resp.status >= 400:
        err = orjson.loads(resp.data)
        if surface == "openai":
            assert set(err["error"]) == {"message", "type", "param", "code"}, err
        else:
            assert err["type"] == "error", err
        assert err["error"]["message"], err
        return
    if resp.headers.get("content-type", "").startswith("text/event-stream"):
        text = resp.data.decode()
        if surface == "openai":
            assert text.endswith("data: [DONE]\n\n") or '"error"' in text.split("data: ")[-1]
        else:
            assert "event: message_stop" in text or "event: error" in text, text[-300:]
    else:
        orjson.loads(resp.data)


class Loop:
    """An event loop on a thread of its own, where servers a synchronous test talks to
    run (a stand-in upstream, a sidecar started from a config of the test's)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        # An upstream call still in flight when a server stopped leaves its aiohttp
        # Connection unreleased; the session's close already closed its socket. Collect
        # it here, where it was made, instead of letting a later test's garbage
        # collection raise aiohttp's "Unclosed connection" warning as that test's error.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Unclosed connection", ResourceWarning)
            gc.collect()


def fast_sim_config(path: Path = REPO / "examples" / "sim.yaml", **routing: Any) -> Config:
    """The example config with every simulated model answering in milliseconds."""
    for key, value in SIM_ENV.items():
        os.environ.setdefault(key, value)
    config = load_config(path)
    assert config.sim is not None
    models = {m: SimModelConfig(ttft_ms=3, tokens_per_s=5000, sigma=0.1) for m in config.sim.models}
    sim = config.sim.model_copy(update={"models": models})
    # Priors that match the fast simulators, as a real config's would match its providers.
    prior = LatencyPrior(ttft_ms=5, tpot_ms=0.3)
    deployments = {
        n: d.model_copy(update={"latency_prior": prior}) for n, d in config.deployments.items()
    }
    # Request and safety logs off: tests read telemetry through their own exporters.
    telemetry = config.telemetry.model_copy(update={"log": None, "safety_log": None})
    update: dict[str, Any] = {"sim": sim, "deployments": deployments, "telemetry": telemetry}
    if routing:
        update["routing"] = config.routing.model_copy(update=routing)
    return config.model_copy(update=update)


class Stack:
    def __init__(self, config: Config, telemetry: Any = None) -> None:
        self.background = Loop()
        self.loop = self.background.loop
        self.sim: SimServer = self.run(SimServer.start(config, port=0))
        self.config = sim_config_for(config, self.sim.url)
        self.server: RunningServer = self.run(
            start_server(self.config, port=0, admin_port=0, telemetry=telemetry)
        )
        self.url = self.server.url
        self.http = urllib3.PoolManager()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return self.background.run(coro, timeout)

    def close(self) -> None:
        self.run(self.server.stop())
        self.run(self.sim.stop())
        self.http.clear()
        self.background.close()

    def _sim(self, method: str, path: str, body: Any = None) -> Any:
        data = orjson.dumps(body) if body is not None else None
        resp = self.http.request(
            method, self.sim.url + path, body=data, headers={"content-type": "application/json"}
        )
        assert resp.status < 300, resp.data
        return orjson.loads(resp.data) if resp.data else None

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._sim("GET", "/_sim/stats")
        return result

    def calls(self, deployment: str) -> int:
        model = self.config.deployments[deployment].model
        return int(self.stats().get(model, {}).get("calls", 0))

    def reset_stats(self) -> None:
        self._sim("DELETE", "/_sim/stats")

    def fault(self, deployment: str, kind: str, **kw: Any) -> None:
        self._sim(
            "POST",
            "/_sim/faults",
            {"model": self.config.deployments[deployment].model, "kind": kind, **kw},
        )

    def clear_faults(self) -> None:
        self._sim("DELETE", "/_sim/faults")

    def post(
        self, path: str, body: Any, headers: dict[str, str] | None = None
    ) -> urllib3.BaseHTTPResponse:
        raw = body if isinstance(body, bytes) else orjson.dumps(body)
        return self.http.request(
            "POST",
            self.url + path,
            body=raw,
            headers={"content-type": "application/json", **(headers or {})},
        )

    def leave_mid_stream(self, path: str, body: Any, events: int) -> str:
        """POST a streamed ``body`` on a raw socket, read until ``events`` SSE events
        (``data:`` lines) arrived, then hang up; the response head, lower-cased. A raw
        socket because closing it closes the connection: an HTTP client's response
        object keeps its socket open through a file it made of it."""
        host, port = self.url.removeprefix("http://").split(":")
        payload = body if isinstance(body, bytes) else orjson.dumps(body)
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(
                f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            got = b""
            while got.count(b"data: ") < events:
                piece = sock.recv(65536)
                assert piece, got
                got += piece
        return got.split(b"\r\n\r\n")[0].decode().lower()


def left_mid_stream(
    stack: Stack, log: Path, deployment: str, body: Any, events: int
) -> dict[str, Any]:
    """A caller hangs up after ``events`` SSE events of a stream ``deployment`` serves:
    the request's log line, checked for what any such hang-up must leave (499, the
    attempt cancelled, not held against the deployment's health)."""
    head = stack.leave_mid_stream("/v1/chat/completions", body, events)
    assert " 200 " in head.splitlines()[0] and f"x-tiergate-deployment: {deployment}" in head
    rid = re.search(r"x-request-id: (\S+)", head)
    assert rid is not None
    line = logged_line(log, rid.group(1))
    assert line["status"] == 499 and line["stream_error"] == "caller disconnected"
    (attempt,) = line["attempts"]
    assert attempt["error_class"] == "cancelled" and attempt["cancelled"] is True
    health = stack.server.runtime.current.planner.health
    assert health._states[deployment].consecutive == 0 and health.available(deployment)
    return line


def logged_line(log: Path, request_id: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """The log line of ``request_id`` (exporters run off the request path)."""
    return wait_line(log, lambda line: line.get("request_id") == request_id, timeout_s)


def wait_line(
    log: Path, match: Callable[[dict[str, Any]], bool], timeout_s: float = 10.0
) -> dict[str, Any]:
    """The first line of the request log ``log`` that ``match`` accepts, once written."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log.exists():
            for raw in log.read_bytes().splitlines():
                line = orjson.loads(raw) if raw.strip() else {}
                if match(line):
                    return line
        time.sleep(0.05)
    raise AssertionError(f"no matching line in {log}")
