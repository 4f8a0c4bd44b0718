"""HTTP transport for the core API: translate requests into model calls and results into JSON.

Optional features (monitoring, the prediction log, the shadow model, fault injection) are not known here: the app
factory hands in the hooks they registered, and their own routes live in their own blueprints.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import structlog
from flask import Blueprint, Response, current_app, jsonify, request
from opentelemetry import trace
from opentelemetry.trace import Tracer
from werkzeug.datastructures import Headers
from werkzeug.exceptions import RequestEntityTooLarge

from service.artifact.model import Model
from service.groundtruth.ids import new_prediction_ids
from service.monitoring.instruments import ModelInstruments
from service.monitoring.quality import QualityIssue
from service.settings import Settings
from service.web.problems import Problem
from service.web.validation import InvalidInstances, parse_body, parse_instances

__all__ = [
    "OFF_ENDPOINT",
    "MetricsRenderer",
    "Served",
    "ServiceState",
    "blueprint",
    "read_body",
    "require_json",
    "telemetry_off",
]

blueprint = Blueprint("api", __name__)
OFF_ENDPOINT = "off."  # endpoints of a feature that is off start so: they answer 404 and the index leaves them out


@dataclass(frozen=True)
class Served:
    """One answered `/predict` request, as the features that listen to it see it."""

    request_id: str
    prediction_ids: list[str]
    body: bytes  # the request body as received, for the prediction log
    rows: np.ndarray  # validated, in the card's feature order
    raw: np.ndarray  # the model's output array
    probabilities: np.ndarray | None  # a calibrated classifier's class probabilities (n × classes), else None
    predictions: list[Any]  # what the response says
    trace_id: str | None  # the request's trace, None when it is not sampled into a valid context


class MetricsRenderer(Protocol):
    def render(self, accept: str | None) -> tuple[bytes, str]: ...


@dataclass(frozen=True)
class ServiceState:
    """What the core handlers need, built once by `create_app` (in `app.extensions["modellens"]`).

    Each hook tuple holds what the features that are on registered, in order; an empty tuple is a feature that is off.
    """

    settings: Settings
    model: Model
    tracer: Tracer
    instruments: ModelInstruments
    metrics: MetricsRenderer
    before_inference: tuple[Callable[[Headers, dict[str, str]], None], ...] = ()  # fault injection's stage
    on_rejected: tuple[Callable[[Sequence[QualityIssue], int], None], ...] = ()  # data-quality counts
    # monitoring, the prediction log, the shadow model; each may return headers for the response
    on_served: tuple[Callable[[Served], Mapping[str, str] | None], ...] = ()
    on_close: tuple[Callable[[], None], ...] = ()  # in order: shadow scoring drains before the log's writes

    def close(self) -> None:
        """Finish background work before the process exits."""
        for close in self.on_close:
            close()


class _TelemetryOff:
    def render(self, accept: str | None) -> tuple[bytes, str]:
        return b"# telemetry is disabled (OTEL_SDK_DISABLED=true)\n", "text/plain; charset=utf-8"


telemetry_off: MetricsRenderer = _TelemetryOff()
"""The `/metrics` body when the SDK is disabled: a comment, so a scraper sees an empty, valid exposition."""


def _state() -> ServiceState:
    state: ServiceState = current_app.extensions["modellens"]
    return state


def require_json() -> None:
    """A 415 problem unless the request says its body is JSON."""
    mimetype = request.mimetype
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise Problem(
            status=415,
            title="Unsupported Media Type",
            detail=f"Send the body as application/json, not {mimetype or 'no content type'}.",
            slug="unsupported-media-type",
        )


def read_body() -> bytes:
    """The request body, at most `MAX_CONTENT_LENGTH` bytes; a longer one is a 413 before any of it is parsed.

    Werkzeug refuses a declared Content-Length over the limit, but a chunked body (no Content-Length) it cuts at the
    limit and hands over the first part, which would then read as malformed JSON, or as valid JSON when the rest was
    padding. So when the cut body fills the limit, the server's stream is asked for one byte more.
    """
    body = request.get_data(cache=False)
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    streamed = request.content_length is None
    if limit is not None and streamed and len(body) >= limit and request.environ["wsgi.input"].read(1):
        raise RequestEntityTooLarge()
    return body


@blueprint.post("/predict")
def predict() -> Response:
    state = _state()
    model, card, tracer = state.model, state.model.card, state.tracer
    span_attributes = {"model.name": card.name, "model.version": card.version}
    structlog.contextvars.bind_contextvars(model_version=card.version)
    with _stage_span(tracer, "validate", span_attributes) as span:
        require_json()
        body = read_body()
        payload = parse_body(body)
        try:
            rows = parse_instances(payload, card, state.settings.max_batch)
        except Problem as problem:
            _rejected(state, problem, payload)
            raise
        span.set_attribute("model.batch.size", len(rows))
    structlog.contextvars.bind_contextvars(rows=len(rows))
    for stage in state.before_inference:
        stage(request.headers, span_attributes)
    with _stage_span(tracer, "inference", span_attributes) as span:
        span.set_attribute("model.batch.size", len(rows))
        started = time.perf_counter()
        try:
            raw, probabilities = model.predict_with_probabilities(rows)
        except Exception:
            state.instruments.record_error(len(rows))
            raise
        state.instruments.record_success(len(rows), time.perf_counter() - started)
    request_id, prediction_ids = new_prediction_ids(len(rows))
    predictions = model.to_python(raw)
    headers: dict[str, str] = {}
    if state.on_served:
        span_context = trace.get_current_span().get_span_context()
        served = Served(
            request_id=request_id,
            prediction_ids=prediction_ids,
            body=body,
            rows=rows,
            raw=raw,
            probabilities=probabilities,
            predictions=predictions,
            trace_id=format(span_context.trace_id, "032x") if span_context.is_valid else None,
        )
        for listener in state.on_served:
            headers.update(listener(served) or {})
    response = jsonify(
        predictions=model.to_response(predictions),
        prediction_ids=prediction_ids,
        model={"name": card.name, "version": card.version},
    )
    response.headers.update(headers)
    return response


def _rejected(state: ServiceState, problem: Problem, payload: Any) -> None:
    if not state.on_rejected:
        return
    instances = payload.get("instances") if isinstance(payload, dict) else None
    quality = problem.quality if isinstance(problem, InvalidInstances) else []
    count = len(instances) if isinstance(instances, list) else 0
    for listener in state.on_rejected:
        listener(quality, count)


def _stage_span(tracer: Tracer, name: str, attributes: dict[str, str]) -> AbstractContextManager[trace.Span]:
    """A child span of the request's span; a no-op when that span is not recording. With the standard samplers a
    child of an unsampled request is never sampled either, so at 10% sampling this skips two spans that would be
    created and dropped on 90% of requests."""
    if trace.get_current_span().is_recording():
        return tracer.start_as_current_span(name, attributes=attributes)
    return _NOT_RECORDING


_NOT_RECORDING = nullcontext(trace.INVALID_SPAN)


@blueprint.get("/")
def index() -> Response:
    """What this service serves, read from the app's own routes, so the list is what answers (features that are
    off are absent); the OpenAPI document has the details."""
    state = _state()
    endpoints = sorted(
        {
            (rule.rule, method)
            for rule in current_app.url_map.iter_rules()
            if rule.endpoint != "static" and rule.rule != "/" and not rule.endpoint.startswith(OFF_ENDPOINT)
            for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
        }
    )
    return jsonify(
        service="modellens",
        model={"name": state.model.card.name, "version": state.model.card.version},
        openapi="/openapi.json",
        endpoints=[{"path": path, "method": method} for path, method in endpoints],
    )


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


@blueprint.get("/metrics")
def metrics() -> Response:
    body, content_type = _state().metrics.render(request.headers.get("Accept"))
    return Response(body, content_type=content_type)
