"""Rows like the served model's training data, with their true targets when known, for the load generator."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["RowSource"]


class RowSource:
    """Rows like the training data: the bundled dataset when the model was trained on one, else the reference
    profile's bins (values drawn uniformly inside each bin, bins drawn by their training share)."""

    def __init__(self, card: dict[str, Any], profile: dict[str, Any] | None, rng: np.random.Generator) -> None:
        self.card = card
        self.features = [feature["name"] for feature in card["features"]]
        self.numeric = [f["name"] for f in card["features"] if f["type"] == "numeric"]
        self.task = card["task"]
        self.classes = list(card.get("classes") or [])
        self._rng = rng
        self._rows: list[dict[str, Any]] | None = None
        self._targets: list[Any] | None = None
        dataset = str(card.get("dataset", ""))
        if dataset.startswith("sklearn:"):
            self._load_bundled(dataset.split(":", 1)[1])
        if self._rows is None and profile is None:
            raise ValueError("the model has no bundled dataset and the service gave no reference profile")
        self._profile = profile
        self.std = self._stds()
        self.target_std = self._target_std()  # the scale the label-drift scenario moves a regressor's target by

    def _load_bundled(self, name: str) -> None:
        from service.artifact.datasets import BUNDLED, load_bundled

        if name not in BUNDLED:
            return
        dataset = load_bundled(name)
        frame = dataset.frame[self.features]
        self._rows = frame.to_dict(orient="records")
        self._targets = dataset.target.tolist()

    def _stds(self) -> dict[str, float]:
        if self._rows is not None:
            return {name: float(np.std([row[name] for row in self._rows])) or 1.0 for name in self.numeric}
        stds = {}
        for feature in self.card["features"]:
            if feature["type"] == "numeric":
                low, high = feature.get("min") or 0.0, feature.get("max") or 1.0
                stds[feature["name"]] = (high - low) / 4 or 1.0
        return stds

    def _target_std(self) -> float:
        """The targets' standard deviation; without them, the profile's target (or prediction) bins' p10–p90
        span over 2.56 (a normal distribution's)."""
        if self._targets is not None and self.task == "regression":
            return float(np.std(self._targets)) or 1.0
        profile = self._profile or {}
        bins = profile.get("target") or profile.get("prediction") or {}
        edges = bins.get("edges") or []
        return (edges[-1] - edges[0]) / 2.56 if len(edges) > 1 else 1.0

    def sample(self) -> tuple[dict[str, Any], Any]:
        """One row and its true target (None when unknown)."""
        if self._rows is not None and self._targets is not None:
            index = int(self._rng.integers(len(self._rows)))
            return dict(self._rows[index]), self._targets[index]
        assert self._profile is not None
        row = {}
        for feature in self.card["features"]:
            dist = self._profile["features"][feature["name"]]
            shares = np.asarray(dist["shares"], dtype=float)
            labels = dist["labels"]
            index = int(self._rng.choice(len(labels), p=shares / shares.sum()))
            row[feature["name"]] = self._value(feature, dist, labels[index], index)
        return row, None

    def _value(self, feature: dict[str, Any], dist: dict[str, Any], label: str, index: int) -> Any:
        if label == "__missing__":
            return None
        if dist["kind"] == "categorical":
            return label if label != "__unseen__" else "unseen-category"
        edges = dist["edges"]
        low = edges[index - 1] if index > 0 else feature.get("min", edges[0] if edges else 0.0)
        high = edges[index] if index < len(edges) else feature.get("max", edges[-1] if edges else 1.0)
        return float(self._rng.uniform(low, high)) if high > low else float(low)
