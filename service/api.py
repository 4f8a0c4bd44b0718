"""HTTP transport: translate requests into model calls and results into JSON."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import structlog
from flask import Blueprint, Response, current_app, jsonify, request
from opentelemetry.trace import Tracer

from service.faults import FAULT_HEADER, FaultInjector
from service.instruments import ModelInstruments
from service.model import Model
from service.monitoring import ModelMonitor
from service.problems import Problem
from service.settings import Settings
from service.shadow import ShadowScorer
from service.validation import parse_body, parse_instances

__all__ = ["ServiceState", "blueprint"]

blueprint = Blueprint("api", __name__)
_log = structlog.get_logger("service.api")


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

    def close(self) -> None:
        """Finish background work (shadow scoring) before the process exits."""
        if self.shadow is not None:
            self.shadow.close()


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
    with tracer.start_as_current_span("validate", attributes=span_attributes) as span:
        _require_json()
        payload = parse_body(request.get_data(cache=False))
        try:
            rows = parse_instances(payload, card, state.settings.max_batch)
        except Problem as problem:
            if state.monitor is not None:
                instances = payload.get("instances") if isinstance(payload, dict) else None
                state.monitor.record_rejection(problem.errors, len(instances) if isinstance(instances, list) else 0)
            raise
        span.set_attribute("model.batch.size", len(rows))
    structlog.contextvars.bind_contextvars(rows=len(rows))
    if state.faults is not None:
        state.faults.run_stage(request.headers.get(FAULT_HEADER), span_attributes)
    with tracer.start_as_current_span("inference", attributes=span_attributes) as span:
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
    prediction_ids = _new_ids(len(rows))
    if state.shadow is not None:
        state.shadow.submit(rows, raw, prediction_ids)
    return jsonify(
        predictions=model.to_python(raw),
        prediction_ids=prediction_ids,
        model={"name": card.name, "version": card.version},
    )


def _new_ids(count: int) -> list[str]:
    """Random 128-bit ids, one urandom call for the whole batch."""
    raw = os.urandom(16 * count).hex()
    return [raw[i : i + 32] for i in range(0, 32 * count, 32)]


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
    shadow = _state().shadow
    if shadow is not None:
        summary["shadow"] = shadow.summary()
    return jsonify(summary)


@blueprint.get("/metrics")
def metrics() -> Response:
    renderer = _state().metrics_renderer
    if renderer is None:
        return Response("# telemetry is disabled (OTEL_SDK_DISABLED=true)\n", mimetype="text/plain")
    body, content_type = renderer.render(request.headers.get("Accept"))
    return Response(body, content_type=content_type)
