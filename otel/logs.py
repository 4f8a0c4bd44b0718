"""Logs: structlog JSON lines on stdout, the same records bridged into OpenTelemetry logs."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import IO, Any

import structlog
from opentelemetry import trace
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = ["OTelBridgeHandler", "add_trace_context", "configure_logging", "setup_logs"]

# Keys that structlog adds for the console line but that an OTel log record carries natively (severity, time,
# trace context) or that are the body itself.
_NATIVE_KEYS = frozenset({"event", "level", "logger", "timestamp", "trace_id", "span_id", "exc_info"})


def setup_logs(resource: Resource, exporter: LogRecordExporter | None = None, *, batch: bool = True) -> LoggerProvider:
    """Return a LoggerProvider exporting to `exporter` (batched, bounded by the `OTEL_BLRP_*` variables)."""
    provider = LoggerProvider(resource=resource)
    if exporter is not None:
        processor = BatchLogRecordProcessor(exporter) if batch else SimpleLogRecordProcessor(exporter)
        provider.add_log_record_processor(processor)
    return provider


def add_trace_context(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: add the active span's `trace_id` and `span_id` (hex), if there is one."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict["trace_id"] = format(context.trace_id, "032x")
        event_dict["span_id"] = format(context.span_id, "016x")
    return event_dict


class OTelBridgeHandler(LoggingHandler):
    """The OpenTelemetry logging handler, fed a clean copy of each record.

    A structlog record's message is its event dict: the copy gets the event as its body and the other keys as
    attributes, and none of structlog's private record attributes (`_logger`, `_name`, `_from_structlog`), which
    the OTel handler would otherwise try to export and warn about on every line.
    """

    def emit(self, record: logging.LogRecord) -> None:
        copy = logging.LogRecord(
            record.name, record.levelno, record.pathname, record.lineno, None, None, record.exc_info
        )
        copy.created, copy.msecs = record.created, record.msecs
        if isinstance(record.msg, Mapping):
            copy.msg = str(record.msg.get("event", ""))
            for key, value in record.msg.items():
                if key not in _NATIVE_KEYS and not hasattr(copy, key):
                    setattr(copy, key, _attribute_value(value))
        else:
            copy.msg, copy.args = record.msg, record.args
        super().emit(copy)


def _attribute_value(value: Any) -> Any:
    """OTel attributes are primitives or homogeneous sequences of them; everything else becomes its string."""
    if value is None:
        return ""
    if isinstance(value, str | bool | int | float):
        return value
    return str(value)


def configure_logging(
    logger_provider: LoggerProvider | None = None,
    *,
    level: int | str = logging.INFO,
    stream: IO[str] | None = None,
) -> None:
    """Configure structlog and the root logger: JSON to `stream` (stdout), and to OTel when a provider is given.

    Process-global, so call it once at process start (gunicorn `post_fork`, the CLI) — never at import time.
    Records from other libraries (gunicorn, werkzeug) are rendered as JSON lines too.
    """
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        add_trace_context,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    console = logging.StreamHandler(stream or sys.stdout)
    console.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    handlers: list[logging.Handler] = [console]
    if logger_provider is not None:
        handlers.append(OTelBridgeHandler(logger_provider=logger_provider))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
