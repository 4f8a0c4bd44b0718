"""What the drift window shows: PSI, JS distance and the drift decision per segment, and the `GET /monitoring`
summary built on them.

Pure functions of counts already read from the monitor (under its lock); they run at read time, never on the
request path.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from service.artifact.card import ModelCard
from service.monitoring.drift import Decision, decide, js_distance, psi
from service.monitoring.layout import BinLayout, Segment
from service.monitoring.multivariate import MIN_ROWS as MULTIVARIATE_MIN_ROWS
from service.monitoring.multivariate import MultivariateDecision
from service.monitoring.quality import QUALITY_REASONS

__all__ = [
    "Decisions",
    "Scores",
    "drift_entry",
    "families",
    "family_of",
    "multivariate_entry",
    "segment_decision",
    "segment_scores",
    "summary",
    "window_decisions",
    "window_scores",
]

Scores = dict[tuple[str, str, str], tuple[float, float]]  # (kind, name, slice value) → (PSI, JS distance)
Decisions = dict[tuple[str, str, str], Decision]  # (kind, name, slice value) → the drift decision


def segment_scores(segment: Segment, window: np.ndarray) -> tuple[float, float, int]:
    """PSI, JS distance and rows of one segment's window counts against its reference (NaN scores when empty)."""
    current = window[segment.start : segment.stop].astype(np.float64)
    reference = np.asarray(segment.distribution.shares, dtype=np.float64)
    return psi(reference, current), js_distance(reference, current), int(current.sum())


def families(layout: BinLayout) -> dict[tuple[str, str], int]:
    """(kind, slice feature) → how many segments are tested together, the size of the Bonferroni correction: the
    model's features, the predictions alone, a slice feature's values that have reference rows."""
    sizes = {("feature", ""): len(layout.features), ("prediction", ""): 1}
    for segment in layout.of_kind("slice"):
        if sum(segment.distribution.shares) > 0:
            sizes[("slice", segment.name)] = sizes.get(("slice", segment.name), 0) + 1
    return sizes


def family_of(segment: Segment, sizes: dict[tuple[str, str], int]) -> int:
    """The size of the family `segment` is tested in (`families`)."""
    return sizes.get((segment.kind, segment.name if segment.kind == "slice" else ""), 1)


def window_decisions(layout: BinLayout, window: np.ndarray) -> Decisions:
    """(kind, name, slice value) → the drift decision of every segment over the window counts."""
    sizes = families(layout)
    return {
        (segment.kind, segment.name, segment.value): segment_decision(segment, window, family_of(segment, sizes))
        for segment in layout.segments
    }


def segment_decision(segment: Segment, window: np.ndarray, family: int) -> Decision:
    """The drift decision on one segment's window counts (`service.monitoring.drift.decide`)."""
    reference = segment.distribution
    counts = None if reference.counts is None else np.asarray(reference.counts, dtype=np.float64)
    shares = np.asarray(reference.shares, dtype=np.float64)
    return decide(shares, counts, window[segment.start : segment.stop], family)


def window_scores(layout: BinLayout, window: np.ndarray) -> Scores:
    """(kind, name, slice value) → (PSI, JS distance) of every segment over the window counts."""
    scores = {}
    for segment in layout.segments:
        psi_value, js_value, _ = segment_scores(segment, window)
        scores[(segment.kind, segment.name, segment.value)] = (psi_value, js_value)
    return scores


def summary(
    card: ModelCard,
    layout: BinLayout,
    *,
    span: dict[str, float | int],
    window: np.ndarray,
    quality: np.ndarray,
    scored: int,
    rejected: int,
) -> dict[str, Any]:
    """The `GET /monitoring` document: window drift (`span` is the window's description), data quality, totals."""
    sizes = families(layout)
    features: dict[str, dict[str, Any]] = {}
    for column, segment in enumerate(layout.features):
        counts = quality[column].tolist()
        features[segment.name] = {
            **drift_entry(segment, window, sizes[("feature", "")]),
            "quality_issues": {reason: n for reason, n in zip(QUALITY_REASONS, counts, strict=True) if n},
        }
    slices: dict[str, dict[str, Any]] = {}
    for segment in layout.of_kind("slice"):
        slices.setdefault(segment.name, {})[segment.value] = drift_entry(segment, window, family_of(segment, sizes))
    return {
        "model": {"name": card.name, "version": card.version},
        "window": span,
        "rows_scored": scored,
        "rows_rejected": rejected,
        "features": features,
        "prediction": drift_entry(layout.prediction, window, 1),
        "slices": slices,
    }


def drift_entry(segment: Segment, window: np.ndarray, family: int) -> dict[str, Any]:
    """One segment's entry: its scores, the decision and the numbers behind it."""
    psi_value, js_value, rows = segment_scores(segment, window)
    decision = segment_decision(segment, window, family)
    entry: dict[str, Any] = {
        "status": decision.status,
        "psi": _json_float(psi_value),
        "js_distance": _json_float(js_value),
        "window_rows": rows,
        "test": {
            "method": "chi2",
            "statistic": _json_float(decision.statistic),
            "p_value": _json_p(decision.p_value),
            "critical_value": _json_float(decision.critical_value),
            "family_size": family,
            "min_rows": int(decision.min_rows) if math.isfinite(decision.min_rows) else None,
            "effect": _json_float(decision.effect),
        },
    }
    if decision.reason is not None:
        entry["reason"] = decision.reason
    return entry


def multivariate_entry(decision: MultivariateDecision | None, features: tuple[str, ...]) -> dict[str, Any] | None:
    """`GET /monitoring`'s `multivariate` entry: the PCA reconstruction-error decision over the window."""
    if decision is None:
        return None
    entry: dict[str, Any] = {
        "status": decision.status,
        "method": "pca_reconstruction_error",
        "features": list(features),
        "window_rows": decision.rows,
        "error": _json_float(decision.error_mean),
        "reference_error": _json_float(decision.reference_error),
        "effect": _json_float(decision.effect),
        "test": {
            "z": _json_float(decision.z),
            "critical_value": _json_float(decision.critical_value),
            "min_rows": MULTIVARIATE_MIN_ROWS,
        },
    }
    if decision.reason is not None:
        entry["reason"] = decision.reason
    return entry


def _json_p(value: float) -> float | None:
    """p-values keep their magnitude (3e-31 must not round to 0): four significant digits."""
    return None if np.isnan(value) else float(f"{value:.4g}")


def _json_float(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None
