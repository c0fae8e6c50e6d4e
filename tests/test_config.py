"""Config loading: good files load, wrong files stop start-up naming every problem by path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tiergate.config import load_config, parse_config
from tiergate.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def minimal() -> dict:
    return {
        "providers": {"p": {"kind": "openai", "api_key": {"env": "X_KEY"}}},
        "deployments": {
            "d": {
                "provider": "p",
                "model": "m",
                "tier": "small",
                "price": {"input": 1, "output": 2},
            }
        },
        "tiers": ["small"],
    }


@pytest.mark.parametrize("name", ["sim.yaml", "overhead.yaml"])
def test_examples_load(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM_URL", "http://127.0.0.1:9")
    path = REPO / "examples" / name
    if not path.exists():
        pytest.skip(f"{name} not written yet")
    config = load_config(path)
    assert config.deployments and config.tiers


def test_sim_example_shape() -> None:
    config = load_config(REPO / "examples" / "sim.yaml")
    kinds = {config.providers[d.provider].kind for d in config.deployments.values()}
    assert kinds >= {"openai", "anthropic", "gemini", "bedrock", "sagemaker"}
    for tier in config.tiers:
        deps = [d for d in config.deployments.values() if d.tier == tier]
        assert len(deps) >= 2 and len({d.provider for d in deps}) >= 2, tier


def test_every_problem_is_named_by_path() -> None:
    data = minimal()
    data["providers"]["q"] = {"kind": "openai_compatible"}
    data["deployments"]["d"]["price"]["input"] = -1
    data["deployments"]["e"] = {
        "provider": "nope",
        "model": "m",
        "tier": "huge",
        "price": {"input": 1, "output": 1},
    }
    data["routes"] = {"r": {"tier": "small", "deployment": "d"}}
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    text = "\n".join(info.value.problems)
    assert "providers.q" in text and "base_url" in text
    assert "deployments.d.price.input" in text
    assert "routes.r" in text and "exactly one" in text
    assert "deployments.e.provider: unknown provider 'nope'" in text


def test_references_are_checked() -> None:
    data = minimal()
    data["deployments"]["e"] = {
        "provider": "nope",
        "model": "m",
        "tier": "huge",
        "price": {"input": 1, "output": 1},
    }
    data["tenants"] = {"t": {"allow": ["d", "ghost"]}}
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    problems = info.value.problems
    assert "deployments.e.provider: unknown provider 'nope'" in problems
    assert "deployments.e.tier: unknown tier 'huge'" in problems
    assert any(p.startswith("tenants.t.allow.1") for p in problems)


def test_unknown_keys_and_inline_secrets_are_rejected() -> None:
    data = minimal()
    data["providers"]["p"]["api_key"] = "sk-inline-secret"
    data["deployments"]["d"]["pricee"] = 1
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    text = "\n".join(info.value.problems)
    assert "providers.p.api_key" in text and "deployments.d.pricee" in text
    assert "sk-inline-secret" not in str(info.value)


def test_env_interpolation(monkeypatch: pytest.MonkeyPatch) -> None:
    data = minimal()
    data["providers"]["p"]["base_url"] = "${BASE:-http://127.0.0.1:1}/v1"
    assert parse_config(data).providers["p"].base_url == "http://127.0.0.1:1/v1"
    monkeypatch.setenv("BASE", "http://127.0.0.1:2")
    assert parse_config(data).providers["p"].base_url == "http://127.0.0.1:2/v1"
    data["providers"]["p"]["base_url"] = "${MISSING_VAR_XYZ}"
    with pytest.raises(
        ConfigError, match=r"providers\.p\.base_url: environment variable MISSING_VAR_XYZ"
    ):
        parse_config(data)


def test_credentials_from_env_or_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "key"
    secret.write_text("from-file\n")
    data = minimal()
    data["providers"]["f"] = {"kind": "anthropic", "api_key": {"file": str(secret)}}
    config = parse_config(data)
    assert config.providers["f"].api_key is not None
    assert config.providers["f"].api_key.read() == "from-file"
    monkeypatch.setenv("X_KEY", "from-env")
    assert (
        config.providers["p"].api_key is not None
        and config.providers["p"].api_key.read() == "from-env"
    )
    monkeypatch.delenv("X_KEY")
    with pytest.raises(ConfigError, match="X_KEY is not set"):
        config.providers["p"].api_key.read()


def test_yaml_errors_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="No such file"):
        load_config(tmp_path / "absent.yaml")
    listy = tmp_path / "list.yaml"
    listy.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(listy)


def test_routes_resolve() -> None:
    config = parse_config(minimal())
    assert (
        config.resolve_route("auto") is not None and config.resolve_route("auto").strategy == "auto"
    )
    assert config.resolve_route("small").tier == "small"
    assert config.resolve_route("d").deployment == "d"
    assert config.resolve_route("nope") is None
