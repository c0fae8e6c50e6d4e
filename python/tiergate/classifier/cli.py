"""``tiergate classifier train|eval|join``: argument parsing lives in :mod:`tiergate.cli`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import orjson

from tiergate.errors import TiergateError

__all__ = ["eval_main", "join_main", "train_main"]


def _fail(msg: str) -> int:
    print(f"tiergate classifier: {msg}", file=sys.stderr)
    return 2


def train_main(
    data_dir: str,
    out: str,
    reference: str | None,
    floor: float | None,
    tenant: str | None = None,
    c: float = 0.25,
) -> int:
    """The operating point is the bootstrap bound rule
    (:func:`tiergate.classifier.train.calibrate_lambda`)."""
    try:
        from tiergate.classifier.data import load_dir
        from tiergate.classifier.train import train
    except ImportError as exc:
        return _fail(f"training needs the train extra (pip install 'tiergate[train]'): {exc}")
    start = time.perf_counter()
    try:
        data = load_dir(Path(data_dir), tenant)
        doc = train(data, reference=reference, floor=floor, c=c)
    except (TiergateError, ValueError, OSError) as exc:
        return _fail(str(exc))
    Path(out).write_bytes(orjson.dumps(doc))
    op = doc["operating_points"]
    print(
        f"trained {len(doc['families'])} families on {len(data)} prompts "
        f"({data.skipped} skipped with empty labels) in {time.perf_counter() - start:.1f}s "
        f"→ {out}; reference {op['reference']}, operating points: {op['method']}",
        file=sys.stderr,
    )
    conf = op.get("bound", {}).get("confidence")
    level = f"{100 * conf:g}% " if conf is not None else ""
    for row in op["table"]:
        if floor is None or row["floor"] == round(floor, 6):
            print(
                f"  floor {row['floor']:.2f}: λ {row['lambda']:.4g}  cv accuracy ratio "
                f"{row['cv_accuracy_ratio']} ({level}lower bound {row.get('cv_ratio_lower')})  "
                f"cv saving {row['cv_saving']}",
                file=sys.stderr,
            )
    return 0


def eval_main(
    model_path: str, data_dir: str, reference: str, floor: float, as_json: bool, plot: str | None
) -> int:
    try:
        from tiergate.classifier import evaluate as ev
        from tiergate.classifier.data import load_dir
    except ImportError as exc:
        return _fail(f"evaluation needs the train extra (pip install 'tiergate[train]'): {exc}")
    try:
        model, doc = ev.load_model(Path(model_path))
        data = load_dir(Path(data_dir))
        probs, priced = ev.score_matrix(model, data.items)
        result = ev.evaluate(model, doc, data, reference, floor, probs, priced)
    except (TiergateError, ValueError, OSError) as exc:
        return _fail(str(exc))
    if as_json:
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
        return 0
    print(ev.table(result))
    png = Path(plot) if plot else Path(model_path).with_suffix(".eval.png")
    try:
        ev.plot_curve(png, ev.curve(model, doc, data, reference, probs, priced), data, result)
    except ImportError:
        print("(matplotlib is not installed: no curve drawn)")
        return 0
    print(f"cost–accuracy curve saved to {png}")
    return 0


def join_main(requests: str, scores: str, config: str | None, out: str) -> int:
    from tiergate.classifier.data import join_records

    families: dict[str, str | None] = {}
    try:
        if config is not None:
            from tiergate.config import load_config

            cfg = load_config(config)
            families = {n: d.family for n, d in cfg.deployments.items()}
        records = join_records(Path(requests), Path(scores), families)
    except (TiergateError, OSError) as exc:
        return _fail(str(exc))
    with Path(out).open("wb") as fh:
        for r in records:
            fh.write(orjson.dumps(r) + b"\n")
    print(f"{len(records)} labelled records → {out}", file=sys.stderr)
    return 0
