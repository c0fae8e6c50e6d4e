"""Routing state machines: ejection, cool-downs, token buckets, tenants, idempotency store."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiergate import _core
from tiergate.config import EjectionConfig, parse_config
from tiergate.errors import ErrorClass, RequestError
from tiergate.providers.base import Usage
from tiergate.routing.dispatch import Dispatcher, HedgeBudget, _Facts
from tiergate.routing.health import Health
from tiergate.routing.idempotency import Flight, Idempotency, MemoryStore, Recorded
from tiergate.routing.limits import Limits
from tiergate.routing.planner import Planner
from tiergate.routing.tenants import Tenants

TIERS = {"a": "small", "b": "small", "c": "small", "d": "large"}
INDEX = {"a": 0, "b": 1, "c": 2, "d": 3}


def health(**kw: float) -> Health:
    return Health(EjectionConfig(**kw), TIERS, INDEX)


def test_consecutive_failures_eject_for_a_growing_time() -> None:
    h = health(consecutive_failures=3, base_ejection_s=10, max_ejection_s=25)
    for _ in range(2):
        h.failure("a", ErrorClass.SERVER_ERROR, None, now=100)
    assert h.available("a", 100)
    h.failure("a", ErrorClass.SERVER_ERROR, None, now=100)
    assert not h.available("a", 100) and h.available("a", 110.01)
    assert h.unavailable_mask(105) == 0b0001
    for _ in range(3):  # ejected again at once after returning: twice as long
        h.failure("a", ErrorClass.TIMEOUT, None, now=111)
    assert not h.available("a", 130) and h.available("a", 131.01)
    for _ in range(3):  # capped
        h.failure("a", ErrorClass.TIMEOUT, None, now=132)
    assert h.available("a", 157.01)
    assert [kind for kind, *_ in h.events] == ["ejection"] * 3


def test_success_resets_the_run_and_caller_errors_do_not_count() -> None:
    h = health(consecutive_failures=2, min_requests=100)
    h.failure("b", ErrorClass.SERVER_ERROR, None, now=1)
    h.success("b", now=2)
    h.failure("b", ErrorClass.SERVER_ERROR, None, now=3)
    for _ in range(5):
        h.failure("b", ErrorClass.BAD_REQUEST, None, now=4)
        h.failure("b", ErrorClass.CONTEXT_LENGTH, None, now=4)
    assert h.available("b", 5)


def test_failure_ratio_ejects() -> None:
    h = health(consecutive_failures=100, failure_ratio=0.5, min_requests=4, window_s=10)
    for t, ok in [(1, True), (2, False), (3, True), (4, False)]:
        if ok:
            h.success("c", now=t)
        else:
            h.failure("c", ErrorClass.OVERLOADED, None, now=t)
    assert not h.available("c", 4.5)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 5, allow_nan=False), st.booleans()), max_size=80),
    st.sampled_from([1.0, 3.0, 30.0]),
)
def test_the_failure_window_counts_what_its_buckets_hold(
    events: list[tuple[float, bool]], window_s: float
) -> None:
    """After every attempt the window holds exactly the attempts whose bucket
    (``window_s / BUCKETS`` wide) is one of the last BUCKETS, whatever the traffic."""
    from tiergate.routing.health import BUCKETS

    h = health(consecutive_failures=10**6, min_requests=10**6, window_s=window_s)
    width = window_s / BUCKETS
    seen: list[tuple[int, bool]] = []
    now = 100.0
    for dt, failed in events:
        now += dt
        if failed:
            h.failure("a", ErrorClass.SERVER_ERROR, None, now=now)
        else:
            h.success("a", now=now)
        bucket = int(now // width)
        seen.append((bucket, failed))
        kept = [f for b, f in seen if b > bucket - BUCKETS]
        buckets = h._states["a"].buckets
        counted = (sum(b[1] for b in buckets), sum(b[2] for b in buckets))
        assert counted == (len(kept), sum(kept))
        assert len(buckets) <= BUCKETS


def test_old_failures_leave_the_window() -> None:
    h = health(consecutive_failures=100, failure_ratio=0.5, min_requests=4, window_s=10)
    for t in range(3):
        h.failure("c", ErrorClass.SERVER_ERROR, None, now=t)
    for t in (20, 21, 22):  # the failures are over 10 s old: three successes, no ejection
        h.success("c", now=t)
    h.failure("c", ErrorClass.SERVER_ERROR, None, now=23)
    assert h.available("c", 23.5)
    # A reload with another window forgets the counts (they were in its buckets' width).
    again = Health(EjectionConfig(window_s=20), TIERS, INDEX, previous=h)
    assert again._states["c"].buckets == deque()


def test_ejection_cap_keeps_part_of_a_tier() -> None:
    h = health(consecutive_failures=1, max_ejected_share=0.5)
    for name in ("a", "b", "c"):
        h.failure(name, ErrorClass.CONNECT, None, now=1)
    assert h.unavailable(1.5) == ["a"]  # 3 × 0.5 → one may go
    h.failure("d", ErrorClass.CONNECT, None, now=1)  # a tier of one may still lose it
    assert not h.available("d", 1.5)


def test_rate_limit_cools_down_until_retry_after() -> None:
    h = health()
    h.failure("a", ErrorClass.RATE_LIMITED, 2.5, now=10)
    assert not h.available("a", 12.4) and h.available("a", 12.6)
    h.failure("a", ErrorClass.RATE_LIMITED, None, now=20)
    assert not h.available("a", 20.5) and h.available("a", 21.1)
    assert ("cooldown", "a", 2.5) in h.events


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(list(TIERS)),
            st.sampled_from([ErrorClass.RATE_LIMITED, ErrorClass.SERVER_ERROR, None]),
            st.none() | st.floats(0, 30),
            st.floats(0, 5),
        ),
        max_size=30,
    )
)
def test_the_routers_holds_follow_health(events: list[Any]) -> None:
    """What Health tells the router (``hold``) leaves out exactly what
    ``unavailable_mask`` says is unavailable, at any time, also after a reload."""
    rows = [(n, 0, 1.0, 1.0, 1.0, 1000, 0, 1.0, 1.0, 0.5) for n in INDEX]
    router = _core.Router(rows)
    h = Health(EjectionConfig(consecutive_failures=2), TIERS, INDEX, hold=router.hold)
    now = 100.0
    for name, error, retry_after, dt in events:
        now += dt
        if error is None:
            h.success(name, now=now)
        else:
            h.failure(name, error, retry_after, now=now)
        for t in (now, now + 1, now + 10, now + 100):
            assert router.held_mask(t) == h.unavailable_mask(t)
    fresh = _core.Router(rows)
    Health(EjectionConfig(consecutive_failures=2), TIERS, INDEX, previous=h, hold=fresh.hold)
    assert fresh.held_mask(now) == h.unavailable_mask(now)


def test_health_survives_reload_for_unchanged_deployments() -> None:
    h = health(consecutive_failures=1)
    h.failure("a", ErrorClass.CONNECT, None, now=time.monotonic())
    again = Health(
        EjectionConfig(consecutive_failures=1),
        {"a": "small", "e": "small"},
        {"a": 1, "e": 0},
        previous=h,
    )
    assert not again.available("a") and again.unavailable_mask() == 0b10


def test_token_buckets_route_around_before_the_limit(tmp_path: object) -> None:
    config = parse_config(
        {
            "providers": {"p": {"kind": "openai"}},
            "tiers": ["t"],
            "deployments": {
                "x": {
                    "provider": "p",
                    "model": "m",
                    "tier": "t",
                    "price": {"input": 1, "output": 1},
                    "limits": {"rpm": 10, "tpm": 1000},
                },
                "y": {
                    "provider": "p",
                    "model": "n",
                    "tier": "t",
                    "price": {"input": 1, "output": 1},
                },
            },
        }
    )
    limits = Limits(config.deployments, {"x": 0, "y": 1}, headroom=0.2)
    t0 = time.monotonic()
    assert limits.near_limit_mask(100, now=t0) == 0
    for _ in range(9):
        limits.spend("x", 50, now=t0)
    assert limits.near_limit_mask(100, now=t0) == 0b01  # 1 request left < 20% headroom
    assert limits.near_limit_mask(100, now=t0 + 30) == 0  # 5 requests refilled in 30 s
    limits.spend("x", 900, now=t0 + 30)
    assert limits.near_limit_mask(300, now=t0 + 30) == 0b01  # now tokens are short
    limits.spend("y", 10**9, now=t0 + 30)  # no limits configured: never masked
    assert limits.near_limit_mask(1, now=t0 + 31) & 0b10 == 0


def tenant_config(monkeypatch: pytest.MonkeyPatch, *, with_tenants: bool = True) -> Tenants:
    """Two deployments (``s`` small, ``l`` large); with tenants acme (keyed) and beta."""
    monkeypatch.setenv("ACME_KEY", "acme-secret")
    raw: dict[str, Any] = {
        "providers": {"p": {"kind": "openai"}},
        "tiers": ["small", "large"],
        "deployments": {
            "s": {
                "provider": "p",
                "model": "m",
                "tier": "small",
                "price": {"input": 1, "output": 1},
            },
            "l": {
                "provider": "p",
                "model": "n",
                "tier": "large",
                "price": {"input": 1, "output": 1},
            },
        },
        "tenants": {
            "acme": {
                "allow": ["small"],
                "daily_spend_usd": 1.0,
                "api_keys": [{"env": "ACME_KEY"}],
                "min_quality": 0.7,
            },
            "beta": {},
        },
    }
    if not with_tenants:
        del raw["tenants"]
    return Tenants(parse_config(raw), {"s": 0, "l": 1})


def test_tenants_resolve_by_key_and_header(monkeypatch: pytest.MonkeyPatch) -> None:
    tenants = tenant_config(monkeypatch)
    acme = tenants.resolve("Bearer acme-secret", None, None)
    assert (acme.name, acme.allowed_mask, acme.min_quality) == ("acme", 0b01, 0.7)
    assert tenants.resolve(None, "acme-secret", "acme").name == "acme"
    with pytest.raises(RequestError) as info:
        tenants.resolve("Bearer wrong", None, None)
    assert info.value.status == 401 and "acme-secret" not in info.value.message
    with pytest.raises(RequestError) as info:
        tenants.resolve(None, "acme-secret", "beta")
    assert info.value.status == 403


def test_open_sidecar_resolves_every_caller_to_all_deployments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tenants = tenant_config(monkeypatch, with_tenants=False)
    default = tenants.resolve(None, None, None)
    assert (default.name, default.allowed_mask, default.daily_spend_usd) == ("default", 0b11, None)
    assert tenants.resolve("Bearer anything", None, "") is default  # shared, not rebuilt
    named = tenants.resolve(None, None, "team-x")
    assert (named.name, named.allowed_mask) == ("team-x", 0b11)


def test_daily_spend_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    tenants = tenant_config(monkeypatch)
    acme = tenants.resolve("Bearer acme-secret", None, None)
    tenants.check_spend(acme)
    tenants.add_spend("acme", 0.6)
    tenants.check_spend(acme)
    tenants.add_spend("acme", 0.5)
    with pytest.raises(RequestError) as info:
        tenants.check_spend(acme)
    assert info.value.status == 429 and info.value.code == "tenant_spend_limit"
    # Only tenants with a limit are counted; the next UTC day starts from nothing.
    tenants.add_spend("default", 5.0)
    tenants.add_spend("someone-else", 5.0)
    assert tenants.spent_today("default") == tenants.spent_today("someone-else") == 0.0
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 86400)
    tenants.check_spend(acme)
    assert tenants.spent_today("acme") == 0.0


async def test_store_is_bounded_and_expires() -> None:
    store = MemoryStore(max_bytes=2000)
    rec = Recorded(200, (("a", "b"),), body=b"x" * 500)
    for i in range(5):
        await store.put(bytes([i]), rec, ttl_s=60)
    assert store.bytes_used <= 2000 and len(store) < 5
    assert await store.get(b"\x04") == rec and await store.get(b"\x00") is None
    await store.put(b"short", rec, ttl_s=0)
    assert await store.get(b"short") is None


@given(
    st.binary(max_size=300),
    st.lists(st.binary(max_size=40), max_size=8),
    st.lists(st.tuples(st.text(max_size=20), st.text(max_size=60)), max_size=8),
)
def test_a_records_size_counts_every_byte_and_character_it_holds(
    body: bytes, frames: list[bytes], headers: list[tuple[str, str]]
) -> None:
    # The core sums the lengths; each byte of the body, a frame, or a header's name or
    # value (in characters, as len counts them) adds one to the size.
    held = len(body) + sum(map(len, frames)) + sum(len(k) + len(v) for k, v in headers)
    rec = Recorded(200, tuple(headers), body, tuple(frames), stream=bool(frames))
    bare = Recorded(200, tuple(("", "") for _ in headers), b"", tuple(b"" for _ in frames))
    assert rec.size - bare.size == held
    with pytest.raises(TypeError):
        Recorded(200, (("a", 1),))  # type: ignore[arg-type]


async def test_identical_concurrent_requests_share_one_call() -> None:
    idem = Idempotency(MemoryStore(), ttl_s=60)
    key = Idempotency.key(b"{}", "t", "openai", False, "caller-key")
    calls = 0

    async def request() -> tuple[str, Recorded]:
        nonlocal calls
        outcome, value = await idem.lookup(key)
        if outcome != "miss":
            assert isinstance(value, Recorded)
            return outcome, value
        calls += 1
        await asyncio.sleep(0.01)
        result = Recorded(200, (), body=b"answer")
        assert not isinstance(value, Recorded)
        await idem.finish(value, result)
        return outcome, result

    results = await asyncio.gather(*(request() for _ in range(8)))
    assert calls == 1
    assert sorted(o for o, _ in results) == ["coalesced"] * 7 + ["miss"]
    assert {r.body for _, r in results} == {b"answer"}
    assert (await request())[0] == "replay" and calls == 1


async def test_failures_are_shared_but_not_kept() -> None:
    idem = Idempotency(MemoryStore(), ttl_s=60)
    key = Idempotency.key(b"{}", "t", "openai", False, "k2")
    outcome, flight = await idem.lookup(key)
    assert outcome == "miss" and not isinstance(flight, Recorded)
    follower = asyncio.create_task(idem.lookup(key))
    await asyncio.sleep(0)
    await idem.finish(flight, Recorded(502, (), body=b"failed"))
    assert (await follower)[0] == "coalesced"
    assert (await idem.lookup(key))[0] == "miss"


async def test_finish_now_settles_with_the_memory_store_and_defers_to_finish_otherwise() -> None:
    idem = Idempotency(MemoryStore(), ttl_s=60)
    key = Idempotency.key(b"{}", "t", "openai", False, "k4")
    _, flight = await idem.lookup(key)
    assert not isinstance(flight, Recorded)
    follower = asyncio.create_task(idem.lookup(key))
    await asyncio.sleep(0)
    answer = Recorded(200, (("a", "b"),), body=b"ok")
    assert idem.finish_now(flight, answer)
    assert await follower == ("coalesced", answer)
    assert await idem.lookup(key) == ("replay", answer)
    assert idem.inflight == 0

    class AsyncOnly:  # a store that must be awaited (as a Redis one would)
        def __init__(self) -> None:
            self.kept: dict[bytes, Recorded] = {}

        async def get(self, key: bytes) -> Recorded | None:
            return self.kept.get(key)

        async def put(self, key: bytes, value: Recorded, ttl_s: float) -> None:
            self.kept[key] = value

    store = AsyncOnly()
    remote = Idempotency(store, ttl_s=60)
    _, flight = await remote.lookup(key)
    assert not isinstance(flight, Recorded)
    assert not remote.finish_now(flight, answer)
    assert remote.inflight == 1 and not store.kept  # nothing done: finish does it all
    await remote.finish(flight, answer)
    assert remote.inflight == 0 and store.kept == {key: answer}


async def test_lookup_now_answers_when_nothing_waits_and_defers_to_lookup_otherwise() -> None:
    idem = Idempotency(MemoryStore(), ttl_s=60)
    key = Idempotency.key(b"{}", "t", "openai", False, "k5")
    outcome, flight = idem.lookup_now(key) or ("none", None)
    assert outcome == "miss" and isinstance(flight, Flight) and idem.inflight == 1
    assert idem.lookup_now(key) is None  # in flight: a follower must await lookup
    follower = asyncio.create_task(idem.lookup(key))
    await asyncio.sleep(0)
    answer = Recorded(200, (("a", "b"),), body=b"ok")
    assert idem.finish_now(flight, answer)
    assert await follower == ("coalesced", answer)
    assert idem.lookup_now(key) == ("replay", answer)
    failed_key = Idempotency.key(b"{}", "t", "openai", False, "k6")
    _, failing = idem.lookup_now(failed_key) or ("none", None)
    assert isinstance(failing, Flight)
    assert idem.finish_now(failing, Recorded(502, (), body=b"no"))
    assert idem.lookup_now(failed_key) is not None  # not kept: the next one leads
    assert idem.inflight == 1

    class AsyncOnly:  # a store that must be awaited (as a Redis one would)
        async def get(self, key: bytes) -> Recorded | None:
            return None

        async def put(self, key: bytes, value: Recorded, ttl_s: float) -> None:
            pass

    remote = Idempotency(AsyncOnly(), ttl_s=60)
    assert remote.lookup_now(key) is None and remote.inflight == 0


def test_keys_are_scoped() -> None:
    k = Idempotency.key
    assert k(b"", "t", "openai", False, "x") != k(b"", "u", "openai", False, "x")
    assert k(b"", "t", "openai", False, "x") != k(b"", "t", "anthropic", False, "x")
    assert k(b"", "t", "openai", False, "x") != k(b"", "t", "openai", True, "x")


async def test_a_follower_leads_when_the_leader_gives_up() -> None:
    idem = Idempotency(MemoryStore(), ttl_s=60)
    key = Idempotency.key(b"{}", "t", "openai", True, "k3")
    outcome, flight = await idem.lookup(key)
    assert outcome == "miss" and not isinstance(flight, Recorded)
    follower = asyncio.create_task(idem.lookup(key))
    await asyncio.sleep(0)
    idem.abandon(flight, None)  # the leader's caller left mid-stream
    outcome, second = await follower
    assert outcome == "miss" and not isinstance(second, Recorded)
    await idem.finish(second, Recorded(200, (), body=b"fresh"))
    assert (await idem.lookup(key))[0] == "replay"


@settings(max_examples=200, deadline=None)
@given(
    price=st.tuples(
        st.floats(0, 1000, allow_nan=False),
        st.floats(0, 1000, allow_nan=False),
        st.none() | st.floats(0, 1000, allow_nan=False),
    ),
    tokens=st.tuples(*(st.integers(0, 10**7) for _ in range(3))),
)
def test_an_attempts_cost_is_its_deployments_price_of_the_usage(
    price: tuple[float, float, float | None], tokens: tuple[int, int, int]
) -> None:
    # The dispatcher reads each deployment's prices once per config (_Facts); the figure
    # is the provider's bill: cached input at the cached price (else the input price).
    inp, out, cached = price
    dep_price: dict[str, Any] = {"input": inp, "output": out}
    if cached is not None:
        dep_price["cached"] = cached
    config = parse_config(
        {
            "providers": {"p": {"kind": "openai"}},
            "tiers": ["t"],
            "deployments": {"x": {"provider": "p", "model": "m", "tier": "t", "price": dep_price}},
        }
    )
    dep = config.deployments["x"]
    usage = Usage(tokens[0], tokens[1], min(tokens[2], tokens[0] + 5))
    facts = _Facts(dep, "openai")
    cached_price = inp if cached is None else cached
    fresh = max(usage.input_tokens - usage.cached_tokens, 0)
    bill = fresh * inp + usage.cached_tokens * cached_price + usage.output_tokens * out
    assert facts.cost(usage) == bill / 1e6
    assert (facts.kind, facts.model) == ("openai", "m")
    # The attempt's record bills it the same.
    dispatcher = Dispatcher(config, {"p": None}, Planner(config), HedgeBudget(0.0))  # type: ignore[dict-item]
    record = dispatcher._attempt_record("x", time.monotonic(), 0, 200, usage=usage)
    assert record.cost_usd == facts.cost(usage)


@pytest.mark.parametrize(
    ("timeout_ms", "header_ms", "tenant_ms", "route_ms", "seconds"),
    [
        (500.0, 100.0, 200.0, 300.0, 0.5),  # the caller's timeout wins outright
        (None, 100.0, 200.0, 300.0, 0.2),  # else its budget × slack (2)
        (None, None, 200.0, 300.0, 0.4),  # else the tenant's
        (None, None, None, 300.0, 0.6),  # else the route's
        (None, None, None, None, 120.0),  # else the default timeout
    ],
)
def test_the_deadline_follows_header_tenant_route_then_default(
    timeout_ms: float | None,
    header_ms: float | None,
    tenant_ms: float | None,
    route_ms: float | None,
    seconds: float,
) -> None:
    from tiergate.envelope import ChatRequest, Envelope, Message, TextPart

    route: dict[str, Any] = {"tier": "t"}
    if route_ms is not None:
        route["latency_budget_ms"] = route_ms
    tenant: dict[str, Any] = {}
    if tenant_ms is not None:
        tenant["latency_budget_ms"] = tenant_ms
    config = parse_config(
        {
            "providers": {"p": {"kind": "openai"}},
            "tiers": ["t"],
            "deployments": {
                "x": {
                    "provider": "p",
                    "model": "m",
                    "tier": "t",
                    "price": {"input": 1, "output": 1},
                }
            },
            "routes": {"r": route},
            "tenants": {"acme": tenant},
        }
    )
    planner = Planner(config)
    policy = Tenants(config, planner.index).resolve(None, None, "acme")
    envelope = Envelope("openai", "r", latency_budget_ms=header_ms, timeout_ms=timeout_ms)
    chat = ChatRequest(model="r", messages=[Message("user", [TextPart("hi")])])
    plan = planner.plan(chat, envelope, policy)
    dispatcher = Dispatcher(config, {"p": None}, planner, HedgeBudget(0.0))  # type: ignore[dict-item]
    before = time.monotonic()
    deadline = dispatcher.deadline(envelope, plan)
    assert before + seconds <= deadline <= time.monotonic() + seconds
