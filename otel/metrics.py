"""Metrics: a MeterProvider with second-based histogram buckets and exemplars from sampled spans."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader, MetricsData
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import Resource

__all__ = ["SECONDS_BUCKETS", "MetricPusher", "setup_metrics"]

_log = logging.getLogger(__name__)

# The SDK's default boundaries (0, 5, 10, 25 ... 10000) are meant for milliseconds: every sub-second latency would
# land in the first buckets and histogram_quantile() would be meaningless. Model inference takes well under a
# millisecond, HTTP requests a few milliseconds, so the low end is finer than the semantic-convention advisory.
SECONDS_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip


def setup_metrics(resource: Resource, readers: Sequence[MetricReader], views: Sequence[View] = ()) -> MeterProvider:
    """Return a MeterProvider feeding `readers`.

    Histograms get their buckets from the instrument's advisory boundaries: latency instruments pass
    `SECONDS_BUCKETS`, others (label delays in hours, batch sizes) their own. `views` can override them.
    Exemplars follow `OTEL_METRICS_EXEMPLAR_FILTER` (default `trace_based`: a measurement taken inside a sampled
    span keeps that span's trace and span id), which is what links a latency bucket to a trace.
    Every reader processes every measurement, so keep the number of readers small.
    """
    return MeterProvider(resource=resource, metric_readers=list(readers), views=list(views))


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
