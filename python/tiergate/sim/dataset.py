"""Recorded answers from a RouterBench-format labelled data set.

Every ``*.csv`` under the directory (recursively) with a ``prompt`` column is read. The
``prompt`` and ``<model>|model_response`` cells are Python list reprs, parsed with
:func:`ast.literal_eval` and joined. For each prompt and data-set model the table keeps
the recorded response, its real cost (``<model>|total_cost``) and its 0/1 correctness
(the ``<model>`` column). Rows whose correctness label is empty are dropped per model.
"""

from __future__ import annotations

import ast
import csv
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Dataset", "Record"]


@dataclass(slots=True, frozen=True)
class Record:
    response: str
    cost_usd: float
    correct: float
    eval_name: str


def _join(cell: str) -> str:
    try:
        value = ast.literal_eval(cell)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return cell
    if isinstance(value, list | tuple):
        return "\n".join(str(x) for x in value)
    return str(value)


def _float(cell: str | None) -> float | None:
    if cell is None or not cell.strip():
        return None
    try:
        return float(cell)
    except ValueError:
        return None


class Dataset:
    """prompt text → data-set model → :class:`Record`."""

    __slots__ = ("models", "rows")

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Record]] = {}
        self.models: set[str] = set()

    @classmethod
    def load(cls, directory: Path) -> Dataset:
        ds = cls()
        csv.field_size_limit(sys.maxsize)
        for path in sorted(directory.rglob("*.csv")):
            with path.open(newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                fields = reader.fieldnames or []
                if "prompt" not in fields:
                    continue
                models = [
                    f[: -len("|model_response")] for f in fields if f.endswith("|model_response")
                ]
                ds.models.update(models)
                for row in reader:
                    ds._add(row, models)
        return ds

    def _add(self, row: dict[str, str], models: list[str]) -> None:
        prompt = _join(row["prompt"]).strip()
        entry = self.rows.setdefault(prompt, {})
        for m in models:
            correct = _float(row.get(m))
            if correct is None:
                continue
            entry[m] = Record(
                response=_join(row.get(f"{m}|model_response") or ""),
                cost_usd=_float(row.get(f"{m}|total_cost")) or 0.0,
                correct=correct,
                eval_name=row.get("eval_name", ""),
            )

    def lookup(self, prompt: str, model: str) -> Record | None:
        entry = self.rows.get(prompt.strip())
        return entry.get(model) if entry else None

    def __len__(self) -> int:
        return len(self.rows)
