"""Configuration: one YAML file, validated at load, every default stated where declared.

A wrong file never half-loads: :func:`load_config` collects every problem and raises
:class:`~tiergate.errors.ConfigError` whose message lists each one by its path
(``deployments.gpt-4o.price.input: Input should be greater than or equal to 0``).

String values may reference the environment as ``${NAME}`` or ``${NAME:-default}``.
Credentials are never written inline: a provider names an environment variable or a
mounted file, read when the provider session opens.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tiergate.errors import ConfigError

__all__ = [
    "CAPABILITIES",
    "CloudWatchConfig",
    "Config",
    "Credential",
    "DeploymentConfig",
    "DriftConfig",
    "EjectionConfig",
    "LatencyPrior",
    "Limits",
    "Price",
    "ProviderConfig",
    "RouteConfig",
    "RoutingConfig",
    "ServerConfig",
    "SimConfig",
    "SimModelConfig",
    "TelemetryConfig",
    "TenantConfig",
    "load_config",
    "parse_config",
]

ProviderKind = Literal["openai", "openai_compatible", "anthropic", "gemini", "bedrock", "sagemaker"]
Capability = Literal["tools", "json_schema", "vision", "streaming"]
CAPABILITIES: tuple[Capability, ...] = ("tools", "json_schema", "vision", "streaming")

NonNeg = Annotated[float, Field(ge=0)]
Pos = Annotated[float, Field(gt=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Credential(_Model):
    """Where a secret comes from: exactly one of an environment variable or a file."""

    env: str | None = None
    file: Path | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Credential:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of `env` or `file`")
        return self

    def read(self) -> str:
        """The secret's value; raises ConfigError naming the source (never the value)."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if value is None:
                raise ConfigError([f"environment variable {self.env} is not set"])
            return value
        assert self.file is not None
        try:
            return self.file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                [f"cannot read credential file {self.file}: {exc.strerror}"]
            ) from None

    def describe(self) -> str:
        return f"env:{self.env}" if self.env is not None else f"file:{self.file}"


class ServerConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(4000, ge=0, le=65535)
    admin_port: int = Field(4001, ge=0, le=65535)
    max_body_bytes: int = Field(8 * 1024 * 1024, gt=0)
    # A client that has not sent its whole request within this many seconds is cut off,
    # and so is one whose answer waits this long to be sent (it stopped reading).
    client_timeout_s: Pos = 30.0
    # Idle keep-alive connections, and connections that never finish sending request
    # headers, are closed after this many seconds.
    keepalive_timeout_s: Pos = 75.0
    # Seconds a graceful shutdown waits for in-flight requests.
    shutdown_timeout_s: NonNeg = 10.0
    # Sidecar API keys (Authorization: Bearer / x-api-key) accepted; empty = no auth.
    api_keys: list[Credential] = []


class ProviderConfig(_Model):
    kind: ProviderKind
    # Base URL of the HTTP API. Defaults to the public endpoint for openai/anthropic/gemini;
    # required for openai_compatible; for bedrock/sagemaker an endpoint override (simulators).
    base_url: str | None = None
    api_key: Credential | None = None
    # AWS region for bedrock/sagemaker. Keys come from the standard AWS credential chain
    # unless both of the two credentials below are given.
    region: str = "us-east-1"
    aws_access_key_id: Credential | None = None
    aws_secret_access_key: Credential | None = None
    # Default per-attempt ceiling in seconds; the request deadline shortens it further.
    timeout_s: Pos = 60.0
    # Keep-alive connections per provider.
    pool_size: int = Field(100, gt=0)
    # Extra headers sent to this provider only (e.g. api-version for Azure-style APIs).
    headers: dict[str, str] = {}

    @model_validator(mode="after")
    def _needs_url(self) -> ProviderConfig:
        if self.kind == "openai_compatible" and not self.base_url:
            raise ValueError("`base_url` is required for kind openai_compatible")
        return self


class Price(_Model):
    """USD per million tokens."""

    input: NonNeg
    output: NonNeg
    # Cached input tokens; defaults to the input price when the provider has no discount.
    cached: NonNeg | None = None


class LatencyPrior(_Model):
    """Used by the planner until enough live samples exist."""

    ttft_ms: Pos = 500.0
    tpot_ms: Pos = 20.0


class Limits(_Model):
    rpm: int | None = Field(None, gt=0)
    tpm: int | None = Field(None, gt=0)


class DeploymentConfig(_Model):
    provider: str
    # Provider model id, pinned (for sagemaker: the endpoint name).
    model: str
    tier: str
    price: Price
    context_window: int = Field(128_000, gt=0)
    capabilities: list[Capability] = list(CAPABILITIES)
    latency_prior: LatencyPrior = LatencyPrior()
    limits: Limits = Limits()
    # Quality prior (0–1) used when no learned model covers this deployment; defaults by tier rank.
    quality_prior: float | None = Field(None, ge=0, le=1)
    # Model family for the learned classifier (issue 6).
    family: str | None = None
    # sagemaker only: request/response payload shape of the serving container.
    payload_format: Literal["openai_messages", "tgi"] = "openai_messages"
    # Upper bound on output tokens when the request gives none.
    max_output_tokens: int = Field(4096, gt=0)


class RouteConfig(_Model):
    """What a caller's `model` field may name. Exactly one target kind."""

    strategy: Literal["auto"] | None = None
    tier: str | None = None
    deployment: str | None = None
    # Serves when the decision exceeds its budget; defaults to the cheapest candidate.
    default: str | None = None
    latency_budget_ms: Pos | None = None
    max_cost_usd: Pos | None = None
    min_quality: float | None = Field(None, ge=0, le=1)
    hedge: bool = False

    @model_validator(mode="after")
    def _one_target(self) -> RouteConfig:
        given = [x for x in (self.strategy, self.tier, self.deployment) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of `strategy: auto`, `tier` or `deployment`")
        return self


SafetyAction = Literal["off", "log", "redact", "block"]
SafetyKind = Literal[
    "email", "phone", "card", "national_id", "aws_key", "api_key", "private_key", "bearer_token",
    "injection", "refusal", "schema_invalid",
]  # fmt: skip


class SafetyPolicyConfig(_Model):
    """What a safety finding does (see tiergate.safety.scan). Output kinds only ever log."""

    # Action for every kind not listed in `kinds`.
    default: SafetyAction = "log"
    kinds: dict[SafetyKind, SafetyAction] = {}
    # Check answers for refusals and schema-invalid JSON.
    scan_output: bool = True


class TenantConfig(_Model):
    latency_budget_ms: Pos | None = None
    max_cost_usd: Pos | None = None
    min_quality: float | None = Field(None, ge=0, le=1)
    # Deployment or tier names this tenant may use; empty = all.
    allow: list[str] = []
    daily_spend_usd: Pos | None = None
    api_keys: list[Credential] = []
    # Overrides the top-level `safety` policy for this tenant (whole policy, not merged).
    safety: SafetyPolicyConfig | None = None


class EjectionConfig(_Model):
    """Outlier ejection (passive health), as Envoy's outlier detection."""

    # Failures in a row that eject a deployment.
    consecutive_failures: int = Field(5, gt=0)
    # Share of failed attempts within `window_s` that ejects it, once `min_requests` were seen.
    failure_ratio: float = Field(0.5, gt=0, le=1)
    min_requests: int = Field(10, gt=0)
    window_s: Pos = 30.0
    # First ejection lasts this long; each further ejection in a row doubles it, up to the cap.
    base_ejection_s: Pos = 15.0
    max_ejection_s: Pos = 300.0
    # At most this share of a tier is ejected at once (at least one deployment always may be).
    max_ejected_share: float = Field(0.5, gt=0, le=1)


class RoutingConfig(_Model):
    """How plans are made and run. Every default is stated here."""

    # Past this, the route's default deployment serves and the log says why.
    decision_budget_ms: Pos = 50.0
    # Deadline = latency budget × slack when the caller gives no x-tiergate-timeout-ms.
    timeout_slack: float = Field(2.0, ge=1)
    # Deadline when neither a timeout nor a budget is known.
    default_timeout_s: Pos = 120.0
    # A stream with no chunk for this long has stalled.
    inter_chunk_timeout_s: Pos = 30.0
    # Live latency windows: length and the samples needed before they replace the prior.
    window_s: Pos = 300.0
    min_samples: int = Field(20, gt=0)
    # Share of requests that may be hedged, fleet-wide for this sidecar.
    hedge_budget: float = Field(0.1, ge=0, le=1)
    # Relax the quality floor as a last resort (reported in x-tiergate-relaxed) instead of failing.
    allow_quality_relax: bool = True
    # Completed responses replay for this long; the in-memory store holds at most this many bytes.
    idempotency_ttl_s: NonNeg = 600.0
    idempotency_max_bytes: int = Field(8 * 1024 * 1024, ge=0)
    # A deployment whose RPM/TPM bucket is below this share of its capacity is routed around.
    limit_headroom: float = Field(0.05, ge=0, lt=1)
    # Learned quality model file (`tiergate classifier train`), relative to the config file;
    # null = the tier-prior heuristic. Reloading the config reloads the model.
    quality_model: str | None = None
    ejection: EjectionConfig = EjectionConfig()


class SimModelConfig(_Model):
    """How one simulated model behaves. Prices default to the deployment naming it."""

    ttft_ms: Pos = 300.0
    tokens_per_s: Pos = 80.0
    # Lognormal shape of both latency components.
    sigma: NonNeg = 0.25
    price: Price | None = None
    # Model column of the labelled data set whose recorded answers this model gives.
    dataset_model: str | None = None
    rpm: int | None = Field(None, gt=0)


class SimConfig(_Model):
    # host:port of the simulator process: every provider protocol plus /_sim/*.
    control: str = "127.0.0.1:4100"
    seed: int = 0
    # Directory of RouterBench-format CSVs driving answers; relative to the config file.
    dataset: str | None = None
    models: dict[str, SimModelConfig] = {}


class OtlpConfig(_Model):
    """OpenTelemetry export over OTLP/HTTP (protobuf)."""

    # Base URL; /v1/traces and /v1/metrics are appended.
    endpoint: str = "http://127.0.0.1:4318"
    # Extra request headers (e.g. an API key), each read from env or a mounted file.
    headers: dict[str, Credential] = {}
    traces: bool = True
    metrics: bool = True
    # Seconds between metric exports.
    metrics_interval_s: Pos = 30.0
    timeout_s: Pos = 10.0
    service_name: str = "tiergate"


class CloudWatchConfig(_Model):
    """CloudWatch metrics: EMF lines for the agent, batched PutMetricData, or both."""

    mode: Literal["emf", "put_metric_data", "both"] = "emf"
    namespace: str = "tiergate"
    # EMF destination: "-" = stdout, otherwise a file path (appended).
    emf_path: str = "-"
    region: str = "us-east-1"
    # Endpoint override (tests, VPC endpoints).
    endpoint_url: str | None = None
    # Keys come from the standard AWS chain unless both are given.
    aws_access_key_id: Credential | None = None
    aws_secret_access_key: Credential | None = None
    # PutMetricData: data per call (API limit 1000), flush period, retries with backoff.
    batch_size: int = Field(500, gt=0, le=1000)
    flush_interval_s: Pos = 10.0
    max_retries: int = Field(4, ge=0)
    # Data points held while CloudWatch is unreachable; beyond it the oldest are dropped (counted).
    max_buffered: int = Field(20_000, gt=0)


class TelemetryConfig(_Model):
    # Per-request JSON lines: "-" = stdout, a path = append to that file, null = off.
    log: str | None = "-"
    # Safety findings, a stream of their own: same choices.
    safety_log: str | None = "-"
    # Put prompt and completion text into log lines, redacted by the safety detectors.
    log_text: bool = False
    # Capacity of each exporter's queue; when full, records are dropped and counted.
    queue_size: int = Field(10_000, gt=0)
    # Serve /metrics on the admin port.
    prometheus: bool = True
    otlp: OtlpConfig | None = None
    cloudwatch: CloudWatchConfig | None = None


class ShadowConfig(_Model):
    """Shadow evaluation of one route: a sampled share also goes to a reference deployment."""

    reference: str
    # Share of the route's successful requests shadowed (0–1).
    sample: float = Field(0.01, ge=0, le=1)
    # exact: identical text; json: equal after parsing; judge: the judge deployment says.
    comparator: Literal["exact", "json", "judge"] = "exact"
    judge: str | None = None
    # Shadow calls in flight at once; beyond it a sampled request is skipped (counted).
    max_in_flight: int = Field(4, gt=0)

    @model_validator(mode="after")
    def _judge(self) -> ShadowConfig:
        if self.comparator == "judge" and not self.judge:
            raise ValueError("`judge` is required when comparator is judge")
        return self


class DriftConfig(_Model):
    # Write hourly aggregates per deployment to `sink`. Off by default: no files appear
    # unless asked for.
    enabled: bool = False
    # A directory (relative to the config file) or s3://bucket/prefix.
    sink: str = "drift"
    # Seconds between writes of the open hours' aggregates.
    flush_interval_s: Pos = 60.0
    # request_id → (deployment, hour) remembered for feedback; oldest forgotten first.
    feedback_capacity: int = Field(50_000, gt=0)
    # S3 sink: region and endpoint override (tests, VPC endpoints).
    region: str = "us-east-1"
    endpoint_url: str | None = None
    # Route name → shadow evaluation (opt-in per route).
    shadow: dict[str, ShadowConfig] = {}


class Config(_Model):
    server: ServerConfig = ServerConfig()
    providers: dict[str, ProviderConfig]
    deployments: dict[str, DeploymentConfig]
    # Ordered smallest first; a failure escalates upward, never below the floor.
    tiers: list[str]
    routes: dict[str, RouteConfig] = {}
    tenants: dict[str, TenantConfig] = {}
    routing: RoutingConfig = RoutingConfig()
    sim: SimConfig | None = None
    telemetry: TelemetryConfig = TelemetryConfig()
    # Default safety policy; tenants may override it.
    safety: SafetyPolicyConfig = SafetyPolicyConfig()
    drift: DriftConfig = DriftConfig()
    # Directory of the config file; relative paths resolve against it.
    base_dir: Path = Path()

    def tier_rank(self, tier: str) -> int:
        return self.tiers.index(tier)

    def route_names(self) -> list[str]:
        """Every name a caller's `model` may use: explicit routes, `auto`, tiers, deployments."""
        names = dict.fromkeys(self.routes)
        names.setdefault("auto")
        names.update(dict.fromkeys(self.tiers))
        names.update(dict.fromkeys(self.deployments))
        return list(names)

    def resolve_route(self, name: str) -> RouteConfig | None:
        if name in self.routes:
            return self.routes[name]
        if name == "auto":
            return RouteConfig(strategy="auto")
        if name in self.tiers:
            return RouteConfig(tier=name)
        if name in self.deployments:
            return RouteConfig(deployment=name)
        return None


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(node: Any, path: str, problems: list[str]) -> Any:
    if isinstance(node, str):

        def sub(m: re.Match[str]) -> str:
            value = os.environ.get(m.group(1))
            if value is None:
                if m.group(2) is not None:
                    return m.group(2)
                problems.append(f"{path or '<root>'}: environment variable {m.group(1)} is not set")
                return ""
            return value

        return _ENV.sub(sub, node)
    if isinstance(node, dict):
        return {
            k: _interpolate(v, f"{path}.{k}" if path else str(k), problems) for k, v in node.items()
        }
    if isinstance(node, list):
        return [_interpolate(v, f"{path}.{i}", problems) for i, v in enumerate(node)]
    return node


def _names(node: Any) -> set[str]:
    return {str(k) for k in node} if isinstance(node, dict) else set()


def _reference_problems(data: dict[str, Any]) -> list[str]:
    """Cross-references, checked on the raw document so they are reported beside field errors."""
    problems: list[str] = []
    providers = _names(data.get("providers"))
    deployments = _names(data.get("deployments"))
    raw_tiers = data.get("tiers")
    tiers = [str(t) for t in raw_tiers] if isinstance(raw_tiers, list) else []
    if "deployments" in data and not deployments:
        problems.append("deployments: at least one deployment is required")
    if len(set(tiers)) != len(tiers):
        problems.append("tiers: names must be unique")
    for name, dep in (
        (data.get("deployments") or {}).items() if isinstance(data.get("deployments"), dict) else []
    ):
        if not isinstance(dep, dict):
            continue
        if "provider" in dep and dep["provider"] not in providers:
            problems.append(f"deployments.{name}.provider: unknown provider {dep['provider']!r}")
        if "tier" in dep and dep["tier"] not in tiers:
            problems.append(f"deployments.{name}.tier: unknown tier {dep['tier']!r}")
    routes = data.get("routes")
    for name, route in routes.items() if isinstance(routes, dict) else []:
        if not isinstance(route, dict):
            continue
        if "tier" in route and route["tier"] not in tiers:
            problems.append(f"routes.{name}.tier: unknown tier {route['tier']!r}")
        for key in ("deployment", "default"):
            if key in route and route[key] not in deployments:
                problems.append(f"routes.{name}.{key}: unknown deployment {route[key]!r}")
    tenants = data.get("tenants")
    for name, tenant in tenants.items() if isinstance(tenants, dict) else []:
        allow = tenant.get("allow") if isinstance(tenant, dict) else None
        for i, item in enumerate(allow if isinstance(allow, list) else []):
            if item not in deployments and item not in tiers:
                problems.append(
                    f"tenants.{name}.allow.{i}: {item!r} is neither a deployment nor a tier"
                )
    drift = data.get("drift")
    shadow = drift.get("shadow") if isinstance(drift, dict) else None
    for name, sh in shadow.items() if isinstance(shadow, dict) else []:
        if not isinstance(sh, dict):
            continue
        for key in ("reference", "judge"):
            if key in sh and sh[key] is not None and sh[key] not in deployments:
                problems.append(f"drift.shadow.{name}.{key}: unknown deployment {sh[key]!r}")
    return problems


def _format_errors(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if p not in ("function-after[_references()]",))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "value_error" and "; " in msg and not loc:
            out.extend(msg.split("; "))
        else:
            out.append(f"{loc or '<root>'}: {msg}")
    return out


def parse_config(data: Any, base_dir: Path | None = None) -> Config:
    """Validate an already-parsed YAML document."""
    if not isinstance(data, dict):
        raise ConfigError(["<root>: the config must be a mapping"])
    problems: list[str] = []
    data = _interpolate(data, "", problems)
    if problems:
        raise ConfigError(problems)
    if base_dir is not None:
        data = {**data, "base_dir": base_dir}
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems = _format_errors(exc)
    problems += _reference_problems(data)
    if problems:
        raise ConfigError(problems)
    return config


def load_config(path: str | Path) -> Config:
    """Read, interpolate and validate a YAML config; ConfigError lists every problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{p}: {exc.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{p}: invalid YAML: {exc}"]) from None
    return parse_config(data, base_dir=p.resolve().parent)
