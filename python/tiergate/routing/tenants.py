"""Tenants: who is calling, what they may use, and what they may spend.

The tenant comes from the sidecar's own API key when keys are configured (the key's
tenant wins; a conflicting ``x-tiergate-tenant`` is refused), else from
``x-tiergate-tenant``, else ``default``. Each tenant's allow-list is compiled at load
into a bitmask over the router's candidates; daily spend is counted per UTC day and a
tenant past its limit gets 429 in its API shape.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass

from tiergate.config import Config
from tiergate.errors import RequestError

__all__ = ["TenantPolicy", "Tenants"]

DEFAULT_TENANT = "default"


@dataclass(slots=True, frozen=True)
class TenantPolicy:
    name: str
    allowed_mask: int
    latency_budget_ms: float | None = None
    max_cost_usd: float | None = None
    min_quality: float | None = None
    daily_spend_usd: float | None = None


class Tenants:
    __slots__ = ("_all", "_day", "_default", "_keys", "_limited", "_open", "_policies", "_spend")

    def __init__(
        self, config: Config, index: Mapping[str, int], previous: Tenants | None = None
    ) -> None:
        self._all = (1 << len(index)) - 1
        # Unconfigured callers get this one policy (frozen, so shared): building a
        # TenantPolicy per request cost about 11k instructions.
        self._default = TenantPolicy(DEFAULT_TENANT, self._all)
        tier_of = {name: dep.tier for name, dep in config.deployments.items()}
        self._policies: dict[str, TenantPolicy] = {}
        for name, t in config.tenants.items():
            mask = 0
            for item in t.allow:
                for dep, i in index.items():
                    if dep == item or tier_of[dep] == item:
                        mask |= 1 << i
            self._policies[name] = TenantPolicy(
                name,
                mask if t.allow else self._all,
                t.latency_budget_ms,
                t.max_cost_usd,
                t.min_quality,
                t.daily_spend_usd,
            )
        # Keys are read once, here; only their tenant is kept beside them.
        self._keys: list[tuple[bytes, str | None]] = [
            (c.read().encode(), None) for c in config.server.api_keys
        ]
        for name, t in config.tenants.items():
            self._keys.extend((c.read().encode(), name) for c in t.api_keys)
        self._open = not self._keys
        # Spend is counted only for tenants with a daily limit (nothing else reads it):
        # tenant → USD of the UTC day ``_day``, kept across reloads. A tenant given a limit
        # by a reload counts from then.
        self._limited = frozenset(
            name for name, p in self._policies.items() if p.daily_spend_usd is not None
        )
        self._day: int = previous._day if previous is not None else _today()
        self._spend: dict[str, float] = previous._spend if previous is not None else {}

    def resolve(
        self, authorization: str | None, api_key: str | None, header: str | None
    ) -> TenantPolicy:
        keyed: str | None = None
        if not self._open:
            presented = api_key
            if (
                presented is None
                and authorization is not None
                and authorization.lower().startswith("bearer ")
            ):
                presented = authorization[7:].strip()
            if not presented:
                raise RequestError(
                    "missing API key",
                    status=401,
                    type="authentication_error",
                    code="invalid_api_key",
                )
            match = [t for k, t in self._keys if hmac.compare_digest(k, presented.encode())]
            if not match:
                raise RequestError(
                    "invalid API key",
                    status=401,
                    type="authentication_error",
                    code="invalid_api_key",
                )
            keyed = match[0]
        if keyed is not None and header and header != keyed:
            raise RequestError(
                "x-tiergate-tenant does not match the API key's tenant",
                param="x-tiergate-tenant",
                status=403,
                type="permission_error",
            )
        name = keyed or header or DEFAULT_TENANT
        policy = self._policies.get(name)
        if policy is not None:
            return policy
        if self._policies and header and name != DEFAULT_TENANT:
            raise RequestError(
                f"unknown tenant {name!r}",
                param="x-tiergate-tenant",
                status=403,
                type="permission_error",
            )
        if name == DEFAULT_TENANT:
            return self._default
        return TenantPolicy(name, self._all)

    def _today_spend(self) -> dict[str, float]:
        """The current day's totals (a new day starts from nothing)."""
        day = _today()
        if day != self._day:
            self._day = day
            self._spend.clear()
        return self._spend

    def check_spend(self, policy: TenantPolicy) -> None:
        if policy.daily_spend_usd is None:
            return
        spent = self._today_spend().get(policy.name, 0.0)
        if spent >= policy.daily_spend_usd:
            raise RequestError(
                f"tenant {policy.name!r} has spent its daily limit of ${policy.daily_spend_usd:g}",
                status=429,
                type="rate_limit_error",
                code="tenant_spend_limit",
            )

    def add_spend(self, tenant: str, usd: float) -> None:
        if usd <= 0 or tenant not in self._limited:
            return
        spend = self._today_spend()
        spend[tenant] = spend.get(tenant, 0.0) + usd

    def spent_today(self, tenant: str) -> float:
        """USD spent today by a tenant with a daily limit (0 for any other)."""
        return self._today_spend().get(tenant, 0.0)


def _today() -> int:
    """The UTC day number."""
    return int(time.time() // 86400)
