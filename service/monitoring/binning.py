"""Binning: a batch of rows and their predictions → flat bin indices in the layout, and data-quality counts.

One vectorised pass per batch, every numeric feature at once; nothing is computed per bin.
"""

from __future__ import annotations

import numpy as np

from service.artifact.card import ModelCard
from service.artifact.profile import slice_label
from service.monitoring.layout import BinLayout
from service.monitoring.quality import QUALITY_REASONS, REASON_INDEX, range_bounds

__all__ = ["Binner"]

_IMPUTED, _BELOW_MIN, _ABOVE_MAX = REASON_INDEX["imputed"], REASON_INDEX["below_min"], REASON_INDEX["above_max"]
_UNKNOWN_CATEGORY = REASON_INDEX["unknown_category"]


class Binner:
    """Turns rows (n × features, card order) and predictions into flat bin indices and data-quality counts."""

    def __init__(self, card: ModelCard, layout: BinLayout) -> None:
        self._starts = np.asarray([segment.start for segment in layout.features], dtype=np.intp)[None, :]
        self._slices = layout.slices
        self._prediction_start = layout.prediction.start
        self._prediction = layout.prediction.distribution
        numeric_prediction = self._prediction.kind == "numeric"
        self._prediction_edges = np.asarray(self._prediction.edges) if numeric_prediction else None
        specs = card.features
        self._numeric = [j for j, spec in enumerate(specs) if spec.type == "numeric"]
        self._categorical = [j for j, spec in enumerate(specs) if spec.type != "numeric"]
        self._all_numeric = not self._categorical
        distributions = [segment.distribution for segment in layout.features]
        width = max((len(distributions[j].edges) for j in self._numeric), default=0)
        edges = np.full((len(self._numeric), max(width, 1)), np.inf)
        for row, j in enumerate(self._numeric):
            edges[row, : len(distributions[j].edges)] = distributions[j].edges
        self._edges = edges[None, :, :]
        self._missing_bin = np.array([[len(distributions[j].labels) - 1 for j in self._numeric]], dtype=np.intp)
        bounds = [_bounds(specs[j].min, specs[j].max) for j in self._numeric]
        self._mins = np.array([low for low, _ in bounds], dtype=np.float64)
        self._maxs = np.array([high for _, high in bounds], dtype=np.float64)
        self._categorical_bins = [distributions[j] for j in self._categorical]
        self._features = len(specs)

    def bin(self, rows: np.ndarray, predictions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flat bin indices, one row per input row (its features, its prediction, its prediction in each slice),
        and the batch's data-quality counts (features × reasons)."""
        flat, quality = self._feature_bins(rows)
        prediction_bins = self._prediction_bins(predictions)
        columns = [flat, prediction_bins[:, None]]
        for column, starts, other in self._slices:
            offsets = np.fromiter(
                (starts.get(slice_label(value), other) for value in rows[:, column]),
                dtype=np.intp,
                count=len(rows),
            )
            columns.append((offsets + prediction_bins - self._prediction_start)[:, None])
        return np.concatenate(columns, axis=1), quality

    def _prediction_bins(self, predictions: np.ndarray) -> np.ndarray:
        if self._prediction_edges is not None:
            return np.searchsorted(self._prediction_edges, predictions, side="left") + self._prediction_start
        return self._prediction.bin_indices(predictions) + self._prediction_start

    def _feature_bins(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flat bin indices (n × features) and the data-quality counts (features × reasons)."""
        quality = np.zeros((self._features, len(QUALITY_REASONS)), dtype=np.int64)
        if self._all_numeric:
            bins = self._numeric_bins(rows, quality)
            return bins + self._starts, quality
        bins = np.empty((len(rows), self._features), dtype=np.intp)
        if self._numeric:
            numeric_quality = np.zeros((len(self._numeric), len(QUALITY_REASONS)), dtype=np.int64)
            bins[:, self._numeric] = self._numeric_bins(rows[:, self._numeric].astype(np.float64), numeric_quality)
            quality[self._numeric] = numeric_quality
        for position, j in enumerate(self._categorical):
            distribution = self._categorical_bins[position]
            column_bins = distribution.bin_indices(rows[:, j])
            bins[:, j] = column_bins
            quality[j, _IMPUTED] = int((column_bins == len(distribution.labels) - 1).sum())
            quality[j, _UNKNOWN_CATEGORY] = int((column_bins == len(distribution.categories)).sum())
        return bins + self._starts, quality

    def _numeric_bins(self, values: np.ndarray, quality: np.ndarray) -> np.ndarray:
        """Bins of a float matrix of the numeric features, for every column at once; fills `quality` in place."""
        # The number of edges strictly below a value is its bin (searchsorted, side="left"); +inf padding never
        # counts, and NaN compares false everywhere, so a missing value is moved to its own bin below.
        bins = (values[:, :, None] > self._edges).sum(axis=2)
        missing = np.isnan(values)
        if missing.any():
            bins = np.where(missing, self._missing_bin, bins)
            quality[:, _IMPUTED] = missing.sum(axis=0)
        quality[:, _BELOW_MIN] = (values < self._mins).sum(axis=0)
        quality[:, _ABOVE_MAX] = (values > self._maxs).sum(axis=0)
        return bins


def _bounds(low: float | None, high: float | None) -> tuple[float, float]:
    # A feature with no training range (every training value missing) is never out of it.
    return range_bounds(low, high) if low is not None and high is not None else (-np.inf, np.inf)
