"""Delayed ground truth: the prediction log, the join of labels to the predictions they judge, realized performance.

It imports only `service.artifact`.
"""

from service.groundtruth.metrics import FeedbackInstruments
from service.groundtruth.store import (
    FeedbackItem,
    FeedbackResult,
    JoinedLabel,
    LogStats,
    PredictionLog,
    PredictionRequest,
    StoredPrediction,
    new_prediction_ids,
    split_prediction_id,
)

__all__ = [
    "FeedbackInstruments",
    "FeedbackItem",
    "FeedbackResult",
    "JoinedLabel",
    "LogStats",
    "PredictionLog",
    "PredictionRequest",
    "StoredPrediction",
    "new_prediction_ids",
    "split_prediction_id",
]
