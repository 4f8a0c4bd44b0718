"""Exporters that ride out a telemetry backend outage: bounded waits, every dropped item counted, one log line each.

The SDK already exports on background threads with bounded queues, so a dead backend never blocks a request. What it
lacks is accounting: it drops a full queue's items one by one with a log line, and logs every failed batch (and
every retry) of every signal. Wrapping each exporter in a `Resilient*Exporter` turns that into:

- `otel.exporter.dropped` ({item}), a counter by `signal` (`traces`, `metrics`, `logs`) and `error.type`
  (`export_failed`: the backend refused or never answered; `queue_full`: the processor's queue overflowed while the
  exporter was stuck), from `register_instruments`;
- one warning when a signal's outage starts, with the SDK's last reason, and one line when it ends, with what it
  cost; the SDK's own per-batch lines are swallowed while the wrapper is exporting (only then);
- `abandon_if_failing()` for shutdown: a signal whose backend is down drops what is left at once instead of
  waiting one export timeout per remaining batch.

Recovery needs nothing: the processors keep calling `export` on schedule, and the first success ends the outage.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import structlog
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otel import _sdk

__all__ = [
    "DEFAULT_EXPORT_TIMEOUT_MS",
    "ExportHealth",
    "ResilientLogExporter",
    "ResilientMetricExporter",
    "ResilientSpanExporter",
    "export_timeout",
    "queue_drops",
    "register_instruments",
]

DEFAULT_EXPORT_TIMEOUT_MS = 10_000.0  # the specification's default for OTEL_EXPORTER_OTLP_TIMEOUT
_MAX_EXPORT_TIMEOUT_MS = 60_000.0  # a longer wait only delays shutdown; it never saves data the queue would keep
_REASON_CHARS = 300

_log = structlog.get_logger("otel.resilience")

# The batch processors report an overflowing queue only through a log line, one per dropped item (`otel._sdk`).
_QUEUE_SIGNALS = ("traces", "logs")


def export_timeout(env: Mapping[str, str], signal: str) -> float:
    """The OTLP export timeout for `signal` (`TRACES`, `METRICS`, `LOGS`) in seconds, as the specification says.

    `OTEL_EXPORTER_OTLP_<SIGNAL>_TIMEOUT`, else `OTEL_EXPORTER_OTLP_TIMEOUT`, in milliseconds (the Python exporters
    read them as seconds, open-telemetry/opentelemetry-python#4044: `10000` would wait almost three hours), capped
    at 60 s; 10 s when unset. An invalid value is a `ValueError` naming the variable.
    """
    for name in (f"OTEL_EXPORTER_OTLP_{signal}_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"):
        raw = env.get(name, "").strip()
        if raw:
            try:
                millis = float(raw)
            except ValueError:
                raise ValueError(f"{name} must be a number of milliseconds, got {raw!r}") from None
            if not math.isfinite(millis) or millis <= 0:
                raise ValueError(f"{name} must be a positive number of milliseconds, got {raw!r}")
            return min(millis, _MAX_EXPORT_TIMEOUT_MS) / 1000
    return DEFAULT_EXPORT_TIMEOUT_MS / 1000


class ExportHealth:
    """One signal's export record: items delivered and dropped, and whether an outage is going on. Thread-safe."""

    def __init__(self, signal: str) -> None:
        self.signal = signal
        self._lock = threading.Lock()
        self.exported = 0  # items the backend accepted
        self.dropped = 0  # items in exports that failed (or were abandoned at shutdown)
        self.failed_exports = 0
        self.outages = 0
        self._outage_started: float | None = None
        self._outage_dropped = 0
        self._abandon = False
        self._reason: str | None = None  # the SDK's last complaint during the current export

    @property
    def failing(self) -> bool:
        """True from a failed export until the next successful one."""
        return self._outage_started is not None

    def abandon_if_failing(self) -> None:
        """From now on, while the backend is down, drop batches at once instead of trying (for a fast shutdown)."""
        self._abandon = True

    def _should_skip(self) -> bool:
        return self._abandon and self.failing

    def _note(self, message: str) -> None:
        if self._reason is None:  # the first line of an export says why ("Connection refused", a status code)
            self._reason = message[:_REASON_CHARS]

    def record(self, items: int, ok: bool, error: str | None = None) -> None:
        """Account for one export of `items`; log when this starts or ends an outage."""
        reason, self._reason = error or self._reason, None
        with self._lock:
            if ok:
                self.exported += items
                if self._outage_started is None:
                    return
                seconds, dropped = time.monotonic() - self._outage_started, self._outage_dropped
                self._outage_started, self._outage_dropped = None, 0
            else:
                self.dropped += items
                self.failed_exports += 1
                self._outage_dropped += items
                if self._outage_started is not None:
                    return
                self._outage_started = time.monotonic()
                self.outages += 1
        if ok:
            _log.info("telemetry export recovered", signal=self.signal, outage_s=round(seconds, 3), dropped=dropped)
        else:
            # Once per outage: from here on, dropped items are only counted (otel.exporter.dropped).
            _log.warning("telemetry export failing", signal=self.signal, reason=reason or "export failed")


# --- the SDK's own export logs ----------------------------------------------------------------------------------
class _ExportLogCapture(logging.Filter):
    """Swallows records an exporter logs while a wrapper is exporting on this thread, keeping the last as the reason.

    Attached to the wrapped exporters' module loggers. Records outside a wrapped export pass untouched.
    """

    def __init__(self) -> None:
        super().__init__()
        self.current = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        health: ExportHealth | None = getattr(self.current, "health", None)
        if health is None:
            return True
        health._note(record.getMessage())
        return False


class _QueueDrops(logging.Filter):
    """Counts (and silences) the batch processors' "Queue full, dropping …" lines: one per dropped item."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.counts: dict[str, int] = dict.fromkeys(_QUEUE_SIGNALS, 0)

    def filter(self, record: logging.LogRecord) -> bool:
        signal = _sdk.queue_drop_signal(record)
        if signal is None:
            return True
        with self._lock:
            self.counts[signal] = self.counts.get(signal, 0) + 1
        return False


_capture = _ExportLogCapture()
_queue_drops = _QueueDrops()
_hooks_lock = threading.Lock()


def _hook_logs(exporter: object) -> None:
    """Attach the capture to the loggers of `exporter`'s classes, and the queue counter to the processors'."""
    with _hooks_lock:
        for cls in type(exporter).__mro__:  # a subclass's module, and the SDK exporter's whose client does the logging
            if cls.__module__ in ("builtins", "abc"):
                continue
            logger = logging.getLogger(cls.__module__)
            if _capture not in logger.filters:
                logger.addFilter(_capture)
        _sdk.watch_queue_drops(_queue_drops)


def queue_drops() -> dict[str, int]:
    """Items the batch processors of this process dropped from full queues, by signal."""
    with _queue_drops._lock:
        return dict(_queue_drops.counts)


class _Exporting:
    """Marks this thread as exporting for `health`, so the SDK's lines in the meantime become its reason."""

    __slots__ = ("health",)

    def __init__(self, health: ExportHealth) -> None:
        self.health = health

    def __enter__(self) -> None:
        _capture.current.health = self.health

    def __exit__(self, *exc: object) -> None:
        _capture.current.health = None


# --- the wrappers -----------------------------------------------------------------------------------------------
class ResilientSpanExporter(SpanExporter):
    """Wraps a span exporter: failures are counted and logged once per outage, exceptions become failures."""

    def __init__(self, inner: SpanExporter, health: ExportHealth | None = None) -> None:
        self.inner = inner
        self.health = health or ExportHealth("traces")
        _hook_logs(inner)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        ok, error = _export(self.health, lambda: self.inner.export(spans) is SpanExportResult.SUCCESS)
        self.health.record(len(spans), ok, error)
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class ResilientLogExporter(LogRecordExporter):
    """Wraps a log record exporter, as `ResilientSpanExporter` does spans."""

    def __init__(self, inner: LogRecordExporter, health: ExportHealth | None = None) -> None:
        self.inner = inner
        self.health = health or ExportHealth("logs")
        _hook_logs(inner)

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        ok, error = _export(self.health, lambda: self.inner.export(batch) is LogRecordExportResult.SUCCESS)
        self.health.record(len(batch), ok, error)
        return LogRecordExportResult.SUCCESS if ok else LogRecordExportResult.FAILURE

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class ResilientMetricExporter(MetricExporter):
    """Wraps a metric exporter (its preferred temporality and aggregation carry over); items are data points."""

    def __init__(self, inner: MetricExporter, health: ExportHealth | None = None) -> None:
        super().__init__(
            preferred_temporality=_sdk.preferred_temporality(inner),
            preferred_aggregation=_sdk.preferred_aggregation(inner),
        )
        self.inner = inner
        self.health = health or ExportHealth("metrics")
        _hook_logs(inner)

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        ok, error = _export(
            self.health,
            lambda: (
                self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs) is MetricExportResult.SUCCESS
            ),
        )
        self.health.record(_data_points(metrics_data), ok, error)
        return MetricExportResult.SUCCESS if ok else MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)


def _export(health: ExportHealth, call: Any) -> tuple[bool, str | None]:
    if health._should_skip():
        return False, "abandoned at shutdown"
    try:
        with _Exporting(health):
            return bool(call()), None
    except Exception as error:  # an exporter bug or a transport surprise: a failed export, not a dead thread
        return False, f"{type(error).__name__}: {error}"[:_REASON_CHARS]


def _data_points(data: MetricsData) -> int:
    return sum(
        len(metric.data.data_points)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    )


# --- the instrument ---------------------------------------------------------------------------------------------
def register_instruments(meter: Meter, healths: Iterable[ExportHealth]) -> None:
    """`otel.exporter.dropped` ({item}) by `signal` and `error.type`, for the exporters behind `healths`.

    At most six series (three signals × two reasons), all present from start-up at zero.
    """
    watched = list(healths)

    def observe(_options: CallbackOptions) -> Iterable[Observation]:
        queued = queue_drops()
        for health in watched:
            yield Observation(health.dropped, {"signal": health.signal, "error.type": "export_failed"})
            if health.signal in queued:
                yield Observation(queued[health.signal], {"signal": health.signal, "error.type": "queue_full"})

    if watched:
        meter.create_observable_counter(
            "otel.exporter.dropped",
            callbacks=[observe],
            unit="{item}",
            description="Telemetry items dropped: exports that failed, or a full processor queue.",
        )
