"""RFC 9457 problem documents: every error the service returns says what was wrong and where."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import structlog
from flask import Flask, Response, current_app, request
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from werkzeug.exceptions import HTTPException

__all__ = ["FieldError", "Problem", "escape_pointer", "json_type", "register_error_handlers"]

CONTENT_TYPE = "application/problem+json"
MAX_ERRORS = 100  # a 10 000-row batch of garbage must not produce a 10 MB error document
_MAX_KEY_IN_POINTER = 64

_log = structlog.get_logger("service.web.problems")


@dataclass(frozen=True)
class FieldError:
    """One offending value: a JSON Pointer into the request body and the reason in words."""

    pointer: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"pointer": self.pointer, "reason": self.reason}


def escape_pointer(name: str) -> str:
    """A JSON Pointer segment (RFC 6901), truncated so a megabyte-long key is not echoed back."""
    if len(name) > _MAX_KEY_IN_POINTER:
        name = name[:_MAX_KEY_IN_POINTER] + "…"
    return name.replace("~", "~0").replace("/", "~1")


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


@dataclass
class Problem(Exception):
    """An error response. `slug` names the problem type (`urn:modellens:problem:<slug>`)."""

    status: int
    title: str
    detail: str
    slug: str = "about:blank"
    errors: list[FieldError] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)  # e.g. Retry-After on a 503

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.slug if self.slug == "about:blank" else f"urn:modellens:problem:{self.slug}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "instance": request.path,
        }
        if self.errors:
            body["errors"] = [error.to_dict() for error in self.errors[:MAX_ERRORS]]
            if len(self.errors) > MAX_ERRORS:
                body["errors_truncated"] = len(self.errors) - MAX_ERRORS
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            body["trace_id"] = format(span_context.trace_id, "032x")
        return body

    def response(self) -> Response:
        return current_app.response_class(
            current_app.json.dumps(self.to_dict()) + "\n",
            status=self.status,
            mimetype=CONTENT_TYPE,
            headers=self.headers,
        )


def register_error_handlers(app: Flask) -> None:
    """Turn every error, expected or not, into a problem document; never an HTML page or a stack trace."""
    app.register_error_handler(Problem, _on_problem)
    app.register_error_handler(HTTPException, _on_http_exception)
    app.register_error_handler(Exception, _on_unexpected)


def _on_problem(problem: Problem) -> Response:
    _log.info("request rejected", status=problem.status, problem=problem.slug, errors=len(problem.errors))
    return problem.response()


def _on_http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    detail = error.description or error.name
    if status == 413:
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        detail = f"The request body is larger than the limit of {limit} bytes."
    problem = Problem(status=status, title=error.name, detail=detail)
    response = problem.response()
    if status == 405 and error.response is None:
        allowed = getattr(error, "valid_methods", None)
        if allowed:
            response.headers["Allow"] = ", ".join(allowed)
    return response


def _on_unexpected(error: Exception) -> Response:
    span = trace.get_current_span()
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, type(error).__name__))
    _log.error("unhandled error", exc_info=error)
    return Problem(
        status=500,
        title="Internal Server Error",
        detail="The service failed to handle the request; see its trace.",
    ).response()
