"""Learned classifier: scoring cost from Python beside an empty core call, and routing
figures on a held-out split of the RouterBench training data.

Held-out split: ``xxh64(sample_id) % 4 == 0`` (about 25%), never used for training or
for choosing the operating point (``tiergate.classifier.data.held_out``). The model is
trained on the rest, exactly as ``tiergate classifier train`` does, and cached under
the system temp directory so ``bench_routing_e2e`` reuses it.
"""

from __future__ import annotations

import hashlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from tiergate import _core

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "routing" / "routerbench"
REFERENCE = "gpt-4-1106-preview"
FLOOR = 0.95


def trained() -> tuple[Path, Path, Path]:
    """(model file, train dir, held-out dir), built once per data set version."""
    from tiergate.classifier.data import load_dir, split_csvs
    from tiergate.classifier.train import train

    digest = hashlib.sha256()
    for p in sorted(DATA.glob("*.csv")):
        digest.update(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}".encode())
    src = (REPO / "python" / "tiergate" / "classifier" / "train.py").read_bytes()
    digest.update(hashlib.sha256(src).digest())
    root = Path(tempfile.gettempdir()) / f"tiergate-bench-classifier-{digest.hexdigest()[:12]}"
    model = root / "model.json"
    train_dir, held_dir = root / "train", root / "held"
    if not model.exists():
        split_csvs(DATA, train_dir, held_dir)
        doc = train(load_dir(train_dir), reference=REFERENCE, floor=FLOOR)
        tmp = model.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(doc))
        tmp.replace(model)
    return model, train_dir, held_dir


def _per_call_ns(fn: Any, arg: Any, batches: int = 300, per: int = 200) -> list[float]:
    out = []
    for _ in range(batches):
        t = time.perf_counter_ns()
        for _ in range(per):
            fn(arg)
        out.append((time.perf_counter_ns() - t) / per)
    return out


def _noop_ns(batches: int = 300, per: int = 200) -> list[float]:
    noop = _core._noop
    out = []
    for _ in range(batches):
        t = time.perf_counter_ns()
        for _ in range(per):
            noop()
        out.append((time.perf_counter_ns() - t) / per)
    return out


def scoring(model: _core.QualityModel) -> list[str]:
    # A 2 KB prompt: an ARC-style few-shot prompt, as a chat-completions body.
    question = (
        "George wants to warm his hands quickly by rubbing them. Which skin surface will "
        "produce the most heat?\nA) dry palms\nB) wet palms\nC) palms covered with oil\n"
        "D) palms covered with lotion\nPrint only a single choice from A or B or C or D "
        "without explanation.\nAnswer:\nA\n\n"
    )
    text = (question * 8)[:2048]
    body = orjson.dumps(
        {"model": "auto", "messages": [{"role": "user", "content": text}], "max_tokens": 64}
    )
    _per_call_ns(model.predict, body, 20, 50)  # warm up
    noop = _noop_ns()
    body_ns = _per_call_ns(model.predict, body)
    cost_ns = _per_call_ns(model.predict_costs, body)
    text_ns = _per_call_ns(model.predict, text)
    med = statistics.median
    return [
        f"Scoring one request for all {len(model)} families from Python, prompt of "
        f"{len(text)} bytes (median per call over 300 batches of 200, same run):",
        "",
        "| call | median µs | vs `_noop()` |",
        "|---|---:|---:|",
        f"| `_core._noop()` | {med(noop) / 1000:.3f} | 1× |",
        f"| `QualityModel.predict(body: bytes)` | {med(body_ns) / 1000:.2f} | "
        f"{med(body_ns) / med(noop):.0f}× |",
        f"| `QualityModel.predict_costs(body: bytes)` (the planner's call) | "
        f"{med(cost_ns) / 1000:.2f} | {med(cost_ns) / med(noop):.0f}× |",
        f"| `QualityModel.predict(text: str)` | {med(text_ns) / 1000:.2f} | "
        f"{med(text_ns) / med(noop):.0f}× |",
        "",
        f"Target ≤ 20 µs median: {'met' if max(med(body_ns), med(cost_ns)) <= 20_000 else 'NOT met'}"
        " (`predict_costs` also returns the per-prompt cost of each family, version 4).",
    ]


def _model_line(doc: dict[str, Any]) -> str:
    t = doc["training"]
    sel = t.get("selection")
    if doc["version"] >= 3:
        cm = doc["operating_points"].get("cost_model")
        kind = f"gated (version {doc['version']}" + (
            f", costs per call predicted by the `{cm['kind']}` cost model)" if cm else ")"
        )
    else:
        kind = f"linear (version {doc['version']})"
    if not sel:
        return kind
    figs = ", ".join(
        f"{k} {v['cv_accuracy_ratio']} (bound {v['cv_ratio_lower']}) / {v['cv_saving']:.1%}"
        if v
        else f"{k}: bound below the floor"
        for k, v in sel.items()
        if k in ("gated", "linear")
    )
    return (
        f"{kind}, chosen by `train` between the gated and the linear model on their "
        f"cross-validated saving at floor {sel['floor']}, each at the operating point the "
        f"bound rule picks for it (ratio (95% lower bound) / saving: {figs})."
    )


def _pct(x: float | None) -> str:
    return "infeasible" if x is None else f"{x:.1%}"


def _fmt(r: dict[str, Any]) -> list[str]:
    from tiergate.classifier.evaluate import point_label

    bs = r["best_single"]
    return [
        "| policy | accuracy | cost USD | accuracy ratio | saving |",
        "|---|---:|---:|---:|---:|",
        f"| router (floor {r['floor']}, {point_label(r)}) | {r['router']['accuracy']:.4f}"
        f" | {r['router']['cost_usd']:.4f} | {r['accuracy_ratio']:.4f} | {r['saving']:.1%} |",
        f"| reference `{r['reference']['model']}` | {r['reference']['accuracy']:.4f} | "
        f"{r['reference']['cost_usd']:.4f} | 1 | 0% |",
        (
            f"| best single `{bs['model']}` | {bs['accuracy']:.4f} | {bs['cost_usd']:.4f} | "
            f"{bs['accuracy'] / r['reference']['accuracy']:.4f} | "
            f"{1 - bs['cost_usd'] / r['reference']['cost_usd']:.1%} |"
            if bs
            else f"| best single | none reaches {r['floor']} × reference | | | |"
        ),
        f"| oracle | {r['oracle']['accuracy']:.4f} | {r['oracle']['cost_usd']:.4f} | "
        f"{r['oracle']['accuracy'] / r['reference']['accuracy']:.4f} | "
        f"{1 - r['oracle']['cost_usd'] / r['reference']['cost_usd']:.1%} |",
    ]


def task_bound(data: Any, reference: str, floor: float) -> float | None:
    """The largest saving any policy that routes by task alone (the data's
    ``eval_name``; a share of each task's prompts to each model, chosen with the
    labels of ``data`` itself) reaches at accuracy ≥ ``floor`` × the reference's: an
    upper bound for a router whose predictions only recognise the task, measured on the
    evaluated data (an analysis, not a tuning step). ``None`` if infeasible."""
    import numpy as np
    from scipy.optimize import linprog

    keep = data.complete() & ~np.isnan(data.costs).any(axis=1)
    d = data.subset(keep)
    groups = np.array(d.groups)
    tasks = sorted(set(d.groups))
    k = len(d.families)
    ref = d.families.index(reference)
    acc = np.array([d.labels[groups == t].sum(axis=0) for t in tasks]) / len(d)
    cost = np.array([d.costs[groups == t].sum(axis=0) for t in tasks])
    eq = np.kron(np.eye(len(tasks)), np.ones(k))
    res = linprog(
        cost.ravel(),
        A_ub=-acc.ravel()[None, :],
        b_ub=[-floor * float(d.labels[:, ref].mean())],
        A_eq=eq,
        b_eq=np.ones(len(tasks)),
        bounds=(0, 1),
    )
    return None if not res.success else 1 - float(res.fun) / float(d.costs[:, ref].sum())


def by_task(model: Any, doc: dict[str, Any], held: Any, train: Any) -> list[str]:
    """Held-out accuracy per task beside the training split's, and the ratio the same
    choices would give if every model scored its training-split accuracy on the task:
    it separates the router's choices from the luck of the held-out labels."""
    import numpy as np

    from tiergate.classifier import evaluate as ev

    data, dcols, choice, _ = ev.decide(model, doc, held, FLOOR)
    fams = [data.families[j] for j in dcols]
    ref = fams.index(REFERENCE)
    groups = np.array(data.groups)
    tgroups = np.array(train.groups)
    tcols = [train.families.index(f) for f in fams]
    rows = np.arange(len(choice))
    routed = data.labels[rows, np.array(dcols)[choice]]
    lines = [
        "| task | n | reference acc held / train | router acc held | ratio held | "
        "routed off the reference | ratio at training-split accuracies |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    exp_router, exp_ref = [], []
    for task in sorted(set(data.groups)):
        sel = groups == task
        tl = train.labels[tgroups == task][:, tcols]
        train_acc = np.nanmean(tl, axis=0)
        ref_held = float(data.labels[sel, dcols[ref]].mean())
        r_held = float(routed[sel].mean())
        e_router = train_acc[choice[sel]]
        exp_router.append(e_router)
        exp_ref.append(np.full(int(sel.sum()), train_acc[ref]))
        lines.append(
            f"| {task} | {int(sel.sum())} | {ref_held:.3f} / {train_acc[ref]:.3f} | "
            f"{r_held:.3f} | {r_held / ref_held:.3f} | {float((choice[sel] != ref).mean()):.0%} | "
            f"{float(e_router.mean()) / train_acc[ref]:.3f} |"
        )
    er, ef = np.concatenate(exp_router), np.concatenate(exp_ref)
    reference = data.labels[:, dcols[ref]]
    # How far the held-out ratio may move with its labels alone: a paired bootstrap of its
    # prompts (router and reference resampled together), the choices fixed.
    draws = np.random.default_rng(0).integers(0, len(rows), size=(2000, len(rows)))
    ratios = routed[draws].mean(axis=1) / reference[draws].mean(axis=1)
    low, high = np.percentile(ratios, [2.5, 97.5])
    lines += [
        "",
        "Over the whole held-out split the same choices at the models' training-split "
        f"accuracies per task give an accuracy ratio of {float(er.mean() / ef.mean()):.3f} "
        f"(measured: {float(routed.mean()) / float(reference.mean()):.3f}; paired bootstrap "
        f"95% interval of the measured ratio over its {len(rows)} prompts, 2,000 resamples: "
        f"{low:.3f}–{high:.3f}).",
    ]
    return lines


def run() -> str:
    out = ["## Learned classifier (issue 6)", ""]
    if not DATA.is_dir():
        return "\n".join([*out, f"Skipped: {DATA} is absent.", ""])
    from tiergate.classifier import evaluate as ev
    from tiergate.classifier.data import load_dir

    start = time.perf_counter()
    model_path, train_dir, held_dir = trained()
    model, doc = ev.load_model(model_path)
    setup_s = time.perf_counter() - start
    out += scoring(model)
    held = load_dir(held_dir)
    result = ev.evaluate(model, doc, held, REFERENCE, FLOOR)
    bound_held = task_bound(held, REFERENCE, FLOOR)
    bound_train = task_bound(load_dir(train_dir), REFERENCE, FLOOR)
    row = next(r for r in doc["operating_points"]["table"] if r["floor"] == FLOOR)
    bound = doc["operating_points"]["bound"]
    ok_ratio = result["accuracy_ratio"] >= 0.95
    ok_saving = result["saving"] >= 0.70
    out += [
        "",
        f"Held-out routing (25% of the training CSVs by `xxh64(sample_id) % 4 == 0`, "
        f"n={result['n']}; never used to train or to choose the operating point or the rule), floor "
        f"{FLOOR}, reference `{REFERENCE}`; decisions use the cost per call the model "
        "predicts for each family from the training split (version 4: the family's mean "
        "cost in the prompt's task, weighted by the model's task gate), accuracy and cost "
        "are the data's for the chosen model:",
        "",
        *_fmt(result),
        "",
        f"Cross-validated on the training split at floor {FLOOR}: accuracy ratio "
        f"{row['cv_accuracy_ratio']} (one-sided {100 * bound['confidence']:g}% lower bound "
        f"{row['cv_ratio_lower']}), saving {row['cv_saving']:.1%} "
        f"({doc['training']['rows']} prompts, {doc['training']['folds']} folds).",
        "",
        f"Model: {_model_line(doc)}",
        "",
        f"Decision rule: {doc['operating_points'].get('description', 'threshold')}; λ(F) is "
        "the largest cost weight of the grid (it and every smaller one) whose one-sided "
        f"{100 * bound['confidence']:g}% bootstrap lower confidence bound of the accuracy ratio "
        "(routed / reference) over the out-of-fold predictions of the training split is "
        f"≥ F: {bound['resamples']} paired resamples of the prompts (router and reference "
        f"resampled together; `default_rng({bound['seed']})`), the bound being the "
        f"{bound['percentile']:g}th percentile of the resampled ratios. The confidence "
        "level and the gated model as the default were chosen on 40 stratified 75/25 "
        "outer splits of the training part only (whole procedure on the outer-train part, "
        "ratio and saving on the outer-test part; criterion: the least conservative rule "
        "whose outer-test ratio is ≥ 0.95 in at least 95% of splits): 97.5% kept the ratio "
        "≥ 0.95 in 40 of 40 (mean 0.972, saving 64.2% at 1,242 training prompts), 95% in "
        "37 of 40 (0.971, 65.6%), 99% in 40 of 40 (0.974, 61.2%); the comparison is in "
        "the `train.py` docstring.",
        "",
        "Cost side of the rule (model file version 4), chosen on the same 40 outer splits "
        "with the real pipeline at the 97.5% bound (P(ratio ≥ 0.95) / mean / 10% quantile "
        "/ min ratio / mean saving): each family's mean cost over all tasks (version 3) "
        "1.00 / 0.9720 / 0.9563 / 0.9516 / 64.2%; its mean cost in the prompt's task, "
        "weighted by the gate (kept) 0.975 / 0.9729 / 0.9563 / 0.9493 / 66.6%; a "
        "per-prompt cost (per-task intercept + a per-family slope in the prompt's length) "
        "0.975 / 0.9730 / 0.9563 / 0.9493 / 66.3% — no better than the per-task cost, "
        "since within a task the cost of a call barely varies with the prompt "
        "(coefficient of variation 0.01–0.05 on arc-challenge and winogrande; on mbpp the "
        "answers' lengths dominate and prompt length predicts little).",
        "",
        "A later look at this split: it was evaluated before, with the former rules — the "
        "fixed margin (point estimate ≥ (F + 0.005) × reference) gave 0.928 / 79.8%, the "
        "95% bound (with `auto` model choice) 0.930 / 74.5% — and those results are why the "
        "rule was revisited. It was not used to choose the new rule (the outer splits "
        "were), but it is no longer a first look; the table above is its single "
        "evaluation under the 97.5% rule.",
        "",
        "Per task on the held-out split (accuracy = the data's labels for each chosen "
        "model; the last column prices each choice at that model's mean accuracy on the "
        "task in the training split):",
        "",
        *by_task(model, doc, held, load_dir(train_dir)),
        "",
        "Upper bound for routing by task alone (a share of each `eval_name` to each model, "
        f"chosen with the evaluated split's own labels) at ratio ≥ {FLOOR}: saving "
        f"{_pct(bound_held)} on the held-out split, {_pct(bound_train)} on the training "
        "split. A router saving more than this bound at the same ratio separates prompts "
        "within a task (the gated model's per-task difficulty scores); one below it is "
        "close to a task router.",
        "",
        f"Targets (accuracy ratio ≥ 0.95, saving ≥ 70%): ratio "
        f"{'met' if ok_ratio else 'NOT met'}, saving {'met' if ok_saving else 'NOT met'}. "
        "Routed share: "
        + ", ".join(f"`{k}` {v:.0%}" for k, v in sorted(result["routed_share"].items())),
        "",
        f"(Model file {model_path.stat().st_size / 1e6:.1f} MB; split + training (or the cache) "
        f"{setup_s:.0f} s.)",
        "",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    print(run())
