"""Learned request classifier: per-family probability of a correct answer (issue 6).

Features and scoring live in the Rust core (``features.rs``, ``quality.rs``); training
(numpy/scikit-learn, the ``train`` extra) and evaluation live here; serving needs only
the core and the model file (:mod:`tiergate.classifier.model`).

Floor rule
----------
A route, tenant or request (``x-tiergate-min-quality``) with accuracy floor ``F`` keeps
a candidate when its predicted quality ``q`` satisfies::

    q ≥ clamp(F · q_best − offset(F), 0, q_best)

where ``q_best`` is the best prediction among the candidates the request may use and
``offset(F)`` is the model's operating point for ``F`` (interpolated between the floors
of its table). Among the candidates kept the planner takes the cheapest, as for every
other constraint. With calibrated probabilities and ``offset = 0`` each request's
expected accuracy is at least ``F ×`` the best candidate's, so the traffic's accuracy is
at least ``F ×`` the reference's; the offset, chosen by cross-validation on the training
data only, is the largest for which the routed traffic still kept
``(F + margin) ×`` the reference's accuracy — calibrated probabilities of a linear model
are conservative per request, and the offset gives back what is safe to give back.

Modules: :mod:`.data` (RouterBench CSVs and labelled JSONL records), :mod:`.train`,
:mod:`.evaluate`, :mod:`.model` (the planner's ``QualityModel``), :mod:`.cli`.
"""

from __future__ import annotations

from tiergate.classifier.model import LearnedQuality, load_quality_model

__all__ = ["LearnedQuality", "load_quality_model"]
