"""HTTP transport: translate requests into model calls and results into JSON."""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import structlog
from flask import Blueprint, Response, current_app, jsonify, request
from opentelemetry import trace
from opentelemetry.trace import Tracer

from service.artifact.model import Model
from service.artifact.profile import slice_label
from service.groundtruth import FeedbackInstruments
from service.groundtruth.ids import new_prediction_ids
from service.groundtruth.records import PredictionRequest
from service.groundtruth.store import PredictionLog
from service.monitoring.instruments import ModelInstruments
from service.monitoring.monitor import ModelMonitor
from service.monitoring.shadow import ShadowScorer
from service.rehearsal.faults import FAULT_HEADER, FaultInjector
from service.settings import Settings
from service.web.feedback_body import parse_feedback, summarize
from service.web.problems import Problem
from service.web.validation import InvalidInstances, parse_body, parse_instances

__all__ = ["ServiceState", "blueprint"]

blueprint = Blueprint("api", __name__)
_log = structlog.get_logger("service.web.routes")


@dataclass
class ServiceState:
    """What the request handlers need, built once by `create_app` (in `app.extensions["modellens"]`)."""

    settings: Settings
    model: Model
    tracer: Tracer
    instruments: ModelInstruments
    metrics_renderer: Any | None  # otel.openmetrics.OpenMetricsReader, or None when telemetry is disabled
    monitor: ModelMonitor | None = None  # None with MODELLENS_MONITORING=off
    shadow: ShadowScorer | None = None
    faults: FaultInjector | None = None  # only with MODELLENS_FAULTS=1
    predictions: PredictionLog | None = None  # None with MODELLENS_PREDICTION_LOG=off
    feedback: FeedbackInstruments | None = None

    def close(self) -> None:
        """Finish background work before the process exits: shadow scoring, then the prediction log's writes."""
        if self.shadow is not None:
            self.shadow.close()
        if self.predictions is not None:
            self.predictions.close()


def _state() -> ServiceState:
    state: ServiceState = current_app.extensions["modellens"]
    return state


def _require_json() -> None:
    mimetype = request.mimetype
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise Problem(
            status=415,
            title="Unsupported Media Type",
            detail=f"Send the body as application/json, not {mimetype or 'no content type'}.",
            slug="unsupported-media-type",
        )


@blueprint.post("/predict")
def predict() -> Response:
    state = _state()
    model, card, tracer = state.model, state.model.card, state.tracer
    span_attributes = {"model.name": card.name, "model.version": card.version}
    structlog.contextvars.bind_contextvars(model_version=card.version)
    with _stage_span(tracer, "validate", span_attributes) as span:
        _require_json()
        body = request.get_data(cache=False)
        payload = parse_body(body)
        try:
            rows = parse_instances(payload, card, state.settings.max_batch)
        except Problem as problem:
            if state.monitor is not None:
                instances = payload.get("instances") if isinstance(payload, dict) else None
                quality = problem.quality if isinstance(problem, InvalidInstances) else []
                state.monitor.record_rejection(quality, len(instances) if isinstance(instances, list) else 0)
            raise
        span.set_attribute("model.batch.size", len(rows))
    structlog.contextvars.bind_contextvars(rows=len(rows))
    if state.faults is not None:
        state.faults.run_stage(request.headers.get(FAULT_HEADER), span_attributes)
    with _stage_span(tracer, "inference", span_attributes) as span:
        span.set_attribute("model.batch.size", len(rows))
        started = time.perf_counter()
        try:
            raw = model.predict_array(rows)
        except Exception:
            state.instruments.record_error(len(rows))
            raise
        state.instruments.record_success(len(rows), time.perf_counter() - started)
    if state.monitor is not None:
        state.monitor.observe(rows, raw)
    request_id, prediction_ids = new_prediction_ids(len(rows))
    predictions = model.to_python(raw)
    if state.predictions is not None:
        _log_predictions(state, request_id, body, rows, raw if raw.dtype.kind == "f" else predictions)
    if state.shadow is not None:
        state.shadow.submit(rows, raw, prediction_ids)
    return jsonify(
        predictions=predictions,
        prediction_ids=prediction_ids,
        model={"name": card.name, "version": card.version},
    )


def _stage_span(tracer: Tracer, name: str, attributes: dict[str, str]) -> AbstractContextManager[trace.Span]:
    """A child span of the request's span; a no-op when that span is not recording. With the standard samplers a
    child of an unsampled request is never sampled either, so at 10% sampling this skips two spans that would be
    created and dropped on 90% of requests."""
    if trace.get_current_span().is_recording():
        return tracer.start_as_current_span(name, attributes=attributes)
    return _NOT_RECORDING


_NOT_RECORDING = nullcontext(trace.INVALID_SPAN)


def _log_predictions(state: ServiceState, request_id: str, body: bytes, rows: Any, predictions: Any) -> None:
    """Hand the request to the prediction log before the 200 goes out (the log never drops what it was given)."""
    assert state.predictions is not None
    card = state.model.card
    span_context = trace.get_current_span().get_span_context()
    slices = None
    if state.settings.slice_features:
        columns = [(name, card.feature_names.index(name)) for name in state.settings.slice_features]
        slices = {name: [slice_label(value) for value in rows[:, column]] for name, column in columns}
    state.predictions.record(
        [
            PredictionRequest(
                request_id=request_id,
                trace_id=format(span_context.trace_id, "032x") if span_context.is_valid else None,
                created_at=time.time(),
                model_name=card.name,
                model_version=card.version,
                body=body,
                predictions=predictions,
                slices=slices,
            )
        ]
    )


@blueprint.post("/feedback")
def feedback() -> Response:
    state = _state()
    if state.predictions is None or state.feedback is None:
        raise Problem(
            status=404, title="Feedback is off", detail="The prediction log is off (MODELLENS_PREDICTION_LOG)."
        )
    _require_json()
    with state.tracer.start_as_current_span("join feedback", attributes={"model.name": state.model.card.name}) as span:
        items = parse_feedback(parse_body(request.get_data(cache=False)), state.model.card, state.settings.max_batch)
        result = state.predictions.add_feedback(items)
        state.feedback.record(result)
        span.set_attributes(
            {"feedback.joined": len(result.joined), "feedback.unknown": len(result.unknown_ids),
             "feedback.duplicate": len(result.duplicate_ids)}
        )  # fmt: skip
    structlog.contextvars.bind_contextvars(rows=len(items))
    if result.unknown_ids or result.duplicate_ids:
        _log.info("feedback not joined", unknown=len(result.unknown_ids), duplicate=len(result.duplicate_ids))
    return jsonify(summarize(result))


@blueprint.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")


@blueprint.get("/readyz")
def readyz() -> Response:
    state = current_app.extensions.get("modellens")
    if state is None:
        raise Problem(status=503, title="Not ready", detail="No model is loaded.")
    return jsonify(status="ready", model={"name": state.model.card.name, "version": state.model.card.version})


@blueprint.get("/model")
def model_card() -> Response:
    return jsonify(_state().model.card.to_dict())


@blueprint.get("/model/reference")
def model_reference() -> Response:
    monitor = _state().monitor
    if monitor is None:
        raise Problem(status=404, title="No reference profile", detail="Monitoring is off (MODELLENS_MONITORING).")
    return jsonify(monitor.profile.to_dict())


@blueprint.get("/monitoring")
def monitoring() -> Response:
    monitor = _state().monitor
    if monitor is None:
        raise Problem(status=404, title="Monitoring is off", detail="Set MODELLENS_MONITORING=on to enable it.")
    summary = monitor.snapshot()
    state = _state()
    if state.shadow is not None:
        summary["shadow"] = state.shadow.summary()
    if state.feedback is not None:
        summary["realized_performance"] = state.feedback.summary()
    return jsonify(summary)


@blueprint.get("/metrics")
def metrics() -> Response:
    renderer = _state().metrics_renderer
    if renderer is None:
        return Response("# telemetry is disabled (OTEL_SDK_DISABLED=true)\n", mimetype="text/plain")
    body, content_type = renderer.render(request.headers.get("Accept"))
    return Response(body, content_type=content_type)
