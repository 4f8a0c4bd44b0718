"""What the drift window shows: PSI and JS distance per segment, and the `GET /monitoring` summary built on them.

Pure functions of counts already read from the monitor (under its lock); they run at read time, never on the
request path.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.artifact.card import ModelCard
from service.monitoring.drift import js_distance, psi, status
from service.monitoring.layout import BinLayout, Segment
from service.monitoring.quality import QUALITY_REASONS

__all__ = ["Scores", "segment_scores", "summary", "window_scores"]

Scores = dict[tuple[str, str, str], tuple[float, float]]  # (kind, name, slice value) → (PSI, JS distance)


def segment_scores(segment: Segment, window: np.ndarray) -> tuple[float, float, int]:
    """PSI, JS distance and rows of one segment's window counts against its reference (NaN scores when empty)."""
    current = window[segment.start : segment.stop].astype(np.float64)
    reference = np.asarray(segment.distribution.shares, dtype=np.float64)
    return psi(reference, current), js_distance(reference, current), int(current.sum())


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
    features: dict[str, dict[str, Any]] = {}
    for column, segment in enumerate(layout.features):
        psi_value, js_value, rows = segment_scores(segment, window)
        counts = quality[column].tolist()
        features[segment.name] = {
            "psi": _json_float(psi_value),
            "js_distance": _json_float(js_value),
            "status": status(psi_value, js_value),
            "window_rows": rows,
            "quality_issues": {reason: n for reason, n in zip(QUALITY_REASONS, counts, strict=True) if n},
        }
    psi_value, js_value, rows = segment_scores(layout.prediction, window)
    slices: dict[str, dict[str, Any]] = {}
    for segment in layout.of_kind("slice"):
        s_psi, s_js, s_rows = segment_scores(segment, window)
        slices.setdefault(segment.name, {})[segment.value] = {
            "psi": _json_float(s_psi), "js_distance": _json_float(s_js), "window_rows": s_rows,
        }  # fmt: skip
    return {
        "model": {"name": card.name, "version": card.version},
        "window": span,
        "rows_scored": scored,
        "rows_rejected": rejected,
        "features": features,
        "prediction": {
            "psi": _json_float(psi_value),
            "js_distance": _json_float(js_value),
            "status": status(psi_value, js_value),
            "window_rows": rows,
        },
        "slices": slices,
    }


def _json_float(value: float) -> float | None:
    return None if np.isnan(value) else round(value, 6)
