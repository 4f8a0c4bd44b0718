"""A request's row in the prediction log: built from a `PredictionRequest`, read back column by column on demand."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from service.groundtruth.encoding import decode_predictions, dumps, encode_predictions
from service.groundtruth.ids import split_prediction_id
from service.groundtruth.records import PredictionRequest

__all__ = ["StoredRequest", "locate", "request_row"]


def request_row(request: PredictionRequest) -> tuple[Any, ...]:
    """`request` as a `requests` row, in the table's column order (`shadow_predictions` comes later)."""
    return (
        str(request.request_id),
        None if request.trace_id is None else str(request.trace_id),
        float(request.created_at),
        str(request.model_name),
        str(request.model_version),
        len(request.predictions),
        bytes(request.body),
        encode_predictions(request.predictions),
        None if request.slices is None else dumps({name: list(values) for name, values in request.slices.items()}),
        None if request.probabilities is None else np.ascontiguousarray(request.probabilities, "<f4").tobytes(),
    )


class StoredRequest:
    """A request row read back; its JSON columns are decoded on first use (a label needs only one row's).

    `row` holds every column in table order: `request_row`'s, with `shadow_predictions` before `slices`, and
    `probabilities` last (NULL in rows logged before it existed).
    """

    __slots__ = ("_cache", "_raw", "created_at", "model_name", "model_version", "row_count", "trace_id")

    def __init__(self, row: tuple[Any, ...]) -> None:
        _, self.trace_id, self.created_at, self.model_name, self.model_version, self.row_count = row[:6]
        self._raw = row[6:]  # body, predictions, shadow_predictions, slices, probabilities
        self._cache: dict[int, Any] = {}

    def _decoded(self, column: int) -> Any:
        if column not in self._cache:
            raw = self._raw[column]
            self._cache[column] = None if raw is None else json.loads(raw)
        return self._cache[column]

    def inputs(self, index: int) -> dict[str, Any]:
        instances = self._decoded(0)["instances"]
        return dict(instances[index])

    def prediction(self, index: int) -> Any:
        """The prediction for row `index` (the column is decoded once, however many of its rows are asked for)."""
        if 1 not in self._cache:
            self._cache[1] = decode_predictions(self._raw[1])
        return self._cache[1][index]

    def shadow(self, index: int) -> Any:
        shadow = self._decoded(2)
        return None if shadow is None or index >= len(shadow) else shadow[index]

    def probabilities(self, index: int) -> np.ndarray | None:
        """Row `index`'s class probabilities, or None when the request logged none."""
        raw = self._raw[4] if len(self._raw) > 4 else None
        if raw is None:
            return None
        if 4 not in self._cache:
            self._cache[4] = np.frombuffer(bytes(raw), dtype="<f4").reshape(self.row_count, -1)
        return np.asarray(self._cache[4][index], dtype=np.float64)

    def slices(self, index: int) -> dict[str, str] | None:
        slices = self._decoded(3)
        return None if slices is None else {name: values[index] for name, values in slices.items()}


def locate(requests: Mapping[str, StoredRequest], prediction_id: str) -> tuple[StoredRequest, int] | None:
    """The stored request `prediction_id` points into, and its row index; None if it has no such row."""
    split = split_prediction_id(prediction_id)
    if split is None:
        return None
    stored = requests.get(split[0])
    if stored is None or split[1] >= stored.row_count:
        return None
    return stored, split[1]
