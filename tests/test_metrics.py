"""otel/metrics.py: the OTLP push from the `/metrics` reader (one reader for both paths)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData

from otel.metrics import MetricPusher
from otel.openmetrics import OpenMetricsReader
from otel.telemetry import Telemetry
from tests.support.metrics import data_points
from tests.support.otlp import OTLPReceiver


class _Recording(MetricExporter):
    """Keeps what it is given; fails the first `failures` exports by raising."""

    def __init__(self, failures: int = 0) -> None:
        super().__init__()
        self.exports: list[MetricsData] = []
        self.failures = failures
        self.shut = False
        self.arrived = threading.Event()

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("collector down")
        self.exports.append(metrics_data)
        self.arrived.set()
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.shut = True


def _sums(data: MetricsData, name: str) -> Sequence[float]:
    return [point.value for point in data_points(data, name)]


class TestMetricPusher:
    """Pushes on its interval and once more at shutdown; a failed push does not stop the next ones."""

    def test_pushes_periodically_and_at_shutdown(self) -> None:
        reader = OpenMetricsReader()
        provider = MeterProvider(metric_readers=[reader])
        counter = provider.get_meter("test").create_counter("requests")
        exporter = _Recording(failures=1)
        pusher = MetricPusher(reader.collect_data, exporter, interval=0.05)
        try:
            counter.add(2)
            deadline = time.monotonic() + 5
            while not exporter.exports and time.monotonic() < deadline:
                time.sleep(0.01)
            assert exporter.exports, "no push after the failed one"
            assert _sums(exporter.exports[-1], "requests") == [2]
            counter.add(3)
            reader.render(None)  # a scrape in between does not take the push's data: both are cumulative
        finally:
            pusher.shutdown()
            provider.shutdown()
        assert _sums(exporter.exports[-1], "requests") == [5]  # the final push saw the last add
        assert exporter.shut
        pushes = len(exporter.exports)
        time.sleep(0.15)
        assert len(exporter.exports) == pushes  # stopped
        pusher.shutdown()  # idempotent

    def test_rejects_a_non_positive_interval(self) -> None:
        with pytest.raises(ValueError, match="interval"):
            MetricPusher(lambda: None, _Recording(), interval=0)


class TestTelemetryFromEnv:
    """With an OTLP endpoint, metrics are pushed from the same reader `/metrics` renders: one reader."""

    def test_one_reader_serves_the_scrape_and_the_push(self) -> None:
        with OTLPReceiver() as receiver:
            telemetry = Telemetry.from_env(
                service_name="test",
                service_version="0",
                env={
                    "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                    "OTEL_METRIC_EXPORT_INTERVAL": "3600000",  # no periodic push: only the one at shutdown
                    "OTEL_TRACES_EXPORTER": "none",
                    "OTEL_LOGS_EXPORTER": "none",
                },
            )
            try:
                assert telemetry.exporting == {"metrics": "otlp"}
                assert telemetry.metrics_reader is not None
                telemetry.meter_provider.get_meter("test").create_counter("checkouts", unit="1").add(5)
                body, _ = telemetry.metrics_reader.render()
                assert b"checkouts_total 5" in body
                assert receiver.metrics("checkouts") == []  # an hour's interval: nothing pushed yet
            finally:
                telemetry.shutdown()
            receiver.wait_for(lambda r: bool(r.metrics("checkouts")))
            assert [point.value for point in receiver.metrics("checkouts")] == [5]

    def test_no_endpoint_no_pusher(self) -> None:
        telemetry = Telemetry.from_env(service_name="test", service_version="0", env={})
        try:
            assert telemetry.metric_pusher is None
        finally:
            telemetry.shutdown()
