"""otel/histograms.py: in-process histograms give the SDK's data, exemplars and limits, for a fraction of the cost."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider, TraceBasedExemplarFilter
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, MetricsData
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otel.histograms import DEFAULT_BOUNDARIES, HistogramProducer
from otel.metrics import SECONDS_BUCKETS, setup_metrics
from otel.openmetrics import OpenMetricsReader
from otel.resource import build_resource
from tests.support.metrics import data_points

RESOURCE = build_resource(service_name="histograms-test", service_version="0.0.0", instance_id="test")
VALUES = (0.0, 0.0004, 0.0005, 0.0009, 0.003, 0.003, 0.02, 0.75, 1.0, 4.0, 12.5, 600.0)
ATTRIBUTE_SETS: tuple[dict[str, Any], ...] = (
    {"http.request.method": "POST", "http.route": "/predict", "http.response.status_code": 200},
    {"http.request.method": "POST", "http.route": "/predict", "http.response.status_code": 422},
    {"model.name": "diabetes", "replicas": ("a", "b"), "ratio": 0.5, "shadow": False},
    {},
)


def _points(data: MetricsData | None, name: str) -> list[HistogramDataPoint]:
    points = data_points(data, name)
    assert all(isinstance(point, HistogramDataPoint) for point in points)
    return points


def _key(point: HistogramDataPoint) -> str:
    return repr(sorted(point.attributes.items())) if point.attributes else "{}"


def _comparable(point: HistogramDataPoint) -> tuple[Any, ...]:
    return (
        dict(point.attributes or {}),
        point.count,
        pytest.approx(point.sum),
        list(point.bucket_counts),
        list(point.explicit_bounds),
        point.min,
        point.max,
    )


@pytest.fixture
def reader() -> OpenMetricsReader:
    return OpenMetricsReader()


@pytest.fixture
def ours(reader: OpenMetricsReader) -> Iterator[MeterProvider]:
    provider = setup_metrics(RESOURCE, [reader])
    yield provider
    provider.shutdown()


@pytest.fixture
def sdk() -> Iterator[tuple[MeterProvider, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=RESOURCE, metric_readers=[reader])
    yield provider, reader
    provider.shutdown()


class TestSameDataAsTheSDK:
    """Side by side with the SDK's own histogram, the collected points are equal."""

    @pytest.mark.parametrize("boundaries", [SECONDS_BUCKETS, None, [1, 10, 100]], ids=["seconds", "default", "ints"])
    def test_points_match(
        self,
        ours: MeterProvider,
        reader: OpenMetricsReader,
        sdk: tuple[MeterProvider, InMemoryMetricReader],
        boundaries: Any,
    ) -> None:
        sdk_provider, sdk_reader = sdk
        mine = ours.get_meter("test").create_histogram(
            "request.duration", unit="s", explicit_bucket_boundaries_advisory=boundaries
        )
        theirs = sdk_provider.get_meter("test").create_histogram(
            "request.duration", unit="s", explicit_bucket_boundaries_advisory=boundaries
        )
        for i, value in enumerate(VALUES):
            for attributes in ATTRIBUTE_SETS[: 1 + i % len(ATTRIBUTE_SETS)]:
                mine.record(value, attributes)
                theirs.record(value, attributes)

        expected = {_key(p): _comparable(p) for p in _points(sdk_reader.get_metrics_data(), "request.duration")}
        got = {_key(p): _comparable(p) for p in _points(reader.collect_data(), "request.duration")}
        assert got == expected
        assert len(got) == len(ATTRIBUTE_SETS)

    def test_metric_keeps_name_unit_description_and_is_cumulative(
        self, ours: MeterProvider, reader: OpenMetricsReader
    ) -> None:
        histogram = ours.get_meter("test").create_histogram("batch.size", unit="{row}", description="Rows.")
        histogram.record(3)
        first = _points(reader.collect_data(), "batch.size")[0]
        histogram.record(5)
        data = reader.collect_data()
        assert data is not None
        metric = next(m for s in data.resource_metrics[0].scope_metrics for m in s.metrics if m.name == "batch.size")
        assert (metric.unit, metric.description) == ("{row}", "Rows.")
        second = metric.data.data_points[0]
        assert isinstance(second, HistogramDataPoint)
        assert (second.count, second.sum) == (2, 8)
        assert second.start_time_unix_nano == first.start_time_unix_nano < first.time_unix_nano <= second.time_unix_nano
        assert list(second.explicit_bounds) == list(DEFAULT_BOUNDARIES)

    def test_scope_is_shared_with_the_meters_other_instruments(
        self, ours: MeterProvider, reader: OpenMetricsReader
    ) -> None:
        meter = ours.get_meter("modellens", "1.0")
        meter.create_counter("calls").add(1)
        meter.create_histogram("latency").record(1.0)
        data = reader.collect_data()
        assert data is not None
        [resource] = data.resource_metrics
        assert resource.resource == RESOURCE
        [scope] = [s for s in resource.scope_metrics if s.scope.name == "modellens"]
        assert (scope.scope.version, sorted(m.name for m in scope.metrics)) == ("1.0", ["calls", "latency"])

    def test_attribute_order_does_not_split_a_series(self, ours: MeterProvider, reader: OpenMetricsReader) -> None:
        histogram = ours.get_meter("test").create_histogram("latency")
        histogram.record(1.0, {"a": "x", "b": "y"})
        histogram.record(2.0, {"b": "y", "a": "x"})
        histogram.record(3.0, {"a": "x", "b": 1})
        histogram.record(4.0, {"a": "x", "b": True})  # True is not 1 for OpenTelemetry
        counts = {_key(p): p.count for p in _points(reader.collect_data(), "latency")}
        assert counts == {
            "[('a', 'x'), ('b', 'y')]": 2,
            "[('a', 'x'), ('b', 1)]": 1,
            "[('a', 'x'), ('b', True)]": 1,
        }

    def test_later_changes_to_the_callers_dict_do_not_change_the_series(
        self, ours: MeterProvider, reader: OpenMetricsReader
    ) -> None:
        histogram = ours.get_meter("test").create_histogram("latency")
        attributes: dict[str, Any] = {"route": "/predict"}
        histogram.record(1.0, attributes)
        attributes["route"] = "/other"
        [point] = _points(reader.collect_data(), "latency")
        assert point.attributes == {"route": "/predict"}

    def test_unusable_values_are_dropped_with_a_warning(
        self, ours: MeterProvider, reader: OpenMetricsReader, caplog: pytest.LogCaptureFixture
    ) -> None:
        histogram = ours.get_meter("test").create_histogram("latency")
        with caplog.at_level(logging.WARNING, logger="otel.histograms"):
            for bad in (-1.0, math.nan, math.inf, -math.inf):
                histogram.record(bad)
        histogram.record(2.0)
        [point] = _points(reader.collect_data(), "latency")
        assert (point.count, point.sum) == (1, 2.0)
        assert len([r for r in caplog.records if "not a finite, non-negative value" in r.message]) == 4

    def test_concurrent_records_are_all_counted(self, ours: MeterProvider, reader: OpenMetricsReader) -> None:
        histogram = ours.get_meter("test").create_histogram("latency", explicit_bucket_boundaries_advisory=[1.0])
        attributes = {"route": "/predict"}

        def work() -> None:
            for _ in range(5_000):
                histogram.record(0.5, attributes)
                histogram.record(2.0, attributes)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        [point] = _points(reader.collect_data(), "latency")
        assert list(point.bucket_counts) == [40_000, 40_000]
        assert point.sum == pytest.approx(40_000 * 2.5)


class TestRegistration:
    """Created once per scope and name; bad names and boundaries handled as the SDK handles them."""

    def test_same_name_gives_the_same_histogram(self, ours: MeterProvider, caplog: pytest.LogCaptureFixture) -> None:
        meter = ours.get_meter("test")
        first = meter.create_histogram("latency", unit="s")
        assert meter.create_histogram("LATENCY", unit="s") is first
        assert ours.get_meter("test") is meter
        with caplog.at_level(logging.WARNING, logger="otel.histograms"):
            assert meter.create_histogram("latency", unit="ms") is first
        assert "the first one is kept" in caplog.text
        assert ours.get_meter("other").create_histogram("latency") is not first

    def test_invalid_name_is_refused(self, ours: MeterProvider) -> None:
        with pytest.raises(ValueError, match="invalid instrument name"):
            ours.get_meter("test").create_histogram("1latency")

    @pytest.mark.parametrize("boundaries", [[5.0, 1.0], [1.0, 1.0], ["a"], [1.0, True]])
    def test_bad_advisory_boundaries_fall_back_to_the_defaults(
        self, ours: MeterProvider, reader: OpenMetricsReader, boundaries: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.WARNING, logger="otel.histograms"):
            histogram = ours.get_meter("test").create_histogram(
                "latency", explicit_bucket_boundaries_advisory=boundaries
            )
        histogram.record(7.0)
        [point] = _points(reader.collect_data(), "latency")
        assert list(point.explicit_bounds) == list(DEFAULT_BOUNDARIES)
        assert "using the defaults" in caplog.text

    def test_a_reader_that_cannot_take_producers_is_refused(self) -> None:
        with pytest.raises(TypeError, match="InMemoryMetricReader cannot collect in-process histograms"):
            setup_metrics(RESOURCE, [InMemoryMetricReader()])

    def test_other_instruments_are_the_sdks(self, ours: MeterProvider, reader: OpenMetricsReader) -> None:
        meter = ours.get_meter("test")
        meter.create_counter("hits").add(2, {"route": "/a"})
        meter.create_up_down_counter("in.flight").add(-1)
        meter.create_gauge("temperature").set(21.5)
        meter.create_observable_gauge("queue", callbacks=[lambda _options: []])
        data = reader.collect_data()
        assert data is not None
        names = {m.name for s in data.resource_metrics[0].scope_metrics for m in s.metrics}
        assert {"hits", "in.flight", "temperature"} <= names

    def test_disabled_sdk_hands_out_no_op_meters(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
        provider = setup_metrics(RESOURCE, [OpenMetricsReader()])
        histogram = provider.get_meter("test").create_histogram("latency")
        histogram.record(1.0)
        assert type(histogram).__name__ == "NoOpHistogram"


class TestCardinalityLimit:
    """Past 2000 attribute sets, new sets are counted in one overflow series, as the SDK does."""

    def test_overflow_series(self, ours: MeterProvider, reader: OpenMetricsReader) -> None:
        histogram = ours.get_meter("test").create_histogram("latency")
        for i in range(2_100):
            histogram.record(1.0, {"id": str(i)})
        histogram.record(1.0, {"id": "5"})  # a set seen before the limit keeps its own series
        points = {_key(p): p for p in _points(reader.collect_data(), "latency")}
        assert len(points) == 2_001
        assert points["[('otel.metric.overflow', True)]"].count == 100
        assert points["[('id', '5')]"].count == 2
        assert sum(p.count for p in points.values()) == 2_101


class TestExemplars:
    """One exemplar per bucket from the filter `OTEL_METRICS_EXEMPLAR_FILTER` names, emptied at each collection."""

    @staticmethod
    def _exemplars(data: MetricsData | None) -> list[Any]:
        return [e for p in _points(data, "latency") for e in p.exemplars]

    def test_sampled_span_becomes_the_exemplar_of_its_bucket(self) -> None:
        # The producer itself, as setup_metrics builds it: its raw data, before a reader keeps exemplars.
        producer = HistogramProducer(RESOURCE, TraceBasedExemplarFilter())
        histogram = producer.create_histogram(InstrumentationScope("test"), "latency", boundaries=[1.0])
        produce = producer.produce
        sampled = TracerProvider(sampler=ALWAYS_ON).get_tracer("test")
        unsampled = TracerProvider(sampler=ALWAYS_OFF).get_tracer("test")
        with unsampled.start_as_current_span("not sampled"):
            histogram.record(0.2, {"route": "/a"})
        with sampled.start_as_current_span("first"):
            histogram.record(0.5, {"route": "/a"})
        with sampled.start_as_current_span("second") as span:
            histogram.record(0.7, {"route": "/a"})
            histogram.record(3.0, {"route": "/a"})
        context = span.get_span_context()

        exemplars = self._exemplars(produce())
        assert [(e.value, e.trace_id, e.span_id) for e in exemplars] == [
            (0.7, context.trace_id, context.span_id),
            (3.0, context.trace_id, context.span_id),
        ]
        assert all(e.filtered_attributes == {} and e.time_unix_nano > 0 for e in exemplars)
        assert self._exemplars(produce()) == []  # emptied: the reader keeps the newest across collections

    def test_always_on_takes_measurements_outside_spans(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("OTEL_METRICS_EXEMPLAR_FILTER", "always_on")
        reader = OpenMetricsReader()
        setup_metrics(RESOURCE, [reader]).get_meter("test").create_histogram("latency").record(2.0)
        [exemplar] = self._exemplars(reader.collect_data())
        assert (exemplar.value, exemplar.trace_id, exemplar.span_id, exemplar.filtered_attributes) == (
            2.0,
            None,
            None,
            None,
        )

    def test_always_off_takes_none(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("OTEL_METRICS_EXEMPLAR_FILTER", "always_off")
        reader = OpenMetricsReader()
        histogram = setup_metrics(RESOURCE, [reader]).get_meter("test").create_histogram("latency")
        with TracerProvider(sampler=ALWAYS_ON).get_tracer("test").start_as_current_span("sampled"):
            histogram.record(2.0)
        assert self._exemplars(reader.collect_data()) == []

    def test_unknown_filter_is_an_error(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("OTEL_METRICS_EXEMPLAR_FILTER", "sometimes")
        with pytest.raises(ValueError, match="OTEL_METRICS_EXEMPLAR_FILTER='sometimes'"):
            setup_metrics(RESOURCE, [OpenMetricsReader()])

    def test_overflow_exemplar_keeps_the_measurements_attributes(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("OTEL_METRICS_EXEMPLAR_FILTER", "always_on")
        reader = OpenMetricsReader()
        histogram = setup_metrics(RESOURCE, [reader]).get_meter("test").create_histogram("latency")
        for i in range(2_001):
            histogram.record(1.0, {"id": str(i)})
        overflow = [
            p for p in _points(reader.collect_data(), "latency") if p.attributes == {"otel.metric.overflow": True}
        ]
        assert [e.filtered_attributes for e in overflow[0].exemplars] == [{"id": "2000"}]


def test_prometheus_text_is_unchanged_in_shape(ours: MeterProvider, reader: OpenMetricsReader) -> None:
    """The `/metrics` families of an in-process histogram: buckets with `le`, `_count` and `_sum`, by the names the
    standard translation gives."""
    histogram = ours.get_meter("test").create_histogram(
        "http.server.request.duration", unit="s", explicit_bucket_boundaries_advisory=[0.1, 1.0]
    )
    attributes: Mapping[str, Any] = {"http.route": "/predict", "http.response.status_code": 200}
    for value in (0.05, 0.5, 5.0):
        histogram.record(value, attributes)
    body, _ = reader.render()
    text = body.decode()
    labels = 'http_response_status_code="200",http_route="/predict"'
    for line in (
        "# TYPE http_server_request_duration_seconds histogram",
        f'http_server_request_duration_seconds_bucket{{{labels},le="0.1"}} 1',
        f'http_server_request_duration_seconds_bucket{{{labels},le="1.0"}} 2',
        f'http_server_request_duration_seconds_bucket{{{labels},le="+Inf"}} 3',
        f"http_server_request_duration_seconds_count{{{labels}}} 3",
        f"http_server_request_duration_seconds_sum{{{labels}}} 5.55",
    ):
        assert line in text.splitlines()
