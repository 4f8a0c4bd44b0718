"""The multivariate reference: a PCA of the training data's numeric features and how well it reconstructs rows.

Per-feature tests see each marginal distribution; a change in how features move together (two correlated features
decorrelating, a rotation) leaves every marginal where it was. A PCA fitted on the training rows keeps the
directions the data varies along; a row from a changed joint distribution falls off them, and its reconstruction
error (the squared distance between the standardised row and its projection) grows. `ReconstructionReference`
holds what the monitor needs to score rows and to judge a window's mean error (docs/metrics.md, "Multivariate
drift"): the standardisation, the kept components, and the mean, spread and skewness of the per-row error on rows
the PCA was not fitted on (a two-fold split of the training rows), so the reference error is not the optimistic
in-sample one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["EXPLAINED_VARIANCE", "ReconstructionReference", "fit_reconstruction"]

# Components are kept until they explain this share of the variance (NannyML's default for the same method): the
# directions left out are where a change in the joint distribution shows.
EXPLAINED_VARIANCE = 0.65
_MIN_ROWS = 20  # fewer training rows give no usable estimate of the error's spread


@dataclass(frozen=True)
class ReconstructionReference:
    """A PCA of the numeric features (in `features` order), and its error on held-out training rows."""

    features: tuple[str, ...]
    center: tuple[float, ...]  # the training median: what a missing value is imputed as
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    components: tuple[tuple[float, ...], ...]  # k × features, orthonormal rows
    error_mean: float
    error_std: float
    error_skewness: float
    rows: int  # held-out rows the error moments come from

    def errors(self, rows: np.ndarray) -> np.ndarray:
        """Per-row squared reconstruction error of `rows` (n × features, float, NaN for missing)."""
        values = np.where(np.isnan(rows), np.asarray(self.center), rows)
        standard = (values - np.asarray(self.mean)) / np.asarray(self.scale)
        components = np.asarray(self.components)
        residual = standard - (standard @ components.T) @ components
        return np.asarray(np.einsum("ij,ij->i", residual, residual))

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "center": list(self.center),
            "mean": list(self.mean),
            "scale": list(self.scale),
            "components": [list(row) for row in self.components],
            "error_mean": self.error_mean,
            "error_std": self.error_std,
            "error_skewness": self.error_skewness,
            "rows": self.rows,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReconstructionReference:
        return cls(
            features=tuple(data["features"]),
            center=tuple(float(x) for x in data["center"]),
            mean=tuple(float(x) for x in data["mean"]),
            scale=tuple(float(x) for x in data["scale"]),
            components=tuple(tuple(float(x) for x in row) for row in data["components"]),
            error_mean=float(data["error_mean"]),
            error_std=float(data["error_std"]),
            error_skewness=float(data["error_skewness"]),
            rows=int(data["rows"]),
        )


def fit_reconstruction(features: tuple[str, ...], rows: np.ndarray, *, seed: int = 0) -> ReconstructionReference | None:
    """The reference for `rows` (n × features, float, NaN for missing); None when there is nothing to learn
    (fewer than two features that vary, or too few rows)."""
    center = np.nanmedian(rows, axis=0) if len(rows) else np.zeros(rows.shape[1])
    center = np.where(np.isnan(center), 0.0, center)
    values = np.where(np.isnan(rows), center, rows)
    varying = values.std(axis=0) > 0
    if varying.sum() < 2 or len(values) < _MIN_ROWS:
        return None
    names = tuple(name for name, keep in zip(features, varying, strict=True) if keep)
    values, center = values[:, varying], center[varying]
    # Two folds: each half's error under the PCA fitted on the other half, so the moments are out-of-sample.
    order = np.random.default_rng(seed).permutation(len(values))
    halves = order[: len(order) // 2], order[len(order) // 2 :]
    held_out = np.concatenate([_fit(values[fit]).errors(values[score]) for fit, score in (halves, halves[::-1])])
    mean, std = float(held_out.mean()), float(held_out.std(ddof=1))
    skewness = float(((held_out - mean) ** 3).mean() / std**3) if std > 0 else 0.0
    final = _fit(values)
    return ReconstructionReference(
        features=names,
        center=tuple(float(x) for x in center),
        mean=final.mean,
        scale=final.scale,
        components=final.components,
        error_mean=mean,
        error_std=std,
        error_skewness=skewness,
        rows=len(held_out),
    )


def _fit(values: np.ndarray) -> ReconstructionReference:
    mean = values.mean(axis=0)
    scale = values.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    standard = (values - mean) / scale
    _, singular, vt = np.linalg.svd(standard, full_matrices=False)
    explained = np.cumsum(singular**2) / np.sum(singular**2)
    kept = min(int(np.searchsorted(explained, EXPLAINED_VARIANCE)) + 1, len(singular) - 1)
    return ReconstructionReference(
        features=(),
        center=tuple(float(x) for x in mean),
        mean=tuple(float(x) for x in mean),
        scale=tuple(float(x) for x in scale),
        components=tuple(tuple(float(x) for x in row) for row in vt[:kept]),
        error_mean=0.0,
        error_std=0.0,
        error_skewness=0.0,
        rows=0,
    )
