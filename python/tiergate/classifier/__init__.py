"""Learned request classifier: per-family probability of a correct answer (issue 6).

Features and scoring live in the Rust core (``features.rs``, ``quality.rs``); training
(numpy/scikit-learn, the ``train`` extra) and evaluation live here; serving needs only
the core and the model file (:mod:`tiergate.classifier.model`).

Floor rule
----------
A route, tenant or request (``x-tiergate-min-quality``) with accuracy floor ``F`` is
served by the candidate maximising ``q − λ(F) · c`` (``q`` its predicted probability of a
correct answer, ``c`` its family's mean cost per call in the training data); version-1
files keep the former threshold rule. ``λ(F)`` is chosen at training time on the
training data only: the largest cost weight of a grid (it and every smaller one) whose
one-sided 97.5% paired-bootstrap lower confidence bound of the cross-validated accuracy
ratio (routed / reference, on out-of-fold predictions) is ≥ ``F`` — a promise about
unseen traffic, not only the training prompts. Details in :mod:`.train` and
:mod:`.model`.

Modules: :mod:`.data` (RouterBench CSVs and labelled JSONL records), :mod:`.train`,
:mod:`.evaluate`, :mod:`.model` (the planner's ``QualityModel``), :mod:`.cli`.
"""

from __future__ import annotations

from tiergate.classifier.model import LearnedQuality, load_quality_model

__all__ = ["LearnedQuality", "load_quality_model"]
