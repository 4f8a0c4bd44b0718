"""Request bodies for the load generator: real rows of the model's training data, as `/predict` JSON."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np

from service.artifact.card import ModelCard
from service.artifact.datasets import load_bundled

__all__ = ["sample_rows", "write_bodies"]


@cache
def _training_rows(dataset: str, features: tuple[str, ...]) -> np.ndarray:
    frame = load_bundled(dataset.removeprefix("sklearn:")).frame
    return frame[list(features)].to_numpy(dtype=np.float64)


def sample_rows(card: ModelCard, count: int, *, seed: int = 0) -> np.ndarray:
    """`count` rows (n × features, card order) drawn with replacement from the bundled dataset the model was
    trained on: real rows keep drift scores near zero and spread values over every bin, as real traffic would."""
    rows = _training_rows(card.dataset, tuple(card.feature_names))
    return rows[np.random.default_rng(seed).integers(0, len(rows), size=count)]


def write_bodies(card: ModelCard, path: Path, *, bodies: int, rows: int, seed: int = 0) -> Path:
    """Write `bodies` request bodies of `rows` instances each, one JSON document per line (what wrk cycles)."""
    values = sample_rows(card, bodies * rows, seed=seed).round(6).tolist()
    instances = [dict(zip(card.feature_names, row, strict=True)) for row in values]
    with path.open("w") as out:
        for start in range(0, len(instances), rows):
            out.write(json.dumps({"instances": instances[start : start + rows]}, separators=(",", ":")) + "\n")
    return path
