"""Traces: a TracerProvider that batches spans to an exporter."""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import Sampler

__all__ = ["setup_tracing"]


def setup_tracing(
    resource: Resource,
    exporter: SpanExporter | None = None,
    *,
    sampler: Sampler | None = None,
    batch: bool = True,
) -> TracerProvider:
    """Return a TracerProvider exporting to `exporter` (none: spans are sampled and timed but go nowhere).

    The sampler defaults to what `OTEL_TRACES_SAMPLER`/`OTEL_TRACES_SAMPLER_ARG` say (parent-based always-on when
    unset). The batch processor's queue and timeouts come from the `OTEL_BSP_*` variables: its queue is bounded, so
    an unreachable backend drops spans instead of growing memory or blocking requests. `batch=False` exports each
    span synchronously, for tests with in-memory exporters.
    """
    provider = TracerProvider(resource=resource, sampler=sampler)
    if exporter is not None:
        processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        provider.add_span_processor(processor)
    return provider
