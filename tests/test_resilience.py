"""otel.resilience: exporters that count what an outage drops and say so once, not once per batch."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from otel.resilience import (
    ExportHealth,
    ResilientMetricExporter,
    ResilientSpanExporter,
    export_timeout,
    queue_drops,
    register_instruments,
)
from otel.telemetry import Telemetry
from tests.conftest import InMemoryTelemetry
from tests.support.metrics import data_points

_sdk_like = logging.getLogger(__name__)  # the wrapped exporter's module logger, as the SDK's exporters have


class FlakyExporter(SpanExporter):
    """Fails while `down` is set, logging per batch as the SDK's OTLP exporters do."""

    def __init__(self) -> None:
        self.down = True
        self.calls = 0
        self.raise_instead = False
        self.release = threading.Event()
        self.release.set()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        self.release.wait()
        if self.raise_instead:
            raise ConnectionError("boom")
        if self.down:
            _sdk_like.warning("Transient error %s encountered while exporting spans batch, retrying", "Unavailable")
            _sdk_like.error("Failed to export spans batch due to timeout, max retries or shutdown.")
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def _events(telemetry: InMemoryTelemetry) -> list[dict[str, Any]]:
    return [json.loads(line) for line in telemetry.console_lines() if line.startswith("{")]


def _spans(count: int) -> list[ReadableSpan]:
    provider = TracerProvider(resource=Resource.get_empty())
    tracer = provider.get_tracer("test")
    spans = []
    for _ in range(count):
        span = tracer.start_span("s")
        span.end()
        spans.append(span)
    return spans  # type: ignore[return-value]


class TestOutageAccounting:
    """Every failed item is counted; an outage is logged once when it starts and once when it ends."""

    def test_logged_once_per_outage_with_the_sdks_reason(self, telemetry: InMemoryTelemetry) -> None:
        inner = FlakyExporter()
        exporter = ResilientSpanExporter(inner)
        for _ in range(20):
            assert exporter.export(_spans(3)) is SpanExportResult.FAILURE
        inner.down = False
        for _ in range(5):
            assert exporter.export(_spans(2)) is SpanExportResult.SUCCESS
        health = exporter.health
        assert (health.dropped, health.exported, health.failed_exports, health.outages) == (60, 10, 20, 1)
        assert not health.failing
        events = [e for e in _events(telemetry) if e["logger"] == "otel.resilience"]
        assert [e["event"] for e in events] == ["telemetry export failing", "telemetry export recovered"]
        assert events[0]["signal"] == "traces"
        assert events[0]["reason"].startswith("Transient error Unavailable")  # the first line of the export
        assert events[1]["dropped"] == 60
        assert not [line for line in telemetry.console_lines() if "Transient error" in line and "reason" not in line]

    def test_sdk_lines_outside_an_export_are_left_alone(self, caplog: pytest.LogCaptureFixture) -> None:
        ResilientSpanExporter(FlakyExporter())
        with caplog.at_level(logging.WARNING, logger=__name__):
            _sdk_like.warning("configured oddly")
        assert "configured oddly" in caplog.text

    def test_exceptions_are_failures(self) -> None:
        inner = FlakyExporter()
        inner.raise_instead = True
        exporter = ResilientSpanExporter(inner)
        assert exporter.export(_spans(4)) is SpanExportResult.FAILURE
        assert exporter.health.dropped == 4 and exporter.health.failing

    def test_a_new_outage_is_logged_again(self, telemetry: InMemoryTelemetry) -> None:
        inner = FlakyExporter()
        exporter = ResilientSpanExporter(inner)
        for down in (True, True, False, True, False):
            inner.down = down
            exporter.export(_spans(1))
        events = [e["event"] for e in _events(telemetry) if e["logger"] == "otel.resilience"]
        assert events == ["telemetry export failing", "telemetry export recovered"] * 2
        assert exporter.health.outages == 2

    def test_abandoned_while_failing_skips_the_backend(self) -> None:
        inner = FlakyExporter()
        exporter = ResilientSpanExporter(inner)
        exporter.export(_spans(1))
        exporter.health.abandon_if_failing()
        calls = inner.calls
        assert exporter.export(_spans(5)) is SpanExportResult.FAILURE
        assert inner.calls == calls and exporter.health.dropped == 6

    def test_abandon_does_not_drop_while_healthy(self) -> None:
        inner = FlakyExporter()
        inner.down = False
        exporter = ResilientSpanExporter(inner)
        exporter.health.abandon_if_failing()
        assert exporter.export(_spans(2)) is SpanExportResult.SUCCESS and inner.calls == 1


class TestQueueOverflow:
    """A full batch processor queue drops items one by one: counted, and never a log line per item."""

    def test_counted_and_silent(self, caplog: pytest.LogCaptureFixture) -> None:
        inner = FlakyExporter()
        inner.release.clear()  # the exporter hangs, so the queue fills
        exporter = ResilientSpanExporter(inner)
        provider = TracerProvider(resource=Resource.get_empty())
        provider.add_span_processor(
            BatchSpanProcessor(exporter, max_queue_size=4, max_export_batch_size=2, schedule_delay_millis=10)
        )
        before = queue_drops()["traces"]
        tracer = provider.get_tracer("test")
        with caplog.at_level(logging.INFO):
            for _ in range(50):
                tracer.start_span("x").end()
        dropped = queue_drops()["traces"] - before
        inner.release.set()
        provider.shutdown()
        assert 40 <= dropped <= 48  # 50 spans, a queue of 4, and at most one batch of 2 taken by the exporter
        assert "Queue full" not in caplog.text


class TestMetrics:
    """`otel.exporter.dropped` by signal and reason; the metric wrapper keeps the exporter's preferences."""

    def test_dropped_counter(self) -> None:
        health = ExportHealth("traces")
        health.record(7, ok=False)
        reader = InMemoryMetricReader()
        register_instruments(MeterProvider(metric_readers=[reader]).get_meter("t"), [health])
        points = {
            (point.attributes["signal"], point.attributes["error.type"]): point.value
            for point in data_points(reader.get_metrics_data(), "otel.exporter.dropped")
        }
        assert points[("traces", "export_failed")] == 7
        assert ("traces", "queue_full") in points
        assert set(points) == {("traces", "export_failed"), ("traces", "queue_full")}

    def test_metric_exporter_wrapper(self) -> None:
        class Inner(MetricExporter):
            def __init__(self) -> None:
                super().__init__(preferred_temporality={Counter: AggregationTemporality.DELTA})
                self.exported: list[MetricsData] = []

            def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> Any:
                self.exported.append(metrics_data)
                return MetricExportResult.FAILURE

            def force_flush(self, timeout_millis: float = 10_000) -> bool:
                return True

            def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
                pass

        inner = Inner()
        wrapped = ResilientMetricExporter(inner)
        # A reader over the wrapper collects with the inner exporter's preferences: here, delta counters.
        pushing = PeriodicExportingMetricReader(wrapped, export_interval_millis=3_600_000)
        pushed = MeterProvider(metric_readers=[pushing])
        pushed.get_meter("t").create_counter("c").add(1)
        pushing.collect()
        pushed.shutdown()
        (metric,) = [m for r in inner.exported[0].resource_metrics for s in r.scope_metrics for m in s.metrics]
        assert isinstance(metric.data, Sum) and metric.data.aggregation_temporality is AggregationTemporality.DELTA
        assert wrapped.health.dropped == 1  # that push's one data point: the inner exporter fails every export

        wrapped = ResilientMetricExporter(Inner())
        reader = InMemoryMetricReader()
        provider = MeterProvider(metric_readers=[reader])
        provider.get_meter("t").create_counter("c").add(1, {"a": "1"})
        provider.get_meter("t").create_counter("d").add(1)
        data = reader.get_metrics_data()
        assert data is not None
        assert wrapped.export(data) is MetricExportResult.FAILURE
        assert wrapped.health.dropped == 2 and wrapped.health.signal == "metrics"


class TestTimeouts:
    """OTEL_EXPORTER_OTLP_*TIMEOUT in milliseconds, as the specification says; bounded; 10 s by default."""

    @pytest.mark.parametrize(
        ("env", "seconds"),
        [
            ({}, 10.0),
            ({"OTEL_EXPORTER_OTLP_TIMEOUT": "2500"}, 2.5),
            ({"OTEL_EXPORTER_OTLP_TIMEOUT": "2500", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "500"}, 0.5),
            ({"OTEL_EXPORTER_OTLP_TIMEOUT": "10000000"}, 60.0),
            ({"OTEL_EXPORTER_OTLP_TIMEOUT": " "}, 10.0),
        ],
    )
    def test_resolution(self, env: dict[str, str], seconds: float) -> None:
        assert export_timeout(env, "TRACES") == seconds

    @pytest.mark.parametrize("raw", ["ten", "-1", "0", "nan", "inf"])
    def test_invalid(self, raw: str) -> None:
        with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_TIMEOUT"):
            export_timeout({"OTEL_EXPORTER_OTLP_TIMEOUT": raw}, "LOGS")

    def test_from_env_wraps_every_pushed_signal(self) -> None:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_EXPORTER_OTLP_TIMEOUT": "1500"}
        telemetry = Telemetry.from_env(service_name="t", service_version="0", env=env)
        try:
            assert sorted(health.signal for health in telemetry.export_health) == ["logs", "metrics", "traces"]
        finally:
            telemetry.shutdown()
