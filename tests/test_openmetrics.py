"""Tests for otel.openmetrics: names, both exposition formats, exemplars, negotiation and thread safety."""

from __future__ import annotations

import json
import logging
import math
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from opentelemetry.metrics import CallbackOptions, Histogram, Meter, Observation
from opentelemetry.sdk.metrics import (
    AlwaysOnExemplarFilter,
    ExemplarFilter,
    MeterProvider,
    TraceBasedExemplarFilter,
)
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler
from opentelemetry.trace import Tracer
from opentelemetry.util.types import AttributeValue
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.samples import Exemplar, Sample, Timestamp
from prometheus_client.utils import floatToGoString

from otel._naming import format_float, format_le, label_name
from otel.openmetrics import (
    CONTENT_TYPE_OPENMETRICS,
    CONTENT_TYPE_TEXT,
    OpenMetricsReader,
    prometheus_name,
)

# What Prometheus 2.x sends when scraping.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
RESOURCE = Resource({"service.name": "modellens-test", "service.instance.id": "instance-1"})
BOUNDS = [0.1, 0.5, 1.0]
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

MakeMeter = Callable[..., tuple[Meter, OpenMetricsReader, MeterProvider]]


@pytest.fixture
def make_meter() -> Iterator[MakeMeter]:
    """Make (meter, reader, provider) around a fresh OpenMetricsReader; providers shut down afterwards."""
    providers: list[MeterProvider] = []

    def make(
        *,
        views: Sequence[View] = (),
        exemplar_filter: ExemplarFilter | None = None,
        resource: Resource = RESOURCE,
        reader: OpenMetricsReader | None = None,
    ) -> tuple[Meter, OpenMetricsReader, MeterProvider]:
        reader = reader or OpenMetricsReader()
        provider = MeterProvider(
            resource=resource,
            metric_readers=[reader],
            views=views,
            exemplar_filter=exemplar_filter or TraceBasedExemplarFilter(),
        )
        providers.append(provider)
        return provider.get_meter("modellens.test", "1.0"), reader, provider

    yield make
    for provider in providers:
        provider.shutdown()


def _tracer_provider(sampler: Sampler) -> Iterator[Tracer]:
    provider = TracerProvider(resource=RESOURCE, sampler=sampler)
    yield provider.get_tracer("modellens.test")
    provider.shutdown()


@pytest.fixture
def tracer() -> Iterator[Tracer]:
    """A tracer whose spans are all sampled (never the global one)."""
    yield from _tracer_provider(ALWAYS_ON)


@pytest.fixture
def unsampled_tracer() -> Iterator[Tracer]:
    yield from _tracer_provider(ALWAYS_OFF)


def scrape(reader: OpenMetricsReader) -> dict[str, Metric]:
    """Render OpenMetrics, parse it with prometheus_client and index the families by name."""
    body, content_type = reader.render(PROMETHEUS_ACCEPT)
    assert content_type == CONTENT_TYPE_OPENMETRICS
    return {family.name: family for family in parse_openmetrics(body.decode())}


def scrape_text(reader: OpenMetricsReader) -> dict[str, Metric]:
    body, content_type = reader.render(None)
    assert content_type == CONTENT_TYPE_TEXT
    return {family.name: family for family in parse_text(body.decode())}


def family_named(openmetrics: str, name: str) -> Metric:
    (family,) = [family for family in parse_openmetrics(openmetrics) if family.name == name]
    return family


def samples(family: Metric, name: str) -> list[Sample]:
    return [sample for sample in family.samples if sample.name == name]


def exemplar_of(sample: Sample) -> Exemplar:
    assert sample.exemplar is not None, f"{sample.name}{sample.labels} has no exemplar"
    return sample.exemplar


def bucket(family: Metric, name: str, le: str) -> Sample:
    (found,) = [sample for sample in samples(family, f"{name}_bucket") if sample.labels["le"] == le]
    return found


class TestNaming:
    """Names and UCUM units translate as in Prometheus 3's OTLP receiver (UnderscoreEscapingWithSuffixes)."""

    @pytest.mark.parametrize(
        ("name", "unit", "kind", "expected"),
        [
            ("http.server.request.duration", "s", "histogram", "http_server_request_duration_seconds"),
            ("model.predictions", "{prediction}", "counter", "model_predictions_total"),
            ("model.feature.reference", "1", "gauge", "model_feature_reference_ratio"),
            ("process.memory.usage", "By", "updowncounter", "process_memory_usage_bytes"),
            ("model.inference.duration", "ms", "histogram", "model_inference_duration_milliseconds"),
            ("rpc.latency", "us", "histogram", "rpc_latency_microseconds"),
            ("gc.pause", "ns", "histogram", "gc_pause_nanoseconds"),
            ("job.elapsed", "min", "gauge", "job_elapsed_minutes"),
            ("cert.age", "h", "gauge", "cert_age_hours"),
            ("model.age", "d", "gauge", "model_age_days"),
            ("payload.size", "KiBy", "histogram", "payload_size_kibibytes"),
            ("heap.limit", "MiBy", "gauge", "heap_limit_mebibytes"),
            ("upload.size", "KBy", "histogram", "upload_size_kilobytes"),
            ("download.size", "MBy", "histogram", "download_size_megabytes"),
            ("disk.free", "%", "gauge", "disk_free_percent"),
            ("cable.length", "m", "gauge", "cable_length_meters"),
            ("cpu.frequency", "Hz", "gauge", "cpu_frequency_hertz"),
            ("psu.voltage", "V", "gauge", "psu_voltage_volts"),
            ("psu.current", "A", "gauge", "psu_current_amperes"),
            ("energy.used", "J", "counter", "energy_used_joules_total"),
            ("power.draw", "W", "gauge", "power_draw_watts"),
            ("sample.mass", "g", "gauge", "sample_mass_grams"),
            ("cpu.temperature", "Cel", "gauge", "cpu_temperature_celsius"),
            ("network.io", "By/s", "gauge", "network_io_bytes_per_second"),
            ("requests.rate", "1/s", "gauge", "requests_rate_per_second"),
            ("packets", "{packet}/s", "counter", "packets_per_second_total"),
            ("process.cpu.time", "s", "counter", "process_cpu_time_seconds_total"),
            ("request.count", "1", "counter", "request_count_total"),
            ("queue.utilization", "1", "updowncounter", "queue_utilization"),
            ("ratio.score", "1", "gauge", "score_ratio"),
            ("total.requests", "", "counter", "requests_total"),
            ("system.uptime.seconds", "s", "gauge", "system_uptime_seconds"),
            ("2xx.responses", "{response}", "counter", "_2xx_responses_total"),
            ("http..server__latency-p99", "", "gauge", "http_server_latency_p99"),
            ("namespace:metric", "", "gauge", "namespace:metric"),
            # A unit part holding an annotation is dropped whole, as Prometheus does (not just the braces).
            ("cache.size", "By{compressed}", "gauge", "cache_size"),
        ],
    )
    def test_prometheus_name(self, name: str, unit: str, kind: str, expected: str) -> None:
        assert prometheus_name(name, unit, kind) == expected

    def test_unknown_kind_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="kind must be one of"):
            prometheus_name("x", "", "summary")

    @pytest.mark.parametrize(
        ("key", "expected"),
        [
            ("http.route", "http_route"),
            ("http.response.status_code", "http_response_status_code"),
            ("a..b", "a_b"),
            ("0day", "key_0day"),
            ("_private", "key_private"),
            ("__reserved__", "__reserved__"),
            ("ünïcode", "key_n_code"),
            ("...", None),
            ("", None),
        ],
    )
    def test_label_name(self, key: str, expected: str | None) -> None:
        assert label_name(key) == expected


class TestRendering:
    """Counters, up-down counters, gauges and histograms render as Prometheus counters, gauges, histograms."""

    def test_counter(self, make_meter: MakeMeter) -> None:
        meter, reader, _ = make_meter()
        counter = meter.create_counter("model.predictions", unit="{prediction}", description="Predictions")
        counter.add(3, {"model.name": "iris"})
        counter.add(2, {"model.name": "iris"})

        family = scrape(reader)["model_predictions"]

        assert (family.type, family.documentation, family.unit) == ("counter", "Predictions", "")
        (total,) = samples(family, "model_predictions_total")
        assert (total.labels, total.value) == ({"model_name": "iris"}, 5)
        assert scrape_text(reader)["model_predictions"].type == "counter"

    def test_updowncounter_is_a_gauge(self, make_meter: MakeMeter) -> None:
        meter, reader, _ = make_meter()
        meter.create_up_down_counter("process.memory.usage", unit="By", description="RSS").add(-7)

        family = scrape(reader)["process_memory_usage_bytes"]

        assert (family.type, family.unit) == ("gauge", "bytes")
        assert samples(family, "process_memory_usage_bytes")[0].value == -7

    def test_gauge_and_observable_gauge(self, make_meter: MakeMeter) -> None:
        meter, reader, _ = make_meter()
        meter.create_gauge("model.feature.reference", unit="1").set(0.25, {"feature": "petal_length"})

        def observe(options: CallbackOptions) -> list[Observation]:
            return [Observation(3, {"shard": 1}), Observation(1e-9, {"shard": 2})]

        meter.create_observable_gauge("queue.depth", callbacks=[observe])

        families = scrape(reader)

        ratio = families["model_feature_reference_ratio"]
        assert (ratio.type, ratio.unit) == ("gauge", "ratio")
        assert samples(ratio, "model_feature_reference_ratio")[0].value == 0.25
        depth = {s.labels["shard"]: s.value for s in samples(families["queue_depth"], "queue_depth")}
        assert depth == {"1": 3, "2": 1e-9}

    def test_histogram_buckets_sum_and_count(self, make_meter: MakeMeter) -> None:
        meter, reader, _ = make_meter()
        histogram = meter.create_histogram(
            "http.server.request.duration",
            unit="s",
            description="Duration of HTTP server requests.",
            explicit_bucket_boundaries_advisory=[0.005, 1, 2.5],
        )
        for value in (0.001, 0.5, 0.5, 2.0, 30.0):
            histogram.record(value, {"http.route": "/predict"})

        body = reader.render(PROMETHEUS_ACCEPT)[0].decode()
        family = scrape(reader)["http_server_request_duration_seconds"]

        assert (family.type, family.unit) == ("histogram", "seconds")
        buckets = samples(family, "http_server_request_duration_seconds_bucket")
        assert [(b.labels["le"], b.value) for b in buckets] == [
            ("0.005", 1),
            ("1.0", 3),
            ("2.5", 4),
            ("+Inf", 5),
        ]
        assert samples(family, "http_server_request_duration_seconds_sum")[0].value == pytest.approx(33.001)
        assert samples(family, "http_server_request_duration_seconds_count")[0].value == 5
        assert 'http_route="/predict",le="+Inf"} 5' in body

    def test_histogram_with_negative_buckets_has_no_sum_in_openmetrics(self, make_meter: MakeMeter) -> None:
        meter, reader, _ = make_meter()
        histogram = meter.create_histogram("drift", explicit_bucket_boundaries_advisory=[-1.0, 0.0, 1.0])
        histogram.record(0.5)

        openmetrics = reader.render(PROMETHEUS_ACCEPT)[0].decode()
        text = reader.render()[0].decode()

        assert family_named(openmetrics, "drift").type == "histogram"
        # OpenMetrics forbids _sum (and so _count) on a histogram with negative buckets; 0.0.4 has them.
        assert "drift_bucket" in openmetrics
        assert "drift_sum" not in openmetrics
        assert "drift_count" not in openmetrics
        assert "drift_sum 0.5" in text

    def test_exponential_histogram_is_skipped(self, make_meter: MakeMeter) -> None:
        view = View(instrument_name="latency", aggregation=ExponentialBucketHistogramAggregation())
        meter, reader, _ = make_meter(views=[view])
        meter.create_histogram("latency").record(1.0)
        meter.create_counter("hits").add(1)

        assert set(scrape(reader)) == {"target", "hits"}

    def test_attribute_values_and_colliding_keys(self, make_meter: MakeMeter) -> None:
        meter, reader, _ = make_meter()
        attributes: dict[str, AttributeValue] = {
            "flag": True,
            "ids": [1, 2],
            "names": ["a", "b"],
            "score": 0.5,
            "a.b": "1",
            "a_b": "2",
        }
        meter.create_counter("events").add(1, attributes)

        (total,) = samples(scrape(reader)["events"], "events_total")

        assert total.labels == {
            "a_b": "1;2",  # keys joined in the order of the original keys: "a.b" < "a_b"
            "flag": "true",
            "ids": "[1,2]",
            "names": '["a","b"]',
            "score": "0.5",
        }

    def test_same_name_from_two_scopes_is_one_family(
        self, make_meter: MakeMeter, caplog: pytest.LogCaptureFixture
    ) -> None:
        meter, reader, provider = make_meter()
        other_scope = provider.get_meter("another.scope")
        meter.create_counter("jobs", description="Jobs done").add(1, {"queue": "a"})
        other_scope.create_counter("jobs", description="Jobs done").add(2, {"queue": "b"})
        other_scope.create_counter("jobs.total").add(5, {"queue": "a"})  # also `jobs_total{queue="a"}`

        with caplog.at_level(logging.WARNING, logger="otel.openmetrics"):
            body = reader.render(PROMETHEUS_ACCEPT)[0].decode()

        assert body.count("# TYPE jobs counter") == 1
        family = family_named(body, "jobs")
        assert {s.labels["queue"]: s.value for s in samples(family, "jobs_total")} == {"a": 1, "b": 2}
        assert "jobs_total has the series {'queue': 'a'} twice" in caplog.text

    def test_same_name_with_another_type_is_dropped(self, make_meter: MakeMeter) -> None:
        meter, reader, _ = make_meter()
        meter.create_counter("tasks").add(1)
        meter.create_gauge("tasks.total").set(9)  # `tasks_total` as a gauge clashes with the counter

        (total,) = samples(scrape(reader)["tasks"], "tasks_total")

        assert total.value == 1


class TestNumbers:
    """Sample values round-trip; bucket bounds are written exactly as prometheus_client writes them."""

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (7, "7"),
            (0.1, "0.1"),
            (1.0, "1.0"),
            (1e-9, "1e-09"),
            (math.inf, "+Inf"),
            (-math.inf, "-Inf"),
            (math.nan, "NaN"),
        ],
    )
    def test_sample_values(self, value: float, expected: str) -> None:
        assert format_float(value) == expected

    @pytest.mark.parametrize("bound", [0.005, 0.1, 1, 2.5, 10, 1e6, 1234567.0, 1e-7, 0, -1.5, math.inf])
    def test_le_matches_prometheus_client(self, bound: float) -> None:
        assert format_le(bound) == floatToGoString(bound)


class TestTargetInfo:
    """The resource becomes one `target_info` sample whose labels are the resource attributes."""

    def test_target_info_carries_resource_attributes(self, make_meter: MakeMeter) -> None:
        meter, reader, _ = make_meter()
        meter.create_counter("hits").add(1)

        family = scrape(reader)["target"]
        text_family = scrape_text(reader)["target_info"]

        assert family.type == "info"
        (info,) = family.samples
        assert (info.name, info.value) == ("target_info", 1)
        assert info.labels == {"service_name": "modellens-test", "service_instance_id": "instance-1"}
        assert (text_family.type, text_family.samples[0].labels) == ("gauge", info.labels)

    def test_target_info_can_be_turned_off(self, make_meter: MakeMeter) -> None:
        meter, reader, _ = make_meter(reader=OpenMetricsReader(resource_as_target_info=False))
        meter.create_counter("hits").add(1)

        assert set(scrape(reader)) == {"hits"}


class TestLifecycle:
    """A reader with nothing to show still answers with a valid, empty document."""

    def test_nothing_recorded(self, make_meter: MakeMeter) -> None:
        meter, reader, _ = make_meter()
        meter.create_counter("never.used")

        assert reader.render(PROMETHEUS_ACCEPT) == (b"# EOF\n", CONTENT_TYPE_OPENMETRICS)
        assert reader.render() == (b"", CONTENT_TYPE_TEXT)

    def test_after_provider_shutdown(self) -> None:
        reader = OpenMetricsReader()
        provider = MeterProvider(resource=RESOURCE, metric_readers=[reader])
        provider.get_meter("modellens.test").create_counter("hits").add(1)
        assert b"hits_total 1" in reader.render()[0]

        provider.shutdown()

        assert reader.render(PROMETHEUS_ACCEPT)[0] == b"# EOF\n"

    def test_unregistered_reader(self) -> None:
        assert OpenMetricsReader().render(PROMETHEUS_ACCEPT)[0] == b"# EOF\n"


class TestExemplars:
    """Histogram buckets and counter totals carry the trace and span of a sampled span (OpenMetrics only)."""

    def test_histogram_in_sampled_span_has_exemplar_on_its_bucket(self, make_meter: MakeMeter, tracer: Tracer) -> None:
        meter, reader, _ = make_meter()
        histogram = meter.create_histogram("inference.duration", unit="s", explicit_bucket_boundaries_advisory=BOUNDS)
        with tracer.start_as_current_span("predict") as span:
            histogram.record(0.3, {"model.name": "iris"})
        context = span.get_span_context()
        before = time.time()

        family = scrape(reader)["inference_duration_seconds"]

        exemplar = exemplar_of(bucket(family, "inference_duration_seconds", "0.5"))
        assert exemplar.labels == {
            "trace_id": f"{context.trace_id:032x}",
            "span_id": f"{context.span_id:016x}",
        }
        assert exemplar.value == 0.3
        assert isinstance(exemplar.timestamp, Timestamp)
        assert before - 60 < float(exemplar.timestamp) <= before
        others = [s for s in samples(family, "inference_duration_seconds_bucket") if s.labels["le"] != "0.5"]
        assert all(s.exemplar is None for s in others)

    @pytest.mark.parametrize(("value", "le"), [(0.1, "0.1"), (0.05, "0.1"), (1.0, "1.0"), (7.5, "+Inf")])
    def test_exemplar_bucket_is_the_smallest_bound_not_below_the_value(
        self, make_meter: MakeMeter, tracer: Tracer, value: float, le: str
    ) -> None:
        meter, reader, _ = make_meter()
        histogram = meter.create_histogram("latency", explicit_bucket_boundaries_advisory=BOUNDS)
        with tracer.start_as_current_span("work"):
            histogram.record(value)

        family = scrape(reader)["latency"]

        carrying = [s.labels["le"] for s in samples(family, "latency_bucket") if s.exemplar is not None]
        assert carrying == [le]
        assert exemplar_of(bucket(family, "latency", le)).value == value

    def test_one_exemplar_per_bucket_the_latest(self, make_meter: MakeMeter, tracer: Tracer) -> None:
        meter, reader, _ = make_meter()
        histogram = meter.create_histogram("latency", explicit_bucket_boundaries_advisory=BOUNDS)
        trace_ids = []
        for value in (0.2, 0.3, 0.9):
            with tracer.start_as_current_span("work") as span:
                histogram.record(value)
            trace_ids.append(f"{span.get_span_context().trace_id:032x}")

        family = scrape(reader)["latency"]

        assert exemplar_of(bucket(family, "latency", "0.5")).labels["trace_id"] == trace_ids[1]
        assert exemplar_of(bucket(family, "latency", "1.0")).labels["trace_id"] == trace_ids[2]

    def test_no_exemplar_outside_a_span_or_in_an_unsampled_one(
        self, make_meter: MakeMeter, unsampled_tracer: Tracer
    ) -> None:
        meter, reader, _ = make_meter()
        histogram = meter.create_histogram("latency", explicit_bucket_boundaries_advisory=BOUNDS)
        histogram.record(0.3)
        with unsampled_tracer.start_as_current_span("dropped"):
            histogram.record(0.7)

        body = reader.render(PROMETHEUS_ACCEPT)[0].decode()

        assert " # {" not in body
        assert all(s.exemplar is None for s in samples(family_named(body, "latency"), "latency_bucket"))

    def test_counter_total_carries_the_newest_exemplar(self, make_meter: MakeMeter, tracer: Tracer) -> None:
        meter, reader, _ = make_meter()
        counter = meter.create_counter("model.predictions", unit="{prediction}")
        with tracer.start_as_current_span("predict") as span:
            counter.add(4)

        (total,) = samples(scrape(reader)["model_predictions"], "model_predictions_total")

        assert exemplar_of(total).labels["trace_id"] == f"{span.get_span_context().trace_id:032x}"
        assert exemplar_of(total).value == 4

    def test_exemplars_outlive_the_collection_that_took_them(self, make_meter: MakeMeter, tracer: Tracer) -> None:
        """A push (collect_data) between two scrapes leaves the exemplars for the scrape, and newer ones win."""
        meter, reader, _ = make_meter()
        histogram = meter.create_histogram("latency", explicit_bucket_boundaries_advisory=BOUNDS)
        counter = meter.create_counter("hits")
        with tracer.start_as_current_span("first") as first:
            histogram.record(0.3)
            counter.add(1)
        pushed = reader.collect_data()
        assert pushed is not None
        (point,) = [
            p
            for r in pushed.resource_metrics
            for s in r.scope_metrics
            for m in s.metrics
            if m.name == "latency"
            for p in m.data.data_points
        ]
        assert [e.trace_id for e in point.exemplars] == [first.get_span_context().trace_id]

        family = scrape(reader)["latency"]  # the SDK's reservoir was emptied by the push: the reader kept it
        assert exemplar_of(bucket(family, "latency", "0.5")).labels["trace_id"] == (
            f"{first.get_span_context().trace_id:032x}"
        )
        (total,) = samples(scrape(reader)["hits"], "hits_total")
        assert exemplar_of(total).labels["trace_id"] == f"{first.get_span_context().trace_id:032x}"

        with tracer.start_as_current_span("second") as second:
            histogram.record(0.4)
            histogram.record(0.05)
        family = scrape(reader)["latency"]
        assert exemplar_of(bucket(family, "latency", "0.5")).labels["trace_id"] == (
            f"{second.get_span_context().trace_id:032x}"
        )
        assert exemplar_of(bucket(family, "latency", "0.1")).value == 0.05

    def test_text_format_has_no_exemplars(self, make_meter: MakeMeter, tracer: Tracer) -> None:
        meter, reader, _ = make_meter()
        histogram = meter.create_histogram("latency", explicit_bucket_boundaries_advisory=BOUNDS)
        with tracer.start_as_current_span("work"):
            histogram.record(0.3)

        body = reader.render()[0].decode()

        assert "#" not in body.replace("# TYPE", "").replace("# HELP", "")
        assert all(s.exemplar is None for f in parse_text(body) for s in f.samples)

    def test_filtered_attributes_join_the_exemplar_unless_too_long(self, make_meter: MakeMeter, tracer: Tracer) -> None:
        view = View(instrument_name="latency", attribute_keys={"http.route"})
        meter, reader, _ = make_meter(views=[view])
        histogram = meter.create_histogram("latency", explicit_bucket_boundaries_advisory=BOUNDS)
        with tracer.start_as_current_span("work"):
            histogram.record(0.3, {"http.route": "/a", "user.id": "u-1"})
            histogram.record(0.9, {"http.route": "/a", "user.id": "u" * 80})

        family = scrape(reader)["latency"]

        short = exemplar_of(bucket(family, "latency", "0.5")).labels
        assert short["user_id"] == "u-1"
        assert set(short) == {"trace_id", "span_id", "user_id"}
        assert set(exemplar_of(bucket(family, "latency", "1.0")).labels) == {"trace_id", "span_id"}

    def test_exemplar_without_trace_keeps_only_filtered_attributes(self, make_meter: MakeMeter) -> None:
        view = View(instrument_name="latency", attribute_keys=set())
        meter, reader, _ = make_meter(views=[view], exemplar_filter=AlwaysOnExemplarFilter())
        histogram = meter.create_histogram("latency", explicit_bucket_boundaries_advisory=BOUNDS)
        histogram.record(0.3, {"user.id": "u-1"})
        histogram.record(0.9)

        family = scrape(reader)["latency"]

        assert exemplar_of(bucket(family, "latency", "0.5")).labels == {"user_id": "u-1"}
        assert bucket(family, "latency", "1.0").exemplar is None


class TestEscaping:
    """Label values and help text with quotes, backslashes, newlines and non-ASCII survive both parsers."""

    NASTY: ClassVar[list[str]] = [
        'quote " here',
        "back\\slash",
        "new\nline",
        "ünïcödé ✓",
        "}{,=#",
        "\\n literal",
        "",
    ]

    @pytest.mark.parametrize("value", NASTY)
    def test_label_values_round_trip(self, make_meter: MakeMeter, tracer: Tracer, value: str) -> None:
        meter, reader, _ = make_meter()
        histogram = meter.create_histogram("latency", explicit_bucket_boundaries_advisory=BOUNDS)
        with tracer.start_as_current_span("work"):
            histogram.record(0.3, {"path": value, "other": "x"})

        openmetrics = bucket(scrape(reader)["latency"], "latency", "+Inf")
        text = bucket(scrape_text(reader)["latency"], "latency", "+Inf")

        assert openmetrics.labels == {"path": value, "other": "x", "le": "+Inf"}
        assert text.labels == openmetrics.labels

    def test_help_round_trips(self, make_meter: MakeMeter) -> None:
        meter, reader, _ = make_meter()
        description = 'Line one\nline "two" with a back\\slash'
        meter.create_counter("hits", description=description).add(1)

        assert scrape(reader)["hits"].documentation == description
        assert scrape_text(reader)["hits"].documentation == description


class TestPromtool:
    """`promtool check metrics` accepts a realistic document."""

    @staticmethod
    def promtool(body: bytes) -> tuple[int, str]:
        result = subprocess.run(
            [PROMTOOL, "check", "metrics"], input=body, capture_output=True, timeout=30, check=False
        )
        return result.returncode, (result.stdout + result.stderr).decode()

    def test_realistic_document_is_clean(self, make_meter: MakeMeter, tracer: Tracer) -> None:
        meter, reader, _ = make_meter()
        duration = meter.create_histogram(
            "http.server.request.duration",
            unit="s",
            description="Duration of HTTP server requests.",
            explicit_bucket_boundaries_advisory=[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
        )
        predictions = meter.create_counter("model.predictions", unit="{prediction}", description="Predictions.")
        memory = meter.create_up_down_counter("process.memory.usage", unit="By", description="Resident memory.")
        reference = meter.create_gauge("model.feature.reference", unit="1", description="Reference share.")

        def cpu(options: CallbackOptions) -> list[Observation]:
            return [Observation(0.42, {"cpu.mode": "user"})]

        meter.create_observable_gauge("process.cpu.utilization", [cpu], unit="1", description="CPU share.")
        for status, route in [(200, "/predict"), (200, "/health"), (422, "/predict")]:
            with tracer.start_as_current_span("request"):
                attributes: dict[str, AttributeValue] = {
                    "http.route": route,
                    "http.request.method": "POST",
                    "http.response.status_code": status,
                }
                duration.record(0.012 * status / 100, attributes)
                predictions.add(1, {"model.name": "iris", "model.version": "3"})
        memory.add(123_456_789)
        reference.set(0.3, {"feature": "petal_length", "bin": "0"})

        code, output = self.promtool(reader.render()[0])

        assert (code, output) == (0, "")

    def test_missing_help_is_a_lint_warning(self, make_meter: MakeMeter) -> None:
        meter, reader, _ = make_meter()
        meter.create_counter("undocumented").add(1)

        code, output = self.promtool(reader.render()[0])

        assert (code, output.strip()) == (3, "undocumented_total no help text")


class TestConcurrency:
    """Several threads rendering while others record never break a document or lose a count."""

    def test_concurrent_render_while_recording(self, make_meter: MakeMeter, tracer: Tracer) -> None:
        meter, reader, _ = make_meter()
        counter = meter.create_counter("work.items")
        histogram = meter.create_histogram("work.duration", unit="s", explicit_bucket_boundaries_advisory=BOUNDS)
        recorders, renderers, rounds = 4, 6, 200
        start = threading.Barrier(recorders + renderers)

        def record(worker: int) -> None:
            start.wait()
            for i in range(rounds):
                with tracer.start_as_current_span("item"):
                    counter.add(1, {"worker": str(worker)})
                    histogram.record(i / rounds, {"worker": str(worker)})

        def render(index: int) -> int:
            start.wait()
            accept = PROMETHEUS_ACCEPT if index % 2 else None
            for _ in range(rounds // 4):
                body = reader.render(accept)[0].decode()
                list(parse_openmetrics(body) if accept else parse_text(body))  # raises on a broken document
            return rounds // 4

        with ThreadPoolExecutor(recorders + renderers) as pool:
            recorded = [pool.submit(record, worker) for worker in range(recorders)]
            rendered = [pool.submit(render, index) for index in range(renderers)]
            assert [future.result(timeout=60) for future in rendered] == [rounds // 4] * renderers
            for future in recorded:
                future.result(timeout=60)

        family = scrape(reader)["work_items"]
        assert sum(s.value for s in samples(family, "work_items_total")) == recorders * rounds
        counts = samples(scrape(reader)["work_duration_seconds"], "work_duration_seconds_count")
        assert sum(s.value for s in counts) == recorders * rounds


class TestAcceptNegotiation:
    """OpenMetrics if the client names it with a q at least that of text/plain; Prometheus text otherwise."""

    @pytest.mark.parametrize(
        ("accept", "content_type"),
        [
            (PROMETHEUS_ACCEPT, CONTENT_TYPE_OPENMETRICS),
            (
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                CONTENT_TYPE_OPENMETRICS,
            ),
            (
                "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,"
                "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1",
                CONTENT_TYPE_OPENMETRICS,
            ),
            ("Application/OpenMetrics-Text; Version=1.0.0", CONTENT_TYPE_OPENMETRICS),
            ("*/*", CONTENT_TYPE_TEXT),
            (None, CONTENT_TYPE_TEXT),
            ("", CONTENT_TYPE_TEXT),
            ("text/plain;version=0.0.4", CONTENT_TYPE_TEXT),
            ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", CONTENT_TYPE_TEXT),
            ("application/openmetrics-text;q=0", CONTENT_TYPE_TEXT),
            ("text/plain,application/openmetrics-text;q=0.5", CONTENT_TYPE_TEXT),
            ("application/openmetrics-text;q=bogus", CONTENT_TYPE_TEXT),
        ],
    )
    def test_content_type(self, make_meter: MakeMeter, accept: str | None, content_type: str) -> None:
        meter, reader, _ = make_meter()
        meter.create_counter("hits").add(1)

        body, chosen = reader.render(accept)

        assert chosen == content_type
        assert body.endswith(b"# EOF\n") == (content_type == CONTENT_TYPE_OPENMETRICS)


@pytest.fixture
def metrics_server(make_meter: MakeMeter) -> Iterator[tuple[Meter, str]]:
    """A real HTTP /metrics endpoint backed by a fresh reader: yields (meter, host:port)."""
    meter, reader, _ = make_meter()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body, content_type = reader.render(self.headers.get("Accept"))
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield meter, f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
class TestPrometheusScrape:
    """A real Prometheus scraping with exemplar storage keeps our trace ids on the right series."""

    SERIES = "inference_duration_seconds_bucket"

    def test_prometheus_stores_exemplars(
        self, metrics_server: tuple[Meter, str], tracer: Tracer, tmp_path: Path
    ) -> None:
        meter, target = metrics_server
        histogram = meter.create_histogram("inference.duration", unit="s", explicit_bucket_boundaries_advisory=BOUNDS)
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
            f"scrape_configs: [{{job_name: svc, static_configs: [{{targets: ['{target}']}}]}}]\n"
        )
        api = f"http://127.0.0.1:{_free_port()}"
        command = [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address={api.removeprefix('http://')}",
            "--enable-feature=exemplar-storage",
        ]
        trace_ids: set[str] = set()
        with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as prometheus:
            try:
                stored = self.wait_for_exemplars(api, histogram, tracer, trace_ids)
            finally:
                prometheus.terminate()
                prometheus.wait(timeout=30)

        assert stored, "Prometheus stored no exemplar within the time limit"
        series, exemplar = stored[0]
        assert series["__name__"] == self.SERIES
        assert series["le"] == "0.5"
        assert exemplar["labels"]["trace_id"] in trace_ids
        assert len(exemplar["labels"]["span_id"]) == 16

    @classmethod
    def wait_for_exemplars(
        cls, api: str, histogram: Histogram, tracer: Tracer, trace_ids: set[str]
    ) -> list[tuple[dict[str, str], dict[str, Any]]]:
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            with tracer.start_as_current_span("predict") as span:
                histogram.record(0.3)
            trace_ids.add(f"{span.get_span_context().trace_id:032x}")
            time.sleep(0.5)
            now = time.time()
            query = f"{api}/api/v1/query_exemplars?query={cls.SERIES}&start={now - 300}&end={now}"
            try:
                with urllib.request.urlopen(query, timeout=5) as response:
                    data = json.load(response)["data"]
            except OSError:
                continue  # not listening yet
            found = [(group["seriesLabels"], exemplar) for group in data for exemplar in group["exemplars"]]
            if found:
                return found
        return []
