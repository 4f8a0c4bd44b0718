"""The ground-truth domain: an acknowledged prediction request, a prediction read back, labels and their join."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.groundtruth.ids import prediction_ids

__all__ = ["FeedbackItem", "FeedbackResult", "JoinedLabel", "PredictionRequest", "StoredPrediction"]


@dataclass(frozen=True, slots=True)
class PredictionRequest:
    """One acknowledged `/predict` request. Its predictions' ids are `prediction_ids(request_id, rows)`."""

    request_id: str  # 24 hex digits (`new_prediction_ids`)
    trace_id: str | None
    created_at: float  # unix seconds
    model_name: str
    model_version: str
    body: bytes  # the request body as received: {"instances": [...]}
    # One per row, in row order; a float array is stored as float64 bytes (no per-value text encoding).
    predictions: Sequence[float | str] | np.ndarray
    slices: Mapping[str, Sequence[str]] | None = None  # slice feature → slice value per row
    # A calibrated classifier's class probabilities (rows × the card's classes), stored as float32 bytes.
    probabilities: np.ndarray | None = None

    @property
    def prediction_ids(self) -> list[str]:
        return prediction_ids(self.request_id, len(self.predictions))


@dataclass(frozen=True, slots=True)
class StoredPrediction:
    """A prediction read back from the log, with its ground truth if some has arrived."""

    prediction_id: str
    trace_id: str | None
    created_at: float
    model_name: str
    model_version: str
    inputs: dict[str, Any]
    prediction: Any
    shadow_prediction: Any
    slices: dict[str, str] | None
    actual: Any = None
    received_at: float | None = None


@dataclass(frozen=True, slots=True)
class FeedbackItem:
    """One ground-truth label for an earlier prediction."""

    prediction_id: str
    actual: float | str


@dataclass(frozen=True, slots=True)
class JoinedLabel:
    """A label joined to its prediction; the model name and version are the prediction's, not today's."""

    prediction_id: str
    model_name: str
    model_version: str
    prediction: Any
    actual: float | str
    delay_seconds: float
    slices: Mapping[str, str] | None
    probabilities: np.ndarray | None = None  # the prediction's class probabilities, when they were logged


@dataclass(frozen=True)
class FeedbackResult:
    """What one batch of feedback did: the labels joined, and the ids that could not be (in request order)."""

    joined: list[JoinedLabel]
    unknown_ids: list[str]
    duplicate_ids: list[str]
