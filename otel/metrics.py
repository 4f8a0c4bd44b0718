"""Metrics: a MeterProvider with second-based histogram buckets and exemplars from sampled spans."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import Resource

__all__ = ["SECONDS_BUCKETS", "setup_metrics"]

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
