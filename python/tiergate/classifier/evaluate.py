"""Evaluation: route every prompt of a labelled set with a model file's stored operating
point (never re-tuned on the evaluated data) and compare with the reference model, the
best single model and the oracle.

Routing, per prompt, among the families of both the model and the data, by the rule the
model file names, with the costs the model predicts from the training data (the router
cannot know a prompt's actual cost before the call):

* utility (versions 2 to 4, :func:`tiergate.classifier.train.route_utility`): the
  family maximising ``q − λ(F) · c``, ``λ(F)`` from the stored table, ``c`` what the
  core prices the family at for the prompt (``QualityModel.predict_costs``: version
  4's predicted cost per call for the prompt — from its task gate and length — the
  mean cost per call before), as the sidecar's planner does;
* threshold (version 1, :func:`tiergate.classifier.train.route`): the cheapest family
  whose predicted quality passes ``q ≥ clamp(F · q_best − offset(F), 0, q_best)``.

Accuracy and cost are then the data's own for the chosen family.

* ``best_single``: the cheapest family (by its total cost on the data) whose accuracy
  reaches ``F`` × the reference's; ``None`` when none does.
* ``oracle``: per prompt the cheapest family that answered correctly (by that prompt's
  actual cost), or the cheapest family when none did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson

from tiergate import _core
from tiergate.classifier.data import DataError, Labelled
from tiergate.classifier.train import route, route_utility

__all__ = [
    "decide",
    "evaluate",
    "load_model",
    "plot_curve",
    "point_label",
    "predict_matrix",
    "score_matrix",
    "table",
]

Array = np.ndarray[Any, Any]


def load_model(path: Path) -> tuple[_core.QualityModel, dict[str, Any]]:
    raw = path.read_bytes()
    return _core.QualityModel.from_json(raw), orjson.loads(raw)


def predict_matrix(model: _core.QualityModel, items: list[str | bytes]) -> Array:
    return np.array([model.predict(it) for it in items], dtype=np.float64).reshape(
        len(items), len(model)
    )


def score_matrix(model: _core.QualityModel, items: list[str | bytes]) -> tuple[Array, Array]:
    """``(probs, costs)``, each ``(len(items), len(model))``: ``predict_costs`` per item
    (costs are empty, ``(n, 0)``, for a version-1 model)."""
    scored = [model.predict_costs(it) for it in items]
    k = len(model)
    probs = np.array([p for p, _ in scored], dtype=np.float64).reshape(len(items), k)
    width = len(scored[0][1]) if scored else 0
    costs = np.array([c for _, c in scored], dtype=np.float64).reshape(len(items), width)
    return probs, costs


def _columns(model: _core.QualityModel, data: Labelled) -> tuple[list[int], list[int]]:
    fams = [f for f in model.families if f in data.families]
    if not fams:
        raise DataError(f"no family of the model {model.families} is in the data")
    return [model.families.index(f) for f in fams], [data.families.index(f) for f in fams]


def decide(
    model: _core.QualityModel,
    doc: dict[str, Any],
    data: Labelled,
    floor: float,
    probs: Array | None = None,
    priced: Array | None = None,
) -> tuple[Labelled, list[int], Array, float]:
    """The router's choice per prompt: ``(kept, dcols, choice, point)`` — the prompts
    with every label and cost, the data's column of each family both sides know, the
    index into ``dcols`` chosen for each kept prompt, and the stored operating point
    (``λ(F)`` or ``offset(F)``) it was made with."""
    keep = data.complete() & ~np.isnan(data.costs).any(axis=1)
    if probs is None or priced is None:
        probs, priced = score_matrix(model, data.items)
    probs, priced = probs[keep], priced[keep]
    data = data.subset(keep)
    mcols, dcols = _columns(model, data)
    p = probs[:, mcols]
    if model.rule == "utility":
        point = model.cost_weight(floor)
        return data, dcols, route_utility(p, priced[:, mcols], point, floor), point
    costs = data.costs[:, dcols]
    mean_cost_map = doc.get("mean_cost_usd", {})
    mean_cost = np.array(
        [
            float(mean_cost_map.get(data.families[j], np.nanmean(costs[:, i])))
            for i, j in enumerate(dcols)
        ]
    )
    point = model.offset(floor)
    return data, dcols, route(p, mean_cost, floor, point), point


def evaluate(
    model: _core.QualityModel,
    doc: dict[str, Any],
    data: Labelled,
    reference: str,
    floor: float,
    probs: Array | None = None,
    priced: Array | None = None,
) -> dict[str, Any]:
    """The summary ``tiergate classifier eval --json`` prints. ``probs`` and ``priced``
    (:func:`score_matrix` of ``data.items``, computed when not given): the model's
    predictions and the costs it prices each family at, per prompt."""
    if reference not in data.families:
        raise DataError(f"reference {reference!r} is not a model of the data {data.families}")
    data, dcols, choice, point = decide(model, doc, data, floor, probs, priced)
    labels = data.labels[:, dcols]
    costs = data.costs[:, dcols]
    fams = [data.families[j] for j in dcols]
    rows = np.arange(len(choice))
    router_acc = float(labels[rows, choice].mean())
    router_cost = float(costs[rows, choice].sum())
    ref = data.families.index(reference)
    ref_acc = float(data.labels[:, ref].mean())
    ref_cost = float(data.costs[:, ref].sum())
    singles = [
        (float(costs[:, j].sum()), float(labels[:, j].mean()), fams[j]) for j in range(len(fams))
    ]
    good = sorted(s for s in singles if s[1] >= floor * ref_acc)
    best_single = (
        {"model": good[0][2], "accuracy": good[0][1], "cost_usd": good[0][0]} if good else None
    )
    # oracle: cheapest correct by actual cost, else cheapest
    masked = np.where(labels > 0, costs, np.inf)
    oc = masked.argmin(axis=1)
    none = ~(labels > 0).any(axis=1)
    oc[none] = costs[none].argmin(axis=1)
    share = {f: round(float((choice == j).mean()), 4) for j, f in enumerate(fams)}
    return {
        "n": len(data),
        "skipped": data.skipped,
        "floor": floor,
        "rule": model.rule,
        # λ(F) of the utility rule, offset(F) of the threshold rule
        "lambda" if model.rule == "utility" else "offset": point,
        "router": {"accuracy": router_acc, "cost_usd": router_cost},
        "reference": {"model": reference, "accuracy": ref_acc, "cost_usd": ref_cost},
        "saving": 1 - router_cost / ref_cost if ref_cost else 0.0,
        "accuracy_ratio": router_acc / ref_acc if ref_acc else 0.0,
        "best_single": best_single,
        "oracle": {
            "accuracy": float(labels[rows, oc].mean()),
            "cost_usd": float(costs[rows, oc].sum()),
        },
        "routed_share": {f: s for f, s in share.items() if s > 0},
    }


def curve(
    model: _core.QualityModel,
    doc: dict[str, Any],
    data: Labelled,
    reference: str,
    probs: Array,
    priced: Array,
) -> list[tuple[float, float, float]]:
    """(floor, cost, accuracy) of the router over a range of floors."""
    out = []
    for f in np.round(np.arange(0.5, 1.0001, 0.01), 2):
        r = evaluate(model, doc, data, reference, float(f), probs, priced)
        out.append((float(f), r["router"]["cost_usd"], r["router"]["accuracy"]))
    return out


def point_label(result: dict[str, Any]) -> str:
    if "lambda" in result:
        return f"utility rule, λ {result['lambda']:.4g}"
    return f"threshold rule, offset {result['offset']:+.4f}"


def table(result: dict[str, Any]) -> str:
    def row(name: str, acc: float, cost: float) -> str:
        return f"  {name:<34} {acc:>9.4f} {cost:>11.4f}"

    ref = result["reference"]
    lines = [
        f"n={result['n']} prompts (skipped {result['skipped']} with empty labels), "
        f"floor {result['floor']}, {point_label(result)}",
        f"  {'':<34} {'accuracy':>9} {'cost USD':>11}",
        row("router", result["router"]["accuracy"], result["router"]["cost_usd"]),
        row(f"reference ({ref['model']})", ref["accuracy"], ref["cost_usd"]),
    ]
    bs = result["best_single"]
    lines.append(
        row(f"best single ({bs['model']})", bs["accuracy"], bs["cost_usd"])
        if bs
        else f"  {'best single':<34} none reaches {result['floor']} × reference"
    )
    lines.append(row("oracle", result["oracle"]["accuracy"], result["oracle"]["cost_usd"]))
    lines.append(
        f"accuracy ratio {result['accuracy_ratio']:.4f}, saving {result['saving']:.1%} "
        f"vs the reference; routed: "
        + ", ".join(f"{k} {v:.0%}" for k, v in sorted(result["routed_share"].items()))
    )
    return "\n".join(lines)


def plot_curve(
    out: Path,
    points: list[tuple[float, float, float]],
    data: Labelled,
    result: dict[str, Any],
) -> None:
    """Cost–accuracy curve of the router over floors, single models and the oracle."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keep = data.complete() & ~np.isnan(data.costs).any(axis=1)
    d = data.subset(keep)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    ax.plot(
        [p[1] for p in points], [p[2] for p in points], "-o", ms=3, label="router (floors 0.5–1)"
    )
    for j, f in enumerate(d.families):
        ax.scatter(d.costs[:, j].sum(), d.labels[:, j].mean(), marker="s", s=18)
        ax.annotate(f.split("/")[-1], (d.costs[:, j].sum(), d.labels[:, j].mean()), fontsize=7)
    ax.scatter(
        result["router"]["cost_usd"], result["router"]["accuracy"], c="red", s=60, zorder=5,
        label=f"router at floor {result['floor']}",
    )  # fmt: skip
    ax.scatter(
        result["oracle"]["cost_usd"], result["oracle"]["accuracy"], marker="*", s=120,
        label="oracle",
    )  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("total cost (USD, log)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"tiergate classifier: cost vs accuracy on {result['n']} prompts")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
