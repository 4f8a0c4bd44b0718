"""The prediction log over HTTP: every served request is recorded, and `POST /feedback` joins labels to it.

Registered only when the prediction log is on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from flask import Blueprint, Response, current_app, jsonify
from opentelemetry.trace import Tracer

from service.artifact import ModelCard
from service.artifact.profile import slice_label
from service.groundtruth.metrics import FeedbackInstruments
from service.groundtruth.records import PredictionRequest
from service.groundtruth.store import PredictionLog
from service.web.feedback_body import parse_feedback, summarize
from service.web.routes import Served, read_body, require_json
from service.web.validation import parse_body

__all__ = ["EXTENSION", "FeedbackState", "PredictionRecorder", "blueprint"]

EXTENSION = "modellens.feedback"
blueprint = Blueprint("feedback", __name__)
_log = structlog.get_logger("service.web.feedback_routes")


class PredictionRecorder:
    """Hands each served request to the prediction log before the 200 goes out (the log never drops what it was
    given). Slice labels are computed here, from the validated rows, so the log stores bounded labels."""

    def __init__(self, log: PredictionLog, card: ModelCard, slice_features: Sequence[str]) -> None:
        self._log, self._card = log, card
        self._slice_columns = [(name, card.feature_names.index(name)) for name in slice_features]

    def __call__(self, served: Served) -> None:
        rows = served.rows
        slices = None
        if self._slice_columns:
            slices = {name: [slice_label(value) for value in rows[:, column]] for name, column in self._slice_columns}
        self._log.record(
            [
                PredictionRequest(
                    request_id=served.request_id,
                    trace_id=served.trace_id,
                    created_at=time.time(),
                    model_name=self._card.name,
                    model_version=self._card.version,
                    body=served.body,
                    # regressors keep full float precision; labels are what the response said
                    predictions=served.raw if served.raw.dtype.kind == "f" else served.predictions,
                    slices=slices,
                )
            ]
        )


@dataclass(frozen=True)
class FeedbackState:
    card: ModelCard
    tracer: Tracer
    max_batch: int
    log: PredictionLog
    instruments: FeedbackInstruments


@blueprint.post("/feedback")
def feedback() -> Response:
    state: FeedbackState = current_app.extensions[EXTENSION]
    require_json()
    with state.tracer.start_as_current_span("join feedback", attributes={"model.name": state.card.name}) as span:
        items = parse_feedback(parse_body(read_body()), state.card, state.max_batch)
        result = state.log.add_feedback(items)
        state.instruments.record(result)
        span.set_attributes(
            {"feedback.joined": len(result.joined), "feedback.unknown": len(result.unknown_ids),
             "feedback.duplicate": len(result.duplicate_ids)}
        )  # fmt: skip
    structlog.contextvars.bind_contextvars(rows=len(items))
    if result.unknown_ids or result.duplicate_ids:
        _log.info("feedback not joined", unknown=len(result.unknown_ids), duplicate=len(result.duplicate_ids))
    return jsonify(summarize(result))
