"""Overhead of the sidecar against a bare aiohttp pass-through proxy, same run, loopback.

Three targets answer the same OpenAI chat request: the upstream directly, a bare
aiohttp proxy written here (one shared ClientSession, body parsed and re-serialised with
orjson), and ``tiergate serve --config examples/overhead.yaml``. Rounds are interleaved
so that machine noise hits every target alike, each round in a turned order of the
targets (none always first or last); the figures are medians over rounds of each
target's latency minus the direct latency of the same round.

Run alone: ``.venv/bin/python benches/bench_overhead.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

REPO = Path(__file__).resolve().parents[1]

_COUNTER = iter(range(10**12))


# A system prompt of the size applications send (instructions, context): the large body's.
_SYSTEM = (
    "You are a careful assistant for a retail bank. Answer from the documents below; "
    "cite the section you used. Never reveal account numbers. "
) * 20


def _tool(name: str, params: list[str]) -> dict[str, object]:
    what = name.replace("_", " ")
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{what}: look up what the customer asks about, by id or by "
            "name, and return the record as JSON.",
            "parameters": {
                "type": "object",
                "properties": {p: {"type": "string", "description": f"the {p}"} for p in params},
                "required": params[:1],
            },
        },
    }


# An agent's tools: the same array, byte for byte, on every turn.
_TOOLS = [
    _tool("get_account", ["account_id", "fields"]),
    _tool("list_transactions", ["account_id", "since", "until", "limit"]),
    _tool("get_card", ["card_id"]),
    _tool("block_card", ["card_id", "reason"]),
    _tool("open_dispute", ["transaction_id", "reason", "amount"]),
]
_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "list_transactions", "arguments": '{"account_id":"a-17"}'},
}
_RESULT = orjson.dumps(
    [{"id": f"t{i}", "amount": 12.5 * i, "merchant": "Coffee"} for i in range(8)]
)


# A chat application's earlier turns: sent again, the same, with every new question.
_CONVERSATION: list[dict[str, object]] = [
    {
        "role": "user" if i % 2 == 0 else "assistant",
        "content": (
            f"Question {i // 2 + 1} about my card: what does the fee on line {i} mean?"
            if i % 2 == 0
            else f"Line {i - 1} is the monthly account fee. It is waived when the balance "
            "stays above the minimum for the whole month; see section 4 of your terms."
        ),
    }
    for i in range(8)
]


# Retrieved passages, as a RAG application puts them before its question: about 16 KB
# of a bank's terms in numbered passages (prose, figures, capitals, newlines), the same
# for every request (fixed seed).
_TERMS = [
    "A late payment fee of $25 applies when the minimum payment is not received by 5 p.m. "
    "Eastern Time on the due date.",
    "Disputes must be opened within 60 days of the statement date on which the charge "
    "first appeared; we may ask for receipts.",
    "The monthly account fee is waived when the daily balance stays above $1,500 for the "
    "whole statement period.",
    "Foreign transactions carry a fee of 3% of the amount in U.S. dollars, shown as a "
    "separate line on your statement.",
    "Interest on purchases is charged from the transaction date unless the previous "
    "balance was paid in full by its due date.",
    "If your card is lost or stolen, call us at once; you are not liable for charges "
    "made after you report it.",
    "Cash advances start accruing interest immediately at the cash APR, currently 27.49% variable.",
    "We credit refunds from merchants to your account within 3 business days of receiving them.",
    "Autopay can be set for the minimum payment, the statement balance or a fixed amount "
    "between $25 and $10,000.",
    "Overdraft protection transfers funds from a linked savings account in increments "
    "of $100, free of charge.",
]
_PASSAGES = "\n\n".join(
    f"[{i + 1}] " + " ".join(random.Random(i).choices(_TERMS, k=5)) for i in range(30)
)


def _anthropic_turn(question: str) -> dict[str, object]:
    """The agent turn of ``request_body``'s ``agent`` as the Anthropic SDK sends it: the
    same tools (``input_schema``), the call a ``tool_use`` block, its result a
    ``tool_result`` block."""
    functions: list[Any] = [t["function"] for t in _TOOLS]
    tools = [
        {"name": f["name"], "description": f["description"], "input_schema": f["parameters"]}
        for f in functions
    ]
    call = {"type": "tool_use", "id": "toolu_1", "name": "list_transactions"}
    messages = [
        {"role": "user", "content": "Why was I charged twice on my card last week?"},
        {"role": "assistant", "content": [{**call, "input": {"account_id": "a-17"}}]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": _RESULT.decode()},
                {"type": "text", "text": question},
            ],
        },
    ]
    system = "You are a bank's support agent. Use the tools; never guess balances."
    return {
        "model": "auto",
        "max_tokens": 16,
        "system": system,
        "tools": tools,
        "messages": messages,
    }


def request_body(stream: bool, kind: str = "plain") -> bytes:
    """A unique request each time, so that no target may answer from a cache: ``plain``
    0.6 KB; ``large`` 3.4 KB (a long system prompt and question); ``agent`` 3 KB, an
    agent's turn (five tools, an assistant tool call and its result, a new question);
    ``options`` the plain body with the sampling options SDK callers set
    (``temperature``, ``top_p``, ``seed``, ``stop``, ``user``); ``conversation`` 1.2 KB,
    a chat's fifth question after four earlier exchanges; ``rag`` 16 KB, retrieved
    passages before a question; ``anthropic`` the plain body's
    request as the Anthropic SDK sends it (for ``/v1/messages``; a pass-through proxy
    forwards its bytes as any others)."""
    system, question = "You are terse.", "Say hello in one word. " * 20
    if kind == "anthropic":
        user = {"role": "user", "content": question + str(next(_COUNTER))}
        anthropic = {"model": "auto", "max_tokens": 16, "system": system, "messages": [user]}
        return orjson.dumps({**anthropic, "stream": True} if stream else anthropic)
    if kind == "anthropic_agent":
        return orjson.dumps(_anthropic_turn("The coffee one, twice. " + str(next(_COUNTER))))
    if kind == "large":
        system = _SYSTEM
        question = "What is the fee for a late card payment, and how do I dispute it? " * 8
    messages: list[dict[str, object]] = [{"role": "system", "content": system}]
    if kind == "conversation":
        messages += _CONVERSATION
        question = "And the fee on line 9? "
    if kind == "rag":
        question = f"Answer from these passages.\n\n{_PASSAGES}\n\nQuestion: what is the late fee? "
    if kind == "agent":
        system = "You are a bank's support agent. Use the tools; never guess balances."
        messages = [
            {"role": "system", "content": system},
            {"role": "user", "content": "Why was I charged twice on my card last week?"},
            {"role": "assistant", "content": None, "tool_calls": [_CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": _RESULT.decode()},
        ]
        question = "The coffee one, twice. "
    messages.append({"role": "user", "content": question + str(next(_COUNTER))})
    body: dict[str, object] = {"model": "auto", "messages": messages, "max_tokens": 16}
    if kind == "agent":
        body["tools"] = _TOOLS
    if kind == "options":
        body.update(temperature=0.2, top_p=0.9, seed=7, stop=["\n\n"], user="u-17")
    if stream:
        body["stream"] = True
    return orjson.dumps(body)


UPSTREAM = r"""
import sys, time, orjson, uvloop
from aiohttp import web
ANSWER = orjson.dumps({"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "bench-model",
  "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello."}, "finish_reason": "stop", "logprobs": None}],
  "usage": {"prompt_tokens": 60, "completion_tokens": 2, "total_tokens": 62}})
def chunk(delta, finish=None):
    return b"data: " + orjson.dumps({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": "bench-model",
      "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + b"\n\n"
STREAM = (chunk({"role": "assistant", "content": ""}) + b"".join(chunk({"content": w}) for w in ["Hel", "lo", "."])
  + chunk({}, "stop") + b"data: " + orjson.dumps({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0,
  "model": "bench-model", "choices": [], "usage": {"prompt_tokens": 60, "completion_tokens": 2, "total_tokens": 62}})
  + b"\n\n" + b"data: [DONE]\n\n")
async def chat(request):
    body = orjson.loads(await request.read())
    if body.get("stream"):
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(STREAM)
        await resp.write_eof()
        return resp
    return web.Response(body=ANSWER, content_type="application/json")
app = web.Application()
app.router.add_post("/v1/chat/completions", chat)
uvloop.run(web._run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None))
"""

BARE_PROXY = r"""
import sys, orjson, uvloop, aiohttp
from aiohttp import web
UP = sys.argv[2]
async def on_start(app):
    app["s"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
async def on_stop(app):
    await app["s"].close()
async def chat(request):
    body = orjson.loads(await request.read())
    data = orjson.dumps(body)
    async with request.app["s"].post(UP + "/chat/completions", data=data, headers={"content-type": "application/json"}) as up:
        if body.get("stream"):
            resp = web.StreamResponse(status=up.status, headers={"content-type": "text/event-stream"})
            await resp.prepare(request)
            async for piece in up.content.iter_any():
                await resp.write(piece)
            await resp.write_eof()
            return resp
        payload = orjson.loads(await up.read())
        return web.Response(body=orjson.dumps(payload), status=up.status, content_type="application/json")
app = web.Application()
app.on_startup.append(on_start)
app.on_cleanup.append(on_stop)
app.router.add_post("/v1/chat/completions", chat)
uvloop.run(web._run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_http(
    url: str, proc: subprocess.Popen[bytes], method: str = "GET", timeout_s: float = 20
) -> float:
    """Seconds until ``url`` answers 200 (or 405 for POST-only paths)."""
    start = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        while time.perf_counter() - start < timeout_s:
            if proc.poll() is not None:
                raise RuntimeError(f"process for {url} exited with {proc.returncode}")
            try:
                async with session.request(method, url) as resp:
                    if resp.status in (200, 405):
                        return time.perf_counter() - start
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.005)
    raise RuntimeError(f"{url} not ready in {timeout_s} s")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


DECISIONS_US: list[float] = []


async def one(session: aiohttp.ClientSession, url: str, stream: bool, kind: str = "plain") -> float:
    """Latency in ms: whole response, or time to the first body byte when streaming."""
    data = request_body(stream, kind)
    start = time.perf_counter()
    async with session.post(url, data=data, headers={"content-type": "application/json"}) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{url}: status {resp.status}: {await resp.text()}")
        decision = resp.headers.get("x-tiergate-decision-us")
        if decision is not None:
            DECISIONS_US.append(float(decision))
        if stream:
            await resp.content.readany()
            elapsed = time.perf_counter() - start
            await resp.read()
            return elapsed * 1000
        await resp.read()
    return (time.perf_counter() - start) * 1000


async def batch(
    session: aiohttp.ClientSession, url: str, stream: bool, concurrency: int, n: int
) -> tuple[list[float], float]:
    latencies: list[float] = []
    queue = iter(range(n))

    async def worker() -> None:
        for _ in queue:
            latencies.append(await one(session, url, stream))

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, n / (time.perf_counter() - start)


# Requests per target and mode in a round at concurrency 32 (at 1: ``--per-round``).
C32_REQUESTS = 1600


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


async def measure(
    targets: dict[str, str], rounds: int, per_round: int
) -> dict[tuple[str, int, bool], dict[str, float]]:
    """Per target, mode and concurrency: medians over rounds of p50, p99 and requests per
    second, and (``added_p50``, ``added_p99``) of the target's figure less the direct
    path's in the same round. Each round runs the targets in a turned order (direct,
    bare, tiergate; then bare, tiergate, direct; ...), so that none always runs first
    or last in its block. For tiergate, ``spread_p50`` and ``spread_p99`` hold the
    quartiles of the per-round ratio of its added figure to the bare proxy's: how far a
    single round strays on a shared machine."""
    rows: dict[tuple[str, int, bool], list[dict[str, float]]] = {}
    names = list(targets)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        for url in targets.values():  # warm every pool and code path
            for stream in (False, True):
                await batch(session, url, stream, 8, 200)
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for concurrency in (1, 32):
                for stream in (False, True):
                    for name in order:
                        # A round's p99 is its (n/100)th-largest latency: enough requests
                        # to keep it off the single slowest few.
                        n = per_round if concurrency == 1 else C32_REQUESTS
                        lat, rps = await batch(session, targets[name], stream, concurrency, n)
                        rows.setdefault((name, concurrency, stream), []).append(
                            {"p50": pct(lat, 0.5), "p99": pct(lat, 0.99), "rps": rps}
                        )
    res: dict[tuple[str, int, bool], dict[str, float]] = {}
    for (name, concurrency, stream), runs in rows.items():
        direct = rows[("direct", concurrency, stream)]
        res[(name, concurrency, stream)] = {
            **{m: statistics.median(run[m] for run in runs) for m in ("p50", "p99", "rps")},
            **{
                f"added_{m}": statistics.median(
                    run[m] - base[m] for run, base in zip(runs, direct, strict=True)
                )
                for m in ("p50", "p99")
            },
        }
    for (name, concurrency, stream), runs in rows.items():
        if name != "tiergate":
            continue
        direct = rows[("direct", concurrency, stream)]
        bare = rows[("bare", concurrency, stream)]
        for m in ("p50", "p99"):
            ratios = sorted(
                (t[m] - d[m]) / (b[m] - d[m])
                for t, b, d in zip(runs, bare, direct, strict=True)
                if b[m] > d[m]
            )
            if ratios:
                res[(name, concurrency, stream)][f"spread_lo_{m}"] = pct(ratios, 0.25)
                res[(name, concurrency, stream)][f"spread_hi_{m}"] = pct(ratios, 0.75)
    return res


def render(
    res: dict[tuple[str, int, bool], dict[str, float]],
    rss: float,
    ready_s: float,
    rounds: int,
    per_round: int,
    instructions: dict[tuple[str, str], float] | None = None,
) -> str:
    lines = [
        "## Overhead: tiergate vs a bare aiohttp proxy (issue 3)",
        "",
        f"Command: `.venv/bin/python benches/bench_overhead.py --rounds {rounds} --per-round {per_round}` "
        "(upstream answers at once; all on 127.0.0.1; rounds interleaved, each in a turned "
        "order of the targets; added latency: a target's figure less the direct path's in "
        "the same round, median over rounds).",
        "",
        "| mode | concurrency | direct p50 ms | bare added p50 | tiergate added p50 | ratio p50 (target ≤ 1.3) | bare added p99 | tiergate added p99 | ratio p99 (≤ 1.3) | rps bare | rps tiergate | rps ratio (≥ 0.8) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    spread: list[str] = []
    for concurrency in (1, 32):
        for stream in (False, True):
            d = res[("direct", concurrency, stream)]
            b = res[("bare", concurrency, stream)]
            t = res[("tiergate", concurrency, stream)]
            ab50, at50 = b["added_p50"], t["added_p50"]
            ab99, at99 = b["added_p99"], t["added_p99"]
            mode = "stream TTFB" if stream else "non-stream"
            lines.append(
                f"| {mode} | {concurrency} | {d['p50']:.3f} | {ab50:.3f} | {at50:.3f} | {at50 / ab50:.2f} | "
                f"{ab99:.3f} | {at99:.3f} | {at99 / ab99:.2f} | {b['rps']:.0f} | {t['rps']:.0f} | {t['rps'] / b['rps']:.2f} |"
            )
            spread.append(
                f"{mode} at {concurrency}: p50 {_spread(t, 'p50')}, p99 {_spread(t, 'p99')}"
            )
    c1 = res[("tiergate", 1, False)]["added_p50"]
    decision = statistics.median(DECISIONS_US) if DECISIONS_US else float("nan")
    lines += [
        "",
        f"How far single rounds stray (quartiles over the {rounds} rounds of tiergate's "
        "added latency over the bare proxy's, each round against itself): "
        + "; ".join(spread)
        + ".",
        "",
        f"Routing decision (planner, from `x-tiergate-decision-us`): median {decision:.1f} µs, "
        f"{decision / 1000 / c1 * 100:.1f}% of tiergate's added p50 at concurrency 1.",
        "",
        f"tiergate resident memory after the run: {rss:.1f} MB (target < 100 MB); "
        f"start-up to ready: {ready_s:.2f} s (target < 1.5 s).",
        "",
    ]
    if instructions:
        lines += [
            "Instructions per request in the proxy process at concurrency 1 (`valgrind "
            "--tool=callgrind`, 300 requests after a warm-up, telemetry batches included; "
            "unlike the timings these do not move with the machine's load). The timings "
            "above send the 0.6 KB body; the next row a 3.4 KB one (a long system prompt), "
            "where what each byte costs shows; then an agent's turn (five tool "
            "definitions sent again, an assistant tool call, its result, a new question), "
            "where the tools seen before are remembered by their bytes; the plain body "
            "with the sampling options SDK callers set; a chat's fifth question, sent "
            "with the four exchanges before it; 16 KB of retrieved passages before a "
            "question, as a RAG application sends them (a text that never repeats: the "
            "sidecar estimates its tokens, scans it and reads its difficulty signals, a "
            "few passes over each byte where the bare proxy parses and writes it once); "
            "and the plain request as the Anthropic SDK "
            "sends it (the sidecar answers in the Anthropic shape from an OpenAI-protocol "
            "upstream; the bare proxy forwards the same bytes), then the agent's turn as "
            "it sends it (tool_use and tool_result blocks, which the sidecar translates "
            "into the upstream's tool calls and tool messages):",
            "",
            "| mode | bare proxy | tiergate | ratio |",
            "|---|---:|---:|---:|",
        ]
        for mode in INSTRUCTION_MODES:
            ib, it = instructions[("bare", mode)], instructions[("tiergate", mode)]
            lines.append(f"| {mode} | {ib / 1000:,.0f} k | {it / 1000:,.0f} k | {it / ib:.2f} |")
        lines.append("")
    return "\n".join(lines)


def _spread(row: dict[str, float], m: str) -> str:
    lo, hi = row.get(f"spread_lo_{m}"), row.get(f"spread_hi_{m}")
    return "n/a" if lo is None or hi is None else f"{lo:.2f}–{hi:.2f}"


async def _callgrind_control(switch: str, pid: int) -> None:
    ctl = await asyncio.create_subprocess_exec(
        "callgrind_control", "-i", switch, str(pid), stdout=subprocess.DEVNULL
    )
    if await ctl.wait() != 0:
        raise RuntimeError(f"callgrind_control -i {switch} {pid} failed")


async def _instructions(
    name: str,
    cmd: list[str],
    url: str,
    ready: str,
    env: dict[str, str],
    stream: bool,
    n: int,
    kind: str = "plain",
) -> float:
    """Instructions one process executes per request at concurrency 1 (callgrind, with
    instrumentation switched on only around ``n`` requests after a warm-up)."""
    out = Path("/tmp") / f"tiergate-bench-cg-{name}-{os.getpid()}.out"
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}", *cmd],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_http(ready, proc, timeout_s=180)
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                await one(session, url, stream, kind)
            await _callgrind_control("on", proc.pid)
            for _ in range(n):
                await one(session, url, stream, kind)
            await asyncio.sleep(1.0)  # the sidecar's telemetry batches run after the answers
            await _callgrind_control("off", proc.pid)
        proc.terminate()
        proc.wait(60)
        totals = [
            int(line.split()[1])
            for line in out.read_text().splitlines()
            if line.startswith(("summary:", "totals:"))
        ]
        if not totals or max(totals) == 0:
            raise RuntimeError(f"callgrind counted nothing for {name}")
        return max(totals) / n
    finally:
        if proc.poll() is None:
            proc.kill()
        out.unlink(missing_ok=True)


# Modes of the instruction counts: (streamed, body kind of request_body).
INSTRUCTION_MODES = {
    "non-stream": (False, "plain"),
    "stream": (True, "plain"),
    "non-stream, 3.4 KB body": (False, "large"),
    "non-stream, agent turn (3 KB: 5 tools, a tool call and its result)": (False, "agent"),
    "non-stream, sampling options (temperature, top_p, seed, stop, user)": (False, "options"),
    "non-stream, conversation (1.2 KB: 4 earlier exchanges, a new question)": (
        False,
        "conversation",
    ),
    "non-stream, retrieved passages (16 KB) before a question": (False, "rag"),
    "non-stream, the plain request on the Anthropic surface (`/v1/messages`)": (
        False,
        "anthropic",
    ),
    "non-stream, the agent turn on the Anthropic surface (tool_use, tool_result)": (
        False,
        "anthropic_agent",
    ),
}


async def instructions_per_request(n: int = 300) -> dict[tuple[str, str], float] | None:
    """Load-independent cost: instructions per request of the bare proxy and of tiergate
    in each of INSTRUCTION_MODES, keyed (target, mode), or None without valgrind."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        return None
    up = free_port()
    upstream = subprocess.Popen([sys.executable, "-c", UPSTREAM, str(up)])
    out: dict[tuple[str, str], float] = {}
    try:
        await wait_http(f"http://127.0.0.1:{up}/v1/chat/completions", upstream)
        for mode, (stream, kind) in INSTRUCTION_MODES.items():
            port = free_port()
            bare = [sys.executable, "-c", BARE_PROXY, str(port), f"http://127.0.0.1:{up}/v1"]
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            out[("bare", mode)] = await _instructions(
                "bare", bare, url, url, dict(os.environ), stream, n, kind
            )
            port, admin = free_port(), free_port()
            env = {
                **os.environ,
                "UPSTREAM_URL": f"http://127.0.0.1:{up}/v1",
                "TIERGATE_PORT": str(port),
                "TIERGATE_ADMIN_PORT": str(admin),
            }
            config = str(REPO / "examples" / "overhead.yaml")
            tg = [sys.executable, "-m", "tiergate.cli", "serve", "--config", config]
            path = "messages" if kind.startswith("anthropic") else "chat/completions"
            out[("tiergate", mode)] = await _instructions(
                "tiergate",
                tg,
                f"http://127.0.0.1:{port}/v1/{path}",
                f"http://127.0.0.1:{admin}/readyz",
                env,
                stream,
                n,
                kind,
            )
    finally:
        upstream.terminate()
        upstream.wait(10)
    return out


async def run_async(rounds: int, per_round: int) -> str:
    up_port, bare_port, tg_port, admin_port = free_port(), free_port(), free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    env = {
        **os.environ,
        "UPSTREAM_URL": f"http://127.0.0.1:{up_port}/v1",
        "TIERGATE_PORT": str(tg_port),
        "TIERGATE_ADMIN_PORT": str(admin_port),
    }
    try:
        procs.append(subprocess.Popen([sys.executable, "-c", UPSTREAM, str(up_port)]))
        await wait_http(f"http://127.0.0.1:{up_port}/v1/chat/completions", procs[-1])
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", BARE_PROXY, str(bare_port), f"http://127.0.0.1:{up_port}/v1"]
            )
        )
        await wait_http(f"http://127.0.0.1:{bare_port}/v1/chat/completions", procs[-1])
        tiergate = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tiergate.cli",
                "serve",
                "--config",
                str(REPO / "examples" / "overhead.yaml"),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        procs.append(tiergate)
        ready_s = await wait_http(f"http://127.0.0.1:{admin_port}/readyz", tiergate)
        targets = {
            "direct": f"http://127.0.0.1:{up_port}/v1/chat/completions",
            "bare": f"http://127.0.0.1:{bare_port}/v1/chat/completions",
            "tiergate": f"http://127.0.0.1:{tg_port}/v1/chat/completions",
        }
        res = await measure(targets, rounds, per_round)
        rss = rss_mb(tiergate.pid)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    return render(res, rss, ready_s, rounds, per_round, await instructions_per_request())


def run(rounds: int = 11, per_round: int = 1000) -> str:
    return asyncio.run(run_async(rounds, per_round))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument(
        "--per-round", type=int, default=1000, help="requests per target and mode at concurrency 1"
    )
    args = parser.parse_args()
    print(run(args.rounds, args.per_round))
