"""Test double of an OTLP/HTTP collector (http/protobuf only); never part of the product.

Tests point exporters (or a service under test, via ``OTEL_EXPORTER_OTLP_ENDPOINT``) at ``receiver.endpoint``
and assert on the flattened spans, log records and metric points it decoded. ``mode`` simulates outages.
"""

from __future__ import annotations

import gzip
import socketserver
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, get_args

from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as PbStatus

from .ports import LOOPBACK

__all__ = ["Exemplar", "LogRecord", "MetricPoint", "Mode", "OTLPReceiver", "Span"]

Mode = Literal["ok", "error503", "hang"]
"""ok: decode, store, answer 200. error503: answer 503 (retryable), store nothing. hang: read the request and
never answer; when ``mode`` changes or the receiver closes, drop the connection unanswered (store nothing)."""

_SIGNALS = ("traces", "metrics", "logs")


@dataclass(frozen=True)
class Span:
    """A received span. Ids are lowercase hex; ``kind`` is e.g. ``"SERVER"``, ``status_code`` ``"ERROR"``."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    status_code: str
    status_message: str
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    resource: dict[str, Any]
    scope_name: str
    start_time_unix_nano: int
    end_time_unix_nano: int


@dataclass(frozen=True)
class LogRecord:
    """A received log record; ``trace_id``/``span_id`` are hex, or ``None`` outside a span."""

    trace_id: str | None
    span_id: str | None
    severity_text: str
    severity_number: int
    body: Any
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope_name: str
    event_name: str
    time_unix_nano: int
    observed_time_unix_nano: int


@dataclass(frozen=True)
class Exemplar:
    """An exemplar attached to a metric data point."""

    value: float | int
    trace_id: str | None
    span_id: str | None
    filtered_attributes: dict[str, Any]
    time_unix_nano: int


@dataclass(frozen=True)
class MetricPoint:
    """One data point of a received metric.

    ``kind`` is ``sum``, ``gauge``, ``histogram``, ``exponential_histogram`` or ``summary``;
    ``temporality`` is ``cumulative``/``delta`` (``None`` for gauges and summaries). Sums and gauges fill
    ``value``; histograms fill ``count``, ``sum``, ``bucket_counts`` and ``explicit_bounds``.
    """

    name: str
    description: str
    unit: str
    kind: str
    is_monotonic: bool
    temporality: str | None
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope_name: str
    start_time_unix_nano: int
    time_unix_nano: int
    value: float | int | None = None
    count: int | None = None
    sum: float | None = None
    bucket_counts: list[int] = field(default_factory=list)
    explicit_bounds: list[float] = field(default_factory=list)
    exemplars: list[Exemplar] = field(default_factory=list)


class OTLPReceiver:
    """OTLP/HTTP receiver on ``127.0.0.1:<free port>``, serving from a daemon thread.

    ``with OTLPReceiver() as receiver:`` starts it; ``receiver.endpoint`` suits
    ``OTEL_EXPORTER_OTLP_ENDPOINT``. Accessors return copies and are thread-safe. Closing never waits on
    hanging requests.
    """

    def __init__(self, port: int = 0) -> None:
        self._port = port  # 0: a free port; a fixed one lets a test bring a "dead" endpoint back to life
        self._cond = threading.Condition()
        self._mode: Mode = "ok"
        self._generation = 0  # bumped on every mode change: releases hanging requests
        self._version = 0  # bumped on every request: wakes wait_for
        self._closing = False
        self._spans: list[Span] = []
        self._logs: list[LogRecord] = []
        self._points: list[MetricPoint] = []
        self._errors: list[str] = []
        self._stores: dict[str, list[Any]] = {
            "traces": self._spans,
            "metrics": self._points,
            "logs": self._logs,
        }
        self._by_signal: Counter[str] = Counter()
        self._by_mode: Counter[str] = Counter()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> OTLPReceiver:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self) -> OTLPReceiver:
        """Bind the loopback port (a free one unless given) and serve in a daemon thread."""
        if self._server is not None or self._closing:
            raise RuntimeError("OTLPReceiver can only be started once")
        self._server = _Server(self, self._port)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="otlp-receiver",
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Release hanging requests, stop serving and close the socket (idempotent)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout)
        server.wait_idle(timeout)

    @property
    def port(self) -> int:
        """The TCP port the receiver listens on."""
        if self._server is None:
            raise RuntimeError("OTLPReceiver is not running")
        return self._server.server_address[1]

    @property
    def endpoint(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:4318``; signal paths are ``/v1/{traces,metrics,logs}``."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def mode(self) -> Mode:
        """How requests are answered from now on (see ``Mode``)."""
        return self._mode

    @mode.setter
    def mode(self, mode: Mode) -> None:
        if mode not in get_args(Mode):
            raise ValueError(f"mode must be one of {get_args(Mode)}, got {mode!r}")
        with self._cond:
            self._mode = mode
            self._generation += 1
            self._cond.notify_all()

    def spans(self, name: str | None = None) -> list[Span]:
        """Spans received so far, optionally only those called ``name``."""
        with self._cond:
            return [span for span in self._spans if name is None or span.name == name]

    def log_records(self) -> list[LogRecord]:
        """Log records received so far."""
        with self._cond:
            return list(self._logs)

    def metrics(self, name: str | None = None) -> list[MetricPoint]:
        """Metric data points received so far (every export adds points), optionally only metric ``name``."""
        with self._cond:
            return [point for point in self._points if name is None or point.name == name]

    @property
    def requests_by_signal(self) -> dict[str, int]:
        """Requests received per signal (``traces``, ``metrics``, ``logs``), whatever the mode."""
        with self._cond:
            return {signal: self._by_signal[signal] for signal in _SIGNALS}

    @property
    def requests_by_mode(self) -> dict[str, int]:
        """Requests received per mode they arrived in."""
        with self._cond:
            return {mode: self._by_mode[mode] for mode in get_args(Mode)}

    @property
    def errors(self) -> list[str]:
        """Requests answered 4xx (bad path, content type, encoding or protobuf), one description each."""
        with self._cond:
            return list(self._errors)

    def clear(self) -> None:
        """Forget received data, errors and request counts (the mode stays)."""
        with self._cond:
            for store in (self._spans, self._logs, self._points, self._errors):
                store.clear()
            self._by_signal.clear()
            self._by_mode.clear()
            self._version += 1

    def wait_for(self, predicate: Callable[[OTLPReceiver], bool], timeout: float = 15.0) -> None:
        """Wait until ``predicate(receiver)`` holds; checked on each request and at least twice a second."""
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                version = self._version
            if predicate(self):
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"OTLPReceiver: predicate still false after {timeout}s; {self._summary()}")
            with self._cond:
                if self._version == version:
                    self._cond.wait(min(remaining, 0.5))

    def _summary(self) -> str:
        with self._cond:
            return (
                f"spans={sorted({s.name for s in self._spans})} "
                f"metrics={sorted({p.name for p in self._points})} "
                f"log_records={len(self._logs)} requests_by_signal={dict(self._by_signal)} "
                f"requests_by_mode={dict(self._by_mode)} errors={self._errors}"
            )

    def _handle(self, handler: _Handler) -> None:
        signal = handler.path.partition("?")[0].removeprefix("/v1/")
        if signal not in _SIGNALS:
            return self._reject(handler, 404, f"unknown path {handler.path}")
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        with self._cond:
            mode, generation = self._mode, self._generation
            self._by_signal[signal] += 1
            self._by_mode[mode] += 1
            self._version += 1
            self._cond.notify_all()
        if mode == "hang":
            with self._cond:
                self._cond.wait_for(lambda: self._closing or self._generation != generation)
            handler.close_connection = True
            return None
        if mode == "error503":
            return _reply(handler, 503, b"collector unavailable (test double)", "text/plain")
        if handler.headers.get_content_type() != "application/x-protobuf":
            return self._reject(handler, 415, f"{signal}: only application/x-protobuf is supported")
        request_type, response_type, decode = _DECODERS[signal]
        try:
            items = decode(request_type.FromString(_decompress(body, handler.headers.get("Content-Encoding", ""))))
        except (DecodeError, OSError, EOFError, zlib.error, ValueError) as error:
            return self._reject(handler, 400, f"{signal}: cannot decode request: {error!r}")
        with self._cond:
            self._stores[signal].extend(items)
            self._version += 1
            self._cond.notify_all()
        return _reply(handler, 200, response_type().SerializeToString(), "application/x-protobuf")

    def _reject(self, handler: _Handler, status: int, message: str) -> None:
        with self._cond:
            self._errors.append(f"{status} {message}")
        _reply(handler, status, message.encode(), "text/plain")


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection: no idle keep-alive threads at shutdown
    timeout = 10  # a stalled client cannot pin a thread for long

    def do_POST(self) -> None:
        self.server.receiver._handle(self)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, receiver: OTLPReceiver, port: int = 0) -> None:
        self.receiver = receiver
        self._active = 0
        self._idle = threading.Condition()
        super().__init__((LOOPBACK, port), _Handler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # skip HTTPServer's getfqdn(): a reverse DNS lookup
        self.server_name, self.server_port = LOOPBACK, self.server_address[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._idle:
            self._active += 1
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> None:
        with self._idle:
            self._idle.wait_for(lambda: self._active == 0, timeout)


def _reply(handler: _Handler, status: int, body: bytes, content_type: str) -> None:
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    except OSError:  # the client gave up (e.g. its export timeout expired)
        handler.close_connection = True


def _decompress(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding in ("", "identity"):
        return body
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


def _hex(raw: bytes) -> str | None:
    return raw.hex() if raw else None


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind)


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _number(point: Any) -> float | int:
    number: float | int = getattr(point, point.WhichOneof("value") or "as_double")
    return number


def _decode_spans(request: ExportTraceServiceRequest) -> list[Span]:
    return [
        Span(
            trace_id=span.trace_id.hex(),
            span_id=span.span_id.hex(),
            parent_span_id=_hex(span.parent_span_id),
            name=span.name,
            kind=PbSpan.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
            status_code=PbStatus.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_"),
            status_message=span.status.message,
            attributes=_attributes(span.attributes),
            events=[(event.name, _attributes(event.attributes)) for event in span.events],
            resource=_attributes(resource_spans.resource.attributes),
            scope_name=scope_spans.scope.name,
            start_time_unix_nano=span.start_time_unix_nano,
            end_time_unix_nano=span.end_time_unix_nano,
        )
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]


def _decode_logs(request: ExportLogsServiceRequest) -> list[LogRecord]:
    return [
        LogRecord(
            trace_id=_hex(record.trace_id),
            span_id=_hex(record.span_id),
            severity_text=record.severity_text,
            severity_number=record.severity_number,
            body=_value(record.body),
            attributes=_attributes(record.attributes),
            resource=_attributes(resource_logs.resource.attributes),
            scope_name=scope_logs.scope.name,
            event_name=record.event_name,
            time_unix_nano=record.time_unix_nano,
            observed_time_unix_nano=record.observed_time_unix_nano,
        )
        for resource_logs in request.resource_logs
        for scope_logs in resource_logs.scope_logs
        for record in scope_logs.log_records
    ]


def _decode_metrics(request: ExportMetricsServiceRequest) -> list[MetricPoint]:
    return [
        point
        for resource_metrics in request.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
        for point in _metric_points(metric, resource_metrics.resource.attributes, scope_metrics.scope.name)
    ]


def _metric_points(metric: Any, resource: Iterable[KeyValue], scope_name: str) -> list[MetricPoint]:
    kind = metric.WhichOneof("data")
    if kind is None:
        return []
    data = getattr(metric, kind)
    temporality = None
    if kind in ("sum", "histogram", "exponential_histogram"):
        temporality = AggregationTemporality.Name(data.aggregation_temporality)
        temporality = temporality.removeprefix("AGGREGATION_TEMPORALITY_").lower()
    return [
        MetricPoint(
            name=metric.name,
            description=metric.description,
            unit=metric.unit,
            kind=kind,
            is_monotonic=kind == "sum" and data.is_monotonic,
            temporality=temporality,
            attributes=_attributes(point.attributes),
            resource=_attributes(resource),
            scope_name=scope_name,
            start_time_unix_nano=point.start_time_unix_nano,
            time_unix_nano=point.time_unix_nano,
            **_point_values(kind, point),
        )
        for point in data.data_points
    ]


def _point_values(kind: str, point: Any) -> dict[str, Any]:
    if kind in ("sum", "gauge"):
        values: dict[str, Any] = {"value": _number(point)}
    else:
        values = {
            "count": point.count,
            "sum": point.sum if kind == "summary" or point.HasField("sum") else None,
        }
    if kind == "histogram":
        values["bucket_counts"] = list(point.bucket_counts)
        values["explicit_bounds"] = list(point.explicit_bounds)
    if kind != "summary":
        values["exemplars"] = [
            Exemplar(
                value=_number(exemplar),
                trace_id=_hex(exemplar.trace_id),
                span_id=_hex(exemplar.span_id),
                filtered_attributes=_attributes(exemplar.filtered_attributes),
                time_unix_nano=exemplar.time_unix_nano,
            )
            for exemplar in point.exemplars
        ]
    return values


_DECODERS: dict[str, tuple[type[Message], type[Message], Callable[[Any], list[Any]]]] = {
    "traces": (ExportTraceServiceRequest, ExportTraceServiceResponse, _decode_spans),
    "metrics": (ExportMetricsServiceRequest, ExportMetricsServiceResponse, _decode_metrics),
    "logs": (ExportLogsServiceRequest, ExportLogsServiceResponse, _decode_logs),
}
