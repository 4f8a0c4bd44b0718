"""The one module that touches OpenTelemetry SDK internals: private attributes, private names and log text.

Everything here was written against opentelemetry-sdk / -api / -exporter-otlp-proto-http 1.45.2, the line
`pyproject.toml` pins (`~=1.45.2`). Each access is one small function or class saying what it relies on and what
upstream change would let it go; each has a canary in `tests/test_sdk.py` that checks, against a real SDK object,
that it still does what we rely on, and fails naming the access when a release changes its shape. To move the pin:
run `tests/test_sdk.py` on the new release first, fix what it names here, then move the pins and the canaries
together. Code that uses SDK internals elsewhere in `otel/` is a bug.

Accessors are bound once, when the object that needs them is built (an exporter, a log handler, a metric exporter
wrapper), so no record or emit path goes through this module. Two run per item, off the request path:
`attribute_items` in the OTLP encoder (imported by name, one call per attribute mapping) and `queue_drop_signal`
in the log filter that counts queue drops.

Pieces of the SDK that `otel/` replaces without touching anything private (so with no canary of their own; the
tests compare them with the SDK's output) and what upstream change would retire each:
- the histogram record path (`otel/histograms.py`): no upstream issue found for a cheaper `Histogram.record`
  (related, not the same: open-telemetry/opentelemetry-python#4260, faster exemplar offers);
- the OTLP protobuf encoder (`otel/_wire.py`): no upstream issue found for a faster encoder or an encoder hook;
- the Prometheus exposition with exemplars (`otel/openmetrics.py`): open-telemetry/opentelemetry-python#4178
  (histogram exemplars in the Prometheus exporter, open; it fixes #2407), #4228 for gauge exemplars.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, ItemsView, Mapping
from contextlib import AbstractContextManager
from typing import Any

from opentelemetry.metrics import _Gauge as _APIGauge
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import _Gauge as _SDKGauge
from opentelemetry.sdk.metrics.export import AggregationTemporality, MetricExporter, MetricReader, MetricsData
from opentelemetry.sdk.metrics.view import Aggregation

__all__ = [
    "QUEUE_LOGGER",
    "Gauge",
    "OTLPHTTPSteps",
    "PullMetricReader",
    "SDKGauge",
    "attribute_items",
    "batch_queue",
    "otlp_http_steps",
    "preferred_aggregation",
    "preferred_temporality",
    "queue_drop_signal",
    "watch_queue_drops",
]


# --- metrics ----------------------------------------------------------------------------------------------------
# The synchronous gauge: stable in the specification, still underscored in opentelemetry-api and -sdk 1.45
# (`opentelemetry.metrics._Gauge`, `opentelemetry.sdk.metrics._Gauge`, both in their `__all__`). These names go
# when the gauge is public upstream: open-telemetry/opentelemetry-python#3363 (tracking its stabilisation).
Gauge = _APIGauge  # the API type `Meter.create_gauge` returns
SDKGauge = _SDKGauge  # the SDK instrument class, a key of a reader's preferred temporality


class PullMetricReader(MetricReader):
    """A MetricReader whose `collect()` hands the collected data to `receive`, on the collecting thread.

    Relies on (opentelemetry-sdk 1.45): `MetricReader.collect` ends in the abstract, private `_receive_metrics`,
    the SDK's own extension point for readers (its Prometheus and in-memory readers implement it). It goes with a
    public receive hook (no upstream issue found), or with the SDK's Prometheus reader writing exemplars
    (open-telemetry/opentelemetry-python#4178), which is why `otel.openmetrics` has a reader of its own.
    """

    def receive(self, metrics_data: MetricsData) -> None:
        """Called by `collect()` with what it collected."""
        raise NotImplementedError

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        self.receive(metrics_data)


def preferred_temporality(exporter: MetricExporter) -> dict[type, AggregationTemporality] | None:
    """The temporality `exporter` was built to prefer, by instrument class (None: the defaults), for a wrapper.

    Relies on (opentelemetry-sdk 1.45): `MetricExporter.__init__` keeps its `preferred_temporality` argument as the
    private `_preferred_temporality`, which `PeriodicExportingMetricReader` reads. It goes with a public property
    (no upstream issue found).
    """
    return exporter._preferred_temporality


def preferred_aggregation(exporter: MetricExporter) -> dict[type, Aggregation] | None:
    """The aggregation `exporter` was built to prefer, by instrument class (as `preferred_temporality`).

    Relies on (opentelemetry-sdk 1.45): the private `_preferred_aggregation`. No upstream issue found.
    """
    return exporter._preferred_aggregation


# --- OTLP/HTTP exporters ----------------------------------------------------------------------------------------
class OTLPHTTPSteps:
    """What the SDK's OTLP/HTTP span and log exporters do around encoding, for an exporter that encodes itself.

    Relies on (opentelemetry-exporter-otlp-proto-http 1.45): `export` checks the private `_shutdown` flag, wraps
    the export in `_metrics.export_operation(count)` (the exporter's self-metrics; a context manager yielding a
    result whose `error` marks a failure), refuses a request over `_max_request_size` bytes (0 or less: no limit),
    and sends the bytes with `_client.export(data)` (the HTTP client: compression, retries, timeout), which returns
    a result with `success` and `error`. It goes with an encoder hook on the exporters (no upstream issue found).
    """

    __slots__ = ("_exporter", "export_operation", "max_request_size", "send")

    def __init__(self, exporter: Any) -> None:
        self._exporter = exporter
        self.export_operation: Callable[[int], AbstractContextManager[Any]] = exporter._metrics.export_operation
        self.max_request_size: int = exporter._max_request_size
        self.send: Callable[[bytes], Any] = exporter._client.export
        if not hasattr(exporter, "_shutdown"):
            raise AttributeError("the exporter has no _shutdown flag")

    @property
    def shut_down(self) -> bool:
        """True once the exporter has been shut down."""
        return bool(self._exporter._shutdown)

    def too_large(self, data: bytes) -> bool:
        """True if the exporter would refuse `data` as over its request size limit."""
        return 0 < (self.max_request_size or 0) < len(data)


def otlp_http_steps(exporter: Any) -> OTLPHTTPSteps | None:
    """The export steps of an SDK OTLP/HTTP exporter, or None if this release does not have them (the caller then
    falls back to the SDK's own `export`)."""
    try:
        return OTLPHTTPSteps(exporter)
    except AttributeError:
        return None


# --- logs -------------------------------------------------------------------------------------------------------
def batch_queue(processor: BatchLogRecordProcessor | None) -> Callable[[ReadableLogRecord], None] | None:
    """The batch queue's `emit`, which `BatchLogRecordProcessor.on_emit` ends in; None if this SDK hides it.

    Relies on (opentelemetry-sdk 1.45): the processor's private `_batch_processor` (the shared `BatchProcessor`),
    whose `emit(readable)` queues a `ReadableLogRecord` (dropping the oldest when full, and logging so). If a later
    SDK renames it, the log bridge falls back to the OpenTelemetry handler: slower, the same records. It goes with
    a cheaper public emit path for pre-built records (no upstream issue found).
    """
    inner = getattr(processor, "_batch_processor", None)
    emit = getattr(inner, "emit", None)
    return emit if callable(emit) else None


# The logger the SDK's batch processors report a full queue to, once per dropped item.
QUEUE_LOGGER = "opentelemetry.sdk._shared_internal"
_QUEUE_FULL_MESSAGE = "Queue full, dropping %s."
_QUEUE_SIGNALS = {"Span": "traces", "Log": "logs"}


def watch_queue_drops(watcher: logging.Filter) -> None:
    """Put `watcher` first among the batch processors' logger's filters, and let it see warnings.

    Relies on (opentelemetry-sdk 1.45): the batch span and log processors have no drop counter; `BatchProcessor.emit`
    logs `"Queue full, dropping %s."` (with "Span" or "Log") at WARNING to the logger `QUEUE_LOGGER`, which carries
    the SDK's `DuplicateFilter` (it hides repeats within 20 s, so the watcher must come before it). It goes when the
    SDK counts drops itself: open-telemetry/opentelemetry-python#3152 (open). Release 1.45 already has an opt-in
    `otel.sdk.processor.{span,log}.processed` counter with `error.type=queue_full` (behind
    `OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED`), which could feed `otel.exporter.dropped` once it is on by default.
    """
    logger = logging.getLogger(QUEUE_LOGGER)
    if watcher not in logger.filters:
        logger.filters.insert(0, watcher)
        if logger.getEffectiveLevel() > logging.WARNING:
            logger.setLevel(logging.WARNING)  # the line must be created to be counted; the watcher never shows it


def queue_drop_signal(record: logging.LogRecord) -> str | None:
    """`traces`, `logs` (or `other`) if `record` is a batch processor's queue-full line, else None.

    Relies on the log text described in `watch_queue_drops` (opentelemetry-sdk 1.45).
    """
    if record.msg != _QUEUE_FULL_MESSAGE:
        return None
    args = record.args if isinstance(record.args, tuple) else ()
    return _QUEUE_SIGNALS.get(str(args[0]) if args else "", "other")


# --- attributes -------------------------------------------------------------------------------------------------
def attribute_items(attributes: Mapping[str, Any]) -> ItemsView[str, Any]:
    """The items of an attribute mapping, straight from the plain dict inside the SDK's `BoundedAttributes`.

    Relies on (opentelemetry-api 1.45): `BoundedAttributes` (a log record's and a span event's attributes; a finished
    span's are a mappingproxy) keeps its items in the private `_dict`; iterating that
    skips the Mapping ABC's per-key `__getitem__` (a third of a log record's encoding, `otlp_encode_per_log_record`
    in `benchmarks/micro.py`). Any other mapping is iterated as a mapping. It goes with `BoundedAttributes.items()`
    returning the dict's own view (no upstream issue found).
    """
    plain = getattr(attributes, "_dict", None)
    return plain.items() if isinstance(plain, dict) else attributes.items()
