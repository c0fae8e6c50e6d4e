"""Labelled data for the quality classifier: RouterBench CSVs and tiergate's own records.

A :class:`Labelled` set is one row per prompt, one column per model family: a 0/1 label
(NaN when that family was not tried on the prompt) and the call's cost in USD (NaN when
unknown). :func:`load_dir` reads every ``*.csv`` (RouterBench format) and ``*.jsonl``
(labelled records) under a directory.

RouterBench CSV (``../shared/data/routing/routerbench/``): columns ``sample_id``,
``prompt`` (a Python list repr of strings, joined with ``\\n`` — the text the simulators
match), ``eval_name``, one 0/1 column per model, ``<model>|total_cost``,
``<model>|model_response``. A row with an empty label is skipped and counted
(:attr:`Labelled.skipped`); a row that cannot be read (wrong number of cells, a label
that is not 0/1, a cost that is not a number, broken quoting) raises :class:`DataError`
naming the file and line.

Labelled records (JSONL, one object a line; what tiergate's own traffic produces)::

    {"prompt": "text" | "body": {chat-completions body},   # what was asked
     "family": "gpt-4o-mini",                              # classifier family that answered
     "score": 1,                                           # 0..1; >= 0.5 counts as correct
     "cost_usd": 0.00042,                                  # optional
     "id": "req-or-prompt-id",                             # optional; joins rows
     "tenant": "team-a"}                                   # optional

Records of the same ``id`` (or, without one, the same prompt) become one row; several
scores of one family on one row are averaged. ``tiergate classifier join`` builds them
from request log lines (``telemetry.log_text: true``) and the scores a team sent to
``POST /v1/feedback`` or got from shadow evaluation.
"""

from __future__ import annotations

import ast
import csv
import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from tiergate.errors import TiergateError

__all__ = [
    "DataError",
    "Labelled",
    "held_out",
    "join_records",
    "load_dir",
    "load_records",
    "load_routerbench",
    "split_csvs",
]

_RESPONSE = "|model_response"
_COST = "|total_cost"


class DataError(TiergateError):
    """A labelled-data file cannot be read; the message names the file and line."""


@dataclass
class Labelled:
    """Prompts × families: ``labels`` and ``costs`` are ``(n, k)`` float arrays (NaN = unknown)."""

    items: list[str | bytes]  # str: a prompt text; bytes: a chat-completions body
    ids: list[str]
    families: list[str]
    labels: np.ndarray[Any, np.dtype[np.float64]]
    costs: np.ndarray[Any, np.dtype[np.float64]]
    groups: list[str] = field(default_factory=list)  # eval_name or tenant per row
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.items)

    def subset(self, rows: np.ndarray[Any, Any]) -> Labelled:
        idx = np.flatnonzero(rows) if rows.dtype == bool else rows
        return Labelled(
            [self.items[i] for i in idx],
            [self.ids[i] for i in idx],
            list(self.families),
            self.labels[idx],
            self.costs[idx],
            [self.groups[i] for i in idx] if self.groups else [],
            self.skipped,
        )

    def complete(self) -> np.ndarray[Any, np.dtype[np.bool_]]:
        """Rows with a label for every family (where a routing policy can be scored)."""
        return np.asarray(~np.isnan(self.labels).any(axis=1))


def _prompt(cell: str) -> str:
    try:
        value = ast.literal_eval(cell)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return cell.strip()
    if isinstance(value, list | tuple):
        return "\n".join(str(x) for x in value).strip()
    return str(value).strip()


def load_routerbench(path: Path) -> Labelled:
    """One RouterBench-format CSV."""
    csv.field_size_limit(sys.maxsize)
    items: list[str | bytes] = []
    ids: list[str] = []
    groups: list[str] = []
    labels: list[list[float]] = []
    costs: list[list[float]] = []
    skipped = 0
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise DataError(f"{path}:1: empty file (a header row is required)") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise DataError(f"{path}:1: {exc}") from None
        col = {name: i for i, name in enumerate(header)}
        if "prompt" not in col:
            raise DataError(f"{path}:1: no `prompt` column (not a RouterBench CSV)")
        families = sorted(h[: -len(_COST)] for h in header if h.endswith(_COST))
        missing = [f for f in families if f not in col]
        if not families or missing:
            raise DataError(
                f"{path}:1: every `<model>|total_cost` column needs a `<model>` label column"
                + (f"; missing {missing}" if missing else "; none found")
            )
        line = 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except (csv.Error, UnicodeDecodeError) as exc:
                raise DataError(f"{path}:{reader.line_num}: {exc}") from None
            line_start = line + 1
            line = reader.line_num
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(
                    f"{path}:{line_start}: {len(row)} cells, the header has {len(header)}"
                )
            cells = [row[col[f]].strip() for f in families]
            if any(c == "" for c in cells):
                skipped += 1
                continue
            try:
                lab = [float(c) for c in cells]
                cst = [float(row[col[f + _COST]] or "nan") for f in families]
            except ValueError as exc:
                raise DataError(f"{path}:{line_start}: {exc}") from None
            if any(v not in (0.0, 1.0) for v in lab):
                raise DataError(f"{path}:{line_start}: labels must be 0 or 1, got {cells}")
            items.append(_prompt(row[col["prompt"]]))
            ids.append(row[col["sample_id"]] if "sample_id" in col else f"{path.name}:{line_start}")
            groups.append(row[col["eval_name"]] if "eval_name" in col else "")
            labels.append(lab)
            costs.append(cst)
    k = len(families)
    return Labelled(
        items,
        ids,
        families,
        np.array(labels, dtype=np.float64).reshape(-1, k),
        np.array(costs, dtype=np.float64).reshape(-1, k),
        groups,
        skipped,
    )


def _record_rows(path: Path, tenant: str | None) -> Iterable[tuple[int, dict[str, Any]]]:
    with path.open("rb") as fh:
        for n, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                rec = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: invalid JSON: {exc}") from None
            if not isinstance(rec, dict):
                raise DataError(f"{path}:{n}: a record must be a JSON object")
            if tenant is not None and rec.get("tenant", "") != tenant:
                continue
            yield n, rec


def load_records(paths: Iterable[Path], tenant: str | None = None) -> Labelled:
    """Labelled records (JSONL, format in the module docstring), optionally one tenant's."""
    rows: dict[str, dict[str, list[tuple[float, float]]]] = {}
    items: dict[str, str | bytes] = {}
    tenants: dict[str, str] = {}
    skipped = 0
    families: set[str] = set()
    for path in paths:
        for n, rec in _record_rows(path, tenant):
            where = f"{path}:{n}"
            item: str | bytes
            if isinstance(rec.get("prompt"), str):
                item = rec["prompt"]
            elif isinstance(rec.get("body"), dict):
                item = orjson.dumps(rec["body"])
            else:
                raise DataError(f"{where}: `prompt` (string) or `body` (object) is required")
            family = rec.get("family")
            if not isinstance(family, str) or not family:
                raise DataError(f"{where}: `family` must be a non-empty string")
            score = rec.get("score")
            if score is None:
                skipped += 1
                continue
            if isinstance(score, bool):
                score = float(score)
            if not isinstance(score, int | float) or not 0 <= score <= 1:
                raise DataError(f"{where}: `score` must be a number in [0, 1]")
            cost = rec.get("cost_usd")
            if cost is not None and (isinstance(cost, bool) or not isinstance(cost, int | float)):
                raise DataError(f"{where}: `cost_usd` must be a number")
            key = str(rec["id"]) if rec.get("id") is not None else f"p:{item!r}"
            items.setdefault(key, item)
            tenants.setdefault(key, str(rec.get("tenant", "")))
            rows.setdefault(key, {}).setdefault(family, []).append(
                (float(score), math.nan if cost is None else float(cost))
            )
            families.add(family)
    fams = sorted(families)
    keys = list(rows)
    labels = np.full((len(keys), len(fams)), np.nan)
    costs = np.full((len(keys), len(fams)), np.nan)
    for i, key in enumerate(keys):
        for j, f in enumerate(fams):
            got = rows[key].get(f)
            if got:
                labels[i, j] = 1.0 if np.mean([s for s, _ in got]) >= 0.5 else 0.0
                known = [c for _, c in got if not math.isnan(c)]
                if known:
                    costs[i, j] = float(np.mean(known))
    return Labelled(
        [items[k] for k in keys], keys, fams, labels, costs, [tenants[k] for k in keys], skipped
    )


def _merge(parts: list[Labelled]) -> Labelled:
    families = sorted({f for p in parts for f in p.families})
    k = len(families)
    labels, costs = [], []
    for p in parts:
        lab = np.full((len(p), k), np.nan)
        cst = np.full((len(p), k), np.nan)
        for j, f in enumerate(p.families):
            lab[:, families.index(f)] = p.labels[:, j]
            cst[:, families.index(f)] = p.costs[:, j]
        labels.append(lab)
        costs.append(cst)
    return Labelled(
        [x for p in parts for x in p.items],
        [x for p in parts for x in p.ids],
        families,
        np.vstack(labels) if labels else np.zeros((0, k)),
        np.vstack(costs) if costs else np.zeros((0, k)),
        [g for p in parts for g in (p.groups or [""] * len(p))],
        sum(p.skipped for p in parts),
    )


def load_dir(directory: Path, tenant: str | None = None) -> Labelled:
    """Every ``*.csv`` (RouterBench) and ``*.jsonl`` (labelled records) under ``directory``."""
    if not directory.is_dir():
        raise DataError(f"{directory}: not a directory")
    csvs = sorted(directory.rglob("*.csv"))
    jsonl = sorted(directory.rglob("*.jsonl"))
    if not csvs and not jsonl:
        raise DataError(f"{directory}: no *.csv or *.jsonl files")
    parts = [load_routerbench(p) for p in csvs] if tenant is None else []
    if jsonl:
        parts.append(load_records(jsonl, tenant))
    data = _merge(parts)
    if len(data) == 0:
        raise DataError(f"{directory}: no labelled rows (skipped {data.skipped})")
    return data


def join_records(
    requests: Path, scores: Path, families: Mapping[str, str | None]
) -> list[dict[str, Any]]:
    """Labelled records from request log lines and scores.

    ``requests``: the sidecar's request log (JSON lines with ``"event": "request"``; the
    ``prompt`` field is there when ``telemetry.log_text`` is on). ``scores``: JSON lines
    ``{"request_id", "score"}`` — what the team sent to ``POST /v1/feedback`` — or
    ``{"request_id", "agree": bool}`` from shadow evaluation. ``families`` maps a
    deployment to its classifier family (``DeploymentConfig.family``; the deployment name
    when unset). Requests without a prompt or a score are left out.
    """
    score_of: dict[str, float] = {}
    for n, rec in _record_rows(scores, None):
        rid = rec.get("request_id")
        if not isinstance(rid, str):
            raise DataError(f"{scores}:{n}: `request_id` must be a string")
        if "score" in rec:
            value = rec["score"]
        elif "agree" in rec:
            value = 1.0 if rec["agree"] else 0.0
        else:
            raise DataError(f"{scores}:{n}: `score` or `agree` is required")
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise DataError(f"{scores}:{n}: the score must be a number in [0, 1]")
        score_of[rid] = float(value)
    out: list[dict[str, Any]] = []
    for _, line in _record_rows(requests, None):
        if line.get("event") != "request" or line.get("status", 200) >= 400:
            continue
        rid, dep, prompt = line.get("request_id"), line.get("deployment"), line.get("prompt")
        if not isinstance(rid, str) or rid not in score_of or not isinstance(prompt, str):
            continue
        if not isinstance(dep, str):
            continue
        out.append(
            {
                "id": rid,
                "prompt": prompt,
                "family": families.get(dep) or dep,
                "score": score_of[rid],
                "cost_usd": line.get("cost_usd"),
                "tenant": line.get("tenant", ""),
            }
        )
    return out


def held_out(sample_id: str, share: int = 4) -> bool:
    """The fixed held-out split: ``xxh64(sample_id) % share == 0`` (25% by default)."""
    import xxhash

    return xxhash.xxh64_intdigest(sample_id.encode()) % share == 0


def split_csvs(src: Path, train_dir: Path, held_dir: Path, share: int = 4) -> tuple[int, int]:
    """Copy every RouterBench CSV under ``src`` into ``train_dir`` and ``held_dir`` by
    :func:`held_out` of its ``sample_id`` (rows byte-for-byte, header in both)."""
    csv.field_size_limit(sys.maxsize)
    counts = [0, 0]
    train_dir.mkdir(parents=True, exist_ok=True)
    held_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.rglob("*.csv")):
        with (
            path.open(newline="", encoding="utf-8") as fh,
            (train_dir / path.name).open("w", newline="", encoding="utf-8") as a,
            (held_dir / path.name).open("w", newline="", encoding="utf-8") as b,
        ):
            reader = csv.reader(fh)
            header = next(reader)
            sid = header.index("sample_id")
            wa, wb = csv.writer(a), csv.writer(b)
            wa.writerow(header)
            wb.writerow(header)
            for row in reader:
                h = held_out(row[sid], share)
                (wb if h else wa).writerow(row)
                counts[h] += 1
    return counts[0], counts[1]
