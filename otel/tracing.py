"""Traces: a TracerProvider that batches spans to an exporter."""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import Sampler

from otel.environment import BatchSettings

__all__ = ["setup_tracing"]


def setup_tracing(
    resource: Resource,
    exporter: SpanExporter | None = None,
    *,
    sampler: Sampler | None = None,
    batch: bool = True,
    batch_settings: BatchSettings | None = None,
) -> TracerProvider:
    """Return a TracerProvider exporting to `exporter` (none: spans are sampled and timed but go nowhere).

    Left out, the sampler and the batch processor's bounds are what the SDK reads from `os.environ`
    (`OTEL_TRACES_SAMPLER[_ARG]`, parent-based always-on when unset; `OTEL_BSP_*`); `Telemetry.from_env` passes
    both, read from its mapping (`otel.environment`). The queue is bounded, so an unreachable backend drops spans
    instead of growing memory or blocking requests. `batch=False` exports each span synchronously, for tests with
    in-memory exporters.
    """
    provider = TracerProvider(resource=resource, sampler=sampler)
    if exporter is not None:
        options = {} if batch_settings is None else batch_settings.as_kwargs()
        processor = BatchSpanProcessor(exporter, **options) if batch else SimpleSpanProcessor(exporter)
        provider.add_span_processor(processor)
    return provider
