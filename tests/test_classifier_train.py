"""Training, evaluation and the data loaders: a tiny synthetic set in the normal suite,
the real RouterBench CSVs through the CLI when ../shared is present."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from tiergate import _core
from tiergate.classifier.data import DataError, Labelled, load_dir, load_records, split_csvs
from tiergate.classifier.train import (
    BOOTSTRAP_RESAMPLES,
    CONFIDENCE,
    LAMBDA_GRID,
    bootstrap_counts,
    calibrate_lambda,
    fit_cost_model,
    predict_costs,
    prompt_chars,
    ratio_lower_bound,
    route_utility,
    train,
)

HEADER = ",sample_id,prompt,eval_name,small,big,small|model_response,big|model_response,small|total_cost,big|total_cost\n"


def synthetic(n: int = 120, seed: int = 0) -> Labelled:
    """Easy prompts both families answer; hard ones only the big family does."""
    rng = np.random.default_rng(seed)
    items: list[str | bytes] = []
    labels = []
    for i in range(n):
        hard = i % 2 == 1
        topic = ["cats", "trains", "rivers", "songs"][i % 4]
        if hard:
            items.append(f"Prove the integral identity {i} step by step about {topic} ∫ theorem")
            labels.append([float(rng.random() < 0.1), float(rng.random() < 0.95)])
        else:
            items.append(f"What colour are {topic}? quick question {i}")
            labels.append([float(rng.random() < 0.95), float(rng.random() < 0.97)])
    lab = np.array(labels)
    costs = np.tile([0.001, 0.02], (n, 1))
    return Labelled(items, [str(i) for i in range(n)], ["small", "big"], lab, costs)


def test_small_training_run_learns_easy_from_hard(tmp_path: Path) -> None:
    data = synthetic()
    doc = train(data, reference="big", floor=0.95, c=4.0, floors=(0.9, 0.95), model="gated")
    assert doc["format"] == "tiergate.quality_model" and doc["version"] == 4
    assert doc["operating_points"]["reference"] == "big"
    assert doc["operating_points"]["rule"] == "utility"
    assert [r["floor"] for r in doc["operating_points"]["table"]] == [0.9, 0.95]
    model = _core.QualityModel.from_json(orjson.dumps(doc))
    easy = model.predict("What colour are boats? quick question 999")
    hard = model.predict("Prove the integral identity 999 step by step about boats ∫ theorem")
    assert easy[0] > 0.7 and hard[0] < 0.4 and hard[1] > 0.7
    probs = np.array([easy, hard])
    cost = np.array(model.costs)
    assert list(cost) == pytest.approx([0.001, 0.02])
    lam = model.cost_weight(0.95)
    assert list(route_utility(probs, cost, lam)) == [0, 1]
    # the core's choice is the same rule
    assert [model.utility_choice(0.95, list(p), list(cost)) for p in probs] == [0, 1]
    # one cluster, the task cost model: every prompt is priced at the mean cost
    assert doc["operating_points"]["cost_model"]["kind"] == "task"
    assert model.predict_costs("any prompt") == (model.predict("any prompt"), model.costs)


def _two_tasks(n: int = 120) -> Labelled:
    """Chat and code prompts; the big family's calls cost 5× more on code (long
    answers), the small one's cost grows with the prompt's length."""
    base = synthetic(n)
    rng = np.random.default_rng(1)
    items: list[str | bytes] = []
    labels, groups, costs = [], [], []
    for i, item in enumerate(base.items):
        code = i % 3 == 0
        text = f"def f_{i}(): return {i}  # code task" + " pad" * (i % 7) if code else item
        items.append(text)
        groups.append("code" if code else "chat")
        labels.append([float(rng.random() < 0.3), 1.0] if code else list(base.labels[i]))
        costs.append([0.0005 + 0.002 * len(str(text)) / 1000, 0.05 if code else 0.01])
    return Labelled(items, base.ids, base.families, np.array(labels), np.array(costs), groups)


def test_cost_models_price_per_task_and_per_prompt() -> None:
    data = _two_tasks()
    cluster = np.array([0 if g == "chat" else 1 for g in data.groups])
    chars = prompt_chars(data.items)
    assert list(chars) == [len(str(t)) for t in data.items]
    assert (
        prompt_chars([orjson.dumps({"messages": [{"role": "user", "content": "héllo"}]})])[0] == 5
    )
    a, s = fit_cost_model("global", data.costs, cluster, 2, chars)
    assert np.allclose(a, np.tile(data.costs.mean(axis=0), (2, 1))) and not s.any()
    a, s = fit_cost_model("task", data.costs, cluster, 2, chars)
    assert np.allclose(a[:, 1], [0.01, 0.05]) and not s.any()
    a, s = fit_cost_model("prompt", data.costs, cluster, 2, chars)
    assert s == pytest.approx([0.002, 0.0], abs=1e-9)
    assert a == pytest.approx(np.array([[0.0005, 0.01], [0.0005, 0.05]]), abs=1e-9)
    pi = np.array([[1.0, 0.0], [0.25, 0.75]])
    got = predict_costs(pi, np.array([1000.0, 0.0]), a, s)
    assert got == pytest.approx(np.array([[0.0025, 0.01], [0.0005, 0.04]]), abs=1e-9)
    assert predict_costs(pi, np.zeros(2), -a, s).min() == 0.0  # never negative
    with pytest.raises(ValueError, match="cost must be one of"):
        fit_cost_model("median", data.costs, cluster, 2, chars)
    with pytest.raises(ValueError, match="cost must be one of"):
        train(data, reference="big", cost="median")


@pytest.mark.parametrize("kind", ["task", "prompt"])
def test_version_4_core_prices_each_prompt_as_training_does(kind: str) -> None:
    """The core's per-prompt costs are the file's cost model over its own gate; eval
    routes with them; the same file as version 3 (no cost model) still loads and is
    priced at the mean costs."""
    from tiergate.classifier import evaluate as ev

    data = _two_tasks()
    doc = train(data, reference="big", c=4.0, floors=(0.9, 0.95), model="gated", cost=kind)
    cm = doc["operating_points"]["cost_model"]
    assert doc["version"] == 4 and cm["kind"] == kind and cm["clusters"] == ["chat", "code"]
    model = _core.QualityModel.from_json(orjson.dumps(doc))
    assert model.version == 4
    prompts: list[str | bytes] = [
        "def f_999(): return 999  # code task pad pad",
        "What colour are boats? quick question 999",
        orjson.dumps({"messages": [{"role": "user", "content": "def f_1(): return 1  # code"}]}),
    ]
    probs, priced = ev.score_matrix(model, prompts)
    assert probs == pytest.approx(ev.predict_matrix(model, prompts))
    # numpy from the file: π from the latent gate scores
    u = np.array([model.latent(p) for p in prompts])
    z = u[:, doc["head"]["gate"]]
    pi = np.exp(z - z.max(axis=1, keepdims=True))
    pi /= pi.sum(axis=1, keepdims=True)
    a = np.array(cm["intercepts"]).reshape(2, 2)
    want = predict_costs(pi, prompt_chars(prompts), a, np.array(cm["per_kchar"]))
    assert priced == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert priced[0, 1] > 3 * priced[1, 1]  # code prompts: the big family's long answers
    # eval routes with the per-prompt costs
    result = ev.evaluate(model, doc, data, "big", 0.95)
    p_all, c_all = ev.score_matrix(model, data.items)
    lam = model.cost_weight(0.95)
    choice = route_utility(p_all, c_all, lam)
    share = {f: round(float((choice == j).mean()), 4) for j, f in enumerate(data.families)}
    assert result["routed_share"] == {f: v for f, v in share.items() if v > 0}
    # a version-3 file (no cost model) loads, priced at the mean cost per call
    v3 = dict(doc, version=3)
    v3["operating_points"] = {k: v for k, v in doc["operating_points"].items() if k != "cost_model"}
    old = _core.QualityModel.from_json(orjson.dumps(v3))
    assert old.version == 3 and old.predict(prompts[0]) == model.predict(prompts[0])
    assert old.predict_costs(prompts[0])[1] == old.costs == doc["operating_points"]["cost_usd"]
    # version 4 without its cost model is refused, naming the field
    with pytest.raises(ValueError, match="cost_model"):
        _core.QualityModel.from_json(orjson.dumps(dict(v3, version=4)))


def test_linear_model_is_version_2_and_learns_too() -> None:
    doc = train(synthetic(), reference="big", c=4.0, floors=(0.95,), model="linear")
    assert doc["version"] == 2 and "intercepts" in doc and "latent" not in doc
    model = _core.QualityModel.from_json(orjson.dumps(doc))
    easy = model.predict("What colour are boats? quick question 999")
    hard = model.predict("Prove the integral identity 999 step by step about boats ∫ theorem")
    assert easy[0] > 0.7 and hard[0] < 0.4


def _doc_predict(doc: dict[str, Any], items: list[str | bytes]) -> np.ndarray:
    """A version-3 model file's probabilities computed from its JSON with numpy."""
    from tiergate.classifier.train import feature_matrix

    x = feature_matrix(items, orjson.dumps(doc["features"]).decode())
    lat = doc["latent"]
    h = len(lat["names"])
    w = np.zeros((x.shape[1], h))
    w[lat["weights"]["rows"]] = np.array(lat["weights"]["values"]).reshape(-1, h)
    u = x @ w + np.array(lat["intercepts"])
    head = doc["head"]
    k = len(doc["families"])
    g = max(len(head["gate"]), 1)
    if head["gate"]:
        z = u[:, head["gate"]]
        pi = np.exp(z - z.max(axis=1, keepdims=True))
        pi /= pi.sum(axis=1, keepdims=True)
    else:
        pi = np.ones((len(items), 1))
    bias = np.array(head["bias"]).reshape(k, g)
    coef = np.array(head["coef"]).reshape(k, g, len(head["inputs"]))
    logits = pi @ bias.T + np.einsum("nc,fcm,nm->nf", pi, coef, u[:, head["inputs"]])
    cal = doc["calibration"]
    return np.asarray(1 / (1 + np.exp(-(np.array(cal["a"]) * logits + np.array(cal["b"])))))


def test_gated_model_gates_by_group_and_serves_what_it_trained() -> None:
    """Two groups with different skills: the gate picks the group, the per-group
    difficulty separates easy from hard within it; the core's probabilities equal the
    ones computed from the file with numpy."""
    base = synthetic(120)
    rng = np.random.default_rng(1)
    items: list[str | bytes] = []
    labels = []
    groups = []
    for i, item in enumerate(base.items):
        code = i % 3 == 0
        items.append(f"def f_{i}(): return {i}  # code task" if code else item)
        groups.append("code" if code else "chat")
        labels.append([float(rng.random() < 0.3), 1.0] if code else list(base.labels[i]))
    data = Labelled(items, base.ids, base.families, np.array(labels), base.costs, groups)
    doc = train(data, reference="big", c=4.0, floors=(0.95,), model="gated")
    assert doc["version"] == 4 and doc["training"]["clusters"] == ["chat", "code"]
    assert doc["latent"]["names"] == [
        "gate:chat", "gate:code", "difficulty:chat", "difficulty:code"
    ]  # fmt: skip
    model = _core.QualityModel.from_json(orjson.dumps(doc))
    prompts: list[str | bytes] = [
        "def f_999(): return 999  # code task",
        "What colour are boats? quick question 999",
        "Prove the integral identity 999 step by step about boats ∫ theorem",
    ]
    got = np.array([model.predict(p) for p in prompts])
    assert got[0, 0] < 0.5 and got[1, 0] > 0.7 and got[2, 0] < 0.4
    assert got == pytest.approx(_doc_predict(doc, prompts), abs=1e-5)


def test_auto_keeps_the_model_with_the_better_cv_saving() -> None:
    doc = train(synthetic(), reference="big", c=4.0, floors=(0.9, 0.95), model="auto")
    sel = doc["training"]["selection"]
    assert sel["floor"] == 0.95 and sel["chosen"] in ("gated", "linear")
    assert doc["version"] == (4 if sel["chosen"] == "gated" else 2)
    if sel["chosen"] == "gated":
        assert sel["gated"]["cv_saving"] > (sel["linear"] or {"cv_saving": -1})["cv_saving"]
    row = next(r for r in doc["operating_points"]["table"] if r["floor"] == 0.95)
    keys = ("cv_accuracy_ratio", "cv_ratio_lower", "cv_saving")
    assert sel[sel["chosen"]] == {k: row[k] for k in keys}
    # the chosen model's operating point passed the same bound rule as the table's
    assert row["reachable"] and row["cv_ratio_lower"] >= 0.95 - 1e-9
    _core.QualityModel.from_json(orjson.dumps(doc))


def test_default_model_is_the_gated_one_at_the_stricter_bound() -> None:
    # chosen on outer splits of the RouterBench training part (train.py docstring)
    assert CONFIDENCE == 0.975
    doc = train(synthetic(), reference="big", c=4.0, floors=(0.95,))
    assert doc["version"] == 4 and "selection" not in doc["training"]
    bound = doc["operating_points"]["bound"]
    assert bound["confidence"] == 0.975 and bound["percentile"] == 2.5


def test_gated_model_without_groups_has_no_gate() -> None:
    doc = train(synthetic(), reference="big", c=4.0, floors=(0.95,), model="gated")
    assert doc["head"]["gate"] == [] and doc["latent"]["names"] == ["difficulty:"]
    model = _core.QualityModel.from_json(orjson.dumps(doc))
    prompts: list[str | bytes] = ["What colour are boats? quick question 999", "Prove it ∫"]
    got = np.array([model.predict(p) for p in prompts])
    assert got == pytest.approx(_doc_predict(doc, prompts), abs=1e-5)


def _cv_setup(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Noisy per-prompt predictions over 3 families with very different costs."""
    rng = np.random.default_rng(seed)
    n = 600
    skill = np.array([0.55, 0.75, 0.9])
    labels = (rng.random((n, 3)) < skill).astype(float)
    probs = np.clip(skill + 0.25 * (labels - skill) + rng.normal(0, 0.1, (n, 3)), 0.01, 0.99)
    mean_cost = np.array([0.0002, 0.001, 0.01])
    costs = np.tile(mean_cost, (n, 1)) * rng.uniform(0.5, 1.5, (n, 3))
    return probs, labels, costs, mean_cost


def _lower(probs: np.ndarray, labels: np.ndarray, mean_cost: np.ndarray, lam: float) -> float:
    """The bound for one λ, computed the slow way: explicit paired resamples of indices."""
    rows = np.arange(len(labels))
    routed = labels[rows, route_utility(probs, mean_cost, lam)]
    idx = np.random.default_rng(0).integers(0, len(labels), size=(BOOTSTRAP_RESAMPLES, len(labels)))
    ratios = routed[idx].mean(axis=1) / labels[idx, 2].mean(axis=1)
    return float(np.quantile(ratios, 1 - CONFIDENCE))


def test_bound_is_the_paired_bootstrap_percentile() -> None:
    probs, labels, _, mean_cost = _cv_setup()
    rows = np.arange(len(labels))
    counts = bootstrap_counts(len(labels))
    assert counts.shape == (BOOTSTRAP_RESAMPLES, len(labels))
    assert (counts.sum(axis=1) == len(labels)).all()
    for lam in (0.0, 10.0, 100.0):
        routed = labels[rows, route_utility(probs, mean_cost, lam)]
        got = ratio_lower_bound(routed[:, None], labels[:, 2], counts, CONFIDENCE)
        assert got[0] == pytest.approx(_lower(probs, labels, mean_cost, lam), abs=1e-12)
        assert got[0] < routed.mean() / labels[:, 2].mean()  # a lower bound


def test_lambda_is_monotone_in_the_floor_and_meets_the_bound() -> None:
    probs, labels, costs, mean_cost = _cv_setup()
    floors = [0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99, 1.0]
    table = calibrate_lambda(probs, labels, costs, mean_cost, 2, floors)
    lams = [r["lambda"] for r in table]
    assert lams == sorted(lams, reverse=True)  # non-increasing in F
    assert lams[0] > lams[-1]
    ref_acc = labels[:, 2].mean()
    rows = np.arange(len(labels))
    for floor, row in zip(floors, table, strict=True):
        choice = route_utility(probs, mean_cost, row["lambda"])
        acc = labels[rows, choice].mean()
        if row["reachable"]:
            # the stored point's lower bound reaches F on the predictions it was chosen
            # on, and so does every smaller λ of the grid
            assert row["cv_ratio_lower"] >= floor - 1e-9
            assert row["cv_ratio_lower"] == pytest.approx(
                _lower(probs, labels, mean_cost, row["lambda"]), abs=1e-4
            )
            assert row["cv_accuracy_ratio"] == pytest.approx(acc / ref_acc, abs=1e-4)
            for lam in LAMBDA_GRID[row["lambda"] >= LAMBDA_GRID][::100]:
                assert _lower(probs, labels, mean_cost, float(lam)) >= floor - 1e-9
        else:
            assert row["lambda"] == 0.0


def test_bootstrap_bound_is_more_cautious_than_the_point_estimate() -> None:
    """On noisy predictions (few prompts, labels barely predictable), the bound rule
    stops at a smaller λ than the point-estimate rule, which keeps a higher routed
    accuracy; and its λ falls as the floor rises."""
    rng = np.random.default_rng(7)
    n = 300
    skill = np.array([0.6, 0.75, 0.88])
    labels = (rng.random((n, 3)) < skill).astype(float)
    probs = np.clip(skill + 0.25 * (labels - skill) + rng.normal(0, 0.1, (n, 3)), 0.01, 0.99)
    mean_cost = np.array([0.0002, 0.001, 0.01])
    costs = np.tile(mean_cost, (n, 1))
    floors = [0.8, 0.85, 0.9, 0.93, 0.95]
    bound = calibrate_lambda(probs, labels, costs, mean_cost, 2, floors)
    point = calibrate_lambda(probs, labels, costs, mean_cost, 2, floors, confidence=None)
    for b, p in zip(bound, point, strict=True):
        assert b["reachable"] and p["reachable"]
        assert b["lambda"] < p["lambda"]
        assert b["cv_accuracy_ratio"] >= p["cv_accuracy_ratio"]
        assert b["cv_saving"] <= p["cv_saving"]
        assert p["cv_ratio_lower"] == p["cv_accuracy_ratio"]  # no bound: the estimate
    lams = [r["lambda"] for r in bound]
    assert all(a > b for a, b in itertools.pairwise(lams))  # strictly falling here


def test_trained_operating_point_meets_the_bound_on_its_cv_rows() -> None:
    data = synthetic(160, seed=3)
    doc = train(data, reference="big", c=4.0, floors=(0.8, 0.9, 0.95))
    op = doc["operating_points"]
    assert "margin" not in op
    assert {k: op["bound"][k] for k in ("confidence", "resamples", "seed")} == {
        "confidence": CONFIDENCE,
        "resamples": BOOTSTRAP_RESAMPLES,
        "seed": 0,
    }
    table = op["table"]
    lams = [r["lambda"] for r in table]
    assert lams == sorted(lams, reverse=True)
    for r in table:
        if r["reachable"]:
            assert r["cv_ratio_lower"] >= r["floor"] - 1e-9
            assert r["cv_accuracy_ratio"] >= r["cv_ratio_lower"]


def test_eval_never_retunes_on_its_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tiergate.classifier import evaluate as ev
    from tiergate.classifier import train as tr

    doc = train(synthetic(), reference="big", c=4.0, floors=(0.9, 0.95))
    path = tmp_path / "m.json"
    path.write_bytes(orjson.dumps(doc))
    model, loaded = ev.load_model(path)

    def boom(*_: object, **__: object) -> None:
        raise AssertionError("evaluation must not calibrate")

    monkeypatch.setattr(tr, "calibrate_lambda", boom)
    other = synthetic(80, seed=9)
    result = ev.evaluate(model, loaded, other, "big", 0.95)
    assert result["rule"] == "utility"
    assert result["lambda"] == pytest.approx(model.cost_weight(0.95))
    # the decisions are the stored rule's, whatever the evaluated labels say
    flipped = Labelled(other.items, other.ids, other.families, 1 - other.labels, other.costs)
    again = ev.evaluate(model, loaded, flipped, "big", 0.95)
    assert again["lambda"] == result["lambda"]
    assert again["routed_share"] == result["routed_share"]


def test_version_1_files_still_route_by_the_threshold_rule() -> None:
    from tiergate.classifier import evaluate as ev

    doc = train(synthetic(), reference="big", c=4.0, floors=(0.95,), model="linear")
    v1 = dict(doc, version=1)
    v1["operating_points"] = {"table": [{"floor": 0.95, "offset": 0.0}]}
    model = _core.QualityModel.from_json(orjson.dumps(v1))
    assert model.rule == "threshold" and model.costs == [] and model.cost_weight(0.95) == 0
    assert model.predict_costs("a prompt") == (model.predict("a prompt"), [])
    result = ev.evaluate(model, v1, synthetic(40, seed=5), "big", 0.95)
    assert result["rule"] == "threshold" and result["offset"] == 0.0


def test_records_jsonl_train_per_tenant(tmp_path: Path) -> None:
    data = synthetic(60)
    lines: list[dict[str, Any]] = []
    for i, item in enumerate(data.items):
        for j, fam in enumerate(data.families):
            lines.append(
                {"id": str(i), "prompt": item, "family": fam, "score": float(data.labels[i, j]),
                 "cost_usd": float(data.costs[i, j]), "tenant": "a" if i % 3 else "b"}
            )  # fmt: skip
    lines.append({"id": "x", "prompt": "unscored", "family": "small", "score": None})
    path = tmp_path / "records.jsonl"
    path.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    every = load_dir(tmp_path)
    assert len(every) == 60 and every.skipped == 1 and every.families == ["big", "small"]
    only_a = load_records([path], tenant="a")
    assert len(only_a) == 40
    doc = train(only_a, floors=(0.95,))
    assert doc["operating_points"]["method"] == "cross-validation"
    _core.QualityModel.from_json(orjson.dumps(doc))


def _csv(tmp_path: Path, body: str) -> Path:
    d = tmp_path / "data"
    d.mkdir(exist_ok=True)
    (d / "set.csv").write_text(HEADER + body, encoding="utf-8")
    return d


def test_empty_labels_are_skipped_and_counted(tmp_path: Path) -> None:
    d = _csv(
        tmp_path,
        "0,s0,\"['Q one?']\",e,1.0,1.0,a,b,0.1,0.2\n"
        "1,s1,\"['Q two']\",e,,1.0,a,b,0.1,0.2\n"
        "2,s2,\"['Q three']\",e,0.0,1.0,a,b,0.1,0.2\n",
    )
    data = load_dir(d)
    assert len(data) == 2 and data.skipped == 1
    assert data.items == ["Q one?", "Q three"]


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ("0,s0,\"['Q']\",e,1.0,1.0,a,b,0.1\n", "set.csv:2: 9 cells, the header has 10"),
        ("0,s0,\"['Q']\",e,yes,1.0,a,b,0.1,0.2\n", "set.csv:2:"),
        ("0,s0,\"['Q']\",e,2.0,1.0,a,b,0.1,0.2\n", "set.csv:2: labels must be 0 or 1"),
        ("0,s0,\"['Q']\",e,1.0,1.0,a,b,cheap,0.2\n", "set.csv:2:"),
    ],
)
def test_malformed_csv_names_file_and_line(tmp_path: Path, row: str, needle: str) -> None:
    d = _csv(tmp_path, "0,s0,\"['ok']\",e,1.0,1.0,a,b,0.1,0.2\n".replace("0,s0", "9,s9") + row)
    with pytest.raises(DataError, match=needle.replace("2:", "3:")):
        load_dir(d)


def test_malformed_jsonl_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "r.jsonl").write_text('{"prompt": "a", "family": "x", "score": 1}\n{oops\n')
    with pytest.raises(DataError, match=r"r\.jsonl:2: invalid JSON"):
        load_dir(tmp_path)
    (tmp_path / "r.jsonl").write_text('{"prompt": "a", "family": "x", "score": 7}\n')
    with pytest.raises(DataError, match=r"r\.jsonl:1: `score`"):
        load_dir(tmp_path)


def test_cli_reports_a_bad_file_without_a_traceback(tmp_path: Path) -> None:
    d = _csv(tmp_path, "0,s0,\"['Q']\",e,1.0\n")
    proc = subprocess.run(
        [sys.executable, "-m", "tiergate.cli", "classifier", "train", "--data", str(d),
         "--out", str(tmp_path / "m.json")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "set.csv:2:" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.shared
def test_cli_train_and_eval_on_routerbench(routing_data: Path, tmp_path: Path) -> None:
    # Train on the 25% split (fast), evaluate on the other 75%: never seen.
    src = routing_data / "routerbench"
    seen, unseen = tmp_path / "small", tmp_path / "rest"
    split_csvs(src, unseen, seen)
    model = tmp_path / "model.json"
    cli = [sys.executable, "-m", "tiergate.cli", "classifier"]
    proc = subprocess.run(
        [*cli, "train", "--data", str(seen), "--out", str(model),
         "--reference", "gpt-4-1106-preview", "--floor", "0.95"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(
        [*cli, "eval", "--model", str(model), "--data", str(unseen),
         "--reference", "gpt-4-1106-preview", "--floor", "0.95", "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["n"] > 1500
    for key in ("router", "reference", "oracle"):
        assert set(out[key]) >= {"accuracy", "cost_usd"}
    assert out["saving"] == pytest.approx(
        1 - out["router"]["cost_usd"] / out["reference"]["cost_usd"]
    )
    assert out["accuracy_ratio"] == pytest.approx(
        out["router"]["accuracy"] / out["reference"]["accuracy"]
    )
    assert (
        out["best_single"] is None
        or out["best_single"]["accuracy"] >= 0.95 * out["reference"]["accuracy"]
    )
    # Trained on ~550 prompts, the bootstrap bound is wide (the 5th percentile of the
    # ratio sits ~0.02 under its estimate), so the operating point trades saving for the
    # floor: it must keep the floor on the unseen 75% (within noise) and still save a
    # real share. (Under the former fixed margin this asserted ratio > 0.85 and
    # saving > 0.4; the bound rule gives ratio 0.992 / saving 28% here.)
    assert out["accuracy_ratio"] > 0.93 and out["saving"] > 0.2
    assert out["oracle"]["accuracy"] >= out["router"]["accuracy"]
