"""OTLP/HTTP exporters for spans and logs that encode with `otel._wire` (cheaper than the SDK's encoder:
micro-benchmarks `otlp_encode_per_span` against `otlp_encode_per_span_sdk`, `benchmarks/micro.py`).

They are the SDK's exporters — configuration from the `OTEL_EXPORTER_OTLP_*` variables, the HTTP client, retries,
size limits and self-metrics all stay the SDK's — with only the encoding step replaced. The SDK's export steps
around the encoder come from `otel._sdk.otlp_http_steps`; if a future SDK release changes them, these exporters
fall back to the SDK's own `export` (tests compare both encodings).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from otel import _sdk, _wire

__all__ = ["FastOTLPLogExporter", "FastOTLPSpanExporter"]

_log = logging.getLogger(__name__)


def _export(steps: _sdk.OTLPHTTPSteps, items: Sequence[Any], encode: Callable[[Sequence[Any]], bytes]) -> bool:
    """The SDK exporters' export, with our encoder: True on success."""
    if steps.shut_down:
        return False
    with steps.export_operation(len(items)) as result:
        try:
            data = encode(items)
        except Exception as error:  # a value the encoder cannot represent: drop the batch, never crash
            _log.error("failed to encode an OTLP batch: %s", error)
            result.error = error
            return False
        if steps.too_large(data):
            _log.warning(
                "dropping an OTLP batch of %d bytes: over max_request_size %d", len(data), steps.max_request_size
            )
            result.error = ValueError("request too large")
            return False
        outcome = steps.send(data)
        if not outcome.success:
            result.error = outcome.error
            return False
    return True


class FastOTLPSpanExporter(OTLPSpanExporter):
    """`OTLPSpanExporter` encoding with `otel._wire.encode_spans`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._steps = _sdk.otlp_http_steps(self)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._steps is None:
            return super().export(spans)
        ok = _export(self._steps, spans, _wire.encode_spans)
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE


class FastOTLPLogExporter(OTLPLogExporter):
    """`OTLPLogExporter` encoding with `otel._wire.encode_logs`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._steps = _sdk.otlp_http_steps(self)

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        if self._steps is None:
            return super().export(batch)
        ok = _export(self._steps, batch, _wire.encode_logs)
        return LogRecordExportResult.SUCCESS if ok else LogRecordExportResult.FAILURE
