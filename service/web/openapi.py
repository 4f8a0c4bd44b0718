"""The service's OpenAPI 3.1 description, generated from the served model card, at `GET /openapi.json`."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from service import __version__
from service.artifact.card import ModelCard
from service.monitoring.drift import STATUSES
from service.settings import Settings
from service.web.validation import MAX_MAGNITUDE

__all__ = ["blueprint", "build_document"]

blueprint = Blueprint("openapi", __name__)

_PROBLEM = "application/problem+json"
_EXTENSION = "modellens.openapi"
_ID_PATTERN = "^[0-9a-f]{32}$"


@blueprint.get("/openapi.json")
def openapi() -> Response:
    document = current_app.extensions.get(_EXTENSION)
    if document is None:  # built on first use, from what the app serves
        state = current_app.extensions["modellens"]
        document = build_document(
            state.model.card,
            state.settings,
            feedback="feedback" in current_app.blueprints,
            console="console" in current_app.blueprints,
        )
        current_app.extensions[_EXTENSION] = document
    return jsonify(document)


def build_document(
    card: ModelCard, settings: Settings, *, feedback: bool = True, console: bool = False
) -> dict[str, Any]:
    """The OpenAPI 3.1 document for a service serving `card` with `settings` (limits, monitoring)."""
    paths: dict[str, Any] = {
        "/predict": {"post": _predict(settings, logged=feedback)},
        "/": {
            "get": _get(
                "An index: the model served and the endpoints that answer (features that are off are absent).",
                _object(
                    {
                        "service": {"const": "modellens"},
                        "model": {"$ref": "#/components/schemas/ModelRef"},
                        "openapi": {"const": "/openapi.json"},
                        "endpoints": {
                            "type": "array",
                            "items": _object({"path": {"type": "string"}, "method": {"type": "string"}}),
                        },
                    }
                ),
            )
        },
        "/healthz": {"get": _get("Liveness: the process answers.", _object({"status": {"const": "ok"}}))},
        "/readyz": {
            "get": _get(
                "Readiness: the model is loaded.",
                _object({"status": {"const": "ready"}, "model": {"$ref": "#/components/schemas/ModelRef"}}),
                {"503": _problem_ref("Not ready: no model is loaded.")},
            )
        },
        "/model": {"get": _get("The model card: features, training ranges, holdout metrics.", _card_schema())},
        "/model/reference": {
            "get": _get(
                "The reference profile (bins and training shares) drift is measured against.",
                {"type": "object"},
                {"404": _problem_ref("Monitoring is off.")},
            )
        },
        "/monitoring": {
            "get": _get(
                "The current window: drift, data quality, slices, shadow, realized performance.",
                {"$ref": "#/components/schemas/Monitoring"},
                {"404": _problem_ref("Monitoring is off.")},
            )
        },
        "/metrics": {"get": _metrics()},
        "/openapi.json": {"get": _get("This document.", {"type": "object"})},
    }
    if feedback:
        paths["/feedback"] = {"post": _feedback(card, settings)}
    paths.update(_console(on=console))
    security: dict[str, Any] = {}
    if settings.auth_tokens_file is not None:  # the writes need a bearer token (service/web/auth.py)
        security = {"bearer": {"type": "http", "scheme": "bearer"}}
        for path in ("/predict", "/feedback"):
            if path in paths:
                operation = paths[path]["post"]
                operation["security"] = [{"bearer": []}]
                operation["responses"]["401"] = _problem_ref("No valid `Authorization: Bearer` token.")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "modellens model service",
            "version": __version__,
            "summary": f"Serves {card.name} {card.version} ({card.task}).",
            "description": (
                "Errors are RFC 9457 problem documents (application/problem+json) whose `errors` name each "
                f"offending field by JSON Pointer. Bodies over {settings.max_body_bytes} bytes are refused with 413; "
                "a member name repeated in one object is a 422. Every response carries `X-Trace-Id` and a W3C "
                "`traceparent`."
            ),
        },
        "paths": paths,
        "components": {
            **({"securitySchemes": security} if security else {}),
            "schemas": {
                "Instance": _instance_schema(card),
                "Monitoring": _monitoring_schema(card),
                "Drift": _drift_schema(),
                "PredictRequest": _object(
                    {
                        "instances": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": settings.max_batch,
                            "items": {"$ref": "#/components/schemas/Instance"},
                        }
                    }
                ),
                "PredictResponse": _object(
                    {
                        "predictions": {"type": "array", "items": _prediction_schema(card)},
                        "prediction_ids": {"type": "array", "items": {"type": "string", "pattern": _ID_PATTERN}},
                        "model": {"$ref": "#/components/schemas/ModelRef"},
                    }
                ),
                "FeedbackRequest": _object(
                    {
                        "feedback": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": settings.max_batch,
                            "items": _object(
                                {
                                    # No anchors: with the length fixed, one pattern means the same in every
                                    # regex dialect (`$` matches before a final newline in some).
                                    "prediction_id": {
                                        "type": "string",
                                        "minLength": 32,
                                        "maxLength": 32,
                                        "pattern": "[0-9a-fA-F]{32}",
                                    },
                                    "actual": _prediction_schema(card, label=True),
                                }
                            ),
                        }
                    }
                ),
                "FeedbackResponse": _object(
                    {
                        "accepted": {"type": "integer", "minimum": 0},
                        "unknown_ids": {"type": "array", "items": {"type": "string"}, "maxItems": 100},
                        "duplicate_ids": {"type": "array", "items": {"type": "string"}, "maxItems": 100},
                        "unknown_ids_truncated": {"type": "integer", "minimum": 1},
                        "duplicate_ids_truncated": {"type": "integer", "minimum": 1},
                    },
                    required=("accepted", "unknown_ids", "duplicate_ids"),
                ),
                "ModelRef": _object({"name": {"type": "string"}, "version": {"type": "string"}}),
                "Problem": _problem_schema(),
            },
            "headers": {
                "X-Trace-Id": {
                    "description": "The trace that holds this request (32 hex digits).",
                    "schema": {"type": "string", "pattern": _ID_PATTERN},
                },
                "traceparent": {"description": "W3C trace context of this request.", "schema": {"type": "string"}},
            },
        },
    }


# --- schemas ----------------------------------------------------------------------------------------------------
def _object(properties: dict[str, Any], *, required: tuple[str, ...] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties if required is None else required),
        "additionalProperties": False,
    }


def _instance_schema(card: ModelCard) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for spec in card.features:
        if spec.type == "numeric":
            schema: dict[str, Any] = {
                "type": ["number", "null"],
                # NaN and infinities are not JSON; larger numbers overflow inside the model.
                "minimum": -MAX_MAGNITUDE,
                "maximum": MAX_MAGNITUDE,
                "description": f"Trained on [{spec.min}, {spec.max}]; null is a missing value (imputed).",
            }
        else:
            schema = {
                "type": ["string", "null"],
                "description": "A category; unseen ones are scored and counted; null is a missing value.",
                "examples": list(spec.categories[:10]),
            }
        properties[spec.name] = schema
    return {**_object(properties), "description": f"One row of {card.name}'s features, every one present."}


def _prediction_schema(card: ModelCard, *, label: bool = False) -> dict[str, Any]:
    """A prediction, or (`label`) a ground-truth label, whose magnitude the service bounds."""
    if card.task == "classification":
        labels: dict[str, Any] = {"type": "string", "enum": list(card.classes)}
        integers: dict[str, Any] = {"type": "integer", "enum": list(card.integer_classes)}
        if card.label_type == "integer" and not label:
            return integers  # an integer target's classes are answered as the integers it held
        if label and card.integer_classes:  # a label may be sent as the string or as the integer
            return {"oneOf": [labels, integers]}
        return labels
    if label:
        return {"type": "number", "minimum": -MAX_MAGNITUDE, "maximum": MAX_MAGNITUDE}
    return {"type": "number"}


def _card_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["name", "version", "task", "features"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "task": {"enum": ["regression", "classification"]},
            "features": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "type"],
                    "properties": {"name": {"type": "string"}, "type": {"enum": ["numeric", "categorical"]}},
                },
            },
        },
    }


def _problem_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "RFC 9457 problem details.",
        "required": ["type", "title", "status", "detail", "instance"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
            "instance": {"type": "string"},
            "errors": {
                "type": "array",
                "maxItems": 100,
                "items": _object(
                    {
                        "pointer": {"type": "string", "description": "JSON Pointer (RFC 6901) into the request body."},
                        "reason": {"type": "string"},
                    }
                ),
            },
            "errors_truncated": {"type": "integer", "minimum": 1},
            "trace_id": {"type": "string", "pattern": _ID_PATTERN},
        },
    }


# --- operations -------------------------------------------------------------------------------------------------
def _problem_ref(description: str) -> dict[str, Any]:
    return {"description": description, "content": {_PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}}


def _traced(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {
            "X-Trace-Id": {"$ref": "#/components/headers/X-Trace-Id"},
            "traceparent": {"$ref": "#/components/headers/traceparent"},
        },
        "content": {"application/json": {"schema": schema}},
    }


def _monitoring_schema(card: ModelCard) -> dict[str, Any]:
    """`GET /monitoring`: the drift entries in full; the shadow and performance parts only as objects."""
    drift = {"$ref": "#/components/schemas/Drift"}
    feature = {
        "allOf": [drift],
        "properties": {"quality_issues": {"type": "object", "additionalProperties": {"type": "integer"}}},
    }
    return {
        "type": "object",
        "required": ["model", "window", "rows_scored", "rows_rejected", "features", "prediction", "slices"],
        "properties": {
            "model": {"$ref": "#/components/schemas/ModelRef"},
            "window": {"type": "object"},
            "rows_scored": {"type": "integer", "minimum": 0},
            "rows_rejected": {"type": "integer", "minimum": 0},
            "features": {
                "type": "object",
                "properties": {feature_spec.name: feature for feature_spec in card.features},
                "additionalProperties": False,
            },
            "prediction": drift,
            "slices": {"type": "object", "additionalProperties": {"type": "object", "additionalProperties": drift}},
            "estimated_performance": {
                "oneOf": [
                    {"type": "null"},
                    _object(
                        {
                            "method": {"const": "cbpe"},
                            "rows": {"type": "integer", "minimum": 0},
                            "expected_accuracy": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
                            "calibration_temperature": {"type": "number", "exclusiveMinimum": 0},
                        }
                    ),
                ],
                "description": "A calibrated classifier's expected accuracy since start-up, from its own "
                'probabilities (docs/metrics.md, "Performance without labels"); null otherwise.',
            },
            "label_drift": {
                "oneOf": [
                    {
                        "allOf": [drift],
                        "required": ["window", "labels", "bins", "training_shares", "window_counts"],
                        "properties": {
                            "window": {"type": "object"},
                            "labels": {"type": "integer", "minimum": 0},
                            "bins": {"type": "array", "items": {"type": "string"}},
                            "training_shares": {"type": "array", "items": {"type": "number"}},
                            "window_counts": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                        },
                    },
                    _object({"status": {"const": "insufficient_data"}, "reason": {"type": "string"}}),
                ],
                "description": "With the prediction log on: the joined labels over MODELLENS_LABEL_WINDOW against "
                'the training target (docs/metrics.md, "Label drift"); without a target in the profile, only why.',
            },
            "multivariate": {
                "oneOf": [{"type": "null"}, _multivariate_schema()],
                "description": 'PCA reconstruction-error drift over the window (docs/metrics.md, "Multivariate '
                'drift"); null when the model has fewer than two numeric features.',
            },
        },
    }


def _multivariate_schema() -> dict[str, Any]:
    number = {"type": ["number", "null"]}
    return {
        "type": "object",
        "required": ["status", "method", "features", "window_rows", "error", "reference_error", "effect", "test"],
        "properties": {
            "status": {"enum": list(STATUSES)},
            "method": {"const": "pca_reconstruction_error"},
            "features": {"type": "array", "items": {"type": "string"}},
            "window_rows": {"type": "integer", "minimum": 0},
            "error": number,
            "reference_error": number,
            "effect": number,
            "reason": {"type": "string", "description": "Why the status is insufficient_data."},
            "test": _object({"z": number, "critical_value": number, "min_rows": {"type": "integer"}}),
        },
    }


def _drift_schema() -> dict[str, Any]:
    """One drift decision (docs/metrics.md, "The drift decision"); numbers are null where the test cannot run."""
    number = {"type": ["number", "null"]}
    return {
        "type": "object",
        "required": ["status", "psi", "js_distance", "window_rows", "test"],
        "properties": {
            "status": {"enum": list(STATUSES)},
            "psi": number,
            "js_distance": number,
            "window_rows": {"type": "integer", "minimum": 0},
            "reason": {"type": "string", "description": "Why the status is insufficient_data."},
            "test": _object(
                {
                    "method": {"const": "chi2"},
                    "statistic": number,
                    "p_value": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
                    "critical_value": number,
                    "family_size": {"type": "integer", "minimum": 1},
                    "min_rows": {"type": ["integer", "null"], "minimum": 0},
                    "effect": number,
                }
            ),
        },
    }


def _console(*, on: bool) -> dict[str, Any]:
    """The console (service/web/console.py): its pages and its JSON API, read-only; a 404 problem while off."""
    log = {"type": "object", "required": ["timestamp", "level", "event", "trace_id"],
           "properties": {"timestamp": {"type": "string"}, "level": {"type": "string"}, "event": {"type": "string"},
                          "logger": {"type": "string"}, "trace_id": {"type": ["string", "null"]},
                          "span_id": {"type": ["string", "null"]}}}  # fmt: skip
    span = {
        "type": "object",
        "required": ["name", "span_id", "parent_span_id", "start_time", "duration_ms", "attributes", "events"],
        "properties": {
            "name": {"type": "string"}, "span_id": {"type": "string"},
            "parent_span_id": {"type": ["string", "null"]}, "kind": {"type": "string"},
            "status": {"type": "string", "enum": ["unset", "ok", "error"]},
            "start_time": {"type": "string", "format": "date-time"}, "duration_ms": {"type": "number"},
            "attributes": {"type": "object"}, "events": {"type": "array", "items": {"type": "object"}},
        },
    }  # fmt: skip
    trace = {
        "type": "object",
        "required": ["trace_id", "spans", "logs"],
        "properties": {
            "trace_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"}, "worker": {"type": "integer"},
            "duration_ms": {"type": "number"}, "error": {"type": "boolean"},
            "kept_because": {"type": "array", "items": {"type": "string"}},
            "spans": {"type": "array", "items": span}, "logs": {"type": "array", "items": log},
        },
    }  # fmt: skip
    parameter = {"name": "trace_id", "in": "path", "required": True, "schema": {"type": "string"}}
    off = {"404": _problem_ref("The console is off (MODELLENS_CONSOLE=off, or telemetry off).")}

    def page(summary: str, *, trace: bool = False) -> dict[str, Any]:
        html = {"description": "OK", "content": {"text/html": {"schema": {"type": "string"}}}}
        operation: dict[str, Any] = {"summary": summary, "responses": {"200": html, **off}}
        if trace:
            operation["parameters"] = [parameter]
            operation["responses"]["404"] = {
                "description": "Not kept here, or the console is off.",
                "content": {"text/html": {"schema": {"type": "string"}}, **_problem_ref("")["content"]},
            }
        return {"get": operation}

    documented = {
        "/console": page("Overview: the last hour per route, with exemplar dots that open their traces."),
        "/console/traces": page("The traces this worker keeps."),
        "/console/traces/{trace_id}": page("One trace: its spans as a waterfall, and its log lines.", trace=True),
        "/console/logs": page("Recent log lines, by level, text and minutes."),
        "/console/model": page("GET /monitoring, drawn."),
    }
    if not on:
        api = ("/console/api/traces/{trace_id}", "/console/api/traces", "/console/api/overview", "/console/api/logs")
        return {**documented, **{path: page("The console is off.", trace="{trace_id}" in path) for path in api}}
    return {
        **documented,
        **{
            "/console/api/traces/{trace_id}": {
                "get": {
                    **_get(
                        "A trace this worker kept: its spans (start order) and its log lines.",
                        trace,
                        {"404": _problem_ref("Not kept here: evicted, never sampled, or served by another worker.")},
                    ),
                    "parameters": [parameter],
                }
            },
            "/console/api/traces": {"get": _get("The traces this worker keeps, newest first.", {"type": "object"})},
            "/console/api/overview": {
                "get": _get("The last hour per route: rate, error ratio, p50/p95/p99, exemplars.", {"type": "object"})
            },
            "/console/api/logs": {"get": _get("Recent log lines (level, q, minutes).", {"type": "object"})},
        },
    }


def _get(summary: str, schema: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "summary": summary,
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": schema}}},
            **(extra or {}),
            "default": _problem_ref("Any other error."),
        },
    }


def _body_errors(settings: Settings, noun: str) -> dict[str, Any]:
    return {
        "400": _problem_ref("Malformed JSON: not valid JSON, not UTF-8, or nested too deeply."),
        "413": _problem_ref(f"Body over {settings.max_body_bytes} bytes, or more than {settings.max_batch} {noun}."),
        "415": _problem_ref("Not application/json."),
        "422": _problem_ref(
            "Not the expected object: each offending value named in `errors` (missing, unknown, wrong type, "
            "not finite, repeated member)."
        ),
        "default": _problem_ref("Any other error (500: details in the trace, never in the response)."),
    }


def _predict(settings: Settings, *, logged: bool) -> dict[str, Any]:
    ok = _traced("One prediction and one id per instance, in order.", {"$ref": "#/components/schemas/PredictResponse"})
    if logged:
        ok["headers"]["X-Modellens-Prediction-Log"] = {
            "description": "What the prediction log did with these rows: `committed` (they survive a killed "
            "worker), `queued` (written within moments: buffered mode, or the log is slow or failing), `dropped` "
            "(not logged: the log's queue was full; /feedback will call these ids unknown).",
            "schema": {"enum": ["committed", "queued", "dropped"]},
        }
    return {
        "summary": "Score a batch of rows.",
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}},
        },
        "responses": {
            "200": ok,
            **_body_errors(settings, "instances"),
        },
    }


def _feedback(card: ModelCard, settings: Settings) -> dict[str, Any]:
    target = "class label" if card.task == "classification" else f"value of {card.target}"
    return {
        "summary": f"Join ground truth (the {target}) to earlier predictions by id.",
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/FeedbackRequest"}}},
        },
        "responses": {
            "200": _traced(
                "Labels joined, and ids unknown or already labelled.", {"$ref": "#/components/schemas/FeedbackResponse"}
            ),
            "404": _problem_ref("The prediction log is off."),
            **_body_errors(settings, "labels"),
            "503": {
                **_problem_ref(
                    "The prediction log is failing to write, or behind: nothing was stored; send the same labels "
                    "again after Retry-After seconds (ids it has not written yet would otherwise read unknown)."
                ),
                "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
            },
        },
    }


def _metrics() -> dict[str, Any]:
    return {
        "summary": "Prometheus text, or OpenMetrics with trace exemplars when the Accept header asks for it.",
        "responses": {
            "200": {
                "description": "Every metric of docs/metrics.md.",
                "content": {
                    "text/plain": {"schema": {"type": "string"}},
                    "application/openmetrics-text": {"schema": {"type": "string"}},
                },
            },
        },
    }
