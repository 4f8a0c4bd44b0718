"""Flask instrumentation: one server span, one duration measurement and one access-log line per request.

Follows the stable HTTP semantic conventions (`http.server.request.duration` in seconds keyed by the route
template, never the raw path). It is deliberately small: the stock instrumentation wraps the WSGI app, the
request and the response in several layers, and costs more than the model it observes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import structlog
from flask import Flask, Response, request
from opentelemetry import context, propagate, trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider

from otel.metrics import SECONDS_BUCKETS
from otel.requestseries import RequestSeries

__all__ = ["FlaskTelemetry"]

_KNOWN_METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"})
_ENV_KEY = "otel.flask.request"
_access_log = structlog.get_logger("otel.access")


class _RequestState:
    __slots__ = ("attributes", "span", "start", "token")

    def __init__(self, start: float) -> None:
        self.start = start
        self.span: trace.Span | None = None
        self.token: object | None = None
        self.attributes: dict[str, str | int] = {}


class FlaskTelemetry:
    """Instrument a Flask app with explicitly passed providers (tests give in-memory ones; nothing global)."""

    def __init__(
        self,
        tracer_provider: TracerProvider,
        meter_provider: MeterProvider,
        *,
        untraced_paths: Iterable[str] = ("/healthz", "/readyz", "/metrics"),
        untraced_prefixes: tuple[str, ...] = (),
        access_log: bool = True,
        series: RequestSeries | None = None,
    ) -> None:
        """`untraced_paths` (exact) and `untraced_prefixes` get no span, no access line and no place in `series`
        (probes, scrapes, a console's own pages); `series` receives every other request."""
        self._tracer = tracer_provider.get_tracer("otel.flask")
        self._duration = meter_provider.get_meter("otel.flask").create_histogram(
            "http.server.request.duration",
            unit="s",
            description="Duration of HTTP server requests.",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self._untraced = frozenset(untraced_paths)
        self._untraced_prefixes = untraced_prefixes
        self._series = series
        fields = propagate.get_global_textmap().fields
        self._context_keys = tuple("HTTP_" + field.upper().replace("-", "_") for field in fields)
        self._access_log = access_log

    def init_app(self, app: Flask) -> None:
        app.before_request(self._before)
        app.after_request(self._after)
        app.teardown_request(self._teardown)

    def _before(self) -> None:
        state = _RequestState(time.perf_counter())
        request.environ[_ENV_KEY] = state
        structlog.contextvars.clear_contextvars()
        method = request.method if request.method in _KNOWN_METHODS else "_OTHER"
        route = request.url_rule.rule if request.url_rule is not None else None
        state.attributes = {"http.request.method": method, "url.scheme": request.environ.get("wsgi.url_scheme", "http")}
        if route is not None:
            state.attributes["http.route"] = route
        path = request.path
        if path in self._untraced or (self._untraced_prefixes and path.startswith(self._untraced_prefixes)):
            return
        environ = request.environ
        # Most requests carry no trace context: skip the propagators' header parsing unless one of their headers
        # (traceparent, tracestate, baggage, or whatever OTEL_PROPAGATORS configures) is present.
        parent = propagate.extract(request.headers) if any(key in environ for key in self._context_keys) else None
        attributes: dict[str, str | int] = {
            **state.attributes,
            "url.path": path,
            "server.address": environ.get("HTTP_HOST", "").rsplit(":", 1)[0],
            "network.protocol.version": environ.get("SERVER_PROTOCOL", "").removeprefix("HTTP/"),
            "client.address": environ.get("REMOTE_ADDR", ""),
        }
        user_agent = environ.get("HTTP_USER_AGENT")
        if user_agent:
            attributes["user_agent.original"] = user_agent
        span = self._tracer.start_span(
            f"{method} {route}" if route else method, context=parent, kind=SpanKind.SERVER, attributes=attributes
        )
        state.span = span
        state.token = context.attach(trace.set_span_in_context(span, parent))

    def _after(self, response: Response) -> Response:
        state: _RequestState | None = request.environ.get(_ENV_KEY)
        if state is None:  # a request that failed before our before_request ran
            return response
        status = response.status_code
        state.attributes["http.response.status_code"] = status
        if status >= 500:
            state.attributes["error.type"] = str(status)
        span = state.span
        if span is not None:
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_attribute("error.type", str(status))
                span.set_status(Status(StatusCode.ERROR))
            span_context = span.get_span_context()
            trace_id = format(span_context.trace_id, "032x")
            response.headers["traceparent"] = (
                f"00-{trace_id}-{span_context.span_id:016x}-{int(span_context.trace_flags):02x}"
            )
            response.headers["X-Trace-Id"] = trace_id
        elapsed = time.perf_counter() - state.start
        # Recorded while the span is current: a sampled span becomes the exemplar of this bucket.
        self._duration.record(elapsed, state.attributes)
        if self._series is not None and span is not None:
            sampled = span.get_span_context().trace_flags.sampled
            route = state.attributes.get("http.route")
            exemplar = response.headers["X-Trace-Id"] if sampled else None
            self._series.observe(None if route is None else str(route), status, elapsed, exemplar)
        if self._access_log and span is not None:
            _access_log.info(
                "request",
                method=state.attributes["http.request.method"],
                route=state.attributes.get("http.route", ""),
                status=status,
                duration_ms=round(elapsed * 1000, 3),
            )
        return response

    def _teardown(self, error: BaseException | None) -> None:
        # The thread outlives the request: what the request bound must not leak into the server's own log lines
        # (a gunicorn warning logged on this thread later would carry this request's model_version).
        structlog.contextvars.clear_contextvars()
        state: _RequestState | None = request.environ.pop(_ENV_KEY, None)
        if state is None or state.span is None:
            return
        if error is not None:
            state.span.record_exception(error)
            state.span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        state.span.end()
        if state.token is not None:
            context.detach(state.token)  # type: ignore[arg-type]
