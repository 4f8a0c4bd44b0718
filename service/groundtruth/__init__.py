"""Delayed ground truth: the prediction log, the join of labels to the predictions they judge, realized performance.

It imports only `service.artifact`.
"""

from service.groundtruth.health import register_log_instruments
from service.groundtruth.ids import new_prediction_ids, split_prediction_id
from service.groundtruth.metrics import FeedbackInstruments
from service.groundtruth.records import (
    FeedbackItem,
    FeedbackResult,
    JoinedLabel,
    PredictionRequest,
    StoredPrediction,
)
from service.groundtruth.store import LogStats, PredictionLog, PredictionLogError, PredictionLogUnavailable

__all__ = [
    "FeedbackInstruments",
    "FeedbackItem",
    "FeedbackResult",
    "JoinedLabel",
    "LogStats",
    "PredictionLog",
    "PredictionLogError",
    "PredictionLogUnavailable",
    "PredictionRequest",
    "StoredPrediction",
    "new_prediction_ids",
    "register_log_instruments",
    "split_prediction_id",
]
