"""Metrics: a MeterProvider with in-process histograms, second-based buckets and exemplars from sampled spans."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.metrics import (
    CallbackT,
    Counter,
    Histogram,
    NoOpMeter,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.metrics import Meter as APIMeter
from opentelemetry.sdk.metrics import ExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader, MetricsData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.util.types import Attributes

from otel import environment
from otel._sdk import Gauge
from otel.histograms import HistogramProducer

__all__ = ["SECONDS_BUCKETS", "MetricPusher", "setup_metrics"]

_log = logging.getLogger(__name__)

# The SDK's default boundaries (0, 5, 10, 25 ... 10000) are meant for milliseconds: every sub-second latency would
# land in the first buckets and histogram_quantile() would be meaningless. Model inference takes well under a
# millisecond, HTTP requests a few milliseconds, so the low end is finer than the semantic-convention advisory.
SECONDS_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip


def setup_metrics(
    resource: Resource, readers: Sequence[MetricReader], *, exemplar_filter: ExemplarFilter | None = None
) -> MeterProvider:
    """Return a MeterProvider feeding `readers`, whose histograms are aggregated in process (`otel.histograms`).

    Histograms get their buckets from the instrument's advisory boundaries: latency instruments pass
    `SECONDS_BUCKETS`, others (label delays in hours, batch sizes) their own. Exemplars follow `exemplar_filter`,
    by default what `OTEL_METRICS_EXEMPLAR_FILTER` in `os.environ` says (`trace_based` when unset: a measurement
    taken inside a sampled span keeps that span's trace and span id), which is what links a latency bucket to a
    trace.
    Every reader processes every measurement of the SDK's instruments, so keep the number of readers small: one
    `OpenMetricsReader`, whose collections `MetricPusher` also pushes. Each reader must take producers
    (`add_producer`), or it would never see the histograms.
    """
    if exemplar_filter is None:
        exemplar_filter = environment.exemplar_filter(os.environ)
    histograms = HistogramProducer(resource, exemplar_filter)
    for reader in readers:
        add_producer = getattr(reader, "add_producer", None)
        if add_producer is None:
            raise TypeError(f"{type(reader).__name__} cannot collect in-process histograms; use OpenMetricsReader")
        add_producer(histograms.produce)
    return _MeterProvider(histograms, resource=resource, metric_readers=list(readers), exemplar_filter=exemplar_filter)


class _MeterProvider(MeterProvider):
    """The SDK's MeterProvider, except that its meters hand out in-process histograms."""

    def __init__(self, histograms: HistogramProducer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._histograms = histograms
        self._wrapped: dict[InstrumentationScope, _Meter] = {}
        self._wrapped_lock = threading.Lock()

    def get_meter(
        self, name: str, version: str | None = None, schema_url: str | None = None, attributes: Attributes = None
    ) -> APIMeter:
        meter = super().get_meter(name, version, schema_url, attributes)
        if isinstance(meter, NoOpMeter):  # disabled, shut down, or no name: the SDK has said why
            return meter
        scope = InstrumentationScope(name, version, schema_url, attributes)
        with self._wrapped_lock:
            wrapped = self._wrapped.get(scope)
            if wrapped is None:
                wrapped = self._wrapped[scope] = _Meter(meter, scope, self._histograms)
            return wrapped


class _Meter(APIMeter):
    """The SDK's Meter for every instrument but histograms."""

    def __init__(self, meter: APIMeter, scope: InstrumentationScope, histograms: HistogramProducer) -> None:
        super().__init__(scope.name, scope.version, scope.schema_url)
        self._meter, self._scope, self._histograms = meter, scope, histograms

    def create_histogram(
        self,
        name: str,
        unit: str = "",
        description: str = "",
        *,
        explicit_bucket_boundaries_advisory: Sequence[float] | None = None,
    ) -> Histogram:
        return self._histograms.create_histogram(
            self._scope, name, unit, description, explicit_bucket_boundaries_advisory
        )

    def create_counter(self, name: str, unit: str = "", description: str = "") -> Counter:
        return self._meter.create_counter(name, unit, description)

    def create_up_down_counter(self, name: str, unit: str = "", description: str = "") -> UpDownCounter:
        return self._meter.create_up_down_counter(name, unit, description)

    def create_gauge(self, name: str, unit: str = "", description: str = "") -> Gauge:
        return self._meter.create_gauge(name, unit, description)

    def create_observable_counter(
        self, name: str, callbacks: Sequence[CallbackT] | None = None, unit: str = "", description: str = ""
    ) -> ObservableCounter:
        return self._meter.create_observable_counter(name, callbacks, unit, description)

    def create_observable_up_down_counter(
        self, name: str, callbacks: Sequence[CallbackT] | None = None, unit: str = "", description: str = ""
    ) -> ObservableUpDownCounter:
        return self._meter.create_observable_up_down_counter(name, callbacks, unit, description)

    def create_observable_gauge(
        self, name: str, callbacks: Sequence[CallbackT] | None = None, unit: str = "", description: str = ""
    ) -> ObservableGauge:
        return self._meter.create_observable_gauge(name, callbacks, unit, description)


class MetricPusher:
    """Push what `collect` returns to `exporter` every `interval` seconds, and once more at shutdown.

    It stands in for a second (PeriodicExporting) reader: `collect` is the `/metrics` reader's `collect_data`,
    so every measurement is aggregated once for both paths instead of once per reader, and both get exemplars.
    """

    def __init__(
        self,
        collect: Callable[[], MetricsData | None],
        exporter: MetricExporter,
        *,
        interval: float = 60.0,
        timeout: float = 30.0,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"the metric export interval must be positive, got {interval} s")
        self._collect, self._exporter = collect, exporter
        self._interval, self._timeout = interval, timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="otel-metric-push", daemon=True)
        self._thread.start()

    def push(self) -> None:
        """Collect and export now; a failure is logged (the exporter counts it) and the next push goes on."""
        try:
            data = self._collect()
            if data is not None:
                self._exporter.export(data, timeout_millis=self._timeout * 1000)
        except Exception:  # an exporter bug must not end the pushes
            _log.warning("metric push failed", exc_info=True)

    def shutdown(self) -> None:
        """Stop the thread, push a last time (what happened since the last push) and shut the exporter down."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        self.push()
        self._exporter.shutdown()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.push()
