"""otel/_sdk.py: one canary per SDK internal we rely on, checked against real SDK objects.

Each test fails with the access it guards and the release it was written against, so moving the OpenTelemetry pins
(`pyproject.toml`) starts here: what fails names the function in `otel/_sdk.py` to fix. This is the one test module
that may name SDK privates; the behaviour each access gives is asserted the way the caller uses it.
"""

from __future__ import annotations

import importlib.metadata
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    InMemoryLogRecordExporter,
    LogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
    Sum,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel import _sdk, _wire
from tests.support.metrics import data_points
from tests.support.otlp import OTLPReceiver

PINNED = "1.45"  # the release line of pyproject.toml's `~=1.45.2` pins
INSTALLED = importlib.metadata.version("opentelemetry-sdk")
RESOURCE = Resource.create({"service.name": "sdk-canary"})


@contextmanager
def canary(change: str, access: str) -> Iterator[None]:
    """Turn any failure inside into one line: what changed, against which release, and where to fix it."""
    try:
        yield
    except Exception as error:  # an AttributeError, a TypeError, or an assertion: all mean the SDK changed
        pytest.fail(
            f"opentelemetry-sdk {PINNED}: {change} ({type(error).__name__}: {error}); installed {INSTALLED}"
            f" — see otel/_sdk.py, {access}",
            pytrace=False,
        )


def _spans(count: int = 1) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    for _ in range(count):
        with provider.get_tracer("canary").start_as_current_span("request", attributes={"http.route": "/predict"}):
            pass
    provider.shutdown()
    return list(exporter.get_finished_spans())


class TestMetrics:
    """The synchronous gauge's underscored names, the reader hook, and an exporter's preferences."""

    def test_gauge_names_are_the_synchronous_gauge(self) -> None:
        reader = InMemoryMetricReader(preferred_temporality={_sdk.SDKGauge: AggregationTemporality.CUMULATIVE})
        gauge = MeterProvider(metric_readers=[reader]).get_meter("canary").create_gauge("queue.depth")
        with canary("the synchronous gauge is no longer opentelemetry.metrics._Gauge / sdk.metrics._Gauge", "Gauge"):
            assert isinstance(gauge, _sdk.Gauge)
            assert isinstance(gauge, _sdk.SDKGauge)
            gauge.set(3.0)
            gauge.set(7.0)
            assert [point.value for point in data_points(reader.get_metrics_data(), "queue.depth")] == [7.0]

    def test_pull_reader_receives_what_collect_collected(self) -> None:
        received: list[MetricsData] = []

        class Reader(_sdk.PullMetricReader):
            def receive(self, metrics_data: MetricsData) -> None:
                received.append(metrics_data)

            def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
                pass

        reader = Reader()
        MeterProvider(metric_readers=[reader]).get_meter("canary").create_counter("requests").add(2)
        with canary("MetricReader.collect() no longer ends in _receive_metrics(metrics_data)", "PullMetricReader"):
            reader.collect()
            assert len(received) == 1
            assert [point.value for point in data_points(received[0], "requests")] == [2]

    def test_preferences_carry_over_to_a_wrapping_exporter(self) -> None:
        exported: list[MetricsData] = []

        class Exporter(MetricExporter):
            def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> Any:
                exported.append(metrics_data)
                return MetricExportResult.SUCCESS

            def force_flush(self, timeout_millis: float = 10_000) -> bool:
                return True

            def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
                pass

        inner = Exporter(
            preferred_temporality={Counter: AggregationTemporality.DELTA},
            preferred_aggregation={Histogram: ExplicitBucketHistogramAggregation([1.0])},
        )
        with canary(
            "MetricExporter no longer keeps _preferred_temporality / _preferred_aggregation",
            "preferred_temporality, preferred_aggregation",
        ):
            # As otel.resilience.ResilientMetricExporter builds itself from the exporter it wraps.
            wrapper = Exporter(
                preferred_temporality=_sdk.preferred_temporality(inner),
                preferred_aggregation=_sdk.preferred_aggregation(inner),
            )
            reader = PeriodicExportingMetricReader(wrapper, export_interval_millis=3_600_000)
            provider = MeterProvider(metric_readers=[reader])
            meter = provider.get_meter("canary")
            meter.create_counter("requests").add(1)
            meter.create_histogram("latency").record(0.5)
            reader.collect()
            provider.shutdown()
            (counter,) = [m for r in exported[0].resource_metrics for s in r.scope_metrics for m in s.metrics
                          if m.name == "requests"]  # fmt: skip
            assert isinstance(counter.data, Sum)
            assert counter.data.aggregation_temporality is AggregationTemporality.DELTA
            (point,) = data_points(exported[0], "latency")
            assert list(point.explicit_bounds) == [1.0]


class TestOTLPHTTPSteps:
    """The SDK OTLP/HTTP exporters' steps around encoding, as `otel.exporters` runs them with its own encoder."""

    CHANGE = "the OTLP/HTTP exporters no longer have _shutdown, _metrics, _max_request_size and _client"

    @pytest.mark.parametrize("exporter_class", [OTLPSpanExporter, OTLPLogExporter])
    def test_both_exporters_have_them(self, exporter_class: type) -> None:
        with canary(self.CHANGE, "otlp_http_steps"):
            assert _sdk.otlp_http_steps(exporter_class(endpoint="http://127.0.0.1:9/v1/x")) is not None

    def test_shutdown_flag(self) -> None:
        exporter = OTLPSpanExporter(endpoint="http://127.0.0.1:9/v1/traces")
        with canary("the exporter's _shutdown flag no longer follows shutdown()", "OTLPHTTPSteps.shut_down"):
            steps = _sdk.otlp_http_steps(exporter)
            assert steps is not None and not steps.shut_down
            exporter.shutdown()
            assert steps.shut_down

    def test_export_operation_records_the_self_metrics(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
        reader = InMemoryMetricReader()
        meters = MeterProvider(metric_readers=[reader])
        exporter = OTLPSpanExporter(endpoint="http://127.0.0.1:9/v1/traces", meter_provider=meters)
        with canary(
            "_metrics.export_operation(count) no longer yields a result whose `error` marks a failed export",
            "OTLPHTTPSteps.export_operation",
        ):
            steps = _sdk.otlp_http_steps(exporter)
            assert steps is not None
            with steps.export_operation(3) as result:
                result.error = ValueError("request too large")
            with steps.export_operation(2):
                pass
            points = data_points(reader.get_metrics_data(), "otel.sdk.exporter.span.exported")
            assert {point.attributes.get("error.type"): point.value for point in points} == {"ValueError": 3, None: 2}

    def test_request_size_limit(self) -> None:
        spans = _spans()
        with (
            OTLPReceiver() as receiver,
            canary(
                "the exporter's _max_request_size no longer means what the SDK's export enforces (0: no limit)",
                "OTLPHTTPSteps.max_request_size, too_large",
            ),
        ):
            endpoint = f"{receiver.endpoint}/v1/traces"
            for limit, refused in ((10, True), (0, False), (None, False)):
                exporter = OTLPSpanExporter(endpoint=endpoint, timeout=5, max_request_size=limit)
                steps = _sdk.otlp_http_steps(exporter)
                assert steps is not None
                assert steps.too_large(_wire.encode_spans(spans)) is refused, limit
                # The SDK's own export refuses (without sending) exactly what too_large refuses.
                assert (exporter.export(spans) is SpanExportResult.FAILURE) is refused, limit
            assert len(receiver.spans()) == 2

    def test_send_posts_the_bytes_with_retries_and_reports_the_outcome(self) -> None:
        spans = _spans()
        with (
            OTLPReceiver() as receiver,
            canary(
                "_client.export(data) no longer sends the bytes and returns a result with `success` and `status_code`",
                "OTLPHTTPSteps.send",
            ),
        ):
            exporter = OTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces", timeout=1)
            steps = _sdk.otlp_http_steps(exporter)
            assert steps is not None
            outcome = steps.send(_wire.encode_spans(spans))
            assert outcome.success
            assert [span.name for span in receiver.spans()] == ["request"]
            receiver.mode = "error503"
            outcome = steps.send(_wire.encode_spans(spans))
            assert not outcome.success and outcome.status_code == 503  # after retrying until the timeout
            exporter.shutdown()


class _Blocking:
    """An exporter stuck in its first export until released: the processor's queue fills behind it."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def export(self, batch: Sequence[Any]) -> Any:
        self.entered.set()
        self.release.wait(10)
        return None

    def shutdown(self) -> None:
        self.release.set()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


class _BlockingSpans(_Blocking, SpanExporter):
    def export(self, batch: Sequence[ReadableSpan]) -> SpanExportResult:
        super().export(batch)
        return SpanExportResult.SUCCESS


class _BlockingLogs(_Blocking, LogRecordExporter):
    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        super().export(batch)
        return LogRecordExportResult.SUCCESS


class _Watcher(logging.Filter):
    """Records the signal of every queue-full line, and silences them (as otel.resilience does)."""

    def __init__(self) -> None:
        super().__init__()
        self.signals: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        signal = _sdk.queue_drop_signal(record)
        if signal is None:
            return True
        self.signals.append(signal)
        return False


@pytest.fixture
def watcher() -> Iterator[_Watcher]:
    logger = logging.getLogger(_sdk.QUEUE_LOGGER)
    level = logger.level
    watcher = _Watcher()
    _sdk.watch_queue_drops(watcher)
    yield watcher
    logger.removeFilter(watcher)
    logger.setLevel(level)


class TestLogs:
    """The batch log processor's queue, and the log line that is the only report of a full one."""

    def test_batch_queue_is_what_on_emit_ends_in(self) -> None:
        exporter = InMemoryLogRecordExporter()
        processor = BatchLogRecordProcessor(exporter)
        provider = LoggerProvider(resource=RESOURCE)
        provider.add_log_record_processor(SimpleLogRecordProcessor(kept := InMemoryLogRecordExporter()))
        provider.get_logger("canary").emit(body="request", attributes={"http.route": "/predict"})
        (record,) = kept.get_finished_logs()
        with canary("BatchLogRecordProcessor no longer has _batch_processor.emit(readable)", "batch_queue"):
            emit = _sdk.batch_queue(processor)
            assert emit is not None
            emit(record)
            processor.force_flush()
            assert list(exporter.get_finished_logs()) == [record]  # queued and exported as given
        assert _sdk.batch_queue(None) is None
        assert _sdk.batch_queue(SimpleLogRecordProcessor(exporter)) is None  # type: ignore[arg-type]
        processor.shutdown()
        provider.shutdown()

    def test_a_full_span_queue_is_reported_once_per_dropped_span(self, watcher: _Watcher) -> None:
        exporter = _BlockingSpans()
        provider = TracerProvider(resource=RESOURCE)
        provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=1, max_export_batch_size=1))
        tracer = provider.get_tracer("canary")
        with canary(
            f'the batch span processor no longer logs "Queue full, dropping Span." to {_sdk.QUEUE_LOGGER}'
            " (or a filter there hides repeats first)",
            "watch_queue_drops, queue_drop_signal",
        ):
            tracer.start_span("exporting").end()
            assert exporter.entered.wait(10)  # the worker holds the first span; the queue is empty
            for name in ("queued", "dropped", "dropped again"):
                tracer.start_span(name).end()
            exporter.release.set()
            assert watcher.signals == ["traces", "traces"]
        provider.shutdown()

    def test_a_full_log_queue_is_reported_once_per_dropped_record(self, watcher: _Watcher) -> None:
        exporter = _BlockingLogs()
        provider = LoggerProvider(resource=RESOURCE)
        provider.add_log_record_processor(BatchLogRecordProcessor(exporter, max_queue_size=1, max_export_batch_size=1))
        logger = provider.get_logger("canary")
        with canary(
            f'the batch log processor no longer logs "Queue full, dropping Log." to {_sdk.QUEUE_LOGGER}',
            "watch_queue_drops, queue_drop_signal",
        ):
            logger.emit(body="exporting")
            assert exporter.entered.wait(10)
            for body in ("queued", "dropped", "dropped again"):
                logger.emit(body=body)
            exporter.release.set()
            assert watcher.signals == ["logs", "logs"]
        provider.shutdown()


class TestAttributes:
    """The plain dict inside BoundedAttributes, which the OTLP encoder iterates directly."""

    def test_bounded_attributes_give_their_dicts_items(self) -> None:
        exporter = InMemoryLogRecordExporter()
        provider = LoggerProvider(resource=RESOURCE)
        provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
        provider.get_logger("canary").emit(body="request", attributes={"http.route": "/predict", "rows": 3})
        (record,) = exporter.get_finished_logs()
        with canary("BoundedAttributes no longer keeps its items in the plain dict _dict", "attribute_items"):
            attributes = record.log_record.attributes  # what otel._wire encodes for a log record
            assert isinstance(attributes, BoundedAttributes)
            items = _sdk.attribute_items(attributes)
            assert type(items) is type({}.items())  # the dict's own view, not the Mapping ABC's
            assert list(items) == [("http.route", "/predict"), ("rows", 3)]
        assert list(_sdk.attribute_items({"a": 1})) == [("a", 1)]  # any other mapping, as a mapping
        provider.shutdown()
