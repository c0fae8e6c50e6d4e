"""The planner on a learned model, over real HTTP with the simulators: the cheaper
deployment serves when the model says it is good enough, the expensive one otherwise;
the header floor uses the same rule; a reload swaps the model whole."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openai
import orjson
import pytest

from harness import Stack, fast_sim_config
from test_classifier_train import synthetic
from tiergate.classifier.train import train
from tiergate.config import Config, RouteConfig
from tiergate.errors import ConfigError
from tiergate.routing.planner import Planner

EASY = "What colour are boats? quick question 7"
HARD = "Prove the integral identity 7 step by step about boats ∫ theorem"


def _config(model: Path) -> Config:
    base = fast_sim_config()
    keep = {"gpt-4o-mini": "small", "gpt-4o": "big"}
    deployments = {
        n: d.model_copy(update={"family": keep[n]})
        for n, d in base.deployments.items()
        if n in keep
    }
    return base.model_copy(
        update={
            "deployments": deployments,
            "routes": {"auto": RouteConfig(strategy="auto", min_quality=0.95)},
            "routing": base.routing.model_copy(update={"quality_model": str(model)}),
        }
    )


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    doc = train(synthetic(), reference="big", c=4.0, floors=(0.5, 0.9, 0.95, 1.0))
    path = tmp_path_factory.mktemp("model") / "model.json"
    path.write_bytes(orjson.dumps(doc))
    return path


@pytest.fixture(scope="module")
def stack(model_file: Path) -> Iterator[Stack]:
    s = Stack(_config(model_file))
    yield s
    s.close()


def _served(stack: Stack, prompt: str, headers: dict[str, str] | None = None) -> str:
    with openai.OpenAI(base_url=f"{stack.url}/v1", api_key="x", max_retries=0) as client:
        resp = client.chat.completions.with_raw_response.create(
            model="auto",
            messages=[{"role": "user", "content": prompt}],
            max_tokens=16,
            extra_headers=headers or {},
        )
    return str(resp.headers.get("x-tiergate-deployment"))


def test_cheaper_deployment_when_the_model_says_it_is_good_enough(stack: Stack) -> None:
    assert _served(stack, EASY) == "gpt-4o-mini"
    assert _served(stack, HARD) == "gpt-4o"


def test_header_floor_uses_the_same_rule(stack: Stack) -> None:
    # A low floor lets the cheap deployment take even the hard prompt; on easy prompts it
    # passes even a 0.99 floor (cross-validation found it as accurate as the big one there).
    # (Other prompts than the first test's: an identical body would be replayed.)
    hard, easy = HARD.replace("7", "8"), EASY.replace("7", "8")
    assert _served(stack, hard, {"x-tiergate-min-quality": "0.3"}) == "gpt-4o-mini"
    assert _served(stack, easy, {"x-tiergate-min-quality": "0.99"}) == "gpt-4o-mini"


def test_explain_shows_the_predicted_qualities_and_the_threshold(stack: Stack) -> None:
    resp = stack.post(
        "/v1/route/explain",
        {"model": "auto", "messages": [{"role": "user", "content": HARD}], "max_tokens": 16},
    )
    assert resp.status == 200, resp.data
    body = orjson.loads(resp.data)
    q = {c["deployment"]: c["predicted_quality"] for c in body["candidates"]}
    assert q["gpt-4o"] > q["gpt-4o-mini"]
    # utility rule: the threshold is the winner's own prediction (explain rounds to 4)
    assert body["request"]["min_quality"] == pytest.approx(q["gpt-4o"], abs=1e-4)
    assert body["plan"][0] == "gpt-4o"


def test_planner_threshold_is_the_utility_winner(model_file: Path) -> None:
    from tiergate import _core

    planner = Planner(_config(model_file))
    quality = planner.quality
    model = _core.QualityModel.from_json(model_file.read_bytes())
    assert model.rule == "utility"
    names = planner.names
    fam = {"gpt-4o-mini": "small", "gpt-4o": "big"}
    costs = [model.costs[model.families.index(fam[n])] for n in names]
    for floor in (0.5, 0.9, 0.95, 0.97, 1.0):
        for qs in ([0.9, 0.95], [0.3, 0.9], [0.8, 0.81], [0.95, 0.9]):
            q = dict(zip(["gpt-4o-mini", "gpt-4o"], qs, strict=True))
            quals = [q[n] for n in names]
            win = model.utility_choice(floor, quals, costs)
            assert win is not None
            thr = quality.floor(floor, quals, 0b11)
            assert thr == quals[win]
            # the core's "cheapest feasible" is then the winner
            feasible = [i for i in range(2) if quals[i] >= thr]
            assert min(feasible, key=lambda i: costs[i]) == win
        # only one usable: it wins
        assert quality.floor(floor, [0.1, 0.2], 0b01) == 0.1
    assert quality.floor(0.0, [0.9, 0.95], 0b11) == 0.0


def test_planner_prices_each_request_as_eval_does(tmp_path: Path) -> None:
    """Version 4: the planner's utility winner uses the costs the core predicts for the
    request (its task), the same ones ``tiergate classifier eval`` routes with."""
    from test_classifier_train import _two_tasks
    from tiergate import _core
    from tiergate.classifier.train import route_utility
    from tiergate.envelope import ChatRequest

    doc = train(_two_tasks(), reference="big", c=4.0, floors=(0.5, 0.9, 0.95, 1.0))
    path = tmp_path / "v4.json"
    path.write_bytes(orjson.dumps(doc))
    planner = Planner(_config(path))
    quality = planner.quality
    model = _core.QualityModel.from_json(path.read_bytes())
    assert model.version == 4
    fam = {"gpt-4o-mini": "small", "gpt-4o": "big"}
    cols = [model.families.index(fam[n]) for n in planner.names]
    mean = [model.costs[j] for j in cols]
    seen = set()
    differs = False  # some decision the mean costs would make otherwise
    for prompt in [
        "def f_999(): return 999  # code task pad",
        "What colour are boats? quick question 999",
        "Prove the integral identity 999 step by step about boats ∫ theorem",
    ]:
        body = orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": prompt}]})
        probs, priced = model.predict_costs(body)
        costs = [priced[j] for j in cols]
        for floor in (0.5, 0.9, 0.95, 1.0):
            quals = quality.predict(ChatRequest(model="auto", messages=[], raw=body), 10)
            assert quals == [probs[j] for j in cols]
            win = model.utility_choice(floor, quals, costs)
            assert win is not None
            assert quality.floor(floor, quals, 0b11) == quals[win]
            # eval's decision for the prompt is the same family
            lam = model.cost_weight(floor)
            offline = route_utility(np.array([probs]), np.array([priced]), lam)[0]
            assert model.families[offline] == fam[planner.names[win]]
            seen.add(fam[planner.names[win]])
            # another list than the one predict returned is priced at the mean costs
            other = list(quals)
            mean_win = model.utility_choice(floor, other, mean)
            assert mean_win is not None
            assert quality.floor(floor, other, 0b11) == other[mean_win]
            differs |= mean_win != win
    assert seen == {"small", "big"} and differs


def test_a_broken_model_file_is_a_config_error(tmp_path: Path, model_file: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "tiergate.quality_model", "version": 7}')
    with pytest.raises(ConfigError, match=r"routing\.quality_model"):
        Planner(_config(bad))
    with pytest.raises(ConfigError, match="cannot read"):
        Planner(_config(tmp_path / "missing.json"))
    assert Planner(_config(model_file)).quality.predict  # loads
