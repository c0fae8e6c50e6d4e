"""Training: one logistic regression per family over the core's features, Platt-calibrated
on out-of-fold scores, with operating points chosen by cross-validation.

1. Features: ``_core.features_batch`` — the same Rust code that scores at serving time.
2. ``folds``-fold cross-validation (KFold, shuffled, seed 0). Per fold and family a
   logistic regression (liblinear, L2, ``C``) on the rows labelled for that family; the
   out-of-fold scores of every row are kept. The served weights are the mean of the
   fold models' weights (so the scores the operating points were chosen on come from
   models like the served one).
3. Calibration: per family, Platt scaling ``p = σ(a·z + b)`` fitted on the out-of-fold
   scores.
4. Operating points (model file version 2, the utility rule), on the rows labelled
   for every family (the only rows where a routing policy can be scored offline).
   A prompt is served by the family maximising ``q − λ · c``, ``c`` being the family's
   mean cost per call in the training data (:func:`route_utility`). For each floor
   ``F`` of the table, ``λ(F)`` is the largest cost weight on a log grid
   (``LAMBDA_GRID``, scanned upwards from 0) before the cross-validated accuracy of the
   routed traffic (out-of-fold predictions) falls below ``(F + margin)`` × the
   reference family's accuracy; so every smaller λ on the grid meets the target too,
   and λ is non-increasing in ``F``. When even λ = 0 misses it, λ = 0 (the best
   prediction serves) and the row says ``reachable: false``. Without complete rows the
   table is empty (λ = 0).

Why not the version-1 threshold rule (``q ≥ F · q_best − offset(F)``, cheapest
feasible, still read by :func:`route`)? It constrains each request on its own, while
the floor is a promise about accuracy across the traffic: when predictions mostly
recognise the task, the utility rule spends the accuracy budget where a cheaper model
loses least per dollar saved (a Lagrangian relaxation of "minimise cost subject to
mean accuracy ≥ target").

Tried on the RouterBench split and not kept (figures at floor 0.95, margin 0.005:
cross-validated ratio / saving, then held-out ratio / saving measured after choosing on
the training data): C = 0.25 (kept) 0.956 / 69.9%, 0.934 / 69.5%; C = 0.05 0.956 /
69.9%, 0.946 / 68.6%; C = 1 0.956 / 70.2%, 0.923 / 74.7% (a CV search over C would pick
1 on a 0.3-point difference and overfit); isotonic calibration per family 0.955 /
57.9%; a per-task prior (task classifier × per-task accuracy) 0.969 / 66.3%; blends of
the two 0.955–0.957 / 69.3–70.5%. None is better beyond noise, so the simplest stays.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold

from tiergate import _core
from tiergate.classifier.data import Labelled

__all__ = [
    "DEFAULT_FLOORS",
    "FORMAT",
    "calibrate_lambda",
    "feature_matrix",
    "route",
    "route_utility",
    "train",
]

FORMAT = "tiergate.quality_model"
VERSION = 2
#: Cost weights λ tried (USD⁻¹; mean costs per call are ~1e-4..1e-2 USD).
LAMBDA_GRID = np.concatenate([[0.0], np.geomspace(0.01, 1e5, 1401)])
DEFAULT_FLOORS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99, 1.0)
Array = np.ndarray[Any, Any]


def feature_matrix(items: Sequence[str | bytes], config_json: str) -> Any:
    """CSR matrix ``(len(items), dim + len(STRUCTURE_FEATURES))`` from the core."""
    idx, val, ptr = _core.features_batch(items, config_json)
    width = _width(_core.feature_config(config_json))
    return sparse.csr_matrix(
        (
            np.frombuffer(val, dtype="<f4").astype(np.float64),
            np.frombuffer(idx, dtype="<i4"),
            np.frombuffer(ptr, dtype="<i8"),
        ),
        shape=(len(items), width),
    )


def _width(cfg_json: str) -> int:
    import orjson

    cfg = orjson.loads(cfg_json)
    return int(cfg["dim"]) + len(_core.STRUCTURE_FEATURES)


def route(probs: Array, mean_cost: Array, floor: float, offset: float) -> Array:
    """Per row, the index of the cheapest family (by ``mean_cost``) whose predicted
    quality passes the floor rule ``q ≥ clamp(F · q_best − offset, 0, q_best)``."""
    best = probs.max(axis=1, keepdims=True)
    thr = np.zeros_like(best) if floor <= 0 else np.clip(floor * best - offset, 0.0, best)
    ok = probs >= thr
    order = np.argsort(mean_cost, kind="stable")
    first = ok[:, order].argmax(axis=1)
    return np.asarray(order[first])


def route_utility(probs: Array, mean_cost: Array, lam: float, floor: float = 1.0) -> Array:
    """Per row, the family maximising ``q − lam · mean_cost`` (first on ties), as
    ``QualityModel.utility_choice``; with ``floor <= 0`` the cheapest."""
    if floor <= 0:
        return np.full(len(probs), int(np.argmin(mean_cost)))
    return np.asarray(np.argmax(probs - lam * mean_cost[None, :], axis=1))


def calibrate_lambda(
    probs: Array,
    labels: Array,
    costs: Array,
    mean_cost: Array,
    ref: int,
    floors: Sequence[float],
    margin: float,
) -> list[dict[str, Any]]:
    """The utility rule's table: per floor, λ and its cross-validated figures."""
    ref_acc = float(labels[:, ref].mean())
    ref_cost = float(costs[:, ref].sum())
    # Routed accuracy and cost along the grid, computed once for every floor.
    curve = [
        _score(route_utility(probs, mean_cost, float(lam)), labels, costs) for lam in LAMBDA_GRID
    ]
    table = []
    for floor in floors:
        target = (floor + margin) * ref_acc
        last = -1
        for i, (acc, _) in enumerate(curve):
            if acc < target:
                break
            last = i
        reachable = last >= 0
        i = max(last, 0)
        acc, cost = curve[i]
        table.append(
            {
                "floor": round(floor, 6),
                "lambda": float(f"{LAMBDA_GRID[i]:.6g}"),
                "reachable": reachable,
                "cv_accuracy_ratio": round(acc / ref_acc, 4) if ref_acc else None,
                "cv_saving": round(1 - cost / ref_cost, 4) if ref_cost else None,
            }
        )
    return table


def _score(choice: Array, labels: Array, costs: Array) -> tuple[float, float]:
    rows = np.arange(len(choice))
    return float(labels[rows, choice].mean()), float(costs[rows, choice].sum())


def _fit(x: Any, y: Array, c: float) -> tuple[Array, float]:
    if y.min() == y.max():  # one class: a constant score at the (clipped) rate
        rate = min(max(float(y.mean()), 0.02), 0.98)
        return np.zeros(x.shape[1]), math.log(rate / (1 - rate))
    m = LogisticRegression(C=c, solver="liblinear", max_iter=1000, random_state=0)
    m.fit(x, y)
    return np.asarray(m.coef_[0]), float(m.intercept_[0])


def _platt(z: Array, y: Array) -> tuple[float, float]:
    if y.min() == y.max():
        return 0.0, float(np.log((y.mean() + 0.02) / (1.02 - y.mean())))
    m = LogisticRegression(C=1e4, solver="lbfgs", max_iter=1000)
    m.fit(z.reshape(-1, 1), y)
    return float(m.coef_[0, 0]), float(m.intercept_[0])


def train(
    data: Labelled,
    *,
    reference: str | None = None,
    floor: float | None = None,
    features: dict[str, Any] | None = None,
    c: float = 0.25,
    folds: int = 5,
    margin: float = 0.005,
    floors: Sequence[float] = DEFAULT_FLOORS,
) -> dict[str, Any]:
    """The model file (a JSON-ready dict) for ``data``."""
    import orjson

    cfg_json = _core.feature_config(orjson.dumps(features or {}).decode())
    cfg = orjson.loads(cfg_json)
    x = feature_matrix(data.items, cfg_json)
    n, k = data.labels.shape
    if n < folds:
        raise ValueError(f"{n} labelled rows; cross-validation needs at least {folds}")
    if reference is None:
        reference = data.families[int(np.nanargmax(np.nanmean(data.labels, axis=0)))]
    if reference not in data.families:
        raise ValueError(f"reference {reference!r} is not a family of the data {data.families}")
    ref = data.families.index(reference)
    width = x.shape[1]
    coef = np.zeros((width, k))
    intercept = np.zeros(k)
    oof = np.full((n, k), np.nan)
    splits = list(KFold(folds, shuffle=True, random_state=0).split(np.arange(n)))
    for train_rows, test_rows in splits:
        for j in range(k):
            rows = train_rows[~np.isnan(data.labels[train_rows, j])]
            if len(rows) == 0:
                continue
            w, b = _fit(x[rows], data.labels[rows, j], c)
            coef[:, j] += w / folds
            intercept[j] += b / folds
            oof[test_rows, j] = x[test_rows] @ w + b
    platt_a = np.zeros(k)
    platt_b = np.zeros(k)
    for j in range(k):
        have = ~np.isnan(data.labels[:, j]) & ~np.isnan(oof[:, j])
        platt_a[j], platt_b[j] = _platt(oof[have, j], data.labels[have, j])
    probs = 1 / (1 + np.exp(-(platt_a * np.nan_to_num(oof) + platt_b)))
    mean_cost = np.array(
        [float(np.nanmean(col)) if (~np.isnan(col)).any() else 0.0 for col in data.costs.T]
    )
    complete = data.complete() & ~np.isnan(data.costs).any(axis=1)
    table_floors = sorted({*floors, *([floor] if floor is not None else [])})
    if complete.sum() >= folds:
        table = calibrate_lambda(
            probs[complete],
            data.labels[complete],
            data.costs[complete],
            mean_cost,
            ref,
            table_floors,
            margin,
        )
        method = "cross-validation"
    else:
        table, method = [], "uncalibrated (no rows labelled for every family)"
    nz = np.flatnonzero(np.abs(coef).max(axis=1) > 1e-8)
    return {
        "format": FORMAT,
        "version": VERSION,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "features": cfg,
        "families": list(data.families),
        "intercepts": [float(f"{v:.7g}") for v in intercept],
        "weights": {
            "rows": [int(i) for i in nz],
            "values": [float(f"{v:.6g}") for v in coef[nz].ravel()],
        },
        "calibration": {
            "method": "platt",
            "a": [float(f"{v:.7g}") for v in platt_a],
            "b": [float(f"{v:.7g}") for v in platt_b],
        },
        "mean_cost_usd": {
            f: float(f"{v:.6g}") for f, v in zip(data.families, mean_cost, strict=False)
        },
        "accuracy": {
            f: None if np.isnan(a) else round(float(a), 4)
            for f, a in zip(data.families, np.nanmean(data.labels, axis=0), strict=False)
        },
        "operating_points": {
            "rule": "utility",
            "description": "serve argmax over families of q - lambda(floor) * cost_usd",
            "cost_usd": [float(f"{v:.6g}") for v in mean_cost],
            "reference": reference,
            "method": method,
            "margin": margin,
            "default_floor": floor,
            "table": table,
        },
        "training": {
            "rows": n,
            "skipped_rows": data.skipped,
            "complete_rows": int(complete.sum()),
            "folds": folds,
            "C": c,
            "model": "logistic regression per family (liblinear, L2), mean of fold models",
        },
    }
