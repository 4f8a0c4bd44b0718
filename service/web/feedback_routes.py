"""The prediction log over HTTP: every served request is recorded, and `POST /feedback` joins labels to it.

Registered only when the prediction log is on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from flask import Blueprint, Response, current_app, jsonify
from opentelemetry.trace import Tracer

from service.artifact import ModelCard
from service.artifact.profile import slice_label
from service.groundtruth.metrics import FeedbackInstruments
from service.groundtruth.records import PredictionRequest
from service.groundtruth.store import RETRY_AFTER, PredictionLog, PredictionLogUnavailable
from service.web.feedback_body import parse_feedback, summarize
from service.web.problems import Problem
from service.web.routes import Served, read_body, require_json
from service.web.validation import parse_body

__all__ = ["EXTENSION", "LOG_HEADER", "FeedbackState", "PredictionRecorder", "blueprint"]

EXTENSION = "modellens.feedback"
# On every /predict response while the log is on: `committed` (the rows survive a killed worker), `queued` (they
# are written within moments, unless the worker dies first) or `dropped` (not logged: /feedback will not know them).
LOG_HEADER = "X-Modellens-Prediction-Log"
blueprint = Blueprint("feedback", __name__)
_log = structlog.get_logger("service.web.feedback_routes")


class PredictionRecorder:
    """Hands each served request to the prediction log before the 200 goes out, and says in `LOG_HEADER` what
    became of it. With `commit_wait` (the durable mode) the answer waits, at most that long, for the rows' commit;
    with None it goes out as soon as they are queued. A log that is full or failing never holds the answer.
    Slice labels are computed here, from the validated rows, so the log stores bounded labels."""

    def __init__(
        self, log: PredictionLog, card: ModelCard, slice_features: Sequence[str], commit_wait: float | None
    ) -> None:
        self._log, self._card, self._commit_wait = log, card, commit_wait
        self._slice_columns = [(name, card.feature_names.index(name)) for name in slice_features]

    def __call__(self, served: Served) -> Mapping[str, str]:
        rows = served.rows
        slices = None
        if self._slice_columns:
            slices = {name: [slice_label(value) for value in rows[:, column]] for name, column in self._slice_columns}
        ticket = self._log.record(
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
                    probabilities=served.probabilities,
                )
            ]
        )
        if ticket is None:
            outcome = "dropped"
        elif self._commit_wait is not None and self._log.wait(ticket, self._commit_wait):
            outcome = "committed"
        else:
            outcome = "queued"
        return {LOG_HEADER: outcome}


@dataclass(frozen=True)
class FeedbackState:
    card: ModelCard
    tracer: Tracer
    max_batch: int
    log: PredictionLog
    instruments: FeedbackInstruments
    # Called with every joined label's actual value, after the realized-performance counters (label drift).
    on_actuals: tuple[Callable[[Sequence[Any]], None], ...] = ()


@blueprint.post("/feedback")
def feedback() -> Response:
    state: FeedbackState = current_app.extensions[EXTENSION]
    require_json()
    with state.tracer.start_as_current_span("join feedback", attributes={"model.name": state.card.name}) as span:
        items = parse_feedback(parse_body(read_body()), state.card, state.max_batch)
        try:
            result = state.log.add_feedback(items)
        except PredictionLogUnavailable as error:
            _log.warning("feedback deferred: the prediction log is unavailable", rows=len(items))
            raise Problem(
                status=503,
                title="Prediction log unavailable",
                detail=f"{error}; nothing was stored. Send the same labels again in {RETRY_AFTER} s.",
                slug="prediction-log-unavailable",
                headers={"Retry-After": str(RETRY_AFTER)},
            ) from error
        state.instruments.record(result)
        if result.joined:
            actuals = [label.actual for label in result.joined]
            for hook in state.on_actuals:
                hook(actuals)
        span.set_attributes(
            {"feedback.joined": len(result.joined), "feedback.unknown": len(result.unknown_ids),
             "feedback.duplicate": len(result.duplicate_ids)}
        )  # fmt: skip
    structlog.contextvars.bind_contextvars(rows=len(items))
    if result.unknown_ids or result.duplicate_ids:
        _log.info("feedback not joined", unknown=len(result.unknown_ids), duplicate=len(result.duplicate_ids))
    return jsonify(summarize(result))
