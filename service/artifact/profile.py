"""The reference profile: how features and predictions were distributed in the training data.

Stored beside the model (`reference-profile.json`) and versioned with it. Drift is measured against it: numeric
values fall into bins cut at training quantiles, categorical values into their training categories.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from service.artifact.card import ModelCard
from service.artifact.reconstruction import ReconstructionReference, fit_reconstruction

__all__ = [
    "MISSING",
    "OTHER",
    "PROFILE_FILE",
    "UNSEEN",
    "Distribution",
    "ReferenceProfile",
    "SliceSpec",
    "build_profile",
    "slice_label",
]

PROFILE_FILE = "reference-profile.json"
MISSING = "__missing__"  # bin of null values
UNSEEN = "__unseen__"  # bin of categories the training data never had
OTHER = "__other__"  # slice value for values the training data never had
MAX_SLICE_VALUES = 20  # a feature with more distinct training values is not offered as a slice


@dataclass(frozen=True)
class Distribution:
    """Bins and their training shares and counts. Numeric: `edges` cut (-inf, e0], (e0, e1], …, (ek, inf);
    categorical: one bin per category, then `__unseen__`. Features also end with a `__missing__` bin; predictions
    do not. `counts` is None in profiles written before 0.2, which stored only shares: the drift test then treats
    the reference as exact (a one-sample test, `service.monitoring.drift`)."""

    kind: str  # "numeric" or "categorical"
    labels: tuple[str, ...]
    shares: tuple[float, ...]
    edges: tuple[float, ...] = ()
    categories: tuple[str, ...] = ()
    has_missing: bool = True
    counts: tuple[int, ...] | None = None

    @property
    def rows(self) -> int | None:
        """Reference rows in these bins; None when the profile stored only shares."""
        return None if self.counts is None else sum(self.counts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "labels": list(self.labels),
            "shares": list(self.shares),
            "counts": None if self.counts is None else list(self.counts),
            "edges": list(self.edges),
            "categories": list(self.categories),
            "has_missing": self.has_missing,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Distribution:
        return cls(
            kind=data["kind"],
            labels=tuple(data["labels"]),
            shares=tuple(float(x) for x in data["shares"]),
            edges=tuple(float(x) for x in data["edges"]),
            categories=tuple(data["categories"]),
            has_missing=bool(data["has_missing"]),
            counts=None if data.get("counts") is None else tuple(int(x) for x in data["counts"]),
        )

    def bin_indices(self, values: np.ndarray) -> np.ndarray:
        """The bin of every value (vectorised for numeric values; a dict lookup per value for categories)."""
        missing = len(self.labels) - 1
        if self.kind == "numeric":
            numbers = np.asarray(values, dtype=np.float64)
            indices = np.searchsorted(np.asarray(self.edges), numbers, side="left")
            if self.has_missing:
                indices[np.isnan(numbers)] = missing
            return indices
        lookup = {category: index for index, category in enumerate(self.categories)}
        unseen = len(self.categories)
        return np.fromiter(
            (missing if _is_missing(value) and self.has_missing else lookup.get(value, unseen) for value in values),
            dtype=np.intp,
            count=len(values),
        )


@dataclass(frozen=True)
class SliceSpec:
    """A low-cardinality feature the prediction distribution can be broken down by."""

    feature: str
    values: tuple[str, ...]  # slice labels (see `slice_label`); anything else is `__other__`
    predictions: dict[str, Distribution] = field(default_factory=dict)  # per slice value

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "values": list(self.values),
            "predictions": {value: dist.to_dict() for value, dist in self.predictions.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SliceSpec:
        return cls(
            feature=data["feature"],
            values=tuple(data["values"]),
            predictions={value: Distribution.from_dict(d) for value, d in data["predictions"].items()},
        )


@dataclass(frozen=True)
class ReferenceProfile:
    """Reference distributions of one model version's training data."""

    model_version: str
    created_at: str
    rows: int
    features: dict[str, Distribution]
    prediction: Distribution
    slices: dict[str, SliceSpec]
    # The numeric features' PCA (multivariate drift); None in profiles written before it, or with < 2 such features.
    multivariate: ReconstructionReference | None = None
    # The training target (label drift, against the ground truth /feedback joins): quantile bins for a regressor,
    # the card's classes for a classifier; None in profiles written before it, or profiled without the target.
    target: Distribution | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "created_at": self.created_at,
            "rows": self.rows,
            "features": {name: dist.to_dict() for name, dist in self.features.items()},
            "prediction": self.prediction.to_dict(),
            "slices": {name: spec.to_dict() for name, spec in self.slices.items()},
            "multivariate": None if self.multivariate is None else self.multivariate.to_dict(),
            "target": None if self.target is None else self.target.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReferenceProfile:
        rows = int(data["rows"])
        return cls(
            model_version=data["model_version"],
            created_at=data["created_at"],
            rows=rows,
            features={name: _with_counts(Distribution.from_dict(d), rows) for name, d in data["features"].items()},
            prediction=_with_counts(Distribution.from_dict(data["prediction"]), rows),
            slices={name: SliceSpec.from_dict(s) for name, s in data["slices"].items()},
            multivariate=None
            if data.get("multivariate") is None
            else ReconstructionReference.from_dict(data["multivariate"]),
            target=None if data.get("target") is None else Distribution.from_dict(data["target"]),
        )

    def save(self, directory: Path) -> Path:
        path = Path(directory) / PROFILE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, directory: Path) -> ReferenceProfile:
        return cls.from_dict(json.loads((Path(directory) / PROFILE_FILE).read_text()))


def build_profile(
    card: ModelCard, rows: np.ndarray, predictions: np.ndarray, *, targets: np.ndarray | None = None, bins: int = 10
) -> ReferenceProfile:
    """Profile training `rows` (n × features in card order), the model's `predictions` on them and, when given,
    their `targets` (rows without a target are left out of the target's bins)."""
    features = {}
    for j, spec in enumerate(card.features):
        column = rows[:, j]
        if spec.type == "numeric":
            features[spec.name] = _numeric(column.astype(np.float64), bins, has_missing=True)
        else:
            features[spec.name] = _categorical(column, spec.categories, has_missing=True)
    if card.task == "classification":
        prediction = _categorical(predictions.astype(str), card.classes, has_missing=False, unseen=False)
    else:
        prediction = _numeric(predictions.astype(np.float64), bins, has_missing=False)
    slices = {}
    for j, spec in enumerate(card.features):
        labels = np.array([slice_label(value) for value in rows[:, j]], dtype=object)
        values = sorted(set(labels) - {MISSING})
        if not 2 <= len(values) <= MAX_SLICE_VALUES:
            continue
        slices[spec.name] = SliceSpec(
            feature=spec.name,
            values=tuple(values),
            predictions={value: _shares_like(prediction, predictions[labels == value]) for value in values},
        )
    numeric = [j for j, spec in enumerate(card.features) if spec.type == "numeric"]
    multivariate = fit_reconstruction(
        tuple(card.features[j].name for j in numeric), rows[:, numeric].astype(np.float64)
    )
    return ReferenceProfile(
        model_version=card.version,
        created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        rows=len(rows),
        features=features,
        prediction=prediction,
        slices=slices,
        multivariate=multivariate,
        target=None if targets is None else _target(card, targets, bins),
    )


def _target(card: ModelCard, targets: np.ndarray, bins: int) -> Distribution:
    """The target's bins: a regressor's at its quantiles, as its predictions'; a classifier's over its classes,
    as the card names them (a label the card does not know falls in no bin)."""
    known = np.array([not _is_missing(value) for value in targets], dtype=bool)
    if card.task == "classification":
        labels = np.array([_class_label(value) for value in targets[known]], dtype=object)
        return _categorical(labels, card.classes, has_missing=False, unseen=False)
    return _numeric(targets[known].astype(np.float64), bins, has_missing=False)


def _with_counts(distribution: Distribution, rows: int) -> Distribution:
    """A feature's or the predictions' counts, recovered from a profile that stored only shares of all `rows`."""
    if distribution.counts is not None:
        return distribution
    counts = tuple(round(share * rows) for share in distribution.shares)
    return replace(distribution, counts=counts)


def _class_label(value: Any) -> str:
    """A target value as the card's class label: a whole float (2.0, from a CSV column with gaps) is "2"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def slice_label(value: Any) -> str:
    """The slice value of a feature value: the string itself, or a number rounded to 6 significant digits."""
    if _is_missing(value):
        return MISSING
    if isinstance(value, str):
        return value
    return format(float(value), ".6g")


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _numeric(values: np.ndarray, bins: int, *, has_missing: bool) -> Distribution:
    present = values[~np.isnan(values)]
    quantiles = np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1]) if len(present) else np.array([])
    edges = tuple(float(edge) for edge in np.unique(quantiles))
    labels = tuple(str(i) for i in range(len(edges) + 1)) + ((MISSING,) if has_missing else ())
    shell = Distribution("numeric", labels, (), edges=edges, has_missing=has_missing)
    return _shares_like(shell, values)


def _categorical(
    values: np.ndarray, categories: tuple[str, ...], *, has_missing: bool, unseen: bool = True
) -> Distribution:
    labels = categories + ((UNSEEN,) if unseen else ()) + ((MISSING,) if has_missing else ())
    shell = Distribution("categorical", labels, (), categories=categories, has_missing=has_missing)
    return _shares_like(shell, values)


def _shares_like(shell: Distribution, values: np.ndarray) -> Distribution:
    """`shell`'s bins, with the shares of `values` in them."""
    counts = np.bincount(shell.bin_indices(values), minlength=len(shell.labels))[: len(shell.labels)]
    total = counts.sum()
    shares = tuple(float(c) / total for c in counts) if total else tuple(0.0 for _ in counts)
    return Distribution(
        shell.kind, shell.labels, shares, shell.edges, shell.categories, shell.has_missing,
        tuple(int(c) for c in counts),
    )  # fmt: skip
